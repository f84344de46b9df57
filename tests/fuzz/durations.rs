//! Targets `durations`, `duration_messages`, `reasons` and `policy_select`:
//! what the API server admits (the CRD's format regex and CEL `duration()`,
//! which is Go's `time.ParseDuration`) against what the operator reads
//! (kube's `Duration` parser) and decides (`access::policy`).
//!
//! Properties: every duration the CRD admits parses in Rust, without panic,
//! to Go's value and passes a 24h policy; duration messages never say "X
//! exceeds the maximum of X"; a reason the operator accepts passes the CRD's
//! rule too, and one made only of invisible characters is trivial; policy
//! selection never widens an allow-list.

use std::collections::BTreeMap;
use std::time::Duration;

use driftwarden::access::policy::{self, Judge, NoPolicy, Violation};
use driftwarden::api::{AccessPolicy, AccessPolicySpec, AccessRequest, Approvers, RoleKind, RoleRef, WindowStart};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::CustomResourceExt as _;
use proptest::prelude::*;

use crate::fuzz;
use crate::values::pick;

const GOOD_REASON: &str = "INC-4242: checkout pods crash-looping";
const DAY_NANOS: i128 = 24 * 3600 * 1_000_000_000;

/// The format rule of `spec.duration`, read from the generated CRD, as a Rust regex.
fn crd_duration_format() -> regex::Regex {
    let crd = serde_json::to_value(AccessRequest::crd()).expect("the CRD serializes");
    let field =
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["duration"];
    let rules = field["x-kubernetes-validations"].as_array().expect("spec.duration has CEL rules");
    let rule = rules
        .iter()
        .filter_map(|rule| rule["rule"].as_str())
        .find_map(|rule| rule.strip_prefix("self.matches('")?.strip_suffix("')"))
        .expect("a self.matches('...') rule on spec.duration");
    // CEL single-quoted strings escape a backslash as `\\`.
    regex::Regex::new(&rule.replace(r"\\", r"\")).expect("the CRD's pattern is a valid regex")
}

/// The CRD's length bounds of `spec.duration` (OpenAPI counts characters).
fn crd_duration_length() -> (usize, usize) {
    let crd = serde_json::to_value(AccessRequest::crd()).expect("the CRD serializes");
    let field =
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["duration"];
    let bound = |name: &str| field[name].as_u64().and_then(|n| usize::try_from(n).ok());
    (bound("minLength").unwrap_or(0), bound("maxLength").unwrap_or(usize::MAX))
}

/// Why Go's `time.ParseDuration` refuses a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GoError {
    Syntax,
    Overflow,
}

/// Go's `time.ParseDuration`, written from its documented semantics: exact
/// integer nanoseconds, fractions truncated, int64 overflow is an error.
fn go_parse_duration(text: &str) -> Result<i128, GoError> {
    const LIMIT: u128 = 1 << 63;
    let mut s = text.as_bytes();
    let mut negative = false;
    if let Some((&sign @ (b'-' | b'+'), rest)) = s.split_first() {
        negative = sign == b'-';
        s = rest;
    }
    if s == b"0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(GoError::Syntax);
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        if !(s[0] == b'.' || s[0].is_ascii_digit()) {
            return Err(GoError::Syntax);
        }
        let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
        let mut whole: u128 = 0;
        for &digit in &s[..digits] {
            whole = whole * 10 + u128::from(digit - b'0');
            if whole > LIMIT {
                return Err(GoError::Overflow);
            }
        }
        s = &s[digits..];
        let (mut fraction, mut scale, mut fraction_digits) = (0u128, 1f64, 0);
        if s.first() == Some(&b'.') {
            s = &s[1..];
            fraction_digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
            let mut overflowed = false;
            for &digit in &s[..fraction_digits] {
                let next = fraction * 10 + u128::from(digit - b'0');
                if overflowed || fraction > (LIMIT - 1) / 10 || next > LIMIT {
                    overflowed = true;
                    continue;
                }
                fraction = next;
                scale *= 10.0;
            }
            s = &s[fraction_digits..];
        }
        if digits == 0 && fraction_digits == 0 {
            return Err(GoError::Syntax);
        }
        let unit_len = s.iter().take_while(|b| !(**b == b'.' || b.is_ascii_digit())).count();
        let unit: u128 = match &s[..unit_len] {
            b"ns" => 1,
            b"us" => 1_000,
            [0xc2, 0xb5, b's'] | [0xce, 0xbc, b's'] => 1_000, // µs, μs
            b"ms" => 1_000_000,
            b"s" => 1_000_000_000,
            b"m" => 60_000_000_000,
            b"h" => 3_600_000_000_000,
            _ => return Err(GoError::Syntax),
        };
        s = &s[unit_len..];
        if whole > LIMIT / unit {
            return Err(GoError::Overflow);
        }
        let mut value = whole * unit;
        if fraction > 0 {
            // Go: v += uint64(float64(f) * (float64(unit) / scale))
            value += (fraction as f64 * (unit as f64 / scale)) as u128;
            if value > LIMIT {
                return Err(GoError::Overflow);
            }
        }
        total += value;
        if total > LIMIT {
            return Err(GoError::Overflow);
        }
    }
    if negative {
        return Ok(-(total as i128));
    }
    if total > LIMIT - 1 {
        return Err(GoError::Overflow);
    }
    Ok(total as i128)
}

