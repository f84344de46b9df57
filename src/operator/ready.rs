//! Waiting for a watch cache's first list from any number of tasks.
//!
//! kube's `Store::wait_until_ready` keeps one waker: of several tasks that
//! wait at once, only the last to poll is woken when the list completes,
//! and the others sleep until something else polls them (a timeout, if
//! they have one). Polling it with a no-op waker (`now_or_never`) steals
//! the wakeup of a real waiter. After a restart every AccessRequest's
//! reconcile waited for the caches at once, and all but one slept until
//! their 10 s timeout. So each cache gets a single waiter task here, which
//! publishes readiness on a watch channel; that wakes every waiter.

use kube::runtime::reflector::{Lookup, Store};
use tokio::sync::watch;

/// Whether a cache has listed, for any number of waiters.
#[derive(Clone, Debug)]
pub struct Ready(watch::Receiver<bool>);

impl Ready {
    /// Starts the one task that waits on `store`. It ends when the store is
    /// ready, or when its writer is gone (then waiters stop waiting too, as
    /// `wait_until_ready` returns an error then).
    pub fn of<K>(store: &Store<K>) -> Self
    where
        K: Lookup + Clone + Send + Sync + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
    {
        let (sender, receiver) = watch::channel(false);
        let store = store.clone();
        tokio::spawn(async move {
            if store.wait_until_ready().await.is_ok() {
                let _ = sender.send(true);
            }
        });
        Self(receiver)
    }

    /// Ready once every one of `each` is.
    pub fn all_of(each: Vec<Ready>) -> Self {
        let (sender, all) = watch::channel(false);
        tokio::spawn(async move {
            self::all(&each).await;
            let _ = sender.send(true);
        });
        Self(all)
    }

    /// Whether the cache has listed (never waits).
    pub fn is_ready(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until the cache has listed (or can no longer).
    pub async fn wait(&self) {
        let _ = self.0.clone().wait_for(|ready| *ready).await;
    }
}

impl From<watch::Receiver<bool>> for Ready {
    /// Readiness published by the caller (for several caches at once, say).
    fn from(receiver: watch::Receiver<bool>) -> Self {
        Self(receiver)
    }
}

/// Waits for all of `readies`.
pub async fn all(readies: impl IntoIterator<Item = &Ready>) {
    for ready in readies {
        ready.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher;

    use super::*;

    const WAITERS: usize = 20;

    type Waiter = Box<dyn Fn() -> futures::future::BoxFuture<'static, ()>>;

    /// How many of `WAITERS` tasks, each running a future of `waiter`, finish
    /// within a second of the store's first list.
    async fn woken(waiter: impl FnOnce(Store<ConfigMap>) -> Waiter) -> usize {
        let mut writer: Writer<ConfigMap> = Writer::default();
        let waiter = waiter(writer.as_reader());
        let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..WAITERS {
            let (waiting, done) = (waiter(), done.clone());
            tokio::spawn(async move {
                waiting.await;
                let _ = done.send(());
            });
        }
        // Let every waiter poll (and register its waker) first.
        tokio::time::sleep(Duration::from_millis(50)).await;
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let mut count = 0;
        while let Ok(Some(())) = tokio::time::timeout(Duration::from_secs(1), finished.recv()).await {
            count += 1;
            if count == WAITERS {
                break;
            }
        }
        count
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_waiter_is_woken_when_the_cache_has_listed() {
        let woken = woken(|store| {
            let ready = Ready::of(&store);
            Box::new(move || {
                let ready = ready.clone();
                Box::pin(async move { ready.wait().await })
            })
        })
        .await;
        assert_eq!(woken, WAITERS);
    }

    /// Why this module exists: if kube's own wait wakes every waiter one
    /// day, this fails, and `Ready` can go.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kubes_own_wait_wakes_only_some_of_many_waiters() {
        let woken = woken(|store| {
            Box::new(move || {
                let store = store.clone();
                Box::pin(async move {
                    let _ = store.wait_until_ready().await;
                })
            })
        })
        .await;
        assert!(woken < WAITERS, "all {woken} waiters were woken: kube's Store::wait_until_ready is fixed");
    }
}
