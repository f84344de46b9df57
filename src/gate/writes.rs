//! The write log, the pure part: who wrote which object, from the
//! operator's always-allowing admission webhook (`/writes`) and, where the
//! API server is configured to send them, audit events.
//!
//! An admission call says what the API server is about to store, not that
//! it stored it: another admission plugin may still refuse the write, or it
//! may meet a conflict. So a record from admission is *provisional* until a
//! watch delivers the write it describes, and then it is *confirmed*:
//!
//! - a create or an update carries the object as it will be stored, except
//!   for its new resourceVersion: its fingerprint (the object with
//!   resourceVersion and managedFields left out, in the form the watch
//!   cache keeps) must equal that of an object the watch delivers with the
//!   same uid and another resourceVersion. A create's uid is assigned
//!   before admission and is new, so it alone cannot match an older object;
//! - a scale (and other subresources whose body is not the object) carries
//!   the parent's uid and the replicas asked for: a watched change of that
//!   uid to those replicas confirms it;
//! - a delete is confirmed by the watch's deletion of that uid (or its
//!   `deletionTimestamp` being set, when finalizers hold it).
//!
//! A provisional record no watch confirms within [`PROVISIONAL_TTL`]
//! expires: a refused write, a no-op update and a forged call never
//! confirm. Audit events describe writes that succeeded, so they are
//! confirmed as they come; one that matches a confirmed admission record
//! (same user, verb, object, within [`SAME_WRITE`]) is the same write and
//! is counted once.
//!
//! Confirmed records are kept per namespace for [`RETENTION`] (longer than
//! any access window), within a byte budget: when a namespace exceeds it,
//! the oldest records go and the namespace remembers until when its record
//! is incomplete ([`WriteLog::incomplete_until`]); the gate then treats
//! drift from before that moment as unexplained (fails closed: revert).
//!
//! Each confirmed record is also [`Journaled`] through the API server
//! ([`super::journal`]), so that a restarted or new leader starts from the
//! complete record ([`WriteLog::restore`]), not from the requests' bounded
//! summaries.

use std::collections::{HashMap, VecDeque};

use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// How long an admitted write may take to show up in a watch.
pub const PROVISIONAL_TTL: SignedDuration = SignedDuration::from_secs(10);
/// A provisional record waits for its watch while the watches that could
/// deliver it are still listing (a replica starting to lead, a watch
/// starting or relisting), but never longer than this.
pub const PROVISIONAL_MAX_WAIT: SignedDuration = SignedDuration::from_secs(60);
/// Two reports (admission, audit) of one user's write to one object this
/// close in time are the same write.
pub const SAME_WRITE: SignedDuration = SignedDuration::from_secs(2);
/// How long confirmed records are kept (longer than any access window).
pub const RETENTION: SignedDuration = SignedDuration::from_hours(25);
/// The most a namespace's confirmed records may take (estimated).
pub const NAMESPACE_BUDGET_BYTES: usize = 8 << 20;
/// The most provisional records waiting at once (a flood of forged calls
/// pushes out only the oldest unconfirmed ones).
pub const MAX_PROVISIONAL: usize = 50_000;

/// Where a record came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    Admission,
    Audit,
}

/// One write: who, which verb, which object, when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The user as the API server resolved it (the impersonated one, if any).
    pub user: String,
    pub groups: Vec<String>,
    /// create, update, patch or delete (as RBAC names the verbs).
    pub verb: String,
    /// API group ("" for core).
    pub group: String,
    /// Plural resource, without the subresource.
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: String,
    /// When it was admitted (or, for audit events, received by the API server).
    pub at: Timestamp,
}

