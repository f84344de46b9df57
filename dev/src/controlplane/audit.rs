//! Wiring the API server's audit webhook to the operator on a local control
//! plane. The API server reads its audit configuration once, at start, so
//! the operator's webhook certificate (and the CA the API server trusts)
//! and the bearer token are made first; the operator then finds them in the
//! Secrets it would use in a cluster.

use std::path::Path;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};

use super::AuditWebhook;
use driftwarden::pki::CertificateAuthority;
use driftwarden::webhook::{AUDIT_PATH, Endpoint, tls};

/// The Secret that holds the webhook server's certificate (the operator's default).
pub const WEBHOOK_SECRET: &str = "driftwarden-webhook-tls";
/// The Secret whose token the API server's audit webhook presents (the operator's default).
pub const AUDIT_SECRET: &str = "driftwarden-audit";

/// What the API server needs before it starts, and the Secrets the operator
/// needs after.
pub struct AuditWiring {
    pub webhook: AuditWebhook,
    tls_secret: Secret,
}

impl AuditWiring {
    /// For an operator serving webhooks at `webhook_url` (e.g.
    /// `https://127.0.0.1:9443`); writes the CA to `dir/webhook-ca.crt`.
    pub fn prepare(webhook_url: &str, namespace: &str, dir: &Path) -> anyhow::Result<Self> {
        let ca = CertificateAuthority::generate("driftwarden-webhook-ca")?;
        std::fs::create_dir_all(dir)?;
        let ca_file = dir.join("webhook-ca.crt");
        std::fs::write(&ca_file, ca.cert_pem())?;
        let names = Endpoint::Url(webhook_url.to_owned()).tls_names();
        let tls_secret = tls::issue_with_ca(WEBHOOK_SECRET, namespace, &names, ca)?;
        let webhook = AuditWebhook {
            url: format!("{}{AUDIT_PATH}", webhook_url.trim_end_matches('/')),
            ca_file,
            token: super::random_token()?,
        };
        Ok(Self { webhook, tls_secret })
    }

    /// Stores the certificate and the token in `namespace` (created if
    /// missing), as an admin.
    pub async fn install(&self, admin: &Client, namespace: &str) -> anyhow::Result<()> {
        let params = PatchParams::apply("driftwarden-harness").force();
        let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
        Api::<Namespace>::all(admin.clone()).patch(namespace, &params, &Patch::Apply(ns)).await?;
        let secrets: Api<Secret> = Api::namespaced(admin.clone(), namespace);
        let mut tls = serde_json::to_value(&self.tls_secret)?;
        tls["apiVersion"] = "v1".into();
        tls["kind"] = "Secret".into();
        secrets.patch(WEBHOOK_SECRET, &params, &Patch::Apply(tls)).await?;
        let token = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": AUDIT_SECRET},
                                       "stringData": {"token": self.webhook.token}});
        secrets.patch(AUDIT_SECRET, &params, &Patch::Apply(token)).await?;
        Ok(())
    }
}
