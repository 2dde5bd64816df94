//! A [`Session`]: what every environment command shares: the manifest, the
//! environment (with this run's overrides), its store, its lock, its audit
//! log and (opened on demand) its runtime. The commands of the `xtask`
//! binary are thin layers over it.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{
    Scope,
    disk::{
        audit::{self, Change, Outcome},
        lock,
    },
    model::{
        manifest::{BackendKind, Environment, Manifest},
        secret::{self, SecretValue},
    },
    plan::{
        self, Step, Stored,
        resolve::{self, Resolved},
    },
    runtime::{self, Runtime},
    sink::Shared,
    store::{self, Item, SecretStore},
};

/// Which environment a session opens, and this run's overrides.
#[derive(Debug, Clone)]
pub struct Target {
    /// The environment's name in the manifest.
    pub env: String,
    /// `--backend`: another store for this run.
    pub backend: Option<BackendKind>,
    /// `--namespace`: the Kubernetes namespace for this run.
    pub namespace: Option<String>,
    /// `--lock-timeout`: how long to wait for another run on the environment.
    pub lock_timeout: Duration,
}

/// The manifest, the environment (with `--backend` and `--namespace`
/// applied) and its store for one run.
pub struct Session {
    /// The repository root.
    pub root: PathBuf,
    /// The project's manifest.
    pub manifest: Manifest,
    /// The environment, with this run's overrides applied.
    pub env: Environment,
    /// The environment's store, opened.
    pub store: Box<dyn SecretStore>,
    /// Where the session, its store and its runtime report what happens.
    pub sink: Shared,
}

/// What setup would do: the store's listing and the plan made from it.
pub struct Planned {
    /// Every stored version, as the store listed it.
    pub listed: Vec<Stored>,
    /// The plan's steps.
    pub steps: Vec<Step>,
}

impl Planned {
    /// How many steps do `a`.
    pub fn count(&self, a: plan::Action) -> usize {
        self.steps.iter().filter(|s| s.action == a).count()
    }

    /// The steps that write a value.
    pub fn writes(&self) -> Vec<&Step> {
        self.steps.iter().filter(|s| s.action.writes()).collect()
    }
}

impl Session {
    /// Loads the manifest under `root`, picks the environment `e` names,
    /// applies its overrides and opens its store; progress goes to `sink`.
    pub fn open(root: &Path, e: &Target, sink: Shared) -> Result<Session> {
        Session::open_with(root, e, sink, |_| {})
    }

    /// [`Session::open`] with a change to the environment for this run only
    /// (a command's own flag that a store reads from its table).
    pub fn open_with(
        root: &Path,
        e: &Target,
        sink: Shared,
        tweak: impl FnOnce(&mut Environment),
    ) -> Result<Session> {
        let manifest = Manifest::load(root)?;
        let mut env = manifest.env(&e.env)?.clone();
        tweak(&mut env);
        if let Some(b) = e.backend {
            env.override_backend(b);
        }
        if let Some(ns) = &e.namespace {
            env.settings
                .entry(BackendKind::K8s.name().into())
                .or_default()
                .insert("namespace".into(), toml::Value::String(ns.clone()));
        }
        let store = store::open(&Scope {
            root,
            manifest: &manifest,
            env: &env,
            sink: &sink,
        })?;
        Ok(Session {
            root: root.to_path_buf(),
            manifest,
            env,
            store,
            sink,
        })
    }

    /// Takes the environment's lock for `command` (see [`crate::disk::lock`]) and
    /// removes what interrupted runs left behind.
    pub fn lock(&self, command: &str, timeout: std::time::Duration) -> Result<lock::EnvLock> {
        let l = lock::acquire(&self.root, &self.env.name, command, timeout, &*self.sink)?;
        let (env_file, _) = resolve::locate(&self.root, &self.env)?;
        let mut dirs = vec![crate::store::compose::secrets_dir(
            &self.root,
            &self.env.name,
        )];
        dirs.extend(env_file.parent().map(Path::to_path_buf));
        let mut removed = lock::sweep(&self.root, &dirs)?;
        removed.extend(audit::sweep(&self.root)?);
        for p in removed {
            self.sink.line(&format!(
                "removed {}, a temporary file left by an interrupted run",
                p.display()
            ));
        }
        // Before any change: a run that could not log its changes must not make them.
        crate::disk::audit::check_writable_place(&self.root)?;
        Ok(l)
    }