impl Record {
    /// The resource as RBAC rules name it: `deployments` or `deployments/scale`.
    pub fn rbac_resource(&self) -> String {
        match &self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.clone(),
        }
    }

    fn bytes(&self) -> usize {
        let groups: usize = self.groups.iter().map(String::len).sum();
        160 + self.user.len()
            + groups
            + self.verb.len()
            + self.group.len()
            + self.resource.len()
            + self.subresource.as_ref().map_or(0, String::len)
            + self.namespace.as_ref().map_or(0, String::len)
            + self.name.len()
    }

    fn same_write(&self, other: &Record) -> bool {
        // Admission sees a patch as an update.
        fn verb(v: &str) -> &str {
            if v == "patch" { "update" } else { v }
        }
        self.user == other.user
            && verb(&self.verb) == verb(&other.verb)
            && self.group == other.group
            && self.resource == other.resource
            && self.subresource == other.subresource
            && self.namespace == other.namespace
            && self.name == other.name
            && self.at.duration_since(other.at).abs() <= SAME_WRITE
    }
}

/// What a watch must deliver to confirm an admitted write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The object with this uid, at another resourceVersion than
    /// `previous`, with one of these fingerprints (one per form a watch
    /// keeps: whole, or metadata only).
    Content { uid: String, previous: Option<String>, fingerprints: Vec<u64> },
    /// The object with this uid, at another resourceVersion, with these replicas.
    Replicas { uid: String, previous: Option<String>, replicas: i64 },
    /// The object with this uid deleted (or its deletion begun).
    Deletion { uid: String },
}

impl Expect {
    fn uid(&self) -> &str {
        match self {
            Expect::Content { uid, .. } | Expect::Replicas { uid, .. } | Expect::Deletion { uid } => uid,
        }
    }
}

/// What a watch delivered of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed<'a> {
    pub uid: &'a str,
    pub resource_version: Option<&'a str>,
    /// The fingerprint of the object as the watch keeps it.
    pub fingerprint: u64,
    /// `spec.replicas`, where the watch keeps it.
    pub replicas: Option<i64>,
    /// Deleted, or its deletion begun.
    pub deleted: bool,
}

impl Expect {
    fn matches(&self, seen: &Observed<'_>) -> bool {
        let moved = |previous: &Option<String>| previous.as_deref() != seen.resource_version;
        match self {
            Expect::Content { previous, fingerprints, .. } => {
                !seen.deleted && moved(previous) && fingerprints.contains(&seen.fingerprint)
            }
            Expect::Replicas { previous, replicas, .. } => {
                !seen.deleted && moved(previous) && seen.replicas == Some(*replicas)
            }
            Expect::Deletion { .. } => seen.deleted,
        }
    }
}

#[derive(Clone, Debug)]
struct Confirmed {
    record: Record,
    sources: Vec<Source>,
    /// When the write became visible: a watch delivered it (admission
    /// records), or when the API server received it (audit events report
    /// writes that succeeded).
    visible_at: Timestamp,
}

/// A confirmed record as the journal keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Journaled {
    pub record: Record,
    pub source: Source,
    pub visible_at: Timestamp,
}

#[derive(Debug, Default)]
struct NamespaceLog {
    /// In the order of `record.at`.
    records: VecDeque<Confirmed>,
    bytes: usize,
    /// The longest any write taken in here took to become visible (it does
    /// not shrink as records go): a lookup from a time on reads the records
    /// admitted from that much before it, not all of them.
    visible_after: SignedDuration,
    /// Records up to this time were dropped for the budget.
    incomplete_until: Option<Timestamp>,
}

/// The operator's write log (one per process; the leader's is the one the
/// gate reads).
#[derive(Debug, Default)]
pub struct WriteLog {
    provisional: HashMap<String, Vec<(Record, Expect)>>,
    provisional_order: VecDeque<(String, Timestamp)>,
    /// Watches listing now (and a replica's start as leader): the writes
    /// they will deliver cannot have been seen yet, so provisional records
    /// do not expire meanwhile ([`PROVISIONAL_MAX_WAIT`] bounds it).
    listing: usize,
    /// When the last of them finished: [`PROVISIONAL_TTL`] counts from then
    /// for a record admitted before.
    listed_at: Option<Timestamp>,
    namespaces: HashMap<String, NamespaceLog>,
    /// Records up to this time may be missing in every namespace (the
    /// journal they were restored from was incomplete).
    incomplete_everywhere_until: Option<Timestamp>,
}

