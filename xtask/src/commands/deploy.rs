//! `deploy <env>`: deploy the stack with the current secrets and wait until it
//! has converged. Replaces `deploy-<env>.sh` and `kubectl apply -f k8s/`.

use std::path::Path;

use anyhow::Result;

use super::Session;
use crate::{
    flags::{DeployArgs, EnvArgs},
    runtime::DeployOptions,
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
    s.runtime()?.deploy(
        &current,
        &DeployOptions {
            dry_run: a.dry_run,
            timeout: a.timeout,
        },
    )
}
