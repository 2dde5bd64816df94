//! `list-secrets <env>`: what the backend holds, with state against the env file,
//! version, age and the services that use each secret. Never values.

use std::path::Path;

use anyhow::Result;

use super::Session;
use crate::{backend::short_age, flags::EnvArgs, output};

pub fn run(root: &Path, e: &EnvArgs, json: bool) -> Result<()> {
    let s = Session::open(root, e)?;
    let t = s.target(root);
    let r = match s.resolve_read_only(root) {
        Ok(r) => Some(r),
        Err(err) => {
            output::warn(&format!("not comparing with the env file: {err:#}"));
            None
        }
    };
    let rows = s.backend.list(&t, r.as_ref())?;
    if json {
        let items: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "name": r.name,
                    "description": s.manifest.secrets.iter().find(|x| x.name == r.name).map(|x| x.description.as_str()),
                    "state": r.state.word(),
                    "location": r.location,
                    "version": r.version,
                    "age_seconds": r.age.map(|a| a.as_secs()),
                    "used_by": r.used_by,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::Value::Array(items))?
        );
        return Ok(());
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.state.word().to_string(),
                r.version
                    .map(|v| format!("v{v}"))
                    .unwrap_or_else(|| "-".into()),
                r.age.map(short_age).unwrap_or_else(|| "-".into()),
                if r.used_by.is_empty() {
                    "-".into()
                } else {
                    r.used_by.join(",")
                },
                r.location.clone(),
            ]
        })
        .collect();
    println!(
        "{} secrets for {} ({} backend):",
        s.manifest.project, s.env.name, s.env.backend
    );
    output::print_table(
        &["NAME", "STATE", "VERSION", "AGE", "USED BY", "WHERE"],
        &table,
    );
    Ok(())
}
