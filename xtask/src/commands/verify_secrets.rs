//! `verify-secrets <env>`: exit 1 when anything is missing, weak or out of date.

use std::path::Path;

use anyhow::{Result, bail};

use super::Session;
use crate::{backend::Action, flags::EnvArgs, output};

pub fn run(root: &Path, e: &EnvArgs) -> Result<()> {
    let s = Session::open(root, e)?;
    let t = s.target(root);
    let r = s.resolve_read_only(root)?;
    let plan = s.backend.plan(&t, &r)?;
    let bad: Vec<_> = plan
        .iter()
        .filter(|p| matches!(p.action, Action::Create | Action::Update))
        .collect();
    if bad.is_empty() {
        println!(
            "{}: all {} secrets are present, valid and up to date in the {} backend",
            s.env.name,
            r.desired.len(),
            s.env.backend
        );
        return Ok(());
    }
    let steps: Vec<_> = bad.into_iter().cloned().collect();
    output::print_plan(
        &format!("{}: not in line with {}:", s.env.name, r.file.shown),
        &steps,
    );
    bail!(
        "{} secret(s) missing or out of date in {}; run `cargo xtask setup-secrets {}`",
        steps.len(),
        s.env.name,
        s.env.name
    )
}
