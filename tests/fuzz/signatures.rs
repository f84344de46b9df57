//! Targets `signatures_*`: `drift::signature::verify` on signed source sets
//! that were then changed (one field of any kind, or several), on arbitrary
//! annotation text, and on sets signed for another namespace.
//!
//! Properties: no panic; a set changed in any way that changes what the
//! sources declare (a key, its content, its place, the revision, the source
//! label, the set of ConfigMaps, the envelope) is never accepted; the
//! untouched set always is.

use std::collections::BTreeMap;

use driftwarden::drift::signature::{self, Envelope, SIGNATURE_ANNOTATION, SOURCE_LABEL, TrustedKey};
use driftwarden::drift::{REVISION_ANNOTATION, SourceConfigMap};
use ed25519_dalek::SigningKey;
use proptest::prelude::*;

use crate::fuzz;

const NAMESPACE: &str = "shop";

fn key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

fn trusted() -> Vec<TrustedKey> {
    vec![
        TrustedKey { name: "ci".into(), key: key().verifying_key() },
        TrustedKey { name: "other".into(), key: SigningKey::from_bytes(&[1; 32]).verifying_key() },
    ]
}

/// A set of 1 to 3 ConfigMaps with text and binary keys.
fn unsigned_set() -> impl Strategy<Value = Vec<SourceConfigMap>> {
    let keys = proptest::collection::btree_map("[a-z]{1,6}\\.yaml", ".{0,40}", 0..4);
    let binary =
        proptest::collection::btree_map("[a-z]{1,6}\\.gz", proptest::collection::vec(any::<u8>(), 0..16), 0..2);
    proptest::collection::vec((keys, binary, proptest::option::of("[0-9a-f]{7,40}")), 1..4).prop_map(|maps| {
        maps.into_iter()
            .enumerate()
            .map(|(index, (data, binary_data, revision))| SourceConfigMap {
                name: if index == 0 { "state".into() } else { format!("state-{index}") },
                data,
                binary_data,
                annotations: revision.into_iter().map(|r| (REVISION_ANNOTATION.to_owned(), r)).collect(),
                labels: BTreeMap::from([(SOURCE_LABEL.to_owned(), "state".to_owned())]),
            })
            .collect()
    })
}

fn signed(mut set: Vec<SourceConfigMap>, sequence: u64) -> Vec<SourceConfigMap> {
    // The revision must agree across a set (the parser refuses others).
    let revision = set[0].annotations.get(REVISION_ANNOTATION).cloned();
    for cm in &mut set {
        cm.annotations.remove(REVISION_ANNOTATION);
        if let Some(revision) = &revision {
            cm.annotations.insert(REVISION_ANNOTATION.into(), revision.clone());
        }
    }
    let envelope = signature::sign(&key(), NAMESPACE, sequence, &set).to_annotation();
    for cm in &mut set {
        cm.annotations.insert(SIGNATURE_ANNOTATION.into(), envelope.clone());
    }
    set
}

/// One change to a signed set. Indices are taken modulo what exists.
#[derive(Debug, Clone)]
enum Change {
    SetData { config_map: usize, key: String, value: String },
    RemoveData { config_map: usize, index: usize },
    FlipByte { config_map: usize, index: usize, at: usize },
    MoveKey { from: usize, to: usize, index: usize },
    Revision { config_map: usize, revision: Option<String> },
    Label { config_map: usize, value: Option<String> },
    Rename { config_map: usize, name: String },
    Drop { config_map: usize },
    AddConfigMap { name: String, copy_of: usize },
    Envelope { config_map: usize, text: String },
    EnvelopeField { field: u8, value: u64, text: String },
}

fn change() -> impl Strategy<Value = Change> {
    let i = || 0usize..8;
    prop_oneof![
        (i(), "[a-z]{1,6}\\.yaml", ".{0,20}").prop_map(|(config_map, key, value)| Change::SetData {
            config_map,
            key,
            value
        }),
        (i(), i()).prop_map(|(config_map, index)| Change::RemoveData { config_map, index }),
        (i(), i(), 0usize..64).prop_map(|(config_map, index, at)| Change::FlipByte { config_map, index, at }),
        (i(), i(), i()).prop_map(|(from, to, index)| Change::MoveKey { from, to, index }),
        (i(), proptest::option::of("[0-9a-f]{1,12}"))
            .prop_map(|(config_map, revision)| Change::Revision { config_map, revision }),
        (i(), proptest::option::of("[a-z]{1,8}")).prop_map(|(config_map, value)| Change::Label { config_map, value }),
        (i(), "state(-[0-9])?|[a-z]{1,6}").prop_map(|(config_map, name)| Change::Rename { config_map, name }),
        i().prop_map(|config_map| Change::Drop { config_map }),
        ("state-[4-9]|other", i()).prop_map(|(name, copy_of)| Change::AddConfigMap { name, copy_of }),
        (i(), ".{0,200}").prop_map(|(config_map, text)| Change::Envelope { config_map, text }),
        (0u8..4, any::<u64>(), "[A-Za-z0-9+/=]{0,100}").prop_map(|(field, value, text)| Change::EnvelopeField {
            field,
            value,
            text
        }),
    ]
}