    /// Removes the temporary secrets and jobs of rotate hooks killed on this
    /// host (they may hold new values), on a swarm runtime. Run by the
    /// commands that drive the runtime (rotate, deploy, remove) once they hold
    /// the lock; setup's no-change re-run stays one docker call. A failure is
    /// a warning: it is no reason to stop this run, and the next one tries again.
    pub fn sweep_hook_leftovers(&self) {
        if self.env.runtime != BackendKind::Swarm {
            return;
        }
        let swept = crate::tools::docker::Docker::new()
            .and_then(|d| runtime::swarm::sweep_hook_leftovers(&d));
        match swept {
            Ok((removed, left)) => {
                for r in removed {
                    self.sink.line(&format!(
                        "removed {r}, left by a rotate hook that was interrupted"
                    ));
                }
                for l in left {
                    self.sink.warn(&format!(
                        "could not remove {l}; it holds a rotated value: remove it by hand (docker secret rm / docker service rm)"
                    ));
                }
            }
            Err(e) => self.sink.warn(&format!(
                "could not look for what interrupted rotate hooks left: {e:#}"
            )),
        }
    }

    /// The runtime, opened when a command needs it (setup never does).
    pub fn runtime(&self) -> Result<Box<dyn Runtime>> {
        runtime::open(&Scope {
            root: &self.root,
            manifest: &self.manifest,
            env: &self.env,
            sink: &self.sink,
        })
    }

    /// `swarm`, or `vault store, swarm runtime`.
    pub fn label(&self) -> String {
        self.env.backend_label()
    }

    /// The heading of a plan or listing: `raqeem secrets for develop (compose backend):`.
    pub fn heading(&self) -> String {
        format!(
            "{} secrets for {} ({} backend):",
            self.manifest.project,
            self.env.name,
            self.label()
        )
    }

    /// Resolves the environment's values and prints the warnings.
    pub fn resolve(&self, opts: resolve::Options) -> Result<Resolved> {
        let r = resolve::resolve(&self.root, &self.manifest, &self.env, opts)?;
        for w in &r.warnings {
            self.sink.warn(w);
        }
        Ok(r)
    }

    /// Resolves without generating or writing anything: for commands that only look.
    pub fn resolve_read_only(&self) -> Result<Resolved> {
        self.resolve(resolve::Options::read_only())
    }

    /// The key fingerprints are compared with. Stores that keep fingerprints
    /// need the env file's own; for the others any key will do.
    pub fn compare_key(&self, r: &Resolved) -> Result<SecretValue> {
        match (&r.fingerprint_key, self.store.keeps_fingerprints()) {
            (Some(k), _) => Ok(k.clone()),
            (None, false) => secret::generate(64),
            (None, true) => Ok(r.fingerprint_key()?.clone()),
        }
    }

    /// Every value against the store's own rules, and each TLS key against
    /// its certificate, before anything changes.
    pub fn check_values(&self, r: &Resolved) -> Result<()> {
        let problems: Vec<String> = r
            .desired
            .iter()
            .filter_map(|d| {
                self.store
                    .check(&d.spec.name, &d.origin, d.value.expose())
                    .err()
                    .map(|e| format!("{e:#}"))
            })
            .collect();
        if !problems.is_empty() {
            bail!(
                "the {} store cannot hold these values as they are:\n  - {}",
                self.store.kind(),
                problems.join("\n  - ")
            );
        }
        // Last, as it needs openssl: every check above needs no CLI.
        resolve::check_pairs(&self.manifest, &self.env, &r.desired)
    }

    /// Compares the store with the resolved values: setup's plan.
    pub fn plan(&self, r: &Resolved) -> Result<Planned> {
        self.check_values(r)?;
        let key = self.compare_key(r)?;
        let wanted: Vec<(String, String)> = r
            .desired
            .iter()
            .map(|d| (d.spec.name.clone(), d.value.fingerprint(&key)))
            .collect();
        let listed = self.store.list(&key)?;
        self.print_notes();
        let steps = plan::setup(self.store.as_ref(), &self.env.name, &wanted, &listed);
        Ok(Planned { listed, steps })
    }

    /// The store's notes from its last listing, as warnings.
    pub fn print_notes(&self) {
        for n in self.store.notes() {
            self.sink.warn(&n);
        }
    }

