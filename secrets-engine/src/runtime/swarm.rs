//! Docker Swarm running the stack file (`docker-compose.swarm.yml`) as stack
//! `<project>-<env>`. `deploy` sets `XTASK_SECRET_<NAME>` to each secret's
//! current versioned name, runs `docker stack deploy`, and polls until every
//! service runs its current spec, failing early on a rolled-back or paused
//! update or on tasks that keep failing.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{DeployOptions, Poll, Runtime, Scope};
use crate::{
    edit::stackfile::{self, StackFile},
    model::manifest::{BackendKind, Manifest},
    model::time,
    plan::Users,
    tools::docker::Docker,
};

pub(crate) struct SwarmRuntime {
    sink: crate::sink::Shared,
    docker: Docker,
    root: PathBuf,
    manifest: Manifest,
    env: String,
    stack_file: PathBuf,
    /// More compose files merged over the stack file (`docker stack deploy -c`).
    overrides: Vec<PathBuf>,
}

/// The temporary secrets and jobs of rotate hooks (`deploy/hooks/lib.sh`,
/// label `xtask.hook=1`) whose hook was killed before its cleanup, on this
/// host: the secret holds a new value. Pure: `(name, pid, host)` from the
/// listing; a name of the older form `xtask-hook-<pid>-<n>` without labels
/// gives its pid, and counts as this host's.
pub fn stale_hook_objects(
    listing: &str,
    this_host: &str,
    alive: impl Fn(u32) -> bool,
) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| {
            let mut f = l.trim().split('|');
            let (name, pid, host) = (f.next()?, f.next().unwrap_or(""), f.next().unwrap_or(""));
            let pid: u32 = match pid.parse() {
                Ok(p) => p,
                Err(_) => name
                    .strip_prefix("xtask-hook-")?
                    .split('-')
                    .next()?
                    .parse()
                    .ok()?,
            };
            let here = host.is_empty() || host == this_host;
            (here && !alive(pid)).then(|| name.to_string())
        })
        .collect()
}

const HOOK_LS_FORMAT: &str =
    "{{.Name}}|{{.Label \"xtask.hook.pid\"}}|{{.Label \"xtask.hook.host\"}}";

