//! The fixed cast of users the local control plane authenticates by static
//! token: an admin, two developers, two SREs and an outsider. Tests and the
//! quickstart use them to act as different people.

use std::fmt::Write as _;

/// A user of the local control plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum User {
    /// Member of `system:masters`: may do anything.
    Admin,
    /// Developer (group `dev`).
    Alice,
    /// Developer (group `dev`).
    Bob,
    /// Site reliability engineer (group `sre`).
    Carol,
    /// Site reliability engineer (group `sre`).
    Dave,
    /// Authenticated, but in no group: RBAC grants nothing.
    Mallory,
    /// The controller manager's own identity (`system:masters`); not for tests.
    ControllerManager,
    /// The node's kubelet (`system:node:<name>`, group `system:nodes`: the
    /// Node authorizer limits it to its own node's Pods); not for tests.
    Kubelet,
    /// kube-scheduler, bound by the built-in `system:kube-scheduler` role.
    Scheduler,
    /// kube-proxy, bound by the built-in `system:node-proxier` role.
    Proxy,
}

impl User {
    /// Everyone the token file lists.
    pub const ALL: [User; 10] = [
        User::Admin,
        User::Alice,
        User::Bob,
        User::Carol,
        User::Dave,
        User::Mallory,
        User::ControllerManager,
        User::Kubelet,
        User::Scheduler,
        User::Proxy,
    ];

    /// The user name the API server authenticates.
    pub fn name(self) -> &'static str {
        match self {
            User::Admin => "admin",
            User::Alice => "alice",
            User::Bob => "bob",
            User::Carol => "carol",
            User::Dave => "dave",
            User::Mallory => "mallory",
            User::ControllerManager => "system:kube-controller-manager",
            User::Kubelet => "system:node:driftwarden-node",
            User::Scheduler => "system:kube-scheduler",
            User::Proxy => "system:kube-proxy",
        }
    }

    /// The groups the API server reports for the user (besides
    /// `system:authenticated`, which it adds itself).
    pub fn groups(self) -> &'static [&'static str] {
        match self {
            User::Admin | User::ControllerManager => &["system:masters"],
            User::Alice | User::Bob => &["dev"],
            User::Carol | User::Dave => &["sre"],
            User::Mallory | User::Scheduler | User::Proxy => &[],
            User::Kubelet => &["system:nodes"],
        }
    }

    /// A file-name-safe short name.
    pub fn file_stem(self) -> &'static str {
        match self {
            User::ControllerManager => "kube-controller-manager",
            User::Kubelet => "kubelet",
            User::Scheduler => "kube-scheduler",
            User::Proxy => "kube-proxy",
            other => other.name(),
        }
    }
}

/// The API server's `--token-auth-file`: `token,user,uid,"group1,group2"`.
pub fn token_file(tokens: &[(User, String)]) -> String {
    let mut out = String::new();
    for (user, token) in tokens {
        let _ = write!(out, "{token},{},{}", user.name(), user.file_stem());
        if !user.groups().is_empty() {
            let _ = write!(out, ",\"{}\"", user.groups().join(","));
        }
        out.push('\n');
    }
    out
}

/// A kubeconfig that reaches `server` as the user with `token`, trusting the
/// CA in `ca_file`.
pub fn kubeconfig(server: &str, ca_file: &str, user: User, token: &str) -> String {
    kubeconfig_for(server, ca_file, user.file_stem(), token)
}

/// A kubeconfig for any named credential.
pub fn kubeconfig_for(server: &str, ca_file: &str, name: &str, token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: driftwarden-local
  cluster:
    server: {server}
    certificate-authority: {ca_file}
users:
- name: {name}
  user:
    token: {token}
contexts:
- name: {name}@driftwarden-local
  context:
    cluster: driftwarden-local
    user: {name}
current-context: {name}@driftwarden-local
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_lists_groups_quoted_and_omits_them_for_mallory() {
        let file = token_file(&[(User::Admin, "t1".into()), (User::Alice, "t2".into()), (User::Mallory, "t3".into())]);
        assert_eq!(file, "t1,admin,admin,\"system:masters\"\nt2,alice,alice,\"dev\"\nt3,mallory,mallory\n");
    }

    #[test]
    fn kubeconfig_parses_and_names_the_user() {
        let text = kubeconfig("https://127.0.0.1:6443", "/tmp/ca.crt", User::Carol, "secret");
        let parsed: kube::config::Kubeconfig = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(parsed.current_context.as_deref(), Some("carol@driftwarden-local"));
        assert_eq!(parsed.auth_infos[0].name, "carol");
    }
}
