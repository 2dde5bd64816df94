//! One interface for every secret store. Commands resolve values, ask a backend
//! for a plan, print it, and apply it; they never match on the backend kind.

pub mod compose;
pub mod swarm;

use std::{path::Path, time::Duration};

use anyhow::{Result, bail};

use crate::{
    manifest::{BackendKind, Environment, Manifest},
    resolve::Resolved,
};

/// What a command works on: the repository, the manifest, one environment and
/// the backend chosen for this run.
pub struct Target<'a> {
    pub root: &'a Path,
    pub manifest: &'a Manifest,
    pub env: &'a Environment,
}

impl Target<'_> {
    /// `<project>-<env>`: the Compose project and the Swarm stack name.
    pub fn stack_name(&self) -> String {
        format!("{}-{}", self.manifest.project, self.env.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Update,
    Unchanged,
    /// Present in the store but not in the manifest: reported, never touched by setup.
    Extra,
}

impl Action {
    pub fn word(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Unchanged => "unchanged",
            Action::Extra => "extra",
        }
    }
}

/// One line of a plan. `detail` never holds a value: a path, a version, a reason.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub action: Action,
    pub detail: String,
}

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

#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub state: State,
    /// Where it lives: a file path or the store's own name for it.
    pub location: String,
    pub version: Option<u32>,
    pub age: Option<Duration>,
    pub used_by: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct DeployOptions {
    pub dry_run: bool,
    pub timeout: Duration,
}

pub trait Backend {
    /// Compares what the store holds with the resolved values.
    fn plan(&self, t: &Target, r: &Resolved) -> Result<Vec<Step>>;
    /// Carries out a plan from [`Backend::plan`].
    fn apply(&self, t: &Target, r: &Resolved, plan: &[Step]) -> Result<()>;
    /// What the store holds; with `r`, compared against the env file.
    fn list(&self, t: &Target, r: Option<&Resolved>) -> Result<Vec<Row>>;
    /// What [`Backend::remove`] would remove for these names (all when empty),
    /// with any reason to refuse.
    fn plan_remove(&self, t: &Target, names: &[String]) -> Result<Vec<Step>>;
    fn remove(&self, t: &Target, plan: &[Step]) -> Result<()>;
    /// Deploys the stack with the current secrets and waits until it converged.
    fn deploy(&self, t: &Target, r: &Resolved, opts: &DeployOptions) -> Result<()>;
    /// After a rotation: removes superseded versions of `secrets` that no service
    /// uses, keeping the newest `keep` of them. Returns what was removed. Stores
    /// without versions (compose files) have nothing to prune.
    fn prune(&self, _t: &Target, _secrets: &[String], _keep: usize) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    /// The current version of each stored secret (`v3`), for the rotation log.
    /// Stores without versions return nothing.
    fn stored_versions(&self, _t: &Target) -> Result<std::collections::BTreeMap<String, String>> {
        Ok(Default::default())
    }
}

pub fn for_kind(kind: BackendKind) -> Result<Box<dyn Backend>> {
    match kind {
        BackendKind::Compose => Ok(Box::new(compose::Compose::new()?)),
        BackendKind::Swarm => Ok(Box::new(swarm::Swarm::new()?)),
        BackendKind::K8s | BackendKind::Vault | BackendKind::Aws => bail!(
            "the {kind} backend is planned but not built yet; this version supports compose and swarm (use --backend compose or --backend swarm)"
        ),
    }
}

/// One look at a deployment in progress.
pub enum Poll {
    /// Converged: the line to print.
    Done(String),
    /// Not yet: what is still awaited.
    Waiting(String),
}

/// Calls `check` every `every` until it answers [`Poll::Done`], printing each
/// new waiting line; after `timeout` fails with the last one and `hint`.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    every: Duration,
    hint: &str,
    mut check: impl FnMut() -> Result<Poll>,
) -> Result<()> {
    let start = std::time::Instant::now();
    let mut last = String::new();
    loop {
        match check()? {
            Poll::Done(line) => {
                println!("{line}");
                return Ok(());
            }
            Poll::Waiting(now) => {
                if now != last {
                    println!("waiting: {now}");
                    last = now;
                }
            }
        }
        if start.elapsed() > timeout {
            bail!(
                "{what} did not converge within {}s: {last}{hint}",
                timeout.as_secs()
            );
        }
        std::thread::sleep(every);
    }
}

/// `3d`, `5h`, `12m`, `40s`: ages for tables.
pub fn short_age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}
