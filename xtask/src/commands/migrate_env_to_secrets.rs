//! `migrate-env-to-secrets [--from FILE] [--to ENV]`: replaces the seeds'
//! `create_secrets_from_env.sh`. Moves the secrets of a plain `.env` into an
//! environment's env file (merging, refusing conflicts), removes exactly those
//! lines from the source (a 0600 backup beside it), shows or makes the compose
//! changes, and runs setup so the secrets exist in the store.
//!
//! The engine's [`secrets_engine::migrate`] reads, checks and writes (every
//! check before the first write, undo on failure); this command renders its
//! plan and what it wrote, then checks the compose file and runs setup.

use std::path::Path;

use anyhow::{Context, Result};

use crate::{flags::MigrateArgs, output};
use secrets_engine::{
    migrate::{self, Applied},
    model::envfile::EnvFile,
    model::manifest::{Environment, Manifest},
    plan::migrate::Migration,
    session::{Session, Target},
    setup::SetupOptions,
};

pub fn run(root: &Path, a: MigrateArgs) -> Result<()> {
    let o = migrate::Options {
        from: a.from,
        to: a.to,
        write_compose: a.write_compose,
        dry_run: a.dry_run,
    };
    let mut p = migrate::prepare(root, &o, output::terminal())?;
    print_plan(&p.migration, &p.source, &p.target, &p.env);
    p.validate()?;
    if o.dry_run {
        println!(
            "dry run: would move {} value(s) into {} and remove {} line(s) from {}{}; nothing was changed",
            p.migration.writes.len(),
            p.target.shown,
            p.migration.remove.len(),
            p.source.shown,
            if o.write_compose && p.compose.is_some() {
                ", and edit the compose file"
            } else {
                ""
            }
        );
        return Ok(());
    }
    let done = p.apply()?;
    print_applied(&done);
    if o.write_compose {
        check(root, &p.manifest).context("the compose changes are written, but check found disagreements; fix them and run `cargo xtask check`")?;
    }
    setup(root, &p.env.name)
}

/// The manifest against the deploy files, as `check` does, after the
/// compose file was edited.
fn check(root: &Path, manifest: &Manifest) -> Result<()> {
    let c = secrets_engine::check::check(root, manifest)?;
    c.agree()?;
    output::print_agreement(&c, manifest);
    Ok(())
}

/// Setup ([`Session::setup`], as `setup-secrets <env>` runs it), so the
/// migrated values exist in the store. Their strength is not refused: they
/// are the values in use, rotated afterwards.
fn setup(root: &Path, env: &str) -> Result<()> {
    let target = Target {
        env: env.to_string(),
        backend: None,
        namespace: None,
        lock_timeout: migrate::LOCK_TIMEOUT,
    };
    println!("running setup-secrets {env}:");
    let options = SetupOptions {
        generate_missing: false,
        dry_run: false,
        accept_weak: true,
        lock_timeout: target.lock_timeout,
    };
    Session::open(root, &target, output::terminal())
        .and_then(|s| s.setup(options))
        .map(|_| ())
        .with_context(|| format!("the values were migrated, but `cargo xtask setup-secrets {env}` failed; fix what it says and run it"))
}

fn print_plan(m: &Migration, source: &EnvFile, target: &EnvFile, env: &Environment) {
    if m.moves.is_empty() {
        println!(
            "{}: no secret to move into {} ({})",
            source.shown, target.shown, env.name
        );
    } else {
        println!(
            "from {} into {} ({}):",
            source.shown, target.shown, env.name
        );
        for mv in &m.moves {
            println!(
                "  {:<24} {:<22} {} ({})",
                mv.key, mv.secret, mv.from, mv.how
            );
        }
    }
    for w in &m.warnings {
        output::warn(w);
    }
    if !m.unknown.is_empty() {
        println!(
            "not moved: {} key(s) look like credentials but deploy/secrets.toml does not describe them; add an entry for each and run again:",
            m.unknown.len()
        );
        for (key, place, entry) in &m.unknown {
            println!("  {key} ({place}):\n    {}", entry.replace('\n', "\n    "));
        }
    }
}

/// What the migration wrote.
fn print_applied(d: &Applied) {
    if !d.changed {
        println!("nothing to change: {} holds no secret to move", d.source);
    }
    if d.added > 0 {
        println!("{}: {} value(s) added", d.target, d.added);
    }
    if let Some(shown) = &d.backup {
        if !d.backup_ignored {
            output::warn(&format!(
                "{shown} holds the old values and is not covered by .gitignore; delete it once you have checked the migration, or add `*.pre-migrate-*.bak` to .gitignore"
            ));
        }
        println!(
            "{}: {} line(s) removed, every other byte kept (backup: {shown}, mode 0600)",
            d.source, d.removed
        );
    }
    if let Some((shown, n)) = &d.compose {
        println!("{shown}: edited ({n} change(s))");
    }
}
