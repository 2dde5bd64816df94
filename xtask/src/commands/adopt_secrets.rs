//! `adopt-secrets <env>`: takes over the unversioned `<project>_<env>_<name>`
//! Swarm secrets the Raqeem scripts created (`docker secret create
//! raqeem_production_postgres_password -`), without recreating them and
//! without touching the services that run with them.
//!
//! Swarm never returns a secret's data, so the env file that created them is
//! the only source of their values: each secret gets this tool's labels as
//! version 0 with the keyed fingerprint of the env file's value. The Engine
//! API allows exactly this change (labels only) on a live secret; the docker
//! CLI has no command for it, hence [`secrets_engine::tools::engine_api`]. The labels live
//! with the secret, so every operator's listing sees the adoption at once.
//! The next setup-secrets or rotate-secrets moves each to `_v1`.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{flags::EnvArgs, output};
use secrets_engine::session::Session;
use secrets_engine::{
    disk::audit::Change,
    model::envfile::EnvFile,
    model::manifest::{BackendKind, Kind, SecretSpec},
    model::secret::{self, SecretValue},
    model::time,
    plan::resolve::{self, FINGERPRINT_KEY},
    store,
    tools::docker::Docker,
    tools::engine_api,
};

/// One secret found under its old name.
struct Found {
    spec: SecretSpec,
    name: String,
    id: String,
    /// Already carries this tool's labels as version 0.
    adopted: bool,
}

pub fn run(root: &Path, e: &EnvArgs, dry_run: bool) -> Result<()> {
    let s = Session::open(root, e, output::terminal())?;
    if s.env.store != BackendKind::Swarm {
        bail!(
            "adopt-secrets takes over Docker Swarm secrets; {} keeps its secrets in the {} store (use --backend swarm if they are in Swarm)",
            s.env.name,
            s.env.store
        );
    }
    let _lock = match dry_run {
        false => Some(s.lock(&format!("adopt-secrets {}", e.env), e.lock_timeout)?),
        true => None,
    };
    let docker = Docker::new()?;
    let found = find(&s, &docker)?;
    let (todo, done): (Vec<&Found>, Vec<&Found>) = found.iter().partition(|f| !f.adopted);
    for f in &done {
        println!("  already adopted  {:<24} {}", f.spec.name, f.name);
    }
    if todo.is_empty() {
        println!(
            "nothing to adopt in {}: no unversioned {}_{}_<name> secret without labels",
            s.env.name, s.manifest.project, s.env.name
        );
        return Ok(());
    }
    let (mut file, warnings) = resolve::load_env_file(root, &s.env)?;
    for w in &warnings {
        crate::output::warn(w);
    }
    let values = values(&s, &file, &todo)?;
    let users = s.runtime()?.users()?.unwrap_or_default();
    println!(
        "adopt in {} (as version 0; nothing is recreated or restarted):",
        s.env.name
    );
    for f in &todo {
        let by = users
            .get(&f.name)
            .map(|u| format!("used by {}", u.join(", ")))
            .unwrap_or_else(|| "not used by a service".into());
        println!(
            "  adopt  {:<24} {} (id {}, {by})",
            f.spec.name,
            f.name,
            &f.id[..f.id.len().min(12)]
        );
    }
    let key = match file.get(FINGERPRINT_KEY) {
        Some(k) => k.value.clone(),
        None if dry_run => {
            println!(
                "would add {FINGERPRINT_KEY} to {} (the key of the fingerprints)",
                file.shown
            );
            secret::generate(64)?
        }
        None => {
            let k = secret::generate(64)?;
            file.write_updates(&[(FINGERPRINT_KEY.to_string(), k.clone())], "")?;
            println!(
                "added {FINGERPRINT_KEY} to {} (the key of the fingerprints)",
                file.shown
            );
            k
        }
    };
    if dry_run {
        println!(
            "dry run: would label {} secret(s) as adopted; nothing was changed",
            todo.len()
        );
        return Ok(());
    }
    let socket = engine_api::socket(&docker)?;
    for (f, v) in todo.iter().zip(&values) {
        let change = [Change::new(&f.spec.name, "adopt", Some(0))];
        s.audited("adopt-secrets", &change, || {
            label(&s, &docker, &socket, f, &v.fingerprint(&key))
        })?;
    }
    println!(
        "adopted {} secret(s) in {}. Next: `cargo xtask rotate-secrets {} --all` (or setup-secrets, then deploy) moves each to <name>_v1 with a start-first update, and removes the old one once nothing uses it",
        todo.len(),
        s.env.name,
        s.env.name
    );
    Ok(())
}

