//! The audit log, `deploy/audit-log.tsv`: one line for every secret a command
//! created, replaced, removed or generated, with who, when, where and whether it
//! worked. Never a value. `status` reads it for ages and last rotations.
//!
//! It extends the older rotation log (`deploy/rotation-log.tsv`, six columns,
//! rotations only), which is still read, as successful rotations, and never
//! written again. Every command that changes a store or an env file calls
//! [`record`], so the format lives here only.
//!
//! Appends are safe under concurrent runs of any environment: the file is born
//! complete with its header (a hard link of a finished file, which fails when
//! another run was first), and each call is one `write` on an `O_APPEND`
//! descriptor, so lines never interleave.

use std::{
    collections::BTreeMap,
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::OnceLock,
    time::SystemTime,
};

use anyhow::{Context, Result};

use crate::{
    model::manifest::BackendKind,
    model::time,
    plan::{Action, Step},
};

/// The audit log, relative to the repository root.
pub const PATH: &str = "deploy/audit-log.tsv";
/// The rotation log of earlier versions: read, never written.
pub const OLD_PATH: &str = "deploy/rotation-log.tsv";
pub(crate) const HEADER: &str =
    "time\tenvironment\tcommand\taction\tsecret\tversion\toperator\tstore\toutcome\n";
const OLD_HEADER: &str = "time\tenvironment\tsecret\tversion\toperator\tbackend";

/// Whether the logged changes took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// They did.
    Ok,
    /// The command failed while making them: they may be partly done.
    Failed,
}

impl Outcome {
    /// The log's spelling: `ok` or `failed`.
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
        }
    }
}

/// What happened to one secret: `create`, `update`, `remove` (in the store),
/// `generate` (a new value written to the env file), `deploy` (the runtime
/// was pointed at the new versions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The manifest's name of the secret.
    pub secret: String,
    /// What happened (`create`, `update`, `fix`, `remove`, `generate`, `deploy`, ...).
    pub action: String,
    /// The version concerned, in a versioned store.
    pub version: Option<u32>,
}

impl Change {
    /// A change of `secret` by `action` at `version`.
    pub fn new(secret: &str, action: &str, version: Option<u32>) -> Change {
        Change {
            secret: secret.into(),
            action: action.into(),
            version,
        }
    }

    /// The change a plan step makes: create, update (a new value), fix (the
    /// same value with its mode or owner put right) or remove.
    pub fn of(step: &Step) -> Change {
        let new_value = ["content changed", "new value"]
            .iter()
            .any(|w| step.detail.starts_with(w));
        let action = match step.action {
            Action::Update if !new_value => "fix",
            a => a.word(),
        };
        Change::new(&step.secret, action, step.version)
    }

    /// The changes of the writing and removing steps of a plan.
    pub fn of_steps<S: std::borrow::Borrow<Step>>(steps: &[S]) -> Vec<Change> {
        steps
            .iter()
            .map(|s| s.borrow())
            .filter(|s| s.action.writes() || s.action == Action::Remove)
            .map(Change::of)
            .collect()
    }
}

/// One line of the log, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// When it was logged.
    pub time: SystemTime,
    /// The environment changed.
    pub environment: String,
    /// The command that changed it (`setup-secrets`, ...).
    pub command: String,
    /// What happened (see [`Change::action`]).
    pub action: String,
    /// The secret changed.
    pub secret: String,
    /// Its version, where the store is versioned.
    pub version: Option<u32>,
    /// Who ran the command (see [`operator`]).
    pub operator: String,
    /// The store's kind (`swarm`, `vault`, ...).
    pub store: String,
    /// Whether it took effect.
    pub outcome: Outcome,
}

impl Entry {
    /// A successful change of the value (created or replaced).
    pub fn sets_value(&self) -> bool {
        self.outcome == Outcome::Ok && matches!(self.action.as_str(), "create" | "update")
    }

