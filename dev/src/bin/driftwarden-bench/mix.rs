//! The managed objects of the end-to-end benchmarks: a mix of the kinds an
//! application namespace holds, each created the way `kubectl apply`
//! creates it. Edits go to the ConfigMaps (their `data.value` says which
//! object they are, so a watch can tell when one is back).
//!
//! Of every 20 objects: 8 ConfigMaps, 4 Services, 3 Deployments,
//! 3 ServiceAccounts and 2 Roles.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::Role;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::ApiResource;
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    ConfigMap,
    Service,
    Deployment,
    ServiceAccount,
    Role,
}

/// The kind of managed object `i`.
pub fn kind(i: usize) -> Kind {
    match i % 20 {
        0..8 => Kind::ConfigMap,
        8..12 => Kind::Service,
        12..15 => Kind::Deployment,
        15..18 => Kind::ServiceAccount,
        _ => Kind::Role,
    }
}

/// How many of the first `objects` are of kind `of`.
pub fn count(of: Kind, objects: usize) -> usize {
    (0..objects).filter(|&i| kind(i) == of).count()
}

/// Every kind of the mix.
pub const KINDS: [Kind; 5] = [Kind::ConfigMap, Kind::Service, Kind::Deployment, Kind::ServiceAccount, Kind::Role];

pub fn resource(kind: Kind) -> ApiResource {
    match kind {
        Kind::ConfigMap => ApiResource::erase::<ConfigMap>(&()),
        Kind::Service => ApiResource::erase::<Service>(&()),
        Kind::Deployment => ApiResource::erase::<Deployment>(&()),
        Kind::ServiceAccount => ApiResource::erase::<ServiceAccount>(&()),
        Kind::Role => ApiResource::erase::<Role>(&()),
    }
}

/// Each Deployment's replicas: the controller manager makes one ReplicaSet
/// and this many Pods for it.
pub const REPLICAS: usize = 2;

/// The name of managed object `i`.
pub fn object_name(i: usize) -> String {
    format!("obj-{i:05}")
}

/// Object `i`, as declared in Git.
pub fn manifest(i: usize) -> Value {
    let name = object_name(i);
    let metadata = json!({"name": name, "labels": {"app": "bench", "part": format!("p{}", i % 7)}});
    match kind(i) {
        Kind::ConfigMap => json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata,
            "data": {"value": i.to_string(), "log-level": "info", "feature-flags": "search,checkout"}}),
        Kind::Service => json!({"apiVersion": "v1", "kind": "Service", "metadata": metadata,
            "spec": {"selector": {"app": name}, "ports": [
                {"name": "http", "port": 80, "targetPort": "http"},
                {"name": "metrics", "port": 9090, "targetPort": 9090}]}}),
        Kind::Deployment => json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata,
            "spec": {"replicas": REPLICAS, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{
                    "name": "app", "image": "registry.example.com/shop/app:1.4.2",
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "env": [{"name": "LOG_LEVEL", "value": "info"}],
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}}}]}}}}),
        Kind::ServiceAccount => json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata,
            "automountServiceAccountToken": false}),
        Kind::Role => json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": metadata,
            "rules": [
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
                {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": [name], "verbs": ["get"]}]}),
    }
}

/// `count` ConfigMaps among the first `objects`, picked pseudo-randomly
/// (the same every run): the objects the benchmarks edit.
pub fn edit_targets(count: usize, objects: usize) -> Vec<usize> {
    let config_maps: Vec<usize> = (0..objects).filter(|&i| kind(i) == Kind::ConfigMap).collect();
    crate::random_targets(count, config_maps.len()).into_iter().map(|k| config_maps[k]).collect()
}

/// Creates object `i` in `namespace` as `kubectl apply` does: the manifest
/// kept in the last-applied annotation, field manager
/// `kubectl-client-side-apply`.
pub async fn create_applied(client: &kube::Client, namespace: &str, i: usize) -> anyhow::Result<()> {
    let mut object = manifest(i);
    let last_applied = serde_json::to_string(&object)?;
    object["metadata"]["annotations"] = json!({"kubectl.kubernetes.io/last-applied-configuration": last_applied});
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource(kind(i)));
    let params = PostParams { field_manager: Some("kubectl-client-side-apply".into()), ..Default::default() };
    api.create(&params, &serde_json::from_value(object)?).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_has_every_kind_in_its_share_and_edits_only_config_maps() {
        let mut counts = std::collections::HashMap::new();
        for i in 0..1000 {
            *counts.entry(kind(i)).or_insert(0) += 1;
        }
        assert_eq!(counts[&Kind::ConfigMap], 400);
        assert_eq!(counts[&Kind::Service], 200);
        assert_eq!(counts[&Kind::Deployment], 150);
        assert_eq!(counts[&Kind::ServiceAccount], 150);
        assert_eq!(counts[&Kind::Role], 100);
        assert!(KINDS.iter().all(|&k| count(k, 1000) == counts[&k]));
        let targets = edit_targets(200, 1000);
        assert_eq!(targets.len(), 200);
        assert!(targets.iter().all(|&i| kind(i) == Kind::ConfigMap && i < 1000));
    }
}
