//! Packing manifests into source ConfigMaps, pure (files in, ConfigMaps
//! out), next to the parser that reads them back ([`super::source`]): the
//! `driftwarden publish` command ([`crate::publish`]) reads the directory
//! and Git around it and applies only what changed.

use std::collections::BTreeMap;
use std::io::Write as _;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;

use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::drift::signature::{self, SIGNATURE_ANNOTATION};
use crate::drift::{REVISION_ANNOTATION, SourceConfigMap};

/// ConfigMaps are limited to 1 MiB in all; keep room for metadata.
pub const MAX_CHUNK_BYTES: usize = 900 * 1024;
/// Files larger than this are compressed when it saves at least a quarter.
const COMPRESS_ABOVE: usize = 4 * 1024;
/// The label that ties split ConfigMaps to one source; select them with it.
pub use crate::drift::signature::SOURCE_LABEL;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PackError {
    #[error("{file}: {size} bytes even compressed, more than fits in a ConfigMap ({MAX_CHUNK_BYTES})")]
    TooLarge { file: String, size: usize },
    #[error("{first} and {second} map to the same ConfigMap key {key}; rename one")]
    KeyClash { first: String, second: String, key: String },
}

/// A manifest file: its path relative to the directory, and its contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestFile {
    pub path: String,
    pub content: Vec<u8>,
}

