//! `adopt-secrets <env>`: takes over the unversioned `<project>_<env>_<name>`
//! Swarm secrets the Raqeem scripts created, without recreating them and
//! without touching the services that run with them.
//!
//! The engine's [`secrets_engine::adopt`] finds them, matches each to the env
//! file's value and labels it as version 0 (see there why labels only); this
//! command takes the lock and renders what was found and what is done.

use std::path::Path;

use anyhow::Result;

use crate::{flags::EnvArgs, output};
use secrets_engine::{
    adopt::{self, Adoption},
    session::Session,
};

pub fn run(root: &Path, e: &EnvArgs, dry_run: bool) -> Result<()> {
    let s = Session::open(root, e, output::terminal())?;
    adopt::check(&s)?;
    let _lock = match dry_run {
        false => Some(s.lock(&format!("{} {}", adopt::COMMAND, e.env), e.lock_timeout)?),
        true => None,
    };
    let survey = adopt::survey(&s)?;
    for f in survey.found.iter().filter(|f| f.adopted) {
        println!("  already adopted  {:<24} {}", f.spec.name, f.name);
    }
    if survey.found.iter().all(|f| f.adopted) {
        println!(
            "nothing to adopt in {}: no unversioned {}_{}_<name> secret without labels",
            s.env.name, s.manifest.project, s.env.name
        );
        return Ok(());
    }
    let mut a = survey.prepare(&s)?;
    print_plan(&s, &a);
    a.fingerprint_key(&s, dry_run)?;
    if dry_run {
        println!(
            "dry run: would label {} secret(s) as adopted; nothing was changed",
            a.todo.len()
        );
        return Ok(());
    }
    a.apply(&s)?;
    println!(
        "adopted {} secret(s) in {}. Next: `cargo xtask rotate-secrets {} --all` (or setup-secrets, then deploy) moves each to <name>_v1 with a start-first update, and removes the old one once nothing uses it",
        a.todo.len(),
        s.env.name,
        s.env.name
    );
    Ok(())
}

fn print_plan(s: &Session, a: &Adoption) {
    println!(
        "adopt in {} (as version 0; nothing is recreated or restarted):",
        s.env.name
    );
    for f in &a.todo {
        let by = a
            .users
            .get(&f.name)
            .map(|u| format!("used by {}", u.join(", ")))
            .unwrap_or_else(|| "not used by a service".into());
        println!(
            "  adopt  {:<24} {} (id {}, {by})",
            f.spec.name,
            f.name,
            &f.id[..f.id.len().min(12)]
        );
    }
}