/// Removes what killed rotate hooks left on this host (see
/// [`stale_hook_objects`]): each job service first, then its secret, retried
/// while the job's task still holds it. Returns what was removed, and what
/// could not be (with the reason).
pub fn sweep_hook_leftovers(docker: &Docker) -> Result<(Vec<String>, Vec<String>)> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let alive = crate::disk::fsutil::process_alive;
    // The hook objects of one kind (`secret` or `service`), as listed.
    let listed = |kind: &str| {
        docker.read(
            &[
                kind,
                "ls",
                "--filter",
                "label=xtask.hook=1",
                "--format",
                HOOK_LS_FORMAT,
            ],
            "",
        )
    };
    let secrets = listed("secret")?;
    let services = listed("service")?;
    let (mut removed, mut left) = (Vec::new(), Vec::new());
    for job in stale_hook_objects(&services, host.trim(), alive) {
        match docker.read(&["service", "rm", &job], "") {
            Ok(_) => removed.push(format!("the job {job}")),
            Err(e) => left.push(format!("the job {job}: {e:#}")),
        }
    }
    for secret in stale_hook_objects(&secrets, host.trim(), alive) {
        let mut last = None;
        // The job's task may take a moment to go after `service rm`.
        for _ in 0..20 {
            match docker.read(&["secret", "rm", &secret], "") {
                Ok(_) => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        match last {
            None => removed.push(format!("the temporary secret {secret}")),
            Some(e) => left.push(format!("the temporary secret {secret}: {e:#}")),
        }
    }
    Ok((removed, left))
}

/// Swarm's rule for each top-level secret: external, named by the variable
/// deploy sets to the current version.
pub fn def_problems(file: &str, stack: &StackFile) -> Vec<String> {
    let mut out = Vec::new();
    for (name, def) in &stack.secrets {
        let var = format!("XTASK_SECRET_{}", name.to_ascii_uppercase());
        if !def.external || !def.name.as_deref().is_some_and(|n| n.contains(&var)) {
            out.push(format!(
                "{file}: secret {name} must be `external: true` with `name: ${{{var}:?set by cargo xtask deploy}}`, so deploy can point it at the current version"
            ));
        }
    }
    out
}

/// Every disagreement between a stack file and the manifest. A service in a
/// secret's `kept_by` mounts `<name>_kept` (the version it started with), so
/// rotations do not restart it; the rest of the check sees `<name>`.
pub fn check_file(manifest: &Manifest, file: &str, stack: &StackFile) -> Vec<String> {
    let mut defs = def_problems(file, stack);
    let mut seen = stack.clone();
    for (svc, refs) in seen.services.iter_mut() {
        for r in refs.iter_mut() {
            let kept = manifest
                .secrets
                .iter()
                .find(|s| s.kept_by.contains(svc) && (*r == s.name || *r == kept_key(&s.name)));
            match kept {
                Some(spec) if *r == spec.name => defs.push(format!(
                    "{file}: service {svc} keeps its own copy of {0} (kept_by in deploy/secrets.toml): mount `source: {1}, target: {0}` so a rotation does not restart it",
                    spec.name,
                    kept_key(&spec.name)
                )),
                Some(spec) => *r = spec.name.clone(),
                None => {}
            }
        }
    }
    seen.secrets.retain(|k, _| {
        !manifest
            .secrets
            .iter()
            .any(|s| !s.kept_by.is_empty() && *k == kept_key(&s.name))
    });
    super::check_stack(manifest, BackendKind::Swarm, file, &seen, defs)
}

/// The stack file's key for the version that `kept_by` services keep.
pub fn kept_key(secret: &str) -> String {
    format!("{secret}_kept")
}

/// `XTASK_SECRET_<NAME>` → current versioned name, and `XTASK_ENV`
/// (`deploy` adds `XTASK_PROJECT`).
pub fn stack_vars(env: &str, current: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut vars: BTreeMap<String, String> = current
        .iter()
        .map(|(s, id)| {
            (
                format!("XTASK_SECRET_{}", s.to_ascii_uppercase()),
                id.clone(),
            )
        })
        .collect();
    vars.insert("XTASK_ENV".into(), env.to_string());
    vars
}

/// The stack file `deploy` deploys for `env` (`stack_file`, default
/// `docker-compose.swarm.yml`), for readers that need nothing else.
pub fn stack_file(env: &crate::model::manifest::Environment) -> Result<PathBuf> {
    let mut t = env.settings_for(BackendKind::Swarm);
    Ok(PathBuf::from(
        t.opt_str("stack_file")?
            .unwrap_or_else(|| "docker-compose.swarm.yml".into()),
    ))
}

impl SwarmRuntime {
    pub(crate) fn new(s: &Scope) -> Result<SwarmRuntime> {
        let mut t = s.env.settings_for(BackendKind::Swarm);
        let stack_file = PathBuf::from(
            t.opt_str("stack_file")?
                .unwrap_or_else(|| "docker-compose.swarm.yml".into()),
        );
        let overrides = t
            .opt_str_list("stack_overrides")?
            .into_iter()
            .map(PathBuf::from)
            .collect();
        t.finish()?;
        Ok(SwarmRuntime {
            sink: s.sink.clone(),
            docker: Docker::new()?,
            root: s.root.to_path_buf(),
            manifest: s.manifest.clone(),
            env: s.env.name.clone(),
            stack_file,
            overrides,
        })
    }

    fn stack(&self) -> String {
        format!("{}-{}", self.manifest.project, self.env)
    }

    fn read(&self, args: &[&str], next: &str) -> Result<String> {
        self.docker
            .read(args, next)
            .map_err(|e| self.docker.swarm_diagnose(e))
    }

    fn load(&self) -> Result<(String, StackFile)> {
        let shown = self.stack_file.display().to_string();
        let text = std::fs::read_to_string(self.root.join(&self.stack_file)).with_context(|| {
            format!("cannot read {shown}; the swarm runtime deploys it (set stack_file in [environments.{}.swarm] in deploy/secrets.toml)", self.env)
        })?;
        let parsed = stackfile::parse(&text).with_context(|| format!("in {shown}"))?;
        Ok((text, parsed))
    }

    /// Docker secret name → the services (of any stack) that use it.
    fn service_users(&self) -> Result<Users> {
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

    /// `XTASK_SECRET_<NAME>_KEPT` for each secret with `kept_by`: the version
    /// those services run now (from their spec), or the current one for a
    /// service not deployed yet or whose version is gone.
    fn kept_vars(&self, current: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>> {
        let kept: Vec<_> = self
            .manifest
            .secrets
            .iter()
            .filter(|s| !s.kept_by.is_empty())
            .collect();
        let mut out = BTreeMap::new();
        if kept.is_empty() {
            return Ok(out);
        }
        let existing = self.read(&["secret", "ls", "--format", "{{.Name}}"], "")?;
        let mut mounted: BTreeMap<String, String> = BTreeMap::new();
        for svc in kept
            .iter()
            .flat_map(|s| &s.kept_by)
            .collect::<std::collections::BTreeSet<_>>()
        {
            let name = format!("{}_{svc}", self.stack());
            let format = "{{range .Spec.TaskTemplate.ContainerSpec.Secrets}}{{.File.Name}}={{.SecretName}},{{end}}";
            // A service not deployed yet keeps nothing.
            let text = self
                .docker
                .read(&["service", "inspect", "--format", format, &name], "")
                .unwrap_or_default();
            for (target, id) in text.trim().split(',').filter_map(|p| p.split_once('=')) {
                if existing.lines().any(|l| l == id) {
                    mounted.insert(format!("{svc}/{target}"), id.to_string());
                }
            }
        }
        for spec in kept {
            let Some(now) = current.get(&spec.name) else {
                continue;
            };
            let used = spec
                .kept_by
                .iter()
                .find_map(|svc| mounted.get(&format!("{svc}/{}", spec.name)));
            let var = format!("XTASK_SECRET_{}_KEPT", spec.name.to_ascii_uppercase());
            out.insert(var, used.unwrap_or(now).clone());
        }
        Ok(out)
    }

    fn wait_converged(&self, stack: &str, started: SystemTime, timeout: Duration) -> Result<()> {
        let hint = format!("; see `docker stack ps {stack} --no-trunc`");
        super::wait_until(
            &*self.sink,
            stack,
            timeout,
            Duration::from_secs(1),
            &hint,
            || {
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
                    serde_json::from_str(
                        &self.docker.read(&args, "").unwrap_or_else(|_| "[]".into()),
                    )
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
            },
        )
    }
}

impl Runtime for SwarmRuntime {
    fn hook_env(&self) -> Vec<(String, String)> {
        vec![
            ("XTASK_STACK".into(), self.stack()),
            (
                "XTASK_DOCKER".into(),
                self.docker.tool.bin.to_string_lossy().into_owned(),
            ),
        ]
    }

    fn check(&self) -> Result<Vec<String>> {
        if !self.root.join(&self.stack_file).exists() {
            return Ok(Vec::new());
        }
        let (_, parsed) = self.load()?;
        Ok(check_file(
            &self.manifest,
            &self.stack_file.display().to_string(),
            &parsed,
        ))
    }

    fn users(&self) -> Result<Option<Users>> {
        self.service_users().map(Some)
    }

    fn running_versions(&self) -> Result<Vec<super::drift::Running>> {
        let ids = self.read(&["service", "ls", "-q"], "")?;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec!["service", "inspect"];
        args.extend(&ids);
        let services: Vec<Value> = serde_json::from_str(&self.read(&args, "")?)
            .context("docker service inspect gave no JSON")?;
        let mut args = vec![
            "service",
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            "desired-state=running",
        ];
        args.extend(&ids);
        let task_ids = self.read(&args, "")?;
        let task_ids: Vec<&str> = task_ids.split_whitespace().collect();
        let tasks: Vec<Value> = if task_ids.is_empty() {
            Vec::new()
        } else {
            let mut args = vec!["inspect", "--type", "task"];
            args.extend(&task_ids);
            serde_json::from_str(&self.read(&args, "")?)
                .context("docker inspect --type task gave no JSON")?
        };
        Ok(running_of(&services, &tasks))
    }

    fn stop_hint(&self) -> String {
        format!("docker stack rm {}", self.stack())
    }

    fn deploy(&self, current: &BTreeMap<String, String>, opts: &DeployOptions) -> Result<()> {
        let shown = self.stack_file.display().to_string();
        let (text, _) = self.load()?;
        let problems = self.check()?;
        if !problems.is_empty() {
            bail!(
                "{shown} and deploy/secrets.toml disagree:\n  - {}\nfix them (`cargo xtask check`) before deploying",
                problems.join("\n  - ")
            );
        }
        let mut vars = stack_vars(&self.env, current);
        vars.insert("XTASK_PROJECT".into(), self.manifest.project.clone());
        vars.extend(self.kept_vars(current)?);
        let stack = self.stack();
        let (text, rendered) = match &opts.reader {
            None => (text, None),
            Some(r) => {
                let var = format!("XTASK_SECRET_{}", r.credential.to_ascii_uppercase());
                let def = serde_norway::from_str(&format!(
                    "external: true\nname: ${{{var}:?set by cargo xtask deploy}}\n"
                ))?;
                let text = stackfile::for_reader(&text, &reader_edit(r, def))
                    .with_context(|| format!("in {shown}"))?;
                let f = match opts.dry_run {
                    true => None,
                    false => Some(super::RenderedFile::write(
                        &self.root,
                        &self.stack_file,
                        &text,
                    )?),
                };
                (text, f)
            }
        };
        let shown = rendered.as_ref().map_or(shown, |f| f.shown.clone());
        let mut files = vec!["-c".to_string(), shown.clone()];
        for o in &self.overrides {
            files.extend(["-c".to_string(), o.display().to_string()]);
        }
        if opts.dry_run {
            self.sink.line(&format!(
                "would run: docker stack deploy {} {stack}",
                files.join(" ")
            ));
            self.sink.line(&format!(
                "with the stack file resolved as:\n{}",
                stackfile::interpolate(&text, &vars)
            ));
            return Ok(());
        }
        let started = SystemTime::now();
        // Images are resolved to digests by default (consistent across nodes);
        // XTASK_RESOLVE_IMAGE=never deploys locally built images with no registry.
        let resolve = std::env::var("XTASK_RESOLVE_IMAGE").unwrap_or_else(|_| "always".into());
        let envs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut args = vec!["stack", "deploy", "--resolve-image", &resolve];
        args.extend(files.iter().map(String::as_str));
        args.push(&stack);
        self.docker
            .tool
            .stream(&self.root, &envs, &args, opts.timeout)
            .map_err(|e| self.docker.swarm_diagnose(e))?;
        self.wait_converged(&stack, started, opts.timeout)
    }
}

/// The edit of a compose-format file for `delivery = "reader"`.
pub(crate) fn reader_edit(
    r: &super::ReaderDeploy,
    definition: serde_norway::Value,
) -> stackfile::ReaderEdit<'_> {
    stackfile::ReaderEdit {
        secrets: &r.secrets,
        vars: &r.vars,
        credential: &r.credential,
        definition,
    }
}

/// Pure: what runs, from `docker service inspect` of every service and
/// `docker inspect --type task` of the tasks meant to run: each service's spec
/// (what its next task gets) and each task that has not ended (what its
/// container mounts now), named `service/<name>` and `task/<name>.<slot>`
/// (`<name>.<node>` for global services). The service is the stack file's
/// name (the stack namespace removed).
pub fn running_of(services: &[Value], tasks: &[Value]) -> Vec<super::drift::Running> {
    use super::drift::{Mounted, Running};
    let s = |v: &Value, p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let mounts = |v: Option<&Value>| -> Vec<Mounted> {
        secret_names(v).into_iter().map(Mounted::Id).collect()
    };
    let mut out = Vec::new();
    let mut names: BTreeMap<String, (String, String)> = BTreeMap::new();
    for svc in services {
        let name = s(svc, "/Spec/Name");
        let ns = s(svc, "/Spec/Labels/com.docker.stack.namespace");
        let short = match ns.is_empty() {
            true => name.clone(),
            false => name
                .strip_prefix(&format!("{ns}_"))
                .unwrap_or(&name)
                .to_string(),
        };
        names.insert(s(svc, "/ID"), (name.clone(), short.clone()));
        out.push(Running {
            who: format!("service/{name}"),
            service: short,
            mounts: mounts(svc.pointer("/Spec/TaskTemplate/ContainerSpec/Secrets")),
        });
    }
    for t in tasks {
        let ended = matches!(
            s(t, "/Status/State").as_str(),
            "complete" | "shutdown" | "failed" | "rejected" | "orphaned" | "remove"
        );
        if s(t, "/DesiredState") != "running" || ended {
            continue;
        }
        let Some((name, short)) = names.get(&s(t, "/ServiceID")) else {
            continue;
        };
        let slot = match t.pointer("/Slot").and_then(Value::as_u64) {
            Some(n) if n > 0 => n.to_string(),
            _ => s(t, "/NodeID").chars().take(12).collect(),
        };
        out.push(Running {
            who: format!("task/{name}.{slot}"),
            service: short.clone(),
            mounts: mounts(t.pointer("/Spec/ContainerSpec/Secrets")),
        });
    }
    out
}

/// Where one Swarm service stands in a rollout.
pub(crate) struct ServiceStatus {
    /// The update is done and the desired tasks run the current spec.
    pub converged: bool,
    /// Where the update is, for progress lines.
    pub progress: String,
    /// Why it is failing, when it is (three failed tasks).
    pub failure: Option<String>,
}

/// Pure: one service's state from its `docker service inspect` JSON and every
/// task's `docker inspect` JSON. Converged means: no update in progress or
/// paused, and the desired number of tasks running with the service's current
/// secrets and image. Three failed tasks since `since` count as failing.
pub(crate) fn service_status(svc: &Value, tasks: &[Value], since: SystemTime) -> ServiceStatus {
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
    // Only this deploy's tasks: an error of an earlier, failed deploy's task
    // (kept in the task history) says nothing about this one.
    let last_error = mine
        .iter()
        .filter(|t| !s(t, "/Status/Err").is_empty())
        .filter(|t| time::parse_rfc3339(&s(t, "/CreatedAt")).is_some_and(|c| c >= since))
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
        .filter(|t| time::parse_rfc3339(&s(t, "/CreatedAt")).is_some_and(|c| c >= since))
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

#[cfg(test)]
mod tests {
    use super::*;

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
        // An earlier deploy's failed task: its error is history, not news.
        let mut earlier = task("rejected", "shutdown", "x_v1", "No such image: old");
        earlier["CreatedAt"] = serde_json::json!("2025-12-31T00:00:00Z");
        let later = time::parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
        let s = service_status(&svc, &[old[0].clone(), earlier], later);
        assert_eq!(s.progress, "st_web 1/2", "an old task's error was shown");
        let mut paused = svc.clone();
        paused["UpdateStatus"] =
            serde_json::json!({"State":"rollback_completed","Message":"update rolled back"});
        let f = service_status(&paused, &[], since).failure.unwrap();
        assert!(f.contains("the update is rollback completed"), "{f}");
    }

    #[test]
    fn running_names_services_and_tasks_with_their_secrets() {
        let svc = serde_json::json!({"ID": "s1", "Spec": {"Name": "raqeem-production_backend",
            "Labels": {"com.docker.stack.namespace": "raqeem-production"},
            "TaskTemplate": {"ContainerSpec": {"Secrets": [{"SecretName": "x_v3"}]}}}});
        let task = |slot: u64, state: &str, desired: &str, secret: &str| {
            serde_json::json!({"ServiceID": "s1", "Slot": slot, "NodeID": "n1",
                "DesiredState": desired, "Status": {"State": state},
                "Spec": {"ContainerSpec": {"Secrets": [{"SecretName": secret}]}}})
        };
        let tasks = [
            task(1, "running", "running", "x_v3"),
            task(2, "running", "running", "x_v2"),
            task(2, "shutdown", "shutdown", "x_v1"),
            task(3, "failed", "running", "x_v1"),
            // A task of a service that is gone meanwhile.
            serde_json::json!({"ServiceID": "s9", "DesiredState": "running", "Status": {"State": "running"}}),
        ];
        let r = running_of(&[svc], &tasks);
        let shown: Vec<(String, String, Vec<super::super::drift::Mounted>)> = r
            .into_iter()
            .map(|r| (r.who, r.service, r.mounts))
            .collect();
        use super::super::drift::Mounted::Id;
        assert_eq!(
            shown,
            [
                (
                    "service/raqeem-production_backend".to_string(),
                    "backend".to_string(),
                    vec![Id("x_v3".into())]
                ),
                (
                    "task/raqeem-production_backend.1".into(),
                    "backend".into(),
                    vec![Id("x_v3".into())]
                ),
                (
                    "task/raqeem-production_backend.2".into(),
                    "backend".into(),
                    vec![Id("x_v2".into())]
                ),
            ]
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
    fn preview_fills_required_variables() {
        let vars = stack_vars("e", &[("a".to_string(), "p_e_a_v3".to_string())].into());
        let text =
            "name: ${XTASK_SECRET_A:?set by cargo xtask deploy}\nx: ${B:-d}\nenv: ${XTASK_ENV}\n";
        assert_eq!(
            stackfile::interpolate(text, &vars),
            "name: p_e_a_v3\nx: d\nenv: e\n"
        );
    }

    #[test]
    fn external_versioned_names_are_required() {
        let m = Manifest::parse("project = \"d\"\n[environments.p]\nbackend = \"swarm\"\n[secrets.db_password]\nkind = \"password\"\nservices = [\"api\"]\n").unwrap();
        let s = stackfile::parse("services:\n  api:\n    secrets: [db_password]\nsecrets:\n  db_password:\n    file: ./s/db_password\n").unwrap();
        let p = check_file(&m, "s.yml", &s);
        assert!(
            p.iter()
                .any(|x| x
                    .contains("must be `external: true` with `name: ${XTASK_SECRET_DB_PASSWORD")),
            "{p:?}"
        );
    }

    #[test]
    fn kept_by_services_mount_the_kept_version() {
        let m = Manifest::parse("project = \"d\"\n[environments.p]\nbackend = \"swarm\"\n[secrets.pw]\nkind = \"password\"\nservices = [\"api\", \"db\"]\nkept_by = [\"db\"]\nrotate_hook = [\"h\"]\n").unwrap();
        let def = |k: &str| {
            format!(
                "  {k}:\n    external: true\n    name: ${{XTASK_SECRET_{}:?set by cargo xtask deploy}}\n",
                k.to_uppercase()
            )
        };
        let good = format!(
            "services:\n  api:\n    secrets: [pw]\n  db:\n    secrets:\n      - {{ source: pw_kept, target: pw }}\nsecrets:\n{}{}",
            def("pw"),
            def("pw_kept")
        );
        let p = check_file(&m, "s.yml", &stackfile::parse(&good).unwrap());
        assert!(p.is_empty(), "{p:?}");
        let plain = format!(
            "services:\n  api:\n    secrets: [pw]\n  db:\n    secrets: [pw]\nsecrets:\n{}",
            def("pw")
        );
        let p = check_file(&m, "s.yml", &stackfile::parse(&plain).unwrap());
        assert!(
            p.iter().any(|x| x.contains(
                "service db keeps its own copy of pw (kept_by in deploy/secrets.toml): mount `source: pw_kept, target: pw`"
            )),
            "{p:?}"
        );
    }

    #[test]
    fn stale_hook_objects_are_this_hosts_with_a_dead_pid() {
        let listing = "xtask-hook-100-1|100|h1\nxtask-hook-200-2|200|h1\nxtask-hook-300-3|300|h2\nxtask-hook-400-4||\nother|x|h1\n";
        let alive = |pid: u32| pid == 200;
        assert_eq!(
            stale_hook_objects(listing, "h1", alive),
            vec![
                "xtask-hook-100-1".to_string(),
                "xtask-hook-400-4".to_string()
            ]
        );
    }
}
