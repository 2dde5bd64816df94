//! `restore-secrets` carried out: puts a backup's env file and files back,
//! byte for byte, then brings the store in line as setup does.
//!
//! Everything that can fail without changing anything comes first: decrypt
//! (wrong identity), read the archive (truncated or corrupted), check that it
//! is this project's and environment's ([`open`]), plan every file (create,
//! unchanged, update) and check the TLS pairs ([`plan`]), and refuse updates
//! of different values without `--force` ([`refuse_updates`]), naming the
//! keys, never the values. Only then [`apply`] changes state. What the backup
//! holds and where it goes is [`crate::disk::backup`]'s, shared with
//! `backup-secrets`.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

use crate::{
    disk::archive::{self, Archive, Role},
    disk::audit::Change,
    disk::backup::{file_targets, parse_env, shown_path},
    disk::fsutil,
    model::secret::SecretValue,
    plan::resolve,
    session::Session,
    tools::age,
};

/// The command the lock and the audit log name.
pub const COMMAND: &str = "restore-secrets";

/// What restoring one file does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The file does not exist: it is created.
    Create,
    /// The file holds the backup's bytes already.
    Unchanged,
    /// The file differs: it is replaced (only with `--force`).
    Update,
}

impl Action {
    /// The word a plan shows.
    pub fn word(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Unchanged => "unchanged",
            Action::Update => "update",
        }
    }
}

/// One file of the restore: which archive entry goes where.
#[derive(Debug)]
pub struct Target {
    /// The archive entry restored (an index into its entries).
    pub entry: usize,
    /// Where it goes.
    pub path: PathBuf,
    /// Where it goes, as shown.
    pub shown: String,
    /// What that does.
    pub action: Action,
    /// Update: the keys whose values differ (or exist on one side only).
    pub differing: Vec<String>,
}

/// Decrypts the backup at `from` (relative to the repository root) with age
/// and reads its archive, refusing one of another project or environment.
pub fn open(s: &Session, from: &Path, identity: Option<&Path>) -> Result<Archive> {
    let shown = from.display().to_string();
    let age = age::find()?;
    let plain = age::decrypt(&age, &s.root.join(from), &shown, identity)?;
    let archive = Archive::decode(&plain).with_context(|| format!("in {shown}"))?;
    drop(plain);
    archive::check_target(&archive, &s.manifest.project, &s.env.name, &shown)?;
    Ok(archive)
}

/// Where each entry goes and what that does, the env file last; a backup
/// whose TLS pairs do not match is refused (`shown` names the backup).
/// Entries that are not restored are warned about through the sink.
pub fn plan(s: &Session, archive: &Archive, shown: &str) -> Result<Vec<Target>> {
    let targets = targets(s, archive)?;
    check_pairs(s, archive).with_context(|| format!("in the backup {shown}"))?;
    Ok(targets)
}

