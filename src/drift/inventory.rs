//! A DesiredState's inventory: every object it has declared and seen live,
//! with the uid it had. It is what makes a removal from Git safe:
//!
//! - with `spec.prune`, an object an earlier revision declared and the
//!   current one does not is deleted (exactly that object: its uid), and its
//!   entry stays until the deletion is confirmed;
//! - without it, the object is *retired*: left in the cluster, and never
//!   judged as an undeclared creation (it was Git's, not a session's);
//! - a revision that would prune more than half of what was declared (an
//!   empty source pushed by mistake) prunes nothing until the DesiredState
//!   confirms that very set of deletions.
//!
//! Pure: [`advance`] is one revision's step, [`settle`] applies confirmed
//! deletions, [`encode`] and [`decode`] are the stored form.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};

use sha2::{Digest as _, Sha256};

use super::ObjectKey;

/// The first line of the stored form.
const HEADER: &str = "driftwarden-inventory v1";
/// The most a stored inventory may expand to (a ConfigMap holds 1 MiB; an
/// entry is about 100 bytes before compression).
const MAX_DECODED_BYTES: u64 = 64 << 20;

/// What became of an object the inventory lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    /// The current revision declares it.
    Declared,
    /// Removed from Git while prune was off: left alone, for good.
    Retired,
    /// Removed from Git with prune on: deleted, not yet confirmed gone.
    Pruning,
}

impl State {
    fn word(self) -> &'static str {
        match self {
            State::Declared => "declared",
            State::Retired => "retired",
            State::Pruning => "pruning",
        }
    }

    fn parse(word: &str) -> Option<Self> {
        Some(match word {
            "declared" => State::Declared,
            "retired" => State::Retired,
            "pruning" => State::Pruning,
            _ => return None,
        })
    }
}

/// One object of the inventory.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry {
    /// `apps/v1`, `v1`: what to delete it through.
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    /// The uid it had when last seen; empty if it was never seen live.
    pub uid: String,
    pub state: State,
}

/// Group, kind, namespace, name: a new revision may move an object to
/// another version of its group and it is still the same object.
pub type Id = (String, String, Option<String>, String);

impl Entry {
    pub fn id(&self) -> Id {
        (group_of(&self.api_version).to_owned(), self.kind.clone(), self.namespace.clone(), self.name.clone())
    }

    pub fn object_ref(&self) -> crate::api::ObjectRef {
        crate::api::ObjectRef {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    pub fn describe(&self) -> String {
        match &self.namespace {
            Some(namespace) => format!("{}/{} in {namespace}", self.kind, self.name),
            None => format!("{}/{}", self.kind, self.name),
        }
    }
}

fn group_of(api_version: &str) -> &str {
    api_version.split_once('/').map_or("", |(group, _)| group)
}

/// A declared object of the current revision, and the uid of its live
/// object (None: not live).
#[derive(Clone, Copy, Debug)]
pub struct Current<'a> {
    pub key: &'a ObjectKey,
    pub uid: Option<&'a str>,
}

/// A prune the guard holds back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    /// Objects this revision would delete...
    pub deletions: Vec<Entry>,
    /// ...of this many the previous revision declared.
    pub of: usize,
    /// What `spec.confirmPrune` must say to let exactly these go.
    pub token: String,
}

/// One revision's step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The next inventory, sorted.
    pub entries: Vec<Entry>,
    pub blocked: Option<Blocked>,
}

