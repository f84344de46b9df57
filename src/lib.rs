//! driftwarden: a Kubernetes operator that keeps live objects on their Git
//! state and hands out time-bound, approved access.
//!
//! Layout:
//! - [`api`]: the custom resources (types and their CRDs).
//! - [`access`]: access policy and the request state machine, pure.
//! - [`drift`]: source parsing, normalization and the apply-semantics diff, pure.
//! - [`gate`]: per drifted object, hold (inside an access window) or remediate, pure.
//! - [`pki`]: certificates, as pure functions.
//! - [`operator`]: the I/O shell that talks to the API server.
//! - [`metrics`]: the Prometheus metrics the operator and the webhooks record.
//! - [`webhook`]: the admission webhooks' HTTPS server and its certificate;
//!   the endpoints parse and authenticate, and hand what they learn to the
//!   operator ([`webhook::Records`]).
//! - [`publish`], [`local_diff`], [`requests`]: the `publish`/`keygen`, `diff`
//!   and access request commands; [`connect`]: the cluster they talk to.
//! - [`cli`], [`commands`], [`telemetry`], [`process`]: the binary's wiring.
//!
//! The local control plane, the quickstart and the benchmarks' binary are
//! the development harness, in the workspace's `dev` crate: never linked
//! into the product.

pub mod access;
pub mod api;
pub mod cli;
pub mod commands;
pub mod conditions;
pub mod connect;
pub mod drift;
pub mod gate;
pub mod local_diff;
pub mod metrics;
pub mod notify;
pub mod operator;
pub mod pki;
pub mod process;
pub mod publish;
pub mod requests;
pub mod telemetry;
pub mod webhook;
