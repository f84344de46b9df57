//! CEL rules shared by several resources. The API server evaluates them on
//! every create and update, so these invariants hold for every stored object.

use kube::core::{Message, Rule};

/// The longest access window any request or policy may name. Longer access is
/// standing access, which is what driftwarden exists to avoid.
pub const MAX_ACCESS_DURATION: &str = "24h";

/// A Go duration (`time.ParseDuration`) without a sign: "30m", "1h30m", "90s".
const GO_DURATION: &str = r"^([0-9]+(\\.[0-9]+)?(ns|us|µs|μs|ms|s|m|h))+$";

pub(crate) fn go_duration_format() -> Rule {
    Rule::new(format!("self.matches('{GO_DURATION}')"))
        .message("must be a Go duration with a unit, such as 30m, 1h or 1h30m")
}

// The format rule above reports malformed values; these two only judge
// values that parse, so one mistake gives one message.
pub(crate) fn positive_duration() -> Rule {
    Rule::new(format!("!self.matches('{GO_DURATION}') || duration(self) > duration('0s')"))
        .message("must be longer than zero")
}

pub(crate) fn duration_ceiling() -> Rule {
    Rule::new(format!("!self.matches('{GO_DURATION}') || duration(self) <= duration('{MAX_ACCESS_DURATION}')"))
        .message(Message::Message(format!("must be at most {MAX_ACCESS_DURATION}")))
}

pub(crate) fn no_wildcard() -> Rule {
    Rule::new("!self.contains('*')").message("wildcards (*) are not allowed")
}

pub(crate) fn immutable(what: &str) -> Rule {
    Rule::new("self == oldSelf").message(Message::Message(format!("{what} is immutable")))
}

pub(crate) fn non_trivial_reason() -> Rule {
    Rule::new("self.trim().size() >= 10").message("must explain why, in at least 10 characters")
}
