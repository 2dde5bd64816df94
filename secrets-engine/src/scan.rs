//! The scanner behind `scan`: looks for every current secret value of every
//! environment in what git holds, so a value committed by mistake is found
//! before it is pushed (the pre-commit hook) or after (history). Values are
//! read in this process and compared in memory: git is asked only for file
//! names and blob contents, through pipes, so no value ever reaches an
//! argument vector; findings name the place, the environment and the secret,
//! never the value, with the command that rotates it. The findings come back
//! as values; the command renders them.
//!
//! Every finding says how current its value is ([`Currency`]). A value an
//! env file holds now is "current now", since the audit log's last
//! successful store write of that secret in that environment (or "since when
//! is unknown" when the log has none). The tool keeps no superseded value on
//! this machine (an env file is rewritten in place, the compose store has no
//! versions, swarm secrets cannot be read back, backups are encrypted, and
//! the audit log records when a value changed, never the value); the one
//! place earlier values can be is git history, when an env file was
//! committed. So `--history` also reads every version of each env file that
//! history holds, and searches each earlier value as "superseded", last
//! current until the next version that changed it (or the audit log's next
//! store write of it, whichever came first).

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result, bail};
use zeroize::Zeroizing;

use crate::{
    disk::audit::{self, Entry},
    model::envfile::EnvFile,
    model::forms::forms,
    model::manifest::{Kind, Manifest},
    model::time,
    plan::resolve,
    tools::runner::Tool,
};

/// Values shorter than this are not searched: a short value (a user name, a
/// port) turns up by chance in ordinary text, and every finding would be
/// noise. The tool's own minimum for passwords and keys is 16.
pub const MIN_SCANNED: usize = 8;

/// How current a searched value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Currency {
    /// The env file holds it now; `since`: the audit log's last successful
    /// store write of the secret in the environment, when it has one.
    Current {
        /// When the store last received it, if logged.
        since: Option<SystemTime>,
    },
    /// An earlier value, from a version of the env file that git history
    /// holds; `until`: when it stopped being current, if known.
    Superseded {
        /// The next version's commit time, or the next logged store write.
        until: Option<SystemTime>,
    },
}

impl Currency {
    /// Pure: the words of a finding's line.
    pub fn words(self) -> String {
        match self {
            Currency::Current { since: Some(t) } => {
                format!("current now (since {})", time::rfc3339(t))
            }
            Currency::Current { since: None } => "current now (since when is unknown)".into(),
            Currency::Superseded { until: Some(t) } => {
                format!("superseded (last current until {})", time::rfc3339(t))
            }
            Currency::Superseded { until: None } => {
                "superseded (until when it was current is unknown)".into()
            }
        }
    }

    /// Whether the env file holds the value now.
    pub fn is_current(self) -> bool {
        matches!(self, Currency::Current { .. })
    }
}

/// One form of one value to look for.
pub struct Needle {
    /// The environment whose env file holds the value.
    pub env: String,
    /// The env file's key (`JWT_SECRET`).
    pub key: String,
    /// The manifest's name of the secret (what `rotate-secrets --secret`
    /// takes); `None` for the fingerprint key, which no command rotates.
    pub secret: Option<String>,
    /// The form looked for: `plain`, `base64` or `percent-encoded`.
    pub form: &'static str,
    /// Whether the value is the env file's now, or an earlier one.
    pub currency: Currency,
    bytes: Zeroizing<Vec<u8>>,
}

/// One place a needle was found: `file:line` or `commit X file:line`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    /// Where: `path:line`, or the commit and path that added it.
    pub place: String,
    /// The environment whose current value was found.
    pub env: String,
    /// The env file's key of the value.
    pub key: String,
    /// The form it was found in (see [`Needle::form`]).
    pub form: &'static str,
    /// The manifest's secret, for the rotate command; `None` for the fingerprint key.
    pub secret: Option<String>,
    /// Whether the value found is current, or was superseded (and until when).
    pub currency: Currency,
}

impl Finding {
    fn of(place: String, n: &Needle) -> Finding {
        Finding {
            place,
            env: n.env.clone(),
            key: n.key.clone(),
            form: n.form,
            secret: n.secret.clone(),
            currency: n.currency,
        }
    }

    /// Pure: the finding's line: how current the value is (since or until
    /// when), and for a current one what rotates it.
    pub fn line(&self) -> String {
        let fix = match (&self.secret, self.currency.is_current()) {
            (_, false) => format!(
                "already rotated: {}'s env file holds another value now (remove it from history if your policy asks)",
                self.env
            ),
            (Some(name), true) => format!(
                "rotate: `cargo xtask rotate-secrets {} --secret {name}`",
                self.env
            ),
            (None, true) => format!(
                "the key of {}'s fingerprints (no service reads it; nothing rotates it: see docs/operations.md)",
                self.env
            ),
        };
        format!(
            "{}: {} {} ({}), {}; {fix}",
            self.place,
            self.env,
            self.key,
            self.form,
            self.currency.words()
        )
    }
}

