//! Status conditions, pure: a condition keeps its transition time while it
//! does not change, so an unchanged world writes an identical status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// The condition `type_` as it is now, carrying over the previous one's
/// transition time when status, reason, message and generation are the same.
pub fn condition(
    old: &[Condition],
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let fresh = Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: Time(now),
    };
    // The transition time moves only when the condition does.
    match old.iter().find(|c| c.type_ == type_) {
        Some(previous)
            if previous.status == fresh.status
                && previous.reason == fresh.reason
                && previous.message == fresh.message
                && previous.observed_generation == generation =>
        {
            previous.clone()
        }
        _ => fresh,
    }
}
