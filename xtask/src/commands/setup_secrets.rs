//! `setup-secrets <env>`: validate the env file, generate what may be generated,
//! and bring the store in line with it. Replaces `setup-secrets-<env>.sh`,
//! `create_secrets.sh`, `create_swarm_secrets.sh` and `create_k8s_secrets.sh`.
//! The flow is the engine's ([`Session::setup`]); the terminal sink shows it.

use std::path::Path;

use anyhow::Result;

use crate::{
    flags::{EnvArgs, SetupArgs},
    output,
};
use secrets_engine::{session::Session, setup::SetupOptions};

pub fn run(root: &Path, e: &EnvArgs, a: SetupArgs) -> Result<()> {
    let s = Session::open(root, e, output::terminal())?;
    s.setup(SetupOptions {
        generate_missing: a.generate_missing,
        dry_run: a.dry_run,
        accept_weak: false,
        lock_timeout: e.lock_timeout,
    })?;
    Ok(())
}
