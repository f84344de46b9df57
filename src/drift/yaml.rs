//! Manifests read as kubectl reads them.
//!
//! kubectl (k8s.io/apimachinery's YAMLOrJSONDecoder) reads a file whose
//! first non-blank character is `{` as a stream of JSON values. Anything
//! else it cuts into documents at every line that starts with `---`, reads
//! the first YAML document of each piece with go-yaml v2 (a port of libyaml
//! that resolves plain scalars by YAML 1.1 rules: `0x1F`, `017`, `1_000`,
//! `yes`/`off`/`y`, `~` ...) and converts the result to JSON
//! (sigs.k8s.io/yaml: map keys become strings, NaN and infinities are
//! refused). The object it sends is that JSON decoded as unstructured, so
//! an integral float (`1.0`, `1e3`) goes out as an integer.
//!
//! This module does the same on top of libyaml's own event parser
//! (libyaml-safer, the same scanner go-yaml v2 was ported from), which tells
//! a plain scalar from a quoted one. `tests/fuzz/kubectl.rs` holds it to the
//! pinned kubectl.

use std::collections::HashMap;
use std::rc::Rc;

use libyaml_safer::{EventData, Parser, ScalarStyle};
use serde_json::{Map, Number, Value};

const TAG_PREFIX: &str = "tag:yaml.org,2002:";

/// Why a document cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// Not YAML (or JSON) at all, or not convertible to JSON.
    Syntax(String),
    /// Nested deeper than the caller's limit.
    TooDeep,
}

/// The documents of one file, as kubectl reads them: JSON values, one per
/// document (a null document is empty). A syntax error ends the file, as it
/// ends kubectl's reading of it.
pub fn read_documents(text: &str, max_depth: usize) -> Vec<Result<Value, ReadError>> {
    if text.trim_start().starts_with('{') {
        return read_json_stream(text, max_depth);
    }
    let mut documents = Vec::new();
    for piece in split_pieces(text) {
        let document = match piece {
            Ok(piece) => read_piece(&piece, max_depth),
            Err(error) => Err(error),
        };
        let failed = document.is_err();
        documents.push(document);
        if failed {
            break;
        }
    }
    documents
}

/// A stream of JSON values (kubectl decodes them with encoding/json, one
/// after the other), each normalised as kubectl sends it.
fn read_json_stream(text: &str, max_depth: usize) -> Vec<Result<Value, ReadError>> {
    let mut documents = Vec::new();
    for value in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
        match value {
            Ok(value) if super::source::depth_exceeds(&value, max_depth) => {
                documents.push(Err(ReadError::TooDeep));
                break;
            }
            Ok(value) => documents.push(Ok(normalize_numbers(value))),
            Err(error) => {
                documents.push(Err(ReadError::Syntax(format!("invalid JSON: {error}"))));
                break;
            }
        }
    }
    documents
}

/// An integral float is an integer once kubectl has re-encoded it.
fn normalize_numbers(value: Value) -> Value {
    match value {
        Value::Number(number) => match number.as_f64() {
            // `-0.0` stays a float: kubectl keeps a JSON literal that is not
            // an integer as float64, and writes negative zero as `-0`.
            Some(float) if number.is_f64() && !(float == 0.0 && float.is_sign_negative()) => {
                float_value(float).unwrap_or(Value::Number(number))
            }
            _ => Value::Number(number),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(normalize_numbers).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, normalize_numbers(v))).collect()),
        other => other,
    }
}

/// A piece of the file between `---` lines, with the line it starts on.
struct Piece {
    text: String,
    first_line: usize,
}

/// apimachinery's YAMLReader: a line that starts with `---` ends a piece;
/// only spaces or a comment may follow the dashes. Empty pieces are skipped.
fn split_pieces(text: &str) -> Vec<Result<Piece, ReadError>> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    let mut first_line = 0;
    for (number, line) in text.split_inclusive('\n').enumerate() {
        if let Some(rest) = line.strip_prefix("---") {
            let rest = rest.trim();
            if !rest.is_empty() && !rest.starts_with('#') {
                let error = format!("line {}: invalid document separator: {rest}", number + 1);
                pieces.push(Err(ReadError::Syntax(error)));
                return pieces;
            }
            if !current.is_empty() {
                pieces.push(Ok(Piece { text: std::mem::take(&mut current), first_line }));
            }
            first_line = number + 1;
            continue;
        }
        current.push_str(line);
    }
    if !current.is_empty() {
        pieces.push(Ok(Piece { text: current, first_line }));
    }
    pieces
}

