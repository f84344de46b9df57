//! The apply-semantics diff: one declared object against its live copy ->
//! the fields that differ (JSON pointers) and a readable unified diff.
//!
//! What counts as drift:
//! - a declared field whose live value differs (after [`normalize`]), or
//!   that is gone, or a declared list item that is gone;
//! - a live field nobody declared (`kubectl edit` adding `privileged: true`,
//!   an extra container, an extra label), whoever's field manager name it
//!   carries: a name is whatever the client sent, and so is all of
//!   `metadata.managedFields`;
//! - a deleted object.
//!
//! What does not: `status`, system metadata, the closed set of fields the
//! API server defaults or allocates and the controllers write
//! ([`server_fields`](super::server_fields)), and whatever the DesiredState's
//! ignore rules exclude. Secret values never leave this module: changes
//! name the key, the unified diff shows a marker.

use serde_json::{Map, Value};
use similar::TextDiff;

use super::normalize::{
    is_dropped_by_server, is_quantity_field, quantities_equal, scalars_equal, secret_data_equal,
    secret_string_data_equal,
};
use super::server_fields;
use crate::api::IgnoreRule;

/// The operator's own field manager.
pub const OPERATOR_MANAGER: &str = "driftwarden";

/// Marker shown instead of a Secret value.
pub const REDACTED: &str = "<redacted>";
/// Marker shown instead of a live Secret value that differs from Git.
pub const REDACTED_CHANGED: &str = "<redacted: differs>";

// Walks stop here; the parser limits declared objects to 100 levels and the
// Kubernetes client's JSON decoder live ones to 128.
const MAX_WALK_DEPTH: usize = 128;

// Metadata the API server owns; never part of the comparison.
const SYSTEM_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "managedFields",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
];

// kubectl's copy of the whole last applied manifest (a Secret's values
// included): not a field anyone declares.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// How to compare.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiffOptions {
    /// The DesiredState's `spec.ignore` (and the operator's global rules,
    /// see [`with_global_ignore`]).
    pub ignore: Vec<IgnoreRule>,
}

impl DiffOptions {
    /// The defaults with these ignore rules.
    pub fn with_ignore(ignore: Vec<IgnoreRule>) -> Self {
        DiffOptions { ignore }
    }
}

/// A DesiredState's ignore rules plus the operator's global pointers
/// (`--ignore-pointers`, e.g. the labels and annotations Helm adds).
pub fn with_global_ignore(rules: &[IgnoreRule], pointers: &[String]) -> Vec<IgnoreRule> {
    let mut all = rules.to_vec();
    let pointers: Vec<String> = pointers.iter().filter(|p| !p.is_empty()).cloned().collect();
    if !pointers.is_empty() {
        all.push(IgnoreRule { json_pointers: pointers, field_managers: Vec::new(), kind: None, name: None });
    }
    all
}

/// What kind of difference a field shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// Declared, and live holds another value.
    Changed,
    /// Not declared, live, and none of the server's fields (or an atomic
    /// list holds more items than declared).
    Added,
    /// Declared, and gone from live.
    Removed,
    /// The whole object is gone.
    ObjectMissing,
}

/// One field that differs. Carries no values, so it is safe to log.
///
/// List items are addressed by their index in live; a declared item that is
/// gone from live by its index in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldChange {
    /// JSON pointer (RFC 6901) into the live object; `""` for the object.
    pub path: String,
    /// How it differs.
    pub kind: ChangeKind,
}

/// The drift of one object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectDiff {
    /// The fields that differ, in walk order.
    pub changes: Vec<FieldChange>,
    /// Unified diff of the declared fields (`--- declared` / `+++ live`),
    /// Secret values redacted; empty when in sync.
    pub unified: String,
}

impl ObjectDiff {
    /// Whether live matches the declared state.
    pub fn in_sync(&self) -> bool {
        self.changes.is_empty()
    }

    /// Whether the object is gone.
    pub fn is_missing(&self) -> bool {
        self.changes.iter().any(|change| change.kind == ChangeKind::ObjectMissing)
    }

    /// The changed paths, as DesiredState status lists them.
    pub fn paths(&self) -> Vec<String> {
        self.changes.iter().map(|change| change.path.clone()).collect()
    }
}

