//! Watches: the one chain every cache is kept by (watch, retry with
//! [`WatchBackoff`], reflect into a store), and a cache of a kind shared by
//! every reader in the process, so that a kind several parts read is
//! listed and watched once.
//!
//! kube-runtime's own shared stores (`store_shared`) do not fit: a reader
//! that stops polling (a controller between leadership terms) blocks the
//! watch for everyone, a reader that joins late is not told what the cache
//! already holds, and deletions are not passed on.

use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::broadcast;

use super::backoff::WatchBackoff;
use super::ready::Ready;

/// The events of a watch whose store the chain keeps.
pub type Reflected<K> = BoxStream<'static, watcher::Result<watcher::Event<K>>>;

/// A watch of `api` that retries with [`WatchBackoff`].
pub fn retrying<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    watcher(api, config).backoff(WatchBackoff::default())
}

/// A retrying watch of `api` kept in the returned store while the returned
/// stream is polled.
pub fn reflect<K>(api: Api<K>, config: watcher::Config) -> (Store<K>, Reflected<K>)
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    (store, retrying(api, config).reflect(writer).boxed())
}

/// Keeps `stream`'s store current until it ends (never, for a watch).
pub async fn drive<K: Send>(stream: Reflected<K>) {
    stream.for_each(|_| async {}).await;
}

/// An object of a [`Shared`] cache that changed.
#[derive(Clone, Debug)]
pub enum Change<K> {
    /// Created, changed, or (after the first list or a relist) present.
    Applied(Arc<K>),
    Deleted(Arc<K>),
}

impl<K> Change<K> {
    pub fn object(&self) -> &Arc<K> {
        match self {
            Change::Applied(object) | Change::Deleted(object) => object,
        }
    }
}

/// How many changes a slow reader may fall behind before it is handed the
/// whole cache again instead.
const BACKLOG: usize = 1024;

/// One cache of a kind for the whole process, kept by one watch, whose
/// changes any number of readers follow.
#[derive(Clone)]
pub struct Shared<K: kube::Resource<DynamicType = ()> + Clone + 'static> {
    pub store: Store<K>,
    /// The cache has listed (one waiter for every reader: see `ready`).
    pub listed: Ready,
    changes: broadcast::Sender<Change<K>>,
}

impl<K> Shared<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    /// Starts the watch; it runs while the returned handle or a clone of it
    /// lives (readers' streams end when it stops).
    pub fn start(api: Api<K>) -> Self {
        let (store, events) = reflect(api, watcher::Config::default());
        let (changes, _) = broadcast::channel(BACKLOG);
        let (set_listed, listed) = tokio::sync::watch::channel(false);
        let shared = Self { store: store.clone(), listed: Ready::from(listed), changes: changes.clone() };
        let changes = changes.downgrade();
        tokio::spawn(async move {
            let mut events = events;
            while let Some(event) = events.next().await {
                let Some(changes) = changes.upgrade() else { return };
                // The store has applied the event: readers see it there too.
                let touched: Vec<Change<K>> = match event {
                    Ok(watcher::Event::Apply(object)) => vec![Change::Applied(Arc::new(object))],
                    Ok(watcher::Event::Delete(object)) => vec![Change::Deleted(Arc::new(object))],
                    Ok(watcher::Event::InitDone) => {
                        set_listed.send_replace(true);
                        store.state().into_iter().map(Change::Applied).collect()
                    }
                    Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => Vec::new(),
                    Err(error) => {
                        tracing::warn!(%error, kind = %K::kind(&()), "watch failed; retrying");
                        Vec::new()
                    }
                };
                for change in touched {
                    // No reader yet is fine: a new one starts from the store.
                    let _ = changes.send(change);
                }
            }
        });
        shared
    }

    /// Every object of the cache once it has listed, then each change as it
    /// happens. A reader that falls [`BACKLOG`] changes behind is handed the
    /// whole cache again (it misses no object's latest state, only the
    /// deletions in between).
    pub fn changes(&self) -> impl Stream<Item = Change<K>> + Send + 'static {
        let receiver = self.changes.subscribe();
        let (store, listed) = (self.store.clone(), self.listed.clone());
        let everything = |store: &Store<K>| store.state().into_iter().map(Change::Applied).collect::<Vec<_>>();
        futures::stream::once(async move {
            listed.wait().await;
            let first = everything(&store);
            let rest = futures::stream::unfold((receiver, store), move |(mut receiver, store)| async move {
                let batch = match receiver.recv().await {
                    Ok(change) => vec![change],
                    Err(broadcast::error::RecvError::Lagged(_)) => everything(&store),
                    Err(broadcast::error::RecvError::Closed) => return None,
                };
                Some((batch, (receiver, store)))
            });
            futures::stream::iter([first]).chain(rest)
        })
        .flatten()
        .flat_map(futures::stream::iter)
    }
}