/// A YAML node as the parser saw it; aliases share their anchor's node.
enum Node {
    Scalar { value: String, tag: Option<String>, plain: bool, line: usize },
    Sequence(Vec<Rc<Node>>),
    Mapping(Vec<(Rc<Node>, Rc<Node>)>),
    Alias(Rc<Node>),
}

/// A collection being built, with its anchor.
enum Open {
    Sequence(Option<String>, Vec<Rc<Node>>),
    Mapping(Option<String>, Vec<Rc<Node>>),
}

fn syntax(piece: &Piece, error: &libyaml_safer::Error) -> ReadError {
    let line = |mark: libyaml_safer::Mark| piece.first_line + mark.line as usize + 1;
    let mut message = match error.problem_mark() {
        Some(mark) => format!("line {}: {}", line(mark), error.problem()),
        None => error.problem().to_owned(),
    };
    if let (Some(context), Some(mark)) = (error.context(), error.context_mark()) {
        message.push_str(&format!(" ({context} at line {})", line(mark)));
    }
    ReadError::Syntax(message)
}

/// The first document of a piece (go-yaml's Unmarshal reads no further), as
/// JSON; `null` when the piece holds none.
fn read_piece(piece: &Piece, max_depth: usize) -> Result<Value, ReadError> {
    // libyaml-safer still has a few `panic!`s where libyaml goes on (a tag
    // right before `,` in a flow collection); a manifest must never take
    // the operator down, so such a piece is refused instead.
    let parsed = std::panic::catch_unwind(|| parse_first_document(piece, max_depth)).unwrap_or_else(|_| {
        Err(ReadError::Syntax(format!(
            "line {}: the YAML parser cannot read this document (a tag right before ',' in a flow collection?)",
            piece.first_line + 1
        )))
    });
    let Some(root) = parsed? else { return Ok(Value::Null) };
    let mut decoder = Decoder { decoded: 0, aliased: 0, alias_depth: 0, max_depth };
    let value = decoder.decode(&root, 1)?;
    to_json(value, max_depth, 1)
}

fn parse_first_document(piece: &Piece, max_depth: usize) -> Result<Option<Rc<Node>>, ReadError> {
    let mut input = piece.text.as_bytes();
    let mut parser = Parser::new();
    parser.set_input_string(&mut input);
    let mut anchors: HashMap<String, Rc<Node>> = HashMap::new();
    let mut open: Vec<Open> = Vec::new();
    let mut root: Option<Rc<Node>> = None;
    loop {
        let event = parser.parse().map_err(|error| syntax(piece, &error))?;
        let line = piece.first_line + event.start_mark.line as usize + 1;
        let (node, anchor) = match event.data {
            EventData::StreamEnd => return Ok(None),
            EventData::DocumentEnd { .. } => return Ok(root),
            EventData::StreamStart { .. } | EventData::DocumentStart { .. } => continue,
            EventData::SequenceStart { anchor, .. } => {
                open.push(Open::Sequence(anchor, Vec::new()));
                if open.len() > max_depth {
                    return Err(ReadError::TooDeep);
                }
                continue;
            }
            EventData::MappingStart { anchor, .. } => {
                open.push(Open::Mapping(anchor, Vec::new()));
                if open.len() > max_depth {
                    return Err(ReadError::TooDeep);
                }
                continue;
            }
            EventData::SequenceEnd | EventData::MappingEnd => match open.pop() {
                Some(Open::Sequence(anchor, items)) => (Node::Sequence(items), anchor),
                Some(Open::Mapping(anchor, flat)) => {
                    let mut pairs = Vec::with_capacity(flat.len() / 2);
                    let mut flat = flat.into_iter();
                    while let (Some(key), Some(value)) = (flat.next(), flat.next()) {
                        pairs.push((key, value));
                    }
                    (Node::Mapping(pairs), anchor)
                }
                None => return Err(ReadError::Syntax(format!("line {line}: unbalanced collection end"))),
            },
            EventData::Alias { anchor } => match anchors.get(&anchor) {
                Some(target) => (Node::Alias(Rc::clone(target)), None),
                None => return Err(ReadError::Syntax(format!("line {line}: unknown anchor '{anchor}' referenced"))),
            },
            EventData::Scalar { anchor, tag, value, style, .. } => {
                (Node::Scalar { value, tag, plain: style == ScalarStyle::Plain, line }, anchor)
            }
        };
        let node = Rc::new(node);
        if let Some(anchor) = anchor {
            anchors.insert(anchor, Rc::clone(&node));
        }
        match open.last_mut() {
            Some(Open::Sequence(_, items) | Open::Mapping(_, items)) => items.push(node),
            None => root = Some(node),
        }
    }
}

