//! A session's commands in Pods, the pure part. `kubectl exec`, `attach`,
//! `port-forward` and `cp` (an exec of `tar`) reach admission as a CONNECT
//! on `pods/exec`, `pods/attach` or `pods/portforward`, with the options
//! (command, container, ports) as the object; the API server's audit log
//! sees the same request with the options in its URL.
//!
//! A CONNECT changes no object, so no watch can confirm an admission record
//! of one the way writes are confirmed ([`super::writes`]): on its own it is
//! the webhook's word, and anyone who can reach the webhook could forge it.
//! So every record says where it came from ([`Source`]), and an audit event
//! of the same command (authenticated by the audit token) corroborates an
//! admission record. A forged record can only add an entry, never hide one.
//! Commands never reach the gate: a command explains no drift
//! ([`crate::api::ActivityEntry::is_command`]).
//!
//! Only what the API server was asked is kept (the command line as typed,
//! bounded), never what goes through the streams (input, output, the files
//! `kubectl cp` copies), so no Secret's value the operator could see is in a
//! record.

use std::collections::VecDeque;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use super::audit::Window;
use super::writes::{SAME_WRITE, Source};
use crate::api::ActivityEntry;

/// How much of a command line a record keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Arguments kept (the first ones).
    pub args: usize,
    /// Bytes kept of each argument.
    pub arg_bytes: usize,
    /// Bytes kept of all arguments together.
    pub total_bytes: usize,
}

/// The operator's log line (the complete record of a session).
pub const LOG_BOUNDS: Bounds = Bounds { args: 128, arg_bytes: 1024, total_bytes: 8 << 10 };
/// A request's status (a summary, next to up to 100 writes).
pub const STATUS_BOUNDS: Bounds = Bounds { args: 32, arg_bytes: 256, total_bytes: 1024 };
/// The newest commands a request's `status.activity` keeps (apart from its
/// writes: a burst of commands never pushes a write out of the summary).
pub const MAX_COMMAND_ENTRIES: usize = 50;
/// Commands remembered to tell a repeated or corroborating report.
const RECENT: usize = 10_000;
/// How long a command is remembered for that.
const RECENT_FOR: SignedDuration = SignedDuration::from_secs(60);

/// Which kind of session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Exec,
    Attach,
    PortForward,
}

impl Kind {
    /// From the `pods` subresource.
    pub fn of(subresource: &str) -> Option<Kind> {
        match subresource {
            "exec" => Some(Kind::Exec),
            "attach" => Some(Kind::Attach),
            "portforward" => Some(Kind::PortForward),
            _ => None,
        }
    }

    pub fn subresource(self) -> &'static str {
        match self {
            Kind::Exec => "exec",
            Kind::Attach => "attach",
            Kind::PortForward => "portforward",
        }
    }
}

/// A command line cut to its bounds, and how large it was.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bounded {
    pub argv: Vec<String>,
    /// Something was cut.
    pub truncated: bool,
    /// Arguments and bytes of the whole command line.
    pub args: usize,
    pub bytes: usize,
}

/// `argv` within `bounds`: the first arguments, each cut (on a character
/// boundary) to its share, until the total is spent.
pub fn bound(argv: &[String], bounds: Bounds) -> Bounded {
    let mut kept = Vec::new();
    let mut left = bounds.total_bytes;
    let mut truncated = argv.len() > bounds.args;
    for arg in argv.iter().take(bounds.args) {
        if left == 0 {
            truncated = true;
            break;
        }
        let mut end = arg.len().min(bounds.arg_bytes).min(left);
        while !arg.is_char_boundary(end) {
            end -= 1;
        }
        truncated |= end < arg.len();
        kept.push(arg[..end].to_owned());
        left -= end;
    }
    Bounded { argv: kept, truncated, args: argv.len(), bytes: argv.iter().map(String::len).sum() }
}