/// Pure: one `rotate-secrets` command per environment for every current
/// secret found (a superseded value is already rotated).
pub fn rotate_commands(findings: &BTreeSet<Finding>) -> Vec<String> {
    let mut by_env: std::collections::BTreeMap<&str, BTreeSet<&str>> = Default::default();
    for f in findings.iter().filter(|f| f.currency.is_current()) {
        if let Some(s) = &f.secret {
            by_env.entry(&f.env).or_default().insert(s);
        }
    }
    by_env
        .into_iter()
        .map(|(env, names)| {
            let args: Vec<String> = names.iter().map(|n| format!("--secret {n}")).collect();
            format!("cargo xtask rotate-secrets {env} {}", args.join(" "))
        })
        .collect()
}

/// Pure: when the audit log last saw `secret`'s value written to a store of
/// `env` (created or replaced, successfully), whichever store.
pub fn last_written(log: &[Entry], env: &str, secret: &str) -> Option<SystemTime> {
    log.iter()
        .filter(|e| e.environment == env && e.secret == secret && e.sets_value())
        .map(|e| e.time)
        .max()
}

/// Pure: the audit log's first successful store write of `secret` in `env`
/// after `t`: when a value current at `t` was replaced.
pub fn next_written(log: &[Entry], env: &str, secret: &str, t: SystemTime) -> Option<SystemTime> {
    log.iter()
        .filter(|e| e.environment == env && e.secret == secret && e.sets_value())
        .map(|e| e.time)
        .filter(|w| *w > t)
        .min()
}

/// Every value of every environment whose env file exists here, in each form.
/// Returns the needles, the number of values, the number skipped as short,
/// and what could not be read (each a message naming the key and place).
fn needles(
    root: &Path,
    manifest: &Manifest,
    log: &[Entry],
) -> Result<(Vec<Needle>, usize, usize, Vec<String>)> {
    let mut out = Vec::new();
    let (mut values, mut skipped) = (0, 0);
    let mut unread = Vec::new();
    for env in manifest.environments.values() {
        let (path, shown) = resolve::locate(root, env)?;
        if !path.is_file() {
            continue;
        }
        let file = EnvFile::load(&path, shown.clone())?;
        let base = path.parent().unwrap_or(root);
        let mut add = |key: String, secret: Option<&str>, value: &[u8]| {
            if value.len() < MIN_SCANNED {
                skipped += 1;
                return;
            }
            values += 1;
            let since = secret.and_then(|s| last_written(log, &env.name, s));
            for (form, bytes) in forms(value) {
                out.push(Needle {
                    env: env.name.clone(),
                    key: key.clone(),
                    secret: secret.map(str::to_string),
                    form,
                    currency: Currency::Current { since },
                    bytes,
                });
            }
        };
        if let Some(e) = file.get(resolve::FINGERPRINT_KEY) {
            add(resolve::FINGERPRINT_KEY.into(), None, e.value.expose());
        }
        for spec in manifest.secrets_for(&env.name) {
            let key = spec.env_key();
            let Some(e) = file.get(&key) else { continue };
            match spec.kind {
                // User names are not secret, and derived values are built
                // from parts that are searched themselves.
                Kind::Username | Kind::Derived => {}
                // An inline PEM is the value itself.
                Kind::File if resolve::inline_pem(e.value.expose()) => {
                    add(key, Some(&spec.name), e.value.expose())
                }
                Kind::File => {
                    let rel = e.value.expose_str().filter(|v| resolve::plausible_path(v));
                    let Some(rel) = rel else {
                        unread.push(format!(
                            "{}: {key} is neither a path nor a whole PEM block (the value is not shown); it is not searched",
                            file.at(&key)
                        ));
                        continue;
                    };
                    let p = base.join(rel);
                    match std::fs::read(&p) {
                        Ok(bytes) => add(key, Some(&spec.name), &Zeroizing::new(bytes)),
                        Err(err) => unread.push(format!(
                            "{}: {key} names {}, which cannot be read ({err}); it is not searched",
                            file.at(&key),
                            resolve::shown_file(rel, &p)
                        )),
                    }
                }
                _ => add(key, Some(&spec.name), e.value.expose()),
            }
        }
    }
    Ok((out, values, skipped, unread))
}

/// The values of one version of an env file, by key.
type Values = BTreeMap<String, Zeroizing<Vec<u8>>>;

/// Pure: a version of an env file read as dotenv, as [`EnvFile`] reads one
/// (a line that does not parse ends it).
fn parse_values(bytes: &[u8]) -> Values {
    dotenvy::from_read_iter(bytes)
        .map_while(|kv| kv.ok())
        .map(|(k, v)| (k, Zeroizing::new(v.into_bytes())))
        .collect()
}

