//! The xtask integration tests as one test binary: one module per concern
//! (the former `tests/NAME.rs` binaries, same module names) and the shared
//! scaffolding in `support`. One binary links once, and `support` is compiled
//! once; run one concern with `cargo test -p xtask --test it -- NAME::`.

mod support;

mod adopt;
mod argv_leak;
mod aws;
mod backup;
mod bad_input;
mod cli;
mod completions;
mod compose_e2e;
mod compose_stack;
mod crash;
mod diff;
mod doctor;
mod hooks;
mod k8s;
mod k8s_manifests;
mod k8s_stack;
mod leak_flow;
mod metrics;
mod migrate;
mod run;
mod scan;
mod scan_gitleaks;
mod stack;
mod standin;
mod status;
mod swarm;
mod vault;