/// The environment's secrets under their old unversioned names.
fn find(s: &Session, docker: &Docker) -> Result<Vec<Found>> {
    let prefix = format!("{}_{}_", s.manifest.project, s.env.name);
    let out = docker
        .read(
            &[
                "secret",
                "ls",
                "--filter",
                &format!("name={prefix}"),
                "--format",
                "{{.ID}}|{{.Name}}|{{.Label \"xtask.tool\"}}|{{.Label \"xtask.version\"}}",
            ],
            "",
        )
        .map_err(|e| docker.swarm_diagnose(e))?;
    let mut found = Vec::new();
    for line in out.lines() {
        let f: Vec<&str> = line.trim().split('|').collect();
        let [id, name, tool, version] = f[..] else {
            continue;
        };
        let Some(spec) = s
            .manifest
            .secrets_for(&s.env.name)
            .into_iter()
            .find(|sp| name.strip_prefix(&prefix) == Some(sp.name.as_str()))
        else {
            continue;
        };
        let adopted = tool == store::TOOL && version == "0";
        if !tool.is_empty() && !adopted {
            continue;
        }
        found.push(Found {
            spec: spec.clone(),
            name: name.to_string(),
            id: id.to_string(),
            adopted,
        });
    }
    Ok(found)
}

/// Each secret's value as the env file gives it, or every missing one at once.
fn values(s: &Session, file: &EnvFile, todo: &[&Found]) -> Result<Vec<SecretValue>> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for f in todo {
        match value(s, file, &f.spec) {
            Some(v) => out.push(v),
            None => missing.push(f.spec.env_key()),
        }
    }
    if !missing.is_empty() {
        bail!(
            "{}: no value for {}; Swarm never gives a secret's data back, so adoption fingerprints the env file's value: add the value each secret was created with, and run again",
            file.shown,
            missing.join(", ")
        );
    }
    Ok(out)
}

/// The env file's value for one secret: its line; for a derived secret
/// without one, the value built from its parts; for a file secret, the file.
fn value(s: &Session, file: &EnvFile, spec: &SecretSpec) -> Option<SecretValue> {
    let key = spec.env_key();
    match (spec.kind, file.get(&key)) {
        (Kind::File, Some(e)) => {
            let base = file.path.parent()?;
            std::fs::read(base.join(e.value.expose_str()?))
                .ok()
                .map(SecretValue::new)
        }
        (_, Some(e)) => Some(e.value.clone()),
        (Kind::Derived, None) => {
            let parts: Vec<resolve::Desired> = spec
                .template_parts()
                .iter()
                .filter(|p| *p != "env" && *p != "project")
                .map(|p| {
                    let ps = s.manifest.secret(p).ok()?;
                    Some(resolve::Desired {
                        spec: ps.clone(),
                        value: file.get(&ps.env_key())?.value.clone(),
                        origin: file.at(&ps.env_key()),
                    })
                })
                .collect::<Option<_>>()?;
            resolve::render_template(spec, &s.manifest.project, &s.env.name, &parts).ok()
        }
        _ => None,
    }
}

/// Adds this tool's labels (version 0, fingerprint, adoption time) to one
/// secret through the Engine API, keeping its other labels.
fn label(
    s: &Session,
    docker: &Docker,
    socket: &std::path::PathBuf,
    f: &Found,
    fingerprint: &str,
) -> Result<()> {
    let text = docker
        .read(&["secret", "inspect", &f.id], "")
        .map_err(|e| docker.swarm_diagnose(e))?;
    let v: Value = serde_json::from_str(&text).context("docker secret inspect gave no JSON")?;
    let v = v.get(0).context("docker secret inspect gave nothing")?;
    let version = v
        .pointer("/Version/Index")
        .and_then(Value::as_u64)
        .context("docker secret inspect gave no version")?;
    let mut spec = v
        .get("Spec")
        .cloned()
        .context("docker secret inspect gave no spec")?;
    let labels = spec
        .as_object_mut()
        .context("a secret's spec is not an object")?
        .entry("Labels")
        .or_insert_with(|| Value::Object(Default::default()));
    if !labels.is_object() {
        *labels = Value::Object(Default::default());
    }
    let map = labels.as_object_mut().context("labels")?;
    let ours = store::labels(&s.manifest.project, &s.env.name, &f.spec.name, Some(0))
        .into_iter()
        .chain([
            ("xtask.fingerprint".to_string(), fingerprint.to_string()),
            (
                "xtask.adopted".to_string(),
                time::rfc3339(std::time::SystemTime::now()),
            ),
        ]);
    for (k, val) in ours {
        map.insert(k, Value::String(val));
    }
    engine_api::update_secret(socket, &f.id, version, &spec).with_context(|| {
        format!(
            "cannot adopt {}; nothing else was changed for it, run adopt-secrets again",
            f.name
        )
    })?;
    println!("  adopted {} as {} v0", f.name, f.spec.name);
    Ok(())
}