/// Compares a declared object with its live copy (None: it does not exist).
pub fn diff(declared: &Value, live: Option<&Value>, options: &DiffOptions) -> ObjectDiff {
    let is_secret = declared.get("kind").and_then(Value::as_str) == Some("Secret");
    let Some(live) = live else {
        let change = FieldChange { path: String::new(), kind: ChangeKind::ObjectMissing };
        return ObjectDiff { changes: vec![change], unified: missing_object_diff(declared, is_secret) };
    };
    let rules = compile_rules(declared, &options.ignore);
    let managers = read_managers(live);
    let kind = declared.get("kind").and_then(Value::as_str).unwrap_or_default();
    let mut walker = Walker::new(&managers, &rules, kind, is_secret, false);
    walker.root(declared, live);
    if walker.changes.is_empty() {
        return ObjectDiff::default();
    }
    // Drift is rare: build the readable views only now, in a second walk.
    let mut viewer = Walker::new(&managers, &rules, kind, is_secret, true);
    let views = viewer.root(declared, live);
    ObjectDiff { changes: walker.changes, unified: unified_diff(views.declared.as_ref(), views.live.as_ref()) }
}

fn missing_object_diff(declared: &Value, is_secret: bool) -> String {
    let shown = if is_secret { redacted_secret(declared) } else { declared.clone() };
    unified_diff(Some(&shown), None)
}

/// A declared Secret with every value replaced by the marker.
fn redacted_secret(declared: &Value) -> Value {
    let mut shown = declared.clone();
    if let Value::Object(object) = &mut shown {
        for field in ["data", "stringData"] {
            match object.get_mut(field) {
                Some(Value::Object(values)) => {
                    values.values_mut().for_each(|value| *value = Value::String(REDACTED.into()))
                }
                Some(value) => *value = Value::String(REDACTED.into()),
                None => {}
            }
        }
    }
    shown
}

fn unified_diff(declared: Option<&Value>, live: Option<&Value>) -> String {
    // Shown to people who may copy it into Git: YAML kubectl reads back as
    // these values.
    let [declared, live]: [String; 2] =
        super::yaml::render_all(&[declared, live]).try_into().expect("two renderings for two values");
    TextDiff::from_lines(&declared, &live).unified_diff().context_radius(3).header("declared", "live").to_string()
}

// ---------------------------------------------------------------- paths

/// One step of a path, borrowed from the objects being compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// RFC 6901 pointer of a path.
fn pointer(path: &[Step<'_>]) -> String {
    let mut out = String::new();
    for step in path {
        out.push('/');
        match step {
            Step::Key(key) => out.push_str(&key.replace('~', "~0").replace('/', "~1")),
            Step::Index(index) => out.push_str(&index.to_string()),
        }
    }
    out
}

// ---------------------------------------------------------------- ignore rules

/// An ignore rule that applies to this object, parsed once per diff.
#[derive(Debug)]
struct Rule<'r> {
    /// Pointers split into unescaped segments; empty: every field.
    pointers: Vec<Vec<String>>,
    /// Empty: whoever owns the field.
    managers: &'r [String],
}

fn compile_rules<'r>(declared: &Value, rules: &'r [IgnoreRule]) -> Vec<Rule<'r>> {
    let kind = declared.get("kind").and_then(Value::as_str);
    let name = declared.pointer("/metadata/name").and_then(Value::as_str);
    rules
        .iter()
        .filter(|rule| rule.kind.as_deref().is_none_or(|wanted| Some(wanted) == kind))
        .filter(|rule| rule.name.as_deref().is_none_or(|wanted| Some(wanted) == name))
        .map(|rule| Rule {
            pointers: rule.json_pointers.iter().map(|p| split_pointer(p)).collect(),
            managers: &rule.field_managers,
        })
        .collect()
}

fn split_pointer(pointer: &str) -> Vec<String> {
    pointer
        .strip_prefix('/')
        .map(|rest| rest.split('/').map(|segment| segment.replace("~1", "/").replace("~0", "~")).collect())
        .unwrap_or_default()
}

/// Whether a rule pointer covers `path` (equal, or a prefix of it). A `*`
/// segment matches any one key or index, e.g. `/spec/template/spec/containers/*/image`.
fn pointer_covers(rule: &[String], path: &[Step<'_>]) -> bool {
    rule.len() <= path.len()
        && rule.iter().zip(path).all(|(segment, step)| match step {
            _ if segment == "*" => true,
            Step::Key(key) => segment == key,
            Step::Index(index) => segment.parse::<usize>().ok() == Some(*index),
        })
}

impl Rule<'_> {
    fn covers(&self, path: &[Step<'_>]) -> bool {
        self.pointers.is_empty() || self.pointers.iter().any(|pointer| pointer_covers(pointer, path))
    }
}

// ---------------------------------------------------------------- field managers

/// One `metadata.managedFields` entry. Its name decides nothing on its
/// own: it matters only where an ignore rule names it, or for a
/// controller's own field ([`server_fields::controller_of`]).
#[derive(Debug)]
struct Manager<'a> {
    name: &'a str,
    fields: &'a Map<String, Value>,
}

