//! The webhook server's certificate: issued by a CA the operator creates,
//! kept in a Secret so every replica serves the same one, and renewed well
//! before it expires. (With cert-manager, the chart mounts a certificate
//! instead and none of this runs.)

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};

use crate::pki::{self, CertificateAuthority};

/// How long the CA is valid; it is replaced (with every webhook
/// configuration's caBundle) when less than [`RENEW_BEFORE`] remains.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a serving certificate is valid.
const SERVING_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// Renew when less than this remains.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

const NOT_AFTER: &str = "driftwarden.io/not-after";
const CA_NOT_AFTER: &str = "driftwarden.io/ca-not-after";
const NAMES: &str = "driftwarden.io/names";

/// What the webhook server serves and what the API server must trust.
#[derive(Clone, PartialEq, Eq)]
pub struct ServingTls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after: Timestamp,
}

impl std::fmt::Debug for ServingTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingTls").field("not_after", &self.not_after).finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading or writing Secret {namespace}/{name}: {source}")]
    Secret { namespace: String, name: String, source: kube::Error },
    #[error("issuing the webhook certificate: {0}")]
    Pki(#[from] pki::Error),
    #[error("Secret {namespace}/{name} kept changing under us; could not settle on a webhook certificate")]
    Contended { namespace: String, name: String },
    #[error("Secret {namespace}/{name} was written but does not hold a usable certificate")]
    Unusable { namespace: String, name: String },
}

/// Loads the certificate from the Secret, or issues (and stores) a new one
/// when there is none, it is for other names, or it expires soon. When
/// another replica writes the Secret first, its certificate is used.
pub async fn load_or_issue(
    client: &Client,
    namespace: &str,
    name: &str,
    names: &[String],
    now: Timestamp,
) -> Result<ServingTls, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let fail = |source| Error::Secret { namespace: namespace.into(), name: name.into(), source };
    for _ in 0..3 {
        let existing = api.get_opt(name).await.map_err(fail)?;
        if let Some(tls) = existing.as_ref().and_then(|s| usable(s, names, now)) {
            return Ok(tls);
        }
        let ca = existing.as_ref().and_then(|s| reusable_ca(s, now));
        let secret = issue(name, namespace, names, ca)?;
        let written = match &existing {
            None => api.create(&PostParams::default(), &secret).await,
            Some(old) => {
                let mut secret = secret;
                secret.metadata.resource_version = old.metadata.resource_version.clone();
                api.replace(name, &PostParams::default(), &secret).await
            }
        };
        match written {
            Ok(secret) => {
                return usable(&secret, names, now)
                    .ok_or_else(|| Error::Unusable { namespace: namespace.into(), name: name.into() });
            }
            // Another replica won the race: read what it wrote.
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(err) => return Err(fail(err)),
        }
    }
    Err(Error::Contended { namespace: namespace.into(), name: name.into() })
}

