//! The report `status`, `list-secrets` and `diff` share, planned from plain
//! data: what the stores list, the env files' fingerprints, the audit log's
//! entries and what the runtimes run. [`report`] turns [`EnvView`]s into
//! rows (state, version, age, due date, last rotation, runtime drift) and
//! [`Finding`]s; [`secret_rows`] is the one-environment table of
//! `list-secrets`; [`openmetrics`] the node_exporter text. Reading the views
//! is [`crate::inspect`]'s. Everything here is pure; values never appear,
//! only their fingerprints are compared.

use std::{
    collections::BTreeSet,
    time::{Duration, SystemTime},
};

use crate::{
    disk::audit::{self, Entry},
    model::time,
    plan::{self, Stored, Users, metrics},
    runtime::drift::{self, Running, SecretRuntime},
};

/// A secret's state in the store against the env file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The store matches the env file.
    Current,
    /// Not in the store.
    Missing,
    /// The store holds other content than the env file would give.
    Drift,
    /// Unknown: the env file could not be read, so no comparison was made.
    Unchecked,
    /// In the store, not in the manifest.
    Extra,
}

impl State {
    /// The word tables and JSON show.
    pub fn word(self) -> &'static str {
        match self {
            State::Current => "current",
            State::Missing => "missing",
            State::Drift => "drift",
            State::Unchecked => "present",
            State::Extra => "extra",
        }
    }
}

/// One secret as `list-secrets` shows it.
pub struct SecretRow {
    /// The secret's name.
    pub name: String,
    /// Against the env file.
    pub state: State,
    /// Where it lives: the store's identity of the newest version.
    pub location: String,
    /// The newest version, where the store numbers them.
    pub version: Option<u32>,
    /// How old the newest value is.
    pub age: Option<Duration>,
    /// The services that use it (with the version they run, where known).
    pub used_by: Vec<String>,
    /// What the store keeps besides the current version (Vault, AWS).
    pub kept: Option<String>,
}

/// Pure: `list-secrets`'s rows: one row per manifest secret of the environment, then the extras.
/// `wanted` holds fingerprints when the env file could be read.
pub fn secret_rows(
    names: &[(String, Vec<String>)],
    listed: &[Stored],
    wanted: Option<&[(String, String)]>,
    users: Option<&Users>,
) -> Vec<SecretRow> {
    let mut all: Vec<(&str, Option<&[String]>)> = names
        .iter()
        .map(|(n, s)| (n.as_str(), Some(s.as_slice())))
        .collect();
    for l in listed {
        if !all.iter().any(|(n, _)| *n == l.secret) {
            all.push((l.secret.as_str(), None));
        }
    }
    all.into_iter()
        .map(|(name, services)| {
            let newest = plan::newest(listed, name);
            let versions = listed.iter().filter(|l| l.secret == name).count();
            let state = match (newest, services, wanted) {
                (None, _, _) => State::Missing,
                (Some(_), None, _) => State::Extra,
                (Some(_), _, None) => State::Unchecked,
                (Some(l), _, Some(w)) => {
                    let same = w.iter().any(|(n, fp)| n == name && *fp == l.fingerprint);
                    if same && l.fix.is_none() {
                        State::Current
                    } else {
                        State::Drift
                    }
                }
            };
            let used_by = match users {
                Some(u) => {
                    let mut v: Vec<String> = listed
                        .iter()
                        .filter(|l| l.secret == name)
                        .flat_map(|l| {
                            let tag = l.version.map(|v| format!("@v{v}")).unwrap_or_default();
                            u.get(&l.id)
                                .into_iter()
                                .flatten()
                                .map(move |s| format!("{s}{tag}"))
                        })
                        .collect();
                    v.sort();
                    v
                }
                None => services.map(<[String]>::to_vec).unwrap_or_default(),
            };
            SecretRow {
                name: name.to_string(),
                state,
                location: match newest {
                    Some(l) if versions > 1 => format!("{} (+{} older)", l.id, versions - 1),
                    Some(l) => l.id.clone(),
                    None => "-".into(),
                },
                kept: newest.and_then(|l| l.kept.clone()),
                version: newest.and_then(|l| l.version),
                age: newest.and_then(|l| l.created).and_then(time::age),
                used_by,
            }
        })
        .collect()
}

/// Seconds in a day: ages and due dates are whole days.
pub const DAY: u64 = 86_400;

