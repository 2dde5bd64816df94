//! The secrets engine behind `cargo xtask`: it reads an environment's
//! secrets from its env file, checks them, plans what its store must
//! change, writes the store, delivers the values to the runtime and waits
//! until the runtime has converged.
//!
//! The engine never touches the terminal. What the operator must see comes
//! back as values (plans, reports, findings) or, while a run goes on, as
//! [`sink::Event`]s that the caller renders. See `ARCHITECTURE.md` for the
//! flow and the invariants.

#![deny(missing_docs)]

pub mod adopt;
pub mod check;
pub mod deliver;
pub mod disk;
pub mod doctor;
pub mod edit;
pub mod inspect;
pub mod migrate;
pub mod model;
pub mod plan;
pub mod remove;
pub mod restore;
pub mod rotate;
pub mod runtime;
pub mod scan;
pub mod session;
pub mod setup;
pub mod sink;
pub mod store;
pub mod tools;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod testutil;

use std::path::Path;

use crate::model::manifest::{Environment, Manifest};

/// What a store or a runtime is opened on: the repository, its manifest,
/// one environment of it, and where progress and notes go.
pub struct Scope<'a> {
    /// The repository root (the folder holding `deploy/secrets.toml`).
    pub root: &'a Path,
    /// The project's manifest.
    pub manifest: &'a Manifest,
    /// The environment, with this run's overrides applied.
    pub env: &'a Environment,
    /// Where the store or runtime reports what happens.
    pub sink: &'a sink::Shared,
}
