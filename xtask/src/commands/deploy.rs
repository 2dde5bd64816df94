//! `deploy <env>`: deploy the stack with the current secrets and wait until it
//! has converged. Replaces `deploy-<env>.sh`.

use std::path::Path;

use anyhow::Result;

use super::Session;
use crate::{
    backend::DeployOptions,
    flags::{DeployArgs, EnvArgs},
};

pub fn run(root: &Path, e: &EnvArgs, a: DeployArgs) -> Result<()> {
    let s = Session::open(root, e)?;
    let t = s.target(root);
    let r = s.resolve_read_only(root)?;
    s.backend.deploy(
        &t,
        &r,
        &DeployOptions {
            dry_run: a.dry_run,
            timeout: a.timeout,
        },
    )
}
