//! Command lines for etcd, kube-apiserver and kube-controller-manager, and
//! the audit files the API server reads. Pure: paths and ports in, arguments
//! out, so what the control plane runs can be read and tested on its own.

use std::path::{Path, PathBuf};

/// Files and ports one control plane uses.
#[derive(Clone, Debug)]
pub struct Layout {
    pub dir: PathBuf,
    pub etcd_client_port: u16,
    pub etcd_peer_port: u16,
    pub apiserver_port: u16,
    /// With a node: the host's address, at which its Pods reach the API
    /// server (the `kubernetes` Service's endpoint).
    pub node_address: Option<std::net::Ipv4Addr>,
}

impl Layout {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.apiserver_port)
    }
    fn etcd_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.etcd_client_port)
    }
}

fn s(path: impl AsRef<Path>) -> String {
    path.as_ref().display().to_string()
}

/// etcd on loopback. fsync is off: the data is thrown away with the test run,
/// and fsync dominates start-up and write latency on small test machines.
pub fn etcd(layout: &Layout) -> Vec<String> {
    let peer = format!("http://127.0.0.1:{}", layout.etcd_peer_port);
    vec![
        "--name=default".into(),
        format!("--data-dir={}", s(layout.path("etcd-data"))),
        format!("--listen-client-urls={}", layout.etcd_url()),
        format!("--advertise-client-urls={}", layout.etcd_url()),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=default={peer}"),
        "--unsafe-no-fsync=true".into(),
        "--log-level=warn".into(),
    ]
}

/// Where the API server sends audit events, if anywhere.
#[derive(Clone, Debug)]
pub struct AuditWebhook {
    /// HTTPS URL of the receiver, e.g. `https://127.0.0.1:9443/audit`.
    pub url: String,
    /// CA that signed the receiver's serving certificate.
    pub ca_file: PathBuf,
    /// Bearer token the API server presents to the receiver.
    pub token: String,
}

/// kube-apiserver with RBAC, static tokens and service-account tokens.
pub fn apiserver(layout: &Layout, audit: Option<&AuditWebhook>) -> Vec<String> {
    let mut args = vec![
        format!("--etcd-servers={}", layout.etcd_url()),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        format!("--secure-port={}", layout.apiserver_port),
        format!("--tls-cert-file={}", s(layout.path("apiserver.crt"))),
        format!("--tls-private-key-file={}", s(layout.path("apiserver.key"))),
        format!("--client-ca-file={}", s(layout.path("ca.crt"))),
        format!("--token-auth-file={}", s(layout.path("tokens.csv"))),
        "--authorization-mode=RBAC".into(),
        "--anonymous-auth=false".into(),
        format!("--service-account-key-file={}", s(layout.path("sa.pub"))),
        format!("--service-account-signing-key-file={}", s(layout.path("sa.key"))),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        "--service-cluster-ip-range=10.96.0.0/16".into(),
        "--allow-privileged=true".into(),
        "--profiling=false".into(),
        "--v=0".into(),
    ];
    if let Some(address) = layout.node_address {
        // Pods reach it at the host's address (loopback is theirs, not
        // ours); the kubelet's credentials are limited to its own node's
        // objects; webhook Services are called at their Pods' addresses,
        // so no kube-proxy is needed for admission.
        args.retain(|a| !a.starts_with("--bind-address") && !a.starts_with("--advertise-address"));
        args.retain(|a| !a.starts_with("--authorization-mode"));
        args.extend([
            "--bind-address=0.0.0.0".into(),
            format!("--advertise-address={address}"),
            "--authorization-mode=Node,RBAC".into(),
            "--enable-admission-plugins=NodeRestriction".into(),
            "--enable-aggregator-routing=true".into(),
            format!("--kubelet-client-certificate={}", s(layout.path("apiserver-kubelet-client.crt"))),
            format!("--kubelet-client-key={}", s(layout.path("apiserver-kubelet-client.key"))),
            "--kubelet-preferred-address-types=InternalIP".into(),
        ]);
    }
    if audit.is_some() {
        args.push(format!("--audit-policy-file={}", s(layout.path("audit-policy.yaml"))));
        args.push(format!("--audit-webhook-config-file={}", s(layout.path("audit-webhook.kubeconfig"))));
        args.push("--audit-webhook-mode=batch".into());
        args.push("--audit-webhook-batch-max-wait=1s".into());
    }
    args
}

/// The controllers the tests rely on: garbage collection of owned objects,
/// the root CA ConfigMap, Deployments, ReplicaSets and Jobs making what
/// they make (Pods stay Pending: there is no kubelet),
/// namespace deletion, default service accounts with their tokens, and the
/// aggregation that fills the built-in `admin`/`edit`/`view` ClusterRoles,
/// and ResourceQuota usage (a quota refuses a write after every admission
/// webhook allowed it: the write log's test of a refused write).
pub const CONTROLLERS: &str = "garbage-collector-controller,namespace-controller,serviceaccount-controller,\
root-ca-certificate-publisher-controller,deployment-controller,replicaset-controller,job-controller,\
serviceaccount-token-controller,clusterrole-aggregation-controller,resourcequota-controller";

