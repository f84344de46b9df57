//! Just-in-time access, the pure part: which policy judges a request, what
//! it allows, and the state machine from request and reviews to a phase and
//! the RoleBinding that must (or must not) exist.

pub mod announce;
pub mod grant;
pub mod machine;
pub mod policy;
pub mod present;

pub use machine::{Binding, Decision, Request, Review, Window, evaluate, is_final};
pub use policy::{Judge, NoPolicy, Violation};
