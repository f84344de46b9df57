//! Trust anchors: the PublisherKeys (cluster-scoped, so no tenant can add
//! one) and the namespace labels their selectors match. Which keys a
//! DesiredState accepts is read from these caches only, never from anything
//! in its own namespace.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tracing::warn;

use crate::api::{DesiredState, PublisherKey, PublisherKeyStatus};
use crate::conditions::condition;
use crate::drift::signature::{self, TrustedKey};
use crate::operator::ready::Ready;
use crate::operator::watch;

/// The caches trust is read from.
pub struct Anchors {
    pub keys: Store<PublisherKey>,
    /// The process's cache of Namespaces (their labels select keys).
    pub namespaces: Store<Namespace>,
    pub listed: Ready,
}

/// What the anchors are for one DesiredState: changes when a key is added,
/// changed or removed, or its namespace's labels change.
pub type Fingerprint = Vec<(String, String)>;

impl Anchors {
    /// Starts the keys' cache; the returned stream drives it (and says when
    /// a key changed). Namespaces come from the process's cache.
    pub fn start(
        client: &Client,
        namespaces: &watch::Shared<Namespace>,
    ) -> (Self, impl futures::Stream<Item = PublisherKey> + use<>) {
        let (keys, key_events) = watch::reflect(Api::<PublisherKey>::all(client.clone()), watcher::Config::default());
        let key_events = key_events.touched_objects().filter_map(|event| async move { event.ok() });
        let listed = Ready::all_of(vec![Ready::of(&keys), namespaces.listed.clone()]);
        (Self { keys, namespaces: namespaces.store.clone(), listed }, key_events)
    }

    /// The keys `state` accepts: PublisherKeys whose selector matches its
    /// namespace, narrowed to `spec.trustedKeys` when that names any. A key
    /// that does not parse is skipped (its status says why).
    pub fn trusted_for(&self, state: &DesiredState) -> Vec<TrustedKey> {
        let namespace = state.namespace().unwrap_or_default();
        let labels = self.namespaces.get(&ObjectRef::new(&namespace)).map(|ns| ns.labels().clone()).unwrap_or_default();
        let mut keys: Vec<TrustedKey> = self
            .keys
            .state()
            .iter()
            .filter(|key| state.spec.trusted_keys.is_empty() || state.spec.trusted_keys.contains(&key.name_any()))
            .filter(|key| Selector::try_from(key.spec.namespace_selector.clone()).is_ok_and(|s| s.matches(&labels)))
            .filter_map(|key| {
                let parsed = signature::verifying_key_from_pem(&key.spec.public_key).ok()?;
                Some(TrustedKey { name: key.name_any(), key: parsed })
            })
            .collect();
        keys.sort_by(|a, b| a.name.cmp(&b.name));
        keys
    }

    /// The resourceVersions trust for `state` depends on.
    pub fn fingerprint(&self, state: &DesiredState) -> Fingerprint {
        let namespace = state.namespace().unwrap_or_default();
        let mut found: Fingerprint =
            self.keys.state().iter().map(|k| (k.name_any(), k.resource_version().unwrap_or_default())).collect();
        found.sort();
        let namespace_version =
            self.namespaces.get(&ObjectRef::new(&namespace)).and_then(|ns| ns.resource_version()).unwrap_or_default();
        found.push((format!("namespace/{namespace}"), namespace_version));
        found
    }
}

/// Keeps every PublisherKey's status current: its key ID, and whether the
/// key parses. Fed the keys the anchors' watch saw change; runs until that
/// channel closes.
pub async fn keep_key_status(
    client: Client,
    keys: Store<PublisherKey>,
    mut changed: tokio::sync::mpsc::UnboundedReceiver<PublisherKey>,
) {
    let api = Api::<PublisherKey>::all(client);
    let params = PatchParams::apply("driftwarden").force();
    while let Some(key) = changed.recv().await {
        // A deleted key has no status to write.
        if keys.get(&ObjectRef::from_obj(&key)).is_none() {
            continue;
        }
        let old = key.status.clone().unwrap_or_default();
        let now = Timestamp::now();
        let generation = key.metadata.generation;
        let (key_id, valid) = match signature::verifying_key_from_pem(&key.spec.public_key) {
            Ok(parsed) => (
                Some(signature::key_id(&parsed)),
                condition(&old.conditions, "Valid", true, "Parsed", "an Ed25519 public key".into(), generation, now),
            ),
            Err(error) => {
                (None, condition(&old.conditions, "Valid", false, "InvalidKey", error.to_string(), generation, now))
            }
        };
        let status = PublisherKeyStatus { key_id, conditions: vec![valid] };
        if status == old {
            continue;
        }
        let body = serde_json::json!({
            "apiVersion": "driftwarden.io/v1alpha1", "kind": "PublisherKey", "status": status,
        });
        if let Err(error) = api.patch_status(&key.name_any(), &params, &Patch::Apply(body)).await {
            warn!(%error, key = %key.name_any(), "writing a PublisherKey's status failed");
        }
    }
}
