//! The external programs the engine drives (docker, kubectl, git, age,
//! openssl, the rotate hooks, the child of `run`), each through
//! [`runner`], the one place that starts a process: argument vectors,
//! values on stdin, errors that never quote a value.

pub mod age;
pub mod child;
pub mod docker;
pub mod engine_api;
pub mod git;
pub mod hooks;
pub mod kube;
pub mod runner;
