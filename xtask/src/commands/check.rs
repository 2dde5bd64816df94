//! `check`: the manifest and every runtime's deploy files (the compose file,
//! the swarm stack file, the Kubernetes manifests) must name the same secrets
//! for the same services. Needs no server and no CLI. The comparison is
//! [`secrets_engine::check`]'s; this prints its verdict.

use std::path::Path;

use anyhow::Result;

use crate::output;
use secrets_engine::model::manifest::Manifest;

pub fn run(root: &Path) -> Result<()> {
    let m = Manifest::load(root)?;
    let c = secrets_engine::check::check(root, &m)?;
    c.agree()?;
    output::print_agreement(&c, &m);
    Ok(())
}
