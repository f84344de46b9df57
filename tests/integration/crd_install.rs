use std::time::Duration;

use driftwarden::api::{AccessRequest, GROUP, VERSION};
use driftwarden_dev::controlplane::User;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};

use crate::support::{TestEnv, access_request, eventually, output};

#[tokio::test]
async fn crds_install_idempotently_and_become_established() {
    let env = TestEnv::new("crds-established").await;
    // The harness installed them once already; installing again must be a no-op.
    driftwarden::operator::crds::install(&env.admin, Duration::from_secs(60)).await.unwrap();

    let crds: Api<CustomResourceDefinition> = Api::all(env.admin.clone());
    for crd in driftwarden::api::crds() {
        let name = crd.metadata.name.unwrap();
        let live = crds.get(&name).await.unwrap();
        let conditions = live.status.and_then(|s| s.conditions).unwrap_or_default();
        assert!(conditions.iter().any(|c| c.type_ == "Established" && c.status == "True"), "{name} is not Established");
    }

    // Every kind is served, for any authenticated user (discovery).
    let alice = env.client(User::Alice).await;
    let served = alice.list_api_group_resources(&format!("{GROUP}/{VERSION}")).await.unwrap();
    let mut kinds: Vec<_> = served.resources.iter().filter(|r| !r.name.contains('/')).map(|r| r.kind.clone()).collect();
    kinds.sort();
    assert_eq!(kinds, ["AccessPolicy", "AccessRequest", "AccessReview", "DesiredState", "Notifier", "PublisherKey"]);
}

#[tokio::test]
async fn kubectl_get_accessrequests_shows_the_printer_columns() {
    let env = TestEnv::new("printer-columns").await;
    let api = env.raw_api::<AccessRequest>(User::Admin).await;
    let request = access_request("db-hotfix", Some("admin"), "edit", "30m", "incident INC-1234: hotfix the orders db");
    api.create(&PostParams::default(), &request).await.unwrap();

    let mut kubectl = env.kubectl(User::Admin);
    kubectl.args(["get", "accessrequests"]);
    let table = output(kubectl);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "REQUESTER", "ROLE", "PHASE", "EXPIRES", "AGE"]);
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(&row[..3], ["db-hotfix", "admin", "edit"]);

    // The short name works too.
    let mut kubectl = env.kubectl(User::Admin);
    kubectl.args(["get", "areq", "--output=name"]);
    assert_eq!(output(kubectl).trim(), "accessrequest.driftwarden.io/db-hotfix");
}

#[tokio::test]
async fn kubectl_explain_shows_the_field_descriptions() {
    let env = TestEnv::new("explain").await;
    // The API server publishes a new CRD's OpenAPI a moment after it is Established.
    let explained = eventually(Duration::from_secs(30), || async {
        let mut kubectl = env.kubectl(User::Alice);
        kubectl.args(["explain", "accessrequest.spec.duration"]);
        let out = kubectl.output().unwrap();
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    })
    .await
    .expect("kubectl explain never found accessrequests");
    assert!(explained.contains("How long the access lasts once granted"), "{explained}");

    let mut kubectl = env.kubectl(User::Alice);
    kubectl.args(["explain", "desiredstate.spec.remediation"]);
    assert!(output(kubectl).contains("unauthorized"));
}
