//! `migrate-env-to-secrets` carried out: moves the secrets of a plain `.env`
//! into an environment's env file (merging, refusing conflicts), removes
//! exactly those lines from the source (a 0600 backup beside it) and, when
//! asked, edits the compose file. The pure planning is
//! [`crate::plan::migrate`]; this module reads, checks and writes, and sends
//! what the operator must see to a sink. The plan and what was written come
//! back as values ([`Prepared`], [`Applied`]) for the caller to render.
//!
//! Order: everything is read and checked first ([`prepare`], then
//! [`Prepared::validate`]), and every folder the run will write in is proved
//! writable; then ([`Prepared::apply`]) the backup (a new file), the target
//! env file (so an interrupted run finds the values already there and only
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

use crate::{
    disk::audit::{self, Change, Outcome},
    disk::fsutil,
    disk::lock::{self, EnvLock},
    edit::compose as compose_edit,
    model::envfile::EnvFile,
    model::manifest::{BackendKind, Environment, Manifest},
    model::secret::SecretValue,
    model::time,
    plan::migrate::{self, Migration},
    plan::resolve,
    sink::Shared,
    store,
    tools::git,
};

/// The command the lock and the audit log name.
pub const COMMAND: &str = "migrate-env-to-secrets";

/// How long a migration waits for another run on the environment.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(300);

/// What to migrate, and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// The plain env file, relative to the repository root.
    pub from: PathBuf,
    /// The environment whose env file receives the values.
    pub to: String,
    /// Write the compose changes (otherwise they are only shown).
    pub write_compose: bool,
    /// Plan only: take no lock and change nothing.
    pub dry_run: bool,
}

/// A compose file and the edit it needs.
pub struct ComposeEdit {
    /// Where the file is.
    pub path: PathBuf,
    /// The file as the operator names it (relative to the repository root).
    pub shown: String,
    /// The edited text and its changes.
    pub edit: compose_edit::Edit,
}

/// A migration read and planned; nothing is written yet. Holds the
/// environment's lock (outside a dry run) until it is applied or dropped, so
/// the plan cannot go stale.
pub struct Prepared {
    /// The project's manifest.
    pub manifest: Manifest,
    /// The target environment.
    pub env: Environment,
    /// The plain env file migrated from.
    pub source: EnvFile,
    /// The environment's env file, as it is now.
    pub target: EnvFile,
    /// The plan.
    pub migration: Migration,
    /// The compose edit this run writes (with `--write-compose`) or shows as
    /// its own in a dry run; set by [`Prepared::validate`].
    pub compose: Option<ComposeEdit>,
    root: PathBuf,
    options: Options,
    sink: Shared,
    lock: Option<EnvLock>,
}

/// What a migration wrote, for the caller to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Whether the source held anything to move (otherwise only the compose
    /// file may have changed).
    pub changed: bool,
    /// The source file, as shown.
    pub source: String,
    /// The target env file, as shown.
    pub target: String,
    /// Values added to the target env file.
    pub added: usize,
    /// Lines removed from the source.
    pub removed: usize,
    /// The backup of the source (relative to the repository root), when one
    /// was written.
    pub backup: Option<String>,
    /// Whether `.gitignore` covers the backup.
    pub backup_ignored: bool,
    /// The compose file edited and its number of changes.
    pub compose: Option<(String, usize)>,
}

/// Reads the source and the target env file and plans the migration, after
/// taking the environment's lock and removing what an interrupted run left
/// (outside a dry run). Warnings about the files go to `sink`.
pub fn prepare(root: &Path, o: &Options, sink: Shared) -> Result<Prepared> {
    let manifest = Manifest::load(root)?;
    let env = manifest.env(&o.to)?.clone();
    let (src_path, src_shown) = source_path(root, &o.from);
    fsutil::refuse_symlink(&src_path, &src_shown)?;
    if !src_path.exists() {
        bail!("{src_shown} does not exist; name the plain env file to migrate with --from FILE");
    }
    // The lock is held from before the target is read until it is written,
    // so the plan cannot go stale; setup takes it again afterwards.
    let lock = match o.dry_run {
        false => Some(lock::acquire(
            root,
            &env.name,
            &format!("{COMMAND} --to {}", env.name),
            LOCK_TIMEOUT,
            &*sink,
        )?),
        true => None,
    };
    if !o.dry_run {
        sweep(
            root,
            &[src_path.clone(), resolve::locate(root, &env)?.0],
            &sink,
        )?;
    }
    let (source, target) = read_both(root, &env, &src_path, &src_shown, &sink)?;
    let migration = migrate::plan(&manifest, &env, &source, &target);
    Ok(Prepared {
        manifest,
        env,
        source,
        target,
        migration,
        compose: None,
        root: root.to_path_buf(),
        options: o.clone(),
        sink,
        lock,
    })
}

