//! `restore-secrets <env> --from FILE`: puts a backup's env file and files
//! back, byte for byte, then brings the store in line as setup does.
//!
//! The engine's [`secrets_engine::restore`] decrypts and checks the backup,
//! plans every file and refuses updates without `--force` before anything
//! changes, then restores; this command takes the lock and renders the plan.

use std::path::Path;

use anyhow::Result;

use crate::{
    flags::{EnvArgs, RestoreArgs},
    output,
};
use secrets_engine::{
    disk::archive::{self, Archive},
    restore::{self, Target},
    session::Session,
};

pub fn run(root: &Path, e: &EnvArgs, a: RestoreArgs) -> Result<()> {
    let s = Session::open(root, e, output::terminal())?;
    let archive = restore::open(&s, &a.from, a.identity.as_deref())?;
    let _lock = match a.dry_run {
        false => Some(s.lock(&format!("{} {}", restore::COMMAND, e.env), e.lock_timeout)?),
        true => None,
    };
    let targets = restore::plan(&s, &archive, &a.from.display().to_string())?;
    print_plan(&s, &archive, &targets);
    restore::refuse_updates(&targets, a.force)?;
    if a.dry_run {
        println!(
            "dry run: nothing was changed; the real run writes the files above (0600), then brings the {} store in line as `cargo xtask setup-secrets {}` does",
            s.store.kind(),
            s.env.name
        );
        return Ok(());
    }
    restore::apply(&s, &archive, &targets).map(|_| ())
}

fn print_plan(s: &Session, archive: &Archive, targets: &[Target]) {
    println!(
        "restore {} {} from {}:",
        s.manifest.project,
        s.env.name,
        archive::describe(archive)
    );
    for t in targets {
        let word = t.action.word();
        let detail = if t.differing.is_empty() {
            String::new()
        } else {
            format!(" (differs: {})", t.differing.join(", "))
        };
        println!(
            "  {word:<9} {} ({} bytes){detail}",
            t.shown,
            archive.entries[t.entry].bytes.len()
        );
    }
}
