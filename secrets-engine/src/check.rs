//! The manifest against every runtime's deploy files (the compose file, the
//! swarm stack file, the Kubernetes manifests): they must name the same
//! secrets for the same services. Needs no server and no CLI. `check` runs
//! it, and `migrate-env-to-secrets` after it edits the compose file.

use std::{collections::BTreeSet, path::Path};

use anyhow::{Context, Result, bail};

use crate::{
    edit::stackfile,
    model::manifest::{BackendKind, Environment, Manifest},
    runtime,
    store::compose,
    tools::kube,
};

/// What [`check`] found: the deploy files it read and every disagreement.
#[derive(Debug, Clone, Default)]
pub struct Checked {
    /// The deploy files (or folders) that exist and were compared.
    pub files: Vec<String>,
    /// One message per disagreement, each saying how to fix it.
    pub problems: Vec<String>,
}

impl Checked {
    /// An error listing the disagreements, if there are any.
    pub fn agree(&self) -> Result<()> {
        if !self.problems.is_empty() {
            bail!(
                "{} disagreement(s) between deploy/secrets.toml and the deploy files:\n  - {}",
                self.problems.len(),
                self.problems.join("\n  - ")
            );
        }
        Ok(())
    }
}

/// Compares `m` with every runtime's deploy files under `root`.
pub fn check(root: &Path, m: &Manifest) -> Result<Checked> {
    let (files, problems) = problems(root, m)?;
    Ok(Checked { files, problems })
}

/// A runtime's deploy file (or folder) for `env`.
fn deploy_file(m: &Manifest, kind: BackendKind, env: &Environment) -> Result<String> {
    Ok(match kind {
        BackendKind::Compose => compose::settings(env)?.file.display().to_string(),
        BackendKind::Swarm => {
            let mut t = env.settings_for(BackendKind::Swarm);
            t.opt_str("stack_file")?
                .unwrap_or_else(|| "docker-compose.swarm.yml".into())
        }
        _ => kube::settings(&m.project, env)?.manifests,
    })
}

/// The files checked and every disagreement found.
fn problems(root: &Path, m: &Manifest) -> Result<(Vec<String>, Vec<String>)> {
    // A runtime's files are checked where an environment runs on it or names
    // its table (each environment carries the project-wide `[k8s]` and the
    // like, so a project that deploys with `--backend k8s` declares `[k8s]`).
    let mut files: BTreeSet<(u8, String)> = BTreeSet::new();
    for (i, kind) in [BackendKind::Compose, BackendKind::Swarm, BackendKind::K8s]
        .into_iter()
        .enumerate()
    {
        for e in m.environments.values() {
            if e.runtime == kind || e.settings.contains_key(kind.name()) {
                files.insert((i as u8, deploy_file(m, kind, e)?));
            }
        }
    }
    let mut checked = Vec::new();
    let mut out = Vec::new();
    let mut services: BTreeSet<String> = BTreeSet::new();
    for (kind, file) in files {
        let path = root.join(&file);
        if !path.exists() {
            let kinds = [BackendKind::Compose, BackendKind::Swarm, BackendKind::K8s];
            let users: Vec<&str> = m
                .environments
                .values()
                .filter(|e| e.runtime == kinds[kind as usize])
                .filter(|e| deploy_file(m, e.runtime, e).is_ok_and(|f| f == file))
                .map(|e| e.name.as_str())
                .collect();
            if !users.is_empty() {
                out.push(format!(
                    "{file} does not exist, and {} deploy{} with it; restore it, or name another file in deploy/secrets.toml",
                    users.join(", "),
                    if users.len() == 1 { "s" } else { "" }
                ));
            }
            continue;
        }
        checked.push(file.clone());
        if kind == 2 {
            let (problems, names) = check_k8s(&path, &file, m)?;
            out.extend(problems);
            services.extend(names);
            continue;
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {file}"))?;
        let stack = stackfile::parse(&text).with_context(|| format!("in {file}"))?;
        services.extend(stack.services.keys().cloned());
        out.extend(match kind {
            0 => runtime::compose::check_file(m, &file, &stack),
            _ => runtime::swarm::check_file(m, &file, &stack),
        });
    }
    // A service the manifest names that no deploy file has is a typo.
    if !checked.is_empty() {
        for spec in &m.secrets {
            for svc in spec.services.iter().filter(|s| !services.contains(*s)) {
                out.push(format!(
                    "deploy/secrets.toml: [secrets.{}] lists the service {svc:?}, which none of {} has; fix the spelling or remove it",
                    spec.name,
                    checked.join(", ")
                ));
            }
        }
    }
    Ok((checked, out))
}

/// The problems of the Kubernetes manifests, and the workloads they define.
fn check_k8s(dir: &Path, shown: &str, m: &Manifest) -> Result<(Vec<String>, Vec<String>)> {
    let mut all = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {shown}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    entries.sort();
    for p in entries {
        let f = format!(
            "{shown}/{}",
            p.file_name().unwrap_or_default().to_string_lossy()
        );
        let text = std::fs::read_to_string(&p).with_context(|| format!("cannot read {f}"))?;
        all.push((
            f.clone(),
            runtime::k8s::workloads(&text).with_context(|| format!("in {f}"))?,
        ));
    }
    let names = all
        .iter()
        .flat_map(|(_, ws)| ws.iter().map(|w| w.name.clone()))
        .collect();
    Ok((runtime::k8s::check_workloads(m, shown, &all), names))
}
