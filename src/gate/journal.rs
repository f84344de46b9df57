//! The write log's journal, the pure part: confirmed records as lines of
//! JSON in chunks (ConfigMaps in the operator's namespace, written by
//! [`crate::operator::journal`]), and which chunks a new leader reads,
//! which it deletes, and whether what it reads is complete.
//!
//! Every replica journals what it confirms into its own series of chunks
//! (no two writers share a chunk); a replica that starts to lead reads all
//! of them. A chunk grows until [`CHUNK_BYTES`], then the writer starts the
//! next one. A chunk whose newest record is past the write log's retention
//! is deleted; past [`JOURNAL_BUDGET_BYTES`] in all, the oldest chunks go
//! and the records they held count as missing (the gate fails closed on
//! drift from before then). Whoever deletes a chunk for the budget says so
//! on every chunk it writes after ([`ChunkMeta::incomplete_until`]), so a
//! later reader knows as well.

use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::writes::{Journaled, RETENTION, Record, Source};

/// A chunk's records are rewritten on each flush (etcd keeps each version
/// until it compacts): kept small.
pub const CHUNK_BYTES: usize = 64 << 10;
/// The most all chunks together may hold (a leader reads them one by one).
pub const JOURNAL_BUDGET_BYTES: usize = 32 << 20;

/// One record, as a line (short keys: some 160 bytes, 400 to a chunk).
#[derive(Serialize, Deserialize)]
struct Line {
    u: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    gs: Vec<String>,
    v: String,
    g: String,
    r: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<String>,
    ns: String,
    n: String,
    /// Admitted (or received), in microseconds since the epoch.
    at: i64,
    /// Visible in a watch, in microseconds since the epoch.
    vis: i64,
    /// "a": admission, "e": audit event.
    src: String,
}

/// `entries` as lines (records without a namespace are never journaled:
/// the log keeps none).
pub fn encode(entries: &[Journaled]) -> String {
    let mut text = String::new();
    for entry in entries {
        let Some(namespace) = &entry.record.namespace else { continue };
        let record = &entry.record;
        let line = Line {
            u: record.user.clone(),
            gs: record.groups.clone(),
            v: record.verb.clone(),
            g: record.group.clone(),
            r: record.resource.clone(),
            s: record.subresource.clone(),
            ns: namespace.clone(),
            n: record.name.clone(),
            at: record.at.as_microsecond(),
            vis: entry.visible_at.as_microsecond(),
            src: match entry.source {
                Source::Admission => "a",
                Source::Audit => "e",
            }
            .into(),
        };
        text.push_str(&serde_json::to_string(&line).expect("a line serializes"));
        text.push('\n');
    }
    text
}

/// The records of a chunk, and how many of its lines could not be read.
pub fn decode(text: &str) -> (Vec<Journaled>, usize) {
    let mut entries = Vec::new();
    let mut bad = 0;
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        match serde_json::from_str::<Line>(line).ok().and_then(entry) {
            Some(entry) => entries.push(entry),
            None => bad += 1,
        }
    }
    (entries, bad)
}

fn entry(line: Line) -> Option<Journaled> {
    let source = match line.src.as_str() {
        "a" => Source::Admission,
        "e" => Source::Audit,
        _ => return None,
    };
    Some(Journaled {
        record: Record {
            user: line.u,
            groups: line.gs,
            verb: line.v,
            group: line.g,
            resource: line.r,
            subresource: line.s,
            namespace: Some(line.ns),
            name: line.n,
            at: Timestamp::from_microsecond(line.at).ok()?,
        },
        source,
        visible_at: Timestamp::from_microsecond(line.vis).ok()?,
    })
}

/// What a leader knows of a chunk before reading it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkMeta {
    pub name: String,
    /// Its newest record's time (None: unreadable annotation).
    pub until: Option<Timestamp>,
    pub bytes: usize,
    /// Its writer deleted chunks for the budget that held records up to then.
    pub incomplete_until: Option<Timestamp>,
}

/// Which chunks to read and which to delete.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LoadPlan {
    pub read: Vec<String>,
    pub delete: Vec<String>,
    /// Records up to this time may be missing (chunks over the budget).
    pub incomplete_until: Option<Timestamp>,
}

