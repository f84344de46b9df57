//! Watches on exactly the kinds and namespaces that sources declare, started
//! and stopped as DesiredStates change. Each is a reflector (a cache kept
//! current by a watch, never a poll); an event on it asks every DesiredState
//! that uses it to reconcile. Objects are cached in the compact form of
//! [`super::cached`].

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
            .modify(super::cached::for_watch_cache)
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

/// Waits until every cache has listed, or `timeout` passes.
pub async fn wait_until_ready(stores: &HashMap<WatchKey, (Store<DynamicObject>, Ready)>, timeout: Duration) -> bool {
    let readies: Vec<Ready> = stores.values().map(|(_, ready)| ready.clone()).collect();
    tokio::time::timeout(timeout, crate::operator::ready::all(&readies)).await.is_ok()
}
