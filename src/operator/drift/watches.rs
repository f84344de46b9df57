//! Watches on exactly the kinds and namespaces that sources declare, started
//! and stopped as DesiredStates change. Each is a reflector (a cache kept
//! current by a watch, never a poll); an event on it asks every DesiredState
//! that uses it to reconcile. What the diff never reads is dropped before an
//! object is cached.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::mpsc::UnboundedSender;

use crate::operator::ready::Ready;
use tokio::task::JoinHandle;

use crate::api::DesiredState;

/// One watch: a kind, in one namespace or (cluster-scoped) everywhere.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WatchKey {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespace: Option<String>,
}

impl WatchKey {
    pub fn new(resource: &ApiResource, namespace: Option<String>) -> Self {
        Self {
            group: resource.group.clone(),
            version: resource.version.clone(),
            kind: resource.kind.clone(),
            plural: resource.plural.clone(),
            namespace,
        }
    }

    fn resource(&self) -> ApiResource {
        let api_version =
            if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) };
        ApiResource {
            group: self.group.clone(),
            version: self.version.clone(),
            api_version,
            kind: self.kind.clone(),
            plural: self.plural.clone(),
        }
    }
}

type Users = Arc<Mutex<HashMap<WatchKey, HashSet<ObjectRef<DesiredState>>>>>;

struct Running {
    store: Store<DynamicObject>,
    /// Several DesiredStates may wait for one cache at once: see `operator::ready`.
    ready: Ready,
    task: JoinHandle<()>,
}

/// The running watches and who uses them.
pub struct Watches {
    client: Client,
    trigger: UnboundedSender<ObjectRef<DesiredState>>,
    pending_since: Arc<Mutex<HashMap<ObjectRef<DesiredState>, Instant>>>,
    // Shared with the watch tasks, which read it at event time so that a
    // user added after a watch started is told too.
    users: Users,
    running: Mutex<HashMap<WatchKey, Running>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Watches {
    /// `pending_since` records, per DesiredState, when a watch first saw a
    /// change it has not reconciled yet (where detection latency starts).
    pub fn new(
        client: Client,
        trigger: UnboundedSender<ObjectRef<DesiredState>>,
        pending_since: Arc<Mutex<HashMap<ObjectRef<DesiredState>, Instant>>>,
    ) -> Self {
        Self { client, trigger, pending_since, users: Users::default(), running: Mutex::new(HashMap::new()) }
    }

    /// Makes `user` use exactly `keys`: starts what is missing, and stops
    /// watches nobody uses any more. Returns the caches of `keys`.
    pub fn use_exactly(
        &self,
        user: &ObjectRef<DesiredState>,
        keys: &BTreeSet<WatchKey>,
    ) -> HashMap<WatchKey, (Store<DynamicObject>, Ready)> {
        let mut users = lock(&self.users);
        let mut running = lock(&self.running);
        for (key, key_users) in users.iter_mut() {
            if !keys.contains(key) {
                key_users.remove(user);
            }
        }
        for key in keys {
            users.entry(key.clone()).or_default().insert(user.clone());
        }
        users.retain(|_, key_users| !key_users.is_empty());
        running.retain(|key, watch| {
            let used = users.contains_key(key);
            if !used {
                watch.task.abort();
                tracing::info!(kind = %key.kind, namespace = ?key.namespace, "stopped watching");
            }
            used
        });
        keys.iter()
            .map(|key| {
                let watch = running.entry(key.clone()).or_insert_with(|| self.start(key));
                (key.clone(), (watch.store.clone(), watch.ready.clone()))
            })
            .collect()
    }

    /// Forgets a DesiredState that no longer exists.
    pub fn release(&self, user: &ObjectRef<DesiredState>) {
        self.use_exactly(user, &BTreeSet::new());
    }

    /// The DesiredStates using any watch.
    pub fn users(&self) -> HashSet<ObjectRef<DesiredState>> {
        lock(&self.users).values().flat_map(|u| u.iter().cloned()).collect()
    }

    fn start(&self, key: &WatchKey) -> Running {
        let resource = key.resource();
        let api: Api<DynamicObject> = match &key.namespace {
            Some(namespace) => Api::namespaced_with(self.client.clone(), namespace, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        };
        let writer = reflector::store::Writer::new(resource.clone());
        let store = writer.as_reader();
        let stream = watcher(api, watcher::Config::default())
            .backoff(crate::operator::backoff::WatchBackoff::default())
            .modify(drop_unread)
            .reflect(writer);
        let (trigger, users, key) = (self.trigger.clone(), self.users.clone(), key.clone());
        let pending_since = self.pending_since.clone();
        tracing::info!(kind = %key.kind, namespace = ?key.namespace, "watching");
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    // Any change may be drift for whoever declares this kind here.
                    Ok(_) => {
                        let to_tell: Vec<_> =
                            lock(&users).get(&key).map(|u| u.iter().cloned().collect()).unwrap_or_default();
                        let now = Instant::now();
                        for user in to_tell {
                            lock(&pending_since).entry(user.clone()).or_insert(now);
                            let _ = trigger.send(user);
                        }
                    }
                    Err(error) => tracing::warn!(%error, kind = %key.kind, "watch error; retrying with backoff"),
                }
            }
        });
        let ready = Ready::of(&store);
        Running { store, ready, task }
    }
}

