//! One module per command; `run` is the single dispatch point. [`Session`]
//! holds what every environment command shares: the manifest, the
//! environment, its store, and (opened on demand) its runtime.

mod adopt_secrets;
mod backup_secrets;
mod check;
mod completions;
mod deliver;
mod deploy;
mod diff;
mod doctor;
mod generate_secret;
mod list_secrets;
mod migrate_env_to_secrets;
mod remove_secrets;
mod restore_secrets;
mod rotate_secrets;
mod run_local;
mod scan;
mod setup_secrets;
mod status;
mod verify_secrets;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::{
    audit::{self, Change, Outcome},
    flags::{Cmd, EnvArgs},
    lock,
    manifest::{BackendKind, Environment, Manifest},
    output,
    plan::{self, Step, Stored},
    resolve::{self, Resolved},
    runtime::{self, Runtime},
    secret::{self, SecretValue},
    store::{self, Item, SecretStore},
};

pub fn run(cmd: Cmd, root: &Path) -> Result<()> {
    match cmd {
        Cmd::SetupSecrets(e, a) => setup_secrets::run(root, &e, a),
        Cmd::ListSecrets(e, json) => list_secrets::run(root, &e, json),
        Cmd::VerifySecrets(e) => verify_secrets::run(root, &e),
        Cmd::RemoveSecrets(e, a) => remove_secrets::run(root, &e, a),
        Cmd::RotateSecrets(e, a) => rotate_secrets::run(root, &e, a),
        Cmd::GenerateSecret { length } => generate_secret::run(length),
        Cmd::Deploy(e, a) => deploy::run(root, &e, a),
        Cmd::Doctor(e, json) => doctor::run(root, &e, json),
        Cmd::Check => check::run(root),
        Cmd::Status {
            envs,
            check,
            json,
            openmetrics,
            out,
        } => status::run(
            root,
            &envs,
            check,
            match (json, openmetrics) {
                (_, true) => status::Format::OpenMetrics { out },
                (true, _) => status::Format::Json,
                _ => status::Format::Table,
            },
        ),
        Cmd::Diff { a, b, json } => diff::run(root, &a, &b, json),
        Cmd::MigrateEnvToSecrets(a) => migrate_env_to_secrets::run(root, a),
        Cmd::AdoptSecrets(e, dry_run) => adopt_secrets::run(root, &e, dry_run),
        Cmd::Bench { what, sizes } => crate::bench::run(root, &what, &sizes),
        Cmd::BackupSecrets(a) => backup_secrets::run(root, a),
        Cmd::RestoreSecrets(e, a) => restore_secrets::run(root, &e, a),
        Cmd::Scan(a) => scan::run(root, a),
        Cmd::Run(a) => run_local::run(root, a),
        Cmd::Completions { shell } => completions::run(&shell),
    }
}

/// The manifest, the environment (with `--backend` and `--namespace`
/// applied) and its store for one run.
pub struct Session {
    pub root: PathBuf,
    pub manifest: Manifest,
    pub env: Environment,
    pub store: Box<dyn SecretStore>,
}

/// What setup would do: the store's listing and the plan made from it.
pub struct Planned {
    pub listed: Vec<Stored>,
    pub steps: Vec<Step>,
}

impl Planned {
    pub fn count(&self, a: plan::Action) -> usize {
        self.steps.iter().filter(|s| s.action == a).count()
    }

    pub fn writes(&self) -> Vec<&Step> {
        self.steps.iter().filter(|s| s.action.writes()).collect()
    }
}

impl Session {
    pub fn open(root: &Path, e: &EnvArgs) -> Result<Session> {
        Session::open_with(root, e, |_| {})
    }

    /// [`Session::open`] with a change to the environment for this run only
    /// (a command's own flag that a store reads from its table).
    pub fn open_with(
        root: &Path,
        e: &EnvArgs,
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
        let store = store::open(&store::Scope {
            root,
            manifest: &manifest,
            env: &env,
        })?;
        Ok(Session {
            root: root.to_path_buf(),
            manifest,
            env,
            store,
        })
    }

    /// Takes the environment's lock for `command` (see [`crate::lock`]) and
    /// removes what interrupted runs left behind.
    pub fn lock(&self, command: &str, timeout: std::time::Duration) -> Result<lock::EnvLock> {
        let l = lock::acquire(&self.root, &self.env.name, command, timeout)?;
        let (env_file, _) = resolve::locate(&self.root, &self.env)?;
        let mut dirs = vec![crate::store::compose::secrets_dir(
            &self.root,
            &self.env.name,
        )];
        dirs.extend(env_file.parent().map(Path::to_path_buf));
        lock::sweep(&self.root, &dirs)?;
        crate::audit::sweep(&self.root)?;
        // Before any change: a run that could not log its changes must not make them.
        crate::audit::check_writable_place(&self.root)?;
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
        let swept =
            crate::docker::Docker::new().and_then(|d| runtime::swarm::sweep_hook_leftovers(&d));
        match swept {
            Ok((removed, left)) => {
                for r in removed {
                    println!("removed {r}, left by a rotate hook that was interrupted");
                }
                for l in left {
                    output::warn(&format!(
                        "could not remove {l}; it holds a rotated value: remove it by hand (docker secret rm / docker service rm)"
                    ));
                }
            }
            Err(e) => output::warn(&format!(
                "could not look for what interrupted rotate hooks left: {e:#}"
            )),
        }
    }

    /// The runtime, opened when a command needs it (setup never does).
    pub fn runtime(&self) -> Result<Box<dyn Runtime>> {
        runtime::open(&runtime::Scope {
            root: &self.root,
            manifest: &self.manifest,
            env: &self.env,
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
            output::warn(w);
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
            output::warn(&n);
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
            output::warn(&format!("{e:#}"));
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