/// The ConfigMap key for a relative path: `apps/web.yaml` -> `apps__web.yaml`
/// (keys may hold only letters, digits, `-`, `_` and `.`).
pub fn key_for(path: &str) -> String {
    path.replace('/', "__")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
        .collect()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

enum Packed {
    Text(String),
    Binary(Vec<u8>),
}

impl Packed {
    fn len(&self) -> usize {
        match self {
            Packed::Text(text) => text.len(),
            Packed::Binary(bytes) => bytes.len() * 4 / 3 + 4, // stored base64
        }
    }
}

/// Packs files into ConfigMaps `name`, `name-1`, `name-2`, ... in
/// `namespace`, each labelled `driftwarden.io/source=<name>` and stamped
/// with the revision. Files keep their order; large ones are gzipped when
/// it helps; none is split across ConfigMaps.
pub fn pack(
    files: &[ManifestFile],
    name: &str,
    namespace: &str,
    revision: Option<&str>,
) -> Result<Vec<ConfigMap>, PackError> {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut chunks: Vec<Vec<(String, Packed)>> = vec![Vec::new()];
    let mut chunk_size = 0;
    for file in files {
        let key = key_for(&file.path);
        if let Some(first) = seen.insert(key.clone(), file.path.clone()) {
            return Err(PackError::KeyClash { first, second: file.path.clone(), key });
        }
        let packed = match String::from_utf8(file.content.clone()) {
            Ok(text) if text.len() <= COMPRESS_ABOVE => Packed::Text(text),
            Ok(text) => {
                let compressed = gzip(text.as_bytes());
                if compressed.len() * 4 < text.len() * 3 { Packed::Binary(compressed) } else { Packed::Text(text) }
            }
            Err(_) => Packed::Binary(file.content.clone()),
        };
        let size = packed.len() + key.len();
        if size > MAX_CHUNK_BYTES {
            return Err(PackError::TooLarge { file: file.path.clone(), size });
        }
        if chunk_size + size > MAX_CHUNK_BYTES {
            chunks.push(Vec::new());
            chunk_size = 0;
        }
        chunk_size += size;
        chunks.last_mut().expect("there is always a chunk").push((key, packed));
    }
    Ok(chunks
        .into_iter()
        .enumerate()
        .map(|(index, entries)| {
            let mut config_map = ConfigMap::default();
            config_map.metadata.name = Some(if index == 0 { name.to_owned() } else { format!("{name}-{index}") });
            config_map.metadata.namespace = Some(namespace.to_owned());
            config_map.metadata.labels = Some([(SOURCE_LABEL.to_owned(), name.to_owned())].into());
            config_map.metadata.annotations = revision.map(|r| [(REVISION_ANNOTATION.to_owned(), r.to_owned())].into());
            let mut data = BTreeMap::new();
            let mut binary = BTreeMap::new();
            for (key, packed) in entries {
                match packed {
                    Packed::Text(text) => {
                        data.insert(key, text);
                    }
                    Packed::Binary(bytes) => {
                        binary.insert(key, ByteString(bytes));
                    }
                }
            }
            config_map.data = (!data.is_empty()).then_some(data);
            config_map.binary_data = (!binary.is_empty()).then_some(binary);
            config_map
        })
        .collect())
}

/// Signs a packed set of ConfigMaps for `namespace`: every one of them gets
/// the same envelope (see `drift::signature`). `sequence` must be higher
/// than that of any earlier publish of the same source.
pub fn sign(config_maps: &mut [ConfigMap], key: &SigningKey, namespace: &str, sequence: u64) {
    let sources: Vec<SourceConfigMap> = config_maps.iter().map(SourceConfigMap::from_config_map).collect();
    let envelope = signature::sign(key, namespace, sequence, &sources).to_annotation();
    for config_map in config_maps {
        config_map
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(SIGNATURE_ANNOTATION.to_owned(), envelope.clone());
    }
}

/// Whether the live set already is `desired`, signed by `key`: then a
/// re-run writes nothing (and keeps the sequence it was accepted with).
pub fn signed_unchanged(live: &[ConfigMap], desired: &[ConfigMap], key: &VerifyingKey, namespace: &str) -> bool {
    let by_name = |set: &[ConfigMap]| -> Vec<String> {
        let mut names: Vec<String> = set.iter().filter_map(|c| c.metadata.name.clone()).collect();
        names.sort();
        names
    };
    if by_name(live) != by_name(desired) {
        return false;
    }
    let same_content = desired
        .iter()
        .all(|d| live.iter().find(|l| l.metadata.name == d.metadata.name).is_some_and(|l| unchanged(l, d)));
    let sources: Vec<SourceConfigMap> = live.iter().map(SourceConfigMap::from_config_map).collect();
    let trusted = [signature::TrustedKey { name: "publisher".into(), key: *key }];
    same_content && signature::verify(namespace, &sources, &trusted, None).is_ok()
}

/// The sequence of a live signed set (0 when unsigned).
pub fn live_sequence(live: &[ConfigMap]) -> u64 {
    live.iter()
        .filter_map(|c| c.metadata.annotations.as_ref()?.get(SIGNATURE_ANNOTATION).cloned())
        .filter_map(|text| signature::Envelope::from_annotation("", &text).ok())
        .map(|e| e.sequence)
        .max()
        .unwrap_or(0)
}

/// What a rendered manifest stream is cut into: files of at most this many
/// documents or bytes (a document is never split), so that a large
/// `kustomize build` output packs into several ConfigMaps like a directory.
const STREAM_FILE_DOCUMENTS: usize = 200;
const STREAM_FILE_BYTES: usize = 256 << 10;

/// A YAML stream (documents separated by `---` lines), or one JSON
/// document, as manifest files `stdin-0001.yaml`, ... in stream order.
pub fn split_stream(text: &str) -> Vec<ManifestFile> {
    let file = |index: usize, extension: &str, content: &str| ManifestFile {
        path: format!("stdin-{index:04}.{extension}"),
        content: content.as_bytes().to_vec(),
    };
    if text.trim_start().starts_with(['{', '[']) {
        return vec![file(1, "json", text)];
    }
    // A line that starts with `---` (then a space or its end) begins a
    // document; one that is `...` ends one. Neither can be inside a block
    // scalar at the top level of a document.
    let mut documents: Vec<String> = vec![String::new()];
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        let starts = bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t");
        if starts || bare == "..." {
            documents.push(String::new());
            if starts && bare.len() > 3 {
                // `--- {a: b}`: content on the marker line.
                documents.last_mut().expect("just pushed").push_str(&line[4..]);
            }
            continue;
        }
        documents.last_mut().expect("never empty").push_str(line);
    }
    let mut files = Vec::new();
    let (mut current, mut count) = (String::new(), 0);
    let has_content = |d: &&String| d.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    for document in documents.iter().filter(has_content) {
        if count > 0 && (count == STREAM_FILE_DOCUMENTS || current.len() + document.len() > STREAM_FILE_BYTES) {
            files.push(file(files.len() + 1, "yaml", &current));
            (current, count) = (String::new(), 0);
        }
        if count > 0 {
            current.push_str("---\n");
        }
        current.push_str(document);
        if !document.ends_with('\n') {
            current.push('\n');
        }
        count += 1;
    }
    if count > 0 {
        files.push(file(files.len() + 1, "yaml", &current));
    }
    files
}

/// Whether a live ConfigMap already holds what `desired` would write.
pub fn unchanged(live: &ConfigMap, desired: &ConfigMap) -> bool {
    let empty = BTreeMap::new();
    live.data == desired.data
        && live.binary_data == desired.binary_data
        && desired
            .metadata
            .labels
            .as_ref()
            .unwrap_or(&empty)
            .iter()
            .all(|(k, v)| live.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v))
        && desired
            .metadata
            .annotations
            .as_ref()
            .unwrap_or(&empty)
            .iter()
            .all(|(k, v)| live.metadata.annotations.as_ref().and_then(|a| a.get(k)) == Some(v))
}

