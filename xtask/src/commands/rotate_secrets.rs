//! `rotate-secrets <env> (--all | --secret NAME...)`: replaces `rotate_secrets.sh`.

use std::path::Path;

use anyhow::{Result, bail};

use crate::flags::{EnvArgs, RotateArgs};

pub fn run(_root: &Path, _e: &EnvArgs, _a: RotateArgs) -> Result<()> {
    bail!("rotate-secrets is planned and not built yet")
}
