//! `diff <env-a> <env-b> [--json]`: what differs between two environments:
//! their settings (store, runtime, delivery, policy), each secret's presence
//! in the manifest, the env files and the stores, its policy, its state,
//! version and age side by side, and the reuse rule (a production value used
//! in the other environment).
//!
//! Reading is `status`'s own ([`inspect::gather`], [`status::report`]: the
//! same listings, ages and audit log), the reuse check is validation's
//! ([`inspect::reuses_between`]), and [`diff::compare`] turns that plain
//! data into differences and findings; all three are the engine's. This
//! renders them. Never a value, nor a fingerprint of one, in the output.
//! Exit 1 on any finding.

use std::{path::Path, time::SystemTime};

use anyhow::{Result, bail};

use crate::output;
use secrets_engine::{
    inspect,
    model::manifest::Manifest,
    model::time,
    plan::diff::{self, Diff, Field, Side},
    plan::status::{self, EnvView},
};

pub fn run(root: &Path, a: &str, b: &str, json: bool) -> Result<()> {
    let manifest = Manifest::load(root)?;
    let envs = [manifest.env(a)?, manifest.env(b)?];
    if a == b {
        bail!(
            "diff compares two environments, and {a} was named twice; name another one, e.g. `cargo xtask diff {a} {}`",
            manifest
                .environments
                .keys()
                .find(|n| *n != a)
                .map(String::as_str)
                .unwrap_or("ENV")
        );
    }
    let sink = output::terminal();
    let views = [
        inspect::gather(root, &manifest, a, &sink),
        inspect::gather(root, &manifest, b, &sink),
    ];
    let (log, log_problem) = inspect::read_log(root);
    if let Some(why) = &log_problem {
        output::warn(&format!(
            "{why}; ages of Compose file secrets are the files' own times and last rotations are unknown"
        ));
    }
    let now = SystemTime::now();
    let rows = status::report(&views, &log, now).rows;
    let reuses = inspect::reuses_between(root, &manifest, envs[0], envs[1]);
    let d = diff::compare(&manifest, envs, &views, &rows, &reuses);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&to_json(&views, &d, now))?
        );
    } else {
        print_human(&manifest.project, &views, &d);
    }
    if !d.findings.is_empty() {
        if json {
            for f in &d.findings {
                eprintln!("{}", f.line());
            }
        }
        bail!(
            "diff: {} finding(s) between {a} and {b}: a key or secret one has and the other lacks, a reused production value, or something that could not be read (listed above)",
            d.findings.len()
        );
    }
    Ok(())
}

/// `current v3 12d`, `missing`, `-` (not the environment's), `?` (unreadable store).
fn side_cell(s: &Side) -> String {
    if !s.in_manifest && s.in_store != Some(true) {
        return "-".into();
    }
    let Some(r) = &s.row else {
        return "?".into();
    };
    let mut parts = vec![r.state.word().to_string()];
    parts.extend(r.version.map(|v| format!("v{v}")));
    parts.extend(r.age.map(time::short_age));
    parts.join(" ")
}