/// A value as go-yaml v2 decodes it into `interface{}`.
#[derive(Debug, Clone)]
enum Yaml {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Yaml>),
    /// Keys in first-insertion order; a repeated key overwrites the value.
    Map(Vec<(Yaml, Yaml)>),
}

impl Yaml {
    /// Go's `==` on two map keys held in `interface{}`.
    fn same_key(&self, other: &Yaml) -> bool {
        match (self, other) {
            (Yaml::Null, Yaml::Null) => true,
            (Yaml::Bool(a), Yaml::Bool(b)) => a == b,
            (Yaml::Int(a), Yaml::Int(b)) => a == b,
            (Yaml::Uint(a), Yaml::Uint(b)) => a == b,
            (Yaml::Float(a), Yaml::Float(b)) => a == b,
            (Yaml::Str(a), Yaml::Str(b)) => a == b,
            _ => false,
        }
    }
}

fn map_insert(map: &mut Vec<(Yaml, Yaml)>, key: Yaml, value: Yaml) {
    match map.iter_mut().find(|(existing, _)| existing.same_key(&key)) {
        Some(slot) => slot.1 = value,
        None => map.push((key, value)),
    }
}

/// go-yaml v2's decoder, with its limit on alias expansion (a "billion
/// laughs" document is refused, as kubectl refuses it).
struct Decoder {
    decoded: u64,
    aliased: u64,
    alias_depth: usize,
    max_depth: usize,
}

fn allowed_alias_ratio(decoded: u64) -> f64 {
    const LOW: f64 = 400_000.0;
    const HIGH: f64 = 4_000_000.0;
    let decoded = decoded as f64;
    if decoded <= LOW {
        0.99
    } else if decoded >= HIGH {
        0.10
    } else {
        0.99 - 0.89 * ((decoded - LOW) / (HIGH - LOW))
    }
}

impl Decoder {
    fn count(&mut self) -> Result<(), ReadError> {
        self.decoded += 1;
        if self.alias_depth > 0 {
            self.aliased += 1;
        }
        if self.aliased > 100
            && self.decoded > 1000
            && self.aliased as f64 / self.decoded as f64 > allowed_alias_ratio(self.decoded)
        {
            return Err(ReadError::Syntax("document contains excessive aliasing".into()));
        }
        Ok(())
    }

    fn decode(&mut self, node: &Node, depth: usize) -> Result<Yaml, ReadError> {
        self.count()?;
        if depth > self.max_depth {
            return Err(ReadError::TooDeep);
        }
        match node {
            Node::Scalar { value, tag, plain, line } => scalar(value, tag.as_deref(), *plain, *line),
            Node::Alias(target) => {
                self.alias_depth += 1;
                let value = self.decode(target, depth);
                self.alias_depth -= 1;
                value
            }
            Node::Sequence(items) => {
                items.iter().map(|item| self.decode(item, depth + 1)).collect::<Result<_, _>>().map(Yaml::Seq)
            }
            Node::Mapping(pairs) => {
                let mut map = Vec::with_capacity(pairs.len());
                self.fill_map(pairs, &mut map, depth)?;
                Ok(Yaml::Map(map))
            }
        }
    }

    /// Decodes a mapping's pairs into `map` in order: a later key overwrites
    /// an earlier one, and a merge key (`<<`) writes its maps' pairs at its
    /// place.
    fn fill_map(
        &mut self,
        pairs: &[(Rc<Node>, Rc<Node>)],
        map: &mut Vec<(Yaml, Yaml)>,
        depth: usize,
    ) -> Result<(), ReadError> {
        for (key, value) in pairs {
            if is_merge_key(key) {
                self.merge(value, map, depth)?;
                continue;
            }
            let key_value = self.decode(key, depth + 1)?;
            if matches!(key_value, Yaml::Seq(_) | Yaml::Map(_)) {
                return Err(ReadError::Syntax(format!("{}invalid map key: a collection", line_prefix(key))));
            }
            let value = self.decode(value, depth + 1)?;
            map_insert(map, key_value, value);
        }
        Ok(())
    }

