//! The API server's types for built-in kinds, applied to declarations.
//!
//! kubectl sends what the YAML says; the API server then decodes it into
//! its Go types and refuses a value of the wrong type (`replicas: "3"`,
//! `containerPort: "8080"`, `data: {enabled: true}` in a ConfigMap). Such a
//! declaration can never be applied, so a revert cannot fix the drift it
//! shows: it is a source error, with the field's path. The types are
//! k8s-openapi's, generated from the same OpenAPI schema (and as lenient:
//! int-or-string fields take both, quantities take numbers).
//!
//! Only type errors count. A missing required field or an unknown one is
//! the API server's to judge (it may default or prune), and a kind or
//! version not listed here is not checked at all.

use serde_json::Value;

/// A declared value the API server cannot decode into the field's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeMismatch {
    /// Where, e.g. `spec.template.spec.containers[0].ports[0].containerPort`.
    pub path: String,
    /// What the field holds, e.g. `an integer`.
    pub expected: String,
    /// What the declaration has, e.g. `a string`.
    pub found: String,
}

macro_rules! check_kinds {
    ($object:expr, $group:expr, $version:expr, $kind:expr; $($g:literal $v:literal $k:literal => $ty:ty),* $(,)?) => {
        match ($group, $version, $kind) {
            $(($g, $v, $k) => first_type_error::<$ty>($object),)*
            _ => None,
        }
    };
}

/// The first value in `object` that does not fit its field's type, for
/// the built-in kinds k8s-openapi knows; None when all fit or the kind is
/// not one of them.
pub fn type_mismatch(group: &str, version: &str, kind: &str, object: &Value) -> Option<TypeMismatch> {
    use k8s_openapi::api::{
        admissionregistration::v1 as admission, apps::v1 as apps, autoscaling, batch::v1 as batch, core::v1 as core,
        networking::v1 as networking, policy::v1 as policy, rbac::v1 as rbac, scheduling::v1 as scheduling,
        storage::v1 as storage,
    };
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
    check_kinds!(object, group, version, kind;
        "" "v1" "ConfigMap" => core::ConfigMap,
        "" "v1" "Secret" => core::Secret,
        "" "v1" "Service" => core::Service,
        "" "v1" "ServiceAccount" => core::ServiceAccount,
        "" "v1" "Pod" => core::Pod,
        "" "v1" "Namespace" => core::Namespace,
        "" "v1" "PersistentVolumeClaim" => core::PersistentVolumeClaim,
        "" "v1" "PersistentVolume" => core::PersistentVolume,
        "" "v1" "LimitRange" => core::LimitRange,
        "" "v1" "ResourceQuota" => core::ResourceQuota,
        "apps" "v1" "Deployment" => apps::Deployment,
        "apps" "v1" "StatefulSet" => apps::StatefulSet,
        "apps" "v1" "DaemonSet" => apps::DaemonSet,
        "apps" "v1" "ReplicaSet" => apps::ReplicaSet,
        "batch" "v1" "Job" => batch::Job,
        "batch" "v1" "CronJob" => batch::CronJob,
        "networking.k8s.io" "v1" "Ingress" => networking::Ingress,
        "networking.k8s.io" "v1" "IngressClass" => networking::IngressClass,
        "networking.k8s.io" "v1" "NetworkPolicy" => networking::NetworkPolicy,
        "rbac.authorization.k8s.io" "v1" "Role" => rbac::Role,
        "rbac.authorization.k8s.io" "v1" "RoleBinding" => rbac::RoleBinding,
        "rbac.authorization.k8s.io" "v1" "ClusterRole" => rbac::ClusterRole,
        "rbac.authorization.k8s.io" "v1" "ClusterRoleBinding" => rbac::ClusterRoleBinding,
        "policy" "v1" "PodDisruptionBudget" => policy::PodDisruptionBudget,
        "autoscaling" "v1" "HorizontalPodAutoscaler" => autoscaling::v1::HorizontalPodAutoscaler,
        "autoscaling" "v2" "HorizontalPodAutoscaler" => autoscaling::v2::HorizontalPodAutoscaler,
        "scheduling.k8s.io" "v1" "PriorityClass" => scheduling::PriorityClass,
        "storage.k8s.io" "v1" "StorageClass" => storage::StorageClass,
        "admissionregistration.k8s.io" "v1" "ValidatingWebhookConfiguration" => admission::ValidatingWebhookConfiguration,
        "admissionregistration.k8s.io" "v1" "MutatingWebhookConfiguration" => admission::MutatingWebhookConfiguration,
        "apiextensions.k8s.io" "v1" "CustomResourceDefinition" => apiextensions::CustomResourceDefinition,
    )
}