fn read_managers(live: &Value) -> Vec<Manager<'_>> {
    let Some(Value::Array(entries)) = live.pointer("/metadata/managedFields") else { return Vec::new() };
    entries
        .iter()
        // Entries of every subresource count: kube-controller-manager's
        // `status` entry also holds `deployment.kubernetes.io/revision`, and
        // `kubectl scale` writes `spec.replicas` through `scale`.
        .filter_map(|entry| {
            let name = entry.get("manager").and_then(Value::as_str).unwrap_or_default();
            let fields = entry.get("fieldsV1")?.as_object()?;
            Some(Manager { name, fields })
        })
        .collect()
}

/// The managers' fieldsV1 subtrees at the current path.
///
/// `atomic` marks the inside of a list a manager owns as a whole (`f:rules:
/// {}`): there the list's owners own every part of it.
#[derive(Debug, Clone, Default)]
struct Owners<'a> {
    entries: Vec<(usize, &'a Map<String, Value>)>,
    atomic: bool,
}

impl<'a> Owners<'a> {
    fn root(managers: &[Manager<'a>]) -> Owners<'a> {
        Owners { entries: managers.iter().enumerate().map(|(i, manager)| (i, manager.fields)).collect(), atomic: false }
    }

    /// The owners of field `key` of the current map.
    fn field(&self, key: &str, buffer: &mut String) -> Owners<'a> {
        if self.atomic {
            return self.clone();
        }
        buffer.clear();
        buffer.push_str("f:");
        buffer.push_str(key);
        self.child(|node| node.get(buffer.as_str()))
    }

    /// The owners of item `index` (`item` in live) of the current list.
    /// `name` is the item's fieldsV1 name when we can spell it (`k:{..}`,
    /// `v:..`); otherwise, or when it is spelled differently, the entries
    /// are searched.
    fn item(&self, index: usize, item: &Value, name: Option<&str>) -> Owners<'a> {
        if self.atomic {
            return self.clone();
        }
        self.child(|node| {
            name.and_then(|name| node.get(name))
                .or_else(|| node.iter().find(|(name, _)| names_item(name, index, item)).map(|(_, child)| child))
        })
    }

    fn child(&self, mut find: impl FnMut(&'a Map<String, Value>) -> Option<&'a Value>) -> Owners<'a> {
        let entries = self
            .entries
            .iter()
            .filter_map(|(manager, node)| find(node).and_then(Value::as_object).map(|child| (*manager, child)))
            .collect();
        Owners { entries, atomic: false }
    }

    /// Inside a list owned as a whole by the current owners.
    fn atomic(&self) -> Owners<'a> {
        Owners { entries: self.entries.clone(), atomic: true }
    }

    /// The managers that own this node itself: a leaf (`{}`), anything
    /// inside an atomic list and, with `created`, a map or item they created
    /// (`"."`).
    fn holders(&self, created: bool) -> impl Iterator<Item = usize> + '_ {
        self.entries
            .iter()
            .filter(move |(_, node)| self.atomic || node.is_empty() || (created && node.contains_key(".")))
            .map(|(manager, _)| *manager)
    }
}

/// Whether a fieldsV1 list-item name (`k:{..}`, `v:..`, `i:N`) names this item.
fn names_item(name: &str, index: usize, item: &Value) -> bool {
    if let Some(key) = name.strip_prefix("k:") {
        let Ok(Value::Object(key)) = serde_json::from_str::<Value>(key) else { return false };
        key.iter().all(|(field, value)| item.get(field).is_some_and(|live| scalars_equal(value, live)))
    } else if let Some(value) = name.strip_prefix("v:") {
        serde_json::from_str::<Value>(value).is_ok_and(|value| value == *item)
    } else if let Some(position) = name.strip_prefix("i:") {
        position.parse::<usize>().ok() == Some(index)
    } else {
        false
    }
}

// ---------------------------------------------------------------- list semantics

/// A key field of an associative list, with the server's default for it.
#[derive(Debug, Clone, Copy)]
struct KeyField {
    name: &'static str,
    default: Option<&'static str>,
}

const fn key(name: &'static str) -> KeyField {
    KeyField { name, default: None }
}

const PROTOCOL: KeyField = KeyField { name: "protocol", default: Some("TCP") };
const BY_NAME: &[KeyField] = &[key("name")];
const BY_TYPE: &[KeyField] = &[key("type")];
const BY_MOUNT_PATH: &[KeyField] = &[key("mountPath")];
const BY_DEVICE_PATH: &[KeyField] = &[key("devicePath")];
const BY_IP: &[KeyField] = &[key("ip")];
const BY_UID: &[KeyField] = &[key("uid")];
const TOPOLOGY_SPREAD: &[KeyField] = &[key("topologyKey"), key("whenUnsatisfiable")];
const CONTAINER_PORT: &[KeyField] = &[key("containerPort"), PROTOCOL];
const SERVICE_PORT: &[KeyField] = &[key("port"), PROTOCOL];

