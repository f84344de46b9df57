//! The chart for real: the operator image built without a daemon, imported
//! into a real node's containerd, `helm install` with the chart's defaults,
//! and the Deployment's two Pods doing the job: probes, the webhooks behind
//! the Service, an access cycle, leader failover, an upgrade, an uninstall.
//! Figures are printed (docs/BENCHMARKS.md has them), never asserted.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use driftwarden::api::{AccessPhase, AccessRequest};
use driftwarden_dev::controlplane::{self, ControlPlane, User};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use serde_json::json;

use super::{chart, helm};
use crate::support::{access_request, eventually, output, required};

const RELEASE: &str = "driftwarden";
const NAMESPACE: &str = "driftwarden-system";
/// The name the chart's defaults run (`image.repository:appVersion`).
const IMAGE: &str = "ghcr.io/driftwarden/driftwarden:0.1.0";

/// `dev/image/build.sh`: the image archive, built or found in its cache.
fn image_archive() -> Result<PathBuf, String> {
    let script = super::repo_path("dev/image/build.sh");
    let out =
        Command::new("bash").arg(&script).stderr(std::process::Stdio::inherit()).output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("{} exited with {}", script.display(), out.status));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    Ok(PathBuf::from(stdout.lines().last().unwrap_or_default().trim()))
}

fn kubectl(cp: &ControlPlane, args: &[&str]) -> String {
    let mut command = cp.kubectl(User::Admin);
    command.args(args);
    output(command)
}

/// The operator Pods' last log lines, for a failure's message.
fn operator_logs(cp: &ControlPlane) -> String {
    let mut command = cp.kubectl(User::Admin);
    command.args([
        "logs",
        "--namespace",
        NAMESPACE,
        "--selector=app.kubernetes.io/name=driftwarden",
        "--tail=40",
        "--prefix",
    ]);
    command.output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
}

fn helm_at(cp: &ControlPlane, args: &[&str]) -> String {
    let mut command = helm();
    command.args(args).arg("--kubeconfig").arg(cp.kubeconfig(User::Admin));
    output(command)
}

async fn ready_replicas(deployments: &Api<Deployment>, name: &str) -> i32 {
    let deployment = deployments.get(name).await.unwrap();
    deployment.status.and_then(|s| s.ready_replicas).unwrap_or(0)
}

/// Whether both replicas are Ready within `timeout`.
async fn both_ready(deployments: &Api<Deployment>, timeout: Duration) -> bool {
    eventually(timeout, || async { (ready_replicas(deployments, RELEASE).await == 2).then_some(()) }).await.is_some()
}

async fn lease_holder(leases: &Api<Lease>) -> Option<String> {
    leases.get_opt(RELEASE).await.ok().flatten()?.spec?.holder_identity
}

/// Creates an AccessRequest by server-side dry run (the webhooks answer,
/// nothing is stored): Ok if admitted, the refusal otherwise.
async fn admitted(requests: &Api<DynamicObject>, name: &str) -> Result<(), String> {
    let request = access_request(name, None, "edit", "20s", "INC-7: probe the webhooks");
    let params = PostParams { dry_run: true, ..Default::default() };
    requests.create(&params, &request).await.map(|_| ()).map_err(|e| e.to_string())
}