/// Durations at the edges of the 24h ceiling and of Go's int64.
const EDGES: &[&str] =
    &["0", "24h", "24h0m0.000000001s", "23h59m59.9999999999s", "1440m", "86400s", "86400000000000ns", "2562048h"];

/// Strings that look like durations, often almost right.
fn duration_text() -> impl Strategy<Value = String> {
    let number = prop_oneof![
        4 => (0u64..100).prop_map(|n| n.to_string()),
        1 => "[0-9]{1,25}",
        2 => ("[0-9]{1,4}", "[0-9]{0,12}").prop_map(|(a, b)| format!("{a}.{b}")),
        1 => "\\.[0-9]{1,3}",
        1 => pick(&["", ".", "00", "1e3", "-1", "+1", "３０", "٣"]),
    ];
    let unit = proptest::sample::select(
        &["ns", "us", "µs", "μs", "ms", "s", "m", "h", "", "d", "H", "sec", " s", "mm", "µ"][..],
    );
    let component = (number, unit).prop_map(|(n, u)| format!("{n}{u}"));
    prop_oneof![
        8 => (proptest::sample::select(&["", "", "", "-", "+", " "][..]), proptest::collection::vec(component, 1..5))
            .prop_map(|(sign, parts)| format!("{sign}{}", parts.concat())),
        1 => any::<String>(),
        1 => pick(EDGES),
    ]
}

fn policy_spec(max: Duration) -> AccessPolicySpec {
    AccessPolicySpec {
        namespace_selector: LabelSelector::default(),
        roles: vec![RoleRef { kind: RoleKind::ClusterRole, name: "edit".into() }],
        max_duration: max.into(),
        approvers: Approvers { users: vec![], groups: vec!["sre".into()] },
        required_approvals: 1,
        window_start: WindowStart::Approval,
        pending_timeout: Duration::from_secs(3600).into(),
        window_end: Default::default(),
    }
}

#[test]
fn durations() {
    let format = crd_duration_format();
    let (min_len, max_len) = crd_duration_length();
    let ceiling = policy_spec(Duration::from_secs(24 * 3600));
    let judge = Judge { name: "ceiling".into(), spec: &ceiling };
    fuzz("durations", 20000, duration_text(), |text| {
        let go = go_parse_duration(&text);
        let matches = format.is_match(&text);
        if matches {
            prop_assert!(go != Err(GoError::Syntax), "the CRD's format admits {text:?}, which Go cannot parse");
        }
        let length = text.chars().count();
        let Ok(nanos) = go else { return Ok(()) };
        if !(matches && (min_len..=max_len).contains(&length) && nanos > 0 && nanos <= DAY_NANOS) {
            return Ok(());
        }
        // The API server admits it: the operator must read it, as Go does.
        let parsed = std::panic::catch_unwind(|| text.parse::<kube::core::Duration>());
        let parsed = match parsed {
            Ok(Ok(parsed)) => parsed,
            Ok(Err(error)) => return Err(TestCaseError::fail(format!("admitted {text:?} does not parse: {error}"))),
            Err(_) => return Err(TestCaseError::fail(format!("parsing admitted {text:?} panics"))),
        };
        prop_assert!(!parsed.is_negative());
        let rust = Duration::from(parsed);
        let difference = (rust.as_nanos() as i128 - nanos).abs();
        prop_assert!(difference <= 1_000, "{text:?}: Go {nanos} ns, Rust {} ns", rust.as_nanos());
        prop_assert!(policy::check_request(rust, GOOD_REASON, &judge).is_ok(), "{text:?} refused under a 24h policy");
        Ok(())
    });
}

#[test]
fn duration_messages() {
    let duration = (
        0u64..=2 * 24 * 3600,
        prop_oneof![Just(0u32), 0u32..1_000_000_000, (0u32..1000).prop_map(|ms| ms * 1_000_000)],
    )
        .prop_map(|(secs, nanos)| Duration::new(secs, nanos));
    fuzz("duration_messages", 20000, (duration.clone(), duration), |(asked, max)| {
        // What users read is a Go duration that means exactly the value.
        for value in [asked, max] {
            let shown = policy::format_duration(value);
            prop_assert_eq!(go_parse_duration(&shown), Ok(value.as_nanos() as i128), "{:?} shown as {}", value, shown);
        }
        let spec = policy_spec(max);
        let judge = Judge { name: "p".into(), spec: &spec };
        if let Err(Violation::DurationOverMaximum { asked, max, .. }) =
            policy::check_request(asked, GOOD_REASON, &judge)
        {
            prop_assert_ne!(asked, max, "a refusal that reads 'X exceeds the maximum of X'");
        }
        Ok(())
    });
}

