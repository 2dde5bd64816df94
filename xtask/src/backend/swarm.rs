//! Docker Swarm secrets. Swarm secrets are immutable, hence versioned names
//! (`<project>_<env>_<name>_v<N>`): a new value is a new version, and the stack
//! file maps each versioned name to a stable `target` inside the containers.
//!
//! Deciding is pure ([`plan_versions`], [`check_docker_name`], [`check_size`]);
//! the rest runs the docker CLI with argument vectors, values on stdin only.

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet},
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{Action, Backend, DeployOptions, Poll, Row, State, Step, Target};
use crate::{docker::Docker, resolve::Resolved, stackfile};

/// Docker refuses secrets larger than this (swarmkit's `MaxSecretSize`).
pub const MAX_SECRET_BYTES: usize = 500 * 1024;
/// Docker's limit on object names.
pub const MAX_NAME_LEN: usize = 64;
/// How many `docker secret create` calls run at once.
const PARALLEL: usize = 8;
pub const TOOL: &str = "cargo-xtask";

/// One secret version as `docker secret ls` shows it, from our labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Docker's name: `<project>_<env>_<name>_v<N>`.
    pub docker_name: String,
    /// The manifest's name.
    pub secret: String,
    pub version: u32,
    pub fingerprint: String,
}

/// One planned step with what the execution layer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub secret: String,
    pub action: Action,
    pub version: u32,
    pub docker_name: String,
    pub detail: String,
}

/// `<project>_<env>_<name>_v<N>`.
pub fn docker_name(project: &str, env: &str, secret: &str, version: u32) -> String {
    format!("{project}_{env}_{secret}_v{version}")
}

/// Docker's rule for secret names: `^[a-zA-Z0-9]+(?:[a-zA-Z0-9-_.]*[a-zA-Z0-9])?$`, at most 64 characters.
pub fn check_docker_name(name: &str) -> Result<()> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if !ok {
        bail!(
            "{name:?} is not a valid Docker secret name (letters, digits, `-`, `_`, `.`; starting and ending with a letter or digit); rename the project, environment or secret in deploy/secrets.toml"
        );
    }
    if name.len() > MAX_NAME_LEN {
        bail!(
            "the Docker secret name {name} is {} characters; Docker allows {MAX_NAME_LEN}. Shorten the project, environment or secret name in deploy/secrets.toml",
            name.len()
        );
    }
    Ok(())
}

/// Docker refuses empty secrets and secrets of 500 KiB or more.
pub fn check_size(secret: &str, origin: &str, len: usize) -> Result<()> {
    if len == 0 {
        bail!("{origin}: {secret} is empty; Docker secrets need at least one byte");
    }
    if len > MAX_SECRET_BYTES {
        bail!(
            "{origin}: {secret} is {len} bytes; Docker secrets must be at most {MAX_SECRET_BYTES} bytes (500 KiB); store a smaller value"
        );
    }
    Ok(())
}

/// The pure plan: for each wanted `(secret, fingerprint)`, create v1 when no
/// version exists, create vN+1 when the newest version holds other content,
/// else nothing. Listed versions of secrets not wanted are reported as extra.
pub fn plan_versions(
    project: &str,
    env: &str,
    wanted: &[(String, String)],
    listed: &[Listed],
) -> Vec<Planned> {
    let mut out = Vec::new();
    for (secret, fp) in wanted {
        let newest = listed
            .iter()
            .filter(|l| &l.secret == secret)
            .max_by_key(|l| l.version);
        let planned = match newest {
            None => Planned {
                secret: secret.clone(),
                action: Action::Create,
                version: 1,
                docker_name: docker_name(project, env, secret, 1),
                detail: String::new(),
            },
            Some(l) if &l.fingerprint == fp => Planned {
                secret: secret.clone(),
                action: Action::Unchanged,
                version: l.version,
                docker_name: l.docker_name.clone(),
                detail: String::new(),
            },
            Some(l) => Planned {
                secret: secret.clone(),
                action: Action::Update,
                version: l.version + 1,
                docker_name: docker_name(project, env, secret, l.version + 1),
                detail: format!("content changed, replaces v{}", l.version),
            },
        };
        out.push(planned);
    }
    let extra: BTreeSet<&str> = listed
        .iter()
        .map(|l| l.secret.as_str())
        .filter(|s| !wanted.iter().any(|(w, _)| w == s))
        .collect();
    for s in extra {
        let newest = listed
            .iter()
            .filter(|l| l.secret == s)
            .max_by_key(|l| l.version)
            .expect("listed");
        out.push(Planned {
            secret: s.to_string(),
            action: Action::Extra,
            version: newest.version,
            docker_name: newest.docker_name.clone(),
            detail: String::new(),
        });
    }
    for p in &mut out {
        let shown = format!("{} {}", p.docker_name, p.detail);
        p.detail = match p.action {
            Action::Extra => format!(
                "{} (not in the manifest for {env}; remove it with remove-secrets)",
                p.docker_name
            ),
            _ => shown.trim_end().to_string(),
        };
    }
    out
}

