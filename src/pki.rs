//! A small certificate authority: the local control plane uses it for the
//! API server's serving certificate, and the operator's webhook server will
//! use it for its own TLS. Pure: keys and certificates are returned as PEM.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};

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
    /// A new CA with a fresh ECDSA P-256 key.
    pub fn generate(common_name: &str) -> Result<Self, Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
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
        let mut params = CertificateParams::new(Vec::<String>::new())?;
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
    fn rejects_a_name_that_is_neither_ip_nor_dns() {
        let ca = CertificateAuthority::generate("test-ca").unwrap();
        assert!(ca.issue_server("x", &["bücher.example"]).is_err());
    }
}
