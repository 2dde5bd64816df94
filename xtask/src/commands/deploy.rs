//! `deploy <env>`: deploy the stack with the current secrets and wait until it
//! has converged. Replaces `deploy-<env>.sh` and `kubectl apply -f k8s/`.

use std::path::Path;

use anyhow::Result;

use super::Session;
use crate::{
    flags::{DeployArgs, EnvArgs},
    plan,
    runtime::{DeployOptions, Runtime},
};

pub fn run(root: &Path, e: &EnvArgs, a: DeployArgs) -> Result<()> {
    let s = Session::open(root, e)?;
    if !s.store_feeds_runtime() {
        anyhow::bail!(
            "the {} store keeps {}'s secrets outside the {} runtime, and deploy does not copy them in: services read them at run time from the store (the reader's {} provider). Deploy the stack itself with your usual tooling, or give the environment a store its runtime mounts (backend = \"{}\")",
            s.env.store,
            s.env.name,
            s.env.runtime,
            s.env.store,
            s.env.runtime
        );
    }
    let _lock = match a.dry_run {
        false => Some(s.lock(&format!("deploy {}", e.env), e.lock_timeout)?),
        true => None,
    };
    let r = s.resolve_read_only()?;
    let plan = s.plan(&r)?;
    let current = s.current_or_refuse(&plan)?;
    let runtime = s.runtime()?;
    runtime.deploy(
        &current,
        &DeployOptions {
            dry_run: a.dry_run,
            timeout: a.timeout,
        },
    )?;
    if a.dry_run {
        return Ok(());
    }
    retire_adopted(&s, runtime.as_ref(), &plan)
}

/// Removes adopted unversioned secrets (version 0, see `adopt-secrets`) that
/// a newer version replaced and that nothing uses any more, now that the
/// services run with the newer one. Costs nothing when there are none.
fn retire_adopted(s: &Session, runtime: &dyn Runtime, p: &super::Planned) -> Result<()> {
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
    let Some(users) = runtime.users()? else {
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
