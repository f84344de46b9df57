//! Declarations the API server refused when a revert applied them.
//!
//! A revert the server answers with 400 or 422 is refused for what Git
//! declares (`protocol: tcp`, a negative replica count, a value its schema
//! types otherwise): trying again cannot help. The object is reported once,
//! as a source problem (`SourceValid=False`, reason `DeclarationRejected`),
//! and not reverted again until the sources change (a new parse).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use kube::runtime::reflector::ObjectRef;

use super::cached::Declarations;
use crate::api::DesiredState;
use crate::operator::gate::RevertError;

/// The longest server message kept: it ends up in status and an Event.
const MAX_MESSAGE: usize = 400;

/// Per DesiredState: the parse the rejections belong to, and per declared
/// object (by index) the server's reason.
#[derive(Default)]
pub(super) struct Rejections(Mutex<HashMap<ObjectRef<DesiredState>, (Arc<Declarations>, BTreeMap<usize, String>)>>);

impl Rejections {
    /// Whether this parse's object `index` was refused already.
    pub fn contains(&self, me: &ObjectRef<DesiredState>, sources: &Arc<Declarations>, index: usize) -> bool {
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.get(me).is_some_and(|(parsed, by_index)| Arc::ptr_eq(parsed, sources) && by_index.contains_key(&index))
    }

    /// Records a refusal; a rejection of an older parse is forgotten.
    pub fn insert(&self, me: &ObjectRef<DesiredState>, sources: &Arc<Declarations>, index: usize, reason: String) {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let entry = all.entry(me.clone()).or_insert_with(|| (sources.clone(), BTreeMap::new()));
        if !Arc::ptr_eq(&entry.0, sources) {
            *entry = (sources.clone(), BTreeMap::new());
        }
        entry.1.insert(index, reason);
    }

    /// This parse's refused objects, by index.
    pub fn of(&self, me: &ObjectRef<DesiredState>, sources: &Arc<Declarations>) -> Vec<(usize, String)> {
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match all.get(me) {
            Some((parsed, by_index)) if Arc::ptr_eq(parsed, sources) => {
                by_index.iter().map(|(index, reason)| (*index, reason.clone())).collect()
            }
            _ => Vec::new(),
        }
    }

    pub fn forget(&self, me: &ObjectRef<DesiredState>) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(me);
    }
}

/// The server's reason when a revert failed because it refused the declared
/// object itself; None for every other failure (conflicts, outages,
/// permissions), which are retried. A Secret's reason is not repeated: it
/// could quote a value.
pub(super) fn refused_declaration(error: &RevertError, kind: &str) -> Option<String> {
    let RevertError::Apply(kube::Error::Api(status)) = error else { return None };
    // Server-side apply reports a value its schema cannot hold as a 500 on
    // some releases ("failed to create typed patch object").
    let typed = status.code == 500 && status.message.contains("failed to create typed patch object");
    if !(status.code == 400 || status.code == 422 || typed) {
        return None;
    }
    if kind == "Secret" {
        return Some(format!("the API server refused it ({})", status.code));
    }
    let mut message = status.message.clone();
    if let Some((at, _)) = message.char_indices().nth(MAX_MESSAGE) {
        message.truncate(at);
        message.push_str("...");
    }
    Some(format!("the API server refused it ({}): {message}", status.code))
}
