//! Source parsing: the ConfigMaps a DesiredState names -> the objects they
//! declare, the Git revision they carry, or every reason they are invalid.
//!
//! Pure: the caller fetches the ConfigMaps and answers discovery questions
//! through a [`KindResolver`]. A source that fails here must make its
//! DesiredState `SourceValid=False` and stop all reverts, so every error says
//! exactly where it is (ConfigMap, key, document) and all are collected, not
//! just the first.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Read as _;

use base64::Engine as _;
use serde_json::{Map, Value};
use thiserror::Error;

use crate::api::ObjectRef;

/// The annotation on source ConfigMaps that carries the Git revision.
pub const REVISION_ANNOTATION: &str = "driftwarden.io/revision";
/// The most bytes one gzip-compressed key may expand to (a zip-bomb stop).
pub const MAX_DECOMPRESSED_BYTES: u64 = 8 * 1024 * 1024;
/// The most bytes all gzip-compressed keys of one set of sources may expand
/// to together: without it, many small keys that each stay under the
/// per-key limit would still exhaust the operator's memory.
pub const MAX_TOTAL_DECOMPRESSED_BYTES: u64 = 64 * 1024 * 1024;
/// The deepest nesting a declared object may have. Real manifests stay
/// below 20; the bound keeps every recursive walk (here and in the diff)
/// far from the stack's end.
pub const MAX_DEPTH: usize = 100;
/// The longest apiVersion (a DNS subdomain group, `/`, a DNS label version),
/// kind (a DNS label, as CRDs require), name (a DNS subdomain) and namespace
/// (a DNS label) accepted. Errors quote these fields, so the bounds also keep
/// every message short, whatever a source holds.
const MAX_API_VERSION_LEN: usize = 253 + 1 + 63;
const MAX_KIND_LEN: usize = 63;
const MAX_NAME_LEN: usize = 253;
const MAX_NAMESPACE_LEN: usize = 63;
/// The longest revision accepted (a SHA-256 object id is 64 characters; refs
/// such as `main@sha1:<40 hex>` stay well below this).
pub const MAX_REVISION_LEN: usize = 255;

/// One source ConfigMap, as far as parsing is concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceConfigMap {
    /// The ConfigMap's name, used in every error.
    pub name: String,
    /// `data`: text values.
    pub data: BTreeMap<String, String>,
    /// `binaryData`: raw bytes (already base64-decoded), plain or gzip.
    pub binary_data: BTreeMap<String, Vec<u8>>,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
    /// `metadata.labels` (the source label is part of what is signed).
    pub labels: BTreeMap<String, String>,
}

impl SourceConfigMap {
    /// Reads a ConfigMap as the API server returns it in JSON (`binaryData`
    /// values base64-encoded).
    pub fn from_value(config_map: &Value) -> Result<SourceConfigMap, ConfigMapError> {
        let name = config_map.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_owned();
        let invalid = |reason: String| ConfigMapError { config_map: name.clone(), reason };
        if name.is_empty() {
            return Err(invalid("missing metadata.name".into()));
        }
        let annotations = string_map(config_map.pointer("/metadata/annotations"))
            .map_err(|key| invalid(format!("annotation {key} is not a string")))?;
        let labels = string_map(config_map.pointer("/metadata/labels"))
            .map_err(|key| invalid(format!("label {key} is not a string")))?;
        let data =
            string_map(config_map.get("data")).map_err(|key| invalid(format!("data key {key} is not a string")))?;
        let encoded = string_map(config_map.get("binaryData"))
            .map_err(|key| invalid(format!("binaryData key {key} is not a string")))?;
        let mut binary_data = BTreeMap::new();
        for (key, text) in encoded {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.as_bytes())
                .map_err(|_| invalid(format!("binaryData key {key} is not base64")))?;
            binary_data.insert(key, bytes);
        }
        Ok(SourceConfigMap { name, data, binary_data, annotations, labels })
    }

    /// Reads a typed ConfigMap.
    pub fn from_config_map(config_map: &k8s_openapi::api::core::v1::ConfigMap) -> SourceConfigMap {
        SourceConfigMap {
            name: config_map.metadata.name.clone().unwrap_or_default(),
            data: config_map.data.clone().unwrap_or_default(),
            binary_data: config_map
                .binary_data
                .iter()
                .flatten()
                .map(|(key, bytes)| (key.clone(), bytes.0.clone()))
                .collect(),
            annotations: config_map.metadata.annotations.clone().unwrap_or_default(),
            labels: config_map.metadata.labels.clone().unwrap_or_default(),
        }
    }
}

