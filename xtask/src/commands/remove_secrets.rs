//! `remove-secrets <env> [--secret NAME]... [--yes]`: replaces
//! `remove-secrets-<env>.sh`. Asks before removing; with no terminal to ask on,
//! it needs `--yes`.

use std::{
    io::{BufRead, IsTerminal, Write},
    path::Path,
};

use anyhow::{Result, bail};

use super::Session;
use crate::{
    flags::{EnvArgs, RemoveArgs},
    output,
};

pub fn run(root: &Path, e: &EnvArgs, a: RemoveArgs) -> Result<()> {
    let s = Session::open(root, e)?;
    let t = s.target(root);
    let plan = s.backend.plan_remove(&t, &a.secrets)?;
    if plan.is_empty() {
        println!("nothing to remove for {}", s.env.name);
        return Ok(());
    }
    output::print_plan(
        &format!("to remove from {} ({} backend):", s.env.name, s.env.backend),
        &plan,
    );
    if a.dry_run {
        println!("dry run: nothing was removed");
        return Ok(());
    }
    if !a.yes {
        if !std::io::stdin().is_terminal() {
            bail!(
                "refusing to remove {} secret(s) without confirmation: there is no terminal to ask on; pass --yes",
                plan.len()
            );
        }
        print!(
            "remove {} secret(s) from {}? [y/N] ",
            plan.len(),
            s.env.name
        );
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            bail!("not removed");
        }
    }
    s.backend.remove(&t, &plan)?;
    println!("removed {} secret(s) from {}", plan.len(), s.env.name);
    Ok(())
}