/// Chunks past the retention are deleted; of the rest, the newest that fit
/// in the budget are read, and the older ones deleted as missing records.
pub fn plan_load(mut chunks: Vec<ChunkMeta>, now: Timestamp) -> LoadPlan {
    let mut plan = LoadPlan::default();
    // Newest first; a chunk without a readable time is read (it may hold
    // anything) and never deleted for its age.
    chunks.sort_by(|a, b| b.until.unwrap_or(now).cmp(&a.until.unwrap_or(now)).then(a.name.cmp(&b.name)));
    let mut kept_bytes = 0usize;
    for chunk in chunks {
        let expired = chunk.until.is_some_and(|until| now.duration_since(until) > RETENTION);
        if expired {
            plan.delete.push(chunk.name);
            continue;
        }
        plan.incomplete_until = plan.incomplete_until.max(chunk.incomplete_until);
        if kept_bytes + chunk.bytes > JOURNAL_BUDGET_BYTES {
            plan.incomplete_until = plan.incomplete_until.max(Some(chunk.until.unwrap_or(now)));
            plan.delete.push(chunk.name);
        } else {
            kept_bytes += chunk.bytes;
            plan.read.push(chunk.name);
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::SignedDuration;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    fn journaled(user: &str, subresource: Option<&str>, source: Source) -> Journaled {
        Journaled {
            record: Record {
                user: user.into(),
                groups: vec!["dev".into(), "system:authenticated".into()],
                verb: "update".into(),
                group: "apps".into(),
                resource: "deployments".into(),
                subresource: subresource.map(str::to_owned),
                namespace: Some("shop".into()),
                name: "web".into(),
                at: Timestamp::from_microsecond(1_800_000_000_123_456).unwrap(),
            },
            source,
            visible_at: Timestamp::from_microsecond(1_800_000_000_200_000).unwrap(),
        }
    }

    #[test]
    fn records_come_back_as_they_went_in() {
        let entries = vec![journaled("alice", Some("scale"), Source::Admission), journaled("bob", None, Source::Audit)];
        let text = encode(&entries);
        assert_eq!(text.lines().count(), 2);
        assert_eq!(decode(&text), (entries, 0));
    }

    #[test]
    fn unreadable_lines_are_counted_not_guessed() {
        let mut text = encode(&[journaled("alice", None, Source::Admission)]);
        text.push_str("{\"u\":\"mallory\"}\nnot json\n\n");
        text.push_str(&encode(&[journaled("bob", None, Source::Audit)]).replace("\"e\"", "\"x\""));
        let (entries, bad) = decode(&text);
        assert_eq!(entries.iter().map(|e| e.record.user.as_str()).collect::<Vec<_>>(), ["alice"]);
        assert_eq!(bad, 3);
    }

    #[test]
    fn a_record_without_a_namespace_is_not_journaled() {
        let mut entry = journaled("alice", None, Source::Admission);
        entry.record.namespace = None;
        assert_eq!(encode(&[entry]), "");
    }

    fn chunk(name: &str, until: Option<i64>, bytes: usize) -> ChunkMeta {
        ChunkMeta { name: name.into(), until: until.map(at), bytes, incomplete_until: None }
    }

    #[test]
    fn what_a_leader_reads_and_deletes() {
        let now = at(0) + RETENTION + SignedDuration::from_hours(1);
        let retained = RETENTION.as_secs();
        let cases: Vec<(&str, Vec<ChunkMeta>, LoadPlan)> = vec![
            ("nothing", vec![], LoadPlan::default()),
            (
                "past the retention: deleted",
                vec![chunk("old", Some(0), 10), chunk("new", Some(retained), 10)],
                LoadPlan { read: vec!["new".into()], delete: vec!["old".into()], incomplete_until: None },
            ),
            (
                "no time: read, whatever its age",
                vec![chunk("unknown", None, 10)],
                LoadPlan { read: vec!["unknown".into()], ..LoadPlan::default() },
            ),
            (
                "over the budget: the oldest go, and count as missing",
                vec![
                    chunk("a", Some(retained + 10), JOURNAL_BUDGET_BYTES / 2),
                    chunk("b", Some(retained + 20), JOURNAL_BUDGET_BYTES / 2),
                    chunk("c", Some(retained + 5), 1),
                ],
                LoadPlan {
                    read: vec!["b".into(), "a".into()],
                    delete: vec!["c".into()],
                    incomplete_until: Some(at(retained + 5)),
                },
            ),
            (
                "a writer dropped chunks for the budget earlier: still missing",
                vec![
                    ChunkMeta { incomplete_until: Some(at(retained + 1)), ..chunk("d", Some(retained + 30), 1) },
                    // A mark on an expired chunk is older than the retention too.
                    ChunkMeta { incomplete_until: Some(at(-5)), ..chunk("e", Some(0), 1) },
                ],
                LoadPlan { read: vec!["d".into()], delete: vec!["e".into()], incomplete_until: Some(at(retained + 1)) },
            ),
        ];
        for (case, chunks, expected) in cases {
            assert_eq!(plan_load(chunks, now), expected, "{case}");
        }
    }
}
