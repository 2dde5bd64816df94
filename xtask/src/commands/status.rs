//! `status [ENV...] [--check] [--json]`: one table across environments of
//! every secret's store, version, age, last rotation, days until the rotation
//! policy says it is due, the services that use it, and drift (the env file
//! against the store, and keys one environment has and another lacks).
//!
//! Gathering (stores, env files, runtimes) is kept apart from deciding:
//! [`report`] turns plain data into rows and findings and is unit-tested.
//! An environment that cannot be read gets a note and a finding, never an
//! abort of the whole table. Values are only fingerprinted, never shown.

use std::{
    collections::BTreeSet,
    path::Path,
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result, bail};

use super::list_secrets::{self, State};
use secrets_engine::runtime::drift::{self, Running, SecretRuntime};
use secrets_engine::session::Session;

use crate::{flags::EnvArgs, output};
use secrets_engine::{
    disk::audit::{self, Entry},
    model::envfile::EnvFile,
    model::manifest::{Kind, Manifest},
    model::time,
    plan::resolve,
    plan::{self, Stored, Users},
};

const DAY: u64 = 86_400;

/// One manifest secret of one environment, as the policy sees it.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub name: String,
    pub services: Vec<String>,
    pub rotate_every_days: Option<u32>,
    /// Whether the env file holds it (derived values are rebuilt, not kept).
    pub in_env_file: bool,
    /// The services that keep their own copy (`kept_by`): not drift when
    /// they run an older version.
    pub kept_by: Vec<String>,
}

/// What was read about one environment.
#[derive(Debug, Clone, Default)]
pub struct EnvView {
    pub name: String,
    pub store: String,
    pub runtime: String,
    /// The env file, for messages.
    pub env_file: String,
    /// Why the store could not be read; nothing else is known then.
    pub unreachable: Option<String>,
    /// Why the env file, which exists, could not be read or validated: its
    /// values were not compared with the store (a finding: "could not look").
    pub env_unreadable: Option<String>,
    pub notes: Vec<String>,
    /// Whether the store's creation times date the values (see `SecretStore::dates_values`).
    pub store_dates_values: bool,
    pub secrets: Vec<Wanted>,
    pub listed: Vec<Stored>,
    /// Secret → fingerprint of the env file's value, when it could be read.
    pub fingerprints: Option<Vec<(String, String)>>,
    /// The secrets whose keys the env file holds, when it exists and reads.
    pub env_keys: Option<BTreeSet<String>>,
    pub users: Option<Users>,
    /// What the runtime runs and mounts, when it could be asked.
    pub running: Option<Vec<Running>>,
    /// Why the runtime could not be asked which versions run: a finding.
    pub runtime_unreachable: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub time: SystemTime,
    pub operator: String,
    pub command: String,
}

#[derive(Debug, Clone)]
pub struct Row {
    pub environment: String,
    pub secret: String,
    pub store: String,
    pub state: State,
    pub version: Option<u32>,
    pub location: String,
    /// When the current value was set, and who says so.
    pub created: Option<SystemTime>,
    pub age_source: Option<&'static str>,
    pub age: Option<Duration>,
    pub rotate_every_days: Option<u32>,
    /// Whole days until due (the policy less the age in whole days; 0 is due
    /// today, negative overdue), when a policy and an age are known.
    pub due_in_days: Option<i64>,
    pub last_rotation: Option<Rotation>,
    pub services: Vec<String>,
    pub used_by: Option<Vec<String>>,
    /// Who runs which version, when the runtime could be asked.
    pub runtime: Option<SecretRuntime>,
}

