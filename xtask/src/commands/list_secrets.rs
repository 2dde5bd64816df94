//! `list-secrets <env>`: what the store holds, with state against the env file,
//! version, age and the services that use each secret. Never values. Ages come
//! from the store, or from the audit log where the store keeps no record of
//! when a value was set (compose files).

use std::{path::Path, time::Duration};

use anyhow::Result;

use crate::{flags::EnvArgs, output};
use secrets_engine::session::Session;
use secrets_engine::{
    model::time,
    plan::{self, Stored, Users},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The store matches the env file.
    Current,
    Missing,
    /// The store holds other content than the env file would give.
    Drift,
    /// Unknown: the env file could not be read, so no comparison was made.
    Unchecked,
    Extra,
}

impl State {
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

pub struct Row {
    pub name: String,
    pub state: State,
    /// Where it lives: the store's identity of the newest version.
    pub location: String,
    pub version: Option<u32>,
    pub age: Option<Duration>,
    pub used_by: Vec<String>,
    /// What the store keeps besides the current version (Vault, AWS).
    pub kept: Option<String>,
}

/// Pure: one row per manifest secret of the environment, then the extras.
/// `wanted` holds fingerprints when the env file could be read.
pub fn rows(
    names: &[(String, Vec<String>)],
    listed: &[Stored],
    wanted: Option<&[(String, String)]>,
    users: Option<&Users>,
) -> Vec<Row> {
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
            Row {
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

/// The RUNNING cell: `current`, `drift (...)` in red, `kept (...)`, `-`
/// when nothing runs it, `?` when the runtime could not be asked.
pub fn running_cell(r: Option<&secrets_engine::runtime::drift::SecretRuntime>) -> String {
    match r {
        None => output::paint("31", "?"),
        Some(r) if r.drift() => output::paint("31", &r.cell()),
        Some(r) => r.cell(),
    }
}

/// The `runtime` object of `--json` (status and list-secrets), null when
/// the runtime could not be asked.
pub fn runtime_json(
    r: Option<&secrets_engine::runtime::drift::SecretRuntime>,
) -> serde_json::Value {
    let Some(r) = r else {
        return serde_json::Value::Null;
    };
    let list = |l: &[secrets_engine::runtime::drift::Behind]| -> Vec<serde_json::Value> {
        l.iter()
            .map(|b| serde_json::json!({"who": b.who, "service": b.service, "version": b.version}))
            .collect()
    };
    serde_json::json!({
        "state": match (r.runners, r.drift()) {
            (0, _) => "not-running",
            (_, true) => "drift",
            (_, false) => "converged",
        },
        "current_version": r.current,
        "in_use": r.in_use,
        "behind": list(&r.behind),
        "kept": list(&r.kept),
    })
}

pub fn run(root: &Path, e: &EnvArgs, json: bool) -> Result<()> {
    let s = Session::open(root, e, output::terminal())?;
    let r = match s.resolve_read_only() {
        Ok(r) => Some(r),
        Err(err) => {
            output::warn(&format!("not comparing with the env file: {err:#}"));
            None
        }
    };
    // Without the env file's fingerprint key (an old scripts' env file) the
    // listing still shows what is stored, and the hints.
    let (r, key) = match r.map(|r| s.compare_key(&r).map(|k| (r, k))) {
        Some(Ok((r, k))) => (Some(r), k),
        Some(Err(err)) => {
            output::warn(&format!("not comparing with the env file: {err:#}"));
            (None, secrets_engine::model::secret::generate(64)?)
        }
        None => (None, secrets_engine::model::secret::generate(64)?),
    };
    let mut listed = s.store.list(&key)?;
    s.print_notes();
    let missing: Vec<&str> = listed
        .iter()
        .filter(|l| l.created.is_none())
        .map(|l| l.id.as_str())
        .collect();
    let created = s.store.created(&missing);
    for l in &mut listed {
        l.created = l.created.or_else(|| created.get(&l.id).copied());
    }
    if !s.store.dates_values() {
        // The audit log knows when a value was set; a file's time may not.
        let log = secrets_engine::disk::audit::read(&s.root)
            .map(|(log, _)| log)
            .unwrap_or_else(|e| {
                output::warn(&format!("{e:#}; ages are the files' own times"));
                Vec::new()
            });
        for l in &mut listed {
            let kind = s.store.kind();
            if let Some(t) =
                secrets_engine::disk::audit::last_set(&log, &s.env.name, &l.secret, kind.name())
            {
                l.created = Some(t);
            }
        }
    }
    let wanted: Option<Vec<(String, String)>> = r.as_ref().map(|r| {
        r.desired
            .iter()
            .map(|d| (d.spec.name.clone(), d.value.fingerprint(&key)))
            .collect()
    });
    let runtime = s.runtime();
    let users = match runtime
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .and_then(|rt| rt.users())
    {
        Ok(u) => u,
        Err(err) => {
            output::warn(&format!(
                "cannot tell which services use the secrets: {err:#}"
            ));
            None
        }
    };
    // Which version each service, task, pod or container runs; a runtime
    // that cannot be asked shows `?`, never "current".
    let kept_by: std::collections::BTreeMap<String, Vec<String>> = s
        .manifest
        .secrets
        .iter()
        .map(|x| (x.name.clone(), x.kept_by.clone()))
        .collect();
    let running = match runtime.and_then(|rt| rt.running_versions()) {
        Ok(r) => Some(secrets_engine::runtime::drift::compare(
            &listed, &kept_by, &r,
        )),
        Err(err) => {
            output::warn(&format!(
                "could not ask the {} runtime which secret versions run: {err:#}",
                s.env.runtime.name()
            ));
            None
        }
    };
    let runtime_of = |name: &str| {
        running
            .as_ref()
            .map(|r| r.get(name).cloned().unwrap_or_default())
    };
    let names: Vec<(String, Vec<String>)> = s
        .manifest
        .secrets_for(&s.env.name)
        .iter()
        .map(|x| (x.name.clone(), x.services.clone()))
        .collect();
    let rows = rows(&names, &listed, wanted.as_deref(), users.as_ref());
    if json {
        return print_json(&s, &rows, &runtime_of);
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
                running_cell(runtime_of(&r.name).as_ref()),
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

fn print_json(
    s: &Session,
    rows: &[Row],
    runtime_of: &dyn Fn(&str) -> Option<secrets_engine::runtime::drift::SecretRuntime>,
) -> Result<()> {
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
                "kept": r.kept,
                "runtime": runtime_json(runtime_of(&r.name).as_ref()),
            })
        })
        .collect();
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::Value::Array(items))?
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(secret: &str, v: u32, fp: &str) -> Stored {
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
            stored("a", 1, "x"),
            stored("a", 2, "y"),
            stored("b", 1, "z"),
            stored("old", 1, "q"),
        ];
        let wanted = [
            ("a".to_string(), "y".to_string()),
            ("b".to_string(), "other".to_string()),
        ];
        let users: Users = [("a_v1".to_string(), vec!["st_web".to_string()])].into();
        let r = rows(&names, &listed, Some(&wanted), Some(&users));
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
        let r = rows(&names, &listed, None, None);
        assert_eq!(
            (r[0].state, r[0].used_by.clone()),
            (State::Unchecked, vec!["web".to_string()])
        );
    }
}