impl Prepared {
    /// Refuses what the plan cannot write (conflicts, problems, mismatched
    /// TLS pairs) and works out the compose changes, shown through the sink.
    /// Nothing is written.
    pub fn validate(&mut self) -> Result<()> {
        let blockers = self.migration.blockers();
        if !blockers.is_empty() {
            bail!(
                "nothing was written; {} problem(s) to settle first:\n  - {}",
                blockers.len(),
                blockers.join("\n  - ")
            );
        }
        check_pairs(&self.manifest, &self.env, &self.migration, &self.target)?;
        // Every secret of the environment, not only those moved now: a re-run
        // after an interrupted one still finds what the compose file needs.
        let names: Vec<String> = self
            .manifest
            .secrets_for(&self.env.name)
            .iter()
            .map(|s| s.name.clone())
            .collect();
        // Working out the compose changes never blocks a migration that does
        // not write them: without --write-compose they are only shown.
        let compose = match compose_changes(&self.root, &self.env, &names, &self.sink) {
            Ok(c) => c,
            Err(e) if self.options.write_compose => bail!(
                "nothing was written: {e:#}; run without --write-compose to migrate the values and make the compose changes by hand"
            ),
            Err(e) => {
                self.sink.warn(&format!(
                    "the compose changes cannot be shown: {e:#}; the migration goes on (the compose file is only edited with --write-compose): make them by hand"
                ));
                None
            }
        };
        self.compose = compose.filter(|_| self.options.write_compose || self.options.dry_run);
        Ok(())
    }

    /// Writes the backup, the target, the source and the compose file (see
    /// the module's order), then releases the lock. A failure puts back what
    /// was already written and says so. Call [`Prepared::validate`] first.
    pub fn apply(&mut self) -> Result<Applied> {
        if self.options.dry_run {
            bail!("a dry run writes nothing");
        }
        if let Some(c) = &self.compose {
            sweep(&self.root, std::slice::from_ref(&c.path), &self.sink)?;
        }
        let applied = apply(
            &self.root,
            &self.migration,
            &self.source,
            &mut self.target,
            &self.env,
            &self.manifest.project,
            self.compose.as_ref(),
        )?;
        self.lock = None;
        Ok(applied)
    }
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
            crate::model::keypair::check(&c, &k, (cert, &spec.name))
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
    sink: &Shared,
) -> Result<(EnvFile, EnvFile)> {
    let (target, warnings) = resolve::load_env_file(root, env)?;
    if same_file(src_path, &target.path) {
        bail!(
            "{src_shown} is {}'s own env file; --from names the plain file to migrate from",
            env.name
        );
    }
    for w in &warnings {
        sink.warn(w);
    }
    let source = EnvFile::load(src_path, src_shown.to_string())?;
    if git::is_tracked(root, src_path)? == Some(true) {
        sink.warn(&format!(
            "{src_shown} is tracked by git, so the values in it are in the repository's history: after migrating, rotate them (`cargo xtask rotate-secrets {} --all`) and `git rm --cached {src_shown}`",
            env.name
        ));
    }
    Ok((source, target))
}

/// Removes what an interrupted run left of its own atomic writes (the
/// temporary `.<name>.tmp-<pid>-<hex>` beside each file it writes, and its
/// backup's), and nothing else: other commands may be writing beside them.
fn sweep(root: &Path, files: &[PathBuf], sink: &Shared) -> Result<()> {
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
                sink.line(&format!(
                    "removed {}, a temporary file left by an interrupted run",
                    p.strip_prefix(root).unwrap_or(&p).display()
                ));
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
        crate::model::secret::random_u64()
    ));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&probe)
        .map_err(|e| fsutil::io_error(e, "create a file in", d))?;
    std::fs::remove_file(&probe).map_err(|e| fsutil::io_error(e, "remove a file in", d))
}

