//! One module per command; `run` is the single dispatch point.

mod check;
mod deploy;
mod generate_secret;
mod list_secrets;
mod remove_secrets;
mod rotate_secrets;
mod setup_secrets;
mod verify_secrets;

use std::path::Path;

use anyhow::Result;

use crate::{
    backend::{self, Backend, Target},
    flags::{Cmd, EnvArgs},
    manifest::{Environment, Manifest},
    output,
    resolve::{self, Resolved},
};

pub fn run(cmd: Cmd, root: &Path) -> Result<()> {
    match cmd {
        Cmd::SetupSecrets(e, a) => setup_secrets::run(root, &e, a),
        Cmd::ListSecrets(e, json) => list_secrets::run(root, &e, json),
        Cmd::VerifySecrets(e) => verify_secrets::run(root, &e),
        Cmd::RemoveSecrets(e, a) => remove_secrets::run(root, &e, a),
        Cmd::RotateSecrets(e, a) => rotate_secrets::run(root, &e, a),
        Cmd::GenerateSecret { length } => generate_secret::run(length),
        Cmd::Deploy(e, a) => deploy::run(root, &e, a),
        Cmd::Check => check::run(root),
        Cmd::Bench { what, sizes } => crate::bench::run(root, &what, &sizes),
    }
}

/// The manifest, the environment and the backend for one run: the
/// environment's backend unless `--backend` overrides it.
pub struct Session {
    pub manifest: Manifest,
    pub env: Environment,
    pub backend: Box<dyn Backend>,
}

impl Session {
    pub fn open(root: &Path, e: &EnvArgs) -> Result<Session> {
        let manifest = Manifest::load(root)?;
        let mut env = manifest.env(&e.env)?.clone();
        if let Some(b) = e.backend {
            env.backend = b;
        }
        let backend = backend::for_kind(env.backend)?;
        Ok(Session {
            manifest,
            env,
            backend,
        })
    }

    /// Resolves the environment's values and prints the warnings.
    pub fn resolve(&self, root: &Path, opts: resolve::Options) -> Result<Resolved> {
        let r = resolve::resolve(root, &self.manifest, &self.env, opts)?;
        print_warnings(&r);
        Ok(r)
    }

    /// Resolves without generating or writing anything: for commands that only look.
    pub fn resolve_read_only(&self, root: &Path) -> Result<Resolved> {
        self.resolve(root, resolve::Options::read_only())
    }

    pub fn target<'a>(&'a self, root: &'a Path) -> Target<'a> {
        Target {
            root,
            manifest: &self.manifest,
            env: &self.env,
        }
    }
}

pub fn print_warnings(r: &Resolved) {
    for w in &r.warnings {
        output::warn(w);
    }
}
