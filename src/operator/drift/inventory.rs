//! Where each DesiredState's inventory is kept: a ConfigMap in the
//! operator's namespace (tenants cannot write there; a DesiredState's status
//! holds only a summary, as 10,000 entries would not fit in it), read once
//! after a start and written when it changes.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};

use crate::drift::inventory::{self, Entry};

/// Ties the ConfigMap to its DesiredState (the same hash as the verified
/// copy of its sources).
const OF_LABEL: &str = "driftwarden.io/inventory-of";
const DESIRED_STATE_ANNOTATION: &str = "driftwarden.io/desired-state";
const KEY: &str = "inventory.gz";
const FIELD_MANAGER: &str = "driftwarden";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Api(#[from] kube::Error),
    #[error("the stored inventory {config_map} cannot be read: {source}")]
    Damaged { config_map: String, source: inventory::DecodeError },
}

/// The ConfigMap that holds the inventory of `namespace/name`.
pub fn config_map_name(namespace: &str, name: &str) -> String {
    format!("inventory-{}", super::snapshot::key(namespace, name))
}

/// The stored inventory (None: none was stored yet).
pub async fn load(
    client: &Client,
    operator_namespace: &str,
    namespace: &str,
    name: &str,
) -> Result<Option<Vec<Entry>>, Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), operator_namespace);
    let config_map = config_map_name(namespace, name);
    let Some(stored) = api.get_opt(&config_map).await? else { return Ok(None) };
    let bytes = stored.binary_data.as_ref().and_then(|data| data.get(KEY)).map(|b| b.0.as_slice()).unwrap_or_default();
    inventory::decode(bytes).map(Some).map_err(|source| Error::Damaged { config_map, source })
}

/// Stores `entries` as the inventory of `namespace/name`.
pub async fn save(
    client: &Client,
    operator_namespace: &str,
    namespace: &str,
    name: &str,
    entries: &[Entry],
) -> Result<(), kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), operator_namespace);
    let config_map = config_map_name(namespace, name);
    let mut stored = ConfigMap::default();
    stored.metadata.name = Some(config_map.clone());
    stored.metadata.labels = Some([(OF_LABEL.to_owned(), super::snapshot::key(namespace, name))].into());
    stored.metadata.annotations = Some([(DESIRED_STATE_ANNOTATION.to_owned(), format!("{namespace}/{name}"))].into());
    stored.binary_data = Some(BTreeMap::from([(KEY.to_owned(), ByteString(inventory::encode(entries)))]));
    let mut body = serde_json::to_value(&stored).unwrap_or_default();
    body["apiVersion"] = "v1".into();
    body["kind"] = "ConfigMap".into();
    api.patch(&config_map, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(body)).await?;
    Ok(())
}

/// Removes the inventory of a DesiredState that is gone.
pub async fn forget(client: &Client, operator_namespace: &str, namespace: &str, name: &str) -> Result<(), kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), operator_namespace);
    match api.delete(&config_map_name(namespace, name), &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}