/// Versions of each secret to delete after a rotation: everything older than
/// the newest `keep + 1`, and never one a service still uses.
pub fn prune_candidates(
    listed: &[Listed],
    secrets: &[String],
    keep: usize,
    in_use: &BTreeSet<String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for s in secrets {
        let mut versions: Vec<&Listed> = listed.iter().filter(|l| &l.secret == s).collect();
        versions.sort_by_key(|l| std::cmp::Reverse(l.version));
        for l in versions.into_iter().skip(keep + 1) {
            if !in_use.contains(&l.docker_name) {
                out.push(l.docker_name.clone());
            }
        }
    }
    out
}

/// Parses the output of [`LS_FORMAT`]: `name|env|secret|version|fingerprint` lines.
pub fn parse_listing(text: &str, env: &str) -> Vec<Listed> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.trim().split('|').collect();
            let [name, e, secret, version, fp] = f[..] else {
                return None;
            };
            if e != env || secret.is_empty() {
                return None;
            }
            Some(Listed {
                docker_name: name.to_string(),
                secret: secret.to_string(),
                version: version.parse().ok()?,
                fingerprint: fp.to_string(),
            })
        })
        .collect()
}

/// One `docker secret ls` call gives names and labels together.
const LS_FORMAT: &str = "{{.Name}}|{{.Label \"xtask.environment\"}}|{{.Label \"xtask.secret\"}}|{{.Label \"xtask.version\"}}|{{.Label \"xtask.fingerprint\"}}";

pub struct Swarm {
    docker: Docker,
    /// The last plan's docker names, so `apply` need not list again.
    last_plan: RefCell<Vec<Planned>>,
}

impl Swarm {
    pub fn new() -> Result<Swarm> {
        Ok(Swarm::with_docker(Docker::new()?))
    }

    pub fn with_docker(docker: Docker) -> Swarm {
        Swarm {
            docker,
            last_plan: RefCell::new(Vec::new()),
        }
    }

    /// Turns a failed docker call into the plain reason: no daemon, no swarm,
    /// not a manager. Only runs after a failure, so the happy path costs nothing.
    fn diagnose(&self, err: anyhow::Error) -> anyhow::Error {
        if let Err(e) = self.docker.ping() {
            return e;
        }
        let out = self.docker.read(
            &[
                "info",
                "--format",
                "{{.Swarm.LocalNodeState}}|{{.Swarm.ControlAvailable}}",
            ],
            "",
        );
        match out.as_deref().map(str::trim) {
            Ok(s) if s.starts_with("inactive") => anyhow::anyhow!(
                "this Docker node is not in swarm mode; run `docker swarm init` (or join a swarm) first, or use --backend compose"
            ),
            Ok(s) if s.ends_with("|false") => anyhow::anyhow!(
                "this Docker node is a swarm worker; secrets are managed on a manager node: run this there, or point DOCKER_HOST at a manager (`docker node promote` makes this node one)"
            ),
            _ => err,
        }
    }

    fn read(&self, args: &[&str], next: &str) -> Result<String> {
        self.docker.read(args, next).map_err(|e| self.diagnose(e))
    }

    /// Every version of this environment's secrets: one docker call.
    pub fn listing(&self, t: &Target) -> Result<Vec<Listed>> {
        let project = format!("label=xtask.project={}", t.manifest.project);
        let env = format!("label=xtask.environment={}", t.env.name);
        let out = self.read(
            &[
                "secret", "ls", "--filter", &project, "--filter", &env, "--format", LS_FORMAT,
            ],
            "",
        )?;
        Ok(parse_listing(&out, &t.env.name))
    }

    fn planned(&self, t: &Target, r: &Resolved) -> Result<Vec<Planned>> {
        let key = r.fingerprint_key()?;
        let mut wanted = Vec::new();
        for d in &r.desired {
            check_size(&d.spec.name, &d.origin, d.value.len())?;
            check_docker_name(&docker_name(
                &t.manifest.project,
                &t.env.name,
                &d.spec.name,
                999,
            ))?;
            wanted.push((d.spec.name.clone(), d.value.fingerprint(key)));
        }
        let listed = self.listing(t)?;
        Ok(plan_versions(
            &t.manifest.project,
            &t.env.name,
            &wanted,
            &listed,
        ))
    }

