//! `migrate-env-to-secrets [--from FILE] [--to ENV]`: replaces the seeds'
//! `create_secrets_from_env.sh`. Moves the secrets of a plain `.env` into an
//! environment's env file (merging, refusing conflicts), removes exactly those
//! lines from the source (a 0600 backup beside it), shows or makes the compose
//! changes, and runs setup so the secrets exist in the store.
//!
//! Order: everything is read and checked first; then the target env file is
//! written (so an interrupted run finds the values already there and only
//! removes the lines), then the backup, then the source, each replaced atomically.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{
    audit::{self, Change, Outcome},
    compose_edit,
    envfile::EnvFile,
    flags::{EnvArgs, MigrateArgs, SetupArgs},
    fsutil, git, lock,
    manifest::{BackendKind, Environment, Manifest},
    migrate::{self, Migration},
    output, resolve, store, time,
};

pub fn run(root: &Path, a: MigrateArgs) -> Result<()> {
    let manifest = Manifest::load(root)?;
    let env = manifest.env(&a.to)?.clone();
    let (src_path, src_shown) = source_path(root, &a.from);
    fsutil::refuse_symlink(&src_path, &src_shown)?;
    if !src_path.exists() {
        bail!("{src_shown} does not exist; name the plain env file to migrate with --from FILE");
    }
    // The lock is held from before the target is read until it is written,
    // so the plan cannot go stale; setup takes it again afterwards.
    let lock = match a.dry_run {
        false => Some(lock::acquire(
            root,
            &env.name,
            &format!("migrate-env-to-secrets --to {}", env.name),
            Duration::from_secs(300),
        )?),
        true => None,
    };
    if !a.dry_run {
        sweep(root, &[src_path.clone(), resolve::locate(root, &env)?.0])?;
    }
    let (source, target) = read_both(root, &env, &src_path, &src_shown)?;
    let m = migrate::plan(&manifest, &env, &source, &target);
    print_plan(&m, &source, &target, &env);
    let blockers = m.blockers();
    if !blockers.is_empty() {
        bail!(
            "nothing was written; {} problem(s) to settle first:\n  - {}",
            blockers.len(),
            blockers.join("\n  - ")
        );
    }
    // Every secret of the environment, not only those moved now: a re-run
    // after an interrupted one still finds what the compose file needs.
    let names: Vec<String> = manifest
        .secrets_for(&env.name)
        .iter()
        .map(|s| s.name.clone())
        .collect();
    let compose = compose_changes(root, &env, &names)?.filter(|_| a.write_compose || a.dry_run);
    if a.dry_run {
        println!(
            "dry run: would move {} value(s) into {} and remove {} line(s) from {}{}; nothing was changed",
            m.writes.len(),
            target.shown,
            m.remove.len(),
            source.shown,
            if a.write_compose && compose.is_some() {
                ", and edit the compose file"
            } else {
                ""
            }
        );
        return Ok(());
    }
    apply(&m, &source, target, &env, &manifest.project)?;
    if let Some((path, shown, edit)) = &compose {
        write_compose(root, path, shown, edit)?;
    }
    drop(lock);
    if a.write_compose {
        super::check::run(root).context("the compose changes are written, but check found disagreements; fix them and run `cargo xtask check`")?;
    }
    setup(root, &env.name)
}

/// The source and the target env file, with the target's usual refusals
/// and warnings, and a warning when git tracks the source.
fn read_both(
    root: &Path,
    env: &Environment,
    src_path: &Path,
    src_shown: &str,
) -> Result<(EnvFile, EnvFile)> {
    let (target, warnings) = resolve::load_env_file(root, env)?;
    if same_file(src_path, &target.path) {
        bail!(
            "{src_shown} is {}'s own env file; --from names the plain file to migrate from",
            env.name
        );
    }
    for w in &warnings {
        output::warn(w);
    }
    let source = EnvFile::load(src_path, src_shown.to_string())?;
    if git::is_tracked(root, src_path)? == Some(true) {
        output::warn(&format!(
            "{src_shown} is tracked by git, so the values in it are in the repository's history: after migrating, rotate them (`cargo xtask rotate-secrets {} --all`) and `git rm --cached {src_shown}`",
            env.name
        ));
    }
    Ok((source, target))
}

/// Writes the edited compose file atomically, keeping its mode.
fn write_compose(root: &Path, path: &Path, shown: &str, edit: &compose_edit::Edit) -> Result<()> {
    sweep(root, &[path.to_path_buf()])?;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    fsutil::write_atomic(path, edit.text.as_bytes(), mode, None)
        .with_context(|| format!("cannot write {shown}"))?;
    println!("{shown}: edited ({} change(s))", edit.changes.len());
    Ok(())
}

/// `setup-secrets <env>`, so the migrated values exist in the store.
fn setup(root: &Path, env: &str) -> Result<()> {
    let e = EnvArgs {
        env: env.to_string(),
        backend: None,
        namespace: None,
        lock_timeout: Duration::from_secs(300),
    };
    println!("running setup-secrets {env}:");
    super::setup_secrets::run(root, &e, SetupArgs { generate_missing: false, dry_run: false, accept_weak: true })
        .with_context(|| format!("the values were migrated, but `cargo xtask setup-secrets {env}` failed; fix what it says and run it"))
}