/// Characters that show nothing: format characters, joiners, the BOM.
const INVISIBLE: &[char] = &[
    '\u{200b}',
    '\u{200c}',
    '\u{200d}',
    '\u{2060}',
    '\u{2061}',
    '\u{2062}',
    '\u{2063}',
    '\u{feff}',
    '\u{00ad}',
    '\u{180e}',
    '\u{200e}',
    '\u{200f}',
    '\u{202a}',
    '\u{202e}',
    '\u{fe0f}',
    '\u{e0020}',
    '\u{034f}',
];

#[test]
fn reasons() {
    let invisible = proptest::sample::select(INVISIBLE);
    let reason = prop_oneof![
        3 => any::<String>(),
        2 => proptest::collection::vec(invisible.clone(), 0..40).prop_map(String::from_iter),
        1 => proptest::collection::vec(prop_oneof![invisible, Just(' '), Just('\t'), Just('\u{3000}')], 0..40)
            .prop_map(String::from_iter),
        1 => (pick(&["fix", "INC-1", "修复结账服务", "🔥"]), 0usize..20).prop_map(|(s, n)| s.repeat(n)),
    ];
    fuzz("reasons", 10000, reason, |reason| {
        let trivial = policy::is_trivial(&reason);
        // The CRD's rule: self.trim().size() >= 10 (Go's TrimSpace, code points).
        if !trivial {
            prop_assert!(reason.trim().chars().count() >= 10, "accepted {reason:?}, which the CRD refuses");
        }
        if reason.chars().all(|c| c.is_whitespace() || INVISIBLE.contains(&c)) {
            prop_assert!(trivial, "a reason nobody can read was accepted: {:?}", reason.escape_unicode().to_string());
        }
        Ok(())
    });
}

fn selector() -> impl Strategy<Value = LabelSelector> {
    let labels = proptest::collection::btree_map("team|env|x", "a|b|", 0..2);
    let requirement = (
        "team|env|x",
        proptest::sample::select(&["In", "NotIn", "Exists", "DoesNotExist", "Contains", ""][..]),
        proptest::collection::vec("a|b", 0..2),
    )
        .prop_map(|(key, operator, values)| LabelSelectorRequirement {
            key,
            operator: operator.to_owned(),
            values: Some(values),
        });
    (proptest::option::of(labels), proptest::option::of(proptest::collection::vec(requirement, 0..2)))
        .prop_map(|(match_labels, match_expressions)| LabelSelector { match_labels, match_expressions })
}

fn role() -> impl Strategy<Value = RoleRef> {
    let kind = prop_oneof![Just(RoleKind::Role), Just(RoleKind::ClusterRole)];
    let name =
        proptest::sample::select(&["edit", "view", "admin", "cluster-admin", "*", "edit*", "", "EDIT", "édit"][..]);
    (kind, name).prop_map(|(kind, name)| RoleRef { kind, name: name.to_owned() })
}

fn access_policy() -> impl Strategy<Value = AccessPolicy> {
    (
        "p[0-9]",
        selector(),
        proptest::collection::vec(role(), 0..3),
        (1u64..48).prop_map(|h| Duration::from_secs(h * 1800)),
        -1i32..4,
        (1u64..7200).prop_map(Duration::from_secs),
    )
        .prop_map(|(name, namespace_selector, roles, max, required_approvals, pending)| {
            let mut spec = policy_spec(max);
            spec.namespace_selector = namespace_selector;
            spec.roles = roles;
            spec.required_approvals = required_approvals;
            spec.pending_timeout = pending.into();
            AccessPolicy::new(&name, spec)
        })
}

fn selects(policy: &AccessPolicy, labels: &BTreeMap<String, String>) -> bool {
    use kube::core::SelectorExt as _;
    kube::core::Selector::try_from(policy.spec.namespace_selector.clone()).is_ok_and(|s| s.matches(labels))
}