    /// Docker secret name → the services (of any stack) that use it.
    pub fn users(&self) -> Result<BTreeMap<String, Vec<String>>> {
        let ids = self.read(&["service", "ls", "-q"], "")?;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let mut args = vec![
            "service",
            "inspect",
            "--format",
            "{{.Spec.Name}}|{{range .Spec.TaskTemplate.ContainerSpec.Secrets}}{{.SecretName}},{{end}}",
        ];
        args.extend(ids);
        // A service removed between the two calls is not an error worth failing on.
        let text = self.docker.read(&args, "").unwrap_or_default();
        for line in text.lines() {
            let Some((svc, secrets)) = line.split_once('|') else {
                continue;
            };
            for s in secrets.split(',').filter(|s| !s.is_empty()) {
                out.entry(s.to_string()).or_default().push(svc.to_string());
            }
        }
        Ok(out)
    }

    /// Creation times of these docker secrets.
    fn created(&self, names: &[&str]) -> BTreeMap<String, SystemTime> {
        if names.is_empty() {
            return BTreeMap::new();
        }
        let mut args = vec![
            "secret",
            "inspect",
            "--format",
            "{{.Spec.Name}}|{{.CreatedAt}}",
        ];
        args.extend(names);
        let text = self.docker.read(&args, "").unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let (n, c) = l.split_once('|')?;
                Some((n.to_string(), parse_go_time(c)?))
            })
            .collect()
    }

    fn create_all(&self, t: &Target, r: &Resolved, todo: &[Planned]) -> Result<()> {
        let key = r.fingerprint_key()?;
        let next = AtomicUsize::new(0);
        let errors = Mutex::new(Vec::new());
        let docker = &self.docker;
        std::thread::scope(|s| {
            for _ in 0..PARALLEL.min(todo.len()) {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(p) = todo.get(i) else { break };
                        let res = (|| -> Result<()> {
                            let d = r
                                .get(&p.secret)
                                .context("plan names a secret that was not resolved")?;
                            let labels = [
                                format!("xtask.tool={TOOL}"),
                                format!("xtask.project={}", t.manifest.project),
                                format!("xtask.environment={}", t.env.name),
                                format!("xtask.secret={}", p.secret),
                                format!("xtask.version={}", p.version),
                                format!("xtask.fingerprint={}", d.value.fingerprint(key)),
                            ];
                            let mut args = vec!["secret", "create"];
                            for l in &labels {
                                args.push("--label");
                                args.push(l);
                            }
                            args.push(&p.docker_name);
                            args.push("-");
                            docker.run_with_stdin(&args, d.value.expose(), "")?;
                            Ok(())
                        })();
                        if let Err(e) = res {
                            errors
                                .lock()
                                .expect("no panics hold this lock")
                                .push(format!("{}: {e:#}", p.docker_name));
                        }
                    }
                });
            }
        });
        let errors = errors.into_inner().expect("no panics hold this lock");
        if !errors.is_empty() {
            bail!(
                "{} of {} secret(s) could not be created:\n  - {}\nre-run setup-secrets: what was created is kept and not created again",
                errors.len(),
                todo.len(),
                errors.join("\n  - ")
            );
        }
        Ok(())
    }

    /// `XTASK_SECRET_<NAME>` → current versioned name, and `XTASK_ENV`.
    fn stack_vars(t: &Target, plan: &[Planned]) -> BTreeMap<String, String> {
        let mut vars: BTreeMap<String, String> = plan
            .iter()
            .filter(|p| p.action != Action::Extra)
            .map(|p| {
                (
                    format!("XTASK_SECRET_{}", p.secret.to_ascii_uppercase()),
                    p.docker_name.clone(),
                )
            })
            .collect();
        vars.insert("XTASK_ENV".into(), t.env.name.clone());
        vars
    }

    fn wait_converged(&self, stack: &str, started: SystemTime, timeout: Duration) -> Result<()> {
        let hint = format!("; see `docker stack ps {stack} --no-trunc`");
        super::wait_until(stack, timeout, Duration::from_secs(1), &hint, || {
            let ns = format!("label=com.docker.stack.namespace={stack}");
            let ids = self.read(&["service", "ls", "-q", "--filter", &ns], "")?;
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if ids.is_empty() {
                bail!("the stack {stack} has no services; check the stack file");
            }
            let mut args = vec!["service", "inspect"];
            args.extend(&ids);
            let services: Vec<Value> = serde_json::from_str(&self.read(&args, "")?)
                .context("docker service inspect gave no JSON")?;
            let mut args = vec!["service", "ps", "-q", "--no-trunc"];
            args.extend(&ids);
            let task_ids = self.read(&args, "")?;
            let task_ids: Vec<&str> = task_ids.split_whitespace().collect();
            let tasks: Vec<Value> = if task_ids.is_empty() {
                Vec::new()
            } else {
                let mut args = vec!["inspect", "--type", "task"];
                args.extend(&task_ids);
                serde_json::from_str(&self.docker.read(&args, "").unwrap_or_else(|_| "[]".into()))
                    .unwrap_or_default()
            };
            let status: Vec<ServiceStatus> = services
                .iter()
                .map(|s| service_status(s, &tasks, started))
                .collect();
            let mut waiting = Vec::new();
            for s in &status {
                if let Some(e) = &s.failure {
                    bail!("{e}");
                }
                if !s.converged {
                    waiting.push(s.progress.clone());
                }
            }
            if waiting.is_empty() {
                let all: Vec<&str> = status.iter().map(|s| s.progress.as_str()).collect();
                Ok(Poll::Done(format!(
                    "{stack}: converged ({})",
                    all.join(", ")
                )))
            } else {
                Ok(Poll::Waiting(waiting.join(", ")))
            }
        })
    }
}

