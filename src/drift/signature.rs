//! Source signatures: what `driftwarden publish` signs and what the operator
//! checks before it reads a single manifest of a source.
//!
//! A publish signs one *statement* for the whole set of ConfigMaps it
//! writes: the namespace, the source's name (its `driftwarden.io/source`
//! label), the Git revision, a sequence number that only grows, the names
//! of every ConfigMap of the set, and the SHA-256 of every key of each. Each
//! ConfigMap of the set carries the same signed envelope in the
//! `driftwarden.io/signature` annotation. The verifier rebuilds the statement
//! from what it reads, so a key added, removed, renamed or changed, a
//! ConfigMap added to or dropped from the set, the set copied into another
//! namespace or relabelled as another source, or an older signed publish put
//! back (its sequence is below the last one accepted) all fail.
//!
//! Ed25519 keys, in the formats OpenSSL and every CI secret store handle:
//! PKCS#8 PEM for the private key, SPKI PEM for the public key (what
//! `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout` write).
//!
//! Pure: keys and ConfigMaps in, a verdict out.

use std::collections::BTreeMap;

use base64::Engine as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _, EncodePublicKey as _};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::source::SourceConfigMap;

/// The annotation on every ConfigMap of a signed source.
pub const SIGNATURE_ANNOTATION: &str = "driftwarden.io/signature";
/// The label that names the source a ConfigMap belongs to.
pub const SOURCE_LABEL: &str = "driftwarden.io/source";
/// Prefixed to the statement before signing, so that a signature made for
/// anything else with the same key never verifies as a source.
const DOMAIN: &[u8] = b"driftwarden.io/source-statement/v1\n";
/// The longest envelope read; a real one is a few hundred bytes.
const MAX_ENVELOPE_BYTES: usize = 64 * 1024;
/// The most ConfigMaps one signed set may name.
const MAX_SET: usize = 1024;

/// What the signature covers. Serialized as JSON with sorted maps, so the
/// publisher and the verifier produce the same bytes.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Statement<'a> {
    namespace: &'a str,
    source: &'a str,
    revision: Option<&'a str>,
    sequence: u64,
    /// ConfigMap name -> `data/<key>` or `binaryData/<key>` -> SHA-256 (hex).
    config_maps: BTreeMap<&'a str, BTreeMap<String, String>>,
}

/// The annotation's content.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Envelope {
    /// Which key signed (a hint for messages; the signature is what counts).
    pub key_id: String,
    pub sequence: u64,
    /// Every ConfigMap of the set, sorted.
    pub config_maps: Vec<String>,
    /// Ed25519 signature over the statement, base64.
    pub signature: String,
}

/// A public key the operator trusts for some namespaces, by the name of the
/// `PublisherKey` that holds it.
#[derive(Clone, Debug)]
pub struct TrustedKey {
    pub name: String,
    pub key: VerifyingKey,
}

impl TrustedKey {
    pub fn id(&self) -> String {
        key_id(&self.key)
    }
}

/// What a verification accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The `PublisherKey` whose key verified the signature.
    pub key: String,
    pub sequence: u64,
}

/// Why a source's signature is refused. `reason()` is the condition reason
/// and metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no source ConfigMaps to verify")]
    NoSources,
    #[error(
        "ConfigMap {config_map} is not signed (no {SIGNATURE_ANNOTATION} annotation); publish it with `driftwarden publish --signing-key`"
    )]
    Missing { config_map: String },
    #[error("ConfigMap {config_map}: the {SIGNATURE_ANNOTATION} annotation is malformed: {reason}")]
    Malformed { config_map: String, reason: String },
    #[error(
        "ConfigMaps {first} and {second} carry different signatures or source labels (parts of different publishes)"
    )]
    Mixed { first: String, second: String },
    #[error("the signed set is not what the sources select: {}", set_difference(.missing, .unsigned))]
    Incomplete { missing: Vec<String>, unsigned: Vec<String> },
    #[error("signed by key {key_id}, which no PublisherKey trusted for this namespace (and this DesiredState) holds")]
    UntrustedKey { key_id: String },
    #[error(
        "the signature of key {key_id} does not match the content (changed after signing, or signed for another namespace or source)"
    )]
    Invalid { key_id: String },
    #[error("sequence {sequence} is older than the last accepted publish ({accepted}): an old revision put back")]
    Replayed { sequence: u64, accepted: u64 },
}