#[test]
fn policy_select() {
    let labels = proptest::collection::btree_map("team|env|x", "a|b|", 0..3);
    let case = (proptest::collection::vec(access_policy(), 0..5), labels, role());
    fuzz("policy_select", 5000, case, |(policies, labels, role)| {
        let covering: Vec<&AccessPolicy> = policies.iter().filter(|p| selects(p, &labels)).collect();
        match policy::select("shop", &labels, &role, &policies) {
            Ok(judge) => {
                prop_assert!(judge.spec.roles.contains(&role), "{role:?} granted by a policy that does not list it");
                let chosen =
                    covering.iter().find(|p| p.metadata.name.as_deref() == Some(&judge.name) && p.spec == *judge.spec);
                prop_assert!(chosen.is_some(), "the chosen policy does not cover the namespace");
                let max: Duration = judge.spec.max_duration.into();
                for other in covering.iter().filter(|p| p.spec.roles.contains(&role)) {
                    let other_max: Duration = other.spec.max_duration.into();
                    prop_assert!(max <= other_max, "{} allows longer than {:?}", judge.name, other.metadata.name);
                }
            }
            Err(NoPolicy::NoneForNamespace { .. }) => prop_assert!(covering.is_empty()),
            Err(NoPolicy::RoleNotAllowed { .. }) => {
                prop_assert!(!covering.is_empty());
                prop_assert!(covering.iter().all(|p| !p.spec.roles.contains(&role)));
            }
        }
        Ok(())
    });
}

/// The hand-made corpus of durations: one per line, all must hold the
/// `durations` property's Go/Rust agreement where the CRD admits them.
#[test]
fn durations_corpus() {
    let text = std::fs::read_to_string(crate::corpus_dir().join("durations.txt")).expect("the corpus");
    let format = crd_duration_format();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let admitted = format.is_match(line) && go_parse_duration(line).is_ok_and(|n| n > 0 && n <= DAY_NANOS);
        // Only what the CRD admits: kube's parser panics on some of the rest
        // ("1h-5m", "99999999999999999999999999999h"; docs/RELIABILITY.md).
        if admitted {
            let parsed = std::panic::catch_unwind(|| line.parse::<kube::core::Duration>());
            let parsed = parsed.unwrap_or_else(|_| panic!("{line:?} panics")).expect("an admitted duration parses");
            let go = go_parse_duration(line).expect("admitted");
            assert!((Duration::from(parsed).as_nanos() as i128 - go).abs() <= 1_000, "{line:?}");
        }
    }
}

// ---------------------------------------------------------------- findings
// What these targets found, kept as plain tests (docs/RELIABILITY.md).

/// Durations were shown without their sub-millisecond part, and above a
/// minute without any fraction: a request for 4h0.5s under a 4h policy was
/// refused with "duration 4h exceeds the maximum of 4h".
#[test]
fn a_refusal_never_reads_x_exceeds_the_maximum_of_x() {
    let spec = policy_spec(Duration::from_secs(4 * 3600));
    let judge = Judge { name: "p".into(), spec: &spec };
    let message = |asked: Duration| policy::check_request(asked, GOOD_REASON, &judge).unwrap_err().to_string();
    assert_eq!(
        message(Duration::from_millis(4 * 3600 * 1000 + 500)),
        "duration 4h0.500s exceeds the maximum of 4h that AccessPolicy p allows"
    );
    assert_eq!(
        message(Duration::new(4 * 3600, 1_001)),
        "duration 4h0.000001001s exceeds the maximum of 4h that AccessPolicy p allows"
    );
    assert_eq!(policy::format_duration(Duration::from_millis(1500)), "1.500s");
}

/// "0.5ns24h" is exactly 24h to the API server (Go truncates each part) but
/// 24h and 1ns to kube's parser (it sums floats): a 24h policy refused a
/// duration of 24h. Found by the 10-minute run of `durations`.
#[test]
fn a_duration_go_reads_as_the_maximum_is_not_refused_for_a_nanosecond() {
    let spec = policy_spec(Duration::from_secs(24 * 3600));
    let judge = Judge { name: "p".into(), spec: &spec };
    let parsed: kube::core::Duration = "0.5ns24h".parse().unwrap();
    assert_eq!(go_parse_duration("0.5ns24h"), Ok(24 * 3600 * 1_000_000_000));
    assert!(Duration::from(parsed) > Duration::from_secs(24 * 3600), "kube reads a little more");
    assert!(policy::check_request(parsed.into(), GOOD_REASON, &judge).is_ok());
}

/// Ten zero-width characters of four kinds passed both the CRD's rule and
/// the operator's: a reason nobody can read.
#[test]
fn a_reason_of_invisible_characters_is_trivial() {
    let invisible = "\u{200b}\u{200c}\u{200d}\u{2060}".repeat(3);
    assert!(invisible.trim().chars().count() >= 10, "the CRD's rule alone lets it through");
    assert!(policy::is_trivial(&invisible));
    assert!(policy::is_trivial(&format!("fix{invisible}")));
    assert!(!policy::is_trivial("INC-42\u{200b}: roll back the checkout release"));
}