impl Step {
    /// The objects to delete now.
    pub fn pruning(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.state == State::Pruning)
    }

    /// Learns the uids of declared objects from what wrote them (a revert
    /// that re-created a deleted object knows its new uid before any watch
    /// does): an inventory stored now already lists it.
    pub fn learn_uids<'a>(&mut self, known: impl IntoIterator<Item = (&'a ObjectKey, &'a str)>) {
        for (key, uid) in known {
            let id: Id = (key.group.clone(), key.kind.clone(), key.namespace.clone(), key.name.clone());
            if let Some(entry) = self.entries.iter_mut().find(|e| e.state == State::Declared && e.id() == id) {
                entry.uid = uid.to_owned();
            }
        }
    }

    /// The uids of the objects kept that the current revision does not
    /// declare (retired, being pruned, held back): never undeclared drift.
    pub fn removed_from_git(&self) -> BTreeSet<String> {
        let held_back = self.blocked.iter().flat_map(|b| &b.deletions);
        let removed = self.entries.iter().filter(|e| e.state != State::Declared);
        removed.chain(held_back).map(|e| e.uid.clone()).collect()
    }
}

/// How the spec asks for removals to be treated.
#[derive(Clone, Copy, Debug, Default)]
pub struct Policy<'a> {
    pub prune: bool,
    /// The token of a blocked prune the DesiredState confirmed.
    pub confirmed: Option<&'a str>,
}

