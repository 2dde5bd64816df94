//! `migrate-env-to-secrets [--from FILE] [--to ENV]`: replaces the seeds'
//! `create_secrets_from_env.sh`. Moves the secrets of a plain `.env` into an
//! environment's env file (merging, refusing conflicts), removes exactly those
//! lines from the source (a 0600 backup beside it), shows or makes the compose
//! changes, and runs setup so the secrets exist in the store.
//!
//! Order: everything is read and checked first, and every folder the run will
//! write in is proved writable; then the backup (a new file), the target env
//! file (so an interrupted run finds the values already there and only
//! removes the lines), the source and, with `--write-compose`, the compose
//! file, each replaced atomically. A write that fails puts back what the
//! earlier ones changed, so a failed run leaves every file as it was.

use std::{
    os::unix::fs::OpenOptionsExt,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{flags::MigrateArgs, output};
use secrets_engine::{
    disk::audit::{self, Change, Outcome},
    disk::fsutil,
    disk::lock,
    edit::compose as compose_edit,
    model::envfile::EnvFile,
    model::manifest::{BackendKind, Environment, Manifest},
    model::secret::SecretValue,
    model::time,
    plan::migrate::{self, Migration},
    plan::resolve,
    session::{Session, Target},
    setup::SetupOptions,
    store,
    tools::git,
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
            &*output::terminal(),
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
    check_pairs(&manifest, &env, &m, &target)?;
    // Every secret of the environment, not only those moved now: a re-run
    // after an interrupted one still finds what the compose file needs.
    let names: Vec<String> = manifest
        .secrets_for(&env.name)
        .iter()
        .map(|s| s.name.clone())
        .collect();
    // Working out the compose changes never blocks a migration that does not
    // write them: without --write-compose they are only printed.
    let compose = match compose_changes(root, &env, &names) {
        Ok(c) => c,
        Err(e) if a.write_compose => bail!(
            "nothing was written: {e:#}; run without --write-compose to migrate the values and make the compose changes by hand"
        ),
        Err(e) => {
            output::warn(&format!(
                "the compose changes cannot be shown: {e:#}; the migration goes on (the compose file is only edited with --write-compose): make them by hand"
            ));
            None
        }
    };
    let compose = compose.filter(|_| a.write_compose || a.dry_run);
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
    if let Some((path, _, _)) = &compose {
        sweep(root, std::slice::from_ref(path))?;
    }
    apply(
        root,
        &m,
        &source,
        target,
        &env,
        &manifest.project,
        compose.as_ref(),
    )?;
    drop(lock);
    if a.write_compose {
        check(root, &manifest).context("the compose changes are written, but check found disagreements; fix them and run `cargo xtask check`")?;
    }
    setup(root, &env.name)
}

/// Each TLS key (`key_of`) against its certificate as the target env file
/// will hold them after the migration (a moved value, else the target's own),
/// before anything is written. A value may be the PEM itself or the path of
/// its file (relative to the target's folder); a file that cannot be read is
/// left to setup's own message.
fn check_pairs(
    manifest: &Manifest,
    env: &Environment,
    m: &Migration,
    target: &EnvFile,
) -> Result<()> {
    let base = target.path.parent().unwrap_or(Path::new("."));
    let value = |name: &str| -> Option<SecretValue> {
        let key = manifest.secret(name).ok()?.env_key();
        let v = m
            .writes
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
            .or_else(|| target.get(&key).map(|e| e.value.clone()))?;
        if resolve::inline_pem(v.expose()) {
            return Some(v);
        }
        let rel = v.expose_str().filter(|r| resolve::plausible_path(r))?;
        std::fs::read(base.join(rel)).ok().map(SecretValue::new)
    };
    for spec in manifest.secrets_for(&env.name) {
        let Some(cert) = &spec.key_of else { continue };
        if let (Some(c), Some(k)) = (value(cert), value(&spec.name)) {
            secrets_engine::model::keypair::check(&c, &k, (cert, &spec.name))
                .context("nothing was written")?;
        }
    }
    Ok(())
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
        lock_timeout: Duration::from_secs(300),
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

/// What a failed run puts back, last change first.
enum Undo {
    /// Put these bytes back, with this mode (nothing to do when they are
    /// still there).
    Restore(PathBuf, zeroize::Zeroizing<Vec<u8>>, u32),
    /// Remove a file the run created (if it got that far).
    Remove(PathBuf),
    /// Remove a folder the run created, if it is empty again.
    RemoveDir(PathBuf),
}

/// Undoes `done` in reverse; returns what could not be put back. It stops at
/// the first step that fails, so the backup (the first write) stays whenever
/// anything after it could not be put back.
fn undo(done: Vec<Undo>) -> Vec<String> {
    let mut left = Vec::new();
    for u in done.into_iter().rev() {
        if !left.is_empty() {
            break;
        }
        let (p, r) = match &u {
            Undo::Restore(p, bytes, mode) => {
                let same = std::fs::read(p).is_ok_and(|now| now == bytes.as_slice());
                let r = match same {
                    true => Ok(()),
                    false => fsutil::write_atomic(p, bytes, *mode, None),
                };
                (p, r)
            }
            Undo::Remove(p) => match std::fs::remove_file(p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => (p, Err(e.into())),
                _ => (p, Ok(())),
            },
            Undo::RemoveDir(p) => {
                let _ = std::fs::remove_dir(p);
                (p, Ok(()))
            }
        };
        if let Err(e) = r {
            left.push(format!("{}: {e:#}", p.display()));
        }
    }
    left
}

/// The file's bytes and mode, to put back; `None` when it does not exist.
fn saved(path: &Path) -> Result<Undo> {
    match std::fs::read(path) {
        Ok(b) => {
            let mode = std::fs::metadata(path)?.permissions().mode() & 0o7777;
            Ok(Undo::Restore(
                path.to_path_buf(),
                zeroize::Zeroizing::new(b),
                mode,
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Undo::Remove(path.to_path_buf())),
        Err(e) => Err(fsutil::io_error(e, "read", path)),
    }
}

/// Every folder the run writes in, proved writable before the first write,
/// with the file that needs it (for the message).
fn preflight(root: &Path, dirs: &[(&Path, &str)]) -> Result<()> {
    for (dir, what) in dirs {
        check_writable_dir(dir).with_context(|| {
            format!(
                "nothing was written: {what} needs {} to be writable",
                dir.strip_prefix(root).unwrap_or(dir).display()
            )
        })?;
    }
    Ok(())
}

/// Proves that files can be created and renamed in `dir` by creating one of
/// `fsutil::write_atomic`'s temporary files there and removing it again, so a run
/// can refuse before its first real write. `dir` that does not exist yet is
/// checked where it would be created (its nearest existing ancestor).
fn check_writable_dir(dir: &Path) -> Result<()> {
    let mut d = dir;
    while !d.exists() {
        match d.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(p) => d = p,
            None => {
                d = Path::new(".");
                break;
            }
        }
    }
    if !d.is_dir() {
        bail!(
            "{} is not a folder, so nothing can be written in it",
            d.display()
        );
    }
    let probe = d.join(format!(
        ".xtask-probe.tmp-{}-{:x}",
        std::process::id(),
        secrets_engine::model::secret::random_u64()
    ));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&probe)
        .map_err(|e| fsutil::io_error(e, "create a file in", d))?;
    std::fs::remove_file(&probe).map_err(|e| fsutil::io_error(e, "remove a file in", d))
}

/// Writes the backup, the target, the source and the compose file, in that
/// order, after proving every folder writable; a failure puts back what was
/// already written and says so.
#[allow(clippy::too_many_arguments)]
fn apply(
    root: &Path,
    m: &Migration,
    source: &EnvFile,
    mut target: EnvFile,
    env: &Environment,
    project: &str,
    compose: Option<&(PathBuf, String, compose_edit::Edit)>,
) -> Result<()> {
    if !m.changes() {
        println!(
            "nothing to change: {} holds no secret to move",
            source.shown
        );
        if let Some((path, shown, edit)) = compose {
            preflight(root, &[(folder(path), shown.as_str())])?;
            write_compose(path, shown, edit, &mut Vec::new())?;
            println!("{shown}: edited ({} change(s))", edit.changes.len());
        }
        return Ok(());
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
        .strip_prefix(root)
        .unwrap_or(&backup)
        .display()
        .to_string();
    let backup_what = format!("the backup {shown}");
    let target_what = target.shown.clone();
    let audit_log = root.join(audit::PATH);
    let mut dirs: Vec<(&Path, &str)> = vec![
        (folder(&backup), backup_what.as_str()),
        (folder(&source.path), source.shown.as_str()),
    ];
    if !m.writes.is_empty() {
        dirs.push((folder(&target.path), target_what.as_str()));
        dirs.push((folder(&audit_log), audit::PATH));
    }
    if let Some((path, shown, _)) = compose {
        dirs.push((folder(path), shown.as_str()));
    }
    preflight(root, &dirs)?;

    let mut done: Vec<Undo> = Vec::new();
    let result = (|| -> Result<()> {
        fsutil::write_atomic(&backup, source.raw().as_bytes(), 0o600, None)
            .with_context(|| format!("cannot write the backup {shown}"))?;
        done.push(Undo::Remove(backup.clone()));
        if !m.writes.is_empty() {
            let header = format!(
                "# Secrets for {} ({project}). Never commit this file. Managed by `cargo xtask setup-secrets {}`.\n",
                env.name, env.name
            );
            if let Some(dir) = target.path.parent()
                && !dir.exists()
            {
                let mut first = dir;
                while let Some(p) = first.parent().filter(|p| !p.exists()) {
                    first = p;
                }
                done.push(Undo::RemoveDir(first.to_path_buf()));
                std::fs::create_dir_all(dir).map_err(|e| fsutil::io_error(e, "create", dir))?;
            }
            // Saved before: the write may land and the reload after it fail.
            done.push(saved(&target.path)?);
            target.write_updates(&m.writes, &header)?;
        }
        let mode = std::fs::metadata(&source.path)?.permissions().mode() & 0o7777;
        let text = zeroize::Zeroizing::new(migrate::without(source.raw(), &m.remove));
        let before = Undo::Restore(
            source.path.clone(),
            zeroize::Zeroizing::new(source.raw().as_bytes().to_vec()),
            mode,
        );
        fsutil::write_atomic(&source.path, text.as_bytes(), mode, None)
            .with_context(|| format!("cannot write {}", source.shown))?;
        done.push(before);
        if let Some((path, shown, edit)) = compose {
            write_compose(path, shown, edit, &mut done)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        let left = undo(done);
        if left.is_empty() {
            return Err(e.context("nothing was changed: what this run had written is put back"));
        }
        let changes: Vec<Change> = m
            .writes
            .iter()
            .map(|(key, _)| Change::new(&key.to_ascii_lowercase(), "migrate", None))
            .collect();
        let _ = audit::record(
            root,
            &env.name,
            "migrate-env-to-secrets",
            env.store,
            &changes,
            Outcome::Failed,
        );
        return Err(e.context(format!(
            "and these could not be put back (restore them from the backup {shown}): {}",
            left.join("; ")
        )));
    }
    if !m.writes.is_empty() {
        let changes: Vec<Change> = m
            .writes
            .iter()
            .map(|(key, _)| Change::new(&key.to_ascii_lowercase(), "migrate", None))
            .collect();
        audit::record(
            root,
            &env.name,
            "migrate-env-to-secrets",
            env.store,
            &changes,
            Outcome::Ok,
        )
        .context("the migration is done, but its audit line could not be written")?;
        println!("{}: {} value(s) added", target.shown, m.writes.len());
    }
    if !git::is_ignored(root, &backup) {
        output::warn(&format!(
            "{shown} holds the old values and is not covered by .gitignore; delete it once you have checked the migration, or add `*.pre-migrate-*.bak` to .gitignore"
        ));
    }
    println!(
        "{}: {} line(s) removed, every other byte kept (backup: {shown}, mode 0600)",
        source.shown,
        m.remove.len()
    );
    if let Some((_, shown, edit)) = compose {
        println!("{shown}: edited ({} change(s))", edit.changes.len());
    }
    Ok(())
}

/// The folder a file is written in.
fn folder(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Writes the edited compose file atomically, keeping its mode.
fn write_compose(
    path: &Path,
    shown: &str,
    edit: &compose_edit::Edit,
    done: &mut Vec<Undo>,
) -> Result<()> {
    let before = saved(path)?;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o7777;
    fsutil::write_atomic(path, edit.text.as_bytes(), mode, None)
        .with_context(|| format!("cannot write {shown}"))?;
    done.push(before);
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
