//! Runtimes: what runs the services that read the secrets (Compose, Swarm,
//! Kubernetes). One small interface: check the deploy files against the
//! manifest, say which stored secret each service uses, deploy with the
//! current versions and wait until converged.

pub mod compose;
pub mod drift;
pub mod k8s;
pub mod swarm;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    time::Duration,
};

use anyhow::{Result, bail};

use crate::{
    Scope,
    model::manifest::{BackendKind, Manifest},
    plan::Users,
    sink::{Event, Sink},
};

/// How [`Runtime::deploy`] runs.
#[derive(Debug, Clone, Default)]
pub struct DeployOptions {
    /// Show what would be applied; change nothing.
    pub dry_run: bool,
    /// How long to wait for the rollout to converge.
    pub timeout: Duration,
    /// `delivery = "reader"`: services read the store at run time instead of
    /// mounting these secrets.
    pub reader: Option<ReaderDeploy>,
}

/// What a runtime changes in its deploy file for `delivery = "reader"`.
#[derive(Debug, Clone)]
pub struct ReaderDeploy {
    /// The manifest's secrets, no longer mounted.
    pub secrets: Vec<String>,
    /// The variables each reading service gets (no values).
    pub vars: Vec<(String, String)>,
    /// The credential's file secret, mounted instead.
    pub credential: String,
}

/// A deploy file written for one run next to the original (so relative
/// paths keep their meaning), 0600, removed when dropped.
pub(crate) struct RenderedFile {
    /// Where it is written.
    pub path: std::path::PathBuf,
    /// As the runtime's command line names it (relative to the root).
    pub shown: String,
}

impl RenderedFile {
    /// Writes `text` beside `original` (relative to `root`) under a random name.
    pub fn write(root: &Path, original: &Path, text: &str) -> Result<RenderedFile> {
        let name = original
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let rel = original.with_file_name(format!(
            ".{name}.reader-{}.yml",
            crate::model::secret::random_u64()
        ));
        let path = root.join(&rel);
        crate::disk::fsutil::write_atomic(&path, text.as_bytes(), 0o600, None)?;
        Ok(RenderedFile {
            path,
            shown: rel.display().to_string(),
        })
    }
}

impl Drop for RenderedFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What runs an environment's services (compose, swarm, k8s), opened by [`open`].
pub trait Runtime: Send + Sync {
    /// Disagreements between the runtime's deploy files and the manifest.
    fn check(&self) -> Result<Vec<String>>;
    /// Which services use each stored identity, for refusing removals and for
    /// pruning. `None` when the runtime cannot tell (Compose bind-mounts files).
    fn users(&self) -> Result<Option<Users>>;
    /// Everything `deploy` checks and renders before it changes anything, so
    /// a caller that writes first (delivery copies, a credential) can fail
    /// before writing. The runtimes that render at deploy time override it.
    fn prepare(&self, _current: &BTreeMap<String, String>, _opts: &DeployOptions) -> Result<()> {
        Ok(())
    }
    /// Deploys with `current` (secret name → stored identity) and waits until
    /// converged; with `dry_run`, prints exactly what would be applied.
    fn deploy(&self, current: &BTreeMap<String, String>, opts: &DeployOptions) -> Result<()>;
    /// What runs now and which secret version each mounts, from the
    /// runtime's own view (Swarm service specs and running tasks, Kubernetes
    /// workload templates, ReplicaSets with pods and pods, Compose
    /// containers), for runtime drift ([`drift::compare`]). An error means
    /// the runtime could not be asked: a finding, never "no drift".
    fn running_versions(&self) -> Result<Vec<drift::Running>>;
    /// How to stop what uses the secrets, for the refusal to remove them.
    fn stop_hint(&self) -> String;
    /// What a rotate hook needs to reach this runtime's servers the way the
    /// tool does (deploy/hooks/lib.sh): names and programs, never values.
    fn hook_env(&self) -> Vec<(String, String)>;
}

/// Opens the environment's runtime (`s.env.runtime`); an error for a
/// store-only kind or wrong settings.
pub fn open(s: &Scope) -> Result<Box<dyn Runtime>> {
    match s.env.runtime {
        BackendKind::Compose => Ok(Box::new(compose::ComposeRuntime::new(s)?)),
        BackendKind::Swarm => Ok(Box::new(swarm::SwarmRuntime::new(s)?)),
        BackendKind::K8s => Ok(Box::new(k8s::K8sRuntime::new(s)?)),
        other => bail!("{other} is not a runtime; use compose, swarm or k8s"),
    }
}

