//! `driftwarden publish` and `driftwarden diff` against the real API server.

use std::path::Path;
use std::process::Command;

use driftwarden_dev::controlplane::User;
use k8s_openapi::api::core::v1::ConfigMap;

use crate::support::{TestEnv, output};

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: \"nginx:1.27\"}]
";
const SECRET: &str = "apiVersion: v1
kind: Secret
metadata: {name: token}
stringData: {token: s3cr3t-canary-91c2}
";

fn driftwarden(env: &TestEnv, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_driftwarden"))
        .args(args)
        .args(["--namespace", &env.namespace, "--kubeconfig"])
        .arg(env.cp.kubeconfig(User::Admin))
        .output()
        .unwrap()
}

fn git(dir: &Path, args: &[&str]) -> String {
    let mut command = Command::new("git");
    command.arg("-C").arg(dir).args(["-c", "user.name=ci", "-c", "user.email=ci@example.com"]).args(args);
    output(command).trim().to_owned()
}

#[tokio::test]
async fn publish_stamps_the_commit_compresses_and_is_safe_to_rerun() {
    let env = TestEnv::new("publish").await;
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir(repo.path().join("apps")).unwrap();
    std::fs::write(repo.path().join("apps/web.yaml"), DEPLOYMENT).unwrap();
    // A large, repetitive file is worth compressing.
    let many: Vec<String> = (0..200)
        .map(|i| format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{i}}}\ndata: {{k: v}}\n"))
        .collect();
    std::fs::write(repo.path().join("many.yaml"), many.join("---\n")).unwrap();
    git(repo.path(), &["init", "-q"]);
    git(repo.path(), &["add", "."]);
    git(repo.path(), &["commit", "-q", "-m", "state"]);
    let head = git(repo.path(), &["rev-parse", "HEAD"]);

    let dir = repo.path().to_str().unwrap();
    // Without a key, publish refuses (the operator would refuse the result).
    let unsigned = driftwarden(&env, &["publish", dir, "--configmap", "state"]);
    assert!(!unsigned.status.success());
    assert!(String::from_utf8_lossy(&unsigned.stderr).contains("no signing key"), "{unsigned:?}");
    // A key pair as `driftwarden keygen` makes it; the PublisherKey it prints trusts it.
    let keys = tempfile::tempdir().unwrap();
    let keygen = Command::new(env!("CARGO_BIN_EXE_driftwarden"))
        .args(["keygen", "--name", "ci", "--out"])
        .arg(keys.path().join("ci"))
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{}", String::from_utf8_lossy(&keygen.stderr));
    let printed = String::from_utf8_lossy(&keygen.stdout);
    assert!(printed.contains("kind: PublisherKey") && printed.contains("BEGIN PUBLIC KEY"), "{printed}");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(keys.path().join("ci.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the private key is readable by others");
    let key_file = keys.path().join("ci.key");
    let key_arg = key_file.to_str().unwrap();
    let first = driftwarden(&env, &["publish", dir, "--configmap", "state", "--signing-key", key_arg]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert!(
        String::from_utf8_lossy(&first.stdout).contains("1 written, 0 unchanged"),
        "{}",
        String::from_utf8_lossy(&first.stdout)
    );

    let api = env.api::<ConfigMap>(User::Admin).await;
    let published = api.get("state").await.unwrap();
    assert_eq!(published.metadata.annotations.as_ref().unwrap()["driftwarden.io/revision"], head);
    assert_eq!(published.metadata.labels.as_ref().unwrap()["driftwarden.io/source"], "state");
    assert!(published.data.as_ref().unwrap().contains_key("apps__web.yaml"));
    assert!(published.binary_data.as_ref().unwrap().contains_key("many.yaml"), "the large file is gzipped");

    let public = std::fs::read_to_string(keys.path().join("ci.pub")).unwrap();
    let trusted = [driftwarden::drift::signature::TrustedKey {
        name: "ci".into(),
        key: driftwarden::drift::signature::verifying_key_from_pem(&public).unwrap(),
    }];
    let source = driftwarden::drift::SourceConfigMap::from_config_map(&published);
    let verified = driftwarden::drift::signature::verify(&env.namespace, &[source], &trusted, None).unwrap();
    assert!(String::from_utf8_lossy(&first.stdout).contains("signed by key"));

    // Re-running with nothing changed writes nothing (and keeps the sequence).
    let again = driftwarden(&env, &["publish", dir, "--configmap", "state", "--signing-key", key_arg]);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("0 written, 1 unchanged"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    let unchanged = api.get("state").await.unwrap();
    assert_eq!(unchanged.metadata.resource_version, published.metadata.resource_version);

    // A new commit is signed with a higher sequence.
    std::fs::write(repo.path().join("apps/web.yaml"), DEPLOYMENT.replace("replicas: 2", "replicas: 3")).unwrap();
    git(repo.path(), &["commit", "-q", "-am", "scale"]);
    let next = driftwarden(&env, &["publish", dir, "--configmap", "state", "--signing-key", key_arg]);
    assert!(next.status.success(), "{}", String::from_utf8_lossy(&next.stderr));
    let republished = driftwarden::drift::SourceConfigMap::from_config_map(&api.get("state").await.unwrap());
    let newer =
        driftwarden::drift::signature::verify(&env.namespace, &[republished], &trusted, Some(verified.sequence));
    assert!(newer.unwrap().sequence > verified.sequence);
}

#[tokio::test]
async fn diff_exits_0_when_in_sync_1_on_drift_and_2_on_bad_input() {
    let env = TestEnv::new("local-diff").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("web.yaml"), DEPLOYMENT).unwrap();
    std::fs::write(dir.path().join("secret.yaml"), SECRET).unwrap();
    let mut apply = env.kubectl(User::Admin);
    apply.args(["apply", "-f"]).arg(dir.path());
    output(apply);
    let path = dir.path().to_str().unwrap();

    let clean = driftwarden(&env, &["diff", path]);
    assert_eq!(
        clean.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&clean.stdout),
        String::from_utf8_lossy(&clean.stderr)
    );
    assert!(String::from_utf8_lossy(&clean.stdout).contains("0 of 2 objects differ"));

    let mut scale = env.kubectl(User::Admin);
    scale.args(["scale", "deployment/web", "--replicas=4"]);
    output(scale);
    let mut edit = env.kubectl(User::Admin);
    edit.args(["patch", "secret/token", "-p", r#"{"stringData":{"token":"n3w-canary-77aa"}}"#]);
    output(edit);
    let drifted = driftwarden(&env, &["diff", path]);
    let stdout = String::from_utf8_lossy(&drifted.stdout);
    assert_eq!(drifted.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("/spec/replicas (changed)"), "{stdout}");
    assert!(stdout.contains("/data/token (changed)"), "{stdout}");
    assert!(
        !stdout.contains("s3cr3t-canary-91c2") && !stdout.contains("n3w-canary-77aa"),
        "a Secret value was printed"
    );

    std::fs::write(dir.path().join("broken.yaml"), "kind: [unclosed\n").unwrap();
    let broken = driftwarden(&env, &["diff", path]);
    assert_eq!(broken.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&broken.stderr).contains("broken.yaml document 0"),
        "{}",
        String::from_utf8_lossy(&broken.stderr)
    );
}

/// Runs driftwarden with `stdin` as its standard input.
fn driftwarden_with_input(env: &TestEnv, args: &[&str], stdin: &[u8], cwd: &Path) -> std::process::Output {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_driftwarden"))
        .current_dir(cwd)
        .args(args)
        .args(["--namespace", &env.namespace, "--kubeconfig"])
        .arg(env.cp.kubeconfig(User::Admin))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// The objects a published source declares, as the operator parses them.
fn declared(env: &TestEnv, config_maps: &[ConfigMap]) -> Vec<serde_json::Value> {
    let sources: Vec<_> = config_maps.iter().map(driftwarden::drift::SourceConfigMap::from_config_map).collect();
    let scope = driftwarden::drift::SourceScope { namespace: &env.namespace, operator_namespace: "driftwarden-system" };
    let resolver = |_: &str, _: &str| Some(driftwarden::drift::Scope::Namespaced);
    let parsed = driftwarden::drift::parse_sources(&sources, &scope, &resolver).unwrap();
    let mut objects: Vec<serde_json::Value> = parsed.objects.iter().map(|o| o.object.clone()).collect();
    objects.sort_by_key(|o| o["metadata"]["name"].as_str().unwrap_or_default().to_owned());
    objects
}

/// `kustomize build | driftwarden publish -` and `helm template | ...`
/// declare what publishing the rendered directory declares; `diff -` reads
/// the same stream.
#[tokio::test]
async fn a_rendered_stream_publishes_and_diffs_like_its_directory() {
    let env = TestEnv::new("publish-stream").await;
    let repo = tempfile::tempdir().unwrap();
    let base = repo.path().join("base");
    std::fs::create_dir(&base).unwrap();
    std::fs::write(base.join("web.yaml"), DEPLOYMENT).unwrap();
    std::fs::write(
        base.join("settings.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: fast}\n",
    )
    .unwrap();
    std::fs::write(
        base.join("kustomization.yaml"),
        "resources: [web.yaml, settings.yaml]\ncommonLabels: {team: shop}\n",
    )
    .unwrap();
    git(repo.path(), &["init", "-q"]);
    git(repo.path(), &["add", "."]);
    git(repo.path(), &["commit", "-q", "-m", "state"]);
    let head = git(repo.path(), &["rev-parse", "HEAD"]);

    let keys = tempfile::tempdir().unwrap();
    let keygen = Command::new(env!("CARGO_BIN_EXE_driftwarden"))
        .args(["keygen", "--out"])
        .arg(keys.path().join("ci"))
        .output()
        .unwrap();
    assert!(keygen.status.success());
    let key = keys.path().join("ci.key");
    let key = key.to_str().unwrap();

    // kubectl's built-in kustomize renders the overlay.
    let mut kustomize = env.kubectl(User::Admin);
    kustomize.arg("kustomize").arg(&base);
    let rendered = output(kustomize);
    let rendered_dir = repo.path().join("rendered");
    std::fs::create_dir(&rendered_dir).unwrap();
    std::fs::write(rendered_dir.join("all.yaml"), &rendered).unwrap();

    let piped = driftwarden_with_input(
        &env,
        &["publish", "-", "--configmap", "piped", "--signing-key", key],
        rendered.as_bytes(),
        repo.path(),
    );
    assert!(piped.status.success(), "{}", String::from_utf8_lossy(&piped.stderr));
    let from_dir = driftwarden(
        &env,
        &["publish", rendered_dir.to_str().unwrap(), "--configmap", "from-dir", "--signing-key", key],
    );
    assert!(from_dir.status.success(), "{}", String::from_utf8_lossy(&from_dir.stderr));
    let api = env.api::<ConfigMap>(User::Admin).await;
    let (piped, from_dir) = (api.get("piped").await.unwrap(), api.get("from-dir").await.unwrap());
    assert_eq!(
        piped.metadata.annotations.as_ref().unwrap()["driftwarden.io/revision"],
        head,
        "the revision comes from the checkout"
    );
    let objects = declared(&env, std::slice::from_ref(&piped));
    assert_eq!(objects.len(), 2);
    assert_eq!(objects, declared(&env, std::slice::from_ref(&from_dir)));
    assert_eq!(objects[1]["metadata"]["labels"]["team"], "shop", "{:#?}", objects[1]);

    // helm template of a small chart, piped the same way.
    let chart = repo.path().join("chart");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(chart.join("Chart.yaml"), "apiVersion: v2\nname: shop\nversion: 0.1.0\n").unwrap();
    std::fs::write(chart.join("values.yaml"), "replicas: 2\n").unwrap();
    std::fs::write(
        chart.join("templates/web.yaml"),
        DEPLOYMENT.replace("replicas: 2", "replicas: {{ .Values.replicas }}"),
    )
    .unwrap();
    std::fs::write(
        chart.join("templates/settings.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: fast}\n",
    )
    .unwrap();
    let mut template = Command::new(crate::support::helm_binary());
    template.args(["template", "shop"]).arg(&chart);
    let helm_rendered = output(template);
    let helm_piped = driftwarden_with_input(
        &env,
        &["publish", "-", "--configmap", "helm-piped", "--signing-key", key],
        helm_rendered.as_bytes(),
        repo.path(),
    );
    assert!(helm_piped.status.success(), "{}", String::from_utf8_lossy(&helm_piped.stderr));
    let helm_objects = declared(&env, &[api.get("helm-piped").await.unwrap()]);
    let plain: Vec<serde_json::Value> = declared(&env, std::slice::from_ref(&from_dir))
        .into_iter()
        .map(|mut o| {
            o["metadata"].as_object_mut().unwrap().remove("labels");
            if let Some(template) = o.pointer_mut("/spec/template/metadata/labels") {
                template.as_object_mut().unwrap().remove("team");
            }
            if let Some(selector) = o.pointer_mut("/spec/selector/matchLabels") {
                selector.as_object_mut().unwrap().remove("team");
            }
            o
        })
        .collect();
    assert_eq!(helm_objects, plain, "helm template declares the chart's objects");

    // diff - reads the stream: nothing applied yet, so both objects differ.
    let diff = driftwarden_with_input(&env, &["diff", "-"], rendered.as_bytes(), repo.path());
    assert_eq!(diff.status.code(), Some(1), "{}", String::from_utf8_lossy(&diff.stderr));
    assert!(
        String::from_utf8_lossy(&diff.stdout).contains("2 of 2 objects differ"),
        "{}",
        String::from_utf8_lossy(&diff.stdout)
    );
}
