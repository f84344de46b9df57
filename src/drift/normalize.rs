//! What the API server normalizes, as pure comparisons: Kubernetes
//! quantities by value, numbers by value, zero values the server drops, and
//! Secret data compared as bytes.
//!
//! The diff calls these at each leaf; nothing here knows about paths beyond
//! the key names that say where a quantity lives.

use base64::Engine as _;
use serde_json::Value;
use thiserror::Error;

/// Why a string is not a Kubernetes quantity.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QuantityError {
    /// Nothing to parse.
    #[error("empty quantity")]
    Empty,
    /// No digits where the number should be.
    #[error("quantity {0:?} has no digits")]
    NoDigits(String),
    /// A number with more than one decimal point.
    #[error("quantity {0:?} is not a number")]
    BadNumber(String),
    /// A suffix that is neither SI, binary SI nor a decimal exponent.
    #[error("quantity {0:?} has an unknown suffix")]
    BadSuffix(String),
    /// More significant digits or a larger exponent than we compare exactly.
    #[error("quantity {0:?} is out of the supported range")]
    OutOfRange(String),
}

/// A Kubernetes quantity (`500m`, `1Gi`, `1e3`) reduced to a canonical form,
/// so two quantities are equal exactly when their values are.
///
/// The value is `sign * odd * 2^pow2 * 5^pow5` with `odd` not divisible by 2
/// or 5. Every rational of the form `n * 10^a * 2^b` (all that the grammar can
/// express) has exactly one such form, so the derived equality is exact, with
/// no floating point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quantity {
    negative: bool,
    odd: u128,
    pow2: i64,
    pow5: i64,
}

// Exponents beyond this are not real quantities; refusing them keeps the
// arithmetic in i64 without overflow checks at every step.
const MAX_EXPONENT: i64 = 10_000;

impl Quantity {
    const ZERO: Quantity = Quantity { negative: false, odd: 0, pow2: 0, pow5: 0 };

    /// Builds `mantissa * 10^exp10 * 2^exp2` in canonical form.
    fn from_parts(negative: bool, mut mantissa: u128, exp10: i64, exp2: i64) -> Quantity {
        if mantissa == 0 {
            return Quantity::ZERO;
        }
        let (mut pow2, mut pow5) = (exp10 + exp2, exp10);
        while mantissa.is_multiple_of(2) {
            mantissa /= 2;
            pow2 += 1;
        }
        while mantissa.is_multiple_of(5) {
            mantissa /= 5;
            pow5 += 1;
        }
        Quantity { negative, odd: mantissa, pow2, pow5 }
    }
}

/// Parses the Kubernetes quantity grammar:
///
/// ```text
/// quantity   ::= sign? number suffix
/// number     ::= digits | digits "." digits? | "." digits
/// suffix     ::= "" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E"
///              | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
///              | ("e" | "E") sign? digits
/// ```
pub fn parse_quantity(text: &str) -> Result<Quantity, QuantityError> {
    if text.is_empty() {
        return Err(QuantityError::Empty);
    }
    let (negative, rest) = match text.as_bytes()[0] {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let number_len = rest.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
    let (number, suffix) = rest.split_at(number_len);
    let (mantissa, fraction_digits) = parse_decimal(text, number)?;
    let (exp10, exp2) = parse_suffix(suffix).ok_or_else(|| QuantityError::BadSuffix(text.to_owned()))?;
    let exp10 = exp10 - fraction_digits;
    if exp10.abs() > MAX_EXPONENT {
        return Err(QuantityError::OutOfRange(text.to_owned()));
    }
    Ok(Quantity::from_parts(negative, mantissa, exp10, exp2))
}

/// `12.50` -> (1250, 2). Fails without digits, with two dots, or when the
/// significant digits do not fit in u128 (38 digits: far beyond any real
/// quantity).
fn parse_decimal(text: &str, number: &str) -> Result<(u128, i64), QuantityError> {
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(QuantityError::NoDigits(text.to_owned()));
    }
    if frac_part.contains('.') {
        return Err(QuantityError::BadNumber(text.to_owned()));
    }
    // Trailing zeros of the fraction carry no value; dropping them keeps long
    // spellings such as `1.000000000000000000000000000000000000000` in range.
    let frac_part = frac_part.trim_end_matches('0');
    let out_of_range = || QuantityError::OutOfRange(text.to_owned());
    let mut mantissa: u128 = 0;
    for digit in int_part.bytes().chain(frac_part.bytes()) {
        mantissa =
            mantissa.checked_mul(10).and_then(|m| m.checked_add(u128::from(digit - b'0'))).ok_or_else(out_of_range)?;
    }
    Ok((mantissa, i64::try_from(frac_part.len()).map_err(|_| out_of_range())?))
}

