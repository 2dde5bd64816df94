//! Flows several test files share. The swarm tests (swarm.rs, adopt.rs): the
//! probe project's manifest and stack file, the labels of a swarm secret, and
//! the load client that runs beside a rotation and is judged after it. The
//! store tests (aws.rs, vault.rs): a project of their own, a deploy under
//! strace with nothing on any argv, what the services show, and the places a
//! traced flow must not show a value. And the guard that takes a test's
//! `<project>-develop` stack and its secrets down (vault.rs, leak_flow.rs).

use super::{DEVELOP_SECRETS, Run, TempRepo, docker, sha12};
use std::{path::Path, process::Command, time::Duration};

/// The probe project's secrets, served by its `web` service.
pub const NAMES: [&str; 4] = ["app_user", "app_password", "app_url", "api_key"];

/// The probe project's manifest: environment `env` on swarm, the stack in
/// `test-stack.yml`; `password_extra` (TOML lines) goes into `app_password`.
pub fn probe_manifest(project: &str, env: &str, password_extra: &str) -> String {
    format!(
        r#"project = "{project}"
compose_file = "no-compose.yml"
stack_file = "test-stack.yml"

[environments.{env}]
backend = "swarm"

[secrets.app_user]
kind = "username"
services = ["web"]

[secrets.app_password]
kind = "password"
services = ["web"]
{password_extra}
[secrets.app_url]
kind = "derived"
template = "postgresql://{{app_user}}:{{app_password}}@db/{{project}}_{{env}}"
services = ["web"]

[secrets.api_key]
kind = "key"
services = ["web"]
"#
    )
}

/// The probe stack: two `web` replicas serving every secret on an attachable
/// overlay network `net` (dnsrr: no IPVS here), updated start-first;
/// `deploy_extra` (YAML lines) goes at the end of its `deploy` section.
pub fn probe_stack(image: &str, net: &str, deploy_extra: &str) -> String {
    let names = NAMES
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut s = format!(
        r#"version: "3.8"
services:
  web:
    image: {image}
    command: ["serve", "--port", "8080", {names}]
    healthcheck:
      test: ["CMD", "/probe", "health", "--port", "8080"]
      interval: 1s
      timeout: 2s
      retries: 3
    stop_grace_period: 3s
    networks: [net]
    secrets:
"#
    );
    for n in NAMES {
        s.push_str(&format!("      - {{ source: {n}, target: {n} }}\n"));
    }
    s.push_str(&format!(
        r#"    deploy:
      replicas: 2
      endpoint_mode: dnsrr
      update_config: {{ order: start-first, parallelism: 1, failure_action: rollback, monitor: 2s }}
{deploy_extra}networks:
  net:
    driver: overlay
    attachable: true
    name: {net}
secrets:
"#
    ));
    for n in NAMES {
        s.push_str(&format!(
            "  {n}:\n    external: true\n    name: ${{XTASK_SECRET_{}:?set by cargo xtask deploy}}\n",
            n.to_uppercase()
        ));
    }
    s
}

/// The `NAME FINGERPRINT` line the probe serves for `name` with `value`.
pub fn served(name: &str, value: &str) -> String {
    format!("{name} {}", sha12(value.as_bytes()))
}

/// The labels of swarm secret `name`, as JSON.
pub fn secret_labels(name: &str) -> serde_json::Value {
    let labels = docker(&[
        "secret",
        "inspect",
        "--format",
        "{{json .Spec.Labels}}",
        name,
    ]);
    serde_json::from_str(&labels).unwrap()
}

/// Starts the load client `name` on `net`: 400 requests to `web:8080`, one
/// every 100 ms, for at most 90 s.
pub fn start_load(name: &str, net: &str, image: &str) {
    docker(&[
        "run",
        "-d",
        "--name",
        name,
        "--network",
        net,
        image,
        "load",
        "--target",
        "web:8080",
        "--count",
        "400",
        "--max-seconds",
        "90",
        "--interval-ms",
        "100",
    ]);
}

/// Waits for the load client `name` to end and asserts that it exited 0 with
/// no failed request; returns its report (printed, labelled `during`).
pub fn load_report(name: &str, during: &str) -> String {
    let code = docker(&["wait", name]);
    let logs = Command::new("docker")
        .args(["logs", name])
        .output()
        .unwrap();
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&logs.stdout),
        String::from_utf8_lossy(&logs.stderr)
    );
    eprintln!("load client during {during}: {logs}");
    assert_eq!(code.trim(), "0", "{logs}");
    assert!(logs.contains("failed=0"), "{logs}");
    logs
}