/// A command line as a shell would read it back: arguments of plain
/// characters as they are, others in single quotes.
pub fn shell_line(argv: &[String]) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c);
    argv.iter()
        .map(|arg| {
            if !arg.is_empty() && arg.chars().all(plain) {
                arg.clone()
            } else {
                format!("'{}'", arg.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One command in a Pod: who, which session, where, what, when, and who said so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// The user as the API server resolved it (the impersonated one, if any).
    pub user: String,
    /// Where known (admission has them; audit events are not read for them).
    pub groups: Vec<String>,
    pub kind: Kind,
    pub namespace: String,
    pub pod: String,
    pub container: Option<String>,
    /// exec: the command line; port-forward: the ports; within [`LOG_BOUNDS`].
    pub command: Bounded,
    pub at: Timestamp,
    pub source: Source,
    /// The audit event's ID (audit events only).
    pub audit_id: Option<String>,
}

impl Command {
    /// From a CONNECT's options object (`PodExecOptions`, `PodAttachOptions`,
    /// `PodPortForwardOptions`), as admission hands it over.
    pub fn options(options: &Value) -> (Option<String>, Vec<String>) {
        let container = options.get("container").and_then(Value::as_str).filter(|c| !c.is_empty()).map(str::to_owned);
        let strings = |key: &str| -> Vec<String> {
            options.get(key).and_then(Value::as_array).into_iter().flatten().filter_map(scalar).collect()
        };
        let mut command = strings("command");
        if command.is_empty() {
            command = strings("ports");
        }
        (container, command)
    }

    /// From an audit event's request URI: the options are in its query.
    pub fn uri_options(uri: &str) -> (Option<String>, Vec<String>) {
        let query = uri.split_once('?').map_or("", |(_, q)| q);
        let values = |key: &str| -> Vec<String> {
            query
                .split('&')
                .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| unescape(v))
                .collect()
        };
        let container = values("container").into_iter().find(|c| !c.is_empty());
        let mut command = values("command");
        if command.is_empty() {
            command = values("ports");
        }
        (container, command)
    }

    /// Whether `other` reports the same command (from another source or again).
    fn same(&self, other: &Command) -> bool {
        self.user == other.user
            && self.kind == other.kind
            && self.namespace == other.namespace
            && self.pod == other.pod
            && self.container == other.container
            && self.command.argv == other.command.argv
            && self.at.duration_since(other.at).abs() <= SAME_WRITE
    }

    /// As an entry of a request's activity (within [`STATUS_BOUNDS`]).
    pub fn entry(&self) -> ActivityEntry {
        let shown = bound(&self.command.argv, STATUS_BOUNDS);
        ActivityEntry {
            time: MicroTime(Timestamp::from_microsecond(self.at.as_microsecond()).unwrap_or(self.at)),
            user: self.user.clone(),
            verb: "connect".into(),
            resource: format!("pods/{}", self.kind.subresource()),
            namespace: Some(self.namespace.clone()),
            name: Some(self.pod.clone()),
            fields: Vec::new(),
            container: self.container.clone(),
            command: shown.argv,
            command_truncated: shown.truncated || self.command.truncated,
            sources: vec![source_name(self.source).to_owned()],
        }
    }
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Decodes a query value (`+` is a space, `%XX` a byte); invalid UTF-8
/// becomes U+FFFD.
fn unescape(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How a source is named in records.
pub fn source_name(source: Source) -> &'static str {
    match source {
        Source::Admission => "admission",
        Source::Audit => "audit",
    }
}

/// The requests whose window the command was run in: the requester's own,
/// in that namespace, open at the time.
pub fn attribute<'a>(command: &Command, windows: &[Window<'a>]) -> Vec<&'a str> {
    windows
        .iter()
        .filter(|w| {
            w.namespace == command.namespace
                && w.requester == command.user
                && w.opens <= command.at
                && command.at < w.closes
        })
        .map(|w| w.request)
        .collect()
}

/// What a report of a command is, next to those already seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Noted {
    /// The first report of it.
    New,
    /// Another source already reported the same command.
    Corroborates,
    /// This source reported it already (a retried audit batch): drop it.
    Repeat,
}

/// The commands seen lately (bounded in count and time).
#[derive(Debug, Default)]
pub struct Recent {
    /// Reports not yet corroborated by the other source.
    seen: VecDeque<Command>,
    /// Audit IDs of the events seen, to drop a retried batch.
    audit_ids: VecDeque<(String, Timestamp)>,
}

impl Recent {
    pub fn note(&mut self, command: &Command, now: Timestamp) -> Noted {
        while self.seen.front().is_some_and(|c| now.duration_since(c.at) > RECENT_FOR) || self.seen.len() >= RECENT {
            self.seen.pop_front();
        }
        while self.audit_ids.front().is_some_and(|(_, at)| now.duration_since(*at) > RECENT_FOR)
            || self.audit_ids.len() >= RECENT
        {
            self.audit_ids.pop_front();
        }
        if let Some(id) = &command.audit_id {
            if self.audit_ids.iter().any(|(seen, _)| seen == id) {
                return Noted::Repeat;
            }
            self.audit_ids.push_back((id.clone(), command.at));
        }
        match self.seen.iter().position(|c| c.source != command.source && command.same(c)) {
            Some(at) => {
                // One admission record is corroborated by one audit event.
                self.seen.remove(at);
                Noted::Corroborates
            }
            None => {
                self.seen.push_back(command.clone());
                Noted::New
            }
        }
    }
}