/// A map of strings, or the first key whose value is not a string.
fn string_map(value: Option<&Value>) -> Result<BTreeMap<String, String>, String> {
    let Some(Value::Object(map)) = value else { return Ok(BTreeMap::new()) };
    map.iter()
        .map(|(key, value)| value.as_str().map(|text| (key.clone(), text.to_owned())).ok_or_else(|| key.clone()))
        .collect()
}

/// Whether a kind is namespaced or cluster-scoped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Lives in a namespace.
    Namespaced,
    /// Lives at cluster level.
    Cluster,
}

/// Answers discovery: is `(apiVersion, kind)` served, and with which scope.
/// `None` means the API server does not know the kind.
pub trait KindResolver {
    /// The scope of the kind, or None when the kind is unknown.
    fn scope(&self, api_version: &str, kind: &str) -> Option<Scope>;
}

impl<F> KindResolver for F
where
    F: Fn(&str, &str) -> Option<Scope>,
{
    fn scope(&self, api_version: &str, kind: &str) -> Option<Scope> {
        self(api_version, kind)
    }
}

/// Where a DesiredState may declare objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceScope<'a> {
    /// The DesiredState's namespace (the default for namespaced objects).
    pub namespace: &'a str,
    /// The operator's own namespace: a DesiredState there (the platform
    /// team's) may also declare cluster-scoped objects and other namespaces.
    pub operator_namespace: &'a str,
}

impl SourceScope<'_> {
    fn is_privileged(&self) -> bool {
        self.namespace == self.operator_namespace
    }
}

/// The identity of a declared or live object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// `apps/v1`, `v1`.
    pub api_version: String,
    /// `apps`; empty for the core group.
    pub group: String,
    /// `v1`.
    pub version: String,
    /// `Deployment`.
    pub kind: String,
    /// None for cluster-scoped objects.
    pub namespace: Option<String>,
    /// `metadata.name`.
    pub name: String,
}

impl ObjectKey {
    /// The reference used in DesiredState status.
    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// What makes two objects the same for the API server: the version does
    /// not (`apps/v1` and `apps/v1beta2` Deployments are one object).
    fn identity(&self) -> (&str, &str, Option<&str>, &str) {
        (&self.group, &self.kind, self.namespace.as_deref(), &self.name)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.group.is_empty() { "core" } else { &self.group };
        match &self.namespace {
            Some(namespace) => write!(f, "{}/{} {}/{}", group, self.kind, namespace, self.name),
            None => write!(f, "{}/{} {}", group, self.kind, self.name),
        }
    }
}

/// Where a declared object came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The ConfigMap's name.
    pub config_map: String,
    /// The key in `data` or `binaryData`.
    pub key: String,
    /// 0-based index of the YAML document (or JSON value) in the key.
    pub document: usize,
    /// 0-based index in `items` when the document is a `kind: List`.
    pub item: Option<usize>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "configmap {} key {} document {}", self.config_map, self.key, self.document)?;
        if let Some(item) = self.item {
            write!(f, " item {item}")?;
        }
        Ok(())
    }
}

/// One object a source declares.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredObject {
    /// Its identity (namespace already defaulted).
    pub key: ObjectKey,
    /// The manifest, with `metadata.namespace` set for namespaced objects.
    pub object: Value,
    /// Where it was declared.
    pub origin: Origin,
}

/// Everything a valid set of sources declares.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedSources {
    /// The Git revision, when the ConfigMaps carry one.
    pub revision: Option<String>,
    /// The declared objects, in source order.
    pub objects: Vec<DeclaredObject>,
}

/// A source ConfigMap that cannot be read at all.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("configmap {config_map}: {reason}")]
pub struct ConfigMapError {
    /// The ConfigMap's name (may be empty when that is what is wrong).
    pub config_map: String,
    /// What is wrong.
    pub reason: String,
}

impl From<ConfigMapError> for SourceError {
    fn from(error: ConfigMapError) -> Self {
        SourceError::ConfigMap { config_map: error.config_map, reason: error.reason }
    }
}