/// Renames the repository's project to a unique `xt…` name (its store paths
/// and docker names then belong to this test alone) and returns that name.
pub fn own_project(repo: &TempRepo) -> String {
    let name = format!("xt{}", super::unique());
    let m = repo
        .read("deploy/secrets.toml")
        .replace("project = \"raqeem\"", &format!("project = \"{name}\""));
    repo.write("deploy/secrets.toml", &m);
    name
}

/// Runs `inner`, which must succeed. With a `log`, it runs under strace and
/// then no develop value (as `value_of` gives it, if 12 characters or more)
/// and none of `hidden` may be on any argv; `what` names the run.
pub fn ok_with_nothing_on_argv(
    inner: Command,
    log: Option<&Path>,
    value_of: &dyn Fn(&str) -> String,
    hidden: &[&str],
    what: &str,
) -> Run {
    let Some(log) = log else {
        let mut inner = inner;
        return Run::from(inner.output().unwrap()).ok();
    };
    let mut c = super::under_strace(&inner, false, log);
    let r = Run::from(c.output().unwrap()).ok();
    let trace = std::fs::read_to_string(log).unwrap();
    assert!(trace.contains("execve("), "strace recorded nothing");
    for s in DEVELOP_SECRETS {
        let v = value_of(s);
        if v.len() >= 12 {
            assert!(
                !trace.contains(&v),
                "the value of {s} is on an argv ({what})"
            );
        }
    }
    for (i, h) in hidden.iter().enumerate() {
        assert!(!trace.contains(h), "credential #{i} is on an argv ({what})");
    }
    r
}

/// Asserts what the services showed, `(name, source, fingerprint)`: the bytes
/// `value_of(name)` gives, read from the `/run/secrets` files (`files`) or
/// from the store at run time (`!files`).
pub fn assert_shown(
    shown: &[(String, String, String)],
    files: bool,
    value_of: &dyn Fn(&str) -> String,
) {
    for (n, source, fp) in shown {
        if files {
            assert_eq!(*source, format!("/run/secrets/{n}"), "{n}");
        } else {
            assert!(
                !source.starts_with("/run/secrets"),
                "{n} came from {source}"
            );
        }
        assert_eq!(*fp, sha12(value_of(n).as_bytes()), "{n}: other bytes");
    }
}

/// The traces and outputs of a flow, and the values none of them may show.
#[derive(Default)]
pub struct Places {
    seen: Vec<String>,
    places: Vec<(String, String)>,
}

impl Places {
    /// The trace and the output of the run of `args`.
    pub fn add(&mut self, args: &[&str], trace: String, run: &Run) {
        self.places.push((format!("the trace of {args:?}"), trace));
        self.places
            .push((format!("the output of {args:?}"), run.all()));
    }

    /// A value to look for: one of 12 characters or more, once.
    pub fn value(&mut self, v: String) {
        if v.len() >= 12 && !self.seen.contains(&v) {
            self.seen.push(v);
        }
    }

    /// Asserts that at least `at_least` values were collected (`why` says
    /// what too few means) and that no place shows any of them.
    pub fn assert_none_shown(&self, at_least: usize, why: &str) {
        assert!(self.seen.len() >= at_least, "{why}: {}", self.seen.len());
        for (i, v) in self.seen.iter().enumerate() {
            for (name, text) in &self.places {
                assert!(!text.contains(v.as_str()), "value #{i} appears in {name}");
            }
        }
    }
}

/// Removes the stack `<project>-develop` and the project's swarm secrets
/// whatever happens; the project's name is the field.
pub struct StackDown(pub String);

impl Drop for StackDown {
    fn drop(&mut self) {
        let stack = format!("{}-develop", self.0);
        let _ = Command::new("docker")
            .args(["stack", "rm", &stack])
            .output();
        // Secrets in use cannot go until the tasks are gone.
        for _ in 0..60 {
            let out = Command::new("docker")
                .args([
                    "ps",
                    "-aq",
                    "--filter",
                    &format!("label=com.docker.stack.namespace={stack}"),
                ])
                .output();
            if out.is_ok_and(|o| o.stdout.is_empty()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        super::remove_project_secrets(&self.0);
    }
}