/// One audit change per value moved.
fn changes(m: &Migration) -> Vec<Change> {
    m.writes
        .iter()
        .map(|(key, _)| Change::new(&key.to_ascii_lowercase(), "migrate", None))
        .collect()
}

/// Writes the backup, the target, the source and the compose file, in that
/// order, after proving every folder writable; a failure puts back what was
/// already written and says so.
fn apply(
    root: &Path,
    m: &Migration,
    source: &EnvFile,
    target: &mut EnvFile,
    env: &Environment,
    project: &str,
    compose: Option<&ComposeEdit>,
) -> Result<Applied> {
    let mut applied = Applied {
        changed: m.changes(),
        source: source.shown.clone(),
        target: target.shown.clone(),
        added: 0,
        removed: 0,
        backup: None,
        backup_ignored: true,
        compose: None,
    };
    if !m.changes() {
        if let Some(c) = compose {
            preflight(root, &[(folder(&c.path), c.shown.as_str())])?;
            write_compose(c, &mut Vec::new())?;
            applied.compose = Some((c.shown.clone(), c.edit.changes.len()));
        }
        return Ok(applied);
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
    if let Some(c) = compose {
        dirs.push((folder(&c.path), c.shown.as_str()));
    }
    preflight(root, &dirs)?;

    let mut done: Vec<Undo> = Vec::new();
    let result = (|| -> Result<()> {
        fsutil::write_atomic(&backup, source.raw().as_bytes(), 0o600, None)
            .with_context(|| format!("cannot write the backup {shown}"))?;
        done.push(Undo::Remove(backup.clone()));
        if !m.writes.is_empty() {
            write_target(target, m, env, project, &mut done)?;
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
        if let Some(c) = compose {
            write_compose(c, &mut done)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        let left = undo(done);
        if left.is_empty() {
            return Err(e.context("nothing was changed: what this run had written is put back"));
        }
        let _ = audit::record(
            root,
            &env.name,
            COMMAND,
            env.store,
            &changes(m),
            Outcome::Failed,
        );
        return Err(e.context(format!(
            "and these could not be put back (restore them from the backup {shown}): {}",
            left.join("; ")
        )));
    }
    if !m.writes.is_empty() {
        audit::record(
            root,
            &env.name,
            COMMAND,
            env.store,
            &changes(m),
            Outcome::Ok,
        )
        .context("the migration is done, but its audit line could not be written")?;
        applied.added = m.writes.len();
    }
    applied.backup_ignored = git::is_ignored(root, &backup);
    applied.backup = Some(shown);
    applied.removed = m.remove.len();
    applied.compose = compose.map(|c| (c.shown.clone(), c.edit.changes.len()));
    Ok(applied)
}

/// Adds the moved values to the target env file (creating it and its
/// folder when needed), noting in `done` how to put it back.
fn write_target(
    target: &mut EnvFile,
    m: &Migration,
    env: &Environment,
    project: &str,
    done: &mut Vec<Undo>,
) -> Result<()> {
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
    target.write_updates(&m.writes, &header)
}

/// The folder a file is written in.
fn folder(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Writes the edited compose file atomically, keeping its mode.
fn write_compose(c: &ComposeEdit, done: &mut Vec<Undo>) -> Result<()> {
    let before = saved(&c.path)?;
    let mode = std::fs::metadata(&c.path)?.permissions().mode() & 0o7777;
    fsutil::write_atomic(&c.path, c.edit.text.as_bytes(), mode, None)
        .with_context(|| format!("cannot write {}", c.shown))?;
    done.push(before);
    Ok(())
}

/// A top-level secret definition's lines for one name.
type Definition = dyn Fn(&str) -> Vec<String>;

/// The deploy file of the environment's runtime, and the edit it needs,
/// shown through the sink either way; `None` when it needs none.
fn compose_changes(
    root: &Path,
    env: &Environment,
    secrets: &[String],
    sink: &Shared,
) -> Result<Option<ComposeEdit>> {
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
            sink.line(&format!(
                "compose changes: none ({} runs on {}; its manifests mount secrets as files already)",
                env.name, env.runtime
            ));
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
        sink.line(&format!(
            "compose changes: none ({shown} already reads these secrets from files)"
        ));
        return Ok(None);
    }
    sink.line(&format!(
        "compose changes for {shown} (apply them with --write-compose):"
    ));
    for c in &edit.changes {
        sink.line(&format!("  {c}"));
    }
    Ok(Some(ComposeEdit { path, shown, edit }))
}
