//! `status [ENV...] [--check] [--json]`: one table across environments of
//! every secret's store, version, age, last rotation, days until the rotation
//! policy says it is due, the services that use it, and drift (the env file
//! against the store, and keys one environment has and another lacks).
//!
//! Reading is the engine's ([`inspect::gather`]) and so is deciding
//! ([`status::report`] turns plain data into rows and findings); this renders
//! the table, the JSON or the OpenMetrics text and sets the exit code. An
//! environment that cannot be read gets a note and a finding, never an abort
//! of the whole table. Values are only fingerprinted, never shown.

use std::{path::Path, time::SystemTime};

use anyhow::{Context, Result, bail};

use crate::output;
use secrets_engine::{
    disk::audit,
    inspect,
    model::manifest::Manifest,
    model::time,
    plan::status::{self, DAY, EnvView, Finding, Report, Row, State},
};

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
    let sink = output::terminal();
    let views: Vec<EnvView> = names
        .iter()
        .map(|n| inspect::gather(root, &manifest, n, &sink))
        .collect();
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
    let mut rep = status::report(&views, &log, now);
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
            let text = status::openmetrics(&views, &rep, &log, now);
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
                output::running_cell(r.runtime.as_ref()),
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
                "runtime": output::runtime_json(r.runtime.as_ref()),
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
    use secrets_engine::plan::Stored;
    use secrets_engine::plan::status::{Wanted, report};
    use std::time::Duration;

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
