//! kubectl's reading of plain scalars and documents, case by case. Each
//! expectation was checked against the pinned kubectl (see
//! `tests/fuzz/kubectl.rs`, which compares many more).

use serde_json::{Value, json};

use super::{ReadError, read_documents};

fn one(text: &str) -> Result<Value, ReadError> {
    let mut documents = read_documents(text, 100);
    assert_eq!(documents.len(), 1, "{text:?} -> {documents:?}");
    documents.remove(0)
}

fn value_of(scalar: &str) -> Value {
    one(&format!("v: {scalar}\n")).unwrap_or_else(|e| panic!("{scalar}: {e:?}"))["v"].clone()
}

#[test]
fn plain_scalars_resolve_by_yaml_1_1_rules() {
    let cases: &[(&str, Value)] = &[
        ("0x1F", json!(31)),
        ("-0x1F", json!(-31)),
        ("0o17", json!(15)),
        ("017", json!(15)),
        ("09", json!(9)),
        ("0b101", json!(5)),
        ("1_000", json!(1000)),
        ("+12", json!(12)),
        ("-0", json!(0)),
        ("1.0", json!(1)),
        ("1e3", json!(1000)),
        ("1.5", json!(1.5)),
        (".5", json!(0.5)),
        ("-.5", json!(-0.5)),
        ("1.", json!(1)),
        ("9223372036854775807", json!(9223372036854775807_i64)),
        ("18446744073709551615", json!(18446744073709551615_f64)),
        ("yes", json!(true)),
        ("Yes", json!(true)),
        ("on", json!(true)),
        ("y", json!(true)),
        ("N", json!(false)),
        ("off", json!(false)),
        ("tRUE", json!("tRUE")),
        ("~", Value::Null),
        ("", Value::Null),
        ("Null", Value::Null),
        ("1:20", json!("1:20")),
        ("2001-12-14", json!("2001-12-14")),
        ("0x", json!("0x")),
        ("0o9", json!("0o9")),
        ("1e999", json!("1e999")),
        ("+", json!("+")),
        ("._5", json!("._5")),
        ("'0x1F'", json!("0x1F")),
        ("\"yes\"", json!("yes")),
        ("!!str 12", json!("12")),
        ("!!float 12", json!(12)),
        ("!custom 12", json!("12")),
    ];
    for (scalar, expected) in cases {
        assert_eq!(&value_of(scalar), expected, "{scalar}");
    }
}

#[test]
fn values_json_cannot_hold_are_refused() {
    for scalar in [".inf", "-.Inf", ".nan", "!!int abc"] {
        assert!(matches!(one(&format!("v: {scalar}\n")), Err(ReadError::Syntax(_))), "{scalar}");
    }
}

#[test]
fn map_keys_become_strings_as_sigs_yaml_writes_them() {
    let value = one("0x1F: a\nyes: b\n1.5: c\n1e6: d\n0.00001: e\n").unwrap();
    assert_eq!(value, json!({"31": "a", "true": "b", "1.5": "c", "1e+06": "d", "1e-05": "e"}));
    assert!(matches!(one("~: a\n"), Err(ReadError::Syntax(_))));
    assert!(matches!(one("[a]: a\n"), Err(ReadError::Syntax(_))));
    // 1 and "1" are different YAML keys but one JSON key: kubectl keeps
    // either at random.
    assert!(matches!(one("1: a\n'1': b\n"), Err(ReadError::Syntax(_))));
}

#[test]
fn a_repeated_key_keeps_the_last_value_and_merges_apply_in_place() {
    assert_eq!(one("a: 1\na: 2\n").unwrap(), json!({"a": 2}));
    let merged = one("base: &b {x: 1, w: 2}\nm:\n  x: 0\n  <<: *b\n  w: 3\n").unwrap();
    assert_eq!(merged["m"], json!({"x": 1, "w": 3}));
    let list = one("a: &a {x: 1}\nb: &b {x: 2, z: 2}\nm:\n  <<: [*a, *b]\n").unwrap();
    assert_eq!(list["m"], json!({"x": 1, "z": 2}));
    assert!(matches!(one("m:\n  <<: 1\n"), Err(ReadError::Syntax(_))));
    assert_eq!(one("m:\n  '<<': 1\n").unwrap(), json!({"m": {"<<": 1}}));
}