    /// Writes exactly the writing steps of `steps`, with the resolved values.
    pub fn apply(&self, r: &Resolved, steps: &[&Step]) -> Result<()> {
        let key = self.compare_key(r)?;
        let items: Vec<Item> = steps
            .iter()
            .filter(|s| s.action.writes())
            .map(|s| {
                let d = r
                    .get(&s.secret)
                    .context("the plan names a secret that was not resolved")?;
                Ok(Item {
                    step: s,
                    value: &d.value,
                    fingerprint: d.value.fingerprint(&key),
                })
            })
            .collect::<Result<_>>()?;
        self.store.write(&items)
    }

    /// Appends `changes` to the audit log for this environment and store.
    pub fn audit(&self, command: &str, changes: &[Change], outcome: Outcome) -> Result<()> {
        audit::record(
            &self.root,
            &self.env.name,
            command,
            self.store.kind(),
            changes,
            outcome,
        )
    }

    /// Runs `f` and logs `changes` with its outcome (`failed` when it fails:
    /// the steps were attempted). The step's own error comes first.
    pub fn audited<T>(
        &self,
        command: &str,
        changes: &[Change],
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        match f() {
            Ok(v) => {
                self.audit(command, changes, Outcome::Ok)?;
                Ok(v)
            }
            Err(e) => Err(self.failed(command, changes, &[], e)),
        }
    }

    /// Logs `done` as `ok` and `failed` as failed after an error, and gives
    /// the error back (a log that cannot be written is only warned about
    /// then: the first error is the one to fix).
    pub fn failed(
        &self,
        command: &str,
        failed: &[Change],
        done: &[Change],
        err: anyhow::Error,
    ) -> anyhow::Error {
        let logged = self
            .audit(command, done, Outcome::Ok)
            .and_then(|_| self.audit(command, failed, Outcome::Failed));
        if let Err(e) = logged {
            self.sink.warn(&format!("{e:#}"));
        }
        err
    }

    /// [`Session::apply`], logged: after a failure the store is listed
    /// again, and a write it holds is logged `ok` (a batch that failed may
    /// have written some), the rest `failed`.
    pub fn apply_audited(&self, command: &str, r: &Resolved, steps: &[&Step]) -> Result<()> {
        let err = match self.apply(r, steps) {
            Ok(()) => return self.audit(command, &Change::of_steps(steps), Outcome::Ok),
            Err(e) => e,
        };
        let held: Vec<String> = match self.plan(r) {
            Ok(p) => p
                .steps
                .into_iter()
                .filter(|s| s.action == plan::Action::Unchanged)
                .map(|s| s.id)
                .collect(),
            Err(_) => Vec::new(),
        };
        let (done, failed): (Vec<&Step>, Vec<&Step>) =
            steps.iter().partition(|s| held.contains(&s.id));
        Err(self.failed(
            command,
            &Change::of_steps(&failed),
            &Change::of_steps(&done),
            err,
        ))
    }

    /// Deletes `steps` from the store, logged like [`Session::apply_audited`]:
    /// an identity the store no longer lists after a failure was removed.
    pub fn delete_audited(&self, command: &str, steps: &[Step]) -> Result<()> {
        let err = match self.store.delete(steps) {
            Ok(()) => return self.audit(command, &Change::of_steps(steps), Outcome::Ok),
            Err(e) => e,
        };
        // Removal compares nothing, so any key lists the store.
        let left: Option<Vec<String>> = self
            .store
            .list(&SecretValue::new(b"list".to_vec()))
            .ok()
            .map(|l| l.into_iter().map(|x| x.id).collect());
        let (done, failed): (Vec<&Step>, Vec<&Step>) = steps
            .iter()
            .partition(|s| left.as_ref().is_some_and(|l| !l.contains(&s.id)));
        Err(self.failed(
            command,
            &Change::of_steps(&failed),
            &Change::of_steps(&done),
            err,
        ))
    }

    /// Secret → stored identity for a deploy, refusing when the store is not
    /// in line with the env file: the one "run setup-secrets first" guard.
    pub fn current_or_refuse(
        &self,
        p: &Planned,
    ) -> Result<std::collections::BTreeMap<String, String>> {
        let stale: Vec<&str> = p.writes().iter().map(|s| s.secret.as_str()).collect();
        if !stale.is_empty() {
            bail!(
                "the secrets of {} in the {} store are not set up or out of date ({}); run `cargo xtask setup-secrets {}` first",
                self.env.name,
                self.store.kind(),
                stale.join(", "),
                self.env.name
            );
        }
        Ok(p.steps
            .iter()
            .filter(|s| s.action == plan::Action::Unchanged)
            .map(|s| (s.secret.clone(), s.id.clone()))
            .collect())
    }
}