    fn merge(&mut self, node: &Node, map: &mut Vec<(Yaml, Yaml)>, depth: usize) -> Result<(), ReadError> {
        let want_map = || {
            ReadError::Syntax(format!("{}map merge requires map or sequence of maps as the value", line_prefix(node)))
        };
        match node {
            Node::Mapping(pairs) => {
                self.count()?;
                self.fill_map(pairs, map, depth)
            }
            Node::Alias(target) => match &**target {
                Node::Mapping(pairs) => {
                    self.count()?;
                    self.alias_depth += 1;
                    let filled = self.count().and_then(|()| self.fill_map(pairs, map, depth));
                    self.alias_depth -= 1;
                    filled
                }
                _ => Err(want_map()),
            },
            Node::Sequence(items) => {
                self.count()?;
                // Earlier maps take precedence: merge the last one first.
                for item in items.iter().rev() {
                    self.merge_item(item, map, depth)?;
                }
                Ok(())
            }
            Node::Scalar { .. } => Err(want_map()),
        }
    }

    fn merge_item(&mut self, item: &Node, map: &mut Vec<(Yaml, Yaml)>, depth: usize) -> Result<(), ReadError> {
        match item {
            Node::Mapping(_) => self.merge(item, map, depth),
            Node::Alias(target) if matches!(**target, Node::Mapping(_)) => self.merge(item, map, depth),
            _ => Err(ReadError::Syntax(format!(
                "{}map merge requires map or sequence of maps as the value",
                line_prefix(item)
            ))),
        }
    }
}

fn line_prefix(node: &Node) -> String {
    match node {
        Node::Scalar { line, .. } => format!("line {line}: "),
        _ => String::new(),
    }
}

/// A plain `<<` (or one tagged `!!merge`) is a merge key.
fn is_merge_key(node: &Node) -> bool {
    match node {
        Node::Scalar { value, tag, plain, .. } => {
            value == "<<" && ((*plain && tag.is_none()) || tag.as_deref() == Some("tag:yaml.org,2002:merge"))
        }
        _ => false,
    }
}

/// One scalar, as go-yaml v2 resolves it: a quoted or block scalar without
/// a tag is a string; a plain one (or one with a standard tag) is resolved.
fn scalar(value: &str, tag: Option<&str>, plain: bool, line: usize) -> Result<Yaml, ReadError> {
    let Some(tag) = tag else {
        return Ok(if plain { resolve_plain(value) } else { Yaml::Str(value.to_owned()) });
    };
    let short = tag.strip_prefix(TAG_PREFIX).map(|name| format!("!!{name}"));
    match short.as_deref() {
        Some("!!str") => Ok(Yaml::Str(value.to_owned())),
        Some("!!binary") => {
            use base64::Engine as _;
            let compact: String = value.chars().filter(|c| *c != '\n' && *c != '\r').collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map_err(|_| ReadError::Syntax(format!("line {line}: !!binary value contains invalid base64 data")))?;
            Ok(Yaml::Str(String::from_utf8_lossy(&bytes).into_owned()))
        }
        Some(wanted @ ("!!bool" | "!!int" | "!!float" | "!!null" | "!!timestamp")) => {
            let resolved = resolve_plain(value);
            let found = match &resolved {
                Yaml::Null => "!!null",
                Yaml::Bool(_) => "!!bool",
                Yaml::Int(_) | Yaml::Uint(_) => "!!int",
                Yaml::Float(_) => "!!float",
                Yaml::Str(_) if wanted == "!!timestamp" && looks_like_timestamp(value) => "!!timestamp",
                _ => "!!str",
            };
            match (wanted, found, resolved) {
                (wanted, found, resolved) if wanted == found => Ok(resolved),
                ("!!float", "!!int", Yaml::Int(int)) => Ok(Yaml::Float(int as f64)),
                _ => Err(ReadError::Syntax(format!("line {line}: cannot decode {found} `{value}` as a {wanted}"))),
            }
        }
        // Any other tag (`!foo`, `!`, `!!map` on a scalar) keeps the text.
        _ => Ok(Yaml::Str(value.to_owned())),
    }
}

/// go-yaml's quick check before it tries its timestamp formats.
fn looks_like_timestamp(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.len() > 4 && bytes[..4].iter().all(u8::is_ascii_digit) && bytes[4] == b'-'
}

