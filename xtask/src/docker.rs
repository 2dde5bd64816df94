//! The docker CLI as the backends see it: found with `which` (or `$DOCKER`, so
//! tests can count calls through a wrapper), checked for a live daemon, and run
//! with argument vectors. Values only ever reach docker on stdin.

use std::{ffi::OsString, path::Path};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

pub struct Docker {
    /// The docker program: `$DOCKER` when set, else `docker` from PATH.
    pub bin: OsString,
}

impl Docker {
    pub fn new() -> Result<Docker> {
        let bin = match std::env::var_os("DOCKER").filter(|v| !v.is_empty()) {
            Some(b) => b,
            None => which::which("docker")
                .map(|p| p.into_os_string())
                .map_err(|_| {
                    anyhow::anyhow!(
                        "docker is not installed (not found on PATH); install Docker Engine (Debian: `apt-get install docker.io`) or set DOCKER to its path"
                    )
                })?,
        };
        Ok(Docker { bin })
    }

    pub fn shell(&self) -> Result<Shell> {
        Ok(Shell::new()?)
    }

    /// Runs `docker ARGS` quietly and returns stdout, or an error carrying
    /// docker's own message and the next step.
    pub fn read(&self, args: &[&str], next_step: &str) -> Result<String> {
        self.exec(args, None, next_step)
    }

    /// Runs `docker ARGS` with `input` on stdin (the only way values reach docker).
    pub fn run_with_stdin(&self, args: &[&str], input: &[u8], next_step: &str) -> Result<String> {
        self.exec(args, Some(input), next_step)
    }

    fn exec(&self, args: &[&str], input: Option<&[u8]>, next_step: &str) -> Result<String> {
        let sh = self.shell()?;
        let bin = &self.bin;
        let mut c = cmd!(sh, "{bin} {args...}").quiet().ignore_status();
        if let Some(input) = input {
            c = c.stdin(input);
        }
        let out = c.output()?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            bail!(
                "`docker {}` failed: {}{}",
                args.join(" "),
                err.trim(),
                next_step_suffix(next_step)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Fails with a plain next step when the daemon does not answer.
    pub fn ping(&self) -> Result<()> {
        let sh = self.shell()?;
        let bin = &self.bin;
        let format = "{{.Server.Version}}";
        let out = cmd!(sh, "{bin} version --format {format}")
            .quiet()
            .ignore_status()
            .output()?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            bail!(
                "the Docker daemon does not answer ({}); start it (`systemctl start docker`, or `dockerd &`) or point DOCKER_HOST at a running engine",
                err.lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("no answer")
                    .trim()
            );
        }
        Ok(())
    }

    /// The Compose program: the v2 plugin (`docker compose`) when present,
    /// else v1 (`docker-compose`).
    pub fn compose(&self) -> Result<Vec<OsString>> {
        let sh = self.shell()?;
        let bin = &self.bin;
        if cmd!(sh, "{bin} compose version")
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .run()
            .is_ok()
        {
            return Ok(vec![self.bin.clone(), "compose".into()]);
        }
        match which::which("docker-compose") {
            Ok(p) => Ok(vec![p.into_os_string()]),
            Err(_) => bail!(
                "neither `docker compose` (v2 plugin) nor `docker-compose` (v1) is installed; install one (Debian: `apt-get install docker-compose`)"
            ),
        }
    }

    /// Runs a compose command in `dir` with `envs` set, streaming its output.
    pub fn run_compose(&self, dir: &Path, envs: &[(&str, &str)], args: &[&str]) -> Result<()> {
        let compose = self.compose()?;
        let (prog, pre) = compose.split_first().context("compose command is empty")?;
        let sh = self.shell()?;
        sh.change_dir(dir);
        let mut c = cmd!(sh, "{prog} {pre...} {args...}");
        for (k, v) in envs {
            c = c.env(k, v);
        }
        c.run().with_context(|| {
            format!(
                "`{} {}` failed; its output is above",
                prog.to_string_lossy(),
                args.join(" ")
            )
        })?;
        Ok(())
    }
}

fn next_step_suffix(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!("; {s}")
    }
}