#[test]
fn documents_split_at_dash_lines_and_only_the_first_of_a_piece_counts() {
    let documents = read_documents("a: 1\n---\n# only a comment\n---\nb: 2\n", 100);
    assert_eq!(documents, vec![Ok(json!({"a": 1})), Ok(Value::Null), Ok(json!({"b": 2}))]);
    assert!(matches!(read_documents("a: 1\n--- b: 2\n", 100)[..], [Err(ReadError::Syntax(_))]));
    assert_eq!(read_documents("a: 1\n...\nb: [\n", 100), vec![Ok(json!({"a": 1}))]);
}

#[test]
fn json_streams_are_json_and_integral_floats_are_integers() {
    assert_eq!(
        read_documents("{\"a\": 1.0, \"b\": [2.5]}\n{\"c\": 1e2}", 100),
        vec![Ok(json!({"a": 1, "b": [2.5]})), Ok(json!({"c": 100}))]
    );
}

#[test]
fn excessive_aliasing_and_self_reference_are_refused() {
    let mut laughs = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for (name, previous) in ["b", "c", "d", "e", "f", "g", "h"].iter().zip(["a", "b", "c", "d", "e", "f", "g"]) {
        laughs.push_str(&format!("{name}: &{name} [*{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}]\n"));
    }
    assert!(matches!(one(&laughs), Err(ReadError::Syntax(m)) if m.contains("aliasing")));
    assert!(matches!(one("a: &a [*a]\n"), Err(ReadError::Syntax(_))));
}

#[test]
fn deep_nesting_is_refused() {
    let deep: String = (0..120).map(|depth| format!("{}k:\n", "  ".repeat(depth))).collect();
    assert_eq!(read_documents(&deep, 100), vec![Err(ReadError::TooDeep)]);
}

#[test]
fn large_integers_go_out_as_encoding_json_writes_them() {
    assert_eq!(value_of("0x8000000000000000"), json!(9223372036854776000_u64));
    assert_eq!(value_of("-0.0"), json!(0));
    assert_eq!(read_documents("{\"v\": -0.0}", 100), vec![Ok(json!({"v": -0.0}))]);
}

#[test]
fn what_driftwarden_writes_kubectl_reads_back_unchanged() {
    let value = json!({
        "metadata": {"name": "web", "labels": {"tier": "yes", "on": "1_000", "plain": "web-1"}},
        "data": {"script": "#!/bin/sh\necho 'hi'\n", "empty": "", "port": "0x1F", "n": 3, "f": 1.5, "z": null},
        "list": ["y", [], {}, [1, "Off"], {"a": "b", "c": "1:20"}],
    });
    let text = super::to_kubectl_yaml(&value);
    assert_eq!(read_documents(&text, 100), vec![Ok(value.clone())], "{text}");
    // The usual rendering stays where it is faithful; otherwise both sides switch.
    let usual = json!({"a": "b", "count": 1});
    assert_eq!(super::render_all(&[Some(&usual)]), vec![serde_yaml_ng::to_string(&usual).unwrap()]);
    let rendered = super::render_all(&[Some(&usual), Some(&value)]);
    assert_eq!(rendered[0], super::to_kubectl_yaml(&usual));
    assert!(rendered[1].contains("tier: 'yes'"), "{}", rendered[1]);
}

#[test]
fn plain_where_safe_quoted_where_not() {
    let value =
        json!({"a": ["nginx:1.27", "a b", "x: y", "x #y", "-x", "a:", " a", "{a}", "<<", "1e3", "~", "é", "a,b"]});
    let text = super::to_kubectl_yaml(&value);
    assert!(text.contains("- nginx:1.27\n- a b\n- 'x: y'\n"), "{text}");
    assert_eq!(read_documents(&text, 100), vec![Ok(value)], "{text}");
}

#[test]
fn a_parser_panic_is_a_refusal() {
    // libyaml-safer panics on a tag right before `,` in a flow collection.
    let read = read_documents("a: [!x, y]\n", 100);
    assert!(matches!(&read[..], [Err(ReadError::Syntax(m))] if m.contains("cannot read")), "{read:?}");
}