fn first_type_error<T: serde::de::DeserializeOwned>(object: &Value) -> Option<TypeMismatch> {
    let error = serde_path_to_error::deserialize::<_, T>(object).err()?;
    let (found, expected) = parse_invalid_type(&error.inner().to_string())?;
    Some(TypeMismatch { path: error.path().to_string(), expected, found })
}

/// serde's "invalid type: string \"3\", expected i32" as ("a string", "an
/// integer"). The value itself is dropped: it may be a Secret's.
fn parse_invalid_type(message: &str) -> Option<(String, String)> {
    let rest = message.strip_prefix("invalid type: ")?;
    let (found, expected) = rest.rsplit_once(", expected ")?;
    let found = match found.split([' ', '`']).next()? {
        "string" => "a string",
        "integer" => "an integer",
        "floating" => "a number with a fraction",
        "boolean" => "a boolean",
        "map" => "a mapping",
        "sequence" => "a list",
        "null" | "unit" => "null",
        other => other,
    };
    let expected = match expected {
        "i32" | "i64" | "u32" | "u64" | "i16" | "u16" | "i8" | "u8" => "an integer",
        "f64" | "f32" => "a number",
        "a boolean" | "bool" => "a boolean",
        "a string" => "a string",
        expected if expected.starts_with("a sequence") => "a list",
        expected if expected.starts_with("a map") || expected.starts_with("struct") => "a mapping",
        expected => expected,
    };
    Some((found.to_owned(), expected.to_owned()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn mismatch(group: &str, kind: &str, object: Value) -> Option<(String, String, String)> {
        type_mismatch(group, "v1", kind, &object).map(|m| (m.path, m.expected, m.found))
    }

    #[test]
    fn values_of_the_wrong_type_are_found_with_their_path() {
        let deployment = |replicas: Value, port: Value| {
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": port}]}]}},
            }})
        };
        let cases = [
            (deployment(json!(3), json!(80)), None),
            (deployment(json!("3"), json!(80)), Some(("spec.replicas", "an integer", "a string"))),
            (
                deployment(json!(3), json!("80")),
                Some(("spec.template.spec.containers[0].ports[0].containerPort", "an integer", "a string")),
            ),
            (deployment(json!(2.5), json!(80)), Some(("spec.replicas", "an integer", "a number with a fraction"))),
        ];
        for (object, expected) in cases {
            let found = mismatch("apps", "Deployment", object);
            let expected = expected.map(|(p, e, f)| (p.to_owned(), e.to_owned(), f.to_owned()));
            assert_eq!(found, expected);
        }
    }

    #[test]
    fn lenient_fields_stay_lenient_and_values_are_never_echoed() {
        let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"ports": [{"port": 80, "targetPort": "http"}, {"port": 81, "targetPort": 8081}]}});
        assert_eq!(mismatch("", "Service", service), None);
        let limits = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"cpu": 1, "memory": "1Gi"}}}]}});
        assert_eq!(mismatch("", "Pod", limits), None);
        let config_map =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"enabled": true}});
        assert_eq!(
            mismatch("", "ConfigMap", config_map),
            Some(("data.enabled".into(), "a string".into(), "a boolean".into()))
        );
        let secret =
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"token": 123456}});
        let found = type_mismatch("", "v1", "Secret", &secret).unwrap();
        assert!(!format!("{found:?}").contains("123456"), "{found:?}");
        // Missing required fields are the API server's business.
        let binding =
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "b"}});
        assert_eq!(type_mismatch("rbac.authorization.k8s.io", "v1", "RoleBinding", &binding), None);
        assert_eq!(type_mismatch("example.com", "v1", "Widget", &json!({"spec": {"replicas": "3"}})), None);
    }
}