impl Row {
    pub fn overdue(&self) -> bool {
        self.due_in_days.is_some_and(|d| d < 0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `overdue`, `missing`, `drift`, `runtime-drift`, `unfinished`,
    /// `unreachable` or `unreadable`.
    pub kind: &'static str,
    pub environment: String,
    pub secret: Option<String>,
    pub message: String,
}

impl Finding {
    /// The one line `--check` prints for it.
    pub fn line(&self) -> String {
        match &self.secret {
            Some(s) => format!("{}: {} {s}: {}", self.kind, self.environment, self.message),
            None => format!("{}: {}: {}", self.kind, self.environment, self.message),
        }
    }
}

pub struct Report {
    pub rows: Vec<Row>,
    pub findings: Vec<Finding>,
}

/// Pure: rows and findings from what was read, the audit log and the time.
pub fn report(views: &[EnvView], log: &[Entry], now: SystemTime) -> Report {
    let mut rows = Vec::new();
    let mut findings = Vec::new();
    for v in views {
        if let Some(why) = &v.unreachable {
            findings.push(Finding {
                kind: "unreachable",
                environment: v.name.clone(),
                secret: None,
                message: format!(
                    "the {} store could not be read ({why}); nothing checked",
                    v.store
                ),
            });
            continue;
        }
        if let Some(why) = &v.env_unreadable {
            findings.push(Finding {
                kind: "unreadable",
                environment: v.name.clone(),
                secret: None,
                message: format!(
                    "{} could not be read ({why}); no value of it was compared with the store: fix the file, then run status again",
                    v.env_file
                ),
            });
        }
        if let Some(why) = &v.runtime_unreachable {
            findings.push(Finding {
                kind: "unreachable",
                environment: v.name.clone(),
                secret: None,
                message: format!(
                    "the {} runtime could not be asked which secret versions run ({why}); runtime drift not checked",
                    v.runtime
                ),
            });
        }
        let (r, f) = env_rows(v, views, log, now);
        rows.extend(r);
        findings.extend(f);
    }
    Report { rows, findings }
}

/// The other readable environments where `secret` is in the store (or, with
/// `env_file`, in the env file).
fn present_elsewhere(views: &[EnvView], here: &str, secret: &str, env_file: bool) -> Vec<String> {
    views
        .iter()
        .filter(|o| o.name != here && o.unreachable.is_none())
        .filter(|o| match env_file {
            true => o.env_keys.as_ref().is_some_and(|k| k.contains(secret)),
            false => o.listed.iter().any(|l| l.secret == secret),
        })
        .map(|o| o.name.clone())
        .collect()
}

fn env_rows(
    v: &EnvView,
    views: &[EnvView],
    log: &[Entry],
    now: SystemTime,
) -> (Vec<Row>, Vec<Finding>) {
    let names: Vec<(String, Vec<String>)> = v
        .secrets
        .iter()
        .map(|s| (s.name.clone(), s.services.clone()))
        .collect();
    let base = list_secrets::rows(
        &names,
        &v.listed,
        v.fingerprints.as_deref(),
        v.users.as_ref(),
    );
    let kept_by: std::collections::BTreeMap<String, Vec<String>> = v
        .secrets
        .iter()
        .map(|s| (s.name.clone(), s.kept_by.clone()))
        .collect();
    let running = v
        .running
        .as_ref()
        .map(|r| drift::compare(&v.listed, &kept_by, r));
    let mut rows = Vec::new();
    let mut findings = Vec::new();
    let finding = |kind, secret: &str, message: String| Finding {
        kind,
        environment: v.name.clone(),
        secret: Some(secret.to_string()),
        message,
    };
    for b in base {
        let spec = v.secrets.iter().find(|s| s.name == b.name);
        let newest = plan::newest(&v.listed, &b.name);
        let set_at = audit::last_set(log, &v.name, &b.name, &v.store);
        let stored_at = newest.and_then(|l| l.created);
        let (created, age_source) = match (v.store_dates_values, stored_at, set_at) {
            (_, None, None) => (None, None),
            (true, Some(t), _) => (Some(t), Some("store")),
            (_, _, Some(t)) => (Some(t), Some("audit-log")),
            (false, Some(t), None) => (Some(t), Some("file-time")),
        };
        let created = created.filter(|_| newest.is_some());
        let age = created.map(|c| now.duration_since(c).unwrap_or(Duration::ZERO));
        let policy = spec.and_then(|s| s.rotate_every_days);
        let due_in_days = match (policy, age, b.state) {
            (_, _, State::Missing | State::Extra) => None,
            (Some(days), Some(age), _) => Some(i64::from(days) - (age.as_secs() / DAY) as i64),
            _ => None,
        };
        let last_rotation = log
            .iter()
            .rfind(|e| e.environment == v.name && e.secret == b.name && e.is_rotation())
            .map(|e| Rotation {
                time: e.time,
                operator: e.operator.clone(),
                command: e.command.clone(),
            });
        let row = Row {
            environment: v.name.clone(),
            secret: b.name.clone(),
            store: v.store.clone(),
            state: b.state,
            version: b.version,
            location: b.location,
            created,
            age_source: created.and(age_source),
            age,
            rotate_every_days: policy,
            due_in_days,
            last_rotation,
            services: spec.map(|s| s.services.clone()).unwrap_or_default(),
            used_by: v.users.as_ref().map(|_| b.used_by.clone()),
            runtime: running
                .as_ref()
                .map(|r| r.get(&b.name).cloned().unwrap_or_default()),
        };
        findings.extend(
            row_findings(v, views, &row, spec)
                .into_iter()
                .map(|(k, m)| finding(k, &row.secret, m)),
        );
        rows.push(row);
    }
    // A rotation that wrote a new version and stopped before it completed:
    // the servers may still accept the old value until it is finished.
    for (name, (version, when)) in audit::unfinished_rotations(log, &v.name) {
        let Some(row) = rows.iter().find(|r| r.secret == name) else {
            continue;
        };
        if version.is_some() && row.version != version {
            continue;
        }
        let to = version.map(|n| format!(" to v{n}")).unwrap_or_default();
        findings.push(finding(
            "unfinished",
            &name,
            format!(
                "its rotation{to} stopped before it completed ({}): the old value may still be accepted; run `cargo xtask rotate-secrets {} --secret {name}` to finish it",
                time::rfc3339(when),
                v.name
            ),
        ));
    }
    (rows, findings)
}

/// What is wrong with one row: overdue, missing (store or env file), drift.
fn row_findings(
    v: &EnvView,
    views: &[EnvView],
    row: &Row,
    spec: Option<&Wanted>,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let elsewhere = |env_file| {
        let o = present_elsewhere(views, &v.name, &row.secret, env_file);
        if o.is_empty() {
            String::new()
        } else {
            format!(" (present in {})", o.join(", "))
        }
    };
    match row.state {
        State::Missing => out.push((
            "missing",
            format!(
                "not in the {} store{}; run `cargo xtask setup-secrets {}`",
                v.store,
                elsewhere(false),
                v.name
            ),
        )),
        State::Drift => out.push((
            "drift",
            format!(
                "the {} store holds other content than {}; run `cargo xtask setup-secrets {}` (or rotate-secrets)",
                v.store, v.env_file, v.name
            ),
        )),
        _ => {}
    }
    if let (Some(keys), Some(spec)) = (&v.env_keys, spec)
        && spec.in_env_file
        && !keys.contains(&row.secret)
    {
        out.push((
            "missing",
            format!(
                "{} has no {} key{}",
                v.env_file,
                row.secret.to_ascii_uppercase(),
                elsewhere(true)
            ),
        ));
    }
    if let Some(m) = row.runtime.as_ref().and_then(|r| r.message(&v.name)) {
        out.push(("runtime-drift", m));
    }
    if row.overdue() {
        out.push((
            "overdue",
            format!(
                "current value is {} days old ({}), the policy is {} days; run `cargo xtask rotate-secrets {} --secret {}`",
                row.age.map(|a| a.as_secs() / DAY).unwrap_or(0),
                match row.age_source {
                    Some("audit-log") => "from the audit log",
                    Some("file-time") => "from the file's time",
                    _ => "from the store",
                },
                row.rotate_every_days.unwrap_or(0),
                v.name,
                row.secret
            ),
        ));
    }
    out
}

/// Reads one environment; every failure becomes a note or `unreachable`.
pub fn gather(root: &Path, manifest: &Manifest, name: &str) -> EnvView {
    let env = match manifest.env(name) {
        Ok(e) => e,
        Err(e) => {
            return EnvView {
                name: name.into(),
                unreachable: Some(format!("{e:#}")),
                ..Default::default()
            };
        }
    };
    let (path, shown) = resolve::locate(root, env).unwrap_or_default();
    let mut v = EnvView {
        name: name.into(),
        store: env.store.name().into(),
        runtime: env.runtime.name().into(),
        env_file: shown.clone(),
        secrets: manifest
            .secrets_for(name)
            .into_iter()
            .map(|s| Wanted {
                name: s.name.clone(),
                services: s.services.clone(),
                rotate_every_days: s.rotate_every_days(env),
                in_env_file: s.kind != Kind::Derived,
                kept_by: s.kept_by.clone(),
            })
            .collect(),
        ..Default::default()
    };
    if path.is_file()
        && let Ok(f) = EnvFile::load(&path, shown)
    {
        v.env_keys = Some(
            f.entries
                .iter()
                .filter(|(_, e)| !e.value.is_empty())
                .map(|(k, _)| k.to_ascii_lowercase())
                .collect(),
        );
    }
    if let Err(e) = read_store(root, &path, &mut v) {
        v.unreachable = Some(format!("{e:#}"));
    }
    v
}

/// The store's listing (with creation times), the env file's fingerprints
/// when it validates, and the runtime's users. An error means the store
/// could not be read; a problem with the env file or the runtime is a note.
fn read_store(root: &Path, env_file: &Path, v: &mut EnvView) -> Result<()> {
    let args = EnvArgs {
        env: v.name.clone(),
        backend: None,
        namespace: None,
        lock_timeout: Duration::ZERO,
    };
    let s = Session::open(root, &args, output::terminal())?;
    v.store_dates_values = s.store.dates_values();
    let compared = match env_file.exists() {
        true => resolve::resolve(root, &s.manifest, &s.env, resolve::Options::read_only())
            .and_then(|r| Ok((s.compare_key(&r)?, r))),
        false => Err(anyhow::anyhow!("{} does not exist here", v.env_file)),
    };
    let (key, resolved) = match compared {
        Ok((k, r)) => (k, Some(r)),
        Err(e) => {
            let why = format!("{e:#}").replace("\n  - ", " ").replace('\n', " ");
            if env_file.exists() {
                v.env_unreadable = Some(why.clone());
            }
            v.notes.push(format!(
                "the store is not compared with the env file: {why}"
            ));
            (secrets_engine::model::secret::generate(64)?, None)
        }
    };
    v.listed = s.store.list(&key)?;
    let undated: Vec<&str> = v
        .listed
        .iter()
        .filter(|l| l.created.is_none())
        .map(|l| l.id.as_str())
        .collect();
    let created = s.store.created(&undated);
    for l in &mut v.listed {
        l.created = l.created.or_else(|| created.get(&l.id).copied());
    }
    v.fingerprints = resolved.map(|r| {
        r.desired
            .iter()
            .map(|d| (d.spec.name.clone(), d.value.fingerprint(&key)))
            .collect()
    });
    let runtime = s.runtime();
    match runtime
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .and_then(|rt| rt.users())
    {
        Ok(u) => v.users = u,
        Err(e) => v
            .notes
            .push(format!("cannot tell which services use the secrets: {e:#}")),
    }
    match runtime.and_then(|rt| rt.running_versions()) {
        Ok(r) => v.running = Some(r),
        Err(e) => {
            v.runtime_unreachable = Some(format!("{e:#}").replace('\n', " "));
        }
    }
    Ok(())
}

/// How `status` prints what it found.
pub enum Format {
    Table,
    Json,
    /// For the node_exporter textfile collector: to `out` atomically, else stdout.
    OpenMetrics {
        out: Option<std::path::PathBuf>,
    },
}

pub fn run(root: &Path, envs: &[String], check: bool, format: Format) -> Result<()> {
    let manifest = Manifest::load(root)?;
    for e in envs {
        manifest.env(e)?;
    }
    let names: Vec<String> = if envs.is_empty() {
        manifest.environments.keys().cloned().collect()
    } else {
        envs.to_vec()
    };
    let views: Vec<EnvView> = names.iter().map(|n| gather(root, &manifest, n)).collect();
    // A log that cannot be read (or has lines that do not parse) is a
    // finding: the ages and last rotations it holds were not looked at.
    let (log, log_problem) = match audit::read(root) {
        Ok((log, warning)) => (log, warning),
        Err(e) => (
            Vec::new(),
            Some(format!(
                "{e:#}; no last rotations, and Compose ages are the files' own times"
            )),
        ),
    };
    let now = SystemTime::now();
    let mut rep = report(&views, &log, now);
    if let Some(why) = log_problem {
        output::warn(&why);
        rep.findings.push(Finding {
            kind: "unreadable",
            environment: "all".into(),
            secret: None,
            message: format!("the audit log {}: {why}", audit::PATH),
        });
    }
    let json = !matches!(format, Format::Table);
    match format {
        Format::Table => print_human(&manifest.project, &views, &rep),
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&to_json(&views, &rep, now))?
        ),
        Format::OpenMetrics { out } => {
            let text = openmetrics(&views, &rep, &log, now);
            match out {
                // 0644: node_exporter reads it as its own user; it holds
                // names, versions, times and counts, never a value.
                Some(p) => {
                    let path = root.join(&p);
                    secrets_engine::disk::fsutil::write_atomic(&path, text.as_bytes(), 0o644, None)
                        .with_context(|| {
                            format!(
                                "cannot write the metrics to {}; point --out at a file in node_exporter's --collector.textfile.directory that this user may write",
                                p.display()
                            )
                        })?;
                    // The table's findings still matter to whoever runs it.
                    eprintln!(
                        "wrote {} metrics to {}",
                        text.lines().filter(|l| !l.starts_with('#')).count(),
                        p.display()
                    );
                }
                None => print!("{text}"),
            }
        }
    }
    if check && !rep.findings.is_empty() {
        if json {
            for f in &rep.findings {
                eprintln!("{}", f.line());
            }
        }
        bail!(
            "status --check: {} finding(s): overdue, missing, drifted, unfinished or unreadable secrets, or services running a superseded version (listed above)",
            rep.findings.len()
        );
    }
    Ok(())
}