/// Disagreements between one deploy file's services and the manifest's
/// `services` lists, for the secrets that exist in `envs`. Shared by every
/// runtime: `uses` maps each service in the file to the secrets it mounts.
pub fn cross_check(
    manifest: &Manifest,
    envs: &[&str],
    file: &str,
    uses: &BTreeMap<String, Vec<String>>,
    defined: &BTreeSet<String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for name in defined {
        if manifest.secrets.iter().all(|s| &s.name != name) {
            out.push(format!("{file}: secret {name} is not in deploy/secrets.toml; add a [secrets.{name}] table or remove it"));
        }
    }
    let relevant = manifest
        .secrets
        .iter()
        .filter(|s| envs.is_empty() || envs.iter().any(|e| s.applies_to(e)));
    for spec in relevant {
        let users: Vec<&String> = spec
            .services
            .iter()
            .filter(|s| uses.contains_key(*s))
            .collect();
        if !users.is_empty() && !defined.contains(&spec.name) {
            out.push(format!("{file}: secret {} is missing from the top-level secrets: (deploy/secrets.toml gives it to {})", spec.name, spec.services.join(", ")));
        }
        for svc in users {
            if !uses[svc].contains(&spec.name) {
                out.push(format!("{file}: service {svc} does not mount {}, but deploy/secrets.toml lists {svc} among its services", spec.name));
            }
        }
    }
    for (svc, refs) in uses {
        for r in refs {
            if let Some(spec) = manifest.secrets.iter().find(|s| &s.name == r)
                && !spec.services.contains(svc)
            {
                out.push(format!("{file}: service {svc} mounts {r}, but deploy/secrets.toml does not list {svc} in its services"));
            }
        }
    }
    out
}

/// Every disagreement between a compose-format file (Compose or Swarm) and
/// the manifest: the runtime's own rule for each top-level secret (`defs`),
/// services using undefined secrets, and the cross-check with `services`.
pub fn check_stack(
    manifest: &Manifest,
    kind: BackendKind,
    file: &str,
    stack: &crate::edit::stackfile::StackFile,
    defs: Vec<String>,
) -> Vec<String> {
    let envs = envs_of(manifest, kind);
    let mut out = defs;
    out.extend(stack.undefined(file));
    let defined: BTreeSet<String> = stack.secrets.keys().cloned().collect();
    out.extend(cross_check(
        manifest,
        &envs,
        file,
        &stack.services,
        &defined,
    ));
    out.into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The environments served by one runtime kind (for checks that only demand
/// the secrets that exist there).
pub fn envs_of(manifest: &Manifest, kind: BackendKind) -> Vec<&str> {
    manifest
        .environments
        .values()
        .filter(|e| e.runtime == kind)
        .map(|e| e.name.as_str())
        .collect()
}

/// One look at a deployment in progress.
pub enum Poll {
    /// Converged: the line to print.
    Done(String),
    /// Not yet: what is still awaited.
    Waiting(String),
}

/// Calls `check` every `every` until it answers [`Poll::Done`], telling
/// `sink` what is awaited and the elapsed time ([`Event::Waiting`]) and how
/// the wait ended; after `timeout` fails with the last state and `hint`.
pub fn wait_until(
    sink: &dyn Sink,
    what: &str,
    timeout: Duration,
    every: Duration,
    hint: &str,
    mut check: impl FnMut() -> Result<Poll>,
) -> Result<()> {
    let start = std::time::Instant::now();
    let mut last;
    loop {
        let polled = match check() {
            Ok(p) => p,
            Err(e) => {
                sink.event(Event::Abandoned);
                return Err(e);
            }
        };
        match polled {
            Poll::Done(line) => {
                sink.event(Event::Converged(&line));
                return Ok(());
            }
            Poll::Waiting(now) => {
                sink.event(Event::Waiting {
                    what,
                    now: &now,
                    elapsed: start.elapsed(),
                });
                last = now;
            }
        }
        if start.elapsed() > timeout {
            sink.event(Event::Abandoned);
            bail!(
                "{what} did not converge within {}s: {last}{hint}",
                timeout.as_secs()
            );
        }
        std::thread::sleep(every);
    }
}

/// The docker program the tool runs (`$DOCKER`, else `docker` from PATH),
/// for hooks; a missing one is reported by the hook's own call.
pub fn docker_program() -> String {
    crate::tools::docker::Docker::new()
        .map(|d| d.tool.bin.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "docker".into())
}
