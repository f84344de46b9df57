//! Notifier: where the operator sends what it sees (access requests and
//! their decisions, drift and its reverts). Read only in the operator's own
//! namespace, so that a tenant can neither add a sink nor redirect one.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A destination for driftwarden's notifications.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "driftwarden.io",
    version = "v1alpha1",
    kind = "Notifier",
    namespaced,
    doc = "A destination for driftwarden's notifications: access requests and their decisions, drift found, reverted or reported. Only Notifiers in the operator's namespace are used.",
    status = "NotifierStatus",
    shortname = "notifier",
    category = "driftwarden",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Delivered", type_ = "integer", json_path = ".status.delivered"),
    printcolumn(name = "Dead", type_ = "integer", json_path = ".status.deadLettered"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = kube::core::Rule::new("has(self.url) || has(self.urlSecretRef)").message("a Notifier needs url or urlSecretRef"))]
#[x_kube(validation = kube::core::Rule::new("self.type == 'Webhook' ? has(self.hmacSecretRef) : !has(self.hmacSecretRef)").message("type Webhook needs hmacSecretRef (its bodies are signed); the other types take none"))]
#[serde(rename_all = "camelCase")]
pub struct NotifierSpec {
    /// What the receiver speaks: `Webhook` (JSON, signed with HMAC-SHA256),
    /// `Slack` (an incoming webhook) or `Alertmanager` (its v2 API; an alert
    /// fires while drift stands and resolves when it is gone).
    #[serde(rename = "type")]
    pub type_: NotifierType,

    /// The receiver's URL (for Alertmanager its base URL, such as
    /// `http://alertmanager.monitoring:9093`). Give `urlSecretRef` instead
    /// when the URL is a credential, as a Slack webhook URL is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = kube::core::Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("url must be http:// or https://"))]
    pub url: Option<String>,

    /// A key of a Secret in the operator's namespace that holds the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret_ref: Option<SecretKeyRef>,

    /// Webhook (required) only: a key of a Secret in the operator's
    /// namespace whose value signs every body (`X-Driftwarden-Signature`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_secret_ref: Option<SecretKeyRef>,

    /// The namespaces whose events are sent. Empty: every namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub namespaces: Vec<String>,

    /// The kinds of events sent. Empty: every kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub events: Vec<NoticeKind>,
}

/// The protocol of a Notifier's receiver.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum NotifierType {
    Webhook,
    Slack,
    Alertmanager,
}

/// A key of a Secret in the operator's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key in its data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// The kinds of events a Notifier can send.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, schemars::JsonSchema)]
pub enum NoticeKind {
    /// Someone asked for access; the message lists the drift pending in
    /// the namespace (what an approval would let stand).
    RequestCreated,
    RequestApproved,
    RequestDenied,
    /// An active window ends soon (five minutes, or a fifth of the window
    /// when that is shorter).
    RequestExpiring,
    /// A window expired or was revoked; the message carries its activity.
    RequestEnded,
    /// A window ended with changes still in place: the patch to commit to
    /// keep them.
    SessionCodified,
    /// A change no approved window covers was reverted, or an undeclared
    /// object deleted.
    DriftReverted,
    /// Drift that stands: reported (not reverted), or not yet reverted. The
    /// message carries the command that requests access to fix it.
    DriftReported,
    /// A change made in a window was reverted when the window ended.
    WindowEndReverted,
    /// Someone ran `kubectl exec`, `attach` or `port-forward` into a Pod
    /// (the command line as typed, bounded; with the AccessRequest whose
    /// window it was run in, if any).
    SessionCommand,
}

/// What the operator delivered to the Notifier.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotifierStatus {
    /// Messages the receiver accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered: Option<i64>,
    /// Messages given up on after every retry (also counted in metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_lettered: Option<i64>,
    /// The last delivery failure, without URL or credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// `Ready`: whether the spec and its Secrets can be used and the last
    /// delivery succeeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}
