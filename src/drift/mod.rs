//! The drift engine's pure core: parse source ConfigMaps into declared
//! objects ([`source`]), normalize what the API server normalizes
//! ([`normalize`]) and diff declared against live objects with apply
//! semantics ([`diff`]).
//!
//! No Kubernetes client, no I/O, no async: the drift controller fetches the
//! ConfigMaps and live objects, hands them over as `serde_json::Value`, and
//! acts on what comes back.

pub mod diff;
pub mod inventory;
pub mod kept;
pub mod normalize;
pub mod pack;
pub mod schema;
mod server_fields;
pub mod signature;
pub mod source;
pub mod undeclared;
pub mod yaml;

#[cfg(test)]
mod corpus_tests;
#[cfg(test)]
mod test_support;

pub use diff::{ChangeKind, DiffOptions, FieldChange, OPERATOR_MANAGER, ObjectDiff, diff, with_global_ignore};
pub use normalize::{Quantity, QuantityError, parse_quantity};
pub use source::{
    ConfigMapError, DeclaredObject, DocumentError, KeyError, KindResolver, ObjectKey, Origin, ParsedSources,
    REVISION_ANNOTATION, RevisionError, Scope, SourceConfigMap, SourceError, SourceErrors, SourceScope, parse_sources,
};