/// The suffix as (power of 10, power of 2).
fn parse_suffix(suffix: &str) -> Option<(i64, i64)> {
    let powers = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        _ => return parse_exponent(suffix).map(|exp| (exp, 0)),
    };
    Some(powers)
}

fn parse_exponent(suffix: &str) -> Option<i64> {
    let digits = suffix.strip_prefix('e').or_else(|| suffix.strip_prefix('E'))?;
    let unsigned = digits.strip_prefix(['+', '-']).unwrap_or(digits);
    if unsigned.is_empty() || unsigned.len() > 6 || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A JSON value read as a quantity: strings, and numbers as YAML gives them
/// for an unquoted `cpu: 1` or `cpu: 0.5`.
pub fn quantity_of(value: &Value) -> Option<Quantity> {
    match value {
        Value::String(text) => parse_quantity(text).ok(),
        Value::Number(number) => parse_quantity(&number.to_string()).ok(),
        _ => None,
    }
}

// Maps whose every value is a quantity, keyed by resource name.
const QUANTITY_MAPS: &[&str] = &[
    "limits",
    "requests",
    "hard",
    "max",
    "min",
    "default",
    "defaultRequest",
    "maxLimitRequestRatio",
    "capacity",
    "allocatable",
    "overhead",
];

// Fields that hold one quantity wherever they appear.
const QUANTITY_FIELDS: &[&str] = &["sizeLimit", "storage", "ephemeral-storage", "averageValue"];

/// Whether the field `key`, inside a map that is itself the field `parent`,
/// holds a Kubernetes quantity (e.g. `cpu` in `resources.limits`, `hard` of a
/// ResourceQuota, `sizeLimit` of an emptyDir, `value` of an HPA target).
pub fn is_quantity_field(parent: Option<&str>, key: &str) -> bool {
    QUANTITY_FIELDS.contains(&key)
        || parent.is_some_and(|parent| QUANTITY_MAPS.contains(&parent))
        || (key == "value" && parent == Some("target"))
}

/// Equality of two scalars as the API server stores them: numbers by value
/// (`1` == `1.0`), everything else as JSON.
///
/// Numeric strings and numbers are deliberately *not* equal, not even for
/// int-or-string fields (`targetPort`, probe ports, `maxSurge`,
/// `maxUnavailable`): the server keeps the type it was sent, and validation
/// rejects a purely numeric string there (a port name needs a letter, a
/// percentage needs `%`), so `"8080"` can never be stored as equivalent to
/// `8080`. Integer-only fields (`containerPort`, `port`) reject strings
/// outright. Treating them as equal would hide a real difference.
pub fn scalars_equal(declared: &Value, live: &Value) -> bool {
    match (declared, live) {
        (Value::Number(a), Value::Number(b)) => numbers_equal(a, b),
        _ => declared == live,
    }
}

fn numbers_equal(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    if let (Some(a), Some(b)) = (a.as_i64(), b.as_i64()) {
        return a == b;
    }
    if let (Some(a), Some(b)) = (a.as_u64(), b.as_u64()) {
        return a == b;
    }
    // At least one side is a float: the server decoded both into the same
    // Go type, so compare by value (`1` vs `1.0`).
    a.as_f64() == b.as_f64()
}

/// Equality of a leaf in a quantity field: by value when both sides parse as
/// quantities (`0.5` == `500m`, `1Gi` == `1024Mi`), else as scalars.
pub fn quantities_equal(declared: &Value, live: &Value) -> bool {
    match (quantity_of(declared), quantity_of(live)) {
        (Some(a), Some(b)) => a == b,
        _ => scalars_equal(declared, live),
    }
}

/// Whether a declared value is what the server drops when it stores the
/// object: `null`, `""`, `0`, `false`, and maps or lists with nothing but such
/// values. Go structs tag these fields `omitempty`, so a manifest that spells
/// `annotations: {}`, `env: []` or `hostNetwork: false` reads back without
/// them. The caller only asks this when the live side lacks the field.
///
/// `depth` bounds the recursion; past it the value counts as not empty.
pub fn is_dropped_by_server(value: &Value, depth: usize) -> bool {
    if depth == 0 {
        return false;
    }
    match value {
        Value::Null => true,
        Value::Bool(flag) => !flag,
        Value::Number(number) => number.as_f64() == Some(0.0),
        Value::String(text) => text.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.values().all(|value| is_dropped_by_server(value, depth - 1)),
    }
}

/// The bytes of a base64 Secret value, ignoring whitespace (the API server
/// re-encodes canonically, so line breaks or spaces in Git must not count).
/// None when the value is not a string or not valid base64.
pub fn secret_bytes(value: &Value) -> Option<Vec<u8>> {
    let text = value.as_str()?;
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .ok()
        .or_else(|| base64::engine::general_purpose::STANDARD_NO_PAD.decode(compact.trim_end_matches('=')).ok())
}

/// Whether a declared Secret `data` value equals the live one, compared as
/// decoded bytes (falls back to the strings when either is not base64).
pub fn secret_data_equal(declared: &Value, live: &Value) -> bool {
    match (secret_bytes(declared), secret_bytes(live)) {
        (Some(a), Some(b)) => a == b,
        _ => declared == live,
    }
}

/// Whether a declared Secret `stringData` value equals the live `data` value
/// the server wrote for it.
pub fn secret_string_data_equal(declared: &Value, live: &Value) -> bool {
    match (declared.as_str(), secret_bytes(live)) {
        (Some(text), Some(bytes)) => text.as_bytes() == bytes.as_slice(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equal_quantities_compare_equal() {
        let cases = [
            ("0.5", "500m"),
            ("1Gi", "1024Mi"),
            ("1000m", "1"),
            ("1e3", "1k"),
            ("1E3", "1k"),
            ("1.", "1"),
            (".5", "500m"),
            ("+2", "2"),
            ("0", "-0"),
            ("0Gi", "0m"),
            ("1.5Gi", "1536Mi"),
            ("1000000u", "1"),
            ("1000n", "1u"),
            ("1e-3", "1m"),
            ("12.500", "12500m"),
            ("1Ki", "1024"),
            ("1Ei", "1152921504606846976"),
            ("100M", "0.1G"),
            ("1.000000000000000000000000000000000000000000", "1"),
            ("0.001k", "1"),
        ];
        for (a, b) in cases {
            let qa = parse_quantity(a).unwrap_or_else(|e| panic!("{a}: {e}"));
            let qb = parse_quantity(b).unwrap_or_else(|e| panic!("{b}: {e}"));
            assert_eq!(qa, qb, "{a} vs {b}");
        }
    }

    #[test]
    fn different_quantities_compare_unequal() {
        let cases =
            [("1G", "1Gi"), ("1", "-1"), ("500m", "0.51"), ("1k", "1Ki"), ("1M", "1m"), ("1E", "1e0"), ("3", "3.0001")];
        for (a, b) in cases {
            assert_ne!(parse_quantity(a), parse_quantity(b), "{a} vs {b}");
        }
    }

    #[test]
    fn invalid_quantities_are_rejected() {
        let cases = [
            ("", QuantityError::Empty),
            ("-", QuantityError::NoDigits("-".into())),
            ("m", QuantityError::NoDigits("m".into())),
            (".", QuantityError::NoDigits(".".into())),
            ("1..2", QuantityError::BadNumber("1..2".into())),
            ("1Z", QuantityError::BadSuffix("1Z".into())),
            ("1 Gi", QuantityError::BadSuffix("1 Gi".into())),
            ("1gi", QuantityError::BadSuffix("1gi".into())),
            ("1KB", QuantityError::BadSuffix("1KB".into())),
            ("1e", QuantityError::BadSuffix("1e".into())),
            ("1e+", QuantityError::BadSuffix("1e+".into())),
            ("1e1.5", QuantityError::BadSuffix("1e1.5".into())),
            ("1e9999999", QuantityError::BadSuffix("1e9999999".into())),
            ("1e99999", QuantityError::OutOfRange("1e99999".into())),
            (
                "123456789012345678901234567890123456789012",
                QuantityError::OutOfRange("123456789012345678901234567890123456789012".into()),
            ),
            ("--1", QuantityError::NoDigits("--1".into())),
            ("1Mi ", QuantityError::BadSuffix("1Mi ".into())),
            ("١", QuantityError::NoDigits("١".into())),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_quantity(text), Err(expected), "{text:?}");
        }
    }

    #[test]
    fn quantity_fields_are_recognised_by_location() {
        let cases = [
            (Some("limits"), "cpu", true),
            (Some("requests"), "memory", true),
            (Some("hard"), "requests.cpu", true),
            (Some("defaultRequest"), "memory", true),
            (Some("maxLimitRequestRatio"), "cpu", true),
            (Some("emptyDir"), "sizeLimit", true),
            (Some("target"), "averageValue", true),
            (Some("target"), "value", true),
            (Some("requests"), "storage", true),
            (Some("env"), "value", false),
            (Some("spec"), "replicas", false),
            (None, "cpu", false),
        ];
        for (parent, key, expected) in cases {
            assert_eq!(is_quantity_field(parent, key), expected, "{parent:?}.{key}");
        }
    }

    #[test]
    fn leaf_equality_follows_the_server() {
        let cases = [
            (json!(1), json!(1.0), false, true),
            (json!(1), json!(2), false, false),
            (json!(-1), json!(-1), false, true),
            (json!(u64::MAX), json!(u64::MAX), false, true),
            (json!("yes"), json!("yes"), false, true),
            (json!(true), json!("true"), false, false),
            // int-or-string: the server keeps the type; see scalars_equal.
            (json!(8080), json!("8080"), false, false),
            (json!("http"), json!("http"), false, true),
            (json!("0.5"), json!("500m"), true, true),
            (json!(0.5), json!("500m"), true, true),
            (json!(1), json!("1000m"), true, true),
            (json!("1Gi"), json!("1024Mi"), true, true),
            (json!("1Gi"), json!("1G"), true, false),
            (json!("0.5"), json!("500m"), false, false),
            (json!("junk"), json!("junk"), true, true),
        ];
        for (declared, live, quantity, expected) in cases {
            let equal = if quantity { quantities_equal(&declared, &live) } else { scalars_equal(&declared, &live) };
            assert_eq!(equal, expected, "{declared} vs {live} (quantity: {quantity})");
        }
    }

    #[test]
    fn zero_values_are_dropped_by_the_server() {
        let cases = [
            (json!({}), true),
            (json!([]), true),
            (json!(null), true),
            (json!(""), true),
            (json!(0), true),
            (json!(false), true),
            (json!({"limits": {}, "requests": {}}), true),
            (json!({"a": 1}), false),
            (json!([0]), false),
            (json!(true), false),
            (json!("x"), false),
        ];
        for (value, expected) in cases {
            assert_eq!(is_dropped_by_server(&value, 8), expected, "{value}");
        }
    }

    #[test]
    fn secret_values_compare_as_bytes() {
        let cases = [
            (json!("aGVsbG8="), json!("aGVsbG8="), true),
            (json!("aGVs\nbG8="), json!("aGVsbG8="), true),
            (json!("aGVsbG8"), json!("aGVsbG8="), true),
            (json!("aGVsbG8h"), json!("aGVsbG8="), false),
            (json!("not base64!"), json!("aGVsbG8="), false),
        ];
        for (declared, live, expected) in cases {
            assert_eq!(secret_data_equal(&declared, &live), expected, "{declared} vs {live}");
        }
        assert!(secret_string_data_equal(&json!("hello"), &json!("aGVsbG8=")));
        assert!(!secret_string_data_equal(&json!("hellO"), &json!("aGVsbG8=")));
        assert!(!secret_string_data_equal(&json!(1), &json!("MQ==")));
    }
}