/// Removes what an interrupted run left of its own atomic writes (the
/// temporary `.<name>.tmp-<pid>-<hex>` beside each file it writes, and its
/// backup's), and nothing else: other commands may be writing beside them.
fn sweep(root: &Path, files: &[PathBuf]) -> Result<()> {
    for f in files {
        let (Some(dir), Some(name)) = (f.parent(), f.file_name()) else {
            continue;
        };
        if !dir.exists() {
            continue;
        }
        let name = name.to_string_lossy();
        // The file itself, or its backup (`<name>.pre-migrate-<time>.bak`).
        let ours = |n: &str| {
            n.starts_with(&format!(".{name}.tmp-"))
                || (n.starts_with(&format!(".{name}.pre-migrate-")) && n.contains(".bak.tmp-"))
        };
        for p in fsutil::leftover_temp_files(dir)? {
            if p.file_name().is_some_and(|n| ours(&n.to_string_lossy())) {
                std::fs::remove_file(&p)
                    .with_context(|| format!("cannot remove {}", p.display()))?;
                println!(
                    "removed {}, a temporary file left by an interrupted run",
                    p.strip_prefix(root).unwrap_or(&p).display()
                );
            }
        }
    }
    Ok(())
}

/// `--from` relative to the repository root (where commands run).
fn source_path(root: &Path, from: &Path) -> (PathBuf, String) {
    let path = root.join(from);
    let shown = path
        .strip_prefix(root)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| path.display().to_string());
    (path, shown)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
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

/// Writes the target, the backup and the source, in that order.
fn apply(
    m: &Migration,
    source: &EnvFile,
    mut target: EnvFile,
    env: &Environment,
    project: &str,
) -> Result<()> {
    if !m.changes() {
        println!(
            "nothing to change: {} holds no secret to move",
            source.shown
        );
        return Ok(());
    }
    if !m.writes.is_empty() {
        if let Some(dir) = target.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let header = format!(
            "# Secrets for {} ({project}). Never commit this file. Managed by `cargo xtask setup-secrets {}`.\n",
            env.name, env.name
        );
        let changes: Vec<Change> = m
            .writes
            .iter()
            .map(|(key, _)| Change::new(&key.to_ascii_lowercase(), "migrate", None))
            .collect();
        let root = std::env::current_dir()?;
        let write = target.write_updates(&m.writes, &header);
        let outcome = if write.is_ok() {
            Outcome::Ok
        } else {
            Outcome::Failed
        };
        audit::record(
            &root,
            &env.name,
            "migrate-env-to-secrets",
            env.store,
            &changes,
            outcome,
        )?;
        write?;
        println!("{}: {} value(s) added", target.shown, m.writes.len());
    }
    let stamp = time::rfc3339(std::time::SystemTime::now()).replace([':', '-'], "");
    let name = source
        .path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy();
    let backup = source
        .path
        .with_file_name(format!("{name}.pre-migrate-{stamp}.bak"));
    let shown = backup
        .strip_prefix(std::env::current_dir()?)
        .unwrap_or(&backup)
        .display()
        .to_string();
    fsutil::write_atomic(&backup, source.raw().as_bytes(), 0o600, None)
        .with_context(|| format!("cannot write the backup {shown}"))?;
    let root = std::env::current_dir()?;
    if !git::is_ignored(&root, &backup) {
        output::warn(&format!(
            "{shown} holds the old values and is not covered by .gitignore; delete it once you have checked the migration, or add `*.pre-migrate-*.bak` to .gitignore"
        ));
    }
    let mode = std::fs::metadata(&source.path)?.permissions().mode() & 0o777;
    let text = zeroize::Zeroizing::new(migrate::without(source.raw(), &m.remove));
    fsutil::write_atomic(&source.path, text.as_bytes(), mode, None)
        .with_context(|| format!("cannot write {}", source.shown))?;
    println!(
        "{}: {} line(s) removed, every other byte kept (backup: {shown}, mode 0600)",
        source.shown,
        m.remove.len()
    );
    Ok(())
}

/// A top-level secret definition's lines for one name.
type Definition = dyn Fn(&str) -> Vec<String>;

/// The deploy file of the environment's runtime, and the edit it needs,
/// printed either way; `None` when it needs none.
fn compose_changes(
    root: &Path,
    env: &Environment,
    secrets: &[String],
) -> Result<Option<(PathBuf, String, compose_edit::Edit)>> {
    let (shown, def): (String, Box<Definition>) = match env.runtime {
        BackendKind::Compose => {
            let file = store::compose::settings(env)?.file.display().to_string();
            let env_name = env.name.clone();
            (
                file,
                Box::new(move |n: &str| {
                    vec![format!(
                        "file: ${{XTASK_SECRETS_DIR:-./secrets/{env_name}}}/{n}"
                    )]
                }),
            )
        }
        BackendKind::Swarm => {
            let mut t = env.settings_for(BackendKind::Swarm);
            let file = t
                .opt_str("stack_file")?
                .unwrap_or_else(|| "docker-compose.swarm.yml".into());
            (
                file,
                Box::new(|n: &str| {
                    vec![
                        "external: true".to_string(),
                        format!(
                            "name: ${{XTASK_SECRET_{}:?set by cargo xtask deploy}}",
                            n.to_ascii_uppercase()
                        ),
                    ]
                }),
            )
        }
        _ => {
            println!(
                "compose changes: none ({} runs on {}; its manifests mount secrets as files already)",
                env.name, env.runtime
            );
            return Ok(None);
        }
    };
    let path = root.join(&shown);
    if secrets.is_empty() || !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {shown}"))?;
    let edit = compose_edit::edit(&shown, &text, secrets, def.as_ref())?;
    if edit.changes.is_empty() {
        println!("compose changes: none ({shown} already reads these secrets from files)");
        return Ok(None);
    }
    println!("compose changes for {shown} (apply them with --write-compose):");
    for c in &edit.changes {
        println!("  {c}");
    }
    Ok(Some((path, shown, edit)))
}
