//! The docker CLI as the Compose and Swarm modules see it: the shared
//! [`Tool`] runner plus what is docker's own (a live daemon, which Compose).

use std::{path::Path, time::Duration};

use anyhow::{Result, bail};

use crate::tools::runner::Tool;

/// The docker CLI.
pub struct Docker {
    /// The runner that calls it.
    pub tool: Tool,
}

impl Docker {
    /// `$DOCKER` when set, else `docker` from PATH.
    pub fn new() -> Result<Docker> {
        let mut tool = Tool::find_later(
            "docker",
            "DOCKER",
            "install Docker Engine (Debian: `apt-get install docker.io`)",
        );
        tool.silent = "the Docker daemon does not answer; start it (`systemctl start docker`, or `dockerd &`) or point DOCKER_HOST at a running engine".into();
        Ok(Docker { tool })
    }

    /// Runs `docker ARGS` quietly and returns stdout (see [`Tool::read`]).
    pub fn read(&self, args: &[&str], next_step: &str) -> Result<String> {
        self.tool.read(args, next_step)
    }

    /// Runs `docker ARGS` with `input` on stdin (the only way values reach docker).
    pub fn run_with_stdin(&self, args: &[&str], input: &[u8], next_step: &str) -> Result<String> {
        self.tool.run_with_stdin(args, input, next_step)
    }

    /// Fails with a plain next step when the daemon does not answer.
    pub fn ping(&self) -> Result<()> {
        let out = self
            .tool
            .output(&["version", "--format", "{{.Server.Version}}"], None)?;
        if !out.status.success() {
            bail!(
                "the Docker daemon does not answer ({}); start it (`systemctl start docker`, or `dockerd &`) or point DOCKER_HOST at a running engine",
                out.stderr
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("no answer")
                    .trim()
            );
        }
        Ok(())
    }

    /// Turns a failed swarm call into the plain reason: no daemon, no swarm,
    /// not a manager. Only runs after a failure, so the happy path costs nothing.
    pub fn swarm_diagnose(&self, err: anyhow::Error) -> anyhow::Error {
        if let Err(e) = self.ping() {
            return e;
        }
        let out = self.read(
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

    /// The Compose program: the v2 plugin (`docker compose`) when present,
    /// else v1 (`docker-compose`).
    pub fn compose(&self) -> Result<Compose> {
        if self
            .tool
            .output(&["compose", "version"], None)
            .is_ok_and(|o| o.status.success())
        {
            return Ok(Compose {
                tool: self.tool.clone(),
                pre: vec!["compose"],
            });
        }
        match which::which("docker-compose") {
            Ok(p) => Ok(Compose {
                tool: Tool::at("docker-compose", p),
                pre: Vec::new(),
            }),
            Err(_) => bail!(
                "neither `docker compose` (v2 plugin) nor `docker-compose` (v1) is installed; install one (Debian: `apt-get install docker-compose`)"
            ),
        }
    }
}

/// `docker compose` or `docker-compose`, with the project's variables.
pub struct Compose {
    tool: Tool,
    pre: Vec<&'static str>,
}

impl Compose {
    /// How the operator would type it: `docker compose` or `docker-compose`.
    pub fn shown(&self) -> &'static str {
        if self.pre.is_empty() {
            "docker-compose"
        } else {
            "docker compose"
        }
    }

    fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = self.pre.clone();
        all.extend_from_slice(args);
        all
    }

    /// Runs a compose command in `dir` with `envs` set, streaming its output.
    pub fn run(
        &self,
        dir: &Path,
        envs: &[(&str, &str)],
        args: &[&str],
        timeout: Duration,
    ) -> Result<()> {
        self.tool.stream(dir, envs, &self.args(args), timeout)
    }

    /// Runs a compose command quietly and returns its stdout.
    pub fn read(&self, dir: &Path, envs: &[(&str, &str)], args: &[&str]) -> Result<String> {
        self.tool.read_in(dir, envs, &self.args(args))
    }
}
