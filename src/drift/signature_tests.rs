use super::*;
use crate::drift::REVISION_ANNOTATION;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn trusted(name: &str, key: &SigningKey) -> TrustedKey {
    TrustedKey { name: name.into(), key: key.verifying_key() }
}

fn config_map(name: &str, source: &str, entries: &[(&str, &str)]) -> SourceConfigMap {
    SourceConfigMap {
        name: name.into(),
        data: entries.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
        labels: [(SOURCE_LABEL.to_owned(), source.to_owned())].into(),
        annotations: [(REVISION_ANNOTATION.to_owned(), "abc123".to_owned())].into(),
        ..SourceConfigMap::default()
    }
}

/// A split source signed by `key` at `sequence`.
fn signed(key: &SigningKey, namespace: &str, sequence: u64) -> Vec<SourceConfigMap> {
    let mut set = vec![
        config_map("state", "state", &[("a.yaml", "kind: ConfigMap\n"), ("b.yaml", "kind: Service\n")]),
        config_map("state-1", "state", &[("c.yaml", "kind: Deployment\n")]),
    ];
    set[1].binary_data.insert("d.yaml".into(), vec![0x1f, 0x8b, 1, 2, 3]);
    let envelope = sign(key, namespace, sequence, &set);
    for cm in &mut set {
        cm.annotations.insert(SIGNATURE_ANNOTATION.into(), envelope.to_annotation());
    }
    set
}

/// Changes the envelope every ConfigMap of `set` carries.
fn rewrite_envelope(set: &mut [SourceConfigMap], change: impl FnOnce(&mut Envelope)) {
    let mut envelope = Envelope::from_annotation("x", &set[0].annotations[SIGNATURE_ANNOTATION]).unwrap();
    change(&mut envelope);
    for cm in set.iter_mut() {
        cm.annotations.insert(SIGNATURE_ANNOTATION.into(), envelope.to_annotation());
    }
}

#[test]
fn a_signed_source_verifies_with_its_key_and_reports_which() {
    let set = signed(&key(1), "shop", 7);
    let verified = verify("shop", &set, &[trusted("other", &key(2)), trusted("ci", &key(1))], None).unwrap();
    assert_eq!(verified, Verified { key: "ci".into(), sequence: 7 });
    // The order the ConfigMaps are listed in does not matter.
    let reversed: Vec<SourceConfigMap> = set.iter().rev().cloned().collect();
    assert!(verify("shop", &reversed, &[trusted("ci", &key(1))], Some(7)).is_ok());
}

/// Every way to change a signed set, and the reason it is refused with.
#[test]
fn every_change_to_a_signed_source_is_refused() {
    type Mutation = fn(&mut Vec<SourceConfigMap>);
    let cases: &[(&str, Mutation, &str)] = &[
        (
            "a key's content changed",
            |s| *s[0].data.get_mut("a.yaml").unwrap() = "kind: Secret\n".into(),
            "SignatureInvalid",
        ),
        (
            "a key added",
            |s| drop(s[0].data.insert("evil.yaml".into(), "kind: RoleBinding\n".into())),
            "SignatureInvalid",
        ),
        ("a key removed", |s| drop(s[0].data.remove("b.yaml")), "SignatureInvalid"),
        (
            "a key renamed",
            |s| {
                let v = s[0].data.remove("b.yaml").unwrap();
                s[0].data.insert("b2.yaml".into(), v);
            },
            "SignatureInvalid",
        ),
        (
            "a key moved between ConfigMaps",
            |s| {
                let v = s[0].data.remove("b.yaml").unwrap();
                s[1].data.insert("b.yaml".into(), v);
            },
            "SignatureInvalid",
        ),
        (
            "a key moved to binaryData",
            |s| {
                let v = s[0].data.remove("b.yaml").unwrap();
                s[0].binary_data.insert("b.yaml".into(), v.into_bytes());
            },
            "SignatureInvalid",
        ),
        ("binary content changed", |s| s[1].binary_data.get_mut("d.yaml").unwrap().push(0), "SignatureInvalid"),
        (
            "the revision changed",
            |s| {
                for cm in s.iter_mut() {
                    cm.annotations.insert(REVISION_ANNOTATION.into(), "def456".into());
                }
            },
            "SignatureInvalid",
        ),
        (
            "one ConfigMap's revision dropped",
            |s| drop(s[1].annotations.remove(REVISION_ANNOTATION)),
            "SignatureInvalid",
        ),
        (
            "relabelled as another source",
            |s| {
                for cm in s.iter_mut() {
                    cm.labels.insert(SOURCE_LABEL.into(), "other".into());
                }
            },
            "SignatureInvalid",
        ),
        (
            "one ConfigMap relabelled",
            |s| drop(s[1].labels.insert(SOURCE_LABEL.into(), "other".into())),
            "SignatureIncomplete",
        ),
        ("a ConfigMap dropped from the set", |s| drop(s.pop()), "SignatureIncomplete"),
        (
            "an unsigned ConfigMap added",
            |s| s.push(config_map("state-2", "state", &[("x.yaml", "kind: Pod\n")])),
            "SignatureMissing",
        ),
        ("a signed ConfigMap renamed", |s| s[1].name = "state-9".into(), "SignatureIncomplete"),
        ("the signature removed", |s| drop(s[0].annotations.remove(SIGNATURE_ANNOTATION)), "SignatureMissing"),
        (
            "the signature garbled",
            |s| {
                for cm in s.iter_mut() {
                    cm.annotations.insert(SIGNATURE_ANNOTATION.into(), "{not json".into());
                }
            },
            "SignatureInvalid",
        ),
        ("the sequence raised", |s| rewrite_envelope(s, |e| e.sequence += 1), "SignatureInvalid"),
        (
            "the key id swapped to another trusted key",
            |s| rewrite_envelope(s, |e| e.key_id = key_id(&key(2).verifying_key())),
            "SignatureInvalid",
        ),
        (
            "mixed with another publish",
            |s| {
                let newer = signed(&key(1), "shop", 8);
                s[1] = newer[1].clone();
            },
            "SignatureIncomplete",
        ),
    ];
    let keys = [trusted("ci", &key(1)), trusted("ci-next", &key(2))];
    for (what, mutate, reason) in cases {
        let mut set = signed(&key(1), "shop", 7);
        mutate(&mut set);
        let error = verify("shop", &set, &keys, None).expect_err(what);
        assert_eq!(error.reason(), *reason, "{what}: {error}");
    }
}

