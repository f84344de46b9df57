//! The operator against a real control plane: the access lifecycle and drift
//! detection, with the operator running as a least-privileged ServiceAccount
//! and its admission webhooks wired into the API server. People act through
//! their own tokens.

#[path = "../support/mod.rs"]
mod support;

mod common;

mod admission_rules;
mod audit_webhook;
mod bad_access_input;
mod bad_sources;
mod dashboard;
mod drift_corpus;
mod drift_edits;
mod drift_sources;
mod failover;
mod faults;
mod gate;
mod grant_forbidden;
mod grant_lifecycle;
mod identity;
mod kubectl_flow;
mod notifications;
mod operator_probes;
mod operator_rbac;
mod prune;
mod readme_walkthrough;
mod rejected_reverts;
mod request_cli;
mod restart;
mod revocation;
mod secret_canaries;
mod service_accounts;
mod session_commands;
mod signed_sources;
mod trust;
mod undeclared;
mod webhook_flood;
mod write_log;