#[tokio::test]
async fn the_chart_runs_the_operator_as_pods_on_a_real_node() {
    // SAFETY: a plain syscall.
    let root = unsafe { libc::geteuid() } == 0;
    let how = "run as root on Linux with apt (Debian's containerd, runc, CNI plugins, nftables, buildah)";
    if required("a real node", if root { Ok(()) } else { Err("not root".to_owned()) }, how).is_none() {
        return;
    }
    let started = Instant::now();
    let Some(archive) = required("the operator image", image_archive(), "bash dev/image/build.sh") else { return };
    let image_time = started.elapsed();

    let started = Instant::now();
    let options = controlplane::Options { controller_manager: true, node: true, ..Default::default() };
    let cp = ControlPlane::start(options).await.unwrap_or_else(|e| panic!("the control plane with a node: {e}"));
    let node_time = started.elapsed();
    let node = cp.node().expect("a node");
    node.import_image(&archive).unwrap();
    let admin = cp.client(User::Admin).await.unwrap();

    // helm install with the chart's defaults, plus the example policy for
    // the access cycle below.
    let started = Instant::now();
    let installed = helm_at(
        &cp,
        &[
            "install",
            RELEASE,
            &chart().display().to_string(),
            "--namespace",
            NAMESPACE,
            "--create-namespace",
            "--set",
            "examplePolicy.enabled=true",
        ],
    );
    assert!(installed.contains("STATUS: deployed"), "{installed}");
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), NAMESPACE);
    let ready = both_ready(&deployments, Duration::from_secs(180)).await;
    assert!(
        ready,
        "both replicas did not become Ready through their probes:\n{}\nkubelet log: {}",
        kubectl(&cp, &["describe", "pods", "--namespace", NAMESPACE]),
        node.log_file("kubelet").display()
    );
    let install_time = started.elapsed();

    let shop = "shop";
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    let namespace: Namespace = serde_json::from_value(json!({
        "metadata": {"name": shop, "labels": {"driftwarden.io/access": "enabled"}}
    }))
    .unwrap();
    namespaces.create(&PostParams::default(), &namespace).await.unwrap();
    // Developers may ask there, SREs may answer (the quickstart's RBAC).
    kubectl(&cp, &["apply", "-f", &super::repo_path("examples/platform/rbac.yaml").display().to_string()]);

    // The webhooks answer through the Service (they fail closed: a request
    // nobody answered would be refused).
    let alice: Api<DynamicObject> = Api::namespaced_with(cp.client(User::Alice).await.unwrap(), shop, &ar());
    let webhooks_answer = eventually(Duration::from_secs(60), || async { admitted(&alice, "probe").await.ok() }).await;
    assert!(webhooks_answer.is_some(), "the webhooks never admitted: {:?}", admitted(&alice, "probe").await);

    // An access cycle: Alice asks, Carol approves, the operator binds the
    // role in Alice's namespace and removes the binding when the window ends.
    alice
        .create(&PostParams::default(), &access_request("fix", None, "edit", "20s", "INC-7: roll back"))
        .await
        .unwrap();
    let carol: Api<DynamicObject> = Api::namespaced_with(cp.client(User::Carol).await.unwrap(), shop, &review());
    let approval: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "driftwarden.io/v1alpha1", "kind": "AccessReview", "metadata": {"name": "fix-carol"},
        "spec": {"accessRequest": "fix", "decision": "Approve", "reason": "checked the incident"},
    }))
    .unwrap();
    carol.create(&PostParams::default(), &approval).await.unwrap();
    let phase = |want: AccessPhase| {
        let api: Api<AccessRequest> = Api::namespaced(admin.clone(), shop);
        async move {
            eventually(Duration::from_secs(90), || async {
                (api.get("fix").await.ok()?.status?.phase? == want).then_some(())
            })
            .await
        }
    };
    assert!(phase(AccessPhase::Active).await.is_some(), "the request never became Active");
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), shop);
    let grants = || async {
        let all = bindings.list(&ListParams::default()).await.unwrap().items;
        all.into_iter().filter(|b| b.role_ref.name == "edit").count()
    };
    assert_eq!(grants().await, 1, "no RoleBinding to edit for the window");
    assert!(phase(AccessPhase::Expired).await.is_some(), "the request never expired");
    let left = eventually(Duration::from_secs(30), || async { (grants().await == 0).then_some(()) }).await;
    assert!(left.is_some(), "the RoleBinding outlived the window");

    // An unauthorized change is reverted: the shop's Service, declared in a
    // source signed with a key the cluster trusts, edited with no session.
    let work = tempfile::tempdir().unwrap();
    let mut keygen = Command::new(env!("CARGO_BIN_EXE_driftwarden"));
    keygen.args(["keygen", "--out"]).arg(work.path().join("ci"));
    std::fs::write(work.path().join("publisher-key.yaml"), output(keygen)).unwrap();
    kubectl(&cp, &["apply", "-f", &work.path().join("publisher-key.yaml").display().to_string()]);
    let manifests = work.path().join("deploy");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(
        manifests.join("service.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  selector:\n    app: web\n  ports:\n  - port: 80\n    targetPort: 8080\n",
    )
    .unwrap();
    kubectl(&cp, &["apply", "-f", &manifests.join("service.yaml").display().to_string()]);
    let mut publish = Command::new(env!("CARGO_BIN_EXE_driftwarden"));
    publish
        .args(["publish"])
        .arg(&manifests)
        .args(["--configmap", "shop-state", "--namespace", shop, "--revision", "e2e-1", "--signing-key"])
        .arg(work.path().join("ci.key"))
        .env("KUBECONFIG", cp.kubeconfig(User::Admin));
    output(publish);
    let desired: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "driftwarden.io/v1alpha1", "kind": "DesiredState", "metadata": {"name": "shop"},
        "spec": {"sources": [{"name": "shop-state"}], "remediation": {"unauthorized": "Revert", "windowEnd": "Revert"}},
    }))
    .unwrap();
    let desired_states: Api<DynamicObject> = Api::namespaced_with(admin.clone(), shop, &desired_state());
    desired_states.create(&PostParams::default(), &desired).await.unwrap();
    let synced = eventually(Duration::from_secs(60), || async {
        let state = desired_states.get("shop").await.ok()?;
        let conditions = state.data["status"]["conditions"].as_array()?.clone();
        conditions.iter().any(|c| c["type"] == "Ready" && c["status"] == "True").then_some(())
    })
    .await;
    assert!(synced.is_some(), "the DesiredState never became Ready: {:?}", desired_states.get("shop").await);
    let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(admin.clone(), shop);
    let port = || async {
        let service = services.get("web").await.unwrap();
        let target = service.spec.and_then(|s| s.ports).and_then(|p| p.first().and_then(|p| p.target_port.clone()));
        target.map(|t| match t {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(port) => port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(_) => -1,
        })
    };
    let patch = json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}});
    services.patch("web", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await.unwrap();
    let started = Instant::now();
    let reverted = eventually(Duration::from_secs(30), || async { (port().await == Some(8080)).then_some(()) }).await;
    let revert_time = started.elapsed();
    assert!(
        reverted.is_some(),
        "the unauthorized change was not reverted: port {:?}\n{}\n{}",
        port().await,
        kubectl(&cp, &["get", "desiredstate", "shop", "--namespace", shop, "--output=yaml"]),
        operator_logs(&cp)
    );

    // Failover: delete the leader's Pod; the other replica takes the Lease.
    let leases: Api<Lease> = Api::namespaced(admin.clone(), NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NAMESPACE);
    let leader = eventually(Duration::from_secs(60), || lease_holder(&leases)).await.expect("a leader");
    let started = Instant::now();
    pods.delete(&leader, &DeleteParams::default()).await.unwrap();
    let next = eventually(Duration::from_secs(60), || async {
        lease_holder(&leases).await.filter(|holder| *holder != leader)
    })
    .await;
    let failover_time = started.elapsed();
    assert!(next.is_some(), "no replica took over from {leader}");

    // A crash of the leader (SIGKILL, no handover): the kubelet restarts
    // the container, which leads again under the same identity, or the
    // other replica takes over once the Lease runs out.
    assert!(both_ready(&deployments, Duration::from_secs(120)).await, "the replicas did not both come back");
    let leader = eventually(Duration::from_secs(60), || lease_holder(&leases)).await.expect("a leader");
    let pod = pods.get(&leader).await.unwrap();
    let container = pod.status.and_then(|s| s.container_statuses).and_then(|c| c.first()?.container_id.clone());
    let renewed = |lease: Option<Lease>| lease.and_then(|l| l.spec?.renew_time).map(|t| t.0);
    let killed_at = jiff_now();
    let started = Instant::now();
    node.kill_container(&container.expect("the leader's container id")).unwrap();
    let led_again = eventually(Duration::from_secs(60), || async {
        let renewed = renewed(leases.get_opt(RELEASE).await.ok().flatten())?;
        (renewed > killed_at + std::time::Duration::from_secs(1)).then_some(())
    })
    .await;
    let crash_time = started.elapsed();
    assert!(led_again.is_some(), "nobody led after the leader was killed");

    // A drain of the node: the PodDisruptionBudget lets one replica go and
    // holds the other (its replacement cannot schedule on a cordoned node).
    assert!(both_ready(&deployments, Duration::from_secs(120)).await, "the replicas did not both come back");
    let mut drain = cp.kubectl(User::Admin);
    drain.args([
        "drain",
        controlplane::node::NODE_NAME,
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=20s",
    ]);
    let drained = drain.output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&drained.stdout), String::from_utf8_lossy(&drained.stderr));
    assert!(!drained.status.success(), "the drain evicted every replica: {said}");
    assert!(said.contains("disruption budget"), "{said}");
    assert_eq!(ready_replicas(&deployments, RELEASE).await, 1, "the budget did not hold one replica: {said}");
    kubectl(&cp, &["uncordon", controlplane::node::NODE_NAME]);

    // helm upgrade to another tag of the image: the Pods roll; count how
    // long admission refuses meanwhile (the access webhooks fail closed).
    assert!(both_ready(&deployments, Duration::from_secs(120)).await, "the replicas did not both come back");
    node.tag_image(IMAGE, "ghcr.io/driftwarden/driftwarden:0.1.0-next").unwrap();
    let upgraded = helm_at(
        &cp,
        &[
            "upgrade",
            RELEASE,
            &chart().display().to_string(),
            "--namespace",
            NAMESPACE,
            "--reuse-values",
            "--set",
            "image.tag=0.1.0-next",
        ],
    );
    assert!(upgraded.contains("STATUS: deployed"), "{upgraded}");
    let (mut refused_for, mut longest, mut probes) = (None::<Instant>, Duration::ZERO, 0);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        probes += 1;
        match admitted(&alice, "probe").await {
            Ok(()) => {
                if let Some(since) = refused_for.take() {
                    longest = longest.max(since.elapsed());
                }
            }
            Err(_) => {
                refused_for.get_or_insert_with(Instant::now);
            }
        }
        let rolled = deployments.get(RELEASE).await.unwrap();
        let status = rolled.status.unwrap_or_default();
        let done = status.updated_replicas == Some(2)
            && status.ready_replicas == Some(2)
            && status.replicas == Some(2)
            && refused_for.is_none();
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "the upgrade did not roll out: {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let images: Vec<String> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .flat_map(|p| {
            p.spec.iter().flat_map(|s| s.containers.iter().filter_map(|c| c.image.clone())).collect::<Vec<_>>()
        })
        .collect();
    assert!(images.iter().all(|i| i.ends_with(":0.1.0-next")), "not rolled: {images:?}");
    // Not a speed target: the bound the docs give for admission failing
    // closed during a handover (the Lease's failover bound).
    assert!(longest < Duration::from_secs(15), "admission refused for {longest:?} during the upgrade");

    // helm uninstall: nothing left that would block the cluster, the CRDs
    // (and the requests in them) kept.
    helm_at(&cp, &["uninstall", RELEASE, "--namespace", NAMESPACE, "--wait"]);
    for kind in ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"] {
        let left = kubectl(&cp, &["get", kind, "--output=name"]);
        assert!(!left.contains("driftwarden"), "helm uninstall left {left}");
    }
    let crds = kubectl(&cp, &["get", "crd", "accessrequests.driftwarden.io", "--output=name"]);
    assert!(crds.contains("accessrequests.driftwarden.io"), "the uninstall deleted the CRD");
    let kept: Api<AccessRequest> = Api::namespaced(admin.clone(), shop);
    assert!(kept.get_opt("fix").await.unwrap().is_some(), "the uninstall deleted an AccessRequest");
    // Admission is open again: with no operator, no webhook refuses.
    let configmap: k8s_openapi::api::core::v1::ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "after-uninstall"}})).unwrap();
    Api::namespaced(admin.clone(), shop).create(&PostParams::default(), &configmap).await.unwrap();

    eprintln!(
        "on a node: image {:.1}s, node start {:.1}s, helm install to 2 Ready {:.1}s, unauthorized revert {:.2}s, failover {:.1}s, leader killed until the Lease is renewed {:.1}s, \
         upgrade: longest refusal {:.2}s over {probes} probes",
        image_time.as_secs_f64(),
        node_time.as_secs_f64(),
        install_time.as_secs_f64(),
        revert_time.as_secs_f64(),
        failover_time.as_secs_f64(),
        crash_time.as_secs_f64(),
        longest.as_secs_f64(),
    );
}

/// Now, in the type the Lease's times have.
fn jiff_now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

fn ar() -> kube::core::ApiResource {
    kube::core::ApiResource::erase::<AccessRequest>(&())
}

fn desired_state() -> kube::core::ApiResource {
    kube::core::ApiResource::erase::<driftwarden::api::DesiredState>(&())
}

fn review() -> kube::core::ApiResource {
    kube::core::ApiResource::erase::<driftwarden::api::AccessReview>(&())
}