/// Counts of what one call to the log did, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub confirmed: usize,
    pub merged: usize,
    pub expired: usize,
    pub overflowed: usize,
    pub restored: usize,
}

impl WriteLog {
    /// Keeps an admitted write until a watch confirms it.
    pub fn admit(&mut self, record: Record, expect: Expect, now: Timestamp) -> Outcome {
        let mut outcome = self.expire(now);
        let uid = expect.uid().to_owned();
        self.provisional.entry(uid.clone()).or_default().push((record, expect));
        self.provisional_order.push_back((uid, now));
        while self.provisional_order.len() > MAX_PROVISIONAL {
            let Some((uid, _)) = self.provisional_order.pop_front() else { break };
            if let Some(list) = self.provisional.get_mut(&uid) {
                list.remove(0);
                if list.is_empty() {
                    self.provisional.remove(&uid);
                }
            }
            outcome.expired += 1;
        }
        outcome
    }

    /// A watch began to list (or a replica began to lead and has not
    /// started its watches yet): provisional records wait for it.
    pub fn listing_began(&mut self) {
        self.listing += 1;
    }

    /// A list that [`Self::listing_began`] announced is done (or abandoned).
    pub fn listing_ended(&mut self, now: Timestamp) {
        self.listing = self.listing.saturating_sub(1);
        self.listed_at = Some(now);
    }

    /// Whether any provisional record waits for `uid` (a watch computes a
    /// fingerprint only then).
    pub fn waits_for(&self, uid: &str) -> bool {
        self.provisional.contains_key(uid)
    }

    /// A watch delivered `seen`: confirms every provisional record it
    /// matches. Returns the records confirmed that were new (not already
    /// reported by the audit log).
    pub fn observe(&mut self, seen: &Observed<'_>, now: Timestamp) -> (Vec<Record>, Outcome) {
        let mut outcome = self.expire(now);
        let Some(waiting) = self.provisional.remove(seen.uid) else { return (Vec::new(), outcome) };
        let (matched, left): (Vec<_>, Vec<_>) = waiting.into_iter().partition(|(_, expect)| expect.matches(seen));
        if !left.is_empty() {
            self.provisional.insert(seen.uid.to_owned(), left);
        }
        let mut fresh = Vec::new();
        for (record, _) in matched {
            if self.confirm(record.clone(), Source::Admission, now, &mut outcome) {
                fresh.push(record);
            }
        }
        (fresh, outcome)
    }

    /// Audit events: writes that succeeded. Returns those that were new.
    pub fn audited(&mut self, records: Vec<Record>, now: Timestamp) -> (Vec<Record>, Outcome) {
        let mut outcome = self.expire(now);
        let mut fresh = Vec::new();
        for record in records {
            let received = record.at;
            if self.confirm(record.clone(), Source::Audit, received, &mut outcome) {
                fresh.push(record);
            }
        }
        (fresh, outcome)
    }

