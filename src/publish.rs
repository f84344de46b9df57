//! `driftwarden publish` and `driftwarden keygen`: read a directory of
//! manifests (or a rendered stream) and the Git revision, pack and sign them
//! ([`crate::drift::pack`], pure) and apply only the ConfigMaps that
//! changed, so a re-run is safe.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use kube::Client;

use crate::cli::{KeygenArgs, PublishArgs};
use crate::drift::pack::{ManifestFile, split_stream};

/// The environment variable that holds the signing key itself (a CI secret).
pub const SIGNING_KEY_ENV: &str = "DRIFTWARDEN_SIGNING_KEY";

/// The key to sign with: `--signing-key FILE`, else DRIFTWARDEN_SIGNING_KEY,
/// else none (an error unless `--unsigned`).
fn signing_key(args: &PublishArgs) -> anyhow::Result<Option<ed25519_dalek::SigningKey>> {
    use crate::drift::signature::signing_key_from_pem;
    let pem = match (&args.signing_key, std::env::var(SIGNING_KEY_ENV)) {
        (Some(path), _) => std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        (None, Ok(pem)) if !pem.trim().is_empty() => pem,
        _ if args.unsigned => return Ok(None),
        _ => anyhow::bail!(
            "no signing key: pass --signing-key FILE or set {SIGNING_KEY_ENV} (make a key pair with `driftwarden keygen`); \
             --unsigned publishes without one, for an operator that does not verify"
        ),
    };
    Ok(Some(signing_key_from_pem(&pem).context("reading the signing key")?))
}

/// `driftwarden publish`.
pub async fn run(args: PublishArgs) -> anyhow::Result<()> {
    let key = signing_key(&args)?;
    let files = read_manifests(&args.dir).with_context(|| format!("reading {}", args.dir.display()))?;
    if let Err(errors) = crate::drift::pack::check(&args.dir.display().to_string(), &files) {
        for error in &errors.0 {
            eprintln!("error: {error}");
        }
        anyhow::bail!("{} problem(s) in {}; nothing was published", errors.0.len(), args.dir.display());
    }
    let revision = match args.revision {
        Some(revision) => Some(revision),
        // A stream on standard input comes from the checkout we run in.
        None if args.dir == Path::new("-") => git_revision(Path::new(".")),
        None => git_revision(&args.dir),
    };
    let client = crate::connect::client(&args.cluster).await?;
    let namespace = args.namespace.unwrap_or_else(|| client.default_namespace().to_owned());
    let summary =
        publish_files(&client, &files, &args.configmap, &namespace, revision.as_deref(), key.as_ref()).await?;
    println!("published {} files from {}: {summary}", files.len(), args.dir.display());
    Ok(())
}

/// Packs `files` into the source ConfigMaps `name`, `name-1`, ... in
/// `namespace`, signs them with `key` (unless None), and applies what
/// changed. Returns a one-line summary.
pub async fn publish_files(
    client: &Client,
    files: &[ManifestFile],
    name: &str,
    namespace: &str,
    revision: Option<&str>,
    key: Option<&ed25519_dalek::SigningKey>,
) -> anyhow::Result<String> {
    use crate::drift::pack::{SOURCE_LABEL, live_sequence, pack, sign, signed_unchanged, unchanged};
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};

    if let Some(revision) = revision {
        crate::drift::source::validate_revision(revision).map_err(|e| anyhow::anyhow!("revision {revision:?}: {e}"))?;
    }
    let mut desired = pack(files, name, namespace, revision)?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let selector = format!("{SOURCE_LABEL}={name}");
    let live = api.list(&ListParams::default().labels(&selector)).await?.items;
    // A signed set is one unit: unchanged as a whole, or re-signed with a
    // higher sequence and every ConfigMap written.
    let rewrite_all = match key {
        Some(key) if signed_unchanged(&live, &desired, &key.verifying_key(), namespace) => false,
        Some(key) => {
            let now = u64::try_from(k8s_openapi::jiff::Timestamp::now().as_millisecond()).unwrap_or(0);
            let sequence = now.max(live_sequence(&live) + 1);
            sign(&mut desired, key, namespace, sequence);
            true
        }
        None => false,
    };
    let params = PatchParams::apply("driftwarden-publish").force();
    let (mut applied, mut kept) = (0, 0);
    for config_map in &desired {
        let name = config_map.metadata.name.clone().unwrap_or_default();
        let current = live.iter().find(|l| l.metadata.name.as_deref() == Some(name.as_str()));
        let keep = match key {
            Some(_) => !rewrite_all,
            None => current.is_some_and(|live| unchanged(live, config_map)),
        };
        if keep {
            kept += 1;
            continue;
        }
        let mut body = serde_json::to_value(config_map)?;
        body["apiVersion"] = "v1".into();
        body["kind"] = "ConfigMap".into();
        api.patch(&name, &params, &Patch::Apply(body)).await.with_context(|| format!("applying ConfigMap {name}"))?;
        applied += 1;
    }
    // Chunks a smaller state no longer needs.
    let mut removed = 0;
    for stale in live {
        let name = stale.metadata.name.unwrap_or_default();
        if !desired.iter().any(|d| d.metadata.name.as_deref() == Some(&name)) {
            api.delete(&name, &DeleteParams::default()).await?;
            removed += 1;
        }
    }
    let signed = match key {
        Some(key) => format!("signed by key {}", crate::drift::signature::key_id(&key.verifying_key())),
        None => "UNSIGNED".to_owned(),
    };
    Ok(format!(
        "{} ConfigMap(s) in {namespace} at revision {}, {signed}: {applied} written, {kept} unchanged, {removed} removed",
        desired.len(),
        revision.unwrap_or("<none>")
    ))
}

