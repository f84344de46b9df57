//! The closed set of live fields that are not drift although Git does not
//! declare them: what the API server defaults or allocates, and the few
//! fields the Kubernetes controllers write on the objects they manage.
//!
//! Who wrote a field decides nothing here: a field manager's name, and all
//! of `metadata.managedFields`, are whatever a client sends. So a default is
//! matched by its path *and* its value (a person "adding" a field at its
//! default value changes nothing), an allocation by its path on fields a
//! user cannot usefully set (a Service's cluster IP), and a controller's
//! field by a (kind, path) pair a controller really writes, whose value
//! carries no power (the deployment controller's revision annotation).

use serde_json::{Map, Value};

use super::diff::Step;

/// What a live value must be for the field to count as the server's.
#[derive(Clone, Copy, Debug)]
enum Expect {
    Str(&'static str),
    Int(i64),
    Bool(bool),
    /// `{}`.
    EmptyMap,
    /// Whatever the server allocated (cluster IPs, node ports, a Job's
    /// generated selector): the value is the server's, not a person's.
    Any,
    /// The value of a sibling field (a Service port's `targetPort` defaults
    /// to its `port`).
    Sibling(&'static str),
    /// A container port's `containerPort`, and only in a pod on the host's
    /// network: elsewhere a `hostPort` opens a port on the node.
    HostPort,
    /// `Always` for an untagged or `:latest` image, `IfNotPresent` otherwise.
    PullPolicy,
    /// `["Ingress"]`, plus `"Egress"` when the policy has egress rules.
    PolicyTypes,
    /// A subject's API group: `""` for ServiceAccounts, the RBAC group for
    /// users and groups.
    SubjectGroup,
    /// A CRD's `listKind`: its kind and `List`.
    ListKind,
    /// A CRD's `singular`: its kind in lower case.
    Singular,
}

/// Path patterns below a pod spec (`*`: any key or index), with defaults.
const POD_SPEC: &[(&[&str], Expect)] = &[
    (&["dnsPolicy"], Expect::Str("ClusterFirst")),
    (&["restartPolicy"], Expect::Str("Always")),
    (&["terminationGracePeriodSeconds"], Expect::Int(30)),
    (&["schedulerName"], Expect::Str("default-scheduler")),
    (&["securityContext"], Expect::EmptyMap),
    // The deprecated alias, filled in from serviceAccountName.
    (&["serviceAccount"], Expect::Sibling("serviceAccountName")),
    (&["volumes", "*", "secret", "defaultMode"], Expect::Int(0o644)),
    (&["volumes", "*", "configMap", "defaultMode"], Expect::Int(0o644)),
    (&["volumes", "*", "projected", "defaultMode"], Expect::Int(0o644)),
    (&["volumes", "*", "downwardAPI", "defaultMode"], Expect::Int(0o644)),
    (&["volumes", "*", "downwardAPI", "items", "*", "fieldRef", "apiVersion"], Expect::Str("v1")),
    (
        &["volumes", "*", "projected", "sources", "*", "downwardAPI", "items", "*", "fieldRef", "apiVersion"],
        Expect::Str("v1"),
    ),
    (&["volumes", "*", "projected", "sources", "*", "serviceAccountToken", "expirationSeconds"], Expect::Int(3600)),
    (&["volumes", "*", "hostPath", "type"], Expect::Str("")),
    (&["volumes", "*", "emptyDir"], Expect::EmptyMap),
];

/// Below each container of a pod spec.
const CONTAINER: &[(&[&str], Expect)] = &[
    (&["terminationMessagePath"], Expect::Str("/dev/termination-log")),
    (&["terminationMessagePolicy"], Expect::Str("File")),
    (&["imagePullPolicy"], Expect::PullPolicy),
    (&["resources"], Expect::EmptyMap),
    (&["ports", "*", "protocol"], Expect::Str("TCP")),
    (&["ports", "*", "hostPort"], Expect::HostPort),
    (&["env", "*", "valueFrom", "fieldRef", "apiVersion"], Expect::Str("v1")),
    (&["*", "timeoutSeconds"], Expect::Int(1)),
    (&["*", "periodSeconds"], Expect::Int(10)),
    (&["*", "successThreshold"], Expect::Int(1)),
    (&["*", "failureThreshold"], Expect::Int(3)),
    (&["*", "httpGet", "scheme"], Expect::Str("HTTP")),
    (&["*", "grpc", "service"], Expect::Str("")),
    (&["lifecycle", "*", "httpGet", "scheme"], Expect::Str("HTTP")),
];

const CONTAINER_LISTS: &[&str] = &["containers", "initContainers", "ephemeralContainers"];

/// Whole-object paths, by kind.
const BY_KIND: &[(&str, &[&str], Expect)] = &[
    ("Deployment", &["spec", "replicas"], Expect::Int(1)),
    ("Deployment", &["spec", "revisionHistoryLimit"], Expect::Int(10)),
    ("Deployment", &["spec", "progressDeadlineSeconds"], Expect::Int(600)),
    ("Deployment", &["spec", "strategy", "type"], Expect::Str("RollingUpdate")),
    ("Deployment", &["spec", "strategy", "rollingUpdate", "maxSurge"], Expect::Str("25%")),
    ("Deployment", &["spec", "strategy", "rollingUpdate", "maxUnavailable"], Expect::Str("25%")),
    ("StatefulSet", &["spec", "replicas"], Expect::Int(1)),
    ("StatefulSet", &["spec", "revisionHistoryLimit"], Expect::Int(10)),
    ("StatefulSet", &["spec", "podManagementPolicy"], Expect::Str("OrderedReady")),
    ("StatefulSet", &["spec", "updateStrategy", "type"], Expect::Str("RollingUpdate")),
    ("StatefulSet", &["spec", "updateStrategy", "rollingUpdate", "partition"], Expect::Int(0)),
    ("StatefulSet", &["spec", "persistentVolumeClaimRetentionPolicy", "whenDeleted"], Expect::Str("Retain")),
    ("StatefulSet", &["spec", "persistentVolumeClaimRetentionPolicy", "whenScaled"], Expect::Str("Retain")),
    ("StatefulSet", &["spec", "volumeClaimTemplates", "*", "apiVersion"], Expect::Str("v1")),
    ("StatefulSet", &["spec", "volumeClaimTemplates", "*", "kind"], Expect::Str("PersistentVolumeClaim")),
    ("StatefulSet", &["spec", "volumeClaimTemplates", "*", "spec", "volumeMode"], Expect::Str("Filesystem")),
    ("StatefulSet", &["spec", "volumeClaimTemplates", "*", "status"], Expect::Any),
    ("DaemonSet", &["spec", "revisionHistoryLimit"], Expect::Int(10)),
    ("DaemonSet", &["spec", "updateStrategy", "type"], Expect::Str("RollingUpdate")),
    ("DaemonSet", &["spec", "updateStrategy", "rollingUpdate", "maxUnavailable"], Expect::Int(1)),
    ("DaemonSet", &["spec", "updateStrategy", "rollingUpdate", "maxSurge"], Expect::Int(0)),
    ("ReplicaSet", &["spec", "replicas"], Expect::Int(1)),
    ("Job", &["spec", "completions"], Expect::Int(1)),
    ("Job", &["spec", "parallelism"], Expect::Int(1)),
    ("Job", &["spec", "backoffLimit"], Expect::Int(6)),
    ("Job", &["spec", "completionMode"], Expect::Str("NonIndexed")),
    ("Job", &["spec", "suspend"], Expect::Bool(false)),
    ("Job", &["spec", "manualSelector"], Expect::Bool(false)),
    ("Job", &["spec", "podReplacementPolicy"], Expect::Str("TerminatingOrFailed")),
    // The Job's selector and the labels it selects are generated at creation.
    ("Job", &["spec", "selector"], Expect::Any),
    ("Job", &["spec", "template", "metadata", "labels", "controller-uid"], Expect::Any),
    ("Job", &["spec", "template", "metadata", "labels", "job-name"], Expect::Any),
    ("Job", &["spec", "template", "metadata", "labels", "batch.kubernetes.io/controller-uid"], Expect::Any),
    ("Job", &["spec", "template", "metadata", "labels", "batch.kubernetes.io/job-name"], Expect::Any),
    ("CronJob", &["spec", "concurrencyPolicy"], Expect::Str("Allow")),
    ("CronJob", &["spec", "suspend"], Expect::Bool(false)),
    ("CronJob", &["spec", "successfulJobsHistoryLimit"], Expect::Int(3)),
    ("CronJob", &["spec", "failedJobsHistoryLimit"], Expect::Int(1)),
    ("Service", &["spec", "type"], Expect::Str("ClusterIP")),
    ("Service", &["spec", "sessionAffinity"], Expect::Str("None")),
    ("Service", &["spec", "sessionAffinityConfig", "clientIP", "timeoutSeconds"], Expect::Int(10800)),
    ("Service", &["spec", "internalTrafficPolicy"], Expect::Str("Cluster")),
    ("Service", &["spec", "externalTrafficPolicy"], Expect::Str("Cluster")),
    ("Service", &["spec", "allocateLoadBalancerNodePorts"], Expect::Bool(true)),
    ("Service", &["spec", "ipFamilyPolicy"], Expect::Str("SingleStack")),
    // Allocated by the API server, immutable or without effect once set.
    ("Service", &["spec", "clusterIP"], Expect::Any),
    ("Service", &["spec", "clusterIPs"], Expect::Any),
    ("Service", &["spec", "ipFamilies"], Expect::Any),
    ("Service", &["spec", "ports", "*", "nodePort"], Expect::Any),
    ("Service", &["spec", "healthCheckNodePort"], Expect::Any),
    ("Service", &["spec", "ports", "*", "protocol"], Expect::Str("TCP")),
    ("Service", &["spec", "ports", "*", "targetPort"], Expect::Sibling("port")),
    ("PersistentVolumeClaim", &["spec", "volumeMode"], Expect::Str("Filesystem")),
    // Added by the StorageObjectInUseProtection admission plugin.
    ("PersistentVolumeClaim", &["metadata", "finalizers", "*"], Expect::Str("kubernetes.io/pvc-protection")),
    ("PersistentVolume", &["metadata", "finalizers", "*"], Expect::Str("kubernetes.io/pv-protection")),
    ("NetworkPolicy", &["spec", "policyTypes"], Expect::PolicyTypes),
    ("NetworkPolicy", &["spec", "ingress", "*", "ports", "*", "protocol"], Expect::Str("TCP")),
    ("NetworkPolicy", &["spec", "egress", "*", "ports", "*", "protocol"], Expect::Str("TCP")),
    ("RoleBinding", &["subjects", "*", "apiGroup"], Expect::SubjectGroup),
    ("ClusterRoleBinding", &["subjects", "*", "apiGroup"], Expect::SubjectGroup),
    ("HorizontalPodAutoscaler", &["spec", "minReplicas"], Expect::Int(1)),
    ("Secret", &["type"], Expect::Str("Opaque")),
    ("Namespace", &["spec", "finalizers"], Expect::Any),
    ("CustomResourceDefinition", &["spec", "conversion", "strategy"], Expect::Str("None")),
    ("CustomResourceDefinition", &["spec", "names", "listKind"], Expect::ListKind),
    ("CustomResourceDefinition", &["spec", "names", "singular"], Expect::Singular),
];

/// Fields a Kubernetes controller writes on objects it manages, with the
/// controller's field manager. Such a field is the controller's when that
/// manager holds it, or nobody does (ownership can be reset); never when
/// only someone else does.
const CONTROLLER_FIELDS: &[(&str, &[&str], &str)] = &[
    ("Deployment", &["metadata", "annotations", "deployment.kubernetes.io/revision"], "kube-controller-manager"),
    // The token controller fills a ServiceAccount token Secret.
    ("Secret", &["data", "token"], "kube-controller-manager"),
    ("Secret", &["data", "ca.crt"], "kube-controller-manager"),
    ("Secret", &["data", "namespace"], "kube-controller-manager"),
    ("Secret", &["metadata", "labels", "kubernetes.io/legacy-token-last-used"], "kube-controller-manager"),
];

/// Where a kind keeps its pod spec.
fn pod_spec_root(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "Pod" => &["spec"],
        "PodTemplate" => &["template", "spec"],
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job" | "ReplicationController" => {
            &["spec", "template", "spec"]
        }
        "CronJob" => &["spec", "jobTemplate", "spec", "template", "spec"],
        _ => return None,
    })
}

