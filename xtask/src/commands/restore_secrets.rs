//! `restore-secrets <env> --from FILE`: puts a backup's env file and files
//! back, byte for byte, then brings the store in line as setup does.
//!
//! Everything that can fail without changing anything comes first: decrypt
//! (wrong identity), read the archive (truncated or corrupted), check that it
//! is this project's and environment's, plan every file (create, unchanged,
//! update) and refuse updates of different values without `--force`, naming
//! the keys, never the values. Only then [`apply`] changes state.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

use crate::{
    flags::{EnvArgs, RestoreArgs},
    output,
};
use secrets_engine::session::Session;
use secrets_engine::{
    disk::archive::{self, Archive, Role},
    disk::audit::Change,
    disk::backup::{file_targets, parse_env, shown_path},
    disk::fsutil,
    model::secret::SecretValue,
    plan::resolve,
    tools::age,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Create,
    Unchanged,
    Update,
}

/// One file of the restore: which archive entry goes where.
#[derive(Debug)]
struct Target {
    entry: usize,
    path: PathBuf,
    shown: String,
    action: Action,
    /// Update: the keys whose values differ (or exist on one side only).
    differing: Vec<String>,
}

pub fn run(root: &Path, e: &EnvArgs, a: RestoreArgs) -> Result<()> {
    let s = Session::open(root, e, output::terminal())?;
    let from = a.from.display().to_string();
    let age = age::find()?;
    let plain = age::decrypt(&age, &root.join(&a.from), &from, a.identity.as_deref())?;
    let archive = Archive::decode(&plain).with_context(|| format!("in {from}"))?;
    drop(plain);
    archive::check_target(&archive, &s.manifest.project, &s.env.name, &from)?;
    let _lock = match a.dry_run {
        false => Some(s.lock(&format!("restore-secrets {}", e.env), e.lock_timeout)?),
        true => None,
    };
    let targets = plan(&s, &archive)?;
    check_pairs(&s, &archive).with_context(|| format!("in the backup {from}"))?;
    print_plan(&s, &archive, &targets);
    let differing: BTreeSet<&str> = targets
        .iter()
        .flat_map(|t| t.differing.iter().map(String::as_str))
        .collect();
    let updates = targets.iter().any(|t| t.action == Action::Update);
    if updates && !a.force {
        bail!(
            "the current files differ from the backup in: {}; nothing was changed. Run again with --force to replace them with the backup's (keep a backup of the current ones first)",
            differing.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    if a.dry_run {
        println!(
            "dry run: nothing was changed; the real run writes the files above (0600), then brings the {} store in line as `cargo xtask setup-secrets {}` does",
            s.store.kind(),
            s.env.name
        );
        return Ok(());
    }
    apply(&s, &archive, &targets)
}

/// Where each entry goes and what that does. The env file goes where the
/// manifest looks for it now; each file where the backup's env file names it.
fn plan(s: &Session, archive: &Archive) -> Result<Vec<Target>> {
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
            output::warn(&format!(
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
            secrets_engine::model::keypair::check(&c, &k, (cert, &spec.name))?;
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

fn print_plan(s: &Session, archive: &Archive, targets: &[Target]) {
    println!(
        "restore {} {} from {}:",
        s.manifest.project,
        s.env.name,
        archive::describe(archive)
    );
    for t in targets {
        let word = match t.action {
            Action::Create => "create",
            Action::Unchanged => "unchanged",
            Action::Update => "update",
        };
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

/// The restore's whole change of state: the files (atomically, 0600, env file
/// last), then the store brought in line with them. The audit log's line for
/// a restore belongs here.
fn apply(s: &Session, archive: &Archive, targets: &[Target]) -> Result<()> {
    let mut written = 0;
    for t in targets.iter().filter(|t| t.action != Action::Unchanged) {
        // The secret column names the restored file; the store's writes
        // below are logged per secret.
        let change = [Change::new(&t.shown, "restore", None)];
        s.audited("restore-secrets", &change, || {
            if let Some(dir) = t.path.parent().filter(|d| !d.exists()) {
                fsutil::private_dir(dir, 0o700)?;
            }
            fsutil::write_atomic(&t.path, &archive.entries[t.entry].bytes, 0o600, None)
        })?;
        written += 1;
    }
    println!(
        "restored {written} file(s); bringing the {} store in line",
        s.store.kind()
    );
    let r = s.resolve(resolve::Options::read_only()).with_context(|| {
        format!(
            "the files are restored, but their values do not pass the checks; fix them, then run `cargo xtask setup-secrets {}`",
            s.env.name
        )
    })?;
    let planned = s.plan(&r)?;
    output::print_plan(&s.heading(), &planned.steps);
    s.apply_audited("restore-secrets", &r, &planned.writes())?;
    println!(
        "done: {} of {} secrets written to the store",
        planned.writes().len(),
        planned.steps.len()
    );
    Ok(())
}
