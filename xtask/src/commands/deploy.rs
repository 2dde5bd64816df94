//! `deploy <env>`: deploy the stack with the current secrets and wait until it
//! has converged. Replaces `deploy-<env>.sh` and `kubectl apply -f k8s/`.
//! With a Vault or AWS store, the store's delivery decides how the services
//! get the values (see [`super::deliver`]).

use std::path::Path;

use anyhow::Result;

use super::Session;
use crate::{
    flags::{DeployArgs, EnvArgs},
    runtime::DeployOptions,
};

pub fn run(root: &Path, e: &EnvArgs, a: DeployArgs) -> Result<()> {
    let s = Session::open(root, e)?;
    let _lock = match a.dry_run {
        false => Some(s.lock(&format!("deploy {}", e.env), e.lock_timeout)?),
        true => None,
    };
    let r = s.resolve_read_only()?;
    let plan = s.plan(&r)?;
    let opts = DeployOptions {
        dry_run: a.dry_run,
        timeout: a.timeout,
        reader: None,
    };
    super::deliver::deploy(&s, &r, &plan, &opts)
}
