//! The real public manifests in `tests/data/corpus/` (see its SOURCES.md):
//! every one parses, and every object diffs in sync against itself as the
//! API server would store it.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{Map, Value};

use super::diff::{DiffOptions, diff};
use super::source::{SourceConfigMap, SourceScope, parse_sources};
use super::test_support::resolver;

const OPERATOR: &str = "driftwarden-system";

fn corpus_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/corpus");
    let mut files = Vec::new();
    for dir in [root.clone(), root.join("extra")] {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("directory entry").path();
            if path.extension().is_some_and(|ext| ext == "yaml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// What the API server makes of a manifest that matters here: `stringData`
/// is merged into `data`, base64-encoded.
fn as_stored(declared: &Value) -> Value {
    let mut live = declared.clone();
    let Some(object) = live.as_object_mut() else { return live };
    if let Some(Value::Object(strings)) = object.remove("stringData") {
        let data = object.entry("data").or_insert_with(|| Value::Object(Map::new()));
        for (key, value) in strings {
            let text = value.as_str().unwrap_or_default();
            data[key.as_str()] = Value::String(base64::engine::general_purpose::STANDARD.encode(text));
        }
    }
    live
}

#[test]
fn every_corpus_manifest_parses_and_is_in_sync_with_itself() {
    let files = corpus_files();
    assert_eq!(files.len(), 15, "{files:?}");
    let mut total = 0;
    for path in files {
        let text = std::fs::read_to_string(&path).expect("readable corpus file");
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let source =
            SourceConfigMap { name: "corpus".into(), data: [(name.clone(), text)].into(), ..Default::default() };
        // The operator's namespace: the corpus declares cluster-scoped
        // objects and several namespaces.
        let scope = SourceScope { namespace: OPERATOR, operator_namespace: OPERATOR };
        let parsed = parse_sources(&[source], &scope, &resolver).unwrap_or_else(|errors| panic!("{name}: {errors}"));
        assert!(!parsed.objects.is_empty(), "{name} declares nothing");
        for object in &parsed.objects {
            let result = diff(&object.object, Some(&as_stored(&object.object)), &DiffOptions::default());
            assert!(result.in_sync(), "{name} {}: {:?}\n{}", object.key, result.changes, result.unified);
        }
        total += parsed.objects.len();
    }
    assert_eq!(total, 62, "the corpus holds 62 documents");
}