/// YAML 1.1 resolution of a plain scalar, as go-yaml v2 does it.
fn resolve_plain(value: &str) -> Yaml {
    match value {
        "" | "~" | "null" | "Null" | "NULL" => return Yaml::Null,
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => return Yaml::Bool(true),
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Yaml::Bool(false);
        }
        ".nan" | ".NaN" | ".NAN" => return Yaml::Float(f64::NAN),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Yaml::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Yaml::Float(f64::NEG_INFINITY),
        _ => {}
    }
    match value.as_bytes()[0] {
        b'.' if is_go_float(value, false) => {
            if let Some(float) = parse_float(value) {
                return Yaml::Float(float);
            }
        }
        b'0'..=b'9' | b'+' | b'-' => {
            // Timestamps decode to their text, as strings do.
            let plain: String = value.chars().filter(|c| *c != '_').collect();
            if let Some(int) = parse_go_int(&plain) {
                return int;
            }
            if is_go_float(&plain, true)
                && let Some(float) = parse_float(&plain)
            {
                return Yaml::Float(float);
            }
        }
        _ => {}
    }
    Yaml::Str(value.to_owned())
}

/// `strconv.ParseInt(s, 0, 64)`, then `strconv.ParseUint(s, 0, 64)`.
fn parse_go_int(text: &str) -> Option<Yaml> {
    let (negative, unsigned) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let signed = text.len() != unsigned.len();
    let lower = unsigned.to_ascii_lowercase();
    let (radix, digits) = if let Some(hex) = lower.strip_prefix("0x") {
        (16, hex)
    } else if let Some(octal) = lower.strip_prefix("0o") {
        (8, octal)
    } else if let Some(binary) = lower.strip_prefix("0b") {
        (2, binary)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    if negative {
        if magnitude <= i64::MAX as u64 + 1 {
            return Some(Yaml::Int((magnitude as i64).wrapping_neg()));
        }
        return None;
    }
    if let Ok(int) = i64::try_from(magnitude) {
        return Some(Yaml::Int(int));
    }
    // ParseUint takes no sign.
    (!signed).then_some(Yaml::Uint(magnitude))
}

/// go-yaml's float pattern `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`
/// (with `signed`; the `.`-led form strconv.ParseFloat takes otherwise).
fn is_go_float(text: &str, signed: bool) -> bool {
    let mut rest = text.as_bytes();
    if signed && let Some((b'+' | b'-', after)) = rest.split_first() {
        rest = after;
    }
    let digits = |rest: &mut &[u8]| {
        let count = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        *rest = &rest[count..];
        count
    };
    let whole = digits(&mut rest);
    if let Some((b'.', after)) = rest.split_first() {
        rest = after;
        let fraction = digits(&mut rest);
        if whole == 0 && fraction == 0 {
            return false;
        }
    } else if whole == 0 {
        return false;
    }
    if let Some((b'e' | b'E', after)) = rest.split_first() {
        rest = after;
        if let Some((b'+' | b'-', after)) = rest.split_first() {
            rest = after;
        }
        if digits(&mut rest) == 0 {
            return false;
        }
    }
    rest.is_empty()
}

/// strconv.ParseFloat on text [`is_go_float`] accepted: out of range is an
/// error there (the scalar stays a string).
fn parse_float(text: &str) -> Option<f64> {
    let float: f64 = text.parse().ok()?;
    float.is_finite().then_some(float)
}

/// A float as kubectl sends it: integral values below 1e21 are printed
/// without a fraction by encoding/json and decoded back as integers.
fn float_value(float: f64) -> Option<Value> {
    if !float.is_finite() {
        return None;
    }
    // 2^63: below it, every integral float is an i64.
    if float.fract() == 0.0 && float.abs() < 9_223_372_036_854_775_808_f64 {
        return Some(Value::Number(Number::from(float as i64)));
    }
    // Up to 1e21 encoding/json writes the shortest digits, padded with
    // zeros, as an integer; what fits a u64 is read back as one.
    if float.fract() == 0.0
        && float > 0.0
        && float < 1e21
        && let Ok(unsigned) = format!("{float}").parse::<u64>()
    {
        return Some(Value::Number(Number::from(unsigned)));
    }
    Number::from_f64(float).map(Value::Number)
}

/// sigs.k8s.io/yaml's conversion to JSON.
fn to_json(value: Yaml, max_depth: usize, depth: usize) -> Result<Value, ReadError> {
    if depth > max_depth {
        return Err(ReadError::TooDeep);
    }
    Ok(match value {
        Yaml::Null => Value::Null,
        Yaml::Bool(bool) => Value::Bool(bool),
        Yaml::Int(int) => Value::Number(int.into()),
        Yaml::Uint(uint) => float_value(uint as f64).expect("a u64 is finite"),
        Yaml::Float(float) => float_value(float)
            .ok_or_else(|| ReadError::Syntax(format!("json: unsupported value: {}", go_float_name(float))))?,
        Yaml::Str(text) => Value::String(text),
        Yaml::Seq(items) => {
            Value::Array(items.into_iter().map(|item| to_json(item, max_depth, depth + 1)).collect::<Result<_, _>>()?)
        }
        Yaml::Map(pairs) => {
            let mut map = Map::new();
            let mut from: HashMap<String, Yaml> = HashMap::new();
            for (key, value) in pairs {
                let name = key_string(&key)?;
                if let Some(first) = from.get(&name) {
                    // Go ranges over its map in random order: which value
                    // kubectl keeps is chance. Refuse rather than guess.
                    return Err(ReadError::Syntax(format!(
                        "keys {} and {} are both {name:?} in JSON (kubectl keeps one of them at random)",
                        describe_key(first),
                        describe_key(&key)
                    )));
                }
                from.insert(name.clone(), key);
                map.insert(name, to_json(value, max_depth, depth + 1)?);
            }
            Value::Object(map)
        }
    })
}

fn go_float_name(float: f64) -> &'static str {
    if float.is_nan() {
        "NaN"
    } else if float > 0.0 {
        "+Inf"
    } else {
        "-Inf"
    }
}