/// Reads the files as the operator will (`drift::parse_sources`, kubectl's
/// reading of YAML) and returns every problem, so that nothing the operator
/// would refuse is published. Which kinds exist and where the DesiredState
/// may declare them are the operator's to judge: every kind passes here.
pub fn check(dir: &str, files: &[ManifestFile]) -> Result<(), crate::drift::SourceErrors> {
    use crate::drift::{Scope, SourceConfigMap, SourceScope, parse_sources};
    let mut source = SourceConfigMap { name: dir.to_owned(), ..Default::default() };
    for file in files {
        match String::from_utf8(file.content.clone()) {
            Ok(text) => drop(source.data.insert(file.path.clone(), text)),
            Err(bytes) => drop(source.binary_data.insert(file.path.clone(), bytes.into_bytes())),
        }
    }
    let scope = SourceScope { namespace: "default", operator_namespace: "default" };
    parse_sources(&[source], &scope, &|_: &str, _: &str| Some(Scope::Namespaced)).map(drop)
}

#[cfg(test)]
mod stream_tests {
    use super::*;

    fn texts(files: &[ManifestFile]) -> Vec<(String, String)> {
        files.iter().map(|f| (f.path.clone(), String::from_utf8(f.content.clone()).unwrap())).collect()
    }

    #[test]
    fn a_rendered_stream_becomes_files_of_whole_documents() {
        let stream = "# Source: shop/templates/a.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata:\n  script: |\n    echo ---\n    --- not a marker here\n---\n# Source: empty.yaml\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n...\n--- {apiVersion: v1, kind: ConfigMap, metadata: {name: c}}\n";
        let files = split_stream(stream);
        let texts = texts(&files);
        assert_eq!(texts.len(), 1);
        assert_eq!(texts[0].0, "stdin-0001.yaml");
        let documents: Vec<&str> = texts[0].1.split("\n---\n").collect();
        assert_eq!(documents.len(), 3, "{}", texts[0].1);
        assert!(documents[0].contains("    --- not a marker here") && documents[0].contains("name: a"));
        assert!(documents[1].contains("name: b"));
        assert_eq!(documents[2], "{apiVersion: v1, kind: ConfigMap, metadata: {name: c}}\n");
        assert!(documents[0].contains("    echo ---\n"));
    }

