//! The write log's journal in the API server: each replica appends the
//! records it confirms to its own series of ConfigMaps in the operator's
//! namespace, once a second; a replica that starts to lead reads every
//! series back into its write log before its controllers judge anything
//! ([`crate::gate::journal`] is the pure part). Records confirmed in the
//! last second before a replica dies are lost: their drift then has no
//! record and is reverted (fails safe).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::gate::journal::{self, CHUNK_BYTES, ChunkMeta};
use crate::gate::writes::Journaled;

/// Ties a chunk to its release (the value is the leader Lease's name).
const JOURNAL_LABEL: &str = "driftwarden.io/write-journal";
/// The newest record's time in a chunk (RFC 3339), read before the chunk is.
const UNTIL_ANNOTATION: &str = "driftwarden.io/journal-until";
/// Which replica wrote the chunk, for people reading it.
const WRITER_ANNOTATION: &str = "driftwarden.io/journal-writer";
/// The chunk's size, so that a reader plans from metadata alone.
const BYTES_ANNOTATION: &str = "driftwarden.io/journal-bytes";
/// Its writer deleted chunks for the budget holding records up to then.
const INCOMPLETE_ANNOTATION: &str = "driftwarden.io/journal-incomplete-until";
const RECORDS_KEY: &str = "records";
const FIELD_MANAGER: &str = "driftwarden";
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Batches waiting for the writer; beyond this, records are in memory only.
const QUEUE: usize = 4096;
/// Records waiting for a write that keeps failing; beyond this the oldest go.
const MAX_PENDING: usize = 100_000;

/// Where one release's journal lives.
#[derive(Clone)]
pub struct Place {
    pub client: Client,
    pub namespace: String,
    /// The leader Lease's name: releases sharing a namespace keep apart.
    pub series: String,
}

/// This replica's way into its journal.
#[derive(Clone)]
pub struct Journal {
    sender: mpsc::Sender<Vec<Journaled>>,
    /// Records up to then could not be queued: the next chunk says the
    /// journal is incomplete until then.
    lost_until: Arc<Mutex<Option<Timestamp>>>,
}

impl Journal {
    /// Queues `entries` for the next write; false if the queue was full
    /// (the journal then marks itself incomplete: a later leader treats
    /// drift from before them as unexplained).
    pub fn send(&self, entries: Vec<Journaled>) -> bool {
        let newest = entries.iter().map(|entry| entry.record.at).max();
        match self.sender.try_send(entries) {
            Ok(()) => true,
            Err(_) => {
                let mut lost = self.lost_until.lock().unwrap_or_else(|p| p.into_inner());
                *lost = (*lost).max(newest);
                false
            }
        }
    }
}

/// Starts this replica's writer; send it what the write log confirms. It
/// writes what is left when `stop` is cancelled, then ends.
pub fn start(place: Place, identity: &str, stop: CancellationToken) -> (Journal, tokio::task::JoinHandle<()>) {
    let (sender, receiver) = mpsc::channel(QUEUE);
    let lost_until = Arc::default();
    let writer: String = Sha256::digest(identity.as_bytes()).iter().take(5).map(|byte| format!("{byte:02x}")).collect();
    // A replica restarted under the same identity starts a new series.
    let prefix = format!("{}-journal-{writer}-{}", place.series, Timestamp::now().as_second());
    let writer = tokio::spawn(write(place, prefix, identity.to_owned(), (receiver, Arc::clone(&lost_until)), stop));
    (Journal { sender, lost_until }, writer)
}

async fn write(
    place: Place,
    prefix: String,
    identity: String,
    (mut receiver, lost_until): (mpsc::Receiver<Vec<Journaled>>, Arc<Mutex<Option<Timestamp>>>),
    stop: CancellationToken,
) {
    let mut chunk = Chunk {
        name: format!("{prefix}-0"),
        text: String::new(),
        sequence: 0,
        until: None,
        incomplete_until: None,
        marked: None,
    };
    chunk.sweep(&place).await;
    let mut pending: Vec<Journaled> = Vec::new();
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            batch = receiver.recv() => match batch {
                Some(batch) => pending.extend(batch),
                None => break,
            },
            _ = tick.tick() => {
                let lost = *lost_until.lock().unwrap_or_else(|p| p.into_inner());
                chunk.incomplete_until = chunk.incomplete_until.max(lost);
                chunk.flush(&place, &prefix, &identity, &mut pending).await;
            }
            () = stop.cancelled() => break,
        }
        if pending.len() > MAX_PENDING {
            let dropped: Vec<Journaled> = pending.drain(..pending.len() - MAX_PENDING).collect();
            chunk.incomplete_until = chunk.incomplete_until.max(dropped.iter().map(|entry| entry.record.at).max());
            warn!(
                dropped = dropped.len(),
                "the write journal cannot be written: the oldest records are lost to a new leader"
            );
        }
    }
    // Stopping: what came in meanwhile, once more.
    while let Ok(batch) = receiver.try_recv() {
        pending.extend(batch);
    }
    let lost = *lost_until.lock().unwrap_or_else(|p| p.into_inner());
    chunk.incomplete_until = chunk.incomplete_until.max(lost);
    chunk.flush(&place, &prefix, &identity, &mut pending).await;
}

struct Chunk {
    name: String,
    /// What the ConfigMap holds (it is rewritten whole).
    text: String,
    sequence: u64,
    /// Its newest record's time.
    until: Option<Timestamp>,
    /// Records up to then are missing from the journal: chunks deleted for
    /// the budget, or records this writer could not keep (said on every
    /// chunk it writes after).
    incomplete_until: Option<Timestamp>,
    /// The `incomplete_until` the last written chunk said.
    marked: Option<Timestamp>,
}