/// Applies `change`; returns whether it changed anything at all.
fn apply(set: &mut Vec<SourceConfigMap>, change: &Change) -> bool {
    let before = set.clone();
    let n = set.len();
    match change {
        Change::SetData { config_map, key, value } => {
            set[config_map % n].data.insert(key.clone(), value.clone());
        }
        Change::RemoveData { config_map, index } => {
            let cm = &mut set[config_map % n];
            if let Some(key) = cm.data.keys().nth(index % cm.data.len().max(1)).cloned() {
                cm.data.remove(&key);
            }
        }
        Change::FlipByte { config_map, index, at } => {
            let cm = &mut set[config_map % n];
            let count = cm.binary_data.len().max(1);
            if let Some(bytes) = cm.binary_data.values_mut().nth(index % count)
                && !bytes.is_empty()
            {
                let at = at % bytes.len();
                bytes[at] ^= 0x01;
            }
        }
        Change::MoveKey { from, to, index } => {
            let (from, to) = (from % n, to % n);
            if let Some(key) = set[from].data.keys().nth(index % set[from].data.len().max(1)).cloned() {
                let value = set[from].data.remove(&key).unwrap_or_default();
                if from == to {
                    set[to].binary_data.insert(key, value.into_bytes());
                } else {
                    set[to].data.insert(key, value);
                }
            }
        }
        Change::Revision { config_map, revision } => {
            let annotations = &mut set[config_map % n].annotations;
            match revision {
                Some(revision) => annotations.insert(REVISION_ANNOTATION.into(), revision.clone()),
                None => annotations.remove(REVISION_ANNOTATION),
            };
        }
        Change::Label { config_map, value } => {
            let labels = &mut set[config_map % n].labels;
            match value {
                Some(value) => labels.insert(SOURCE_LABEL.into(), value.clone()),
                None => labels.remove(SOURCE_LABEL),
            };
        }
        Change::Rename { config_map, name } => set[config_map % n].name = name.clone(),
        Change::Drop { config_map } => {
            if n > 1 {
                set.remove(config_map % n);
            }
        }
        Change::AddConfigMap { name, copy_of } => {
            let mut copy = set[copy_of % n].clone();
            copy.name = name.clone();
            set.push(copy);
        }
        Change::Envelope { config_map, text } => {
            set[config_map % n].annotations.insert(SIGNATURE_ANNOTATION.into(), text.clone());
        }
        Change::EnvelopeField { field, value, text } => {
            let Ok(mut envelope) = Envelope::from_annotation("", &set[0].annotations[SIGNATURE_ANNOTATION]) else {
                return false;
            };
            match field {
                0 => envelope.sequence = *value,
                1 => envelope.signature = text.clone(),
                2 => envelope.key_id = text.clone(),
                _ => envelope.config_maps.push(text.clone()),
            }
            for cm in set.iter_mut() {
                cm.annotations.insert(SIGNATURE_ANNOTATION.into(), envelope.to_annotation());
            }
        }
    }
    let mut sorted_before: Vec<_> = before.iter().map(|c| format!("{c:?}")).collect();
    let mut sorted_after: Vec<_> = set.iter().map(|c| format!("{c:?}")).collect();
    sorted_before.sort();
    sorted_after.sort();
    sorted_before != sorted_after
}

#[test]
fn signatures_mutated() {
    let strategy = (unsigned_set(), 1u64..u64::MAX / 2, proptest::collection::vec(change(), 1..4));
    fuzz("signatures_mutated", 400, strategy, |(set, sequence, changes)| {
        let mut set = signed(set, sequence);
        prop_assert!(signature::verify(NAMESPACE, &set, &trusted(), None).is_ok(), "the untouched set verifies");
        let original = set.clone();
        let mut changed = false;
        for change in &changes {
            changed |= apply(&mut set, change);
        }
        let mut a: Vec<_> = original.iter().map(|c| format!("{c:?}")).collect();
        let mut b: Vec<_> = set.iter().map(|c| format!("{c:?}")).collect();
        a.sort();
        b.sort();
        if changed && a != b {
            let verdict = signature::verify(NAMESPACE, &set, &trusted(), None);
            prop_assert!(verdict.is_err(), "a changed set was accepted: {changes:?} -> {verdict:?}");
        }
        Ok(())
    });
}

#[test]
fn signatures_arbitrary_annotations() {
    let strategy = (unsigned_set(), proptest::collection::vec(any::<String>(), 1..4));
    fuzz("signatures_arbitrary_annotations", 300, strategy, |(mut set, texts)| {
        for (cm, text) in set.iter_mut().zip(texts.iter().cycle()) {
            cm.annotations.insert(SIGNATURE_ANNOTATION.into(), text.clone());
        }
        let verdict = signature::verify(NAMESPACE, &set, &trusted(), None);
        prop_assert!(verdict.is_err(), "an unsigned set was accepted: {verdict:?}");
        if let Err(error) = verdict {
            prop_assert!(error.to_string().len() < 4096, "a message of {} bytes", error.to_string().len());
        }
        Ok(())
    });
}

#[test]
fn signatures_other_namespace_or_older_sequence() {
    let strategy = (unsigned_set(), 2u64..u64::MAX / 2, "[a-z]{1,10}");
    fuzz("signatures_other_namespace_or_older_sequence", 150, strategy, |(set, sequence, namespace)| {
        let set = signed(set, sequence);
        if namespace != NAMESPACE {
            prop_assert!(signature::verify(&namespace, &set, &trusted(), None).is_err());
        }
        let replay = signature::verify(NAMESPACE, &set, &trusted(), Some(sequence + 1));
        prop_assert!(matches!(replay, Err(signature::SignatureError::Replayed { .. })), "{replay:?}");
        prop_assert!(signature::verify(NAMESPACE, &set, &trusted(), Some(sequence - 1)).is_ok());
        Ok(())
    });
}