/// Why one source is invalid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SourceError {
    /// The ConfigMap itself is malformed.
    #[error("configmap {config_map}: {reason}")]
    ConfigMap {
        /// The ConfigMap's name (may be empty when that is what is wrong).
        config_map: String,
        /// What is wrong.
        reason: String,
    },
    /// A key cannot be read as text.
    #[error("configmap {config_map} key {key}: {reason}")]
    Key {
        /// The ConfigMap's name.
        config_map: String,
        /// The key.
        key: String,
        /// What is wrong.
        reason: KeyError,
    },
    /// A document is not a valid object, or one this DesiredState may declare.
    #[error("{origin}: {reason}")]
    Document {
        /// Where.
        origin: Origin,
        /// What is wrong.
        reason: DocumentError,
    },
    /// The revision annotation is malformed.
    #[error("configmap {config_map} annotation {REVISION_ANNOTATION}: {reason}")]
    Revision {
        /// The ConfigMap's name.
        config_map: String,
        /// What is wrong.
        reason: RevisionError,
    },
    /// Two ConfigMaps name different revisions (or only one names any).
    #[error(
        "configmaps disagree on {REVISION_ANNOTATION}: {first} has {}, {second} has {}",
        show_revision(.first_revision), show_revision(.second_revision)
    )]
    RevisionMismatch {
        /// The first ConfigMap.
        first: String,
        /// Its revision.
        first_revision: Option<String>,
        /// A ConfigMap that disagrees.
        second: String,
        /// Its revision.
        second_revision: Option<String>,
    },
}

fn show_revision(revision: &Option<String>) -> String {
    revision.as_deref().map_or_else(|| "none".to_owned(), |revision| format!("{revision:?}"))
}

/// Why a key cannot be read as text.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    /// Decompressed beyond [`MAX_DECOMPRESSED_BYTES`].
    #[error("gzip data expands beyond {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The gzip keys read so far expand beyond [`MAX_TOTAL_DECOMPRESSED_BYTES`].
    #[error("all gzip data of these sources together expands beyond {limit} bytes")]
    TotalTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// Starts like gzip but does not decompress.
    #[error("invalid gzip data: {0}")]
    Gzip(String),
    /// Neither gzip nor UTF-8 text.
    #[error("not UTF-8 text (invalid byte at offset {valid_up_to})")]
    NotUtf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
}

/// Why a document is not a valid declared object.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DocumentError {
    /// Not YAML (or JSON) at all.
    #[error("invalid YAML: {0}")]
    Yaml(String),
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("nested deeper than {limit} levels")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// An identity field longer than Kubernetes allows.
    #[error("{field} is {len} bytes long (at most {limit})")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The most allowed.
        limit: usize,
    },
    /// Not a mapping.
    #[error("expected an object (a mapping), found {0}")]
    NotAnObject(&'static str),
    /// A required field is absent or empty.
    #[error("missing {0}")]
    Missing(&'static str),
    /// A field has the wrong type.
    #[error("{field} must be a {expected}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// The type it must have.
        expected: &'static str,
    },
    /// apiVersion is not `version` or `group/version`.
    #[error("invalid apiVersion {0:?}")]
    BadApiVersion(String),
    /// The API server does not serve the kind.
    #[error("unknown kind {kind} in {api_version} (not served by the API server)")]
    UnknownKind {
        /// The apiVersion.
        api_version: String,
        /// The kind.
        kind: String,
    },
    /// A namespaced object outside the DesiredState's namespace.
    #[error(
        "{object} is outside namespace {allowed}; only a DesiredState in namespace {operator} may manage other namespaces"
    )]
    OtherNamespace {
        /// The object.
        object: String,
        /// The DesiredState's namespace.
        allowed: String,
        /// The operator's namespace.
        operator: String,
    },
    /// A cluster-scoped object declared outside the operator's namespace.
    #[error(
        "{object} is cluster-scoped; only a DesiredState in namespace {operator} may manage cluster-scoped objects"
    )]
    ClusterScoped {
        /// The object.
        object: String,
        /// The operator's namespace.
        operator: String,
    },
    /// A metadata field kubectl decodes into its Go type holds another type
    /// (kubectl refuses the file; the API server would refuse the object).
    #[error("{path} must be {expected}, found {found}{}", type_hint(.found))]
    FieldType {
        /// Where, e.g. `metadata.labels.tier`.
        path: String,
        /// The type it must have.
        expected: &'static str,
        /// The type it has.
        found: &'static str,
    },
    /// A value the API server cannot decode into its field's type: the
    /// object could never be applied, nor a drift on it reverted.
    #[error(
        "{path} must be {expected} (the API's type for {kind}), found {found}{}",
        type_hint(.found)
    )]
    SchemaType {
        /// The kind.
        kind: String,
        /// Where, e.g. `spec.replicas`.
        path: String,
        /// The field's type.
        expected: String,
        /// The declared value's type.
        found: String,
    },
    /// The same object is declared twice.
    #[error("{object} is declared twice (first in {first})")]
    Duplicate {
        /// The object.
        object: String,
        /// Where it was declared first.
        first: Origin,
    },
}

