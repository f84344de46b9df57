//! Helpers shared by the drift tests.

use super::source::Scope;

/// Knows the kinds the tests (and the corpus) use.
pub(crate) fn resolver(api_version: &str, kind: &str) -> Option<Scope> {
    let namespaced = [
        ("v1", "ConfigMap"),
        ("v1", "Secret"),
        ("v1", "Service"),
        ("v1", "ServiceAccount"),
        ("v1", "Pod"),
        ("v1", "PersistentVolumeClaim"),
        ("v1", "LimitRange"),
        ("v1", "ResourceQuota"),
        ("apps/v1", "Deployment"),
        ("apps/v1beta2", "Deployment"),
        ("apps/v1", "StatefulSet"),
        ("apps/v1", "DaemonSet"),
        ("batch/v1", "Job"),
        ("batch/v1", "CronJob"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("policy/v1", "PodDisruptionBudget"),
        ("networking.k8s.io/v1", "Ingress"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
        ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ];
    let cluster = [
        ("v1", "Namespace"),
        ("rbac.authorization.k8s.io/v1", "ClusterRole"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
        ("networking.k8s.io/v1", "IngressClass"),
        ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration"),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
        ("scheduling.k8s.io/v1", "PriorityClass"),
    ];
    if namespaced.contains(&(api_version, kind)) {
        Some(Scope::Namespaced)
    } else if cluster.contains(&(api_version, kind)) {
        Some(Scope::Cluster)
    } else {
        None
    }
}
