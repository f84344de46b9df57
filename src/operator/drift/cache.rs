//! A watch's cache of objects, keyed by name alone.
//!
//! Each of the drift controller's watches sees one kind in one namespace
//! (or a cluster-scoped kind), so an object's name is all of its key.
//! kube-runtime's `Store` keys each object by an `ObjectRef`, which holds a
//! clone of the kind's `ApiResource` (five strings) and the object's uid
//! and resourceVersion: about 400 bytes per object with its hash slot, more
//! than the parsed metadata a kept object has left, and a lookup built
//! those five strings again. Kept the same way otherwise: a relist builds
//! the new cache beside the old one and swaps them when it is complete, so
//! a reader never sees half a list.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use kube::runtime::watcher::Event;
use tokio::sync::watch;

use crate::operator::ready::Ready;

type Objects<K> = HashMap<Box<str>, Arc<K>>;

/// The read side, shared by every pass that reads this watch.
pub struct Cache<K> {
    objects: Arc<RwLock<Objects<K>>>,
}

impl<K> Clone for Cache<K> {
    fn clone(&self) -> Self {
        Self { objects: self.objects.clone() }
    }
}

impl<K> Cache<K> {
    /// The object named `name`, as last seen.
    pub fn get(&self, name: &str) -> Option<Arc<K>> {
        self.read().get(name).cloned()
    }

    /// Every object, in no particular order.
    pub fn state(&self) -> Vec<Arc<K>> {
        self.read().values().cloned().collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Objects<K>> {
        self.objects.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The write side: the watch task applies every event to it.
pub struct Writer<K> {
    cache: Cache<K>,
    /// A list in progress (between `Init` and `InitDone`).
    listing: Option<Objects<K>>,
    listed: Arc<watch::Sender<bool>>,
}

impl<K: kube::Resource> Writer<K> {
    pub fn new() -> Self {
        let (listed, _) = watch::channel(false);
        Self { cache: Cache { objects: Arc::default() }, listing: None, listed: Arc::new(listed) }
    }

    pub fn cache(&self) -> Cache<K> {
        self.cache.clone()
    }

    /// Ready once the first list is complete.
    pub fn ready(&self) -> Ready {
        Ready::from(self.listed.subscribe())
    }

    /// Makes the cache ready without a list (a watch the operator may not
    /// make: nobody should wait for a cache that cannot fill).
    pub fn readiness(&self) -> Arc<watch::Sender<bool>> {
        self.listed.clone()
    }

    pub fn apply(&mut self, event: &Event<K>)
    where
        K: Clone,
    {
        let name = |object: &K| -> Box<str> { object.meta().name.as_deref().unwrap_or_default().into() };
        match event {
            Event::Init => self.listing = Some(HashMap::new()),
            Event::InitApply(object) => {
                if let Some(listing) = &mut self.listing {
                    listing.insert(name(object), Arc::new(object.clone()));
                }
            }
            Event::InitDone => {
                if let Some(mut listing) = self.listing.take() {
                    listing.shrink_to_fit();
                    *self.write() = listing;
                }
                self.listed.send_replace(true);
            }
            Event::Apply(object) => {
                self.write().insert(name(object), Arc::new(object.clone()));
            }
            Event::Delete(object) => {
                self.write().remove(name(object).as_ref());
            }
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Objects<K>> {
        self.cache.objects.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn config_map(name: &str, version: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                resource_version: Some(version.into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    fn version(cache: &Cache<ConfigMap>, name: &str) -> Option<String> {
        cache.get(name).and_then(|o| o.metadata.resource_version.clone())
    }

    #[test]
    fn a_cache_follows_its_watch_and_swaps_in_a_relist_only_when_complete() {
        let mut writer = Writer::new();
        let (cache, ready) = (writer.cache(), writer.ready());
        writer.apply(&Event::Init);
        writer.apply(&Event::InitApply(config_map("a", "1")));
        assert!(!ready.is_ready() && cache.state().is_empty(), "half a list is not read");
        writer.apply(&Event::InitApply(config_map("b", "2")));
        writer.apply(&Event::InitDone);
        assert!(ready.is_ready());
        assert_eq!((version(&cache, "a"), cache.state().len()), (Some("1".into()), 2));

        writer.apply(&Event::Apply(config_map("a", "3")));
        writer.apply(&Event::Delete(config_map("b", "2")));
        assert_eq!((version(&cache, "a"), version(&cache, "b")), (Some("3".into()), None));

        // A relist: the old objects are read until the new list is complete;
        // what the new list lacks is gone after it.
        writer.apply(&Event::Init);
        writer.apply(&Event::InitApply(config_map("c", "5")));
        assert_eq!((version(&cache, "a"), version(&cache, "c")), (Some("3".into()), None));
        writer.apply(&Event::InitDone);
        assert_eq!((version(&cache, "a"), version(&cache, "c")), (None, Some("5".into())));
        assert_eq!(cache.state().len(), 1);
    }
}