impl Drop for Watches {
    fn drop(&mut self) {
        for watch in lock(&self.running).values() {
            watch.task.abort();
        }
    }
}

/// kubectl's copy of the whole last applied manifest: as large as the object.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what no reader of the cache uses, before the object is stored: its
/// `status` and the last-applied annotation. The diff skips both (in either
/// direction), reverts and codify work from the diff and managedFields, so
/// their results are the same; together they are often half of an object.
/// managedFields stay: the diff needs them to find foreign additions.
fn drop_unread(object: &mut DynamicObject) {
    if let Some(annotations) = object.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
    if let Some(fields) = object.data.as_object_mut() {
        fields.remove("status");
    }
}

/// Waits until every cache has listed, or `timeout` passes.
pub async fn wait_until_ready(stores: &HashMap<WatchKey, (Store<DynamicObject>, Ready)>, timeout: Duration) -> bool {
    let readies: Vec<Ready> = stores.values().map(|(_, ready)| ready.clone()).collect();
    tokio::time::timeout(timeout, crate::operator::ready::all(&readies)).await.is_ok()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::drift::{self, DiffOptions};

    /// Live objects as a real API server returns them (defaults,
    /// managedFields, status, the last-applied annotation), in sync and
    /// edited by hand, with what was declared.
    fn cases() -> Vec<(&'static str, Value, Value)> {
        let yaml = |text: &str| serde_yaml_ng::from_str::<Value>(text).unwrap();
        let json = |text: &str| serde_json::from_str::<Value>(text).unwrap();
        let deployment = yaml(include_str!("../../drift/testdata/deployment-declared.yaml"));
        let live = json(include_str!("../../drift/testdata/deployment-live.json"));
        let mut scaled = live.clone();
        scaled["spec"]["replicas"] = 9.into();
        scaled["status"]["replicas"] = 9.into();
        let mut annotated = live.clone();
        annotated["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = "{}".into();
        macro_rules! captured {
            ($name:literal) => {{
                let declared = yaml(include_str!(concat!("../../../benches/data/", $name, ".yaml")));
                let live = json(include_str!(concat!("../../../benches/data/", $name, ".live.json")));
                let drifted = json(include_str!(concat!("../../../benches/data/", $name, ".drifted.json")));
                [($name, declared.clone(), live), ($name, declared, drifted)]
            }};
        }
        let mut all = vec![
            ("deployment", deployment.clone(), live),
            ("deployment scaled", deployment.clone(), scaled),
            ("deployment, last-applied edited", deployment, annotated),
        ];
        all.extend(captured!("deployment"));
        all.extend(captured!("service"));
        all.extend(captured!("configmap-100-keys"));
        all.extend(captured!("role-20-rules"));
        all.extend(captured!("crd-50kb"));
        all
    }

    #[test]
    fn dropping_what_the_diff_never_reads_changes_no_diff() {
        let options = DiffOptions::default();
        let mut drifted = 0;
        for (name, declared, live) in cases() {
            let cached: DynamicObject = serde_json::from_value(live).unwrap();
            let mut stripped = cached.clone();
            drop_unread(&mut stripped);
            let whole = serde_json::to_value(&cached).unwrap();
            let stripped = serde_json::to_value(&stripped).unwrap();
            assert!(stripped.get("status").is_none(), "{name}");
            let before = drift::diff(&declared, Some(&whole), &options);
            let after = drift::diff(&declared, Some(&stripped), &options);
            assert_eq!(before, after, "{name}");
            drifted += usize::from(!after.in_sync());
        }
        assert_eq!(drifted, 6, "the cases must include drift");
    }

    #[test]
    fn dropping_what_the_diff_never_reads_keeps_other_annotations_and_managed_fields() {
        let live: DynamicObject =
            serde_json::from_str(include_str!("../../drift/testdata/deployment-live.json")).unwrap();
        let mut stripped = live.clone();
        drop_unread(&mut stripped);
        let annotations = stripped.metadata.annotations.unwrap();
        assert!(!annotations.contains_key(LAST_APPLIED));
        assert!(annotations.contains_key("deployment.kubernetes.io/revision"));
        assert_eq!(stripped.metadata.managed_fields, live.metadata.managed_fields);
        assert_eq!(stripped.data["spec"], live.data["spec"]);
    }
}