    /// Adds a confirmed record, or marks the one it duplicates; true if new.
    fn confirm(&mut self, record: Record, source: Source, visible_at: Timestamp, outcome: &mut Outcome) -> bool {
        let Some(namespace) = record.namespace.clone() else { return false };
        let log = self.namespaces.entry(namespace).or_default();
        // Only records this close in time can be the same write: the
        // records are in time order, so the scan stops there, not at the
        // start of a day's writes.
        let near = record.at - SAME_WRITE;
        let mut recent = log.records.iter_mut().rev().take_while(|c| c.record.at >= near);
        if let Some(same) = recent.find(|c| !c.sources.contains(&source) && c.record.same_write(&record)) {
            same.sources.push(source);
            outcome.merged += 1;
            return false;
        }
        // A retried audit batch reports the same write again.
        if log.records.iter().rev().take_while(|c| c.record.at >= near).any(|c| c.record == record) {
            return false;
        }
        log.visible_after = log.visible_after.max(visible_at.duration_since(record.at));
        log.bytes += record.bytes();
        let position = log.records.iter().rposition(|c| c.record.at <= record.at).map_or(0, |p| p + 1);
        log.records.insert(position, Confirmed { record, sources: vec![source], visible_at });
        outcome.confirmed += 1;
        while log.bytes > NAMESPACE_BUDGET_BYTES {
            let Some(dropped) = log.records.pop_front() else { break };
            log.bytes -= dropped.record.bytes();
            log.incomplete_until = log.incomplete_until.max(Some(dropped.record.at));
            outcome.overflowed += 1;
        }
        true
    }

    /// Takes in what a journal kept (a restart, or a takeover): each record
    /// once, merged with what this log already holds, within the budget.
    /// `incomplete_until`: the journal may lack records up to then (every
    /// namespace's drift from before it is treated as unexplained).
    pub fn restore(&mut self, entries: Vec<Journaled>, incomplete_until: Option<Timestamp>, now: Timestamp) -> Outcome {
        let mut outcome = self.expire(now);
        self.incomplete_everywhere_until = self.incomplete_everywhere_until.max(incomplete_until);
        let mut by_namespace: HashMap<String, Vec<Confirmed>> = HashMap::new();
        for Journaled { record, source, visible_at } in entries {
            if now.duration_since(record.at) > RETENTION {
                continue;
            }
            let Some(namespace) = record.namespace.clone() else { continue };
            by_namespace.entry(namespace).or_default().push(Confirmed { record, sources: vec![source], visible_at });
        }
        for (namespace, mut restored) in by_namespace {
            let log = self.namespaces.entry(namespace).or_default();
            let held = log.records.len();
            restored.extend(log.records.drain(..));
            // Stable: of two reports of one write, the one kept first stays.
            restored.sort_by_key(|c| c.record.at);
            for confirmed in restored {
                let same = log
                    .records
                    .iter_mut()
                    .rev()
                    .take_while(|kept| confirmed.record.at.duration_since(kept.record.at) <= SAME_WRITE)
                    .find(|kept| {
                        kept.record == confirmed.record
                            || (kept.record.same_write(&confirmed.record)
                                && !confirmed.sources.iter().any(|s| kept.sources.contains(s)))
                    });
                match same {
                    Some(kept) => {
                        for source in confirmed.sources {
                            if !kept.sources.contains(&source) {
                                kept.sources.push(source);
                            }
                        }
                        kept.visible_at = kept.visible_at.min(confirmed.visible_at);
                    }
                    None => log.records.push_back(confirmed),
                }
            }
            outcome.restored += log.records.len().saturating_sub(held);
            log.bytes = log.records.iter().map(|c| c.record.bytes()).sum();
            let lag = |c: &Confirmed| c.visible_at.duration_since(c.record.at);
            log.visible_after = log.records.iter().map(lag).fold(log.visible_after, SignedDuration::max);
            while log.bytes > NAMESPACE_BUDGET_BYTES {
                let Some(dropped) = log.records.pop_front() else { break };
                log.bytes -= dropped.record.bytes();
                log.incomplete_until = log.incomplete_until.max(Some(dropped.record.at));
                outcome.overflowed += 1;
            }
        }
        outcome
    }

