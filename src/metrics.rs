//! Prometheus metrics (OpenMetrics text on /metrics). Every label has a
//! small, fixed set of values: never an object name, so cardinality stays
//! bounded however many objects the operator manages.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::api::AccessPhase;

mod process;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Phase {
    Pending,
    Approved,
    Denied,
    Active,
    Expired,
    Revoked,
}

impl From<AccessPhase> for Phase {
    fn from(phase: AccessPhase) -> Self {
        match phase {
            AccessPhase::Pending => Phase::Pending,
            AccessPhase::Approved => Phase::Approved,
            AccessPhase::Denied => Phase::Denied,
            AccessPhase::Active => Phase::Active,
            AccessPhase::Expired => Phase::Expired,
            AccessPhase::Revoked => Phase::Revoked,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: Phase,
}

/// Class of drift, as in DesiredState status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Class {
    Unauthorized,
    Authorized,
    AuthorizedByScope,
    WindowEnded,
    /// Objects no source declares (counted here only, not under the others).
    Undeclared,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    pub class: Class,
}

/// Why a revert was made.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RevertReason {
    unauthorized,
    window_ended,
    /// A removal from Git (`spec.prune`; deletions only).
    pruned,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RevertLabels {
    pub reason: RevertReason,
}

/// What became of an audit webhook call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum AuditOutcome {
    accepted,
    unauthenticated,
    malformed,
    overloaded,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuditLabels {
    pub outcome: AuditOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub webhook: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookNameLabels {
    pub webhook: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ReviewOutcome {
    Approved,
    Denied,
    Ignored,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    pub outcome: ReviewOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub category: &'static str,
}

/// Why a DesiredState's sources were refused: the SourceValid reason
/// (`SignatureMissing`, `SignatureInvalid`, `SignatureIncomplete`,
/// `SignatureUntrusted`, `SignatureReplayed`, `SourceInvalid`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// All metrics of the operator, registered under the `driftwarden_` prefix.
/// The protocol of a Notifier.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Sink {
    webhook,
    slack,
    alertmanager,
}

/// What became of one message to a Notifier.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Delivery {
    delivered,
    /// An attempt failed and was retried.
    retried,
    /// Given up on after every retry, or refused for good (a 4xx).
    dead_lettered,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    pub sink: Sink,
    pub outcome: Delivery,
}

pub struct Metrics {
    registry: Registry,
    process: process::Process,
    pub access_requests: Family<PhaseLabels, Gauge>,
    pub active_grants: Gauge,
    pub grant_expiry_lag: Histogram,
    pub access_reviews: Family<ReviewLabels, Counter>,
    pub drifted_objects: Family<ClassLabels, Gauge>,
    pub drift_detections: Counter,
    pub drift_detection_latency: Histogram,
    pub reconcile_duration: Family<ControllerLabels, Histogram>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub leader: Gauge,
    pub reverts: Family<RevertLabels, Counter>,
    pub revert_failures: Family<RevertLabels, Counter>,
    pub revert_latency_after_window_end: Histogram,
    pub source_refusals: Family<RefusalLabels, Counter>,
    pub sources_refused: Gauge,
    pub deletions: Family<RevertLabels, Counter>,
    pub contested_objects: Gauge,
    unauthorized_drift_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Unix seconds of the oldest unauthorized drift; i64::MAX when none.
    oldest_unauthorized: std::sync::atomic::AtomicI64,
    pub audit_events: Family<AuditLabels, Counter>,
    pub webhook_requests: Family<WebhookLabels, Counter>,
    pub webhook_duration: Family<WebhookNameLabels, Histogram>,
    /// Write-log records by outcome: admitted, confirmed, merged (the
    /// other source's report of the same write), expired, overflowed.
    pub write_records: Family<OutcomeLabels, Counter>,
    pub notifications: Family<NotificationLabels, Counter>,
    pub notifications_dropped: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

fn seconds_buckets() -> Histogram {
    // 1 ms .. ~33 s
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        // driftwarden's own metrics under its prefix; the process's under
        // the names every Prometheus client uses.
        let mut root = Registry::default();
        let process = process::Process::default();
        process.register(&mut root);
        let registry = root.sub_registry_with_prefix("driftwarden");
        let access_requests = Family::<PhaseLabels, Gauge>::default();
        registry.register("access_requests", "AccessRequests by phase", access_requests.clone());
        let active_grants = Gauge::default();
        registry.register(
            "active_grants",
            "RoleBindings currently granted by approved AccessRequests",
            active_grants.clone(),
        );
        let grant_expiry_lag = seconds_buckets();
        registry.register_with_unit(
            "grant_expiry_lag",
            "Time from a grant's expiresAt until its RoleBinding was deleted",
            Unit::Seconds,
            grant_expiry_lag.clone(),
        );
        let access_reviews = Family::<ReviewLabels, Counter>::default();
        registry.register(
            "access_reviews",
            "AccessReviews by outcome (approved, denied, ignored)",
            access_reviews.clone(),
        );
        let drifted_objects = Family::<ClassLabels, Gauge>::default();
        registry.register("drifted_objects", "Managed objects that differ from Git, by class", drifted_objects.clone());
        let drift_detections = Counter::default();
        registry.register("drift_detections", "Objects seen to start drifting", drift_detections.clone());
        let drift_detection_latency = seconds_buckets();
        registry.register_with_unit(
            "drift_detection_latency",
            "Time from a watch event on a managed object to drift in DesiredState status",
            Unit::Seconds,
            drift_detection_latency.clone(),
        );
        let reconcile_duration =
            Family::<ControllerLabels, Histogram>::new_with_constructor(seconds_buckets as fn() -> Histogram);
        registry.register_with_unit(
            "reconcile_duration",
            "Duration of one reconcile",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed reconciles by controller and error category",
            reconcile_errors.clone(),
        );
        let leader = Gauge::default();
        registry.register("leader", "1 while this replica holds the leader lease and writes", leader.clone());
        let reverts = Family::<RevertLabels, Counter>::default();
        registry.register("reverts", "Drifted objects put back to Git, by reason", reverts.clone());
        let revert_failures = Family::<RevertLabels, Counter>::default();
        registry.register("revert_failures", "Reverts that failed (retried), by reason", revert_failures.clone());
        let source_refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "source_refusals",
            "Times a DesiredState's sources began to be refused (unsigned, forged, replayed or invalid), by reason",
            source_refusals.clone(),
        );
        let sources_refused = Gauge::default();
        registry.register(
            "sources_refused",
            "DesiredStates whose current sources are refused (the last verified state is enforced)",
            sources_refused.clone(),
        );
        let deletions = Family::<RevertLabels, Counter>::default();
        registry.register(
            "deletions",
            "Undeclared objects deleted (created without a covering window, or in one that ended), by reason",
            deletions.clone(),
        );
        let contested_objects = Gauge::default();
        registry.register(
            "contested_objects",
            "Declared objects rewritten right after each revert, whose reverts back off",
            contested_objects.clone(),
        );
        let revert_latency_after_window_end = seconds_buckets();
        registry.register_with_unit(
            "revert_latency_after_window_end",
            "Time from an access window's end until a change made in it was reverted",
            Unit::Seconds,
            revert_latency_after_window_end.clone(),
        );
        let unauthorized_drift_age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register_with_unit(
            "unauthorized_drift_age",
            "Age of the oldest drift no approved access window covers (0 when none)",
            Unit::Seconds,
            unauthorized_drift_age.clone(),
        );
        let audit_events = Family::<AuditLabels, Counter>::default();
        registry.register("audit_events", "Audit webhook batches by outcome", audit_events.clone());
        let webhook_requests = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "webhook_requests",
            "Admission webhook requests by webhook and outcome",
            webhook_requests.clone(),
        );
        let webhook_duration =
            Family::<WebhookNameLabels, Histogram>::new_with_constructor(seconds_buckets as fn() -> Histogram);
        registry.register_with_unit(
            "webhook_duration",
            "Time to answer an admission or audit webhook call",
            Unit::Seconds,
            webhook_duration.clone(),
        );
        let write_records = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "write_log_records",
            "Write-log records by outcome (admitted, confirmed, merged, expired, overflowed: a namespace's record over its budget, whose older drift is then reverted; restored: read back from the journal by a new leader; unjournaled: not written to the journal, its queue full)",
            write_records.clone(),
        );
        let notifications = Family::<NotificationLabels, Counter>::default();
        registry.register(
            "notifications",
            "Messages to Notifiers by sink and outcome (delivered, retried, dead_lettered)",
            notifications.clone(),
        );
        let notifications_dropped = Counter::default();
        registry.register(
            "notifications_dropped",
            "Notices dropped because the delivery queue was full",
            notifications_dropped.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION") }).set(1);
        registry.register("build_info", "Build information", build_info);
        Self {
            registry: root,
            process,
            access_requests,
            active_grants,
            grant_expiry_lag,
            access_reviews,
            drifted_objects,
            drift_detections,
            drift_detection_latency,
            reconcile_duration,
            reconcile_errors,
            leader,
            reverts,
            revert_failures,
            revert_latency_after_window_end,
            source_refusals,
            sources_refused,
            deletions,
            contested_objects,
            unauthorized_drift_age,
            oldest_unauthorized: std::sync::atomic::AtomicI64::new(i64::MAX),
            audit_events,
            webhook_requests,
            webhook_duration,
            write_records,
            notifications,
            notifications_dropped,
        }
    }
}

