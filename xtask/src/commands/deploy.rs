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
use secrets_engine::session::Session;
use secrets_engine::{plan, runtime::DeployOptions};

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
    retire_adopted(&s, &plan)
}

/// Removes adopted unversioned secrets (version 0, see `adopt-secrets`) that
/// a newer version replaced and that nothing uses any more, now that the
/// services run with the newer one. Costs nothing when there are none.
fn retire_adopted(s: &Session, p: &secrets_engine::session::Planned) -> Result<()> {
    let mut names: Vec<String> = p
        .listed
        .iter()
        .filter(|l| l.version == Some(0))
        .map(|l| l.secret.clone())
        .collect();
    names.dedup();
    if names.is_empty() {
        return Ok(());
    }
    let Some(users) = s.runtime()?.users()? else {
        return Ok(());
    };
    let gone = plan::prune(&p.listed, &names, usize::MAX, &users);
    if !gone.is_empty() {
        s.store.delete(&gone)?;
        let ids: Vec<&str> = gone.iter().map(|g| g.id.as_str()).collect();
        println!(
            "removed adopted secrets nothing uses any more: {}",
            ids.join(", ")
        );
    }
    Ok(())
}