fn print_human(project: &str, views: &[EnvView; 2], d: &Diff) {
    let names = [views[0].name.as_str(), views[1].name.as_str()];
    println!("{project}: {} against {}", names[0], names[1]);
    for v in views {
        for n in &v.notes {
            println!("note: {}: {n}", v.name);
        }
    }
    let upper = |s: &str| s.to_ascii_uppercase();
    let table: Vec<Vec<String>> = d
        .settings
        .iter()
        .map(|f| {
            vec![
                f.name.to_string(),
                f.values[0].clone(),
                f.values[1].clone(),
                if f.differs() { "differs" } else { "" }.into(),
            ]
        })
        .collect();
    output::print_table(&["SETTING", &upper(names[0]), &upper(names[1]), ""], &table);
    println!();
    let table: Vec<Vec<String>> = d
        .secrets
        .iter()
        .map(|s| {
            let mut diffs: Vec<String> = s
                .differences
                .iter()
                .map(|f| match f.name {
                    "manifest" | "env_file" | "store" => {
                        let only = if f.values[0] == "yes" {
                            names[0]
                        } else {
                            names[1]
                        };
                        format!("{}: only {only}", f.name)
                    }
                    _ => format!("{} {}/{}", f.name, f.values[0], f.values[1]),
                })
                .collect();
            if s.reused {
                diffs.insert(0, output::paint("31", "SAME VALUE (reused)"));
            }
            vec![
                s.name.clone(),
                side_cell(&s.sides[0]),
                side_cell(&s.sides[1]),
                if diffs.is_empty() {
                    "-".into()
                } else {
                    diffs.join(", ")
                },
            ]
        })
        .collect();
    output::print_table(
        &["SECRET", &upper(names[0]), &upper(names[1]), "DIFFERENCES"],
        &table,
    );
    if d.findings.is_empty() {
        println!(
            "no findings: {} and {} hold the same keys in their env files and stores{}",
            names[0],
            names[1],
            if d.settings
                .iter()
                .any(|f| f.name == "production" && f.values.contains(&"yes".to_string()))
            {
                ", and no production value is reused"
            } else {
                ""
            }
        );
    } else {
        println!("{} finding(s):", d.findings.len());
        for f in &d.findings {
            println!("{}", f.line());
        }
    }
}

fn to_json(views: &[EnvView; 2], d: &Diff, now: SystemTime) -> serde_json::Value {
    let envs: Vec<serde_json::Value> = views
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let get = |name: &str| {
                d.settings
                    .iter()
                    .find(|f| f.name == name)
                    .map(|f| f.values[i].clone())
            };
            serde_json::json!({
                "name": v.name,
                "store": v.store,
                "runtime": v.runtime,
                "delivery": get("delivery"),
                "production": get("production").as_deref() == Some("yes"),
                "env_file": v.env_file,
                "env_file_read": v.env_keys.is_some(),
                "reachable": v.unreachable.is_none(),
                "error": v.unreachable,
                "notes": v.notes,
            })
        })
        .collect();
    let fields = |fs: &[Field]| -> Vec<serde_json::Value> {
        fs.iter()
            .map(|f| serde_json::json!({ "field": f.name, "values": f.values, "differs": f.differs() }))
            .collect()
    };
    let side = |s: &Side| {
        let r = s.row.as_ref();
        serde_json::json!({
            "in_manifest": s.in_manifest,
            "in_env_file": s.in_env_file,
            "in_store": s.in_store,
            "state": r.map(|r| r.state.word()),
            "version": r.and_then(|r| r.version),
            "created": r.and_then(|r| r.created).map(time::rfc3339),
            "age_days": r.and_then(|r| r.age).map(|a| a.as_secs() / 86_400),
            "age_source": r.and_then(|r| r.age_source),
            "due_in_days": r.and_then(|r| r.due_in_days),
            "last_rotation": r.and_then(|r| r.last_rotation.as_ref()).map(|l| serde_json::json!({
                "time": time::rfc3339(l.time),
                "operator": l.operator,
                "command": l.command,
            })),
            "policy": (!s.policy.is_empty()).then(|| {
                s.policy
                    .iter()
                    .map(|(n, v)| (n.to_string(), serde_json::Value::String(v.clone())))
                    .collect::<serde_json::Map<_, _>>()
            }),
        })
    };
    let secrets: Vec<serde_json::Value> = d
        .secrets
        .iter()
        .map(|s| {
            serde_json::json!({
                "name": s.name,
                "sides": [side(&s.sides[0]), side(&s.sides[1])],
                "differences": s.differences.iter().map(|f| serde_json::json!({ "field": f.name, "values": f.values })).collect::<Vec<_>>(),
                "reused": s.reused,
            })
        })
        .collect();
    let findings: Vec<serde_json::Value> = d
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
        "settings": fields(&d.settings),
        "secrets": secrets,
        "findings": findings,
        "agree": d.findings.is_empty(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_side_without_a_row_is_a_question_mark() {
        let side = |in_manifest, in_store| Side {
            in_manifest,
            in_env_file: None,
            in_store,
            row: None,
            policy: Vec::new(),
        };
        assert_eq!(side_cell(&side(true, None)), "?");
        assert_eq!(side_cell(&side(false, Some(false))), "-");
    }
}
