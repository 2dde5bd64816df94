//! `list-secrets <env>`: what the store holds, with state against the env file,
//! version, age and the services that use each secret. Never values. Ages come
//! from the store, or from the audit log where the store keeps no record of
//! when a value was set (compose files). The reading and the rows are the
//! engine's ([`inspect::listing`]); this renders them.

use std::path::Path;

use anyhow::Result;

use crate::{flags::EnvArgs, output};
use secrets_engine::{
    inspect::{self, Listing},
    model::time,
    session::Session,
};

pub fn run(root: &Path, e: &EnvArgs, json: bool) -> Result<()> {
    let s = Session::open(root, e, output::terminal())?;
    let listing = inspect::listing(&s)?;
    let rows = &listing.rows;
    if json {
        return print_json(&s, &listing);
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
                r.age.map(time::short_age).unwrap_or_else(|| "-".into()),
                if r.used_by.is_empty() {
                    "-".into()
                } else {
                    r.used_by.join(",")
                },
                match &r.kept {
                    Some(k) => format!("{} ({k})", r.location),
                    None => r.location.clone(),
                },
                output::running_cell(listing.runtime_of(&r.name).as_ref()),
            ]
        })
        .collect();
    println!("{}", s.heading());
    output::print_table(
        &[
            "NAME", "STATE", "VERSION", "AGE", "USED BY", "WHERE", "RUNNING",
        ],
        &table,
    );
    Ok(())
}

fn print_json(s: &Session, listing: &Listing) -> Result<()> {
    let items: Vec<serde_json::Value> = listing
        .rows
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
                "kept": r.kept,
                "runtime": output::runtime_json(listing.runtime_of(&r.name).as_ref()),
            })
        })
        .collect();
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::Value::Array(items))?
    );
    Ok(())
}