#[test]
fn a_source_copied_into_another_namespace_is_refused() {
    let set = signed(&key(1), "team-a", 7);
    let error = verify("team-b", &set, &[trusted("ci", &key(1))], None).unwrap_err();
    assert_eq!(error.reason(), "SignatureInvalid", "{error}");
}

#[test]
fn an_older_publish_is_a_replay_and_the_same_or_a_newer_one_is_taken() {
    let keys = [trusted("ci", &key(1))];
    let old = signed(&key(1), "shop", 5);
    let error = verify("shop", &old, &keys, Some(6)).unwrap_err();
    assert_eq!(error, SignatureError::Replayed { sequence: 5, accepted: 6 });
    assert!(verify("shop", &old, &keys, Some(5)).is_ok(), "the accepted publish itself stays valid");
    assert!(verify("shop", &signed(&key(1), "shop", 9), &keys, Some(6)).is_ok());
}

#[test]
fn an_untrusted_or_removed_key_is_refused_and_two_keys_rotate() {
    let by_old = signed(&key(1), "shop", 7);
    let by_new = signed(&key(2), "shop", 8);
    let both = [trusted("ci-2026", &key(1)), trusted("ci-2027", &key(2))];
    assert_eq!(verify("shop", &by_old, &both, None).unwrap().key, "ci-2026");
    assert_eq!(verify("shop", &by_new, &both, None).unwrap().key, "ci-2027");
    let after_rotation = [trusted("ci-2027", &key(2))];
    let error = verify("shop", &by_old, &after_rotation, None).unwrap_err();
    assert_eq!(error.reason(), "SignatureUntrusted", "{error}");
    assert!(verify("shop", &by_old, &[], None).is_err(), "no trusted key: nothing verifies");
}

#[test]
fn an_empty_selection_and_oversized_envelopes_are_refused() {
    assert_eq!(verify("shop", &[], &[trusted("ci", &key(1))], None).unwrap_err(), SignatureError::NoSources);
    let mut set = signed(&key(1), "shop", 7);
    set.truncate(1);
    set[0].annotations.insert(SIGNATURE_ANNOTATION.into(), "x".repeat(MAX_ENVELOPE_BYTES + 1));
    assert_eq!(verify("shop", &set, &[trusted("ci", &key(1))], None).unwrap_err().reason(), "SignatureInvalid");
}

#[test]
fn key_pairs_round_trip_through_pem() {
    let (private, public) = key_pair_pem(&[9; 32]);
    assert!(private.starts_with("-----BEGIN PRIVATE KEY-----"), "{private}");
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"), "{public}");
    let signing = signing_key_from_pem(&private).unwrap();
    assert_eq!(signing.verifying_key(), verifying_key_from_pem(&public).unwrap());
    assert!(signing_key_from_pem(&public).is_err());
    assert!(verifying_key_from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----").is_err());
}

/// The PEM OpenSSL writes for `openssl genpkey -algorithm ed25519` (RFC 8410's example key).
#[test]
fn keys_made_by_openssl_are_read() {
    let private = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";
    let public = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
    let signing = signing_key_from_pem(private).unwrap();
    assert_eq!(signing.verifying_key(), verifying_key_from_pem(public).unwrap());
}