    #[test]
    fn a_large_stream_is_cut_between_documents_and_json_is_one_file() {
        let document = |i: usize| format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{i}}}\n");
        let stream: String = (0..450).map(|i| format!("---\n{}", document(i))).collect();
        let files = split_stream(&stream);
        assert_eq!(
            files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            ["stdin-0001.yaml", "stdin-0002.yaml", "stdin-0003.yaml"]
        );
        let joined: String = texts(&files).iter().map(|(_, t)| t.clone()).collect::<Vec<_>>().join("---\n");
        assert_eq!(joined.matches("kind: ConfigMap").count(), 450);
        assert!(joined.contains("name: c0}") && joined.contains("name: c449}"));
        assert_eq!(
            texts(&split_stream(" {\"apiVersion\": \"v1\"}")),
            [("stdin-0001.json".to_owned(), " {\"apiVersion\": \"v1\"}".to_owned())]
        );
        assert!(split_stream("# nothing\n---\n").is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::{Scope, SourceConfigMap, SourceScope, parse_sources};

    #[test]
    fn what_the_operator_would_refuse_is_not_published() {
        let good =
            file("web.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 0x3}\n");
        assert_eq!(check("manifests", std::slice::from_ref(&good)), Ok(()));
        let label = file("bad.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  labels: {tier: yes}\n");
        let errors = check("manifests", &[good, label]).unwrap_err().to_string();
        assert!(
            errors.contains("key bad.yaml document 0: metadata.labels.tier must be a string, found a boolean"),
            "{errors}"
        );
    }

    fn file(path: &str, content: &str) -> ManifestFile {
        ManifestFile { path: path.into(), content: content.as_bytes().to_vec() }
    }

    fn config_map(name: &str, index: usize) -> String {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}-{index}\ndata:\n  payload: \"{}\"\n",
            "x".repeat(20)
        )
    }

    #[test]
    fn keys_are_valid_configmap_keys() {
        assert_eq!(key_for("apps/web.yaml"), "apps__web.yaml");
        assert_eq!(key_for("team a/svc (1).yml"), "team_a__svc__1_.yml");
    }

    #[test]
    fn a_key_clash_is_an_error() {
        let files = [file("a/b.yaml", "x: 1"), file("a__b.yaml", "x: 2")];
        assert!(matches!(pack(&files, "src", "ns", None), Err(PackError::KeyClash { .. })));
    }

    #[test]
    fn large_states_are_compressed_split_and_still_parse_to_the_same_objects() {
        // 3,000 small objects in 30 files: ~2.5 MB of YAML.
        let files: Vec<ManifestFile> = (0..30)
            .map(|f| {
                let docs: Vec<String> = (0..100).map(|i| config_map(&format!("f{f}"), i)).collect();
                ManifestFile { path: format!("dir{}/file{f}.yaml", f % 3), content: docs.join("---\n").into_bytes() }
            })
            .collect();
        let packed = pack(&files, "state", "ns", Some("3f2a9c1")).unwrap();
        assert!(packed.iter().all(|cm| serde_json::to_vec(cm).unwrap().len() < 1024 * 1024));
        assert!(packed.iter().any(|cm| cm.binary_data.is_some()), "large repetitive files are gzipped");
        let sources: Vec<SourceConfigMap> = packed.iter().map(SourceConfigMap::from_config_map).collect();
        let resolver = |_: &str, _: &str| Some(Scope::Namespaced);
        let parsed =
            parse_sources(&sources, &SourceScope { namespace: "ns", operator_namespace: "x" }, &resolver).unwrap();
        assert_eq!(parsed.objects.len(), 3000);
        assert_eq!(parsed.revision.as_deref(), Some("3f2a9c1"));
        assert!(packed.iter().all(|cm| cm.metadata.labels.as_ref().unwrap()[SOURCE_LABEL] == "state"));
    }

    #[test]
    fn a_file_too_large_for_any_configmap_is_refused() {
        // Pseudo-random letters (xorshift) do not compress below the limit.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let noise: String = (0..1_500_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                char::from(b'a' + (state % 26) as u8)
            })
            .collect();
        let err = pack(&[file("huge.yaml", &noise)], "src", "ns", None).unwrap_err();
        assert!(matches!(err, PackError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn a_signed_pack_verifies_and_a_rerun_of_the_same_content_is_unchanged() {
        let key = SigningKey::from_bytes(&[3; 32]);
        // Letters that do not compress: 40 files of 30 KB fill two ConfigMaps.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut noise = |n: usize| -> String {
            (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    char::from(b'a' + (state % 26) as u8)
                })
                .collect()
        };
        let files: Vec<ManifestFile> = (0..40)
            .map(|i| file(&format!("f{i}.yaml"), &format!("{}# {}\n", config_map(&format!("n{i}"), i), noise(30_000))))
            .collect();
        let mut packed = pack(&files, "state", "ns", Some("abc")).unwrap();
        assert!(packed.len() > 1, "the state is split");
        sign(&mut packed, &key, "ns", 42);
        let sources: Vec<SourceConfigMap> = packed.iter().map(SourceConfigMap::from_config_map).collect();
        let trusted = [signature::TrustedKey { name: "ci".into(), key: key.verifying_key() }];
        assert_eq!(signature::verify("ns", &sources, &trusted, None).unwrap().sequence, 42);
        assert_eq!(live_sequence(&packed), 42);
        let again = pack(&files, "state", "ns", Some("abc")).unwrap();
        assert!(signed_unchanged(&packed, &again, &key.verifying_key(), "ns"));
        let newer = pack(&files, "state", "ns", Some("def")).unwrap();
        assert!(!signed_unchanged(&packed, &newer, &key.verifying_key(), "ns"));
        assert!(!signed_unchanged(&packed, &again, &SigningKey::from_bytes(&[4; 32]).verifying_key(), "ns"));
    }

    #[test]
    fn packing_is_deterministic_so_a_rerun_changes_nothing() {
        let files = [file("a.yaml", &config_map("a", 1)), file("b.yaml", &config_map("b", 1))];
        let first = pack(&files, "src", "ns", Some("abc")).unwrap();
        let second = pack(&files, "src", "ns", Some("abc")).unwrap();
        assert_eq!(first, second);
        assert!(unchanged(&first[0], &second[0]));
        let moved = pack(&files, "src", "ns", Some("def")).unwrap();
        assert!(!unchanged(&first[0], &moved[0]), "a new revision is a change");
    }
}
