//! `adopt-secrets` carried out: takes over the unversioned
//! `<project>_<env>_<name>` Swarm secrets the Raqeem scripts created
//! (`docker secret create raqeem_production_postgres_password -`), without
//! recreating them and without touching the services that run with them;
//! and, after a deploy, retires those a newer version replaced
//! ([`retire`]).
//!
//! Swarm never returns a secret's data, so the env file that created them is
//! the only source of their values: each secret gets this tool's labels as
//! version 0 with the keyed fingerprint of the env file's value. The Engine
//! API allows exactly this change (labels only) on a live secret; the docker
//! CLI has no command for it, hence [`crate::tools::engine_api`]. The labels
//! live with the secret, so every operator's listing sees the adoption at
//! once. The next setup-secrets or rotate-secrets moves each to `_v1`.
//!
//! Order: [`check`] the store, [`survey`] what Swarm holds, [`Survey::prepare`]
//! the values (nothing written), [`Adoption::fingerprint_key`], then
//! [`Adoption::apply`]. What the operator must see goes to the session's
//! sink or comes back as values.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{
    disk::audit::Change,
    model::envfile::EnvFile,
    model::manifest::{BackendKind, Kind, SecretSpec},
    model::secret::{self, SecretValue},
    model::time,
    plan::resolve::{self, FINGERPRINT_KEY},
    plan::{self, Users},
    session::{Planned, Session},
    store,
    tools::docker::Docker,
    tools::engine_api,
};

/// The command the lock and the audit log name.
pub const COMMAND: &str = "adopt-secrets";

/// One secret found under its old name.
pub struct Found {
    /// The manifest's secret.
    pub spec: SecretSpec,
    /// Its Swarm name (`<project>_<env>_<name>`).
    pub name: String,
    /// Its Swarm id.
    pub id: String,
    /// Already carries this tool's labels as version 0.
    pub adopted: bool,
}

/// The environment's secrets under their old names, as Swarm lists them.
pub struct Survey {
    /// Every one found, adopted or not.
    pub found: Vec<Found>,
    docker: Docker,
}

/// An adoption ready to be carried out: each secret's value is known.
pub struct Adoption {
    /// The secrets to adopt.
    pub todo: Vec<Found>,
    /// Which services use each Swarm secret.
    pub users: Users,
    file: EnvFile,
    values: Vec<SecretValue>,
    key: Option<SecretValue>,
    docker: Docker,
}

/// Refuses an environment whose store is not Swarm.
pub fn check(s: &Session) -> Result<()> {
    if s.env.store != BackendKind::Swarm {
        bail!(
            "adopt-secrets takes over Docker Swarm secrets; {} keeps its secrets in the {} store (use --backend swarm if they are in Swarm)",
            s.env.name,
            s.env.store
        );
    }
    Ok(())
}

/// The environment's secrets under their old unversioned names: those
/// without labels, and those this tool adopted already.
pub fn survey(s: &Session) -> Result<Survey> {
    let docker = Docker::new()?;
    let found = find(s, &docker)?;
    Ok(Survey { found, docker })
}

impl Survey {
    /// Those still to adopt, with each one's value from the env file (every
    /// missing value refused at once) and the services that use it; the env
    /// file's warnings go to the sink. Nothing is written.
    pub fn prepare(self, s: &Session) -> Result<Adoption> {
        let todo: Vec<Found> = self.found.into_iter().filter(|f| !f.adopted).collect();
        let (file, warnings) = resolve::load_env_file(&s.root, &s.env)?;
        for w in &warnings {
            s.sink.warn(w);
        }
        let values = values(s, &file, &todo)?;
        let users = s.runtime()?.users()?.unwrap_or_default();
        Ok(Adoption {
            todo,
            users,
            file,
            values,
            key: None,
            docker: self.docker,
        })
    }
}

impl Adoption {
    /// The key of the fingerprints: the env file's, else a new one, written
    /// to the env file unless `dry_run` (the sink says which).
    pub fn fingerprint_key(&mut self, s: &Session, dry_run: bool) -> Result<()> {
        let key = match self.file.get(FINGERPRINT_KEY) {
            Some(k) => k.value.clone(),
            None if dry_run => {
                s.sink.line(&format!(
                    "would add {FINGERPRINT_KEY} to {} (the key of the fingerprints)",
                    self.file.shown
                ));
                secret::generate(64)?
            }
            None => {
                let k = secret::generate(64)?;
                self.file
                    .write_updates(&[(FINGERPRINT_KEY.to_string(), k.clone())], "")?;
                s.sink.line(&format!(
                    "added {FINGERPRINT_KEY} to {} (the key of the fingerprints)",
                    self.file.shown
                ));
                k
            }
        };
        self.key = Some(key);
        Ok(())
    }

    /// Labels each secret as adopted (version 0, its fingerprint), one audit
    /// line each, reporting each through the sink.
    pub fn apply(&mut self, s: &Session) -> Result<()> {
        if self.key.is_none() {
            self.fingerprint_key(s, false)?;
        }
        let key = self.key.as_ref().context("the key of the fingerprints")?;
        let socket = engine_api::socket(&self.docker)?;
        for (f, v) in self.todo.iter().zip(&self.values) {
            let change = [Change::new(&f.spec.name, "adopt", Some(0))];
            s.audited(COMMAND, &change, || {
                label(s, &self.docker, &socket, f, &v.fingerprint(key))
            })?;
        }
        Ok(())
    }
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
fn values(s: &Session, file: &EnvFile, todo: &[Found]) -> Result<Vec<SecretValue>> {
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
    socket: &PathBuf,
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
    s.sink
        .line(&format!("  adopted {} as {} v0", f.name, f.spec.name));
    Ok(())
}

/// Removes adopted unversioned secrets (version 0) that a newer version
/// replaced and that nothing uses any more, now that the services run with
/// the newer one; returns the store ids removed. Costs nothing when there
/// are none.
pub fn retire(s: &Session, p: &Planned) -> Result<Vec<String>> {
    let mut names: Vec<String> = p
        .listed
        .iter()
        .filter(|l| l.version == Some(0))
        .map(|l| l.secret.clone())
        .collect();
    names.dedup();
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let Some(users) = s.runtime()?.users()? else {
        return Ok(Vec::new());
    };
    let gone = plan::prune(&p.listed, &names, usize::MAX, &users);
    if !gone.is_empty() {
        s.store.delete(&gone)?;
    }
    Ok(gone.into_iter().map(|g| g.id).collect())
}