/// Refuses a plan that replaces files whose values differ from the backup's,
/// naming the keys; `--force` (`force`) accepts it.
pub fn refuse_updates(targets: &[Target], force: bool) -> Result<()> {
    let differing: BTreeSet<&str> = targets
        .iter()
        .flat_map(|t| t.differing.iter().map(String::as_str))
        .collect();
    let updates = targets.iter().any(|t| t.action == Action::Update);
    if updates && !force {
        bail!(
            "the current files differ from the backup in: {}; nothing was changed. Run again with --force to replace them with the backup's (keep a backup of the current ones first)",
            differing.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

/// Where each entry goes and what that does. The env file goes where the
/// manifest looks for it now; each file where the backup's env file names it.
fn targets(s: &Session, archive: &Archive) -> Result<Vec<Target>> {
    let (env_path, env_shown) = resolve::locate(&s.root, &s.env)?;
    fsutil::refuse_symlink(&env_path, &env_shown)?;
    let env_idx = archive
        .entries
        .iter()
        .position(|e| e.role == Role::EnvFile)
        .context("the backup holds no env file")?;
    let backed = parse_env(&archive.entries[env_idx].bytes, "the backup's env file")?;
    let targets = file_targets(&s.manifest, &s.env, &env_path, &backed);
    for e in &archive.entries {
        if let Role::File(k) = &e.role
            && !targets.iter().any(|(t, p)| t == k && p.is_some())
        {
            s.sink.warn(&format!(
                "the backup's {} ({k}) is not restored: {k} is not a file secret of {} in the manifest, or the backup's env file does not name it",
                e.path, s.env.name
            ));
        }
    }
    let mut out = Vec::new();
    for (key, path) in targets {
        let Some(idx) = archive
            .entries
            .iter()
            .position(|e| e.role == Role::File(key.clone()))
        else {
            continue;
        };
        let Some(path) = path else { continue };
        let shown = shown_path(&s.root, &path);
        let (action, differing) =
            compare(&path, &archive.entries[idx].bytes, || Ok(vec![key.clone()]))?;
        if action != Action::Unchanged {
            // Writing by rename would turn a link into a plain file.
            fsutil::refuse_symlink(&path, &shown)?;
        }
        out.push(Target {
            entry: idx,
            path,
            shown,
            action,
            differing,
        });
    }
    let bytes = &archive.entries[env_idx].bytes;
    let (action, differing) = compare(&env_path, bytes, || {
        env_diff(&env_path, &env_shown, &backed)
    })?;
    // The env file last: it never names a file that is not there yet.
    out.push(Target {
        entry: env_idx,
        path: env_path,
        shown: env_shown,
        action,
        differing,
    });
    Ok(out)
}

/// Each TLS key (`key_of`) of the backup against its certificate, as the
/// restore would put them back, before anything is written: a backup made
/// of a mismatched pair (or a file swapped in it) is refused, not restored.
fn check_pairs(s: &Session, archive: &Archive) -> Result<()> {
    let Some(env) = archive.entries.iter().find(|e| e.role == Role::EnvFile) else {
        return Ok(());
    };
    let backed = parse_env(&env.bytes, "the backup's env file")?;
    let value = |name: &str| -> Option<SecretValue> {
        let key = s.manifest.secret(name).ok()?.env_key();
        match archive
            .entries
            .iter()
            .find(|e| e.role == Role::File(key.clone()))
        {
            Some(e) => Some(SecretValue::new(e.bytes.to_vec())),
            // An inline PEM in the backup's env file.
            None => backed
                .get(&key)
                .filter(|v| v.expose().trim_ascii_start().starts_with(b"-----BEGIN "))
                .cloned(),
        }
    };
    for spec in s.manifest.secrets_for(&s.env.name) {
        let Some(cert) = &spec.key_of else { continue };
        if let (Some(c), Some(k)) = (value(cert), value(&spec.name)) {
            crate::model::keypair::check(&c, &k, (cert, &spec.name))?;
        }
    }
    Ok(())
}

/// The keys whose values differ between the env file at `path` and the
/// backup's (or that only one of them has), compared in memory.
fn env_diff(
    path: &Path,
    shown: &str,
    backed: &BTreeMap<String, SecretValue>,
) -> Result<Vec<String>> {
    let now = zeroize::Zeroizing::new(
        std::fs::read(path).with_context(|| format!("cannot read {shown}"))?,
    );
    let now = parse_env(&now, shown)?;
    let keys: BTreeSet<&String> = now.keys().chain(backed.keys()).collect();
    let mut d: Vec<String> = keys
        .into_iter()
        .filter(|k| match (now.get(*k), backed.get(*k)) {
            (Some(a), Some(b)) => !a.ct_eq(b),
            _ => true,
        })
        .cloned()
        .collect();
    if d.is_empty() {
        d.push(format!("{shown} (comments or layout only)"));
    }
    Ok(d)
}

/// Compares the file at `path` with `want`; `keys` names what differs.
fn compare(
    path: &Path,
    want: &[u8],
    keys: impl FnOnce() -> Result<Vec<String>>,
) -> Result<(Action, Vec<String>)> {
    match std::fs::read(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((Action::Create, Vec::new())),
        Err(e) => Err(fsutil::io_error(e, "read", path)),
        Ok(now) => {
            let now = zeroize::Zeroizing::new(now);
            let same = now.len() == want.len()
                && now.iter().zip(want).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0;
            if same {
                Ok((Action::Unchanged, Vec::new()))
            } else {
                Ok((Action::Update, keys()?))
            }
        }
    }
}

/// The restore's whole change of state: the files (atomically, 0600, env file
/// last), then the store brought in line with them, each step reported
/// through the session's sink. The audit log's line for a restore belongs
/// here. Returns how many secrets were written to the store.
pub fn apply(s: &Session, archive: &Archive, targets: &[Target]) -> Result<usize> {
    let mut written = 0;
    for t in targets.iter().filter(|t| t.action != Action::Unchanged) {
        // The secret column names the restored file; the store's writes
        // below are logged per secret.
        let change = [Change::new(&t.shown, "restore", None)];
        s.audited(COMMAND, &change, || {
            if let Some(dir) = t.path.parent().filter(|d| !d.exists()) {
                fsutil::private_dir(dir, 0o700)?;
            }
            fsutil::write_atomic(&t.path, &archive.entries[t.entry].bytes, 0o600, None)
        })?;
        written += 1;
    }
    s.sink.line(&format!(
        "restored {written} file(s); bringing the {} store in line",
        s.store.kind()
    ));
    let r = s.resolve(resolve::Options::read_only()).with_context(|| {
        format!(
            "the files are restored, but their values do not pass the checks; fix them, then run `cargo xtask setup-secrets {}`",
            s.env.name
        )
    })?;
    let planned = s.plan(&r)?;
    s.sink.plan(&s.heading(), &planned.steps);
    s.apply_audited(COMMAND, &r, &planned.writes())?;
    s.sink.line(&format!(
        "done: {} of {} secrets written to the store",
        planned.writes().len(),
        planned.steps.len()
    ));
    Ok(planned.writes().len())
}
