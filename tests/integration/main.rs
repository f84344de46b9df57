//! Integration tests against a real etcd + kube-apiserver +
//! kube-controller-manager on 127.0.0.1 (see `support`). One binary, so the
//! control plane starts once; one module per behaviour; one namespace per test.

#[path = "../support/mod.rs"]
mod support;

mod access_request_rbac;
mod chart;
mod crd_install;
mod crd_validation;
mod garbage_collection;
mod no_orphan_processes;
mod publish_and_diff;
mod run_errors;
mod server_version;