/// With a node, also: Services get endpoints (the webhooks' and the
/// `kubernetes` one), the node's health is tracked, and Pods on a node that
/// is gone are collected.
pub const NODE_CONTROLLERS: &str = "endpoints-controller,endpointslice-controller,endpointslice-mirroring-controller,\
node-lifecycle-controller,pod-garbage-collector-controller,ttl-controller,taint-eviction-controller,\
disruption-controller";

/// kube-controller-manager with just [`CONTROLLERS`] (and [`NODE_CONTROLLERS`]).
pub fn controller_manager(layout: &Layout) -> Vec<String> {
    let controllers = match layout.node_address {
        Some(_) => format!("{CONTROLLERS},{NODE_CONTROLLERS}"),
        None => CONTROLLERS.to_owned(),
    };
    vec![
        format!("--kubeconfig={}", s(layout.path("kube-controller-manager.kubeconfig"))),
        format!("--controllers={controllers}"),
        format!("--service-account-private-key-file={}", s(layout.path("sa.key"))),
        format!("--root-ca-file={}", s(layout.path("ca.crt"))),
        "--use-service-account-credentials=false".into(),
        "--leader-elect=false".into(),
        // Tests and benches create thousands of Deployments: at the default
        // 20 QPS the ReplicaSets and Pods they make trail for minutes.
        "--kube-api-qps=300".into(),
        "--kube-api-burst=600".into(),
        "--secure-port=0".into(),
        "--v=0".into(),
    ]
}

/// The audit policy: metadata and request bodies of writes, never bodies of
/// Secrets (or anything else that carries credentials), nothing for reads.
pub const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  resources:
  - group: \"\"
    resources: [secrets, serviceaccounts/token]
  - group: authentication.k8s.io
    resources: [tokenreviews]
- level: Metadata
  resources:
  - group: \"\"
    resources: [pods/exec, pods/attach, pods/portforward]
- level: Request
  verbs: [create, update, patch, delete, deletecollection]
- level: None
";

/// The kubeconfig-format file that tells the API server where to send
/// audit events and which token to present.
pub fn audit_webhook_kubeconfig(audit: &AuditWebhook) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: audit
  cluster:
    server: {}
    certificate-authority: {}
users:
- name: apiserver
  user:
    token: {}
contexts:
- name: audit
  context: {{cluster: audit, user: apiserver}}
current-context: audit
",
        audit.url,
        s(&audit.ca_file),
        audit.token
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            dir: "/cp".into(),
            etcd_client_port: 2379,
            etcd_peer_port: 2380,
            apiserver_port: 6443,
            node_address: None,
        }
    }

    #[test]
    fn apiserver_points_at_etcd_and_enforces_rbac() {
        let args = apiserver(&layout(), None);
        for expected in [
            "--etcd-servers=http://127.0.0.1:2379",
            "--secure-port=6443",
            "--authorization-mode=RBAC",
            "--anonymous-auth=false",
            "--token-auth-file=/cp/tokens.csv",
        ] {
            assert!(args.iter().any(|a| a == expected), "missing {expected}");
        }
        assert!(!args.iter().any(|a| a.starts_with("--audit")));
    }

    #[test]
    fn audit_flags_only_when_a_receiver_is_configured() {
        let audit = AuditWebhook {
            url: "https://127.0.0.1:9443/audit".into(),
            ca_file: "/cp/ca.crt".into(),
            token: "t".into(),
        };
        let args = apiserver(&layout(), Some(&audit));
        assert!(args.contains(&"--audit-webhook-config-file=/cp/audit-webhook.kubeconfig".to_string()));
        assert!(args.contains(&"--audit-webhook-mode=batch".to_string()));
        let config: kube::config::Kubeconfig = serde_yaml_ng::from_str(&audit_webhook_kubeconfig(&audit)).unwrap();
        assert_eq!(config.clusters[0].cluster.as_ref().unwrap().server.as_deref(), Some(audit.url.as_str()));
    }

    #[test]
    fn audit_policy_never_records_secret_bodies() {
        let policy: serde_json::Value = serde_yaml_ng::from_str(AUDIT_POLICY).unwrap();
        let first = &policy["rules"][0];
        assert_eq!(first["level"], "Metadata");
        assert_eq!(first["resources"][0]["resources"][0], "secrets");
    }

    #[test]
    fn controller_manager_runs_only_the_controllers_tests_need() {
        let args = controller_manager(&layout());
        assert!(args.contains(&format!("--controllers={CONTROLLERS}")));
        assert!(args.contains(&"--leader-elect=false".to_string()));
        assert!(args.contains(&"--kube-api-qps=300".to_string()));
    }
}