pub struct ServiceStatus {
    pub converged: bool,
    pub progress: String,
    pub failure: Option<String>,
}

/// Pure: one service's state from its `docker service inspect` JSON and every
/// task's `docker inspect` JSON. Converged means: no update in progress or
/// paused, and the desired number of tasks running with the service's current
/// secrets and image. Three failed tasks since `since` count as failing.
pub fn service_status(svc: &Value, tasks: &[Value], since: SystemTime) -> ServiceStatus {
    let s = |v: &Value, p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let name = s(svc, "/Spec/Name");
    let id = s(svc, "/ID");
    let want = svc
        .pointer("/Spec/Mode/Replicated/Replicas")
        .and_then(Value::as_u64);
    let update = s(svc, "/UpdateStatus/State");
    let update_msg = s(svc, "/UpdateStatus/Message");
    let spec_secrets = secret_names(svc.pointer("/Spec/TaskTemplate/ContainerSpec/Secrets"));
    let spec_image = s(svc, "/Spec/TaskTemplate/ContainerSpec/Image");
    let mine: Vec<&Value> = tasks.iter().filter(|t| s(t, "/ServiceID") == id).collect();
    let last_error = mine
        .iter()
        .filter(|t| !s(t, "/Status/Err").is_empty())
        .max_by_key(|t| s(t, "/Status/Timestamp"))
        .map(|t| s(t, "/Status/Err"));
    let fail = |why: String| ServiceStatus {
        converged: false,
        progress: String::new(),
        failure: Some(match &last_error {
            Some(e) => format!(
                "{name}: {why}; last task error: {e}. See `docker service ps {name} --no-trunc`"
            ),
            None => format!("{name}: {why}. See `docker service ps {name} --no-trunc`"),
        }),
    };
    if update == "paused" || update.starts_with("rollback") {
        let msg = if update_msg.is_empty() {
            String::new()
        } else {
            format!(" ({update_msg})")
        };
        return fail(format!("the update is {}{msg}", update.replace('_', " ")));
    }
    let failed = mine
        .iter()
        .filter(|t| matches!(s(t, "/Status/State").as_str(), "failed" | "rejected"))
        .filter(|t| super::compose::parse_rfc3339(&s(t, "/CreatedAt")).is_some_and(|c| c >= since))
        .count();
    if failed >= 3 {
        return fail(format!("{failed} tasks failed since this deploy began"));
    }
    let desired_running: Vec<&&Value> = mine
        .iter()
        .filter(|t| s(t, "/DesiredState") == "running")
        .collect();
    // A task is current when it runs the service's whole container spec, not
    // only its secrets and image, so a change to anything else is not taken as
    // converged before it rolled out. Docker prints defaults differently on the
    // two sides (`{}` or null, `false` or absent), hence the canonical form.
    let spec_container = canonical_spec(svc.pointer("/Spec/TaskTemplate/ContainerSpec"));
    let current = |t: &Value| {
        s(t, "/Status/State") == "running"
            && secret_names(t.pointer("/Spec/ContainerSpec/Secrets")) == spec_secrets
            && s(t, "/Spec/ContainerSpec/Image") == spec_image
            && canonical_spec(t.pointer("/Spec/ContainerSpec")) == spec_container
    };
    let ready = desired_running.iter().filter(|t| current(t)).count();
    let enough = match want {
        Some(n) => ready as u64 == n && desired_running.len() as u64 == n,
        None => ready == desired_running.len() && ready > 0,
    };
    let updating = update == "updating";
    let want_shown = want.map(|n| n.to_string()).unwrap_or_else(|| "all".into());
    let mut progress = format!("{name} {ready}/{want_shown}");
    if updating {
        progress.push_str(" updating");
    }
    if let Some(e) = &last_error
        && !enough
    {
        progress.push_str(&format!(" (last error: {e})"));
    }
    ServiceStatus {
        converged: enough && !updating,
        progress,
        failure: None,
    }
}