    /// A successful replacement of a value: a rotation.
    pub fn is_rotation(&self) -> bool {
        self.outcome == Outcome::Ok && self.action == "update"
    }
}

/// Who ran the command: `$XTASK_OPERATOR`; else git's `user.name` and
/// `user.email` (`Name <email>`); else `$SUDO_USER`, `$USER`, `id -un`.
pub fn operator() -> &'static str {
    static OP: OnceLock<String> = OnceLock::new();
    OP.get_or_init(|| clean(&find_operator()))
}

fn find_operator() -> String {
    if let Ok(v) = std::env::var("XTASK_OPERATOR")
        && !v.trim().is_empty()
    {
        return v;
    }
    let read = |program: &str, args: &[&str]| {
        let out = crate::tools::runner::Spawn::new(program)
            .args(args)
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !text.is_empty()).then_some(text)
    };
    let git = |key: &str| {
        which::which("git").ok()?;
        read("git", &["config", "--get", key])
    };
    match (git("user.name"), git("user.email")) {
        (Some(n), Some(e)) => return format!("{n} <{e}>"),
        (Some(n), None) => return n,
        (None, Some(e)) => return format!("<{e}>"),
        (None, None) => {}
    }
    for k in ["SUDO_USER", "USER"] {
        if let Ok(v) = std::env::var(k)
            && !v.is_empty()
        {
            return v;
        }
    }
    read("id", &["-un"]).unwrap_or_else(|| "unknown".into())
}

/// A field never holds a tab or a line break (they would break the columns).
fn clean(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let s = s.trim();
    if s.is_empty() { "-".into() } else { s.into() }
}

/// Pure: the lines for `changes`, without the header.
pub fn lines(
    now: SystemTime,
    env: &str,
    command: &str,
    store: BackendKind,
    operator: &str,
    changes: &[Change],
    outcome: Outcome,
) -> String {
    let now = time::rfc3339(now);
    let mut out = String::new();
    for c in changes {
        let v = c
            .version
            .map(|v| format!("v{v}"))
            .unwrap_or_else(|| "-".into());
        let fields = [
            now.as_str(),
            env,
            command,
            &c.action,
            &c.secret,
            &v,
            operator,
            store.name(),
            outcome.word(),
        ];
        let fields: Vec<String> = fields.iter().map(|f| clean(f)).collect();
        out.push_str(&fields.join("\t"));
        out.push('\n');
    }
    out
}

/// Appends one line per change to the audit log. `command` is the command's
/// name (`setup-secrets`, `restore-secrets`, ...). Nothing is written for no change.
pub fn record(
    root: &Path,
    env: &str,
    command: &str,
    store: BackendKind,
    changes: &[Change],
    outcome: Outcome,
) -> Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let text = lines(
        SystemTime::now(),
        env,
        command,
        store,
        operator(),
        changes,
        outcome,
    );
    append(&root.join(PATH), text.as_bytes())
}

/// Refuses a log that is a symbolic link (it could send who changed which
/// secret anywhere): checked when a writing command takes its lock.
pub fn check_writable_place(root: &Path) -> Result<()> {
    crate::disk::fsutil::refuse_symlink(&root.join(PATH), PATH)
}

fn append(path: &Path, text: &[u8]) -> Result<()> {
    // A link could send the log (who changed which secret) out of the repository.
    crate::disk::fsutil::refuse_symlink(path, PATH)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    if !path.exists() {
        create_with_header(path)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("cannot append to the audit log {}", path.display()))?;
    // One write on an O_APPEND descriptor: concurrent runs never interleave.
    f.write_all(text)
        .with_context(|| format!("cannot append to the audit log {}", path.display()))
}

/// Makes the log exist with its header, 0600 whatever the umask: a finished
/// file hard-linked into place, so no run ever sees it without its header.
fn create_with_header(path: &Path) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".audit-log.tsv.tmp-{}-{:x}",
        std::process::id(),
        crate::model::secret::random_u64()
    ));
    let result = (|| -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(HEADER.as_bytes())?;
        f.sync_all()?;
        match std::fs::hard_link(&tmp, path) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e.into()),
            _ => Ok(()),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    result.with_context(|| format!("cannot create the audit log {}", path.display()))
}

