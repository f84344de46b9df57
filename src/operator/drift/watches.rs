//! Watches on exactly the kinds and namespaces that sources declare, started
//! and stopped as DesiredStates change. Each is a reflector (a cache kept
//! current by a watch, never a poll); an event on it asks every DesiredState
//! that uses it to reconcile. Declared kinds are cached whole, in the
//! compact form of [`super::cached`]; kinds watched only for undeclared
//! objects as metadata ([`Cached`]).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, PartialObjectMeta};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::mpsc::UnboundedSender;

use super::cache::{Cache, Writer};
use super::changes::Changes;
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

    /// The kind this watch sees, as the exemption rules name kinds.
    pub fn kind_ref(&self) -> crate::api::KindRef {
        crate::api::KindRef { group: self.group.clone(), kind: self.kind.clone() }
    }

    pub fn resource(&self) -> ApiResource {
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

/// What a watch caches of each object, and how it watches.
pub trait Cached:
    kube::Resource<DynamicType = ApiResource, Scope = kube::core::DynamicResourceScope>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// Fits a watched object for the cache.
    fn for_cache(&mut self);

    /// Whether a watch the operator may not make counts as ready (an empty
    /// cache its readers know to skip). Declared kinds: no, a pass waits.
    const READY_WHEN_FORBIDDEN: bool = false;

    /// What of the object its readers decide by, when that is less than
    /// all of it: a change that leaves this as it was wakes nobody (a Pod's
    /// status updates, say). None: every change counts.
    fn identity(&self) -> Option<String> {
        None
    }

    /// The object as the write log matches it ([`crate::gate::writes`]):
    /// what the cache keeps, without its resourceVersion and managedFields.
    fn fingerprint(&self) -> u64;

    /// `spec.replicas`, where the cache keeps it (a `scale` is confirmed by it).
    fn replicas(&self) -> Option<i64> {
        None
    }
}

/// Declared kinds: the whole object, compact.
impl Cached for DynamicObject {
    fn for_cache(&mut self) {
        crate::drift::kept::for_watch_cache(self);
    }

    fn fingerprint(&self) -> u64 {
        crate::drift::kept::whole_fingerprint(self)
    }

    fn replicas(&self) -> Option<i64> {
        crate::drift::kept::replicas(self)
    }
}

/// Kinds watched for undeclared objects only (`Api<PartialObjectMeta>`
/// asks for metadata only): what the exemption rules and a deletion read.
impl Cached for PartialObjectMeta<DynamicObject> {
    const READY_WHEN_FORBIDDEN: bool = true;

    fn for_cache(&mut self) {
        crate::drift::kept::metadata_only(self);
    }

    fn fingerprint(&self) -> u64 {
        crate::drift::kept::meta_fingerprint(&self.metadata)
    }

    fn identity(&self) -> Option<String> {
        let meta = &self.metadata;
        let controller = meta.owner_references.iter().flatten().map(|o| o.uid.as_str()).next().unwrap_or_default();
        let deleting = meta.deletion_timestamp.is_some();
        Some(format!("{}/{controller}/{deleting}", meta.uid.as_deref().unwrap_or_default()))
    }
}

struct Running<K: Cached> {
    store: Cache<K>,
    /// Several DesiredStates may wait for one cache at once: see
    /// `operator::ready`. Also ready when the watch is forbidden.
    ready: Ready,
    /// The operator may not list this kind here (403): its cache stays empty.
    forbidden: Arc<std::sync::atomic::AtomicBool>,
    task: JoinHandle<()>,
}