/// The OpenMetrics text of the report ([`secrets_engine::plan::metrics`]).
fn openmetrics(views: &[EnvView], rep: &Report, log: &[Entry], now: SystemTime) -> String {
    let unix = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    let mut envs = Vec::new();
    for v in views {
        let mut findings = std::collections::BTreeMap::new();
        for f in rep.findings.iter().filter(|f| f.environment == v.name) {
            *findings.entry(f.kind.to_string()).or_insert(0) += 1;
        }
        let mut failed = std::collections::BTreeMap::new();
        for e in log.iter().filter(|e| e.environment == v.name) {
            *failed.entry(e.command.clone()).or_insert(0) +=
                u64::from(e.outcome == audit::Outcome::Failed);
        }
        envs.push(secrets_engine::plan::metrics::EnvSample {
            environment: v.name.clone(),
            store_up: v.unreachable.is_none(),
            runtime_up: v.unreachable.is_none() && v.running.is_some(),
            findings,
            failed,
        });
    }
    let secrets = rep
        .rows
        .iter()
        .filter(|r| r.state != State::Extra)
        .map(|r| {
            let last = log
                .iter()
                .rfind(|e| {
                    e.environment == r.environment
                        && e.secret == r.secret
                        && e.command == "rotate-secrets"
                })
                .map(|e| {
                    let unfinished =
                        audit::unfinished_rotations(log, &r.environment).contains_key(&r.secret);
                    (unix(e.time), e.outcome == audit::Outcome::Ok && !unfinished)
                });
            let kept_by = views
                .iter()
                .find(|v| v.name == r.environment)
                .and_then(|v| v.secrets.iter().find(|s| s.name == r.secret))
                .map(|s| s.kept_by.clone())
                .unwrap_or_default();
            secrets_engine::plan::metrics::SecretSample {
                environment: r.environment.clone(),
                secret: r.secret.clone(),
                store: r.store.clone(),
                present: r.state != State::Missing,
                age_seconds: r.age.map(|a| a.as_secs()),
                due_in_days: r.due_in_days,
                version: r.version,
                drift: r.runtime.as_ref().map(SecretRuntime::drift),
                in_use: r
                    .runtime
                    .as_ref()
                    .map(|rt| {
                        rt.in_use
                            .iter()
                            .map(|(svc, v)| (svc.clone(), (*v, kept_by.contains(svc))))
                            .collect()
                    })
                    .unwrap_or_default(),
                last_rotation: last,
            }
        })
        .collect::<Vec<_>>();
    secrets_engine::plan::metrics::render(&envs, &secrets, unix(now))
}