/// The inventory after the current revision: what it declares (with the
/// live uids), what the previous inventory had that it no longer declares
/// (pruned, retired or held back by the guard). `elsewhere` says whether
/// another DesiredState declares an object now: then it is that one's, and
/// leaves this inventory.
pub fn advance(
    previous: &[Entry],
    current: &[Current<'_>],
    policy: Policy<'_>,
    elsewhere: impl Fn(&Id) -> bool,
) -> Step {
    let mut next: BTreeMap<Id, Entry> = BTreeMap::new();
    for declared in current {
        let key = declared.key;
        let entry = Entry {
            api_version: key.api_version.clone(),
            kind: key.kind.clone(),
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            uid: declared.uid.unwrap_or_default().to_owned(),
            state: State::Declared,
        };
        next.insert(entry.id(), entry);
    }
    let was_declared = previous.iter().filter(|e| e.state == State::Declared).count();
    let mut removed = Vec::new();
    for entry in previous {
        let id = entry.id();
        // Never seen live: nothing of it to delete or to spare.
        if next.contains_key(&id) || entry.uid.is_empty() || elsewhere(&id) {
            continue;
        }
        let state = match (entry.state, policy.prune) {
            (State::Declared, true) => {
                removed.push(entry.clone());
                continue;
            }
            (State::Pruning, true) => State::Pruning,
            // What was left behind before prune was on stays left behind;
            // a deletion under way when prune is turned off stops.
            _ => State::Retired,
        };
        next.insert(id, Entry { state, ..entry.clone() });
    }
    let mut blocked = None;
    if !removed.is_empty() {
        let token = token_of(&removed);
        let guarded = removed.len() * 2 > was_declared && policy.confirmed != Some(token.as_str());
        let state = if guarded { State::Declared } else { State::Pruning };
        for entry in &removed {
            next.insert(entry.id(), Entry { state, ..entry.clone() });
        }
        if guarded {
            blocked = Some(Blocked { deletions: removed, of: was_declared, token });
        }
    }
    Step { entries: next.into_values().collect(), blocked }
}

/// The inventory once the deletions of `gone` (gone, or replaced by another
/// object of that name) are confirmed: their entries leave it.
pub fn settle(entries: &mut Vec<Entry>, gone: &BTreeSet<Id>) {
    entries.retain(|e| !(e.state == State::Pruning && gone.contains(&e.id())));
}

/// Names a set of deletions: 12 hex digits of a hash of their identities.
fn token_of(entries: &[Entry]) -> String {
    let mut ids: Vec<String> = entries.iter().map(|e| format!("{:?} {}", e.id(), e.uid)).collect();
    ids.sort();
    let digest = Sha256::digest(ids.join("\n").as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Why a stored inventory cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("not gzip-compressed text: {0}")]
    Compression(String),
    #[error("missing the header line {HEADER:?}")]
    Header,
    #[error("line {line}: {why}")]
    Line { line: usize, why: &'static str },
}

/// The stored form: gzip-compressed lines of
/// `apiVersion kind namespace name uid state` (`-` for no namespace, no uid).
pub fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut text = String::with_capacity(entries.len() * 100 + HEADER.len() + 1);
    text.push_str(HEADER);
    text.push('\n');
    for e in entries {
        let namespace = e.namespace.as_deref().unwrap_or("-");
        let uid = if e.uid.is_empty() { "-" } else { &e.uid };
        text.push_str(&format!("{} {} {namespace} {} {uid} {}\n", e.api_version, e.kind, e.name, e.state.word()));
    }
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to memory cannot fail.
    let _ = encoder.write_all(text.as_bytes());
    encoder.finish().unwrap_or_default()
}

/// Reads the stored form back; anything malformed is an error, never a
/// partial inventory (a partial one would retire or prune the wrong objects).
pub fn decode(bytes: &[u8]) -> Result<Vec<Entry>, DecodeError> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes)
        .take(MAX_DECODED_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| DecodeError::Compression(e.to_string()))?;
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(DecodeError::Header);
    }
    let mut entries = Vec::new();
    for (at, line) in lines.enumerate() {
        let line_no = at + 2;
        let bad = |why| DecodeError::Line { line: line_no, why };
        let fields: Vec<&str> = line.split(' ').collect();
        let [api_version, kind, namespace, name, uid, state] = fields[..] else {
            return Err(bad("expected six fields"));
        };
        if [api_version, kind, namespace, name, uid].iter().any(|f| f.is_empty()) {
            return Err(bad("an empty field"));
        }
        let state = State::parse(state).ok_or_else(|| bad("unknown state"))?;
        entries.push(Entry {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            namespace: (namespace != "-").then(|| namespace.to_owned()),
            name: name.to_owned(),
            uid: if uid == "-" { String::new() } else { uid.to_owned() },
            state,
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kind: &str, name: &str) -> ObjectKey {
        let (api_version, group) = match kind {
            "Deployment" => ("apps/v1", "apps"),
            _ => ("v1", ""),
        };
        ObjectKey {
            api_version: api_version.into(),
            group: group.into(),
            version: "v1".into(),
            kind: kind.into(),
            namespace: Some("shop".into()),
            name: name.into(),
        }
    }

    fn entry(kind: &str, name: &str, uid: &str, state: State) -> Entry {
        let k = key(kind, name);
        Entry { api_version: k.api_version, kind: k.kind, namespace: k.namespace, name: k.name, uid: uid.into(), state }
    }

    fn names(step: &Step, state: State) -> Vec<String> {
        step.entries.iter().filter(|e| e.state == state).map(|e| e.name.clone()).collect()
    }

    const PRUNE: Policy<'static> = Policy { prune: true, confirmed: None };
    const KEEP: Policy<'static> = Policy { prune: false, confirmed: None };

    fn nowhere(_: &Id) -> bool {
        false
    }

    #[test]
    fn a_first_inventory_lists_what_is_declared_with_live_uids() {
        let (a, b) = (key("Deployment", "a"), key("ConfigMap", "b"));
        let step =
            advance(&[], &[Current { key: &a, uid: Some("u-a") }, Current { key: &b, uid: None }], PRUNE, nowhere);
        assert_eq!(step.blocked, None);
        assert_eq!(names(&step, State::Declared), ["b", "a"]);
        assert_eq!(step.entries.iter().map(|e| e.uid.as_str()).collect::<Vec<_>>(), ["", "u-a"]);
    }

    #[test]
    fn removals_are_pruned_retired_or_held_back() {
        let previous: Vec<Entry> =
            ["a", "b", "c"].iter().map(|n| entry("ConfigMap", n, &format!("u-{n}"), State::Declared)).collect();
        let (a, b) = (key("ConfigMap", "a"), key("ConfigMap", "b"));
        let two = [Current { key: &a, uid: Some("u-a") }, Current { key: &b, uid: Some("u-b") }];
        let none: [Current<'_>; 0] = [];
        struct Case {
            name: &'static str,
            current: &'static str,
            policy: Policy<'static>,
            pruning: &'static [&'static str],
            retired: &'static [&'static str],
            blocked: bool,
        }
        let cases = [
            Case {
                name: "one of three removed, prune on",
                current: "two",
                policy: PRUNE,
                pruning: &["c"],
                retired: &[],
                blocked: false,
            },
            Case {
                name: "one of three removed, prune off",
                current: "two",
                policy: KEEP,
                pruning: &[],
                retired: &["c"],
                blocked: false,
            },
            Case {
                name: "all removed, prune on: guarded",
                current: "none",
                policy: PRUNE,
                pruning: &[],
                retired: &[],
                blocked: true,
            },
            Case {
                name: "all removed, prune off",
                current: "none",
                policy: KEEP,
                pruning: &[],
                retired: &["a", "b", "c"],
                blocked: false,
            },
        ];
        for case in cases {
            let current: &[Current<'_>] = if case.current == "two" { &two } else { &none };
            let step = advance(&previous, current, case.policy, nowhere);
            assert_eq!(names(&step, State::Pruning), case.pruning, "{}", case.name);
            assert_eq!(names(&step, State::Retired), case.retired, "{}", case.name);
            assert_eq!(step.blocked.is_some(), case.blocked, "{}", case.name);
        }
    }

    #[test]
    fn a_guarded_prune_goes_ahead_once_its_token_is_confirmed() {
        let previous: Vec<Entry> =
            ["a", "b"].iter().map(|n| entry("ConfigMap", n, &format!("u-{n}"), State::Declared)).collect();
        let blocked = advance(&previous, &[], PRUNE, nowhere);
        let token = blocked.blocked.as_ref().map(|b| b.token.clone()).unwrap();
        assert_eq!(blocked.blocked.as_ref().map(|b| (b.deletions.len(), b.of)), Some((2, 2)));
        // Held back: still declared, so the guard judges the same baseline
        // next time; and not undeclared drift meanwhile.
        assert_eq!(names(&blocked, State::Declared), ["a", "b"]);
        assert_eq!(blocked.removed_from_git(), ["u-a".to_owned(), "u-b".to_owned()].into());
        let wrong = advance(&blocked.entries, &[], Policy { prune: true, confirmed: Some("000000000000") }, nowhere);
        assert!(wrong.blocked.is_some());
        let confirmed = advance(&blocked.entries, &[], Policy { prune: true, confirmed: Some(&token) }, nowhere);
        assert_eq!(confirmed.blocked, None);
        assert_eq!(names(&confirmed, State::Pruning), ["a", "b"]);
    }

    #[test]
    fn half_is_not_more_than_half() {
        let previous: Vec<Entry> =
            ["a", "b"].iter().map(|n| entry("ConfigMap", n, &format!("u-{n}"), State::Declared)).collect();
        let a = key("ConfigMap", "a");
        let step = advance(&previous, &[Current { key: &a, uid: Some("u-a") }], PRUNE, nowhere);
        assert_eq!((names(&step, State::Pruning), step.blocked), (vec!["b".to_owned()], None));
    }

    #[test]
    fn what_was_left_behind_or_never_seen_or_moved_is_never_pruned() {
        let previous = vec![
            entry("ConfigMap", "old", "u-old", State::Retired),
            entry("ConfigMap", "ghost", "", State::Declared),
            entry("ConfigMap", "moved", "u-moved", State::Declared),
            entry("ConfigMap", "kept", "u-kept", State::Declared),
            entry("ConfigMap", "going", "u-going", State::Pruning),
        ];
        let kept = key("ConfigMap", "kept");
        let moved = |id: &Id| id.3 == "moved";
        let step = advance(&previous, &[Current { key: &kept, uid: Some("u-kept") }], PRUNE, moved);
        assert_eq!(names(&step, State::Retired), ["old"]);
        assert_eq!(names(&step, State::Pruning), ["going"]);
        assert_eq!(names(&step, State::Declared), ["kept"]);
        assert_eq!(step.removed_from_git(), ["u-going".to_owned(), "u-old".to_owned()].into());
        // Prune turned off midway: the deletion under way stops.
        let off = advance(&step.entries, &[Current { key: &kept, uid: Some("u-kept") }], KEEP, nowhere);
        assert_eq!(names(&off, State::Retired), ["going", "old"]);
    }

    #[test]
    fn a_re_created_object_is_listed_with_the_uid_its_revert_saw() {
        let a = key("ConfigMap", "a");
        let mut step = advance(&[], &[Current { key: &a, uid: None }], PRUNE, nowhere);
        step.learn_uids([(&a, "u-new")]);
        assert_eq!(step.entries[0].uid, "u-new");
        // Removed from Git after a restart that read this inventory: pruned, by that uid.
        let next = advance(&step.entries, &[], PRUNE, nowhere);
        assert!(next.blocked.is_some(), "one of one is more than half");
    }

    #[test]
    fn a_declared_object_takes_the_uid_it_has_now_and_its_new_version() {
        let previous = vec![entry("Deployment", "a", "u-old", State::Declared)];
        let mut moved = key("Deployment", "a");
        moved.api_version = "apps/v2".into();
        let step = advance(&previous, &[Current { key: &moved, uid: Some("u-new") }], PRUNE, nowhere);
        assert_eq!(step.entries.len(), 1);
        assert_eq!((step.entries[0].api_version.as_str(), step.entries[0].uid.as_str()), ("apps/v2", "u-new"));
    }

    #[test]
    fn settled_deletions_leave_and_nothing_else_does() {
        let mut entries = vec![
            entry("ConfigMap", "gone", "u1", State::Pruning),
            entry("ConfigMap", "slow", "u2", State::Pruning),
            entry("ConfigMap", "declared", "u3", State::Declared),
        ];
        let gone: BTreeSet<Id> = [entries[0].id(), entries[2].id()].into();
        settle(&mut entries, &gone);
        assert_eq!(entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["slow", "declared"]);
    }

    #[test]
    fn the_stored_form_round_trips_and_refuses_damage() {
        let entries = vec![
            entry("Deployment", "a", "u-a", State::Declared),
            entry("ConfigMap", "b", "", State::Retired),
            Entry { namespace: None, ..entry("ConfigMap", "c", "u-c", State::Pruning) },
        ];
        let stored = encode(&entries);
        assert_eq!(decode(&stored), Ok(entries));
        assert!(matches!(decode(b"not gzip"), Err(DecodeError::Compression(_))));
        let gz = |text: &str| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(text.as_bytes()).unwrap();
            e.finish().unwrap()
        };
        assert_eq!(decode(&gz("something else\n")), Err(DecodeError::Header));
        assert_eq!(
            decode(&gz(&format!("{HEADER}\nv1 ConfigMap shop a u gone\n"))),
            Err(DecodeError::Line { line: 2, why: "unknown state" })
        );
        assert!(decode(&gz(&format!("{HEADER}\nv1 ConfigMap shop a\n"))).is_err());
    }

    #[test]
    fn ten_thousand_entries_fit_a_config_map() {
        let entries: Vec<Entry> = (0..10_000)
            .map(|i| {
                entry(
                    "Deployment",
                    &format!("service-{i:05}"),
                    &format!("{:032x}", i as u128 * 0x9e3779b97f4a7c15),
                    State::Declared,
                )
            })
            .collect();
        let stored = encode(&entries);
        assert!(stored.len() < 512 << 10, "{} bytes", stored.len());
    }
}