/// Pure: `git log --format='%H %ct' --raw --no-abbrev -- PATH` output (one
/// path) as each commit that changed the path, oldest first: its commit
/// time and the path's new blob (`None` where the commit deleted it).
fn path_versions(log: &str) -> Vec<(SystemTime, Option<String>)> {
    let mut out: Vec<(SystemTime, Option<String>)> = Vec::new();
    let mut at = None;
    for l in log.lines() {
        if let Some(raw) = l.strip_prefix(':') {
            let meta = raw.split('\t').next().unwrap_or_default();
            let mut f = meta.split(' ');
            let (new, status) = (f.nth(3), f.next());
            if let Some(t) = at.take() {
                let blob = (status != Some("D")).then(|| new.unwrap_or_default().to_string());
                out.push((t, blob));
            }
        } else if let Some((_, secs)) = l.split_once(' ') {
            at = secs
                .trim()
                .parse::<u64>()
                .ok()
                .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        }
    }
    // git lists newest first; equal times keep git's order, reversed.
    out.reverse();
    out.sort_by_key(|(t, _)| *t);
    out
}

/// One key an env file may hold, as searched.
struct Key {
    key: String,
    secret: Option<String>,
    /// A file secret: its value is a path, searched only when it is a whole PEM.
    file: bool,
}

/// Pure: each earlier value of each key over an env file's versions
/// (oldest first) that differs from the current one, with until when it was
/// current: the next version that holds another value for the key, or the
/// audit log's next store write of the secret, whichever came first; `None`
/// when neither is known. A value current more than once counts its last time.
fn superseded_values(
    env: &str,
    versions: &[(SystemTime, Values)],
    keys: &[Key],
    current: &Values,
    log: &[Entry],
) -> Vec<(usize, Option<SystemTime>, Zeroizing<Vec<u8>>)> {
    let mut out: Vec<(usize, Option<SystemTime>, Zeroizing<Vec<u8>>)> = Vec::new();
    for (k, key) in keys.iter().enumerate() {
        for (i, (t, values)) in versions.iter().enumerate() {
            let Some(v) = values.get(&key.key) else {
                continue;
            };
            if v.len() < MIN_SCANNED
                || current.get(&key.key) == Some(v)
                || (key.file && !resolve::inline_pem(v))
            {
                continue;
            }
            let next_version = versions[i + 1..]
                .iter()
                .find(|(_, later)| later.get(&key.key).is_some_and(|w| w != v))
                .map(|(t, _)| *t);
            let next_write = key
                .secret
                .as_deref()
                .and_then(|s| next_written(log, env, s, *t));
            let until = match (next_version, next_write) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match out.iter_mut().find(|(kk, _, val)| *kk == k && val == v) {
                Some(seen) => {
                    seen.1 = match (seen.1, until) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        _ => None,
                    }
                }
                None => out.push((k, until, v.clone())),
            }
        }
    }
    out
}