/// A container spec with defaults removed (null, false, "", {}, []) and without
/// StopGracePeriod, which `docker inspect --type task` leaves out.
fn canonical_spec(v: Option<&Value>) -> Value {
    fn strip(v: &Value) -> Option<Value> {
        match v {
            Value::Null | Value::Bool(false) => None,
            Value::String(s) if s.is_empty() => None,
            Value::Array(a) if a.is_empty() => None,
            Value::Array(a) => Some(Value::Array(
                a.iter().map(|x| strip(x).unwrap_or(Value::Null)).collect(),
            )),
            Value::Object(o) => {
                let kept: serde_json::Map<String, Value> = o
                    .iter()
                    .filter_map(|(k, x)| strip(x).map(|x| (k.clone(), x)))
                    .collect();
                (!kept.is_empty()).then_some(Value::Object(kept))
            }
            other => Some(other.clone()),
        }
    }
    let mut v = v.and_then(strip).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("StopGracePeriod");
    }
    v
}

fn secret_names(v: Option<&Value>) -> Vec<String> {
    let mut out: Vec<String> = v
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| {
                    x.get("SecretName")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Go's time format as `docker secret inspect` prints it:
/// `2026-11-22 10:00:00.123 +0000 UTC`.
fn parse_go_time(s: &str) -> Option<SystemTime> {
    let mut it = s.split_whitespace();
    let (date, time) = (it.next()?, it.next()?);
    super::compose::parse_rfc3339(&format!("{date}T{time}Z"))
}

impl Backend for Swarm {
    fn plan(&self, t: &Target, r: &Resolved) -> Result<Vec<Step>> {
        let planned = self.planned(t, r)?;
        let steps = planned
            .iter()
            .map(|p| Step {
                name: p.secret.clone(),
                action: p.action,
                detail: p.detail.clone(),
            })
            .collect();
        *self.last_plan.borrow_mut() = planned;
        Ok(steps)
    }

    fn apply(&self, t: &Target, r: &Resolved, plan: &[Step]) -> Result<()> {
        let known = self.last_plan.borrow().clone();
        let known = if plan.iter().all(|s| {
            known
                .iter()
                .any(|k| k.secret == s.name && k.action == s.action)
        }) {
            known
        } else {
            self.planned(t, r)?
        };
        let todo: Vec<Planned> = known
            .into_iter()
            .filter(|p| {
                matches!(p.action, Action::Create | Action::Update)
                    && plan.iter().any(|s| s.name == p.secret)
            })
            .collect();
        for p in &todo {
            check_docker_name(&p.docker_name)?;
        }
        self.create_all(t, r, &todo)
    }

    fn list(&self, t: &Target, r: Option<&Resolved>) -> Result<Vec<Row>> {
        let listed = self.listing(t)?;
        let users = self.users()?;
        let wanted: Option<Vec<(String, String)>> = match r {
            Some(r) => {
                let key = r.fingerprint_key()?;
                Some(
                    r.desired
                        .iter()
                        .map(|d| (d.spec.name.clone(), d.value.fingerprint(key)))
                        .collect(),
                )
            }
            None => None,
        };
        let names: Vec<String> = t
            .manifest
            .secrets_for(&t.env.name)
            .iter()
            .map(|s| s.name.clone())
            .collect();
        let stub: Vec<(String, String)> =
            names.iter().map(|n| (n.clone(), String::new())).collect();
        let plan = plan_versions(
            &t.manifest.project,
            &t.env.name,
            wanted.as_ref().unwrap_or(&stub),
            &listed,
        );
        let newest: Vec<&str> = plan
            .iter()
            .filter(|p| p.action != Action::Create)
            .map(|p| p.docker_name.as_str())
            .collect();
        let created = self.created(&newest);
        let now = SystemTime::now();
        let mut rows = Vec::new();
        for p in &plan {
            let exists = listed.iter().any(|l| l.secret == p.secret);
            let state = match (exists, p.action, wanted.is_some()) {
                (false, _, _) => State::Missing,
                (true, Action::Extra, _) => State::Extra,
                (true, _, false) => State::Unchecked,
                (true, Action::Unchanged, true) => State::Current,
                (true, _, true) => State::Drift,
            };
            let newest = listed
                .iter()
                .filter(|l| l.secret == p.secret)
                .max_by_key(|l| l.version);
            let versions = listed.iter().filter(|l| l.secret == p.secret).count();
            let mut used_by: Vec<String> = listed
                .iter()
                .filter(|l| l.secret == p.secret)
                .flat_map(|l| {
                    users
                        .get(&l.docker_name)
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .map(move |s| format!("{s}@v{}", l.version))
                })
                .collect();
            used_by.sort();
            rows.push(Row {
                name: p.secret.clone(),
                state,
                location: match newest {
                    Some(l) if versions > 1 => {
                        format!("{} (+{} older)", l.docker_name, versions - 1)
                    }
                    Some(l) => l.docker_name.clone(),
                    None => "-".into(),
                },
                version: newest.map(|l| l.version),
                age: newest
                    .and_then(|l| created.get(&l.docker_name))
                    .and_then(|c| now.duration_since(*c).ok()),
                used_by,
            });
        }
        Ok(rows)
    }

    fn plan_remove(&self, t: &Target, names: &[String]) -> Result<Vec<Step>> {
        let listed = self.listing(t)?;
        for n in names {
            if !listed.iter().any(|l| &l.secret == n)
                && t.manifest.secrets.iter().all(|s| &s.name != n)
            {
                bail!(
                    "{n} is neither in deploy/secrets.toml nor stored for {}; see `cargo xtask list-secrets {}`",
                    t.env.name,
                    t.env.name
                );
            }
        }
        let chosen: Vec<&Listed> = listed
            .iter()
            .filter(|l| names.is_empty() || names.contains(&l.secret))
            .collect();
        let users = if chosen.is_empty() {
            BTreeMap::new()
        } else {
            self.users()?
        };
        let busy: Vec<String> = chosen
            .iter()
            .filter_map(|l| {
                users
                    .get(&l.docker_name)
                    .map(|u| format!("{} is used by {}", l.docker_name, u.join(", ")))
            })
            .collect();
        if !busy.is_empty() {
            bail!(
                "refusing to remove secrets that services still use:\n  - {}\nremove the stack first (`docker stack rm {}`) or deploy without them",
                busy.join("\n  - "),
                t.stack_name()
            );
        }
        let mut steps: Vec<Step> = chosen
            .into_iter()
            .map(|l| Step {
                name: l.secret.clone(),
                action: Action::Update,
                detail: l.docker_name.clone(),
            })
            .collect();
        steps.sort_by(|a, b| (&a.name, &a.detail).cmp(&(&b.name, &b.detail)));
        Ok(steps)
    }

    fn remove(&self, _t: &Target, plan: &[Step]) -> Result<()> {
        if plan.is_empty() {
            return Ok(());
        }
        let mut args = vec!["secret", "rm"];
        args.extend(plan.iter().map(|s| s.detail.as_str()));
        self.read(
            &args,
            "a secret a service uses cannot be removed; check `docker service ls`",
        )?;
        Ok(())
    }

    fn deploy(&self, t: &Target, r: &Resolved, opts: &DeployOptions) -> Result<()> {
        let file = t.manifest.stack_file.clone();
        let shown = file.display().to_string();
        let text = std::fs::read_to_string(t.root.join(&file))
            .with_context(|| format!("cannot read {shown}; the swarm backend deploys it (set stack_file in deploy/secrets.toml)"))?;
        let parsed = stackfile::parse(&text).with_context(|| format!("in {shown}"))?;
        let problems = stackfile::check(
            t.manifest,
            crate::manifest::BackendKind::Swarm,
            &shown,
            &parsed,
        );
        if !problems.is_empty() {
            bail!(
                "{shown} and deploy/secrets.toml disagree:\n  - {}\nfix them (`cargo xtask check`) before deploying",
                problems.join("\n  - ")
            );
        }
        let planned = self.planned(t, r)?;
        let stale: Vec<&str> = planned
            .iter()
            .filter(|p| matches!(p.action, Action::Create | Action::Update))
            .map(|p| p.secret.as_str())
            .collect();
        if !stale.is_empty() {
            bail!(
                "the swarm secrets of {} are not set up or out of date ({}); run `cargo xtask setup-secrets {}` first",
                t.env.name,
                stale.join(", "),
                t.env.name
            );
        }
        let vars = Swarm::stack_vars(t, &planned);
        let stack = t.stack_name();
        if opts.dry_run {
            println!("would run: docker stack deploy -c {shown} {stack}");
            println!(
                "with the stack file resolved as:\n{}",
                stackfile::interpolate(&text, &vars)
            );
            return Ok(());
        }
        let started = SystemTime::now();
        let sh = self.docker.shell()?;
        sh.change_dir(t.root);
        let bin = &self.docker.bin;
        // Images are resolved to digests by default (consistent across nodes);
        // XTASK_RESOLVE_IMAGE=never deploys locally built images with no registry.
        let resolve = std::env::var("XTASK_RESOLVE_IMAGE").unwrap_or_else(|_| "always".into());
        let mut c = xshell::cmd!(
            sh,
            "{bin} stack deploy --resolve-image {resolve} -c {file} {stack}"
        );
        for (k, v) in &vars {
            c = c.env(k, v);
        }
        c.run().map_err(|e| {
            self.diagnose(anyhow::anyhow!(
                "`docker stack deploy` failed ({e}); its output is above"
            ))
        })?;
        self.wait_converged(&stack, started, opts.timeout)
    }

    fn prune(&self, t: &Target, secrets: &[String], keep: usize) -> Result<Vec<String>> {
        let listed = self.listing(t)?;
        let in_use: BTreeSet<String> = self.users()?.into_keys().collect();
        let gone = prune_candidates(&listed, secrets, keep, &in_use);
        if !gone.is_empty() {
            let mut args = vec!["secret", "rm"];
            args.extend(gone.iter().map(String::as_str));
            self.read(&args, "")?;
        }
        Ok(gone)
    }

    fn stored_versions(&self, t: &Target) -> Result<BTreeMap<String, String>> {
        let mut out: BTreeMap<String, (u32, String)> = BTreeMap::new();
        for l in self.listing(t)? {
            let e = out.entry(l.secret.clone()).or_insert((0, String::new()));
            if l.version > e.0 {
                *e = (l.version, l.docker_name.clone());
            }
        }
        Ok(out
            .into_iter()
            .map(|(k, (v, _))| (k, format!("v{v}")))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(secret: &str, v: u32, fp: &str) -> Listed {
        Listed {
            docker_name: docker_name("p", "e", secret, v),
            secret: secret.into(),
            version: v,
            fingerprint: fp.into(),
        }
    }

    fn w(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn plans_new_changed_unchanged_and_extra() {
        let listed = [
            l("a", 1, "f1"),
            l("a", 2, "f2"),
            l("b", 1, "x"),
            l("old", 3, "z"),
        ];
        let plan = plan_versions(
            "p",
            "e",
            &w(&[("a", "f2"), ("b", "y"), ("c", "q")]),
            &listed,
        );
        let got: Vec<(&str, Action, u32, &str)> = plan
            .iter()
            .map(|p| {
                (
                    p.secret.as_str(),
                    p.action,
                    p.version,
                    p.docker_name.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("a", Action::Unchanged, 2, "p_e_a_v2"),
                ("b", Action::Update, 2, "p_e_b_v2"),
                ("c", Action::Create, 1, "p_e_c_v1"),
                ("old", Action::Extra, 3, "p_e_old_v3"),
            ]
        );
        assert_eq!(plan[1].detail, "p_e_b_v2 content changed, replaces v1");
    }

    #[test]
    fn a_changed_value_never_reuses_a_name() {
        // Even when an older version held this content, the next version is new.
        let listed = [l("a", 1, "f1"), l("a", 2, "f2")];
        let plan = plan_versions("p", "e", &w(&[("a", "f1")]), &listed);
        assert_eq!((plan[0].action, plan[0].version), (Action::Update, 3));
    }

    #[test]
    fn listing_parses_labels_and_skips_other_envs() {
        let text = "p_e_a_v1|e|a|1|f1\np_x_a_v1|x|a|1|f1\ngarbage\np_e_b_v2|e|b|2|f9\n";
        assert_eq!(parse_listing(text, "e"), [l("a", 1, "f1"), l("b", 2, "f9")]);
    }

    #[test]
    fn names_follow_docker_rules() {
        assert!(check_docker_name("raqeem_production_postgres_password_v1").is_ok());
        assert!(check_docker_name("a").is_ok());
        assert!(check_docker_name("_a").is_err());
        assert!(check_docker_name("a-").is_err());
        assert!(check_docker_name("a b").is_err());
        assert!(check_docker_name("").is_err());
        let long = "a".repeat(65);
        let e = format!("{:#}", check_docker_name(&long).unwrap_err());
        assert!(e.contains("65 characters"), "{e}");
        assert!(check_docker_name(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn sizes_are_checked() {
        assert!(check_size("x", "f:1", 1).is_ok());
        assert!(check_size("x", "f:1", MAX_SECRET_BYTES).is_ok());
        let e = format!(
            "{:#}",
            check_size("x", "f:1", MAX_SECRET_BYTES + 1).unwrap_err()
        );
        assert!(e.contains("f:1: x is 512001 bytes"), "{e}");
        assert!(check_size("x", "f:1", 0).is_err());
    }

    #[test]
    fn prune_keeps_newest_and_previous_and_used() {
        let listed = [
            l("a", 1, ""),
            l("a", 2, ""),
            l("a", 3, ""),
            l("a", 4, ""),
            l("b", 1, ""),
        ];
        let used: BTreeSet<String> = ["p_e_a_v1".to_string()].into();
        assert_eq!(
            prune_candidates(&listed, &["a".into(), "b".into()], 1, &used),
            ["p_e_a_v2"]
        );
        assert_eq!(
            prune_candidates(&listed, &["a".into()], 0, &BTreeSet::new()),
            ["p_e_a_v3", "p_e_a_v2", "p_e_a_v1"]
        );
    }

    #[test]
    fn service_status_reads_progress_and_failures() {
        let since = SystemTime::UNIX_EPOCH;
        let svc: Value = serde_json::from_str(
            r#"{"ID":"s1","Spec":{"Name":"st_web","Mode":{"Replicated":{"Replicas":2}},"TaskTemplate":{"ContainerSpec":{"Image":"i","Secrets":[{"SecretName":"x_v2"}]}}}}"#,
        )
        .unwrap();
        let task = |state: &str, desired: &str, secret: &str, err: &str| -> Value {
            serde_json::json!({"ServiceID":"s1","DesiredState":desired,"CreatedAt":"2026-01-01T00:00:00Z",
                "Status":{"State":state,"Err":err,"Timestamp":"2026-01-01T00:00:01Z"},
                "Spec":{"ContainerSpec":{"Image":"i","Secrets":[{"SecretName":secret}]}}})
        };
        let ok = [
            task("running", "running", "x_v2", ""),
            task("running", "running", "x_v2", ""),
            task("shutdown", "shutdown", "x_v1", ""),
        ];
        assert!(service_status(&svc, &ok, since).converged);
        let old = [
            task("running", "running", "x_v2", ""),
            task("running", "running", "x_v1", ""),
        ];
        let s = service_status(&svc, &old, since);
        assert!(!s.converged && s.failure.is_none());
        assert_eq!(s.progress, "st_web 1/2");
        let bad: Vec<Value> = (0..3)
            .map(|_| task("rejected", "shutdown", "x_v2", "No such image: i"))
            .collect();
        let f = service_status(&svc, &bad, since).failure.unwrap();
        assert!(
            f.contains("st_web") && f.contains("No such image: i"),
            "{f}"
        );
        let mut paused = svc.clone();
        paused["UpdateStatus"] =
            serde_json::json!({"State":"rollback_completed","Message":"update rolled back"});
        let f = service_status(&paused, &[], since).failure.unwrap();
        assert!(f.contains("the update is rollback completed"), "{f}");
    }

    #[test]
    fn preview_fills_required_variables() {
        let vars: BTreeMap<String, String> = [("A".to_string(), "p_e_a_v3".to_string())].into();
        let text = "name: ${A:?set by cargo xtask deploy}\nx: ${B:-d}\n";
        assert_eq!(
            stackfile::interpolate(text, &vars),
            "name: p_e_a_v3\nx: d\n"
        );
    }

    #[test]
    fn canonical_specs_ignore_how_defaults_are_printed() {
        let svc: Value = serde_json::from_str(
            r#"{"Image":"i","Env":["A=1"],"DNSConfig":{},"Privileges":{"CredentialSpec":null,"NoNewPrivileges":false},"StopGracePeriod":10000000000}"#,
        )
        .unwrap();
        let task: Value = serde_json::from_str(
            r#"{"Image":"i","Env":["A=1"],"DNSConfig":null,"Privileges":{"CredentialSpec":null}}"#,
        )
        .unwrap();
        assert_eq!(canonical_spec(Some(&svc)), canonical_spec(Some(&task)));
        let changed: Value = serde_json::from_str(r#"{"Image":"i","Env":["A=2"]}"#).unwrap();
        assert_ne!(canonical_spec(Some(&svc)), canonical_spec(Some(&changed)));
    }

    #[test]
    fn go_times_parse() {
        assert!(parse_go_time("2026-11-22 10:00:00.123456 +0000 UTC").is_some());
    }
}