impl Chunk {
    async fn flush(&mut self, place: &Place, prefix: &str, identity: &str, pending: &mut Vec<Journaled>) {
        // A new mark is written even with no new records.
        if pending.is_empty() && self.incomplete_until == self.marked {
            return;
        }
        let lines = journal::encode(pending);
        if !self.text.is_empty() && self.text.len() + lines.len() > CHUNK_BYTES {
            self.sequence += 1;
            self.name = format!("{prefix}-{}", self.sequence);
            self.text.clear();
            self.until = None;
            self.sweep(place).await;
        }
        let text = format!("{}{lines}", self.text);
        let newest = self.until.max(pending.iter().map(|entry| entry.record.at).max());
        let until = newest.unwrap_or_else(Timestamp::now);
        let mut annotations = serde_json::json!({
            UNTIL_ANNOTATION: until.to_string(),
            WRITER_ANNOTATION: identity,
            BYTES_ANNOTATION: text.len().to_string(),
        });
        if let Some(incomplete) = self.incomplete_until {
            annotations[INCOMPLETE_ANNOTATION] = incomplete.to_string().into();
        }
        let body = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": self.name, "labels": {JOURNAL_LABEL: place.series}, "annotations": annotations},
            "data": {RECORDS_KEY: text},
        });
        let api: Api<ConfigMap> = Api::namespaced(place.client.clone(), &place.namespace);
        match api.patch(&self.name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(body)).await {
            Ok(_) => {
                debug!(chunk = %self.name, records = pending.len(), bytes = text.len(), "journaled writes");
                self.text = text;
                self.until = newest;
                self.marked = self.incomplete_until;
                pending.clear();
            }
            Err(error) => {
                warn!(%error, chunk = %self.name, records = pending.len(), "journaling writes failed; retrying")
            }
        }
    }

    /// Deletes chunks past the retention or over the budget (any writer's),
    /// and remembers what the budget cost.
    async fn sweep(&mut self, place: &Place) {
        match plan(place).await {
            Ok(plan) => {
                delete(place, &plan.delete).await;
                self.incomplete_until = self.incomplete_until.max(plan.incomplete_until);
            }
            Err(error) => warn!(%error, "listing the write journal failed; old chunks stay for now"),
        }
    }
}

/// What to read and delete of every replica's journal of `place`.
async fn plan(place: &Place) -> Result<journal::LoadPlan, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(place.client.clone(), &place.namespace);
    let selector = format!("{JOURNAL_LABEL}={}", place.series);
    let chunks = api.list_metadata(&ListParams::default().labels(&selector)).await?.items;
    let time = |chunk: &kube::core::PartialObjectMeta<ConfigMap>, key: &str| {
        chunk.annotations().get(key).and_then(|t| t.parse::<Timestamp>().ok())
    };
    let metas = chunks
        .iter()
        .map(|chunk| ChunkMeta {
            name: chunk.name_any(),
            until: time(chunk, UNTIL_ANNOTATION),
            // Unknown size: count it as a full chunk.
            bytes: chunk.annotations().get(BYTES_ANNOTATION).and_then(|b| b.parse().ok()).unwrap_or(CHUNK_BYTES),
            incomplete_until: time(chunk, INCOMPLETE_ANNOTATION),
        })
        .collect();
    Ok(journal::plan_load(metas, Timestamp::now()))
}

async fn delete(place: &Place, names: &[String]) {
    let api: Api<ConfigMap> = Api::namespaced(place.client.clone(), &place.namespace);
    for name in names {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => warn!(%error, chunk = %name, "deleting an old write journal chunk failed"),
        }
    }
}

/// Every replica's journal of `place`, read back chunk by chunk: the
/// records, and until when they may be incomplete (chunks dropped for the
/// budget, or unreadable lines). Old chunks are deleted.
pub async fn load(place: &Place) -> Result<(Vec<Journaled>, Option<Timestamp>), kube::Error> {
    let started = std::time::Instant::now();
    let api: Api<ConfigMap> = Api::namespaced(place.client.clone(), &place.namespace);
    let plan = plan(place).await?;
    let mut incomplete_until = plan.incomplete_until;
    let mut entries = Vec::new();
    for name in &plan.read {
        // Gone meanwhile: deleted for its age by another replica.
        let Some(chunk) = api.get_opt(name).await? else { continue };
        let (read, bad) = journal::decode(text(&chunk));
        if bad > 0 {
            // What the bad lines said is unknown: records up to the chunk's
            // newest may be missing.
            let until =
                chunk.annotations().get(UNTIL_ANNOTATION).and_then(|t| t.parse().ok()).unwrap_or_else(Timestamp::now);
            warn!(chunk = %name, bad, %until, "unreadable lines in the write journal: drift from before then is unexplained");
            incomplete_until = incomplete_until.max(Some(until));
        }
        entries.extend(read);
    }
    delete(place, &plan.delete).await;
    info!(
        chunks = plan.read.len(),
        records = entries.len(),
        deleted = plan.delete.len(),
        took_ms = started.elapsed().as_millis() as u64,
        "write journal read"
    );
    Ok((entries, incomplete_until))
}

fn text(chunk: &ConfigMap) -> &str {
    chunk.data.as_ref().and_then(|data| data.get(RECORDS_KEY)).map_or("", String::as_str)
}
