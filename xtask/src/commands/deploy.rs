//! `deploy <env>`: deploy the stack with the current secrets and wait until it
//! has converged. Replaces `deploy-<env>.sh` and `kubectl apply -f k8s/`.
//! With a Vault or AWS store, the store's delivery decides how the services
//! get the values (see [`secrets_engine::deliver`]).

use std::path::Path;

use anyhow::Result;

use crate::{
    flags::{DeployArgs, EnvArgs},
    output,
};
use secrets_engine::runtime::DeployOptions;
use secrets_engine::session::Session;

pub fn run(root: &Path, e: &EnvArgs, a: DeployArgs) -> Result<()> {
    let s = Session::open(root, e, output::terminal())?;
    let _lock = match a.dry_run {
        false => Some(s.lock(&format!("deploy {}", e.env), e.lock_timeout)?),
        true => None,
    };
    if _lock.is_some() {
        s.sweep_hook_leftovers();
    }
    let r = s.resolve_read_only()?;
    let plan = s.plan(&r)?;
    let opts = DeployOptions {
        dry_run: a.dry_run,
        timeout: a.timeout,
        reader: None,
    };
    secrets_engine::deliver::deploy(&s, &r, &plan, &opts)?;
    if a.dry_run {
        return Ok(());
    }
    // Adopted unversioned secrets a newer version replaced, now unused.
    let gone = secrets_engine::adopt::retire(&s, &plan)?;
    if !gone.is_empty() {
        println!(
            "removed adopted secrets nothing uses any more: {}",
            gone.join(", ")
        );
    }
    Ok(())
}