/// The earlier values of every environment whose env file exists here, from
/// the versions of it that git history holds (if it was ever committed), in
/// each form, as superseded needles.
fn superseded(git: &Tool, root: &Path, manifest: &Manifest, log: &[Entry]) -> Result<Vec<Needle>> {
    let mut out = Vec::new();
    for env in manifest.environments.values() {
        let (path, shown) = resolve::locate(root, env)?;
        if !path.is_file() {
            continue;
        }
        let now = EnvFile::load(&path, shown)?;
        let current: Values = now
            .entries
            .iter()
            .map(|(k, e)| (k.clone(), Zeroizing::new(e.value.expose().to_vec())))
            .collect();
        let mut keys = vec![Key {
            key: resolve::FINGERPRINT_KEY.into(),
            secret: None,
            file: false,
        }];
        for spec in manifest.secrets_for(&env.name) {
            if !matches!(spec.kind, Kind::Username | Kind::Derived) {
                keys.push(Key {
                    key: spec.env_key(),
                    secret: Some(spec.name.clone()),
                    file: spec.kind == Kind::File,
                });
            }
        }
        let paths: Vec<String> = match &env.env_file {
            // Outside the repository, git holds no version of it.
            Some(p)
                if p.is_relative()
                    && !p.components().any(|c| c == std::path::Component::ParentDir) =>
            {
                vec![p.display().to_string()]
            }
            Some(_) => continue,
            None => vec![
                format!("secrets/{}.env", env.name),
                format!("secrets-{}.env", env.name),
            ],
        };
        for rel in paths {
            let listed = git.read(
                &[
                    "log",
                    "--all",
                    "--format=%H %ct",
                    "--raw",
                    "--no-abbrev",
                    "--no-renames",
                    "--",
                    &rel,
                ],
                "run the scan inside a git repository with at least one commit",
            )?;
            let changes = path_versions(&listed);
            let blobs: Vec<(String, usize)> = changes
                .iter()
                .enumerate()
                .filter_map(|(i, (_, b))| b.clone().map(|b| (b, i)))
                .collect();
            let mut versions: Vec<(SystemTime, Values)> = Vec::new();
            cat_blobs(git, root, &blobs, |(_, i), bytes| {
                versions.push((changes[*i].0, parse_values(bytes)));
            })?;
            for (k, until, value) in superseded_values(&env.name, &versions, &keys, &current, log) {
                for (form, bytes) in forms(&value) {
                    out.push(Needle {
                        env: env.name.clone(),
                        key: keys[k].key.clone(),
                        secret: keys[k].secret.clone(),
                        form,
                        currency: Currency::Superseded { until },
                        bytes,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Finds needles in text, Wu-Manber style (std only): every needle is at
/// least `m` bytes long, so a window of `m` bytes is judged by its last two:
/// when that pair occurs in no needle's first `m` bytes, the window moves on
/// by up to `m - 1` bytes at once; only where a pair could end a needle's
/// start are the needles with that first byte compared. Line numbers are
/// counted only up to a match. Ordinary text moves several bytes a step, which
/// matters most in the unoptimised build `cargo xtask` runs.
pub struct Matcher<'a> {
    by_first: Vec<Vec<&'a Needle>>,
    /// The shortest needle's length (0: no needle).
    m: usize,
    /// How far a window may move when its last two bytes are `a`, `b`
    /// (index `a << 8 | b`); 0 means "compare here".
    shift: Vec<u8>,
}

impl<'a> Matcher<'a> {
    /// A matcher for every form of every needle, built once per scan.
    pub fn new(needles: &'a [Needle]) -> Matcher<'a> {
        let mut by_first: Vec<Vec<&Needle>> = vec![Vec::new(); 256];
        let live: Vec<&Needle> = needles.iter().filter(|n| !n.bytes.is_empty()).collect();
        for n in &live {
            by_first[n.bytes[0] as usize].push(n);
        }
        let m = live.iter().map(|n| n.bytes.len()).min().unwrap_or(0);
        // Pairs need two bytes; a shorter needle is compared at every byte.
        let most = m.saturating_sub(1).min(u8::MAX as usize) as u8;
        let mut shift = vec![most; 1 << 16];
        if m >= 2 {
            for n in &live {
                for j in 0..m - 1 {
                    let pair = (n.bytes[j] as usize) << 8 | n.bytes[j + 1] as usize;
                    let s = (m - 2 - j).min(most as usize) as u8;
                    shift[pair] = shift[pair].min(s);
                }
            }
        }
        Matcher { by_first, m, shift }
    }

    /// Each needle found in `text`, with the 1-based line of its first match.
    pub fn find(&self, text: &[u8]) -> Vec<(usize, &'a Needle)> {
        let mut out: Vec<(usize, &Needle)> = Vec::new();
        let (mut line, mut counted) = (1, 0);
        let mut i = 0;
        while self.m > 0 && i + self.m <= text.len() {
            if self.m >= 2 {
                let end = i + self.m;
                let s = self.shift[(text[end - 2] as usize) << 8 | text[end - 1] as usize];
                if s > 0 {
                    i += s as usize;
                    continue;
                }
            }
            for n in &self.by_first[text[i] as usize] {
                if text[i..].starts_with(&n.bytes) && !out.iter().any(|(_, m)| std::ptr::eq(*m, *n))
                {
                    line += text[counted..i].iter().filter(|&&b| b == b'\n').count();
                    counted = i;
                    out.push((line, n));
                }
            }
            i += 1;
        }
        out
    }
}

fn record(out: &mut Vec<Finding>, place: impl Fn(usize) -> String, hits: Vec<(usize, &Needle)>) {
    for (line, n) in hits {
        out.push(Finding::of(place(line), n));
    }
}

/// The working-tree content of every tracked file.
fn tracked(git: &Tool, root: &Path, m: &Matcher) -> Result<Vec<Finding>> {
    let list = git.read(
        &["ls-files", "-z"],
        "run the scan inside the git repository",
    )?;
    let mut out = Vec::new();
    for rel in list.split('\0').filter(|p| !p.is_empty()) {
        let p = root.join(rel);
        // A tracked link holds only its target's name (git stores no more);
        // following it could read files outside the repository.
        if !std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()) {
            continue;
        }
        let bytes =
            Zeroizing::new(std::fs::read(&p).with_context(|| format!("cannot read {rel}"))?);
        record(&mut out, |l| format!("{rel}:{l}"), m.find(&bytes));
    }
    Ok(out)
}

/// The staged version of every added, copied, modified or renamed file.
fn staged(git: &Tool, root: &Path, m: &Matcher) -> Result<Vec<Finding>> {
    let raw = git.read(
        &[
            "diff",
            "--cached",
            "--raw",
            "-z",
            "--no-abbrev",
            "--diff-filter=ACMRT",
        ],
        "run the scan inside the git repository",
    )?;
    let mut blobs: Vec<(String, String)> = Vec::new();
    let mut it = raw.split('\0').filter(|s| !s.is_empty());
    while let Some(meta) = it.next() {
        let fields: Vec<&str> = meta.trim_start_matches(':').split(' ').collect();
        let (Some(sha), Some(status)) = (fields.get(3), fields.get(4)) else {
            bail!("unexpected `git diff --cached --raw` output");
        };
        if status.starts_with('R') || status.starts_with('C') {
            it.next();
        }
        let path = it.next().context("`git diff --raw` gave no path")?;
        blobs.push((sha.to_string(), path.to_string()));
    }
    let mut out = Vec::new();
    cat_blobs(git, root, &blobs, |(_, path), bytes| {
        record(&mut out, |l| format!("{path}:{l} (staged)"), m.find(bytes));
    })?;
    Ok(out)
}

/// Every blob of every commit reachable from any ref, each read once, and
/// for each finding the commit that first added that blob.
fn history(git: &Tool, root: &Path, m: &Matcher) -> Result<Vec<Finding>> {
    let list = git.read(
        &[
            "rev-list",
            "--all",
            "--objects",
            "--filter=object:type=blob",
        ],
        "run the scan inside a git repository with at least one commit",
    )?;
    let blobs: Vec<(String, String)> = list
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(sha, path)| (sha.to_string(), path.to_string()))
        .collect();
    let mut hits: Vec<(String, String, usize, &Needle)> = Vec::new();
    cat_blobs(git, root, &blobs, |(sha, path), bytes| {
        for (line, n) in m.find(bytes) {
            hits.push((sha.clone(), path.clone(), line, n));
        }
    })?;
    if hits.is_empty() {
        return Ok(Vec::new());
    }
    let wanted: BTreeSet<&str> = hits.iter().map(|h| h.0.as_str()).collect();
    let log = git.read(
        &[
            "log",
            "--all",
            "--reverse",
            "--format=%H",
            "--raw",
            "--no-abbrev",
            "--no-renames",
        ],
        "run the scan inside a git repository with at least one commit",
    )?;
    let added = additions(&log, &wanted);
    // `--no-abbrev` gives full commit ids too: git's own short forms, in one
    // call with the ids on stdin.
    let full: BTreeSet<&str> = added.values().flatten().map(|(c, _)| *c).collect();
    let ids: String = full.iter().map(|c| format!("{c}\n")).collect();
    let pairs = git.run_with_stdin(
        &["log", "--stdin", "--no-walk=unsorted", "--format=%H %h"],
        ids.as_bytes(),
        "",
    )?;
    let short: std::collections::HashMap<&str, &str> =
        pairs.lines().filter_map(|l| l.split_once(' ')).collect();
    let mut out = Vec::new();
    for (sha, path, line, n) in hits {
        match added.get(sha.as_str()) {
            Some(places) => {
                for (commit, path) in places {
                    let commit = short.get(commit).copied().unwrap_or(commit);
                    out.push(Finding::of(format!("commit {commit} {path}:{line}"), n));
                }
            }
            // Reachable, but no commit's own diff adds it (a merge's
            // resolution): the place is known, the commit is not.
            None => out.push(Finding::of(format!("commit ? {path}:{line}"), n)),
        }
    }
    Ok(out)
}

/// Pure: for each wanted blob, every commit and path in `git log --reverse
/// --format=%H --raw --no-abbrev` output whose diff adds a file with that
/// content or changes one to it, oldest first: each place a value entered
/// history (as `git log --find-object` names them, for every blob in one pass).
fn additions<'a>(
    log: &'a str,
    wanted: &BTreeSet<&str>,
) -> std::collections::HashMap<&'a str, Vec<(&'a str, &'a str)>> {
    let mut added: std::collections::HashMap<&str, Vec<(&str, &str)>> = Default::default();
    let mut commit = "?";
    for l in log.lines() {
        if let Some(raw) = l.strip_prefix(':') {
            // `:old-mode new-mode old-sha new-sha status\tpath`
            let Some((meta, path)) = raw.split_once('\t') else {
                continue;
            };
            let mut f = meta.split(' ');
            let (new, status) = (f.nth(3), f.next());
            if let Some(new) = new
                && wanted.contains(new)
                && status != Some("D")
            {
                added.entry(new).or_default().push((commit, path));
            }
        } else if !l.is_empty() {
            commit = l;
        }
    }
    added
}

/// Reads blobs through one `git cat-file --batch` pipe: ids on its stdin,
/// contents from its stdout, never a value on argv or in a file.
fn cat_blobs<T>(
    git: &Tool,
    root: &Path,
    blobs: &[(String, T)],
    mut each: impl FnMut(&(String, T), &[u8]),
) -> Result<()> {
    if blobs.is_empty() {
        return Ok(());
    }
    let mut child = git
        .spawn(&["cat-file", "--batch"])?
        .dir(root)
        .streams(Stdio::piped(), Stdio::piped(), Stdio::inherit())
        .start()
        .context("cannot start `git cat-file --batch`")?;
    let mut stdin = child.stdin.take().context("git's stdin")?;
    let ids: String = blobs.iter().map(|(s, _)| format!("{s}\n")).collect();
    let writer = std::thread::spawn(move || stdin.write_all(ids.as_bytes()));
    let mut r = BufReader::new(child.stdout.take().context("git's stdout")?);
    let mut body = Zeroizing::new(Vec::new());
    for b in blobs {
        let mut header = String::new();
        r.read_line(&mut header)?;
        let mut f = header.split_whitespace();
        let (_, kind, size) = (f.next(), f.next(), f.next());
        let Some(size) = size.and_then(|s| s.parse::<usize>().ok()) else {
            bail!(
                "`git cat-file --batch` gave no content for {} ({})",
                b.0,
                header.trim()
            );
        };
        // One buffer for every blob, zeroed once at the end (and when it is
        // replaced by a larger one), not once per blob.
        if body.len() < size + 1 {
            body = Zeroizing::new(vec![0u8; (size + 1).next_power_of_two()]);
        }
        r.read_exact(&mut body[..size + 1])?;
        if kind == Some("blob") {
            each(b, &body[..size]);
        }
    }
    let _ = writer.join();
    child.wait()?;
    Ok(())
}

const HOOK: &str = "#!/bin/sh\n# Installed by `cargo xtask scan --install-hook`: refuses a commit whose\n# staged changes hold a current secret value (never printed).\nexec cargo xtask scan --staged\n";

/// What [`install_hook`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// The hook was already there, as written.
    Already(PathBuf),
    /// The hook was written here.
    Now(PathBuf),
}

/// Writes the pre-commit hook; an existing different hook is left alone.
pub fn install_hook(git: &Tool, root: &Path) -> Result<Installed> {
    let rel = git.read(
        &["rev-parse", "--git-path", "hooks/pre-commit"],
        "run it inside the git repository",
    )?;
    let path = root.join(rel.trim());
    match std::fs::read_to_string(&path) {
        Ok(t) if t == HOOK => return Ok(Installed::Already(path)),
        Ok(_) => bail!(
            "{} already exists and is a different hook; it was left as it is. Add the line `cargo xtask scan --staged` to it, or move it away and run `cargo xtask scan --install-hook` again",
            path.display()
        ),
        Err(_) => {}
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::disk::fsutil::write_atomic(&path, HOOK.as_bytes(), 0o755, None)?;
    Ok(Installed::Now(path))
}

/// What a scan looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// The working-tree content of every tracked file.
    Tracked,
    /// The staged changes (the pre-commit hook).
    Staged,
    /// The tracked files and every blob of every commit.
    History,
}

impl Range {
    /// How the findings' line names what was searched.
    pub fn what(self) -> &'static str {
        match self {
            Range::Tracked => "the tracked files",
            Range::Staged => "the staged changes",
            Range::History => "the tracked files and every commit",
        }
    }
}

/// What a scan found, and what it searched.
#[derive(Debug, Default)]
pub struct Report {
    /// Each place a current value was found.
    pub findings: BTreeSet<Finding>,
    /// How many values were searched.
    pub values: usize,
    /// How many forms of them were searched.
    pub forms: usize,
    /// How many values were too short to search.
    pub skipped: usize,
    /// How many earlier values, from env files' versions in history, were
    /// searched too (`--history` only).
    pub superseded: usize,
    /// What could not be read, so was not searched (a message each).
    pub unread: Vec<String>,
}

/// The git the scanner asks: `$GIT` or `git` on PATH.
pub fn git() -> Result<Tool> {
    Tool::find("git", "GIT", "install it (Debian: `apt-get install git`)")
}

/// Searches `range` of the repository at `root` for every current value of
/// every environment whose env file is here (and under [`Range::History`],
/// every earlier value its versions in history hold). With no value to
/// search, git is not asked and the report holds no findings.
pub fn scan(git: &Tool, root: &Path, manifest: &Manifest, range: Range) -> Result<Report> {
    // The log dates values; one that cannot be read leaves them undated.
    let (log, _) = audit::read(root).unwrap_or_default();
    let (mut needles, values, skipped, unread) = needles(root, manifest, &log)?;
    let mut report = Report {
        values,
        forms: needles.len(),
        skipped,
        unread,
        ..Default::default()
    };
    if values == 0 {
        return Ok(report);
    }
    if range == Range::History {
        let old = superseded(git, root, manifest, &log)?;
        report.superseded = old.iter().filter(|n| n.form == "plain").count();
        needles.extend(old);
    }
    let matcher = Matcher::new(&needles);
    let findings = match range {
        Range::Staged => staged(git, root, &matcher)?,
        Range::History => {
            let mut f = tracked(git, root, &matcher)?;
            f.extend(history(git, root, &matcher)?);
            f
        }
        Range::Tracked => tracked(git, root, &matcher)?,
    };
    report.findings = findings.into_iter().collect();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use base64::Engine;

    use super::*;

    fn needle(v: &[u8]) -> Vec<Needle> {
        forms(v)
            .into_iter()
            .map(|(form, bytes)| Needle {
                env: "e".into(),
                key: "K".into(),
                secret: Some("k".into()),
                form,
                currency: Currency::Current { since: None },
                bytes,
            })
            .collect()
    }

    #[test]
    fn base64_is_found_at_every_alignment_inside_longer_text() {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE};
        let v = b"s3cr3t/value+with?odd>bytes~~";
        let ns = needle(v);
        let m = Matcher::new(&ns);
        for prefix in 0..6 {
            let mut data = b"prefix-bytes".to_vec()[..prefix].to_vec();
            data.extend_from_slice(v);
            data.extend_from_slice(b" and more after it");
            for e in [STANDARD, URL_SAFE] {
                let text = format!("data: {}\n", e.encode(&data));
                let hits = m.find(text.as_bytes());
                assert!(
                    hits.iter().any(|(_, n)| n.form == "base64"),
                    "prefix {prefix}: {text}"
                );
            }
        }
        let hits = m.find(b"line1\nurl=postgres://u:s3cr3t%2Fvalue%2Bwith%3Fodd%3Ebytes~~@h\n");
        assert_eq!(hits.len(), 1);
        assert_eq!((hits[0].0, hits[0].1.form), (2, "percent-encoded"));
        let hits = m.find(b"a\nb\nc s3cr3t/value+with?odd>bytes~~\n");
        assert_eq!((hits[0].0, hits[0].1.form), (3, "plain"));
        assert!(m.find(b"s3cr3t/value+with?odd>bytes~").is_empty());
        // Lower-case hex escapes are the same URL.
        let hits = m.find(b"url=postgres://u:s3cr3t%2fvalue%2bwith%3fodd%3ebytes~~@h\n");
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].1.form, "percent-encoded");
    }

    /// The skipping search finds exactly what comparing at every byte finds,
    /// with the same lines, on seeded random text over a small alphabet (so
    /// needles' pairs are common and partial matches abound).
    #[test]
    fn the_skipping_search_agrees_with_comparing_at_every_byte() {
        let mut seed: u64 = 0x5eed_2026;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        for round in 0..300 {
            let alphabet = b"ab\ncd";
            let mut word = |len: usize| -> Vec<u8> {
                (0..len)
                    .map(|_| alphabet[next(alphabet.len() as u64) as usize])
                    .collect()
            };
            let ns: Vec<Needle> = (0..1 + round % 4)
                .map(|k| Needle {
                    env: "e".into(),
                    key: format!("K{k}"),
                    secret: None,
                    form: "plain",
                    currency: Currency::Current { since: None },
                    bytes: Zeroizing::new(word(1 + (round + k * 3) % 9)),
                })
                .collect();
            let text = word(round % 97);
            let mut naive: Vec<(usize, &str)> = Vec::new();
            for n in &ns {
                if let Some(at) = text.windows(n.bytes.len()).position(|w| w == &n.bytes[..]) {
                    let line = 1 + text[..at].iter().filter(|&&b| b == b'\n').count();
                    naive.push((line, &n.key));
                }
            }
            let m = Matcher::new(&ns);
            let mut got: Vec<(usize, &str)> = m
                .find(&text)
                .into_iter()
                .map(|(l, n)| (l, n.key.as_str()))
                .collect();
            naive.sort();
            got.sort();
            assert_eq!(got, naive, "round {round}");
        }
    }

    #[test]
    fn every_commit_that_adds_a_blob_comes_from_one_log() {
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        let z = "0".repeat(40);
        let log = format!(
            "1111111\n\n:000000 100644 {z} {a} A\tx.env\n2222222\n\n:100644 100644 {a} {b} M\tx.env\n:000000 100644 {z} {a} A\tcopy.env\n3333333\n"
        );
        let wanted: BTreeSet<&str> = [a.as_str(), b.as_str(), "c"].into();
        let added = additions(&log, &wanted);
        assert_eq!(
            added[a.as_str()],
            [("1111111", "x.env"), ("2222222", "copy.env")]
        );
        assert_eq!(added[b.as_str()], [("2222222", "x.env")]);
        assert_eq!(added.get("c"), None);
    }

    #[test]
    fn a_finding_names_the_command_that_rotates_it() {
        let f = |env: &str, key: &str, secret: Option<&str>| Finding {
            place: "a.txt:1".into(),
            env: env.into(),
            key: key.into(),
            form: "plain",
            secret: secret.map(str::to_string),
            currency: Currency::Current { since: None },
        };
        assert_eq!(
            f("develop", "JWT_SECRET", Some("jwt_secret")).line(),
            "a.txt:1: develop JWT_SECRET (plain), current now (since when is unknown); rotate: `cargo xtask rotate-secrets develop --secret jwt_secret`"
        );
        let t = time::parse_rfc3339("2026-03-01T10:00:00Z").unwrap();
        let mut since = f("develop", "JWT_SECRET", Some("jwt_secret"));
        since.currency = Currency::Current { since: Some(t) };
        assert_eq!(
            since.line(),
            "a.txt:1: develop JWT_SECRET (plain), current now (since 2026-03-01T10:00:00Z); rotate: `cargo xtask rotate-secrets develop --secret jwt_secret`"
        );
        let mut old = f("develop", "JWT_SECRET", Some("jwt_secret"));
        old.currency = Currency::Superseded { until: Some(t) };
        assert_eq!(
            old.line(),
            "a.txt:1: develop JWT_SECRET (plain), superseded (last current until 2026-03-01T10:00:00Z); already rotated: develop's env file holds another value now (remove it from history if your policy asks)"
        );
        // A superseded value needs no rotation: no command for it.
        assert!(rotate_commands(&[old].into()).is_empty());
        assert!(
            f("develop", "XTASK_FINGERPRINT_KEY", None)
                .line()
                .contains("nothing rotates it")
        );
        let all: BTreeSet<Finding> = [
            f("develop", "JWT_SECRET", Some("jwt_secret")),
            f("develop", "REDIS_PASSWORD", Some("redis_password")),
            f("staging", "JWT_SECRET", Some("jwt_secret")),
            f("staging", "XTASK_FINGERPRINT_KEY", None),
        ]
        .into();
        assert_eq!(
            rotate_commands(&all),
            [
                "cargo xtask rotate-secrets develop --secret jwt_secret --secret redis_password",
                "cargo xtask rotate-secrets staging --secret jwt_secret",
            ]
        );
    }

    fn at(s: &str) -> SystemTime {
        time::parse_rfc3339(s).unwrap()
    }

    fn entry(t: &str, secret: &str, action: &str) -> Entry {
        audit::parse(&format!(
            "{t}\tdevelop\tsetup-secrets\t{action}\t{secret}\t\top\tcompose\tok\n"
        ))
        .0
        .remove(0)
    }

    #[test]
    fn versions_of_a_path_come_oldest_first_with_their_times() {
        let (a, b, z) = ("a".repeat(40), "b".repeat(40), "0".repeat(40));
        // git log: newest first.
        let log = format!(
            "3333 300\n\n:100644 000000 {b} {z} D\tsecrets/develop.env\n2222 200\n\n:100644 100644 {a} {b} M\tsecrets/develop.env\n1111 100\n\n:000000 100644 {z} {a} A\tsecrets/develop.env\n"
        );
        let v = path_versions(&log);
        let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        let got: Vec<(u64, Option<String>)> = v.into_iter().map(|(t, b)| (secs(t), b)).collect();
        assert_eq!(got, [(100, Some(a)), (200, Some(b)), (300, None)]);
        let vals = parse_values(b"# c\nJWT_SECRET='old-jwt-value-1'\nX=1\n");
        assert_eq!(&vals["JWT_SECRET"][..], b"old-jwt-value-1");
    }

    #[test]
    fn an_earlier_value_is_dated_until_the_next_change_or_store_write() {
        let v = |pairs: &[(&str, &str)]| -> Values {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Zeroizing::new(v.as_bytes().to_vec())))
                .collect()
        };
        let versions = vec![
            (
                at("2026-01-01T00:00:00Z"),
                v(&[
                    ("JWT_SECRET", "jwt-first-value"),
                    ("REDIS_PASSWORD", "redis-old-value"),
                ]),
            ),
            (
                at("2026-02-01T00:00:00Z"),
                v(&[
                    ("JWT_SECRET", "jwt-second-value"),
                    ("REDIS_PASSWORD", "redis-old-value"),
                ]),
            ),
        ];
        let keys = vec![
            Key {
                key: "JWT_SECRET".into(),
                secret: Some("jwt_secret".into()),
                file: false,
            },
            Key {
                key: "REDIS_PASSWORD".into(),
                secret: Some("redis_password".into()),
                file: false,
            },
        ];
        let current = v(&[
            ("JWT_SECRET", "jwt-second-value"),
            ("REDIS_PASSWORD", "redis-new-value"),
        ]);
        let log = vec![
            entry("2025-12-31T00:00:00Z", "redis_password", "create"),
            entry("2026-03-01T00:00:00Z", "redis_password", "update"),
            entry("2026-02-15T00:00:00Z", "jwt_secret", "update"),
        ];
        let got: Vec<(usize, Option<String>, Vec<u8>)> =
            superseded_values("develop", &versions, &keys, &current, &log)
                .into_iter()
                .map(|(k, t, val)| (k, t.map(time::rfc3339), val.to_vec()))
                .collect();
        assert_eq!(
            got,
            [
                // The next version changed it (before the logged write).
                (
                    0,
                    Some("2026-02-01T00:00:00Z".into()),
                    b"jwt-first-value".to_vec()
                ),
                // No version changed it: the logged write after it did.
                (
                    1,
                    Some("2026-03-01T00:00:00Z".into()),
                    b"redis-old-value".to_vec()
                ),
            ]
        );
        // No log, no later version: unknown.
        let got = superseded_values("develop", &versions[1..], &keys, &current, &[]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, None);
        assert_eq!(
            last_written(&log, "develop", "redis_password").map(time::rfc3339),
            Some("2026-03-01T00:00:00Z".into())
        );
        assert_eq!(last_written(&log, "staging", "redis_password"), None);
    }

    #[test]
    fn a_multi_line_value_is_found_under_either_line_ending() {
        let pem = b"-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49\n-----END PRIVATE KEY-----\n";
        let ns = needle(pem);
        let m = Matcher::new(&ns);
        let crlf = b"x\r\n-----BEGIN PRIVATE KEY-----\r\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49\r\n-----END PRIVATE KEY-----\r\n";
        let hits = m.find(crlf);
        assert_eq!(hits.len(), 1, "CRLF copy not found");
        assert_eq!((hits[0].0, hits[0].1.form), (2, "line endings changed"));
        // And a value written with CRLF is found where it was committed with LF.
        let ns = needle(&crlf[3..]);
        let m = Matcher::new(&ns);
        let mut lf = b"a\n".to_vec();
        lf.extend_from_slice(pem);
        assert_eq!(m.find(&lf).len(), 1, "LF copy not found");
    }
}
