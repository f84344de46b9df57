//! A small certificate authority: the local control plane uses it for the
//! API server's serving certificate, and the operator's webhook server will
//! use it for its own TLS. Pure: keys and certificates are returned as PEM.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};

use time::OffsetDateTime;

pub use rcgen::Error;

/// A certificate and its private key, both PEM-encoded.
#[derive(Clone)]
pub struct KeyedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

// Private keys must never end up in logs, even through `{:?}`.
impl std::fmt::Debug for KeyedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedCert").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

/// A self-signed CA that issues leaf certificates.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert: KeyedCert,
}

impl CertificateAuthority {
    /// A new CA with a fresh ECDSA P-256 key that never expires (for
    /// throwaway test clusters).
    pub fn generate(common_name: &str) -> Result<Self, Error> {
        Self::generate_params(common_name, CertificateParams::new(Vec::<String>::new())?)
    }

    /// A new CA valid from now for `validity`.
    pub fn generate_valid_for(common_name: &str, validity: Duration) -> Result<Self, Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        (params.not_before, params.not_after) = validity_from_now(validity);
        Self::generate_params(common_name, params)
    }

    /// A CA from its certificate and key, e.g. as stored in a Secret.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, Error> {
        let issuer = Issuer::from_ca_cert_pem(cert_pem, KeyPair::from_pem(key_pem)?)?;
        let cert = KeyedCert { cert_pem: cert_pem.to_owned(), key_pem: key_pem.to_owned() };
        Ok(Self { issuer, cert })
    }

    fn generate_params(common_name: &str, mut params: CertificateParams) -> Result<Self, Error> {
        let key = KeyPair::generate()?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key)?;
        let keyed = KeyedCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() };
        Ok(Self { issuer: Issuer::new(params, key), cert: keyed })
    }

    /// The CA certificate, PEM-encoded (what clients trust).
    pub fn cert_pem(&self) -> &str {
        &self.cert.cert_pem
    }

    /// The CA certificate and key.
    pub fn keyed_cert(&self) -> &KeyedCert {
        &self.cert
    }

    /// A serving certificate for the given DNS names and IP addresses.
    pub fn issue_server(&self, common_name: &str, names: &[&str]) -> Result<KeyedCert, Error> {
        self.issue_server_params(common_name, names, CertificateParams::new(Vec::<String>::new())?)
    }

    /// A serving certificate valid from now for `validity`.
    pub fn issue_server_valid_for(
        &self,
        common_name: &str,
        names: &[&str],
        validity: Duration,
    ) -> Result<KeyedCert, Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        (params.not_before, params.not_after) = validity_from_now(validity);
        self.issue_server_params(common_name, names, params)
    }

    fn issue_server_params(
        &self,
        common_name: &str,
        names: &[&str],
        mut params: CertificateParams,
    ) -> Result<KeyedCert, Error> {
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.subject_alt_names = names
            .iter()
            .map(|name| match name.parse() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName((*name).try_into()?)),
            })
            .collect::<Result<_, Error>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate; Kubernetes reads the user from the common name
    /// and the groups from the organizations.
    pub fn issue_client(&self, common_name: &str, organizations: &[&str]) -> Result<KeyedCert, Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        for org in organizations {
            params.distinguished_name.push(DnType::OrganizationName, *org);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    fn issue(&self, mut params: CertificateParams) -> Result<KeyedCert, Error> {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(KeyedCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

// Backdated a little, so a peer whose clock runs slightly behind accepts it.
fn validity_from_now(validity: Duration) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (now - Duration::from_secs(300), now + validity)
}

/// A fresh ECDSA P-256 key pair as `(private PKCS#8 PEM, public PEM)`, e.g.
/// for signing and verifying service-account tokens.
pub fn generate_key_pair_pem() -> Result<(String, String), Error> {
    let key = KeyPair::generate()?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_are_pem_and_keys_stay_out_of_debug_output() {
        let ca = CertificateAuthority::generate("test-ca").unwrap();
        let server = ca.issue_server("apiserver", &["127.0.0.1", "localhost"]).unwrap();
        let client = ca.issue_client("alice", &["dev"]).unwrap();
        for cert in [ca.keyed_cert(), &server, &client] {
            assert!(cert.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
            assert!(cert.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
            assert!(!format!("{cert:?}").contains("PRIVATE KEY"));
        }
    }

    #[test]
    fn a_ca_survives_a_round_trip_through_pem() {
        let ca = CertificateAuthority::generate_valid_for("ca", Duration::from_secs(3600)).unwrap();
        let again = CertificateAuthority::from_pem(&ca.keyed_cert().cert_pem, &ca.keyed_cert().key_pem).unwrap();
        let leaf = again.issue_server_valid_for("svc", &["svc.ns.svc"], Duration::from_secs(60)).unwrap();
        assert!(leaf.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(again.cert_pem(), ca.cert_pem());
    }

    #[test]
    fn rejects_a_name_that_is_neither_ip_nor_dns() {
        let ca = CertificateAuthority::generate("test-ca").unwrap();
        assert!(ca.issue_server("x", &["bücher.example"]).is_err());
    }
}