fn describe_key(key: &Yaml) -> String {
    match key {
        Yaml::Str(text) => format!("{text:?} (a string)"),
        Yaml::Null => "null".into(),
        Yaml::Bool(bool) => format!("{bool} (a boolean)"),
        Yaml::Int(int) => format!("{int} (a number)"),
        Yaml::Uint(uint) => format!("{uint} (a number)"),
        Yaml::Float(float) => format!("{float} (a number)"),
        Yaml::Seq(_) | Yaml::Map(_) => "a collection".into(),
    }
}

/// The JSON name of a map key, as sigs.k8s.io/yaml writes it.
fn key_string(key: &Yaml) -> Result<String, ReadError> {
    match key {
        Yaml::Str(text) => Ok(text.clone()),
        Yaml::Int(int) => Ok(int.to_string()),
        Yaml::Bool(bool) => Ok(bool.to_string()),
        Yaml::Float(float) => Ok(go_float32_key(*float)),
        Yaml::Null => Err(ReadError::Syntax("unsupported map key: null".into())),
        Yaml::Uint(uint) => Err(ReadError::Syntax(format!("unsupported map key of type uint64: {uint}"))),
        Yaml::Seq(_) | Yaml::Map(_) => Err(ReadError::Syntax("invalid map key: a collection".into())),
    }
}

/// `strconv.FormatFloat(f, 'g', -1, 32)` with go-yaml's names for the
/// special values.
fn go_float32_key(float: f64) -> String {
    if float.is_nan() {
        return ".nan".into();
    }
    if float.is_infinite() {
        return if float > 0.0 { ".inf" } else { "-.inf" }.into();
    }
    let single = float as f32;
    if single.is_infinite() {
        return if single > 0.0 { ".inf" } else { "-.inf" }.into();
    }
    // Rust's `{:e}` gives the shortest digits that round-trip as f32.
    let scientific = format!("{single:e}");
    let (mantissa, exponent) = scientific.split_once('e').expect("{:e} has an exponent");
    let exponent: i32 = exponent.parse().expect("{:e} exponent is a number");
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if negative { "-" } else { "" };
    if digits.chars().all(|d| d == '0') {
        return format!("{sign}0");
    }
    if !(-4..6).contains(&exponent) {
        // %e: d.ddde±XX
        let (first, rest) = digits.split_at(1);
        let fraction = if rest.is_empty() { String::new() } else { format!(".{rest}") };
        let exponent_sign = if exponent < 0 { '-' } else { '+' };
        return format!("{sign}{first}{fraction}e{exponent_sign}{:02}", exponent.abs());
    }
    // %f with exactly the significant digits.
    let point = exponent + 1;
    if point <= 0 {
        format!("{sign}0.{}{digits}", "0".repeat((-point) as usize))
    } else if point as usize >= digits.len() {
        format!("{sign}{digits}{}", "0".repeat(point as usize - digits.len()))
    } else {
        let (whole, fraction) = digits.split_at(point as usize);
        format!("{sign}{whole}.{fraction}")
    }
}

