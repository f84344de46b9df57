//! `driftwarden diff DIR`: how the live cluster differs from a directory of
//! manifests, with the same parser and diff as the operator. Reads only.

use std::process::ExitCode;

use anyhow::Context as _;
use kube::api::{Api, DynamicObject};
use kube::core::GroupVersionKind;
use kube::discovery::{Discovery, Scope as DiscoveryScope};

use crate::cli::DiffArgs;
use crate::drift::{self, DiffOptions, Scope, SourceConfigMap, SourceScope};
use crate::publish::read_manifests;

pub async fn run(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let files = read_manifests(&args.dir).with_context(|| format!("reading {}", args.dir.display()))?;
    let mut source = SourceConfigMap { name: args.dir.display().to_string(), ..Default::default() };
    for file in files {
        match String::from_utf8(file.content) {
            Ok(text) => drop(source.data.insert(file.path, text)),
            Err(bytes) => drop(source.binary_data.insert(file.path, bytes.into_bytes())),
        }
    }
    let client = crate::connect::client(&args.cluster).await?;
    let namespace = args.namespace.clone().unwrap_or_else(|| client.default_namespace().to_owned());
    let discovery = Discovery::new(client.clone()).run().await.context("discovering the API server's resources")?;
    let resolve = |api_version: &str, kind: &str| {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        discovery.resolve_gvk(&GroupVersionKind::gvk(group, version, kind))
    };
    let resolver = |api_version: &str, kind: &str| {
        resolve(api_version, kind)
            .map(|(_, caps)| if caps.scope == DiscoveryScope::Namespaced { Scope::Namespaced } else { Scope::Cluster })
    };
    // A local diff is read with the user's own credentials, so it is not
    // confined to one namespace the way a DesiredState is.
    let scope = SourceScope { namespace: &namespace, operator_namespace: &namespace };
    let parsed = match drift::parse_sources(&[source], &scope, &resolver) {
        Ok(parsed) => parsed,
        Err(errors) => {
            for error in &errors.0 {
                eprintln!("error: {error}");
            }
            return Ok(ExitCode::from(2));
        }
    };

    let options = DiffOptions::default();
    let mut drifted = 0;
    for declared in &parsed.objects {
        let (resource, _) =
            resolve(&declared.key.api_version, &declared.key.kind).context("kind vanished from discovery")?;
        let api: Api<DynamicObject> = match &declared.key.namespace {
            Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        let live = api.get_opt(&declared.key.name).await.with_context(|| format!("reading {}", declared.key))?;
        let live = live.map(serde_json::to_value).transpose()?;
        let diff = drift::diff(&declared.object, live.as_ref(), &options);
        if !diff.in_sync() {
            drifted += 1;
            let fields = crate::drift::diff::fields(&diff).join(", ");
            println!("~ {} ({})", declared.key, fields);
            print!("{}", diff.unified);
        }
    }
    println!("{drifted} of {} objects differ from the live cluster", parsed.objects.len());
    Ok(if drifted == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
