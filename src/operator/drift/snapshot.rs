//! The last verified sources of each DesiredState, kept in the operator's
//! own namespace, so that a restarted operator facing a forged or broken
//! source still knows what to enforce.
//!
//! A copy is the source ConfigMaps as they were verified: their names,
//! labels, annotations (with the signature) and contents. It is verified
//! again when it is read, so where it is stored only matters for keeping it
//! (tenants cannot write the operator's namespace anyway).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::drift::SourceConfigMap;

/// Ties a copy to its DesiredState (a hash: names may be long).
const OF_LABEL: &str = "driftwarden.io/verified-source-of";
/// `namespace/name` of the DesiredState, for people reading the copy.
const DESIRED_STATE_ANNOTATION: &str = "driftwarden.io/desired-state";
/// The source ConfigMap's own name, labels and annotations.
const ORIGINAL_ANNOTATION: &str = "driftwarden.io/original";
const FIELD_MANAGER: &str = "driftwarden";

#[derive(Serialize, Deserialize)]
struct Original {
    name: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

pub(super) fn key(namespace: &str, name: &str) -> String {
    Sha256::digest(format!("{namespace}/{name}").as_bytes()).iter().take(10).map(|b| format!("{b:02x}")).collect()
}

/// Stores `sources` as the last verified sources of `namespace/name`,
/// replacing any earlier copy.
pub async fn save(
    client: &Client,
    operator_namespace: &str,
    namespace: &str,
    name: &str,
    sources: &[SourceConfigMap],
) -> Result<(), kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), operator_namespace);
    let of = key(namespace, name);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut written = Vec::new();
    for (index, source) in sources.iter().enumerate() {
        let copy_name = format!("verified-{of}-{index}");
        let original = Original {
            name: source.name.clone(),
            labels: source.labels.clone(),
            annotations: source.annotations.clone(),
        };
        let mut copy = ConfigMap::default();
        copy.metadata.name = Some(copy_name.clone());
        copy.metadata.labels = Some([(OF_LABEL.to_owned(), of.clone())].into());
        copy.metadata.annotations = Some(
            [
                (DESIRED_STATE_ANNOTATION.to_owned(), format!("{namespace}/{name}")),
                (ORIGINAL_ANNOTATION.to_owned(), serde_json::to_string(&original).unwrap_or_default()),
            ]
            .into(),
        );
        copy.data = Some(source.data.clone());
        copy.binary_data = Some(source.binary_data.iter().map(|(k, v)| (k.clone(), ByteString(v.clone()))).collect());
        let mut body = serde_json::to_value(&copy).unwrap_or_default();
        body["apiVersion"] = "v1".into();
        body["kind"] = "ConfigMap".into();
        api.patch(&copy_name, &params, &Patch::Apply(body)).await?;
        written.push(copy_name);
    }
    let selector = format!("{OF_LABEL}={of}");
    for stale in api.list_metadata(&ListParams::default().labels(&selector)).await?.items {
        if !written.contains(&stale.name_any()) {
            api.delete(&stale.name_any(), &DeleteParams::default()).await?;
        }
    }
    Ok(())
}

/// The last verified sources of `namespace/name`, as they were (to be
/// verified again); empty when none were kept.
pub async fn load(
    client: &Client,
    operator_namespace: &str,
    namespace: &str,
    name: &str,
) -> Result<Vec<SourceConfigMap>, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), operator_namespace);
    let selector = format!("{OF_LABEL}={}", key(namespace, name));
    let copies = api.list(&ListParams::default().labels(&selector)).await?.items;
    Ok(copies
        .iter()
        .filter_map(|copy| {
            let original: Original = serde_json::from_str(copy.annotations().get(ORIGINAL_ANNOTATION)?).ok()?;
            let mut source = SourceConfigMap::from_config_map(copy);
            source.name = original.name;
            source.labels = original.labels;
            source.annotations = original.annotations;
            Some(source)
        })
        .collect())
}

/// Removes the copy of a DesiredState that is gone.
pub async fn forget(client: &Client, operator_namespace: &str, namespace: &str, name: &str) -> Result<(), kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), operator_namespace);
    let selector = format!("{OF_LABEL}={}", key(namespace, name));
    for copy in api.list_metadata(&ListParams::default().labels(&selector)).await?.items {
        api.delete(&copy.name_any(), &DeleteParams::default()).await?;
    }
    Ok(())
}