    /// Drops provisional records past their time and confirmed ones past
    /// the retention.
    fn expire(&mut self, now: Timestamp) -> Outcome {
        let mut outcome = Outcome::default();
        let lists = (self.listing, self.listed_at);
        while let Some((uid, admitted)) = self.provisional_order.front().cloned() {
            if !overdue(lists, admitted, now) {
                break;
            }
            self.provisional_order.pop_front();
            if let Some(list) = self.provisional.get_mut(&uid) {
                let before = list.len();
                list.retain(|(record, _)| !overdue(lists, record.at, now));
                outcome.expired += before - list.len();
                if list.is_empty() {
                    self.provisional.remove(&uid);
                }
            }
        }
        for log in self.namespaces.values_mut() {
            while log.records.front().is_some_and(|c| now.duration_since(c.record.at) > RETENTION) {
                if let Some(dropped) = log.records.pop_front() {
                    log.bytes -= dropped.record.bytes();
                }
            }
        }
        self.namespaces.retain(|_, log| !log.records.is_empty() || log.incomplete_until.is_some());
        outcome
    }

    /// The confirmed writes to one object after `from`: admitted after it,
    /// or admitted before it and visible only after it. The second kind is
    /// a write the operator's cache did not show yet when it last saw the
    /// object match Git (that moment is its own clock, taken before it read
    /// the cache): the write came after the state it saw.
    pub fn writes_to(
        &self,
        namespace: &str,
        group: &str,
        resource: &str,
        name: &str,
        from: Timestamp,
    ) -> impl Iterator<Item = &Record> {
        self.namespaces.get(namespace).into_iter().flat_map(move |log| {
            // Admitted after `from`, or up to the longest lag before it and visible after it.
            let first = log.records.partition_point(|c| c.record.at <= from - log.visible_after);
            log.records
                .range(first..)
                .filter(move |c| c.record.at > from || c.visible_at > from)
                .map(|c| &c.record)
                .filter(move |r| r.group == group && r.resource == resource && r.name == name)
        })
    }

    /// Until when `namespace`'s record is incomplete (records were dropped
    /// to keep within the budget).
    pub fn incomplete_until(&self, namespace: &str) -> Option<Timestamp> {
        self.namespaces.get(namespace).and_then(|log| log.incomplete_until).max(self.incomplete_everywhere_until)
    }

    /// Provisional records waiting, and confirmed records kept.
    pub fn sizes(&self) -> (usize, usize) {
        let provisional = self.provisional.values().map(Vec::len).sum();
        let confirmed = self.namespaces.values().map(|log| log.records.len()).sum();
        (provisional, confirmed)
    }
}

/// Whether a provisional record admitted at `admitted` is past its time,
/// given the lists in progress and when the last one ended.
fn overdue((listing, listed_at): (usize, Option<Timestamp>), admitted: Timestamp, now: Timestamp) -> bool {
    if now.duration_since(admitted) >= PROVISIONAL_MAX_WAIT {
        return true;
    }
    let from = listed_at.map_or(admitted, |listed| listed.max(admitted));
    listing == 0 && now.duration_since(from) >= PROVISIONAL_TTL
}

/// A stable fingerprint of a JSON value, whatever the order of its keys.
pub fn fingerprint(value: &serde_json::Value) -> u64 {
    use std::hash::Hasher as _;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    feed(value, &mut hasher);
    hasher.finish()
}