/// Numbers and booleans where text belongs are mostly YAML 1.1 at work.
fn type_hint(found: &str) -> &'static str {
    if found == "a number" || found == "an integer" || found == "a boolean" {
        " (quote the value: kubectl reads an unquoted 0x1F, 017, 1_000, yes, on or y as a number or a boolean)"
    } else {
        ""
    }
}

/// Why a revision annotation is rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RevisionError {
    /// Empty.
    #[error("empty revision")]
    Empty,
    /// Longer than [`MAX_REVISION_LEN`].
    #[error("revision is {len} bytes long (at most {MAX_REVISION_LEN})")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// Contains a character no commit id or ref has.
    #[error("character {character:?} at byte {at} is not allowed in a revision (a git commit id or ref)")]
    BadCharacter {
        /// The character.
        character: char,
        /// Its byte offset.
        at: usize,
    },
}

/// All the reasons a set of sources is invalid (never empty).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{}", join_errors(.0))]
pub struct SourceErrors(pub Vec<SourceError>);

fn join_errors(errors: &[SourceError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// Parses the source ConfigMaps of one DesiredState.
///
/// Returns the declared objects and the revision, or every error found.
/// ConfigMaps are read in name order so that "declared twice" always names
/// the same first place.
pub fn parse_sources(
    sources: &[SourceConfigMap],
    scope: &SourceScope<'_>,
    resolver: &dyn KindResolver,
) -> Result<ParsedSources, SourceErrors> {
    let mut ordered: Vec<&SourceConfigMap> = sources.iter().collect();
    ordered.sort_by(|a, b| a.name.cmp(&b.name));

    let mut errors = Vec::new();
    let revision = read_revision(&ordered, &mut errors);
    let mut objects = Vec::new();
    let mut budget = MAX_TOTAL_DECOMPRESSED_BYTES;
    for config_map in &ordered {
        for (key, text) in source_texts(config_map, &mut budget, &mut errors) {
            let context = DocumentContext { config_map: &config_map.name, key, scope, resolver };
            parse_text(&text, &context, &mut objects, &mut errors);
        }
    }
    reject_duplicates(&objects, &mut errors);
    if errors.is_empty() { Ok(ParsedSources { revision, objects }) } else { Err(SourceErrors(errors)) }
}

/// The revision all ConfigMaps agree on. A ConfigMap without the annotation
/// disagrees with one that has it: the state would mix commits.
fn read_revision(config_maps: &[&SourceConfigMap], errors: &mut Vec<SourceError>) -> Option<String> {
    let mut first: Option<(&str, Option<&str>)> = None;
    for config_map in config_maps {
        let revision = config_map.annotations.get(REVISION_ANNOTATION).map(String::as_str);
        if let Some(revision) = revision
            && let Err(reason) = validate_revision(revision)
        {
            errors.push(SourceError::Revision { config_map: config_map.name.clone(), reason });
            continue;
        }
        match first {
            None => first = Some((&config_map.name, revision)),
            Some((first_name, first_revision)) if first_revision != revision => {
                errors.push(SourceError::RevisionMismatch {
                    first: first_name.to_owned(),
                    first_revision: first_revision.map(str::to_owned),
                    second: config_map.name.clone(),
                    second_revision: revision.map(str::to_owned),
                });
            }
            Some(_) => {}
        }
    }
    first.and_then(|(_, revision)| revision).map(str::to_owned)
}

/// Accepts git object ids and refs (`3f2a...`, `v1.2.0`, `main@sha1:3f2a...`,
/// `refs/heads/main`); rejects whitespace, control characters and anything
/// that could not come from Git, so the value is safe to show in status.
pub fn validate_revision(revision: &str) -> Result<(), RevisionError> {
    if revision.is_empty() {
        return Err(RevisionError::Empty);
    }
    if revision.len() > MAX_REVISION_LEN {
        return Err(RevisionError::TooLong { len: revision.len() });
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._-/:@+".contains(c);
    match revision.char_indices().find(|(_, c)| !allowed(*c)) {
        Some((at, character)) => Err(RevisionError::BadCharacter { character, at }),
        None => Ok(()),
    }
}

/// Every key of a ConfigMap as text, `data` first, then `binaryData`
/// (gunzipped when it starts with the gzip magic, within what is left of
/// `budget`).
fn source_texts<'a>(
    config_map: &'a SourceConfigMap,
    budget: &mut u64,
    errors: &mut Vec<SourceError>,
) -> Vec<(&'a str, Cow<'a, str>)> {
    let mut texts: Vec<(&str, Cow<'a, str>)> =
        config_map.data.iter().map(|(key, text)| (key.as_str(), Cow::Borrowed(text.as_str()))).collect();
    for (key, bytes) in &config_map.binary_data {
        match decode_within(bytes, budget) {
            Ok(text) => texts.push((key, Cow::Owned(text))),
            Err(reason) => {
                errors.push(SourceError::Key { config_map: config_map.name.clone(), key: key.clone(), reason })
            }
        }
    }
    texts
}

/// gzip (by its magic bytes) or plain UTF-8, as text.
pub fn decode_binary(bytes: &[u8]) -> Result<String, KeyError> {
    let mut budget = MAX_DECOMPRESSED_BYTES;
    decode_within(bytes, &mut budget)
}

/// [`decode_binary`], taking what gzip expands to from `budget`.
fn decode_within(bytes: &[u8], budget: &mut u64) -> Result<String, KeyError> {
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        let limit = MAX_DECOMPRESSED_BYTES.min(*budget);
        let out = gunzip(bytes, limit).map_err(|error| match error {
            KeyError::TooLarge { .. } if limit < MAX_DECOMPRESSED_BYTES => {
                KeyError::TotalTooLarge { limit: MAX_TOTAL_DECOMPRESSED_BYTES }
            }
            error => error,
        })?;
        *budget -= out.len() as u64;
        out
    } else {
        bytes.to_vec()
    };
    String::from_utf8(bytes).map_err(|error| KeyError::NotUtf8 { valid_up_to: error.utf8_error().valid_up_to() })
}

fn gunzip(bytes: &[u8], limit: u64) -> Result<Vec<u8>, KeyError> {
    let mut out = Vec::new();
    // Reading one byte past the limit tells "exactly at the limit" from "over".
    flate2::read::MultiGzDecoder::new(bytes)
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|error| KeyError::Gzip(error.to_string()))?;
    if out.len() as u64 > limit {
        return Err(KeyError::TooLarge { limit: MAX_DECOMPRESSED_BYTES });
    }
    Ok(out)
}

/// What every document of one key shares.
struct DocumentContext<'a> {
    config_map: &'a str,
    key: &'a str,
    scope: &'a SourceScope<'a>,
    resolver: &'a dyn KindResolver,
}

