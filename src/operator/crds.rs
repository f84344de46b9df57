//! Installs driftwarden's CRDs and its identity admission policy, and waits
//! until the API server serves them.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt};

/// The kinds driftwarden serves.
pub const KINDS: [&str; 4] = ["DesiredState", "AccessRequest", "AccessReview", "AccessPolicy"];

/// The field manager for everything driftwarden applies.
pub const FIELD_MANAGER: &str = "driftwarden";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("applying {name}: {source}")]
    Apply { name: String, source: kube::Error },
    #[error("CRD {name} was not Established within {timeout:?}")]
    NotEstablished { name: String, timeout: Duration },
}

/// Server-side applies every CRD and waits until each is Established.
pub async fn install(client: &Client, timeout: Duration) -> Result<(), Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for crd in crate::api::crds() {
        let name = crd.name_any();
        api.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .map_err(|source| Error::Apply { name: name.clone(), source })?;
    }
    // Identity is held at the API server even while no operator runs.
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let name = crate::api::identity::NAME.to_owned();
    policies
        .patch(&name, &params, &Patch::Apply(crate::api::identity::policy()))
        .await
        .map_err(|source| Error::Apply { name: name.clone(), source })?;
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    bindings
        .patch(&name, &params, &Patch::Apply(crate::api::identity::binding()))
        .await
        .map_err(|source| Error::Apply { name: name.clone(), source })?;
    for crd in crate::api::crds() {
        let name = crd.name_any();
        let established = await_condition(api.clone(), &name, conditions::is_crd_established());
        match tokio::time::timeout(timeout, established).await {
            Ok(Ok(_)) => {}
            _ => return Err(Error::NotEstablished { name, timeout }),
        }
    }
    Ok(())
}
