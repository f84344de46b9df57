//! Generators shared by the targets: JSON values shaped like Kubernetes
//! objects (field names the diff treats specially come up often), and text
//! mutations that turn valid documents into almost-valid ones.

use proptest::prelude::*;
use serde_json::{Map, Value};

/// Field names with special meaning somewhere in the parser or diff.
pub const FIELD_NAMES: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "labels",
    "annotations",
    "managedFields",
    "spec",
    "status",
    "data",
    "stringData",
    "items",
    "containers",
    "initContainers",
    "env",
    "ports",
    "port",
    "containerPort",
    "protocol",
    "volumes",
    "volumeMounts",
    "mountPath",
    "finalizers",
    "rules",
    "conditions",
    "type",
    "resources",
    "limits",
    "requests",
    "cpu",
    "memory",
    "replicas",
    "value",
    "target",
    "sizeLimit",
    "topologySpreadConstraints",
    "topologyKey",
    "whenUnsatisfiable",
    "ownerReferences",
    "uid",
    "~",
    "/",
    "a/b~c",
    "",
];

/// Scalars the normalizer treats specially, or that look like other types.
const TRICKY: &[&str] =
    &["500m", "0.5", "1Gi", "1024Mi", "1e3", "TCP", "UDP", "8080", "-1", "0", "true", "null", "~", "é", "\u{200b}"];

/// One string of `pool`.
pub fn pick(pool: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(pool).prop_map(str::to_owned)
}

/// A string that is often a field name, a quantity or a number-like text.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => pick(FIELD_NAMES),
        2 => pick(TRICKY),
        2 => "[a-z0-9-]{0,12}",
        1 => any::<String>(),
    ]
}

/// A map key: mostly field names.
pub fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => pick(FIELD_NAMES),
        1 => "[a-zA-Z0-9.:/~_-]{0,10}",
        1 => any::<String>(),
    ]
}

/// A scalar JSON value.
pub fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-3i64..3).prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        text().prop_map(Value::String),
    ]
}

/// Any JSON value, at most `depth` levels of maps and lists.
pub fn json(depth: u32) -> impl Strategy<Value = Value> {
    scalar().prop_recursive(depth, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(key(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

/// Edits applied to a text: truncate, insert, delete, duplicate a line.
#[derive(Debug, Clone)]
pub enum TextEdit {
    Truncate(usize),
    Insert(usize, String),
    Delete(usize, usize),
    DuplicateLine(usize),
}

pub fn text_edit() -> impl Strategy<Value = TextEdit> {
    prop_oneof![
        any::<usize>().prop_map(TextEdit::Truncate),
        (
            any::<usize>(),
            prop_oneof![
                Just(":".to_owned()),
                Just("- ".to_owned()),
                Just("\n  ".to_owned()),
                Just("---\n".to_owned()),
                Just("{".to_owned()),
                Just("&a ".to_owned()),
                Just("*a".to_owned()),
                Just("!!binary ".to_owned()),
                Just("\t".to_owned()),
                any::<String>()
            ]
        )
            .prop_map(|(at, s)| TextEdit::Insert(at, s)),
        (any::<usize>(), 0usize..20).prop_map(|(at, n)| TextEdit::Delete(at, n)),
        any::<usize>().prop_map(TextEdit::DuplicateLine),
    ]
}

fn boundary(text: &str, at: usize) -> usize {
    let mut at = at % (text.len() + 1);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Applies `edits` in order.
pub fn mutate(mut text: String, edits: &[TextEdit]) -> String {
    for edit in edits {
        match edit {
            TextEdit::Truncate(at) => text.truncate(boundary(&text, *at)),
            TextEdit::Insert(at, inserted) => text.insert_str(boundary(&text, *at), inserted),
            TextEdit::Delete(at, n) => {
                let start = boundary(&text, *at);
                let end = boundary(&text, start + n);
                if end > start {
                    text.replace_range(start..end, "");
                }
            }
            TextEdit::DuplicateLine(n) => {
                let lines: Vec<&str> = text.lines().collect();
                if !lines.is_empty() {
                    let line = lines[n % lines.len()].to_owned();
                    text = format!("{text}\n{line}\n");
                }
            }
        }
    }
    text
}