/// How the API server merges a list (its `x-kubernetes-list-type`).
#[derive(Debug, Clone, Copy)]
enum ListKind {
    /// Items merge by these keys.
    Map(&'static [KeyField]),
    /// Scalars, each at most once.
    Set,
    /// Replaced as a whole.
    Atomic,
}

/// The merge semantics of list field `field` (the built-in types' schema;
/// custom resources mostly follow the same conventions). Everything not
/// listed is atomic, e.g. RBAC `rules` and `subjects`, `tolerations`,
/// `args`, `command`.
fn list_kind(field: &str, declared: &[Value]) -> ListKind {
    let keys = match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "secrets"
        | "resourceClaims"
        | "webhooks" => BY_NAME,
        "conditions" => BY_TYPE,
        "volumeMounts" => BY_MOUNT_PATH,
        "volumeDevices" => BY_DEVICE_PATH,
        "hostAliases" => BY_IP,
        "ownerReferences" => BY_UID,
        "topologySpreadConstraints" => TOPOLOGY_SPREAD,
        "ports" if declared.iter().all(|item| item.get("containerPort").is_some()) => CONTAINER_PORT,
        "ports" if declared.iter().all(|item| item.get("port").is_some()) => SERVICE_PORT,
        "finalizers" => return ListKind::Set,
        _ => return ListKind::Atomic,
    };
    // An item without its key cannot be matched; compare such a list as a whole.
    let keyed = declared.iter().all(|item| keys.iter().all(|k| k.default.is_some() || item.get(k.name).is_some()));
    if keyed { ListKind::Map(keys) } else { ListKind::Atomic }
}

fn key_value<'v>(item: &'v Value, field: &KeyField) -> Option<std::borrow::Cow<'v, Value>> {
    match item.get(field.name) {
        Some(value) => Some(std::borrow::Cow::Borrowed(value)),
        None => field.default.map(|default| std::borrow::Cow::Owned(Value::String(default.to_owned()))),
    }
}

fn same_item(keys: &[KeyField], declared: &Value, live: &Value) -> bool {
    keys.iter().all(|field| match (key_value(declared, field), key_value(live, field)) {
        (Some(a), Some(b)) => scalars_equal(&a, &b),
        (None, None) => true,
        _ => false,
    })
}

/// The fieldsV1 name of a live keyed item, as the server writes it:
/// `k:` and the key fields as JSON with sorted keys.
fn item_key_name(keys: &[KeyField], live: &Value) -> String {
    let fields: Map<String, Value> = keys
        .iter()
        .filter_map(|field| live.get(field.name).map(|value| (field.name.to_owned(), value.clone())))
        .collect();
    format!("k:{}", Value::Object(fields))
}

// ---------------------------------------------------------------- the walk

/// What a subtree contributes to the two sides of the unified diff.
#[derive(Debug, Default)]
struct Views {
    declared: Option<Value>,
    live: Option<Value>,
}

impl Views {
    fn both(value: &Value) -> Views {
        Views { declared: Some(value.clone()), live: Some(value.clone()) }
    }
}

struct Walker<'a, 'o> {
    managers: &'o [Manager<'a>],
    rules: &'o [Rule<'o>],
    /// The declared object's kind, for the server's fields.
    kind: &'o str,
    /// The live object, for defaults that depend on other fields.
    live_root: &'a Value,
    is_secret: bool,
    /// Whether to build [`Views`]; the first walk only collects changes.
    build_view: bool,
    path: Vec<Step<'a>>,
    changes: Vec<FieldChange>,
    buffer: String,
}