// ---------------------------------------------------------------- writing

/// YAML for people to read and commit that kubectl reads back as `values`:
/// serde_yaml_ng's (YAML 1.2) rendering, unless kubectl would read any of
/// it otherwise (it writes the strings `yes`, `on`, `1_000` unquoted); then
/// all of them are written by [`to_kubectl_yaml`], so that a diff between
/// two renderings compares like with like.
pub fn render_all(values: &[Option<&Value>]) -> Vec<String> {
    let usual: Vec<String> = values
        .iter()
        .map(|value| value.map(|v| serde_yaml_ng::to_string(v).unwrap_or_else(|e| format!("# {e}\n"))))
        .map(Option::unwrap_or_default)
        .collect();
    // Declarations are at most MAX_DEPTH deep; anything deeper (a live
    // object, say) is shown as it is rather than walked again.
    const DEPTH: usize = super::source::MAX_DEPTH + 2;
    if values.iter().flatten().any(|value| super::source::depth_exceeds(value, DEPTH)) {
        return usual;
    }
    let faithful = values.iter().zip(&usual).all(|(value, text)| {
        value.is_none_or(|value| read_documents(text, DEPTH).first() == Some(&Ok(normalize_numbers(value.clone()))))
    });
    if faithful {
        return usual;
    }
    values.iter().map(|value| value.map(to_kubectl_yaml).unwrap_or_default()).collect()
}

/// Block YAML in serde_yaml_ng's layout in which every string that a YAML
/// 1.1 reader would take for something else is quoted.
pub fn to_kubectl_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_map(map, 0, &mut out),
        Value::Array(items) if !items.is_empty() => write_seq(items, 0, &mut out),
        scalar => {
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
    out
}

fn write_map(map: &Map<String, Value>, indent: usize, out: &mut String) {
    for (key, value) in map {
        out.push_str(&" ".repeat(indent));
        out.push_str(&quote(key));
        out.push(':');
        write_child(value, indent, false, out);
    }
}

fn write_seq(items: &[Value], indent: usize, out: &mut String) {
    for item in items {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        write_child(item, indent, true, out);
    }
}

/// What follows `key:` or `-`.
fn write_child(value: &Value, indent: usize, in_seq: bool, out: &mut String) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            if in_seq {
                // `- key: value`, the rest of the mapping under the first key.
                out.push(' ');
                let mut rest = String::new();
                write_map(map, indent + 2, &mut rest);
                out.push_str(rest.trim_start_matches(' '));
            } else {
                out.push('\n');
                write_map(map, indent + 2, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            if in_seq {
                out.push(' ');
                let mut rest = String::new();
                write_seq(items, indent + 2, &mut rest);
                out.push_str(rest.trim_start_matches(' '));
            } else {
                out.push('\n');
                write_seq(items, indent, out);
            }
        }
        scalar => {
            out.push(' ');
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
}

fn inline(value: &Value) -> String {
    match value {
        Value::String(text) => quote(text),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        other => other.to_string(),
    }
}

/// A string plain when every YAML reader takes it for that string, else
/// single-quoted, or double-quoted (JSON escapes) when it spans lines or
/// holds control characters.
fn quote(text: &str) -> String {
    // Plain in block context: no indicator first, no `: ` or ` #` inside,
    // no space at either end, nothing a YAML 1.1 reader resolves.
    let safe_char = |c: char| c.is_alphanumeric() || " -_./=+@()%$~^:,;[]{}<>".contains(c);
    let plain = !text.is_empty()
        && text.chars().all(safe_char)
        && !text.starts_with(['-', '%', '@', '~', ':', ',', '[', ']', '{', '}', '<', '>', ' '])
        && !text.ends_with([' ', ':'])
        && !text.contains(": ")
        && !text.contains("  ")
        && matches!(resolve_plain(text), Yaml::Str(_));
    if plain {
        text.to_owned()
    } else if text.chars().any(|c| c.is_control()) {
        serde_json::to_string(text).expect("a string serializes")
    } else {
        format!("'{}'", text.replace('\'', "''"))
    }
}

#[cfg(test)]
#[path = "yaml_tests.rs"]
mod tests;