/// One manifest secret of one environment, as the policy sees it.
#[derive(Debug, Clone)]
pub struct Wanted {
    /// The secret's name.
    pub name: String,
    /// The services the manifest gives it to.
    pub services: Vec<String>,
    /// Its rotation policy here, in days (`None`: never due).
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
    /// The environment's name.
    pub name: String,
    /// Its store's name (`swarm`, `vault`, ...).
    pub store: String,
    /// Its runtime's name.
    pub runtime: String,
    /// The env file, for messages.
    pub env_file: String,
    /// Why the store could not be read; nothing else is known then.
    pub unreachable: Option<String>,
    /// Why the env file, which exists, could not be read or validated: its
    /// values were not compared with the store (a finding: "could not look").
    pub env_unreadable: Option<String>,
    /// What could not be read but does not stop the report (shown as notes).
    pub notes: Vec<String>,
    /// Whether the store's creation times date the values (see `SecretStore::dates_values`).
    pub store_dates_values: bool,
    /// The manifest secrets of the environment.
    pub secrets: Vec<Wanted>,
    /// What the store lists.
    pub listed: Vec<Stored>,
    /// Secret → fingerprint of the env file's value, when it could be read.
    pub fingerprints: Option<Vec<(String, String)>>,
    /// The secrets whose keys the env file holds, when it exists and reads.
    pub env_keys: Option<BTreeSet<String>>,
    /// Which services use which stored identity, when the runtime says.
    pub users: Option<Users>,
    /// What the runtime runs and mounts, when it could be asked.
    pub running: Option<Vec<Running>>,
    /// Why the runtime could not be asked which versions run: a finding.
    pub runtime_unreachable: Option<String>,
}

/// The last rotation of a secret, from the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// When it ran.
    pub time: SystemTime,
    /// Who ran it.
    pub operator: String,
    /// The command that rotated it.
    pub command: String,
}

/// One secret of one environment as `status` shows it.
#[derive(Debug, Clone)]
pub struct Row {
    /// The environment.
    pub environment: String,
    /// The secret.
    pub secret: String,
    /// The store's name.
    pub store: String,
    /// Against the env file.
    pub state: State,
    /// The newest version, where the store numbers them.
    pub version: Option<u32>,
    /// Where it lives: the store's identity of the newest version.
    pub location: String,
    /// When the current value was set, and who says so.
    pub created: Option<SystemTime>,
    /// Where the age comes from: `store`, `audit-log` or `file-time`.
    pub age_source: Option<&'static str>,
    /// How old the current value is.
    pub age: Option<Duration>,
    /// The rotation policy, in days.
    pub rotate_every_days: Option<u32>,
    /// Whole days until due (the policy less the age in whole days; 0 is due
    /// today, negative overdue), when a policy and an age are known.
    pub due_in_days: Option<i64>,
    /// The last rotation the audit log records.
    pub last_rotation: Option<Rotation>,
    /// The services the manifest gives it to.
    pub services: Vec<String>,
    /// The services that use it, when the runtime says.
    pub used_by: Option<Vec<String>>,
    /// Who runs which version, when the runtime could be asked.
    pub runtime: Option<SecretRuntime>,
}

impl Row {
    /// Whether the policy says it is past due.
    pub fn overdue(&self) -> bool {
        self.due_in_days.is_some_and(|d| d < 0)
    }
}

/// Something `status --check` fails on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `overdue`, `missing`, `drift`, `runtime-drift`, `unfinished`,
    /// `unreachable` or `unreadable`.
    pub kind: &'static str,
    /// The environment (`all` for the audit log).
    pub environment: String,
    /// The secret, when the finding is about one.
    pub secret: Option<String>,
    /// What is wrong and how to fix it.
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

/// The rows and findings of a report.
pub struct Report {
    /// One row per secret and environment.
    pub rows: Vec<Row>,
    /// What is overdue, missing, drifted, unfinished or unreadable.
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
    let base = secret_rows(
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

/// Pure: the OpenMetrics text of the report ([`crate::plan::metrics`]).
pub fn openmetrics(views: &[EnvView], rep: &Report, log: &[Entry], now: SystemTime) -> String {
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
        envs.push(metrics::EnvSample {
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
            metrics::SecretSample {
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
    metrics::render(&envs, &secrets, unix(now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::audit::Outcome;

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

    fn listed(secret: &str, v: u32, fp: &str) -> Stored {
        Stored {
            id: format!("{secret}_v{v}"),
            secret: secret.into(),
            version: Some(v),
            fingerprint: fp.into(),
            created: None,
            fix: None,
            kept: None,
        }
    }

    #[test]
    fn rows_show_state_versions_and_users() {
        let names = vec![
            ("a".to_string(), vec!["web".to_string()]),
            ("b".to_string(), vec![]),
            ("c".to_string(), vec![]),
        ];
        let listed = [
            listed("a", 1, "x"),
            listed("a", 2, "y"),
            listed("b", 1, "z"),
            listed("old", 1, "q"),
        ];
        let wanted = [
            ("a".to_string(), "y".to_string()),
            ("b".to_string(), "other".to_string()),
        ];
        let users: Users = [("a_v1".to_string(), vec!["st_web".to_string()])].into();
        let r = secret_rows(&names, &listed, Some(&wanted), Some(&users));
        let states: Vec<(&str, State)> = r.iter().map(|r| (r.name.as_str(), r.state)).collect();
        assert_eq!(
            states,
            [
                ("a", State::Current),
                ("b", State::Drift),
                ("c", State::Missing),
                ("old", State::Extra)
            ]
        );
        assert_eq!(r[0].location, "a_v2 (+1 older)");
        assert_eq!(r[0].used_by, ["st_web@v1"]);
        let r = secret_rows(&names, &listed, None, None);
        assert_eq!(
            (r[0].state, r[0].used_by.clone()),
            (State::Unchecked, vec!["web".to_string()])
        );
    }
}