/// Removes what a run killed while creating the log left (its temporary
/// file), when that run's process is gone: the log is shared by every
/// environment, so another environment's run may be creating it right now.
/// Returns what it removed, relative to `root`.
pub fn sweep(root: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let path = root.join(PATH);
    let dir = path.parent().unwrap_or(Path::new("."));
    for p in crate::disk::fsutil::leftover_temp_files(dir)? {
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        let Some(pid) = name
            .strip_prefix(".audit-log.tsv.tmp-")
            .and_then(|t| t.split('-').next())
        else {
            continue;
        };
        if pid.parse().is_ok_and(crate::disk::fsutil::process_alive) {
            continue;
        }
        std::fs::remove_file(&p).with_context(|| format!("cannot remove {}", p.display()))?;
        removed.push(p.strip_prefix(root).unwrap_or(&p).to_path_buf());
    }
    Ok(removed)
}

/// Pure: the entries of one log's text, new format or old; headers and lines
/// that do not parse are skipped (their 1-based line numbers are returned).
pub fn parse(text: &str) -> (Vec<Entry>, Vec<usize>) {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with("time\t") || line == OLD_HEADER {
            continue;
        }
        match parse_line(line) {
            Some(e) => out.push(e),
            None => bad.push(i + 1),
        }
    }
    (out, bad)
}

fn parse_line(line: &str) -> Option<Entry> {
    let f: Vec<&str> = line.split('\t').collect();
    let version = |v: &str| v.strip_prefix('v').and_then(|n| n.parse().ok());
    match f[..] {
        [t, env, command, action, secret, v, op, store, outcome] => Some(Entry {
            time: time::parse_rfc3339(t)?,
            environment: env.into(),
            command: command.into(),
            action: action.into(),
            secret: secret.into(),
            version: version(v),
            operator: op.into(),
            store: store.into(),
            outcome: match outcome {
                "ok" => Outcome::Ok,
                "failed" => Outcome::Failed,
                _ => return None,
            },
        }),
        // The old rotation log: every line is a rotation that completed.
        [t, env, secret, v, op, backend] => Some(Entry {
            time: time::parse_rfc3339(t)?,
            environment: env.into(),
            command: "rotate-secrets".into(),
            action: "update".into(),
            secret: secret.into(),
            version: version(v),
            operator: op.into(),
            store: backend.into(),
            outcome: Outcome::Ok,
        }),
        _ => None,
    }
}

/// When the log last saw `secret`'s value set in `env`'s `store` (created
/// or replaced, successfully): the age of a value in a store that keeps no
/// such record itself.
pub fn last_set(log: &[Entry], env: &str, secret: &str, store: &str) -> Option<SystemTime> {
    log.iter()
        .filter(|e| e.environment == env && e.secret == secret && e.store == store)
        .filter(|e| e.sets_value())
        .map(|e| e.time)
        .max()
}

/// The rotations of `env` that stopped after writing a new version and before
/// they completed (the rollout failed, an after hook failed, or the run was
/// cut short): secret → the version written, and when. A re-run of
/// rotate-secrets finishes these rather than rotating again. Lines written
/// before the tool logged `complete` end a rotation at `deploy ok` or, with
/// no rollout (reader delivery), at the store write: a store write counts as
/// unfinished only after the log's first `complete` line.
pub fn unfinished_rotations(
    log: &[Entry],
    env: &str,
) -> BTreeMap<String, (Option<u32>, SystemTime)> {
    let since = log
        .iter()
        .filter(|e| e.action == "complete")
        .map(|e| e.time)
        .min();
    let mut last: BTreeMap<&str, &Entry> = BTreeMap::new();
    for e in log
        .iter()
        .filter(|e| e.environment == env && e.command == "rotate-secrets")
    {
        last.insert(&e.secret, e);
    }
    last.into_iter()
        .filter(|(_, e)| match (e.action.as_str(), e.outcome) {
            ("create" | "update", Outcome::Ok) => since.is_some_and(|t| e.time >= t),
            ("deploy" | "complete", Outcome::Failed) => true,
            _ => false,
        })
        .map(|(s, e)| (s.to_string(), (e.version, e.time)))
        .collect()
}