impl DocumentContext<'_> {
    fn origin(&self, document: usize, item: Option<usize>) -> Origin {
        Origin { config_map: self.config_map.to_owned(), key: self.key.to_owned(), document, item }
    }
}

/// Parses one key's text into objects (or errors).
fn parse_text(
    text: &str,
    context: &DocumentContext<'_>,
    objects: &mut Vec<DeclaredObject>,
    errors: &mut Vec<SourceError>,
) {
    for (document, parsed) in split_documents(text).into_iter().enumerate() {
        let value = match parsed {
            Ok(value) => value,
            Err(reason) => {
                errors.push(SourceError::Document { origin: context.origin(document, None), reason });
                continue;
            }
        };
        if value.is_null() {
            continue; // an empty document (`---` twice, or only comments)
        }
        for (item, value) in expand_list(value, context, document, errors) {
            let origin = context.origin(document, item);
            match declared_object(value, context) {
                Ok((key, object)) => objects.push(DeclaredObject { key, object, origin }),
                Err(reason) => errors.push(SourceError::Document { origin, reason }),
            }
        }
    }
}

/// The documents of one key, read as kubectl reads a file (see
/// [`super::yaml`]). A syntax error ends the key: kubectl stops there too.
fn split_documents(text: &str) -> Vec<Result<Value, DocumentError>> {
    // The YAML parser's cost per character grows with flow nesting; refuse
    // what would be too deep anyway before it starts.
    if let Some(document) = flow_too_deep(text, MAX_DEPTH) {
        let mut documents: Vec<Result<Value, DocumentError>> = vec![Ok(Value::Null); document];
        documents.push(Err(DocumentError::TooDeep { limit: MAX_DEPTH }));
        return documents;
    }
    super::yaml::read_documents(text, MAX_DEPTH)
        .into_iter()
        .map(|document| {
            document.map_err(|error| match error {
                super::yaml::ReadError::Syntax(message) => DocumentError::Yaml(message),
                super::yaml::ReadError::TooDeep => DocumentError::TooDeep { limit: MAX_DEPTH },
            })
        })
        .collect()
}

