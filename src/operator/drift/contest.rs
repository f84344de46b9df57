//! Objects that something else keeps rewriting right after each revert (a
//! mutating webhook, an autoscaler nobody told us about, another GitOps
//! tool): after a few reverts in a short time the object is *contested*,
//! and its next reverts wait longer and longer instead of fighting at the
//! revert rate (at most one revert a minute, reported). Pure: the time is
//! an input.

use std::collections::HashMap;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::api::ObjectRef;

/// Reverts within [`WINDOW`] that make an object contested.
pub const REVERTS: usize = 3;
/// How far back reverts are counted.
pub const WINDOW: SignedDuration = SignedDuration::from_secs(30);
/// The first wait of a contested object; it doubles with each revert.
const FIRST_WAIT: SignedDuration = SignedDuration::from_secs(2);
/// The longest wait. Short on purpose: a person rewriting a field by hand
/// is contested too, and must not keep a change for long this way.
const MAX_WAIT: SignedDuration = SignedDuration::from_secs(60);

#[derive(Clone, Debug)]
struct History {
    /// Reverts within the last [`WINDOW`], oldest first.
    reverts: Vec<Timestamp>,
    last: Timestamp,
    /// Reverts made while contested (the backoff's exponent).
    contested_reverts: u32,
}

impl History {
    fn is_contested(&self, now: Timestamp) -> bool {
        let recent = self.reverts.iter().filter(|at| now.duration_since(**at) < WINDOW).count();
        recent >= REVERTS
            || (self.contested_reverts > 0 && now.duration_since(self.last) < wait(self.contested_reverts) * 2)
    }
}

/// Per object: its recent reverts.
#[derive(Clone, Debug, Default)]
pub struct Contests(HashMap<ObjectRef, History>);

impl Contests {
    /// Records a revert of `object` at `now`.
    pub fn reverted(&mut self, object: &ObjectRef, now: Timestamp) {
        let contested = self.is_contested(object, now);
        let history = self.0.entry(object.clone()).or_insert_with(|| History {
            reverts: Vec::new(),
            last: now,
            contested_reverts: 0,
        });
        history.reverts.retain(|at| now.duration_since(*at) < WINDOW);
        history.reverts.push(now);
        history.last = now;
        if contested {
            history.contested_reverts = history.contested_reverts.saturating_add(1);
        } else if history.reverts.len() < REVERTS {
            // Quiet for long enough: a fresh start.
            history.contested_reverts = 0;
        }
    }

    /// Whether `object` is contested: reverted [`REVERTS`] times within
    /// [`WINDOW`], or contested before and reverted again within twice its
    /// current wait.
    pub fn is_contested(&self, object: &ObjectRef, now: Timestamp) -> bool {
        self.0.get(object).is_some_and(|h| h.is_contested(now))
    }

    /// When `object` may be reverted again: now, unless it is contested.
    pub fn next_revert(&self, object: &ObjectRef, now: Timestamp) -> Timestamp {
        match self.0.get(object) {
            Some(history) if history.is_contested(now) => (history.last + wait(history.contested_reverts)).max(now),
            _ => now,
        }
    }

    /// Forgets objects that have not been reverted for a while.
    pub fn expire(&mut self, now: Timestamp) {
        self.0.retain(|_, h| now.duration_since(h.last) < MAX_WAIT * 2);
    }

    /// How many objects are contested now.
    pub fn contested(&self, now: Timestamp) -> usize {
        self.0.values().filter(|h| h.is_contested(now)).count()
    }
}

fn wait(contested_reverts: u32) -> SignedDuration {
    let factor = 1i32 << contested_reverts.min(10);
    (FIRST_WAIT * factor).min(MAX_WAIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object() -> ObjectRef {
        ObjectRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: Some("shop".into()),
            name: "web".into(),
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap() + SignedDuration::from_millis(seconds * 1000)
    }

    #[test]
    fn a_few_reverts_are_fine_a_fight_backs_off() {
        let mut contests = Contests::default();
        let web = object();
        // Two reverts a minute apart: never contested.
        contests.reverted(&web, at(0));
        contests.reverted(&web, at(60));
        assert!(!contests.is_contested(&web, at(61)));
        assert_eq!(contests.next_revert(&web, at(61)), at(61));

        // Rewritten right after each revert.
        let mut contests = Contests::default();
        for second in 0..3 {
            contests.reverted(&web, at(second));
        }
        assert!(contests.is_contested(&web, at(3)));
        let first = contests.next_revert(&web, at(3));
        assert_eq!(first, at(2) + FIRST_WAIT);
        assert_eq!(contests.next_revert(&web, at(4)), first, "not before the wait is over");
        contests.reverted(&web, first);
        let second = contests.next_revert(&web, first);
        assert_eq!(second.duration_since(first), FIRST_WAIT * 2, "the wait doubles");
        let mut last = second;
        for _ in 0..20 {
            contests.reverted(&web, last);
            last = contests.next_revert(&web, last);
        }
        assert!(contests.next_revert(&web, last).duration_since(last) <= MAX_WAIT);
        assert_eq!(contests.contested(last), 1);

        // Left alone long enough: forgotten, reverts are immediate again.
        let later = last + MAX_WAIT * 3;
        assert!(!contests.is_contested(&web, later));
        contests.expire(later);
        assert_eq!(contests.contested(later), 0);
        assert_eq!(contests.next_revert(&web, later), later);
    }
}