/// Every entry of the old rotation log and the audit log, oldest first, and a
/// warning when lines were skipped.
pub fn read(root: &Path) -> Result<(Vec<Entry>, Option<String>)> {
    let mut all = Vec::new();
    let mut warnings = Vec::new();
    for rel in [OLD_PATH, PATH] {
        let p = root.join(rel);
        crate::disk::fsutil::refuse_symlink(&p, rel)?;
        if !p.exists() {
            continue;
        }
        let text = std::fs::read_to_string(&p)
            .with_context(|| format!("cannot read the audit log {rel}"))?;
        let (e, bad) = parse(&text);
        all.extend(e);
        if !bad.is_empty() {
            let fields = if rel == PATH {
                HEADER.trim_end().replace('\t', ", ")
            } else {
                OLD_HEADER.replace('\t', ", ")
            };
            let shown: Vec<String> = bad.iter().take(10).map(|n| format!("{rel}:{n}")).collect();
            warnings.push(format!(
                "skipped {} line(s) that do not parse: {}{}; each line needs {} tab-separated fields ({fields}) with an RFC 3339 time and an outcome of ok or failed. Fix those lines or delete them (an edit by hand or a merge conflict marker is the usual cause); ages from them are not used until then",
                bad.len(),
                shown.join(", "),
                if bad.len() > 10 { ", ..." } else { "" },
                fields.split(", ").count(),
            ));
        }
    }
    all.sort_by_key(|e| e.time);
    let warning = (!warnings.is_empty()).then(|| warnings.join("; "));
    Ok((all, warning))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sweep_removes_a_dead_runs_temporary_log_only() {
        let dir = crate::testutil::TempDir::new();
        let deploy = dir.path().join("deploy");
        std::fs::create_dir_all(&deploy).unwrap();
        // No process has pid 4194304 or more (the kernel's pid_max ceiling).
        let dead = deploy.join(".audit-log.tsv.tmp-4194304-9f");
        let live = deploy.join(format!(".audit-log.tsv.tmp-{}-a1", std::process::id()));
        let other = deploy.join(".secrets.toml.tmp-4194304-9f");
        for p in [&dead, &live, &other] {
            std::fs::write(p, HEADER).unwrap();
        }
        sweep(dir.path()).unwrap();
        assert!(!dead.exists());
        assert!(live.exists() && other.exists());
    }

    use super::*;
    use std::time::Duration;

    #[test]
    fn a_rotation_that_stopped_before_it_completed_is_unfinished() {
        let at = |n: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000 + n);
        let e = |n, env: &str, command: &str, action: &str, secret: &str, v, outcome| Entry {
            time: at(n),
            environment: env.into(),
            command: command.into(),
            action: action.into(),
            secret: secret.into(),
            version: v,
            operator: "op".into(),
            store: "k8s".into(),
            outcome,
        };
        use Outcome::{Failed, Ok};
        // Before the tool logged `complete`, a store write ended a reader
        // delivery's rotation.
        let old = [e(0, "p", "rotate-secrets", "update", "z", Some(2), Ok)];
        assert!(unfinished_rotations(&old, "p").is_empty());
        let log = vec![
            e(0, "p", "rotate-secrets", "update", "z", Some(2), Ok),
            // Finished: update, deploy, complete.
            e(1, "p", "rotate-secrets", "update", "a", Some(2), Ok),
            e(2, "p", "rotate-secrets", "deploy", "a", Some(2), Ok),
            e(3, "p", "rotate-secrets", "complete", "a", Some(2), Ok),
            // The rollout failed.
            e(4, "p", "rotate-secrets", "update", "b", Some(5), Ok),
            e(5, "p", "rotate-secrets", "deploy", "b", Some(5), Failed),
            // Cut short after the store write.
            e(6, "p", "rotate-secrets", "update", "c", None, Ok),
            // An after hook failed.
            e(7, "p", "rotate-secrets", "deploy", "d", Some(3), Ok),
            e(8, "p", "rotate-secrets", "complete", "d", Some(3), Failed),
            // An older log: deploy ok was the end.
            e(9, "p", "rotate-secrets", "deploy", "f", Some(7), Ok),
            // A failed hook before anything was swapped: nothing to finish.
            e(10, "p", "rotate-secrets", "update", "g", Some(4), Failed),
            // Other environments and commands do not count.
            e(11, "s", "rotate-secrets", "update", "h", Some(1), Ok),
            e(12, "p", "setup-secrets", "update", "i", Some(1), Ok),
        ];
        let got = unfinished_rotations(&log, "p");
        assert_eq!(
            got.into_iter()
                .map(|(k, (v, t))| (k, v, t))
                .collect::<Vec<_>>(),
            vec![
                ("b".to_string(), Some(5), at(5)),
                ("c".to_string(), None, at(6)),
                ("d".to_string(), Some(3), at(8)),
            ]
        );
    }

    #[test]
    fn lines_round_trip_and_carry_no_control_characters() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let text = lines(
            t,
            "production",
            "rotate-secrets",
            BackendKind::Swarm,
            "Ann\tB\nx <a@b>",
            &[
                Change::new("jwt_secret", "update", Some(3)),
                Change::new("api_key", "remove", None),
            ],
            Outcome::Failed,
        );
        assert_eq!(
            text.lines().next().unwrap(),
            "2026-11-18T11:06:40Z\tproduction\trotate-secrets\tupdate\tjwt_secret\tv3\tAnn B x <a@b>\tswarm\tfailed"
        );
        let (e, bad) = parse(&format!("{HEADER}{text}"));
        assert!(bad.is_empty());
        assert_eq!(e.len(), 2);
        assert_eq!(
            (e[0].version, e[0].outcome, e[1].version),
            (Some(3), Outcome::Failed, None)
        );
        assert!(!e[0].is_rotation());
    }

    #[test]
    fn the_old_rotation_log_reads_as_rotations() {
        let old = "time\tenvironment\tsecret\tversion\toperator\tbackend\n\
                   2026-01-02T03:04:05Z\tstaging\tpw\tv2\tann\tswarm\n\
                   garbage line\n";
        let (e, bad) = parse(old);
        assert_eq!(bad, vec![3], "the garbage is line 3");
        assert_eq!(e.len(), 1);
        let e = &e[0];
        assert_eq!(
            (
                e.environment.as_str(),
                e.secret.as_str(),
                e.version,
                e.store.as_str()
            ),
            ("staging", "pw", Some(2), "swarm")
        );
        assert!(e.is_rotation() && e.sets_value());
        assert_eq!(e.time, time::parse_rfc3339("2026-01-02T03:04:05Z").unwrap());
    }

    #[test]
    fn concurrent_appends_keep_every_line_whole() {
        let dir =
            std::env::temp_dir().join(format!("audit-{}", crate::model::secret::random_u64()));
        let path = dir.join("audit-log.tsv");
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for j in 0..50 {
                        let text = lines(
                            SystemTime::now(),
                            &format!("e{i}"),
                            "setup-secrets",
                            BackendKind::Compose,
                            "op",
                            &[Change::new(&format!("s{j}"), "create", Some(1))],
                            Outcome::Ok,
                        );
                        append(&path, text.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(HEADER), "{text}");
        assert_eq!(text.matches("time\t").count(), 1);
        let (e, bad) = parse(&text);
        assert_eq!((e.len(), bad.len()), (400, 0));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