fn feed(value: &serde_json::Value, hasher: &mut impl std::hash::Hasher) {
    use serde_json::Value;
    use std::hash::Hash as _;
    match value {
        Value::Null => 0u8.hash(hasher),
        Value::Bool(b) => (1u8, b).hash(hasher),
        Value::Number(n) => (2u8, n.to_string()).hash(hasher),
        Value::String(s) => (3u8, s).hash(hasher),
        Value::Array(items) => {
            (4u8, items.len()).hash(hasher);
            items.iter().for_each(|item| feed(item, hasher));
        }
        Value::Object(map) => {
            (5u8, map.len()).hash(hasher);
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for key in keys {
                key.hash(hasher);
                feed(&map[key], hasher);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    fn record(user: &str, verb: &str, second: i64) -> Record {
        Record {
            user: user.into(),
            groups: vec![],
            verb: verb.into(),
            group: "apps".into(),
            resource: "deployments".into(),
            subresource: None,
            namespace: Some("shop".into()),
            name: "web".into(),
            at: at(second),
        }
    }

    fn content(fingerprint: u64) -> Expect {
        Expect::Content { uid: "u1".into(), previous: Some("10".into()), fingerprints: vec![fingerprint] }
    }

    fn seen(version: &str, fingerprint: u64) -> Observed<'_> {
        Observed { uid: "u1", resource_version: Some(version), fingerprint, replicas: None, deleted: false }
    }

    fn writers(log: &WriteLog) -> Vec<String> {
        log.writes_to("shop", "apps", "deployments", "web", at(-100)).map(|r| r.user.clone()).collect()
    }

    #[test]
    fn an_admitted_write_counts_only_once_the_watch_delivers_it() {
        let mut log = WriteLog::default();
        log.admit(record("alice", "patch", 0), content(7), at(0));
        assert!(writers(&log).is_empty(), "provisional records are not writes");
        // The same resourceVersion (a no-op) or other content confirms nothing.
        assert!(log.observe(&seen("10", 7), at(0)).0.is_empty());
        assert!(log.observe(&seen("11", 8), at(0)).0.is_empty());
        let (fresh, outcome) = log.observe(&seen("12", 7), at(1));
        assert_eq!((fresh.len(), outcome.confirmed), (1, 1));
        assert_eq!(writers(&log), ["alice"]);
        // Confirmed once: the next event of the same content confirms nothing more.
        assert!(log.observe(&seen("13", 7), at(1)).0.is_empty());
    }

    #[test]
    fn a_write_visible_only_after_the_object_was_last_seen_in_sync_counts() {
        // Admitted at 0; the operator's cache still showed Git's state when
        // a pass at 2 saw the object in sync; the watch delivers it at 3.
        let mut log = WriteLog::default();
        log.admit(record("alice", "patch", 0), content(7), at(0));
        log.observe(&seen("12", 7), at(3));
        let after = |from| log.writes_to("shop", "apps", "deployments", "web", at(from)).count();
        assert_eq!((after(2), after(3)), (1, 0));
        // An audit event's write counts from when the API server took it.
        let mut log = WriteLog::default();
        log.audited(vec![record("bob", "update", 0)], at(5));
        assert_eq!(log.writes_to("shop", "apps", "deployments", "web", at(2)).count(), 0);
    }

    #[test]
    fn a_lookup_reads_back_only_as_far_as_the_slowest_write_became_visible() {
        let mut log = WriteLog::default();
        // Two hours of other writes in the namespace, each visible at once.
        let other = |s: i64| Record { name: format!("cm-{s}"), ..record("carol", "update", s) };
        log.audited((-7200..0).map(other).collect(), at(0));
        // alice's write, admitted at 0, reaches the watch only at 50 (a list in between).
        log.listing_began();
        log.admit(record("alice", "patch", 0), content(7), at(0));
        log.listing_ended(at(45));
        assert_eq!(log.observe(&seen("12", 7), at(50)).1.confirmed, 1);
        let after = |from| log.writes_to("shop", "apps", "deployments", "web", at(from)).count();
        assert_eq!((after(-1), after(49), after(50)), (1, 1, 0), "found from before it until it became visible");
        let others = |from| log.writes_to("shop", "apps", "deployments", "cm-10", at(from)).count();
        assert_eq!(others(-7200), 0, "another object's name");
        let old = |from| log.writes_to("shop", "apps", "deployments", "cm--100", at(from)).count();
        assert_eq!((old(-101), old(-100)), (1, 0), "read back past the lag when the lookup asks for it");
        // The same write reported again by the audit webhook merges, however long the log.
        let (fresh, outcome) = log.audited(vec![record("alice", "update", 0)], at(51));
        assert_eq!((fresh.len(), outcome.merged), (0, 1));
        assert_eq!(log.sizes().1, 7201);
    }

    #[test]
    fn a_write_the_api_server_refused_expires_unconfirmed() {
        let mut log = WriteLog::default();
        log.admit(record("alice", "patch", 0), content(7), at(0));
        // Eleven seconds later someone else's write happens to store the same content.
        assert!(log.observe(&seen("12", 7), at(11)).0.is_empty());
        assert!(writers(&log).is_empty());
        assert_eq!(log.sizes(), (0, 0));
    }

    #[test]
    fn a_write_admitted_while_its_watch_lists_waits_for_the_list() {
        // Admitted at 0 while the watches list (a new leader starting): the
        // list that delivers it ends at 25, the record is confirmed at 26.
        let mut log = WriteLog::default();
        log.listing_began();
        log.admit(record("alice", "create", 0), content(7), at(0));
        log.observe(&seen("11", 1), at(20));
        assert_eq!(log.sizes(), (1, 0), "still waiting while the list runs");
        log.listing_ended(at(25));
        assert_eq!(log.observe(&seen("12", 7), at(26)).0.len(), 1);
        assert_eq!(writers(&log), ["alice"]);
        // Ten seconds after the last list, or a minute in all, it expires.
        let mut log = WriteLog::default();
        log.listing_began();
        log.admit(record("alice", "patch", 0), content(7), at(0));
        log.listing_ended(at(5));
        assert!(log.observe(&seen("12", 7), at(15)).0.is_empty());
        let mut log = WriteLog::default();
        log.listing_began();
        log.admit(record("alice", "patch", 0), content(7), at(0));
        assert!(log.observe(&seen("12", 7), at(60)).0.is_empty(), "a list that never ends holds it a minute at most");
    }

    #[test]
    fn a_forged_record_matching_a_real_write_is_counted_beside_it() {
        let mut log = WriteLog::default();
        log.admit(record("bob", "patch", 0), content(7), at(0));
        log.admit(record("alice", "patch", 0), content(7), at(0));
        log.observe(&seen("12", 7), at(0));
        let mut users = writers(&log);
        users.sort();
        assert_eq!(users, ["alice", "bob"], "bob's real write stays in the record, so the drift is unexplained");
    }

    #[test]
    fn scale_and_delete_are_confirmed_by_their_effect() {
        let mut log = WriteLog::default();
        let mut scale = record("alice", "update", 0);
        scale.subresource = Some("scale".into());
        log.admit(scale, Expect::Replicas { uid: "u1".into(), previous: Some("10".into()), replicas: 5 }, at(0));
        let mut observed = seen("11", 1);
        observed.replicas = Some(4);
        assert!(log.observe(&observed, at(0)).0.is_empty());
        observed.replicas = Some(5);
        observed.resource_version = Some("12");
        assert_eq!(log.observe(&observed, at(0)).0[0].rbac_resource(), "deployments/scale");

        log.admit(record("bob", "delete", 1), Expect::Deletion { uid: "u1".into() }, at(1));
        assert!(log.observe(&seen("13", 1), at(1)).0.is_empty());
        let deleted = Observed { deleted: true, ..seen("14", 1) };
        assert_eq!(log.observe(&deleted, at(1)).0[0].verb, "delete");
    }

    #[test]
    fn admission_and_audit_reports_of_one_write_count_once() {
        let mut log = WriteLog::default();
        log.admit(record("alice", "patch", 0), content(7), at(0));
        log.observe(&seen("12", 7), at(0));
        let (fresh, outcome) = log.audited(vec![record("alice", "update", 1)], at(2));
        assert!(fresh.is_empty());
        assert_eq!(outcome.merged, 1);
        assert_eq!(writers(&log), ["alice"]);
        // The audit event first, then the admission record: still one.
        let (fresh, _) = log.audited(vec![record("bob", "patch", 5)], at(5));
        assert_eq!(fresh.len(), 1);
        log.admit(record("bob", "patch", 5), content(9), at(5));
        assert!(log.observe(&seen("13", 9), at(5)).0.is_empty());
        assert_eq!(writers(&log), ["alice", "bob"]);
        // A retried batch is not a second write.
        assert!(log.audited(vec![record("bob", "patch", 5)], at(6)).0.is_empty());
    }

    #[test]
    fn a_burst_of_other_writes_does_not_push_a_write_out() {
        let mut log = WriteLog::default();
        log.admit(record("bob", "patch", 0), content(7), at(0));
        log.observe(&seen("12", 7), at(0));
        for i in 0..1000 {
            let mut other = record("carol", "update", 1);
            other.name = format!("cm-{i}");
            log.audited(vec![other], at(1));
        }
        assert_eq!(writers(&log), ["bob"]);
        assert_eq!(log.incomplete_until("shop"), None);
    }

    #[test]
    fn past_the_budget_the_oldest_go_and_the_gap_is_known() {
        let mut log = WriteLog::default();
        let big = "x".repeat(4096);
        let mut count = 0;
        while log.incomplete_until("shop").is_none() {
            let mut write = record(&big, "update", count);
            write.name = format!("cm-{count}");
            log.audited(vec![write], at(count));
            count += 1;
        }
        assert_eq!(log.incomplete_until("shop"), Some(at(0)));
    }

    #[test]
    fn a_flood_of_provisional_records_is_bounded() {
        let mut log = WriteLog::default();
        for i in 0..(MAX_PROVISIONAL + 10) {
            let expect = Expect::Deletion { uid: format!("u{i}") };
            log.admit(record("mallory", "delete", 0), expect, at(0));
        }
        assert_eq!(log.sizes().0, MAX_PROVISIONAL);
        assert_eq!(
            log.admit(record("x", "delete", 20), Expect::Deletion { uid: "z".into() }, at(20)).expired,
            MAX_PROVISIONAL
        );
    }

    fn journaled(user: &str, second: i64, source: Source) -> Journaled {
        Journaled { record: record(user, "update", second), source, visible_at: at(second) }
    }

    #[test]
    fn a_restored_journal_is_the_record_again_each_write_once() {
        let mut log = WriteLog::default();
        // This process confirmed alice's write from admission before it led.
        let (_, outcome) = log.observe(&seen("11", 7), at(1)); // nothing waits: nothing confirmed
        assert_eq!(outcome.confirmed, 0);
        log.admit(record("alice", "update", 1), content(7), at(1));
        log.observe(&seen("11", 7), at(1));
        let entries = vec![
            // Another replica's journal: the same admission record, and the
            // audit event of the same write (counted once).
            journaled("alice", 1, Source::Admission),
            Journaled { record: record("alice", "patch", 1), source: Source::Audit, visible_at: at(1) },
            // bob's write, which only the journal knew, twice (two journals).
            journaled("bob", 3, Source::Admission),
            journaled("bob", 3, Source::Admission),
            // Past the retention: gone.
            journaled("carol", -(RETENTION.as_secs()) - 10, Source::Audit),
        ];
        let outcome = log.restore(entries, None, at(5));
        assert_eq!(outcome.restored, 1);
        assert_eq!(writers(&log), ["alice", "bob"]);
        assert_eq!(log.incomplete_until("shop"), None);
        // Restored again (a second takeover): nothing new.
        assert_eq!(log.restore(vec![journaled("bob", 3, Source::Admission)], None, at(6)).restored, 0);
        assert_eq!(writers(&log), ["alice", "bob"]);
    }

    #[test]
    fn a_journal_known_to_be_incomplete_makes_every_namespace_incomplete() {
        let mut log = WriteLog::default();
        log.restore(vec![journaled("bob", 3, Source::Admission)], Some(at(2)), at(5));
        assert_eq!(log.incomplete_until("shop"), Some(at(2)));
        assert_eq!(log.incomplete_until("elsewhere"), Some(at(2)));
    }
}
