//! `doctor <env> [--json]`: the seeds' "Troubleshooting" commands (`ls -la
//! secrets/`, `docker secret ls`, `vault status`, `vault token lookup`,
//! `docker exec ... cat /run/secrets/...`) done by the tool, each check
//! answering `ok` or a finding with its fix. Exit 1 on any finding.
//!
//! The checks, and the gathering they judge, are the engine's
//! ([`secrets_engine::doctor::diagnose`]); this renders them (a list or
//! `--json`) and sets the exit code. No value, and no hash of a value, is
//! ever printed.

use std::path::Path;

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::{flags::EnvArgs, output};
use secrets_engine::{
    doctor::{self, Check, Status},
    session::Session,
};

pub fn run(root: &Path, e: &EnvArgs, json: bool) -> Result<()> {
    let s = Session::open(root, e, output::terminal())?;
    let env = s.env.name.clone();
    let checks = doctor::diagnose(&s);
    let findings = checks
        .iter()
        .filter(|c| c.status == Status::Finding)
        .count();
    if json {
        println!("{}", serde_json::to_string_pretty(&to_json(&s, &checks))?);
    } else {
        print_checks(&s, &checks);
    }
    if findings > 0 {
        bail!(
            "{env}: {findings} finding{}; each names its fix",
            if findings == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

fn to_json(s: &Session, checks: &[Check]) -> Value {
    let count = |st: Status| checks.iter().filter(|c| c.status == st).count();
    json!({
        "environment": s.env.name,
        "store": s.store.kind().name(),
        "runtime": s.env.runtime.name(),
        "checks": checks.iter().map(|c| json!({
            "name": c.name,
            "status": c.status.word(),
            "message": c.message,
            "fix": c.fix,
        })).collect::<Vec<_>>(),
        "counts": {
            "ok": count(Status::Ok),
            "finding": count(Status::Finding),
            "not-checked": count(Status::NotChecked),
        },
    })
}

fn print_checks(s: &Session, checks: &[Check]) {
    println!(
        "doctor: {} {} ({})",
        s.manifest.project,
        s.env.name,
        s.label()
    );
    for c in checks {
        let word = format!("{:<11}", c.status.word());
        let word = match c.status {
            Status::Ok => output::paint("32", &word),
            Status::Finding => output::paint("31", &word),
            Status::NotChecked => output::paint("33", &word),
        };
        println!("{word} {}: {}", c.name, c.message);
        if let Some(f) = &c.fix {
            println!("{:<11} fix: {f}", "");
        }
    }
    let count = |st: Status| checks.iter().filter(|c| c.status == st).count();
    println!(
        "{} ok, {} finding(s), {} not checked",
        count(Status::Ok),
        count(Status::Finding),
        count(Status::NotChecked)
    );
}
