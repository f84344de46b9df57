//! Commands in Pods, the shell: the `/sessions` webhook and the audit
//! receiver report them, [`super::records::Intake`] hands each here ([`crate::gate::commands`] is the pure
//! part). Every report is one structured log line at once (target
//! `driftwarden::audit`, `record: session-command`), the complete record of
//! the session, which outlives the AccessRequest; a command run by the
//! requester of a window open in that namespace is also listed, bounded,
//! in that request's `status.activity` by a worker.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::runtime::reflector::Store;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::api::{AccessRequest, ActivityEntry};
use crate::gate::audit::Attributed;
use crate::gate::commands::{self, Command, Noted, Recent};

/// Entries waiting to be written to requests' status.
const QUEUE: usize = 1024;

pub struct Sessions {
    requests: Store<AccessRequest>,
    recent: Mutex<Recent>,
    queue: mpsc::Sender<(String, String, ActivityEntry)>,
    /// The leader's notifications, while this replica leads (the
    /// `/sessions` webhook calls the leader).
    notices: Mutex<Option<super::notify::Outbox>>,
}

impl Sessions {
    /// Starts the worker that lists commands on requests; `requests` must
    /// be kept current by a reflector.
    pub fn start(client: Client, requests: Store<AccessRequest>) -> Arc<Self> {
        let (queue, entries) = mpsc::channel(QUEUE);
        tokio::spawn(summarize(client, entries));
        Arc::new(Self { requests, recent: Mutex::default(), queue, notices: Mutex::default() })
    }

    /// Where commands are announced while this replica leads (`None`: it
    /// stopped leading).
    pub fn notify_to(&self, notices: Option<super::notify::Outbox>) {
        *self.notices.lock().unwrap_or_else(|p| p.into_inner()) = notices;
    }

    /// One report of a command: logged now, listed on its request soon.
    pub fn note(&self, command: Command) {
        let noted = self.recent.lock().unwrap_or_else(|p| p.into_inner()).note(&command, Timestamp::now());
        if noted == Noted::Repeat {
            return;
        }
        let owned = super::records::windows(&self.requests.state());
        let windows = super::records::borrowed(&owned);
        let requests = commands::attribute(&command, &windows);
        let json = |value: &[String]| serde_json::to_string(value).unwrap_or_default();
        info!(target: "driftwarden::audit", record = "session-command",
              user = %command.user, groups = %json(&command.groups), access_request = %requests.join(","),
              namespace = %command.namespace, pod = %command.pod, container = command.container.as_deref().unwrap_or(""),
              session = command.kind.subresource(), command = %commands::shell_line(&command.command.argv),
              argv = %json(&command.command.argv), truncated = command.command.truncated,
              args = command.command.args, bytes = command.command.bytes,
              source = commands::source_name(command.source), corroborated = noted == Noted::Corroborates,
              audit_id = command.audit_id.as_deref().unwrap_or(""), time = %command.at,
              "command in a Pod");
        let entry = command.entry();
        // Once per command: a second source's report only corroborates it.
        if noted == Noted::New
            && let Some(notices) = self.notices.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
        {
            notices.notice(crate::notify::command_notice(&entry, &requests, Timestamp::now()));
        }
        for request in requests {
            if self.queue.try_send((command.namespace.clone(), request.to_owned(), entry.clone())).is_err() {
                warn!(access_request = %request, namespace = %command.namespace,
                      "the session summary queue is full; this command is in the log only");
            }
        }
    }
}

async fn summarize(client: Client, mut entries: mpsc::Receiver<(String, String, ActivityEntry)>) {
    while let Some(first) = entries.recv().await {
        // Take whatever else is waiting: one status write per request for all of it.
        let mut by_request: BTreeMap<(String, String), Vec<ActivityEntry>> = BTreeMap::new();
        let mut add = |(namespace, request, entry): (String, String, ActivityEntry)| {
            by_request.entry((namespace, request)).or_default().push(entry);
        };
        add(first);
        while let Ok(more) = entries.try_recv() {
            add(more);
        }
        for ((namespace, request), activity) in by_request {
            let attributed = Attributed { activity, scope_writes: Vec::new() };
            if let Err(error) = super::gate::log_writes(&client, &namespace, &request, &attributed).await {
                warn!(%error, access_request = %request, %namespace, "listing commands on the AccessRequest failed");
            }
        }
    }
}
