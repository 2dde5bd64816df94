//! `remove-secrets <env> [--secret NAME]... [--yes]`: replaces
//! `remove-secrets-<env>.sh`. Refuses what a running service still uses, naming
//! it. Asks before removing; with no terminal to ask on, it needs `--yes`.

use std::{
    io::{BufRead, IsTerminal, Write},
    path::Path,
};

use anyhow::{Result, bail};

use crate::{
    flags::{EnvArgs, RemoveArgs},
    output,
};
use secrets_engine::remove;
use secrets_engine::session::Session;

pub fn run(root: &Path, e: &EnvArgs, a: RemoveArgs) -> Result<()> {
    let s = Session::open_with(root, e, output::terminal(), |env| {
        if a.force {
            remove::force(env);
        }
    })?;
    let _lock = match a.dry_run {
        false => Some(s.lock(&format!("{} {}", remove::COMMAND, e.env), e.lock_timeout)?),
        true => None,
    };
    if _lock.is_some() {
        s.sweep_hook_leftovers();
    }
    let steps = remove::plan(&s, &a.secrets)?;
    if steps.is_empty() {
        println!("nothing to remove for {}", s.env.name);
        return Ok(());
    }
    output::print_plan(
        &format!("to remove from {} ({} backend):", s.env.name, s.label()),
        &steps,
    );
    if a.dry_run {
        println!("dry run: nothing was removed");
        return Ok(());
    }
    if !a.yes {
        confirm(steps.len(), &s.env.name)?;
    }
    s.delete_audited(remove::COMMAND, &steps)?;
    println!("removed {} secret(s) from {}", steps.len(), s.env.name);
    Ok(())
}

fn confirm(n: usize, env: &str) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "refusing to remove {n} secret(s) without confirmation: there is no terminal to ask on; pass --yes"
        );
    }
    print!("remove {n} secret(s) from {env}? [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        bail!("not removed");
    }
    Ok(())
}