fn due_cell(r: &Row) -> String {
    match (r.rotate_every_days, r.due_in_days) {
        (None, _) => "-".into(),
        _ if matches!(r.state, State::Missing | State::Extra) => "-".into(),
        (Some(_), None) => "?".into(),
        (Some(_), Some(d)) if r.overdue() => output::paint("31", &format!("overdue {}d", -d)),
        (Some(_), Some(0)) => output::paint("33", "today"),
        (Some(_), Some(d)) if d <= 14 => output::paint("33", &format!("in {d}d")),
        (Some(_), Some(d)) => format!("in {d}d"),
    }
}

fn state_cell(s: State) -> String {
    match s {
        State::Current => s.word().to_string(),
        State::Missing | State::Drift => output::paint("31", s.word()),
        State::Extra => output::paint("35", s.word()),
        State::Unchecked => output::paint("2", s.word()),
    }
}

fn print_human(project: &str, views: &[EnvView], rep: &Report) {
    println!(
        "{project}: secrets across {}",
        views
            .iter()
            .map(|v| v.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for v in views {
        if let Some(why) = &v.unreachable {
            println!(
                "note: {}: the {} store could not be read: {why}",
                v.name, v.store
            );
        }
        for n in &v.notes {
            println!("note: {}: {n}", v.name);
        }
    }
    let dash = |s: String| if s.is_empty() { "-".to_string() } else { s };
    let table: Vec<Vec<String>> = rep
        .rows
        .iter()
        .map(|r| {
            vec![
                r.environment.clone(),
                r.secret.clone(),
                r.store.clone(),
                state_cell(r.state),
                r.version
                    .map(|v| format!("v{v}"))
                    .unwrap_or_else(|| "-".into()),
                r.age.map(time::short_age).unwrap_or_else(|| "-".into()),
                due_cell(r),
                r.last_rotation
                    .as_ref()
                    .map(|l| format!("{} {}", &time::rfc3339(l.time)[..10], l.operator))
                    .unwrap_or_else(|| "-".into()),
                dash(r.used_by.as_ref().unwrap_or(&r.services).join(",")),
                list_secrets::running_cell(r.runtime.as_ref()),
            ]
        })
        .collect();
    output::print_table(
        &[
            "ENV",
            "SECRET",
            "STORE",
            "STATE",
            "VERSION",
            "AGE",
            "DUE",
            "LAST ROTATED",
            "SERVICES",
            "RUNNING",
        ],
        &table,
    );
    if rep.findings.is_empty() {
        println!("no findings: nothing overdue, missing, drifted or unfinished");
    } else {
        println!("{} finding(s):", rep.findings.len());
        for f in &rep.findings {
            println!("{}", f.line());
        }
    }
}

fn to_json(views: &[EnvView], rep: &Report, now: SystemTime) -> serde_json::Value {
    let t = |t: Option<SystemTime>| t.map(time::rfc3339);
    let envs: Vec<serde_json::Value> = views
        .iter()
        .map(|v| {
            serde_json::json!({
                "name": v.name,
                "store": v.store,
                "runtime": v.runtime,
                "env_file": v.env_file,
                "reachable": v.unreachable.is_none(),
                "error": v.unreachable,
                "runtime_reachable": v.running.is_some(),
                "runtime_error": v.runtime_unreachable,
                "notes": v.notes,
            })
        })
        .collect();
    let secrets: Vec<serde_json::Value> = rep
        .rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "environment": r.environment,
                "name": r.secret,
                "store": r.store,
                "state": r.state.word(),
                "version": r.version,
                "location": r.location,
                "created": t(r.created),
                "age_days": r.age.map(|a| a.as_secs() / DAY),
                "age_source": r.age_source,
                "rotate_every_days": r.rotate_every_days,
                "due_in_days": r.due_in_days,
                "overdue": r.overdue(),
                "last_rotation": r.last_rotation.as_ref().map(|l| serde_json::json!({
                    "time": time::rfc3339(l.time),
                    "operator": l.operator,
                    "command": l.command,
                })),
                "services": r.services,
                "used_by": r.used_by,
                "runtime": list_secrets::runtime_json(r.runtime.as_ref()),
            })
        })
        .collect();
    let findings: Vec<serde_json::Value> = rep
        .findings
        .iter()
        .map(|f| {
            serde_json::json!({
                "kind": f.kind,
                "environment": f.environment,
                "secret": f.secret,
                "message": f.message,
            })
        })
        .collect();
    serde_json::json!({
        "generated_at": time::rfc3339(now),
        "environments": envs,
        "secrets": secrets,
        "findings": findings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrets_engine::disk::audit::Outcome;

    fn at(days_ago: u64, now: SystemTime) -> SystemTime {
        now - Duration::from_secs(days_ago * DAY)
    }

    fn stored(secret: &str, v: u32, fp: &str, created: Option<SystemTime>) -> Stored {
        Stored {
            id: format!("{secret}_v{v}"),
            secret: secret.into(),
            version: Some(v),
            fingerprint: fp.into(),
            created,
            fix: None,
            kept: None,
        }
    }

    fn wanted(name: &str, days: Option<u32>) -> Wanted {
        Wanted {
            name: name.into(),
            services: vec!["web".into()],
            rotate_every_days: days,
            in_env_file: true,
            kept_by: Vec::new(),
        }
    }

    fn entry(env: &str, secret: &str, action: &str, time: SystemTime, op: &str) -> Entry {
        Entry {
            time,
            environment: env.into(),
            command: "rotate-secrets".into(),
            action: action.into(),
            secret: secret.into(),
            version: None,
            operator: op.into(),
            store: "compose".into(),
            outcome: Outcome::Ok,
        }
    }

    fn view(name: &str, dates: bool) -> EnvView {
        EnvView {
            name: name.into(),
            store: if dates { "swarm" } else { "compose" }.into(),
            runtime: "swarm".into(),
            env_file: format!("secrets/{name}.env"),
            store_dates_values: dates,
            ..Default::default()
        }
    }

    #[test]
    fn overdue_missing_and_drift_are_found() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let mut prod = view("production", true);
        prod.secrets = vec![
            wanted("a", Some(90)),
            wanted("b", Some(90)),
            wanted("c", None),
        ];
        prod.listed = vec![
            stored("a", 3, "fa", Some(at(100, now))),
            stored("b", 1, "fb", Some(at(10, now))),
            stored("c", 1, "fc", Some(at(400, now))),
        ];
        prod.fingerprints = Some(vec![
            ("a".into(), "fa".into()),
            ("b".into(), "other".into()),
            ("c".into(), "fc".into()),
        ]);
        let mut stage = view("staging", true);
        stage.secrets = vec![wanted("a", Some(90)), wanted("b", Some(90))];
        stage.listed = vec![stored("a", 1, "x", Some(at(1, now)))];
        let rep = report(&[prod, stage], &[], now);
        let lines: Vec<String> = rep.findings.iter().map(Finding::line).collect();
        assert_eq!(
            lines,
            [
                "overdue: production a: current value is 100 days old (from the store), the policy is 90 days; run `cargo xtask rotate-secrets production --secret a`",
                "drift: production b: the swarm store holds other content than secrets/production.env; run `cargo xtask setup-secrets production` (or rotate-secrets)",
                "missing: staging b: not in the swarm store (present in production); run `cargo xtask setup-secrets staging`",
            ]
        );
        let a = &rep.rows[0];
        assert_eq!(
            (a.due_in_days, a.overdue(), a.age_source),
            (Some(-10), true, Some("store"))
        );
        assert_eq!(rep.rows[1].due_in_days, Some(80));
        let c = &rep.rows[2];
        assert_eq!(
            (c.due_in_days, c.overdue()),
            (None, false),
            "no policy, never due"
        );
        assert_eq!(rep.rows[3].state, State::Unchecked);
    }

    #[test]
    fn ages_come_from_the_audit_log_where_the_store_does_not_date_values() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let mut dev = view("develop", false);
        dev.secrets = vec![wanted("a", Some(30)), wanted("b", Some(30))];
        dev.listed = vec![
            stored("a", 1, "fa", Some(at(1, now))),
            stored("b", 1, "fb", Some(at(2, now))),
        ];
        dev.env_keys = Some(["a".to_string()].into());
        let mut other = view("staging", true);
        other.env_keys = Some(["a".to_string(), "b".to_string()].into());
        let log = [
            entry("develop", "a", "create", at(50, now), "ann"),
            entry("develop", "a", "update", at(40, now), "bob <b@x>"),
            // The rotation ended: not an unfinished one.
            entry("develop", "a", "complete", at(40, now), "bob <b@x>"),
            entry("staging", "a", "update", at(1, now), "eve"),
        ];
        let rep = report(&[dev, other], &log, now);
        let a = &rep.rows[0];
        assert_eq!(a.age_source, Some("audit-log"));
        assert_eq!(a.age.map(|d| d.as_secs() / DAY), Some(40));
        assert_eq!(
            a.last_rotation.as_ref().map(|r| r.operator.as_str()),
            Some("bob <b@x>")
        );
        let b = &rep.rows[1];
        assert_eq!(
            (b.age_source, b.last_rotation.is_none()),
            (Some("file-time"), true)
        );
        let lines: Vec<String> = rep.findings.iter().map(Finding::line).collect();
        assert_eq!(
            lines,
            [
                "overdue: develop a: current value is 40 days old (from the audit log), the policy is 30 days; run `cargo xtask rotate-secrets develop --secret a`",
                "missing: develop b: secrets/develop.env has no B key (present in staging)",
            ]
        );
    }

    #[test]
    fn an_unreadable_environment_is_a_finding_not_an_abort() {
        let now = SystemTime::now();
        let mut bad = view("staging", true);
        bad.unreachable = Some("docker: Cannot connect".into());
        let mut good = view("develop", false);
        good.secrets = vec![wanted("a", None)];
        let rep = report(&[bad, good], &[], now);
        assert_eq!(rep.findings[0].kind, "unreachable");
        assert!(rep.findings[0].line().starts_with(
            "unreachable: staging: the swarm store could not be read (docker: Cannot connect)"
        ));
        assert_eq!(rep.rows.len(), 1);
        assert_eq!(
            rep.findings[1].line(),
            "missing: develop a: not in the compose store; run `cargo xtask setup-secrets develop`"
        );
    }

    #[test]
    fn an_env_file_that_cannot_be_read_is_a_finding() {
        let now = SystemTime::now();
        let mut v = view("production", true);
        v.env_file = "secrets/production.env".into();
        v.env_unreadable = Some("secrets/production.env:3: unterminated quote".into());
        let rep = report(&[v], &[], now);
        assert_eq!(rep.findings.len(), 1, "{:?}", rep.findings);
        assert_eq!(rep.findings[0].kind, "unreadable");
        assert!(
            rep.findings[0].line().starts_with(
                "unreadable: production: secrets/production.env could not be read (secrets/production.env:3: unterminated quote); no value of it was compared"
            ),
            "{}",
            rep.findings[0].line()
        );
    }

    #[test]
    fn runtime_drift_is_a_finding_kept_services_are_not_and_a_silent_runtime_is_one_too() {
        use secrets_engine::runtime::drift::{Mounted, Running};
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let mut prod = view("production", true);
        prod.secrets = vec![wanted("jwt", None), wanted("pw", None)];
        prod.secrets[1].kept_by = vec!["postgres".into()];
        prod.listed = vec![
            stored("jwt", 2, "f", Some(at(1, now))),
            stored("jwt", 3, "f", Some(at(1, now))),
            stored("pw", 1, "f", Some(at(1, now))),
            stored("pw", 2, "f", Some(at(1, now))),
        ];
        let run = |who: &str, svc: &str, ids: &[&str]| Running {
            who: who.into(),
            service: svc.into(),
            mounts: ids.iter().map(|i| Mounted::Id(i.to_string())).collect(),
        };
        prod.running = Some(vec![
            run("service/st_backend", "backend", &["jwt_v3", "pw_v2"]),
            run("task/st_backend.1", "backend", &["jwt_v2", "pw_v2"]),
            run("task/st_postgres.1", "postgres", &["pw_v1"]),
        ]);
        let mut stage = view("staging", true);
        stage.runtime_unreachable = Some("docker: Cannot connect".into());
        let rep = report(&[prod, stage], &[], now);
        let lines: Vec<String> = rep.findings.iter().map(Finding::line).collect();
        assert_eq!(
            lines,
            [
                "runtime-drift: production jwt: task/st_backend.1 run v2, the current version is v3; run `cargo xtask deploy production`",
                "unreachable: staging: the swarm runtime could not be asked which secret versions run (docker: Cannot connect); runtime drift not checked",
            ]
        );
        assert_eq!(
            rep.rows[1].runtime.as_ref().map(|r| r.cell()).as_deref(),
            Some("current; kept (postgres@v1)")
        );
        let j = to_json(&[], &rep, now);
        assert_eq!(j["secrets"][0]["runtime"]["state"], "drift");
        assert_eq!(j["secrets"][0]["runtime"]["behind"][0]["version"], 2);
        assert_eq!(j["secrets"][1]["runtime"]["kept"][0]["service"], "postgres");
    }
}