impl<'a, 'o> Walker<'a, 'o> {
    fn new(
        managers: &'o [Manager<'a>],
        rules: &'o [Rule<'o>],
        kind: &'o str,
        is_secret: bool,
        build_view: bool,
    ) -> Self {
        Walker {
            managers,
            rules,
            kind,
            live_root: &Value::Null,
            is_secret,
            build_view,
            path: Vec::new(),
            changes: Vec::new(),
            buffer: String::new(),
        }
    }

    fn report(&mut self, kind: ChangeKind) {
        self.changes.push(FieldChange { path: pointer(&self.path), kind });
    }

    fn root(&mut self, declared: &'a Value, live: &'a Value) -> Views {
        self.live_root = live;
        let owners = Owners::root(self.managers);
        let (Value::Object(declared), Value::Object(live)) = (declared, live) else {
            if self.is_secret {
                // Live is not even an object: nothing to compare field by
                // field, and none of it may be shown.
                self.report(ChangeKind::Changed);
                let redacted = Value::String(REDACTED.into());
                return Views { declared: self.view(&redacted_secret(declared)), live: self.view(&redacted) };
            }
            return self.value(declared, Some(live), &owners, None, 0);
        };
        let mut views = self.map(declared, live, &owners, 0);
        if self.is_secret {
            let data = self.secret(declared, live, &owners);
            for (view, data) in [(&mut views.declared, data.declared), (&mut views.live, data.live)] {
                if let (Some(Value::Object(view)), Some(data)) = (view, data) {
                    view.insert("data".into(), data);
                }
            }
        }
        views
    }

    /// Whether a pointer-only rule drops the current path.
    fn ignored_path(&self) -> bool {
        self.rules.iter().any(|rule| rule.managers.is_empty() && rule.covers(&self.path))
    }

    /// Whether a rule with managers drops the current field: one of its
    /// managers holds the field, within its pointers. A declared map or item
    /// that such a manager merely created is still compared field by field
    /// (`created` false); a live-only one it created is its own (`created`
    /// true).
    fn ignored_owner(&self, owners: &Owners<'_>, created: bool) -> bool {
        self.rules.iter().any(|rule| {
            !rule.managers.is_empty()
                && rule.covers(&self.path)
                && owners.holders(created).any(|m| rule.managers.iter().any(|name| name == self.managers[m].name))
        })
    }

    /// Whether a live field nobody declared is exempt from drift: an ignore
    /// rule names it (or one of the managers that hold it), or it is one of
    /// the server's or controllers' fields ([`server_fields`]). Whose name
    /// the field carries decides nothing else.
    fn exempt(&self, live: &Value, owners: &Owners<'_>, parent: Option<&Map<String, Value>>) -> bool {
        if live.is_null() || self.ignored_path() || self.ignored_owner(owners, true) {
            return true;
        }
        if server_fields::is_server_set(self.kind, &self.path, live, parent, self.live_root) {
            return true;
        }
        server_fields::controller_of(self.kind, &self.path, self.live_root).is_some_and(|controller| {
            let mut holders = owners.holders(true).peekable();
            holders.peek().is_none() || holders.all(|m| self.managers[m].name == controller)
        })
    }

    /// Compares one declared value with the live one at the same path.
    fn value(
        &mut self,
        declared: &'a Value,
        live: Option<&'a Value>,
        owners: &Owners<'a>,
        parent: Option<&str>,
        depth: usize,
    ) -> Views {
        if self.ignored_path() || self.ignored_owner(owners, false) {
            return Views::default();
        }
        let Some(live) = live else {
            if is_dropped_by_server(declared, MAX_WALK_DEPTH.saturating_sub(depth)) {
                return self.views_equal(declared);
            }
            self.report(ChangeKind::Removed);
            return Views { declared: self.view(declared), live: None };
        };
        match (declared, live) {
            // A declared null asks for nothing (YAML `resources:` with no value).
            (Value::Null, _) => self.views_equal(live),
            (Value::Object(declared), Value::Object(live)) if depth < MAX_WALK_DEPTH => {
                self.map(declared, live, owners, depth + 1)
            }
            (Value::Array(declared), Value::Array(live)) if depth < MAX_WALK_DEPTH => {
                let field = match self.path.last() {
                    Some(Step::Key(field)) => field,
                    _ => "",
                };
                self.list(field, declared, live, owners, depth + 1)
            }
            _ => self.leaf(declared, live, parent),
        }
    }

    fn leaf(&mut self, declared: &'a Value, live: &'a Value, parent: Option<&str>) -> Views {
        let key = match self.path.last() {
            Some(Step::Key(key)) => Some(*key),
            _ => None,
        };
        let equal = match key {
            Some(key) if is_quantity_field(parent, key) => quantities_equal(declared, live),
            _ => scalars_equal(declared, live),
        };
        if equal {
            return self.views_equal(declared);
        }
        self.report(ChangeKind::Changed);
        Views { declared: self.view(declared), live: self.view(live) }
    }

    fn view(&self, value: &Value) -> Option<Value> {
        self.build_view.then(|| value.clone())
    }

    fn views_equal(&self, value: &Value) -> Views {
        if self.build_view { Views::both(value) } else { Views::default() }
    }

    /// Declared map keys must match; live-only keys are drift when foreign.
    fn map(
        &mut self,
        declared: &'a Map<String, Value>,
        live: &'a Map<String, Value>,
        owners: &Owners<'a>,
        depth: usize,
    ) -> Views {
        let parent = match self.path.last() {
            Some(Step::Key(key)) => Some(*key),
            _ => None,
        };
        let mut views = (Map::new(), Map::new());
        for (key, declared_value) in declared {
            if self.skipped(key) {
                continue;
            }
            self.path.push(Step::Key(key));
            let child = owners.field(key, &mut self.buffer);
            let child_views = self.value(declared_value, live.get(key), &child, parent, depth);
            self.path.pop();
            insert_views(&mut views, key, child_views);
        }
        for (key, live_value) in live {
            if declared.contains_key(key) || self.skipped(key) {
                continue;
            }
            self.path.push(Step::Key(key));
            let child = owners.field(key, &mut self.buffer);
            let added = self.foreign_additions(live_value, &child, Some(live), false, depth);
            self.path.pop();
            if let Some(added) = added {
                views.1.insert(key.clone(), added);
            }
        }
        if self.build_view {
            Views { declared: Some(Value::Object(views.0)), live: Some(Value::Object(views.1)) }
        } else {
            Views::default()
        }
    }

    /// Fields that are never compared, in either direction.
    fn skipped(&self, key: &str) -> bool {
        match self.path.as_slice() {
            [] => {
                matches!(key, "status" | "apiVersion" | "kind")
                    || (self.is_secret && matches!(key, "data" | "stringData"))
            }
            [Step::Key("metadata")] => SYSTEM_METADATA.contains(&key),
            [Step::Key("metadata"), Step::Key("annotations")] => key == LAST_APPLIED,
            _ => false,
        }
    }

    /// A live-only subtree: reports, and returns for the live view, the parts
    /// that are not exempt ([`Walker::exempt`]). Items and scalars are
    /// reported whole; maps by their fields, so `kubectl edit` adding
    /// `privileged: true` reports `.../securityContext/privileged`. `parent`
    /// is the live map holding the field.
    fn foreign_additions(
        &mut self,
        live: &'a Value,
        owners: &Owners<'a>,
        parent: Option<&'a Map<String, Value>>,
        is_item: bool,
        depth: usize,
    ) -> Option<Value> {
        if depth >= MAX_WALK_DEPTH || self.exempt(live, owners, parent) {
            return None;
        }
        match live {
            // An empty map is reported whole (a revert removes it: it is not
            // in Git); others by their fields.
            Value::Object(map) if !is_item && !map.is_empty() => {
                let mut added = Map::new();
                // kubectl's last-applied copy (a Secret's values included)
                // is never compared, also when all of metadata is live-only.
                for (key, value) in map {
                    if self.skipped(key) {
                        continue;
                    }
                    self.path.push(Step::Key(key));
                    let child = owners.field(key, &mut self.buffer);
                    if let Some(value) = self.foreign_additions(value, &child, Some(map), false, depth + 1) {
                        added.insert(key.clone(), value);
                    }
                    self.path.pop();
                }
                (!added.is_empty()).then_some(Value::Object(added))
            }
            // An empty list adds nothing.
            Value::Array(items) if items.is_empty() => None,
            Value::Array(items) if self.merged_by_item(items) => self.foreign_items(items, owners, depth),
            _ => {
                self.report(ChangeKind::Added);
                Some(self.redact(live))
            }
        }
    }

    /// Whether a live-only list is judged item by item (the server merges
    /// it by key, or as a set), rather than as a whole.
    fn merged_by_item(&self, items: &[Value]) -> bool {
        let field = match self.path.last() {
            Some(Step::Key(field)) => field,
            _ => "",
        };
        matches!(list_kind(field, items), ListKind::Map(_) | ListKind::Set)
    }

    /// Live items of a granularly owned list that nobody declared.
    fn foreign_items(&mut self, items: &'a [Value], owners: &Owners<'a>, depth: usize) -> Option<Value> {
        let mut added = Vec::new();
        for (index, item) in items.iter().enumerate() {
            self.path.push(Step::Index(index));
            let child = owners.item(index, item, None);
            if let Some(value) = self.foreign_additions(item, &child, None, true, depth + 1) {
                added.push(value);
            }
            self.path.pop();
        }
        (!added.is_empty()).then_some(Value::Array(added))
    }

    fn redact(&self, value: &Value) -> Value {
        let in_secret_data = self.is_secret && matches!(self.path.first(), Some(Step::Key("data" | "stringData")));
        if in_secret_data { Value::String(REDACTED.into()) } else { value.clone() }
    }

    fn list(
        &mut self,
        field: &str,
        declared: &'a [Value],
        live: &'a [Value],
        owners: &Owners<'a>,
        depth: usize,
    ) -> Views {
        // A list some manager owns as a whole (`f:rules: {}`) is atomic to
        // the server whatever our table says.
        let owned_whole = owners.atomic || owners.entries.iter().any(|(_, node)| node.is_empty());
        let views = match list_kind(field, declared) {
            ListKind::Map(keys) if !owned_whole => self.keyed_list(keys, declared, live, owners, depth),
            ListKind::Set if !owned_whole => self.set_list(declared, live, owners, depth),
            _ => self.atomic_list(declared, live, &owners.atomic(), depth),
        };
        if self.build_view {
            Views { declared: Some(Value::Array(views.0)), live: Some(Value::Array(views.1)) }
        } else {
            Views::default()
        }
    }

    /// Items match by key; each declared item must exist and match, extra
    /// live items are drift when foreign.
    fn keyed_list(
        &mut self,
        keys: &'static [KeyField],
        declared: &'a [Value],
        live: &'a [Value],
        owners: &Owners<'a>,
        depth: usize,
    ) -> (Vec<Value>, Vec<Value>) {
        let mut matched = vec![false; live.len()];
        let mut views = (Vec::new(), Vec::new());
        for (index, item) in declared.iter().enumerate() {
            let found =
                live.iter().enumerate().position(|(i, candidate)| !matched[i] && same_item(keys, item, candidate));
            let child_views = match found {
                Some(position) => {
                    matched[position] = true;
                    self.path.push(Step::Index(position));
                    let name = item_key_name(keys, &live[position]);
                    let child = owners.item(position, &live[position], Some(&name));
                    let views = self.value(item, Some(&live[position]), &child, None, depth);
                    self.path.pop();
                    views
                }
                None => {
                    self.path.push(Step::Index(index));
                    let views = self.missing_item(item);
                    self.path.pop();
                    views
                }
            };
            push_views(&mut views, child_views);
        }
        for (position, item) in live.iter().enumerate().filter(|(i, _)| !matched[*i]) {
            self.path.push(Step::Index(position));
            let name = item_key_name(keys, item);
            let child = owners.item(position, item, Some(&name));
            if let Some(added) = self.foreign_additions(item, &child, None, true, depth) {
                views.1.push(added);
            }
            self.path.pop();
        }
        views
    }

    fn missing_item(&mut self, item: &'a Value) -> Views {
        if self.ignored_path() {
            return Views::default();
        }
        self.report(ChangeKind::Removed);
        Views { declared: self.view(item), live: None }
    }

    /// Each declared value must be present; extra live values are drift
    /// when foreign (e.g. a finalizer someone added by hand).
    fn set_list(
        &mut self,
        declared: &'a [Value],
        live: &'a [Value],
        owners: &Owners<'a>,
        depth: usize,
    ) -> (Vec<Value>, Vec<Value>) {
        let mut views = (Vec::new(), Vec::new());
        for (index, item) in declared.iter().enumerate() {
            match live.iter().position(|candidate| scalars_equal(item, candidate)) {
                Some(_) => push_views(&mut views, self.views_equal(item)),
                None => {
                    self.path.push(Step::Index(index));
                    let child_views = self.missing_item(item);
                    self.path.pop();
                    push_views(&mut views, child_views);
                }
            }
        }
        for (position, item) in live.iter().enumerate() {
            if declared.iter().any(|wanted| scalars_equal(wanted, item)) {
                continue;
            }
            self.path.push(Step::Index(position));
            let name = format!("v:{item}");
            let child = owners.item(position, item, Some(&name));
            if let Some(added) = self.foreign_additions(item, &child, None, true, depth) {
                views.1.push(added);
            }
            self.path.pop();
        }
        views
    }

    /// Item by item, in order; the server keeps the list as sent, so a
    /// missing item is Removed and an extra one Added whoever wrote it.
    /// Inside items, apply semantics still hold: defaulted fields the
    /// manifest does not name are not drift.
    fn atomic_list(
        &mut self,
        declared: &'a [Value],
        live: &'a [Value],
        owners: &Owners<'a>,
        depth: usize,
    ) -> (Vec<Value>, Vec<Value>) {
        let mut views = (Vec::new(), Vec::new());
        for index in 0..declared.len().max(live.len()) {
            self.path.push(Step::Index(index));
            match (declared.get(index), live.get(index)) {
                (Some(item), live_item) => {
                    let child_views = self.value(item, live_item, owners, None, depth);
                    push_views(&mut views, child_views);
                }
                (None, Some(extra)) if !self.ignored_path() => {
                    self.report(ChangeKind::Added);
                    if self.build_view {
                        views.1.push(extra.clone());
                    }
                }
                _ => {}
            }
            self.path.pop();
        }
        views
    }

    /// A Secret's `data` and `stringData` against live `data`: compared as
    /// bytes, reported as `/data/<key>`, shown redacted, and live keys that
    /// neither declares are drift when foreign.
    fn secret(&mut self, declared: &'a Map<String, Value>, live: &'a Map<String, Value>, owners: &Owners<'a>) -> Views {
        let live_data = live.get("data").and_then(Value::as_object);
        let data_owners = owners.field("data", &mut self.buffer);
        let mut shown = (Map::new(), Map::new());
        let mut declared_keys: Vec<&str> = Vec::new();
        for field in ["data", "stringData"] {
            let Some(values) = declared.get(field) else { continue };
            self.path.push(Step::Key(field));
            let Value::Object(values) = values else {
                // Not a map: the server rejects it; say so without values.
                self.report(ChangeKind::Changed);
                self.path.pop();
                continue;
            };
            // Reported where the value lives: under `data`.
            self.path[0] = Step::Key("data");
            for (key, value) in values {
                // stringData wins over data for the same key, as on the server.
                if field == "data" && declared.get("stringData").and_then(|s| s.get(key)).is_some() {
                    continue;
                }
                declared_keys.push(key);
                self.path.push(Step::Key(key));
                let child = data_owners.field(key, &mut self.buffer);
                let live_value = live_data.and_then(|data| data.get(key));
                if let Some(changed) = self.secret_value(field, value, live_value, &child) {
                    insert_views(&mut shown, key, self.redacted_views(changed, live_value.is_some()));
                }
                self.path.pop();
            }
            self.path.pop();
        }
        self.path.push(Step::Key("data"));
        for (key, value) in live_data.into_iter().flatten().filter(|(key, _)| !declared_keys.contains(&key.as_str())) {
            self.path.push(Step::Key(key));
            let child = data_owners.field(key, &mut self.buffer);
            if !self.exempt(value, &child, live_data) {
                self.report(ChangeKind::Added);
                shown.1.insert(key.clone(), Value::String(REDACTED.into()));
            }
            self.path.pop();
        }
        self.path.pop();
        let has_data = !shown.0.is_empty() || !shown.1.is_empty();
        let build = self.build_view && has_data;
        Views { declared: build.then_some(Value::Object(shown.0)), live: build.then_some(Value::Object(shown.1)) }
    }

    /// Compares one Secret value: None when ignored, else whether it differs.
    fn secret_value(
        &mut self,
        field: &str,
        declared: &Value,
        live: Option<&Value>,
        owners: &Owners<'_>,
    ) -> Option<bool> {
        if self.ignored_path() || self.ignored_owner(owners, false) {
            return None;
        }
        let equal = match live {
            None => {
                self.report(ChangeKind::Removed);
                return Some(true);
            }
            Some(live) if field == "stringData" => secret_string_data_equal(declared, live),
            Some(live) => secret_data_equal(declared, live),
        };
        if !equal {
            self.report(ChangeKind::Changed);
        }
        Some(!equal)
    }

    fn redacted_views(&self, changed: bool, live_exists: bool) -> Views {
        if !self.build_view {
            return Views::default();
        }
        let live = if changed { REDACTED_CHANGED } else { REDACTED };
        Views { declared: Some(Value::String(REDACTED.into())), live: live_exists.then(|| Value::String(live.into())) }
    }
}

fn insert_views(views: &mut (Map<String, Value>, Map<String, Value>), key: &str, child: Views) {
    if let Some(declared) = child.declared {
        views.0.insert(key.to_owned(), declared);
    }
    if let Some(live) = child.live {
        views.1.insert(key.to_owned(), live);
    }
}

fn push_views(views: &mut (Vec<Value>, Vec<Value>), child: Views) {
    views.0.extend(child.declared);
    views.1.extend(child.live);
}

/// At most this many field paths per object in a summary.
pub const MAX_FIELDS: usize = 20;

fn describe(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Changed => "changed",
        ChangeKind::Added => "added",
        ChangeKind::Removed => "removed",
        ChangeKind::ObjectMissing => "deleted",
    }
}

/// The fields of a drifted object as status lists them: `path (kind)`.
pub fn fields(diff: &ObjectDiff) -> Vec<String> {
    diff.changes
        .iter()
        .take(MAX_FIELDS)
        .map(
            |c| {
                if c.path.is_empty() {
                    describe(c.kind).to_owned()
                } else {
                    format!("{} ({})", c.path, describe(c.kind))
                }
            },
        )
        .collect()
}

#[cfg(test)]
#[path = "diff_tests.rs"]
mod tests;