/// The document (0-based) in which flow collections (`[`, `{`) nest deeper
/// than `limit`, if any. Every bracket counts, in strings and comments too:
/// a cheap scan that nothing can hide nesting from, and no real manifest
/// holds a hundred unclosed brackets.
fn flow_too_deep(text: &str, limit: usize) -> Option<usize> {
    let (mut document, mut depth, mut content) = (0usize, 0usize, false);
    for line in text.split(['\n', '\r']) {
        let mut rest = line.as_bytes();
        if let Some(after) = rest.strip_prefix(b"---")
            && after.first().is_none_or(u8::is_ascii_whitespace)
        {
            // A marker before any content opens document 0; later ones the next.
            document += usize::from(content);
            (content, rest) = (true, after);
        }
        content |= rest.trim_ascii_start().first().is_some_and(|b| *b != b'#');
        for &byte in rest {
            match byte {
                b'[' | b'{' => depth += 1,
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
            if depth > limit {
                return Some(document);
            }
        }
    }
    None
}

/// Whether `value` nests deeper than `limit`; iterative, so any input is safe.
pub fn depth_exceeds(value: &Value, limit: usize) -> bool {
    let mut stack = vec![(value, 1usize)];
    while let Some((value, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        if depth > limit {
            return true;
        }
        stack.extend(children.map(|child| (child, depth + 1)));
    }
    false
}

/// A `kind: List` (apiVersion v1) becomes its items, each with its index;
/// any other document stays as it is.
fn expand_list(
    value: Value,
    context: &DocumentContext<'_>,
    document: usize,
    errors: &mut Vec<SourceError>,
) -> Vec<(Option<usize>, Value)> {
    let is_list = value.get("apiVersion").and_then(Value::as_str) == Some("v1")
        && value.get("kind").and_then(Value::as_str) == Some("List");
    if !is_list {
        return vec![(None, value)];
    }
    match value.get("items") {
        Some(Value::Array(items)) => items.iter().cloned().enumerate().map(|(i, item)| (Some(i), item)).collect(),
        None | Some(Value::Null) => Vec::new(),
        Some(_) => {
            let reason = DocumentError::WrongType { field: "items", expected: "list" };
            errors.push(SourceError::Document { origin: context.origin(document, None), reason });
            Vec::new()
        }
    }
}

/// Validates one object and checks it against the DesiredState's scope.
fn declared_object(mut value: Value, context: &DocumentContext<'_>) -> Result<(ObjectKey, Value), DocumentError> {
    let Value::Object(object) = &mut value else { return Err(DocumentError::NotAnObject(type_name(&value))) };
    let api_version = required_string(object, "apiVersion", "apiVersion")?;
    let kind = required_string(object, "kind", "kind")?;
    check_length("apiVersion", &api_version, MAX_API_VERSION_LEN)?;
    check_length("kind", &kind, MAX_KIND_LEN)?;
    let (group, version) = split_api_version(&api_version)?;
    let metadata = match object.get_mut("metadata") {
        Some(Value::Object(metadata)) => metadata,
        None | Some(Value::Null) => return Err(DocumentError::Missing("metadata.name")),
        Some(_) => return Err(DocumentError::WrongType { field: "metadata", expected: "mapping" }),
    };
    let name = required_string(metadata, "name", "metadata.name")?;
    check_metadata_types(metadata)?;
    check_length("metadata.name", &name, MAX_NAME_LEN)?;
    let declared_namespace = match metadata.get("namespace") {
        None | Some(Value::Null) => None,
        Some(Value::String(namespace)) if namespace.is_empty() => None,
        Some(Value::String(namespace)) => {
            check_length("metadata.namespace", namespace, MAX_NAMESPACE_LEN)?;
            Some(namespace.clone())
        }
        Some(_) => return Err(DocumentError::WrongType { field: "metadata.namespace", expected: "string" }),
    };
    let scope = context
        .resolver
        .scope(&api_version, &kind)
        .ok_or_else(|| DocumentError::UnknownKind { api_version: api_version.clone(), kind: kind.clone() })?;
    let mut key = ObjectKey { api_version, group, version, kind, namespace: None, name };
    match scope {
        Scope::Namespaced => {
            let namespace = declared_namespace.unwrap_or_else(|| context.scope.namespace.to_owned());
            metadata.insert("namespace".into(), Value::String(namespace.clone()));
            key.namespace = Some(namespace);
            check_namespace(&key, context.scope)?;
        }
        Scope::Cluster => {
            // kubectl and the API server ignore a namespace on a
            // cluster-scoped object; drop it so the diff does not see it.
            metadata.remove("namespace");
            check_cluster_scope(&key, context.scope)?;
        }
    }
    if let Some(mismatch) = super::schema::type_mismatch(&key.group, &key.version, &key.kind, &value) {
        return Err(DocumentError::SchemaType {
            kind: key.kind,
            path: mismatch.path,
            expected: mismatch.expected,
            found: mismatch.found,
        });
    }
    Ok((key, value))
}

/// kubectl decodes `metadata` of every object into its Go type
/// (metav1.ObjectMeta) and refuses the file when a field does not fit; so
/// does this. `null` fits anything, as in Go; unknown fields are ignored.
fn check_metadata_types(metadata: &Map<String, Value>) -> Result<(), DocumentError> {
    const STRINGS: [&str; 6] = ["name", "generateName", "namespace", "selfLink", "uid", "resourceVersion"];
    for (field, value) in metadata {
        let path = format!("metadata.{}", short_key(field));
        match field.as_str() {
            field if STRINGS.contains(&field) => expect_string(value, &path)?,
            "generation" | "deletionGracePeriodSeconds" => expect_integer(value, &path)?,
            "creationTimestamp" | "deletionTimestamp" => expect_time(value, &path)?,
            "labels" | "annotations" => {
                for (key, value) in expect_map(value, &path)? {
                    expect_string(value, &format!("{path}.{}", short_key(key)))?;
                }
            }
            "finalizers" => {
                for (index, value) in expect_list(value, &path)?.iter().enumerate() {
                    expect_string(value, &format!("{path}[{index}]"))?;
                }
            }
            "ownerReferences" => {
                for (index, reference) in expect_list(value, &path)?.iter().enumerate() {
                    let path = format!("{path}[{index}]");
                    for (key, value) in expect_map(reference, &path)? {
                        let path = format!("{path}.{}", short_key(key));
                        match key.as_str() {
                            "apiVersion" | "kind" | "name" | "uid" => expect_string(value, &path)?,
                            "controller" | "blockOwnerDeletion" => expect_bool(value, &path)?,
                            _ => {}
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Keys quoted in errors are cut short: errors end up in status and Events.
fn short_key(key: &str) -> Cow<'_, str> {
    match key.char_indices().nth(64) {
        Some((at, _)) => Cow::Owned(format!("{}...", &key[..at])),
        None => Cow::Borrowed(key),
    }
}

fn field_type(path: &str, expected: &'static str, value: &Value) -> DocumentError {
    DocumentError::FieldType { path: path.to_owned(), expected, found: type_name(value) }
}

fn expect_string(value: &Value, path: &str) -> Result<(), DocumentError> {
    if matches!(value, Value::String(_) | Value::Null) { Ok(()) } else { Err(field_type(path, "a string", value)) }
}

fn expect_bool(value: &Value, path: &str) -> Result<(), DocumentError> {
    if matches!(value, Value::Bool(_) | Value::Null) { Ok(()) } else { Err(field_type(path, "a boolean", value)) }
}

fn expect_integer(value: &Value, path: &str) -> Result<(), DocumentError> {
    match value {
        Value::Null => Ok(()),
        Value::Number(number) if number.is_i64() => Ok(()),
        _ => Err(field_type(path, "an integer", value)),
    }
}

fn expect_map<'a>(value: &'a Value, path: &str) -> Result<Vec<(&'a String, &'a Value)>, DocumentError> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Object(map) => Ok(map.iter().collect()),
        _ => Err(field_type(path, "a mapping", value)),
    }
}

fn expect_list<'a>(value: &'a Value, path: &str) -> Result<&'a [Value], DocumentError> {
    match value {
        Value::Null => Ok(&[]),
        Value::Array(items) => Ok(items),
        _ => Err(field_type(path, "a list", value)),
    }
}

/// metav1.Time: null, or RFC 3339 text (`2026-12-01T10:00:00Z`).
fn expect_time(value: &Value, path: &str) -> Result<(), DocumentError> {
    match value {
        Value::Null => Ok(()),
        Value::String(text)
            if time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).is_ok() =>
        {
            Ok(())
        }
        Value::String(_) => {
            Err(DocumentError::FieldType { path: path.to_owned(), expected: "an RFC 3339 time", found: "other text" })
        }
        _ => Err(field_type(path, "an RFC 3339 time", value)),
    }
}

fn check_namespace(key: &ObjectKey, scope: &SourceScope<'_>) -> Result<(), DocumentError> {
    if scope.is_privileged() || key.namespace.as_deref() == Some(scope.namespace) {
        return Ok(());
    }
    Err(DocumentError::OtherNamespace {
        object: key.to_string(),
        allowed: scope.namespace.to_owned(),
        operator: scope.operator_namespace.to_owned(),
    })
}

fn check_cluster_scope(key: &ObjectKey, scope: &SourceScope<'_>) -> Result<(), DocumentError> {
    if scope.is_privileged() {
        return Ok(());
    }
    Err(DocumentError::ClusterScoped { object: key.to_string(), operator: scope.operator_namespace.to_owned() })
}

fn check_length(field: &'static str, value: &str, limit: usize) -> Result<(), DocumentError> {
    if value.len() > limit { Err(DocumentError::TooLong { field, len: value.len(), limit }) } else { Ok(()) }
}

fn required_string(map: &Map<String, Value>, field: &str, label: &'static str) -> Result<String, DocumentError> {
    match map.get(field) {
        None | Some(Value::Null) => Err(DocumentError::Missing(label)),
        Some(Value::String(text)) if text.is_empty() => Err(DocumentError::Missing(label)),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(_) => Err(DocumentError::WrongType { field: label, expected: "string" }),
    }
}

/// `apps/v1` -> ("apps", "v1"); `v1` -> ("", "v1").
fn split_api_version(api_version: &str) -> Result<(String, String), DocumentError> {
    let bad = || DocumentError::BadApiVersion(api_version.to_owned());
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let well_formed = |part: &str| part.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    let group_ok = !api_version.contains('/') || !group.is_empty();
    if version.is_empty() || !group_ok || !well_formed(group) || !well_formed(version) {
        return Err(bad());
    }
    Ok((group.to_owned(), version.to_owned()))
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn reject_duplicates(objects: &[DeclaredObject], errors: &mut Vec<SourceError>) {
    let mut seen: HashMap<(&str, &str, Option<&str>, &str), &Origin> = HashMap::new();
    for object in objects {
        if let Some(first) = seen.get(&object.key.identity()) {
            let reason = DocumentError::Duplicate { object: object.key.to_string(), first: (*first).clone() };
            errors.push(SourceError::Document { origin: object.origin.clone(), reason });
        } else {
            seen.insert(object.key.identity(), &object.origin);
        }
    }
}

#[cfg(test)]
#[path = "source_tests.rs"]
mod tests;