fn set_difference(missing: &[String], unsigned: &[String]) -> String {
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("signed but missing: {}", missing.join(", ")));
    }
    if !unsigned.is_empty() {
        parts.push(format!("selected but not in the signed set: {}", unsigned.join(", ")));
    }
    parts.join("; ")
}

impl SignatureError {
    pub fn reason(&self) -> &'static str {
        match self {
            SignatureError::NoSources | SignatureError::Missing { .. } => "SignatureMissing",
            SignatureError::Malformed { .. } | SignatureError::Invalid { .. } => "SignatureInvalid",
            SignatureError::Mixed { .. } | SignatureError::Incomplete { .. } => "SignatureIncomplete",
            SignatureError::UntrustedKey { .. } => "SignatureUntrusted",
            SignatureError::Replayed { .. } => "SignatureReplayed",
        }
    }
}

/// A short, stable name for a public key: the first 16 hex digits of the
/// SHA-256 of its 32 bytes.
pub fn key_id(key: &VerifyingKey) -> String {
    hex(&Sha256::digest(key.as_bytes())[..8])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn digests(config_map: &SourceConfigMap) -> BTreeMap<String, String> {
    let text = config_map.data.iter().map(|(k, v)| (format!("data/{k}"), hex(&Sha256::digest(v.as_bytes()))));
    let binary = config_map.binary_data.iter().map(|(k, v)| (format!("binaryData/{k}"), hex(&Sha256::digest(v))));
    // Each ConfigMap's revision is covered, not only the first one's.
    let revision = config_map.annotations.get(super::REVISION_ANNOTATION).map(|r| ("revision".to_owned(), r.clone()));
    text.chain(binary).chain(revision).collect()
}

fn revision(config_maps: &[&SourceConfigMap]) -> Option<String> {
    // The parser refuses sets whose revisions disagree; the statement takes
    // the first, and a disagreeing one fails here as changed content.
    config_maps.iter().find_map(|cm| cm.annotations.get(super::REVISION_ANNOTATION).cloned())
}

fn statement_bytes(namespace: &str, source: &str, sequence: u64, config_maps: &[&SourceConfigMap]) -> Vec<u8> {
    let revision = revision(config_maps);
    let statement = Statement {
        namespace,
        source,
        revision: revision.as_deref(),
        sequence,
        config_maps: config_maps.iter().map(|cm| (cm.name.as_str(), digests(cm))).collect(),
    };
    let mut bytes = DOMAIN.to_vec();
    // Serializing strings and maps of strings cannot fail.
    bytes.extend(serde_json::to_vec(&statement).unwrap_or_default());
    bytes
}

/// Signs a set of ConfigMaps (as `publish` packs them) and returns the
/// envelope every one of them must carry. The revision annotation and the
/// source label must already be set.
pub fn sign(key: &SigningKey, namespace: &str, sequence: u64, config_maps: &[SourceConfigMap]) -> Envelope {
    let mut sorted: Vec<&SourceConfigMap> = config_maps.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let source = sorted.first().and_then(|cm| cm.labels.get(SOURCE_LABEL)).map(String::as_str).unwrap_or_default();
    let signature = key.sign(&statement_bytes(namespace, source, sequence, &sorted));
    Envelope {
        key_id: key_id(&key.verifying_key()),
        sequence,
        config_maps: sorted.iter().map(|cm| cm.name.clone()).collect(),
        signature: base64::engine::general_purpose::STANDARD.encode(signature.to_bytes()),
    }
}

impl Envelope {
    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_annotation(config_map: &str, text: &str) -> Result<Envelope, SignatureError> {
        let malformed = |reason: String| SignatureError::Malformed { config_map: config_map.to_owned(), reason };
        if text.len() > MAX_ENVELOPE_BYTES {
            return Err(malformed(format!("{} bytes (at most {MAX_ENVELOPE_BYTES})", text.len())));
        }
        let envelope: Envelope = serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
        if envelope.config_maps.is_empty() || envelope.config_maps.len() > MAX_SET {
            return Err(malformed(format!("names {} ConfigMaps (1 to {MAX_SET})", envelope.config_maps.len())));
        }
        Ok(envelope)
    }
}

/// Verifies the set of ConfigMaps a DesiredState selects in `namespace`
/// against the keys trusted there. `accepted`: the sequence of the last
/// publish this DesiredState accepted, if any.
pub fn verify(
    namespace: &str,
    config_maps: &[SourceConfigMap],
    trusted: &[TrustedKey],
    accepted: Option<u64>,
) -> Result<Verified, SignatureError> {
    let mut sorted: Vec<&SourceConfigMap> = config_maps.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let first = *sorted.first().ok_or(SignatureError::NoSources)?;
    fn read(cm: &SourceConfigMap) -> Result<(&String, Option<&String>), SignatureError> {
        let text = cm
            .annotations
            .get(SIGNATURE_ANNOTATION)
            .ok_or_else(|| SignatureError::Missing { config_map: cm.name.clone() })?;
        Ok((text, cm.labels.get(SOURCE_LABEL)))
    }
    let (text, source) = read(first)?;
    for other in &sorted[1..] {
        if read(other)? != (text, source) {
            return Err(SignatureError::Mixed { first: first.name.clone(), second: other.name.clone() });
        }
    }
    let envelope = Envelope::from_annotation(&first.name, text)?;
    let selected: Vec<&str> = sorted.iter().map(|cm| cm.name.as_str()).collect();
    if envelope.config_maps.iter().map(String::as_str).ne(selected.iter().copied()) {
        let missing: Vec<String> =
            envelope.config_maps.iter().filter(|n| !selected.contains(&n.as_str())).cloned().collect();
        let unsigned = selected.iter().filter(|n| !envelope.config_maps.iter().any(|s| s == *n));
        let unsigned: Vec<String> = unsigned.map(|n| (*n).to_owned()).collect();
        if let ([], []) = (&missing[..], &unsigned[..]) {
            return Err(SignatureError::Malformed {
                config_map: first.name.clone(),
                reason: "the signed set is not sorted or repeats a name".into(),
            });
        }
        return Err(SignatureError::Incomplete { missing, unsigned });
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(envelope.signature.as_bytes()).map_err(|_| {
        SignatureError::Malformed { config_map: first.name.clone(), reason: "the signature is not base64".into() }
    })?;
    let signature = Signature::from_slice(&bytes).map_err(|_| SignatureError::Malformed {
        config_map: first.name.clone(),
        reason: format!("the signature is {} bytes, not 64", bytes.len()),
    })?;
    let message =
        statement_bytes(namespace, source.map(String::as_str).unwrap_or_default(), envelope.sequence, &sorted);
    let candidates: Vec<&TrustedKey> = trusted.iter().filter(|k| k.id() == envelope.key_id).collect();
    if candidates.is_empty() {
        return Err(SignatureError::UntrustedKey { key_id: envelope.key_id });
    }
    let Some(signer) = candidates.iter().find(|k| k.key.verify_strict(&message, &signature).is_ok()) else {
        return Err(SignatureError::Invalid { key_id: envelope.key_id });
    };
    if let Some(accepted) = accepted.filter(|accepted| envelope.sequence < *accepted) {
        return Err(SignatureError::Replayed { sequence: envelope.sequence, accepted });
    }
    Ok(Verified { key: signer.name.clone(), sequence: envelope.sequence })
}

/// Errors reading a key file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not an Ed25519 private key in PKCS#8 PEM (-----BEGIN PRIVATE KEY-----): {0}")]
    Private(String),
    #[error("not an Ed25519 public key in SPKI PEM (-----BEGIN PUBLIC KEY-----): {0}")]
    Public(String),
}

pub fn signing_key_from_pem(pem: &str) -> Result<SigningKey, KeyError> {
    SigningKey::from_pkcs8_pem(pem.trim()).map_err(|e| KeyError::Private(e.to_string()))
}

pub fn verifying_key_from_pem(pem: &str) -> Result<VerifyingKey, KeyError> {
    VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| KeyError::Public(e.to_string()))
}

/// A new key pair from 32 bytes of the caller's randomness, as
/// (private PKCS#8 PEM, public SPKI PEM).
pub fn key_pair_pem(seed: &[u8; 32]) -> (String, String) {
    let key = SigningKey::from_bytes(seed);
    let private = key.to_pkcs8_pem(Default::default()).map(|pem| pem.to_string()).unwrap_or_default();
    let public = key.verifying_key().to_public_key_pem(Default::default()).unwrap_or_default();
    (private, public)
}

#[cfg(test)]
#[path = "signature_tests.rs"]
mod tests;