fn field(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

fn annotation(secret: &Secret, key: &str) -> Option<String> {
    secret.metadata.annotations.as_ref()?.get(key).cloned()
}

fn time_annotation(secret: &Secret, key: &str) -> Option<Timestamp> {
    annotation(secret, key)?.parse().ok()
}

fn renewal_due(not_after: Timestamp, now: Timestamp) -> bool {
    now.checked_add(RENEW_BEFORE).is_ok_and(|limit| not_after <= limit)
}

fn usable(secret: &Secret, names: &[String], now: Timestamp) -> Option<ServingTls> {
    let not_after = time_annotation(secret, NOT_AFTER)?;
    let ca_not_after = time_annotation(secret, CA_NOT_AFTER)?;
    if renewal_due(not_after, now) || renewal_due(ca_not_after, now) || annotation(secret, NAMES)? != names.join(",") {
        return None;
    }
    Some(ServingTls {
        ca_pem: field(secret, "ca.crt")?,
        cert_pem: field(secret, "tls.crt")?,
        key_pem: field(secret, "tls.key")?,
        not_after,
    })
}

/// Keep the CA while it has time left, so the caBundle the API server
/// trusts does not change with every serving certificate.
fn reusable_ca(secret: &Secret, now: Timestamp) -> Option<(CertificateAuthority, Timestamp)> {
    let ca_not_after = time_annotation(secret, CA_NOT_AFTER).filter(|t| !renewal_due(*t, now))?;
    let ca = CertificateAuthority::from_pem(&field(secret, "ca.crt")?, &field(secret, "ca.key")?).ok()?;
    Some((ca, ca_not_after))
}

/// A Secret as the operator keeps it, with a serving certificate for
/// `names` issued by `ca`: for a harness that must trust the CA before the
/// operator starts (the API server's audit webhook configuration).
pub fn issue_with_ca(name: &str, namespace: &str, names: &[String], ca: CertificateAuthority) -> Result<Secret, Error> {
    issue(name, namespace, names, Some((ca, after(Timestamp::now(), CA_VALIDITY))))
}

fn issue(
    name: &str,
    namespace: &str,
    names: &[String],
    ca: Option<(CertificateAuthority, Timestamp)>,
) -> Result<Secret, Error> {
    let now = Timestamp::now();
    let (ca, ca_not_after) = match ca {
        Some(ca) => ca,
        None => {
            (CertificateAuthority::generate_valid_for("driftwarden-webhook-ca", CA_VALIDITY)?, after(now, CA_VALIDITY))
        }
    };
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let serving = ca.issue_server_valid_for("driftwarden-webhook", &name_refs, SERVING_VALIDITY)?;
    let data: BTreeMap<String, ByteString> = [
        ("ca.crt", ca.cert_pem().to_owned()),
        ("ca.key", ca.keyed_cert().key_pem.clone()),
        ("tls.crt", serving.cert_pem),
        ("tls.key", serving.key_pem),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), ByteString(v.into_bytes())))
    .collect();
    let mut secret = Secret { data: Some(data), type_: Some("kubernetes.io/tls".into()), ..Default::default() };
    secret.metadata.name = Some(name.to_owned());
    secret.metadata.namespace = Some(namespace.to_owned());
    secret.metadata.labels = Some([("app.kubernetes.io/managed-by".to_owned(), "driftwarden".to_owned())].into());
    secret.metadata.annotations = Some(
        [
            (NOT_AFTER.to_owned(), after(now, SERVING_VALIDITY).to_string()),
            (CA_NOT_AFTER.to_owned(), ca_not_after.to_string()),
            (NAMES.to_owned(), names.join(",")),
        ]
        .into(),
    );
    Ok(secret)
}

fn after(now: Timestamp, validity: Duration) -> Timestamp {
    now.checked_add(validity).unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["driftwarden-webhook.driftwarden-system.svc".into()]
    }

    #[test]
    fn a_fresh_secret_is_usable_and_keeps_its_ca_on_renewal() {
        let now = Timestamp::now();
        let secret = issue("tls", "ns", &names(), None).unwrap();
        let tls = usable(&secret, &names(), now).expect("fresh certificate is usable");
        assert!(tls.cert_pem.contains("BEGIN CERTIFICATE"));
        assert!(!format!("{tls:?}").contains("PRIVATE KEY"));

        // Close to expiry: not usable, but the CA is reused for the next one.
        let later = now.checked_add(SERVING_VALIDITY - Duration::from_secs(3600)).unwrap();
        assert!(usable(&secret, &names(), later).is_none());
        let (ca, _) = reusable_ca(&secret, later).expect("CA still has years left");
        let renewed = issue("tls", "ns", &names(), Some((ca, now.checked_add(CA_VALIDITY).unwrap()))).unwrap();
        assert_eq!(field(&renewed, "ca.crt"), field(&secret, "ca.crt"));
        assert_ne!(field(&renewed, "tls.crt"), field(&secret, "tls.crt"));
    }

    #[test]
    fn a_certificate_for_other_names_is_not_used() {
        let secret = issue("tls", "ns", &names(), None).unwrap();
        assert!(usable(&secret, &["127.0.0.1".to_string()], Timestamp::now()).is_none());
    }
}