impl Metrics {
    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        // The age grows between reconciles: compute it when scraped.
        let oldest = self.oldest_unauthorized.load(std::sync::atomic::Ordering::Relaxed);
        let age = if oldest == i64::MAX {
            0.0
        } else {
            (k8s_openapi::jiff::Timestamp::now().as_millisecond() as f64 / 1000.0 - oldest as f64).max(0.0)
        };
        self.unauthorized_drift_age.set(age);
        self.process.refresh();
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Remembers when the oldest unauthorized drift was first seen.
    pub fn set_oldest_unauthorized_drift(&self, since: Option<k8s_openapi::jiff::Timestamp>) {
        let value = since.map_or(i64::MAX, |t| t.as_second());
        self.oldest_unauthorized.store(value, std::sync::atomic::Ordering::Relaxed);
    }

    /// Observes the reconcile's duration when dropped, on every exit path.
    pub fn reconcile_timer(&self, controller: &'static str) -> ReconcileTimer<'_> {
        ReconcileTimer { metrics: self, controller, start: std::time::Instant::now() }
    }
}

pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    controller: &'static str,
    start: std::time::Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        let labels = ControllerLabels { controller: self.controller };
        self.metrics.reconcile_duration.get_or_create(&labels).observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_exposed_with_prefix_and_units() {
        let metrics = Metrics::default();
        metrics.access_requests.get_or_create(&PhaseLabels { phase: Phase::Active }).set(2);
        metrics.grant_expiry_lag.observe(0.02);
        drop(metrics.reconcile_timer("access"));
        let text = metrics.encode();
        for expected in [
            "driftwarden_access_requests{phase=\"Active\"} 2",
            "driftwarden_grant_expiry_lag_seconds_count 1",
            "driftwarden_reconcile_duration_seconds_count{controller=\"access\"} 1",
            "driftwarden_build_info{version=",
            "# EOF",
        ] {
            assert!(text.contains(expected), "missing {expected} in\n{text}");
        }
    }
}
