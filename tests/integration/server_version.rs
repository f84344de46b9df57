use driftwarden_dev::controlplane::{KUBERNETES_VERSION, User};

use crate::support::{control_plane, output};

#[tokio::test]
async fn kubectl_version_reports_the_pinned_server_version() {
    let cp = control_plane();
    let mut kubectl = cp.kubectl(User::Admin);
    kubectl.args(["version", "--output=json"]);
    let version: serde_json::Value = serde_json::from_str(&output(kubectl)).unwrap();
    assert_eq!(version["serverVersion"]["gitVersion"], KUBERNETES_VERSION);
    assert_eq!(version["clientVersion"]["gitVersion"], KUBERNETES_VERSION);

    let client = cp.client(User::Alice).await.unwrap();
    assert_eq!(client.apiserver_version().await.unwrap().git_version, KUBERNETES_VERSION);
}
