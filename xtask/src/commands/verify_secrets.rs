//! `verify-secrets <env>`: exit 1 when anything is missing, weak or out of date.

use std::path::Path;

use anyhow::{Result, bail};

use crate::{flags::EnvArgs, output};
use secrets_engine::session::Session;

pub fn run(root: &Path, e: &EnvArgs) -> Result<()> {
    let s = Session::open(root, e, output::terminal())?;
    let r = s.resolve_read_only()?;
    let plan = s.plan(&r)?;
    let bad: Vec<_> = plan.writes().into_iter().cloned().collect();
    if bad.is_empty() {
        println!(
            "{}: all {} secrets are present, valid and up to date in the {} backend",
            s.env.name,
            r.desired.len(),
            s.label()
        );
        return Ok(());
    }
    output::print_plan(
        &format!("{}: not in line with {}:", s.env.name, r.file.shown),
        &bad,
    );
    bail!(
        "{} secret(s) missing or out of date in {}; run `cargo xtask setup-secrets {}`",
        bad.len(),
        s.env.name,
        s.env.name
    )
}
