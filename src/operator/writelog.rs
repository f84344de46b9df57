//! The operator's write log, shared: the `/writes` webhook adds provisional
//! records, the drift controller's watches confirm them, the audit receiver
//! adds what the API server's audit events report, and the gate reads
//! the confirmed records ([`crate::gate::writes`] is the pure part).
//! Newly confirmed writes also go, as a bounded summary, to the
//! AccessRequests' status and to the structured log (the audit receiver's
//! queue does both).

use std::sync::{Arc, Mutex};

use k8s_openapi::jiff::Timestamp;
use tokio::sync::mpsc;
use tracing::warn;

use crate::gate::audit::{AuditWrite, is_system_user};
use crate::gate::writes::{Expect, Journaled, Observed, Outcome, Record, Source, WriteLog};
use crate::metrics::{Metrics, OutcomeLabels};
use crate::operator::drift::watches::Cached;

pub struct SharedLog {
    log: Mutex<WriteLog>,
    /// The audit receiver's queue (status summaries and log lines).
    summaries: mpsc::Sender<Vec<AuditWrite>>,
    /// The operator's own user: its writes (reverts) are nobody's.
    operator: String,
    metrics: Arc<Metrics>,
    /// This replica's journal writer ([`super::journal`]): every record it
    /// confirms, so that whoever leads next starts from them.
    journal: Option<super::journal::Journal>,
}

/// A list in progress, as the write log knows it: ends when dropped (the
/// list is done, or its watch stopped in the middle of it).
pub struct Listing(Arc<SharedLog>);

impl Drop for Listing {
    fn drop(&mut self) {
        self.0.lock().listing_ended(Timestamp::now());
    }
}

impl std::fmt::Debug for SharedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLog").field("sizes", &self.lock().sizes()).finish_non_exhaustive()
    }
}

impl SharedLog {
    pub fn new(
        summaries: mpsc::Sender<Vec<AuditWrite>>,
        operator: String,
        metrics: Arc<Metrics>,
        journal: Option<super::journal::Journal>,
    ) -> Arc<Self> {
        Arc::new(Self { log: Mutex::default(), summaries, operator, metrics, journal })
    }

    /// A list that may deliver admitted writes has begun (a watch listing,
    /// a new leader's first passes): provisional records wait for it until
    /// the returned guard is dropped.
    pub fn listing(self: &Arc<Self>) -> Listing {
        self.lock().listing_began();
        Listing(self.clone())
    }

    /// Takes in what the journal kept (see [`WriteLog::restore`]).
    pub fn restore(&self, entries: Vec<Journaled>, incomplete_until: Option<Timestamp>) {
        let outcome = self.lock().restore(entries, incomplete_until, Timestamp::now());
        self.count(outcome);
    }

    fn journal(&self, records: &[Record], source: Source, visible_at: impl Fn(&Record) -> Timestamp) {
        let Some(journal) = &self.journal else { return };
        if records.is_empty() {
            return;
        }
        let entries =
            records.iter().map(|r| Journaled { record: r.clone(), source, visible_at: visible_at(r) }).collect();
        if !journal.send(entries) {
            self.metrics
                .write_records
                .get_or_create(&OutcomeLabels { outcome: "unjournaled" })
                .inc_by(records.len() as u64);
            warn!(
                writes = records.len(),
                "the write journal's queue is full: a new leader will treat drift from before these writes as unexplained"
            );
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WriteLog> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, outcome: Outcome) {
        for (name, n) in [
            ("confirmed", outcome.confirmed),
            ("merged", outcome.merged),
            ("expired", outcome.expired),
            ("overflowed", outcome.overflowed),
            ("restored", outcome.restored),
        ] {
            if n > 0 {
                self.metrics.write_records.get_or_create(&OutcomeLabels { outcome: name }).inc_by(n as u64);
            }
        }
        if outcome.overflowed > 0 {
            warn!(
                dropped = outcome.overflowed,
                "a namespace's write log is over its budget: drift from before the dropped records is reverted"
            );
        }
    }

    /// Whether a write by `user` is anybody's (not the operator's, not the cluster's own).
    pub fn is_someones(&self, user: &str) -> bool {
        user != self.operator && !is_system_user(user)
    }

    /// An admitted write, provisional until a watch delivers it.
    pub fn admit(&self, record: Record, expect: Expect) {
        if !self.is_someones(&record.user) {
            return;
        }
        self.metrics.write_records.get_or_create(&OutcomeLabels { outcome: "admitted" }).inc();
        let outcome = self.lock().admit(record, expect, Timestamp::now());
        self.count(outcome);
    }

    /// A watch delivered `object`; `deleted` when it is gone (or going).
    pub fn observe<K: Cached>(&self, object: &K, deleted: bool) {
        let meta = object.meta();
        let Some(uid) = meta.uid.as_deref() else { return };
        if !self.lock().waits_for(uid) {
            return;
        }
        let deleted = deleted || meta.deletion_timestamp.is_some();
        let seen = Observed {
            uid,
            resource_version: meta.resource_version.as_deref(),
            fingerprint: object.fingerprint(),
            replicas: object.replicas(),
            deleted,
        };
        let now = Timestamp::now();
        let (fresh, outcome) = self.lock().observe(&seen, now);
        self.count(outcome);
        self.journal(&fresh, Source::Admission, |_| now);
        if !fresh.is_empty() && self.summaries.try_send(fresh.iter().map(audit_write).collect()).is_err() {
            warn!(writes = fresh.len(), "the activity summary queue is full; these writes are in the write log only");
        }
    }

    /// Writes the audit log reports (they succeeded): returns those not
    /// already confirmed from admission.
    pub fn audited(&self, writes: Vec<AuditWrite>) -> Vec<AuditWrite> {
        let records: Vec<Record> = writes.iter().filter(|w| self.is_someones(&w.user)).map(record).collect();
        let (fresh, outcome) = self.lock().audited(records, Timestamp::now());
        self.count(outcome);
        // An audit event's write was visible when the API server received it.
        self.journal(&fresh, Source::Audit, |r| r.at);
        writes.into_iter().filter(|w| fresh.iter().any(|r| *r == record(w))).collect()
    }

    /// The confirmed writes to one object after `from`, and until when the
    /// namespace's record is incomplete.
    pub fn writes_to(
        &self,
        namespace: &str,
        group: &str,
        resource: &str,
        name: &str,
        from: Timestamp,
    ) -> (Vec<Record>, Option<Timestamp>) {
        let log = self.lock();
        let writes = log.writes_to(namespace, group, resource, name, from).cloned().collect();
        (writes, log.incomplete_until(namespace))
    }
}

fn record(write: &AuditWrite) -> Record {
    Record {
        user: write.user.clone(),
        groups: Vec::new(),
        verb: write.verb.clone(),
        group: write.group.clone(),
        resource: write.resource.clone(),
        subresource: write.subresource.clone(),
        namespace: write.namespace.clone(),
        name: write.name.clone(),
        at: write.at,
    }
}

fn audit_write(record: &Record) -> AuditWrite {
    AuditWrite {
        audit_id: String::new(),
        user: record.user.clone(),
        verb: record.verb.clone(),
        group: record.group.clone(),
        resource: record.resource.clone(),
        subresource: record.subresource.clone(),
        namespace: record.namespace.clone(),
        name: record.name.clone(),
        at: record.at,
        fields: Vec::new(),
    }
}
