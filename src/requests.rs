//! The request commands (`driftwarden request | approve | deny | revoke |
//! ls | status`, also as `kubectl driftwarden ...`): thin calls on the API
//! as the user; identity is stamped by the API server's admission webhooks,
//! never sent. The wording lives in `access::present`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::access::present;
use crate::api::{AccessPhase, AccessRequest, AccessReview};
use crate::cli::{ListArgs, NamedRequestArgs, RequestArgs, RequestTarget, ReviewArgs, RoleKindArg};

/// How often a waiting `request` looks at its AccessRequest.
const POLL: Duration = Duration::from_millis(500);

async fn connect(target: &RequestTarget) -> anyhow::Result<(Client, String)> {
    let client = crate::connect::client(&target.cluster).await?;
    let namespace = target.namespace.clone().unwrap_or_else(|| client.default_namespace().to_owned());
    Ok((client, namespace))
}

/// An API error as the user should read it: the webhook's or the API
/// server's own reason.
fn refused(what: &str, error: kube::Error) -> anyhow::Error {
    match error {
        kube::Error::Api(status) => anyhow::anyhow!("{what}: {}", present::refusal(&status.message)),
        other => anyhow::Error::new(other).context(what.to_owned()),
    }
}

pub async fn request(args: RequestArgs) -> anyhow::Result<ExitCode> {
    let (client, namespace) = connect(&args.target).await?;
    let api: Api<AccessRequest> = Api::namespaced(client, &namespace);
    let kind = match args.kind {
        RoleKindArg::ClusterRole => "ClusterRole",
        RoleKindArg::Role => "Role",
    };
    let metadata = match &args.name {
        Some(name) => json!({"name": name}),
        None => json!({"generateName": format!("{}-", args.role.to_lowercase())}),
    };
    let request: AccessRequest = serde_json::from_value(json!({
        "apiVersion": "driftwarden.io/v1alpha1", "kind": "AccessRequest", "metadata": metadata,
        "spec": {"role": {"kind": kind, "name": args.role}, "duration": args.duration.to_string(), "reason": args.reason},
    }))?;
    let created = api.create(&PostParams::default(), &request).await.map_err(|e| refused("request refused", e))?;
    let name = created.name_any();
    println!(
        "accessrequest {namespace}/{name} created; approvers can run: driftwarden approve {name} -n {namespace} --reason ..."
    );
    if args.nowait {
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = Instant::now() + Duration::from(args.timeout);
    loop {
        let current = api.get(&name).await.map_err(|e| refused("reading the request", e))?;
        let status = current.status.clone().unwrap_or_default();
        match status.phase {
            Some(AccessPhase::Active) => {
                let until = status.expires_at.map(|t| t.0.to_string()).unwrap_or_default();
                let binding = status.role_binding.unwrap_or_default();
                println!("granted: {kind}/{} in {namespace} until {until} (RoleBinding {binding})", args.role);
                return Ok(ExitCode::SUCCESS);
            }
            Some(AccessPhase::Approved) => {
                println!("approved; the window opens later: {}", status.message.unwrap_or_default());
                return Ok(ExitCode::SUCCESS);
            }
            Some(phase @ (AccessPhase::Denied | AccessPhase::Expired | AccessPhase::Revoked)) => {
                println!("{phase:?}: {}", status.message.unwrap_or_default());
                return Ok(ExitCode::FAILURE);
            }
            Some(AccessPhase::Pending) | None => {}
        }
        if Instant::now() > deadline {
            println!("still pending after {}; `driftwarden status {name} -n {namespace}` shows it", args.timeout);
            return Ok(ExitCode::FAILURE);
        }
        tokio::time::sleep(POLL).await;
    }
}

pub async fn review(args: ReviewArgs, decision: &str) -> anyhow::Result<()> {
    let (client, namespace) = connect(&args.target).await?;
    let requests: Api<AccessRequest> = Api::namespaced(client.clone(), &namespace);
    // Fail early, and clearly, on a name that does not exist.
    requests.get(&args.name).await.map_err(|e| refused(&format!("accessrequest {}", args.name), e))?;
    let reviews: Api<AccessReview> = Api::namespaced(client, &namespace);
    let review: AccessReview = serde_json::from_value(json!({
        "apiVersion": "driftwarden.io/v1alpha1", "kind": "AccessReview",
        "metadata": {"generateName": format!("{}-", args.name)},
        "spec": {"accessRequest": args.name, "decision": decision, "reason": args.reason},
    }))?;
    let created = reviews.create(&PostParams::default(), &review).await.map_err(|e| refused("review refused", e))?;
    let verb = if decision == "Approve" { "approved" } else { "denied" };
    println!("accessrequest {namespace}/{} {verb} (accessreview {})", args.name, created.name_any());
    Ok(())
}

pub async fn revoke(args: NamedRequestArgs) -> anyhow::Result<()> {
    let (client, namespace) = connect(&args.target).await?;
    let api: Api<AccessRequest> = Api::namespaced(client, &namespace);
    let patch = Patch::Merge(json!({"spec": {"revoked": true}}));
    api.patch(&args.name, &PatchParams::default(), &patch).await.map_err(|e| refused("revocation refused", e))?;
    println!("accessrequest {namespace}/{} revoked: its RoleBinding goes now", args.name);
    Ok(())
}

/// Who the API server says we are.
async fn whoami(client: &Client) -> anyhow::Result<String> {
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = api.create(&PostParams::default(), &SelfSubjectReview::default()).await.context("asking who I am")?;
    Ok(review.status.and_then(|s| s.user_info).and_then(|u| u.username).unwrap_or_default())
}

pub async fn list(args: ListArgs) -> anyhow::Result<()> {
    let (client, namespace) = connect(&args.target).await?;
    let api: Api<AccessRequest> =
        if args.all_namespaces { Api::all(client.clone()) } else { Api::namespaced(client.clone(), &namespace) };
    let mut requests = api.list(&ListParams::default()).await.map_err(|e| refused("listing requests", e))?.items;
    requests.sort_by_key(|r| r.metadata.creation_timestamp.clone().map(|t| t.0));
    let me = if args.mine || args.reviewable { whoami(&client).await? } else { String::new() };
    let shown: Vec<&AccessRequest> = requests
        .iter()
        .filter(|r| !args.mine || r.spec.requester.as_deref() == Some(me.as_str()))
        .filter(|r| !args.reviewable || present::reviewable_by(r, &me))
        .collect();
    if shown.is_empty() {
        println!("no access requests");
    } else {
        print!("{}", present::table(&shown, Timestamp::now()));
    }
    Ok(())
}

pub async fn status(args: NamedRequestArgs) -> anyhow::Result<()> {
    let (client, namespace) = connect(&args.target).await?;
    let api: Api<AccessRequest> = Api::namespaced(client, &namespace);
    let request = api.get(&args.name).await.map_err(|e| refused(&format!("accessrequest {}", args.name), e))?;
    print!("{}", present::story(&request, Timestamp::now()));
    Ok(())
}