/// The running watches and who uses them.
pub struct Watches<K: Cached> {
    client: Client,
    trigger: UnboundedSender<ObjectRef<DesiredState>>,
    pending_since: Arc<Mutex<HashMap<ObjectRef<DesiredState>, Instant>>>,
    /// What each event changed, for the pass it triggers.
    changes: Changes,
    // Shared with the watch tasks, which read it at event time so that a
    // user added after a watch started is told too.
    users: Users,
    running: Mutex<HashMap<WatchKey, Running<K>>>,
    /// Every event confirms the write-log records it delivers.
    write_log: Option<Arc<crate::operator::writelog::SharedLog>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<K: Cached> Watches<K> {
    /// `pending_since` records, per DesiredState, when a watch first saw a
    /// change it has not reconciled yet (where detection latency starts).
    pub(super) fn new(
        client: Client,
        trigger: UnboundedSender<ObjectRef<DesiredState>>,
        pending_since: Arc<Mutex<HashMap<ObjectRef<DesiredState>, Instant>>>,
        changes: Changes,
        write_log: Option<Arc<crate::operator::writelog::SharedLog>>,
    ) -> Self {
        let (users, running) = (Users::default(), Mutex::new(HashMap::new()));
        Self { client, trigger, pending_since, changes, users, running, write_log }
    }

    /// The watches in use.
    pub fn keys(&self) -> Vec<WatchKey> {
        lock(&self.users).keys().cloned().collect()
    }

    /// Makes `user` use exactly `keys`: starts what is missing, and stops
    /// watches nobody uses any more. Returns the caches of `keys`.
    pub fn use_exactly(
        &self,
        user: &ObjectRef<DesiredState>,
        keys: &BTreeSet<WatchKey>,
    ) -> HashMap<WatchKey, (Cache<K>, Ready)> {
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

    /// Those of `keys` the operator may not watch (its RBAC says no).
    pub fn forbidden(&self, keys: &BTreeSet<WatchKey>) -> Vec<WatchKey> {
        let running = lock(&self.running);
        keys.iter()
            .filter(|key| running.get(*key).is_some_and(|w| w.forbidden.load(std::sync::atomic::Ordering::Relaxed)))
            .cloned()
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

    fn start(&self, key: &WatchKey) -> Running<K> {
        let resource = key.resource();
        let api: Api<K> = match &key.namespace {
            Some(namespace) => Api::namespaced_with(self.client.clone(), namespace, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        };
        let mut writer = Writer::new();
        let (store, ready, ready_sender) = (writer.cache(), writer.ready(), writer.readiness());
        let write_log = self.write_log.clone();
        let stream = crate::operator::watch::retrying(api, watcher::Config::default())
            .modify(K::for_cache)
            // Every event, before the cache holds it: a pass that reads the
            // new object finds the write that made it confirmed. While the
            // watch lists, writes admitted before are waited for.
            .inspect({
                let mut listing = None;
                move |event| {
                    let Some(log) = &write_log else { return };
                    match event {
                        Ok(watcher::Event::Init) if listing.is_none() => listing = Some(log.listing()),
                        Ok(watcher::Event::InitDone) => listing = None,
                        Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                            log.observe(object, false)
                        }
                        Ok(watcher::Event::Delete(object)) => log.observe(object, true),
                        Ok(watcher::Event::Init) | Err(_) => {}
                    }
                }
            })
            .inspect(move |event| {
                if let Ok(event) = event {
                    writer.apply(event);
                }
            });
        let (trigger, users, key) = (self.trigger.clone(), self.users.clone(), key.clone());
        let (pending_since, changes) = (self.pending_since.clone(), self.changes.clone());
        let forbidden = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let refused = forbidden.clone();
        tracing::info!(kind = %key.kind, namespace = ?key.namespace, "watching");
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            let mut identities: HashMap<(Option<String>, String), String> = HashMap::new();
            while let Some(event) = stream.next().await {
                // A change that leaves what readers decide by as it was wakes nobody.
                if let Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) = &event
                    && let Some(identity) = object.identity()
                {
                    let name = (object.meta().namespace.clone(), object.meta().name.clone().unwrap_or_default());
                    if identities.insert(name, identity.clone()).as_ref() == Some(&identity) {
                        continue;
                    }
                }
                if let Ok(watcher::Event::Delete(object)) = &event {
                    identities
                        .remove(&(object.meta().namespace.clone(), object.meta().name.clone().unwrap_or_default()));
                }
                match event {
                    // Any change may be drift for whoever declares this kind here.
                    Ok(event) => {
                        let to_tell: Vec<_> =
                            lock(&users).get(&key).map(|u| u.iter().cloned().collect()).unwrap_or_default();
                        let named = match &event {
                            watcher::Event::Apply(object) | watcher::Event::Delete(object) => {
                                object.meta().name.as_deref()
                            }
                            // A relist.
                            _ => None,
                        };
                        let now = Instant::now();
                        for user in to_tell {
                            match named {
                                Some(name) => changes.object(&user, &key, name),
                                None => changes.anything(&user),
                            }
                            lock(&pending_since).entry(user.clone()).or_insert(now);
                            let _ = trigger.send(user);
                        }
                    }
                    Err(error) if K::READY_WHEN_FORBIDDEN && is_forbidden(&error) => {
                        // Said once; retried quietly (RBAC may be widened).
                        if !refused.swap(true, std::sync::atomic::Ordering::Relaxed) {
                            tracing::warn!(kind = %key.kind, namespace = ?key.namespace,
                                "not allowed to watch this kind here (RBAC); its objects are not checked");
                            // Nobody waits for a cache that cannot fill.
                            let _ = ready_sender.send(true);
                        } else {
                            tracing::debug!(%error, kind = %key.kind, "watch still forbidden; retrying with backoff");
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, kind = %key.kind, "watch error; retrying with backoff");
                    }
                }
            }
        });
        Running { store, ready, forbidden, task }
    }
}

impl<K: Cached> Drop for Watches<K> {
    fn drop(&mut self) {
        for watch in lock(&self.running).values() {
            watch.task.abort();
        }
    }
}

fn is_forbidden(error: &watcher::Error) -> bool {
    let api = match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status)) => Some(status),
        _ => None,
    };
    api.is_some_and(|status| status.code == 403)
}

/// Waits until every cache has listed, or `timeout` passes.
pub async fn wait_until_ready<K: Cached>(stores: &HashMap<WatchKey, (Cache<K>, Ready)>, timeout: Duration) -> bool {
    let readies: Vec<Ready> = stores.values().map(|(_, ready)| ready.clone()).collect();
    tokio::time::timeout(timeout, crate::operator::ready::all(&readies)).await.is_ok()
}
