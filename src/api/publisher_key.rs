//! PublisherKey: a public key whose signatures on source ConfigMaps the
//! operator trusts, and for which namespaces. Cluster-scoped, so that no
//! namespace's users can add a key of their own.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A trusted signing key of the publisher (the CI job that runs `driftwarden publish`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "driftwarden.io",
    version = "v1alpha1",
    kind = "PublisherKey",
    doc = "A public key whose signatures on source ConfigMaps the operator accepts, in the namespaces the selector matches. Sources signed by no trusted key are refused. Trust two keys at once to rotate: publish with the new one, then delete the old one.",
    status = "PublisherKeyStatus",
    shortname = "pubkey",
    category = "driftwarden",
    printcolumn(name = "Key ID", type_ = "string", json_path = ".status.keyId"),
    printcolumn(name = "Valid", type_ = "string", json_path = ".status.conditions[?(@.type==\"Valid\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct PublisherKeySpec {
    /// The Ed25519 public key in PEM (`-----BEGIN PUBLIC KEY-----`), as
    /// `driftwarden keygen` or `openssl pkey -pubout` print it.
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = kube::core::Rule::new("self.trim().startsWith('-----BEGIN PUBLIC KEY-----')").message("publicKey must be a PEM public key (-----BEGIN PUBLIC KEY-----)"))]
    pub public_key: String,

    /// The namespaces whose sources this key may sign. An empty selector
    /// matches every namespace.
    pub namespace_selector: LabelSelector,
}

/// What the operator read of the key.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublisherKeyStatus {
    /// The key's ID, as signatures name it (`driftwarden keygen` prints it too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// `Valid`: whether the public key parses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}