fn segment_matches(pattern: &str, step: &Step<'_>) -> bool {
    match step {
        _ if pattern == "*" => true,
        Step::Key(key) => pattern == *key,
        Step::Index(_) => false,
    }
}

fn matches(pattern: &[&str], path: &[Step<'_>]) -> bool {
    pattern.len() == path.len() && pattern.iter().zip(path).all(|(p, s)| segment_matches(p, s))
}

/// Strips a literal prefix from a path.
fn below<'p, 's>(prefix: &[&str], path: &'p [Step<'s>]) -> Option<&'p [Step<'s>]> {
    (path.len() >= prefix.len() && matches(prefix, &path[..prefix.len()])).then(|| &path[prefix.len()..])
}

/// What the defaults table says about `path` in an object of `kind`.
fn expectation(kind: &str, path: &[Step<'_>]) -> Option<Expect> {
    if let Some((_, _, expect)) = BY_KIND.iter().find(|(k, pattern, _)| *k == kind && matches(pattern, path)) {
        return Some(*expect);
    }
    let pod = below(pod_spec_root(kind)?, path)?;
    if let Some((_, expect)) = POD_SPEC.iter().find(|(pattern, _)| matches(pattern, pod)) {
        return Some(*expect);
    }
    let (list, rest) = match pod {
        [Step::Key(list), Step::Index(_), rest @ ..] if CONTAINER_LISTS.contains(list) => (list, rest),
        _ => return None,
    };
    let _ = list;
    CONTAINER.iter().find(|(pattern, _)| matches(pattern, rest)).map(|(_, expect)| *expect)
}

fn int(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| value.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
}

/// Whether the live `value` at `path` is one the API server set: a default
/// at its default value, or an allocation. `parent` is the live map holding
/// the field (for sibling defaults), `container` the live container it is in
/// (for the pull policy), `root` the live object.
pub(super) fn is_server_set(
    kind: &str,
    path: &[Step<'_>],
    value: &Value,
    parent: Option<&Map<String, Value>>,
    root: &Value,
) -> bool {
    let Some(expect) = expectation(kind, path) else { return false };
    match expect {
        Expect::Str(wanted) => value.as_str() == Some(wanted),
        Expect::Int(wanted) => int(value) == Some(wanted),
        Expect::Bool(wanted) => value.as_bool() == Some(wanted),
        Expect::EmptyMap => value.as_object().is_some_and(Map::is_empty),
        Expect::Any => true,
        Expect::Sibling(field) => parent
            .and_then(|p| p.get(field))
            .is_some_and(|sibling| sibling == value || (int(sibling).is_some() && int(sibling) == int(value))),
        Expect::HostPort => {
            let host_network = pod_spec_root(kind)
                .and_then(|root_path| root_path.iter().try_fold(root, |node, key| node.get(*key)))
                .and_then(|pod| pod.get("hostNetwork"))
                .and_then(Value::as_bool)
                == Some(true);
            let container_port = parent.and_then(|p| p.get("containerPort")).and_then(int);
            host_network && container_port.is_some() && container_port == int(value)
        }
        Expect::PullPolicy => {
            let image = parent.and_then(|container| container.get("image")).and_then(Value::as_str).unwrap_or("");
            value.as_str() == Some(default_pull_policy(image))
        }
        Expect::PolicyTypes => {
            let mut wanted = vec![Value::from("Ingress")];
            if root.pointer("/spec/egress").is_some() {
                wanted.push(Value::from("Egress"));
            }
            value.as_array() == Some(&wanted)
        }
        Expect::ListKind | Expect::Singular => {
            let kind = root.pointer("/spec/names/kind").and_then(Value::as_str).unwrap_or_default();
            let wanted = if matches!(expect, Expect::ListKind) { format!("{kind}List") } else { kind.to_lowercase() };
            !kind.is_empty() && value.as_str() == Some(wanted.as_str())
        }
        Expect::SubjectGroup => {
            let subject_kind = parent.and_then(|s| s.get("kind")).and_then(Value::as_str);
            let wanted = if subject_kind == Some("ServiceAccount") { "" } else { "rbac.authorization.k8s.io" };
            value.as_str() == Some(wanted)
        }
    }
}

/// The kubelet's default: `Always` for `:latest` or no tag, unless pinned by digest.
fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let name = image.rsplit('/').next().unwrap_or(image);
    match name.rsplit_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

/// The controller whose field `path` is, in the live object `root` of `kind`.
pub(super) fn controller_of(kind: &str, path: &[Step<'_>], root: &Value) -> Option<&'static str> {
    // The token controller fills only ServiceAccount token Secrets; in any
    // other Secret a `token` key is someone's.
    if kind == "Secret" && root.get("type").and_then(Value::as_str) != Some("kubernetes.io/service-account-token") {
        return None;
    }
    CONTROLLER_FIELDS.iter().find(|(k, pattern, _)| *k == kind && matches(pattern, path)).map(|(_, _, c)| *c)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn path(pointer: &'static str) -> Vec<Step<'static>> {
        pointer
            .strip_prefix('/')
            .unwrap_or_default()
            .split('/')
            .map(|segment| segment.parse::<usize>().map_or(Step::Key(segment), Step::Index))
            .collect()
    }

    #[test]
    fn defaults_count_only_at_their_default_value() {
        let container = json!({"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]});
        let latest = json!({"name": "web", "image": "nginx"});
        let port = json!({"port": 80});
        let pod = json!({"serviceAccountName": "web"});
        let root = json!({});
        // (kind, path, value, parent, server set)
        let cases: Vec<(&str, &'static str, Value, Option<&Value>, bool)> = vec![
            ("Deployment", "/spec/progressDeadlineSeconds", json!(600), None, true),
            ("Deployment", "/spec/progressDeadlineSeconds", json!(60), None, false),
            ("Deployment", "/spec/template/spec/dnsPolicy", json!("ClusterFirst"), None, true),
            ("Deployment", "/spec/template/spec/dnsPolicy", json!("None"), None, false),
            ("Deployment", "/spec/template/spec/securityContext", json!({}), None, true),
            ("Deployment", "/spec/template/spec/securityContext", json!({"runAsUser": 0}), None, false),
            (
                "Deployment",
                "/spec/template/spec/containers/0/imagePullPolicy",
                json!("IfNotPresent"),
                Some(&container),
                true,
            ),
            (
                "Deployment",
                "/spec/template/spec/containers/0/imagePullPolicy",
                json!("Always"),
                Some(&container),
                false,
            ),
            ("Deployment", "/spec/template/spec/containers/0/imagePullPolicy", json!("Always"), Some(&latest), true),
            (
                "CronJob",
                "/spec/jobTemplate/spec/template/spec/containers/0/terminationMessagePolicy",
                json!("File"),
                None,
                true,
            ),
            ("Deployment", "/spec/template/spec/containers/0/readinessProbe/periodSeconds", json!(10), None, true),
            ("Deployment", "/spec/template/spec/containers/0/securityContext/privileged", json!(true), None, false),
            ("Deployment", "/spec/template/spec/containers/0/securityContext/runAsUser", json!(0), None, false),
            ("Deployment", "/spec/template/spec/hostNetwork", json!(false), None, false),
            ("Deployment", "/metadata/labels/owner", json!("mallory"), None, false),
            ("Service", "/spec/ports/0/targetPort", json!(80), Some(&port), true),
            ("Deployment", "/spec/template/spec/serviceAccount", json!("web"), Some(&pod), true),
            ("Deployment", "/spec/template/spec/serviceAccount", json!("admin"), Some(&pod), false),
            ("Service", "/spec/ports/0/targetPort", json!(8080), Some(&port), false),
            ("Service", "/spec/clusterIP", json!("10.0.0.12"), None, true),
            ("Service", "/spec/type", json!("NodePort"), None, false),
            ("PersistentVolumeClaim", "/metadata/finalizers/0", json!("kubernetes.io/pvc-protection"), None, true),
            ("PersistentVolumeClaim", "/metadata/finalizers/1", json!("example.com/hold"), None, false),
            ("ConfigMap", "/spec/replicas", json!(1), None, false),
        ];
        for (kind, pointer, value, parent, expected) in cases {
            let parent = parent.and_then(Value::as_object);
            assert_eq!(
                is_server_set(kind, &path(pointer), &value, parent, &root),
                expected,
                "{kind} {pointer} {value}"
            );
        }
    }

    #[test]
    fn a_host_port_is_the_servers_only_on_the_host_network() {
        let port = json!({"containerPort": 8080});
        let parent = port.as_object();
        let hostport = path("/spec/template/spec/containers/0/ports/0/hostPort");
        let on_host = json!({"spec": {"template": {"spec": {"hostNetwork": true}}}});
        let on_pod_network = json!({"spec": {"template": {"spec": {}}}});
        assert!(is_server_set("Deployment", &hostport, &json!(8080), parent, &on_host));
        assert!(!is_server_set("Deployment", &hostport, &json!(8080), parent, &on_pod_network));
        assert!(!is_server_set("Deployment", &hostport, &json!(80), parent, &on_host));
    }

    #[test]
    fn network_policy_types_follow_its_rules() {
        let ingress_only = json!({"spec": {"ingress": []}});
        let with_egress = json!({"spec": {"egress": []}});
        let types = path("/spec/policyTypes");
        assert!(is_server_set("NetworkPolicy", &types, &json!(["Ingress"]), None, &ingress_only));
        assert!(!is_server_set("NetworkPolicy", &types, &json!(["Ingress", "Egress"]), None, &ingress_only));
        assert!(is_server_set("NetworkPolicy", &types, &json!(["Ingress", "Egress"]), None, &with_egress));
    }

    #[test]
    fn controller_fields_are_a_closed_list() {
        let revision = path("/metadata/annotations/deployment.kubernetes.io~1revision");
        // Pointers reach this module unescaped, as the walk's steps.
        let revision: Vec<Step<'_>> = revision
            .into_iter()
            .map(|step| match step {
                Step::Key("deployment.kubernetes.io~1revision") => Step::Key("deployment.kubernetes.io/revision"),
                other => other,
            })
            .collect();
        let root = json!({});
        assert_eq!(controller_of("Deployment", &revision, &root), Some("kube-controller-manager"));
        assert_eq!(controller_of("StatefulSet", &revision, &root), None);
        assert_eq!(controller_of("Deployment", &path("/spec/template/spec/containers/0/securityContext"), &root), None);
        assert_eq!(controller_of("Deployment", &path("/metadata/labels/pod-template-hash"), &root), None);
        let token = path("/data/token");
        let token_secret = json!({"type": "kubernetes.io/service-account-token"});
        assert_eq!(controller_of("Secret", &token, &token_secret), Some("kube-controller-manager"));
        assert_eq!(
            controller_of("Secret", &token, &json!({"type": "Opaque"})),
            None,
            "a token key in an Opaque Secret"
        );
        assert_eq!(controller_of("Secret", &token, &root), None);
    }

    #[test]
    fn pull_policy_defaults_by_tag() {
        for (image, policy) in [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("nginx:1.27", "IfNotPresent"),
            ("registry:5000/team/app", "Always"),
            ("registry:5000/team/app:v2", "IfNotPresent"),
            ("app@sha256:abc", "IfNotPresent"),
        ] {
            assert_eq!(default_pull_policy(image), policy, "{image}");
        }
    }
}