/// `old` command entries with `new` ones merged in: a report from another
/// source of the same command adds its source to the entry, a repeat adds
/// nothing; the newest [`MAX_COMMAND_ENTRIES`] are kept. Returns them and how
/// many commands were new.
pub fn merge(old: &[ActivityEntry], new: &[ActivityEntry]) -> (Vec<ActivityEntry>, usize) {
    let mut merged = old.to_vec();
    let mut added = 0;
    for entry in new {
        let same = |e: &ActivityEntry| {
            e.user == entry.user
                && e.resource == entry.resource
                && e.namespace == entry.namespace
                && e.name == entry.name
                && e.container == entry.container
                && e.command == entry.command
                && e.time.0.duration_since(entry.time.0).abs() <= SAME_WRITE
        };
        if merged.contains(entry) {
            continue;
        }
        match merged.iter_mut().find(|e| same(e) && !entry.sources.iter().all(|s| e.sources.contains(s))) {
            Some(existing) => {
                for source in &entry.sources {
                    if !existing.sources.contains(source) {
                        existing.sources.push(source.clone());
                    }
                }
                existing.sources.sort();
            }
            None => {
                merged.push(entry.clone());
                added += 1;
            }
        }
    }
    merged.sort_by_key(|e| e.time.0);
    let excess = merged.len().saturating_sub(MAX_COMMAND_ENTRIES);
    merged.drain(..excess);
    (merged, added)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    fn command(user: &str, argv: &[&str], source: Source, second: i64) -> Command {
        Command {
            user: user.into(),
            groups: vec![],
            kind: Kind::Exec,
            namespace: "shop".into(),
            pod: "web-0".into(),
            container: Some("app".into()),
            command: bound(&strings(argv), LOG_BOUNDS),
            at: at(second),
            source,
            audit_id: (source == Source::Audit).then(|| format!("a-{user}-{second}")),
        }
    }

    #[test]
    fn command_lines_are_bounded_in_count_length_and_total() {
        let small = Bounds { args: 3, arg_bytes: 4, total_bytes: 10 };
        for (argv, kept, truncated) in [
            (vec!["sh", "-c", "id"], vec!["sh", "-c", "id"], false),
            (vec![], vec![], false),
            (vec!["a", "b", "c", "d"], vec!["a", "b", "c"], true),
            (vec!["echo", "abcdefgh"], vec!["echo", "abcd"], true),
            (vec!["abcd", "abcd", "abcd"], vec!["abcd", "abcd", "ab"], true),
            (vec!["abcd", "abcd", "ab"], vec!["abcd", "abcd", "ab"], false),
            // Never cut inside a character.
            (vec!["ééé"], vec!["éé"], true),
            (vec!["", ""], vec!["", ""], false),
        ] {
            let bounded = bound(&strings(&argv), small);
            assert_eq!((bounded.argv, bounded.truncated), (strings(&kept), truncated), "{argv:?}");
        }
        let huge = vec!["x".repeat(1 << 20); 1000];
        let bounded = bound(&huge, LOG_BOUNDS);
        assert!(bounded.argv.iter().map(String::len).sum::<usize>() <= LOG_BOUNDS.total_bytes);
        assert_eq!((bounded.args, bounded.bytes, bounded.truncated), (1000, 1000 << 20, true));
    }

    #[test]
    fn the_shell_line_reads_back_as_typed() {
        for (argv, line) in [
            (vec!["sh", "-c", "id"], "sh -c id"),
            (vec!["sh", "-c", "cat /etc/passwd | wc -l"], "sh -c 'cat /etc/passwd | wc -l'"),
            (vec!["echo", "it's"], r"echo 'it'\''s'"),
            (vec!["printf", ""], "printf ''"),
            (vec!["tar", "cf", "-", "-C", "/data", "dump.sql"], "tar cf - -C /data dump.sql"),
            (vec!["echo", "a\nb"], "echo 'a\nb'"),
        ] {
            assert_eq!(shell_line(&strings(&argv)), line);
        }
    }

    #[test]
    fn options_come_from_admission_objects_and_audit_uris_alike() {
        let exec = json!({"kind": "PodExecOptions", "apiVersion": "v1", "stdin": true, "container": "app",
                          "command": ["sh", "-c", "id"]});
        assert_eq!(Command::options(&exec), (Some("app".into()), strings(&["sh", "-c", "id"])));
        let forward = json!({"kind": "PodPortForwardOptions", "ports": [8080, 9090]});
        assert_eq!(Command::options(&forward), (None, strings(&["8080", "9090"])));
        let attach = json!({"kind": "PodAttachOptions", "container": "", "stdin": true});
        assert_eq!(Command::options(&attach), (None, vec![]));
        // Only the options are read: nothing else an object may carry.
        let odd = json!({"data": {"password": "aHVudGVyMg=="}, "command": [{"x": 1}, "ls"]});
        assert_eq!(Command::options(&odd), (None, strings(&["ls"])));

        let uri = "/api/v1/namespaces/shop/pods/web-0/exec?command=sh&command=-c&command=cat+%2Fetc%2Fpasswd%20%7C%20wc&container=app&stdin=true&stdout=true";
        assert_eq!(Command::uri_options(uri), (Some("app".into()), strings(&["sh", "-c", "cat /etc/passwd | wc"])));
        assert_eq!(Command::uri_options("/api/v1/namespaces/shop/pods/web-0/portforward?ports=8080").1, ["8080"]);
        assert_eq!(
            Command::uri_options("/x?command=%zz&command=%e9&command=100%"),
            (None, strings(&["%zz", "\u{fffd}", "100%"]))
        );
        assert_eq!(Command::uri_options("/api/v1/namespaces/shop/pods/web-0/attach"), (None, vec![]));
    }

    #[test]
    fn a_command_belongs_to_its_users_open_windows_in_its_namespace() {
        let window = |request, requester, namespace, opens, closes| Window {
            namespace,
            request,
            requester,
            opens: at(opens),
            closes: at(closes),
        };
        let windows = [
            window("alice-fix", "alice", "shop", 0, 60),
            window("alice-old", "alice", "shop", -120, -60),
            window("alice-elsewhere", "alice", "other", 0, 60),
            window("bob-fix", "bob", "shop", 0, 60),
        ];
        assert_eq!(attribute(&command("alice", &["id"], Source::Admission, 10), &windows), ["alice-fix"]);
        assert!(attribute(&command("alice", &["id"], Source::Admission, 60), &windows).is_empty());
        assert!(attribute(&command("carol", &["id"], Source::Admission, 10), &windows).is_empty());
    }

    #[test]
    fn an_audit_event_corroborates_the_admission_record_once() {
        let mut recent = Recent::default();
        assert_eq!(recent.note(&command("alice", &["id"], Source::Admission, 0), at(0)), Noted::New);
        let audited = command("alice", &["id"], Source::Audit, 1);
        assert_eq!(recent.note(&audited, at(1)), Noted::Corroborates);
        // The API server retries a batch: the same event again.
        assert_eq!(recent.note(&audited, at(2)), Noted::Repeat);
        // Another run of the same command is another command.
        assert_eq!(recent.note(&command("alice", &["id"], Source::Audit, 1), at(2)), Noted::Repeat);
        let mut again = command("alice", &["id"], Source::Audit, 1);
        again.audit_id = Some("another".into());
        assert_eq!(recent.note(&again, at(2)), Noted::New);
        // A forged admission record with no audit event stays the webhook's word.
        assert_eq!(recent.note(&command("alice", &["rm", "-rf", "/"], Source::Admission, 3), at(3)), Noted::New);
        // Long forgotten: new again.
        assert_eq!(recent.note(&command("alice", &["id"], Source::Admission, 200), at(200)), Noted::New);
    }

    #[test]
    fn status_entries_merge_sources_and_keep_their_own_budget() {
        let admitted = command("alice", &["sh", "-c", "id"], Source::Admission, 0).entry();
        assert_eq!(
            (admitted.verb.as_str(), admitted.resource.as_str(), admitted.name.as_deref()),
            ("connect", "pods/exec", Some("web-0"))
        );
        assert!(admitted.is_command());
        let (once, added) = merge(&[], std::slice::from_ref(&admitted));
        assert_eq!((once.len(), added), (1, 1));
        let (twice, again) = merge(&once, std::slice::from_ref(&admitted));
        assert_eq!((twice.len(), again), (1, 0));
        let audited = command("alice", &["sh", "-c", "id"], Source::Audit, 1).entry();
        let (corroborated, added) = merge(&twice, &[audited]);
        assert_eq!((corroborated.len(), added), (1, 0));
        assert_eq!(corroborated[0].sources, ["admission", "audit"]);

        let many: Vec<ActivityEntry> =
            (0..80).map(|i| command("alice", &["ls", &i.to_string()], Source::Admission, i).entry()).collect();
        let (bounded, added) = merge(&corroborated, &many);
        assert_eq!((bounded.len(), added), (MAX_COMMAND_ENTRIES, 80));
        assert_eq!(bounded.last().unwrap().command, ["ls", "79"]);

        let long = command("alice", &["echo", &"x".repeat(5000)], Source::Admission, 0).entry();
        assert!(long.command_truncated);
        assert!(long.command.iter().map(String::len).sum::<usize>() <= STATUS_BOUNDS.total_bytes);
    }
}