/// `driftwarden keygen`.
pub fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    let public = write_key_pair(&args.out)?;
    print!("{}", publisher_key_yaml(&args.name, &public));
    Ok(())
}

/// A fresh key pair in `out`.key (0600) and `out`.pub; returns the public PEM.
pub fn write_key_pair(out: &Path) -> anyhow::Result<String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    let (private, public) = crate::drift::signature::key_pair_pem(&seed);
    let private_path = out.with_extension("key");
    let public_path = out.with_extension("pub");
    let create = |path: &Path, mode: u32| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .with_context(|| format!("creating {} (it must not exist yet)", path.display()))
    };
    create(&private_path, 0o600)?.write_all(private.as_bytes())?;
    create(&public_path, 0o644)?.write_all(public.as_bytes())?;
    let key = crate::drift::signature::verifying_key_from_pem(&public)?;
    eprintln!(
        "wrote {} (keep it secret: a CI secret for `driftwarden publish`) and {}; key id {}",
        private_path.display(),
        public_path.display(),
        crate::drift::signature::key_id(&key)
    );
    Ok(public)
}

/// A PublisherKey trusting `public` in every namespace, as YAML to apply.
pub fn publisher_key_yaml(name: &str, public: &str) -> String {
    let indented: String = public.lines().map(|line| format!("    {line}\n")).collect();
    format!(
        "apiVersion: driftwarden.io/v1alpha1\nkind: PublisherKey\nmetadata:\n  name: {name}\nspec:\n  # Narrow this to the namespaces the key may sign for.\n  namespaceSelector: {{}}\n  publicKey: |\n{indented}"
    )
}

/// The commit checked out in `dir`, if it is in a Git repository.
pub fn git_revision(dir: &Path) -> Option<String> {
    let out = std::process::Command::new("git").arg("-C").arg(dir).args(["rev-parse", "HEAD"]).output().ok()?;
    if !out.status.success() {
        tracing::warn!(dir = %dir.display(), "not a Git checkout; publishing without a revision");
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Every `.yaml`, `.yml` and `.json` file under `dir`, sorted by path,
/// skipping hidden files and directories (`.git`).
pub fn read_manifest_dir(dir: &Path) -> std::io::Result<Vec<ManifestFile>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')) {
                continue;
            }
            if path.is_dir() {
                walk(&path, out)?;
            } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")) {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut paths = Vec::new();
    walk(dir, &mut paths)?;
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let relative = path.strip_prefix(dir).unwrap_or(&path).to_string_lossy().replace('\\', "/");
            Ok(ManifestFile { path: relative, content: std::fs::read(&path)? })
        })
        .collect()
}

/// The manifests at `path`: a directory ([`read_manifest_dir`]), or `-` for
/// a manifest stream on standard input (`kustomize build`, `helm template`).
pub fn read_manifests(path: &Path) -> std::io::Result<Vec<ManifestFile>> {
    if path != Path::new("-") {
        return read_manifest_dir(path);
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut text)?;
    Ok(split_stream(&text))
}
