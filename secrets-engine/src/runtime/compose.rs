//! Compose (`docker compose` v2 or `docker-compose` v1) running the project's
//! compose file with file secrets from `secrets/<env>/`, project `<project>-<env>`.
//!
//! Files are replaced by rename, and a bind mount keeps the old inode, so a
//! container created before its secret changed still reads the old bytes:
//! `deploy` recreates exactly those services, then waits for every container
//! to be running (and healthy where it has a health check).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use super::{DeployOptions, Poll, Runtime, Scope};
use crate::{
    edit::stackfile::{self, StackFile},
    model::manifest::{BackendKind, Manifest},
    model::time,
    plan::Users,
    store::compose::{changed_since, secrets_dir},
    tools::docker::{Compose, Docker},
};

pub(crate) struct ComposeRuntime {
    sink: crate::sink::Shared,
    root: PathBuf,
    manifest: Manifest,
    env: String,
    file: PathBuf,
}

/// Compose's rule for each top-level secret: the file setup-secrets writes.
pub fn def_problems(file: &str, stack: &StackFile) -> Vec<String> {
    stack
        .secrets
        .iter()
        .filter(|(name, def)| {
            !def.file
                .as_deref()
                .is_some_and(|f| f.ends_with(&format!("/{name}")))
        })
        .map(|(name, _)| format!(
            "{file}: secret {name} must be `file: ${{XTASK_SECRETS_DIR:-./secrets/develop}}/{name}`, the file setup-secrets writes"
        ))
        .collect()
}

/// Every disagreement between a compose file and the manifest.
pub fn check_file(manifest: &Manifest, file: &str, stack: &StackFile) -> Vec<String> {
    super::check_stack(
        manifest,
        BackendKind::Compose,
        file,
        stack,
        def_problems(file, stack),
    )
}

impl ComposeRuntime {
    pub(crate) fn new(s: &Scope) -> Result<ComposeRuntime> {
        let settings = crate::store::compose::settings(s.env)?;
        Ok(ComposeRuntime {
            sink: s.sink.clone(),
            root: s.root.to_path_buf(),
            manifest: s.manifest.clone(),
            env: s.env.name.clone(),
            file: settings.file,
        })
    }

    fn project(&self) -> String {
        format!("{}-{}", self.manifest.project, self.env)
    }

    /// For `delivery = "reader"`: the compose file mounting the credential
    /// (from `secrets/<env>/`) instead of the stored secrets; on a dry run
    /// it is printed instead.
    fn render_reader(&self, opts: &DeployOptions) -> Result<Option<super::RenderedFile>> {
        let Some(r) = &opts.reader else {
            return Ok(None);
        };
        let shown = self.file.display().to_string();
        let text = std::fs::read_to_string(self.root.join(&self.file))
            .with_context(|| format!("cannot read {shown}"))?;
        let def = serde_norway::from_str(&format!(
            "file: ${{XTASK_SECRETS_DIR:?set by cargo xtask deploy}}/{}\n",
            r.credential
        ))?;
        let text = stackfile::for_reader(&text, &super::swarm::reader_edit(r, def))
            .with_context(|| format!("in {shown}"))?;
        if opts.dry_run {
            self.sink.line(&format!(
                "with the compose file for reader delivery:\n{text}"
            ));
            return Ok(None);
        }
        super::RenderedFile::write(&self.root, &self.file, &text).map(Some)
    }
}

impl Runtime for ComposeRuntime {
    fn hook_env(&self) -> Vec<(String, String)> {
        vec![
            ("XTASK_COMPOSE_PROJECT".into(), self.project()),
            ("XTASK_DOCKER".into(), super::docker_program()),
        ]
    }

    fn check(&self) -> Result<Vec<String>> {
        let shown = self.file.display().to_string();
        let path = self.root.join(&self.file);
        if !path.exists() {
            return Ok(Vec::new());
        }
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {shown}"))?;
        let stack = stackfile::parse(&text).with_context(|| format!("in {shown}"))?;
        Ok(check_file(&self.manifest, &shown, &stack))
    }

    fn users(&self) -> Result<Option<Users>> {
        Ok(None)
    }

    fn running_versions(&self) -> Result<Vec<super::drift::Running>> {
        let docker = Docker::new()?;
        // The project's running containers, whichever Compose started them
        // (both name the project in lower case, without other characters).
        let project: String = self
            .project()
            .to_ascii_lowercase()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        let label = format!("label=com.docker.compose.project={project}");
        let ids = docker
            .read(&["ps", "-q", "--no-trunc", "--filter", &label], "")
            .map_err(|e| match docker.ping() {
                Err(down) => down,
                Ok(()) => e,
            })?;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec!["inspect", "--format", CONTAINER_FORMAT];
        args.extend(&ids);
        let out = docker.read(&args, "")?;
        let dir = secrets_dir(&self.root, &self.env);
        Ok(containers_running(&out, &dir, |p| {
            std::fs::metadata(p).and_then(|m| m.modified()).ok()
        }))
    }

    fn stop_hint(&self) -> String {
        format!("docker compose -p {} down", self.project())
    }

    fn deploy(&self, _current: &BTreeMap<String, String>, opts: &DeployOptions) -> Result<()> {
        if !self.root.join(&self.file).exists() {
            bail!(
                "{} does not exist; the compose runtime deploys it (set `file` in [environments.{}.compose] in deploy/secrets.toml)",
                self.file.display(),
                self.env
            );
        }
        let dir = secrets_dir(&self.root, &self.env);
        let dir_s = dir.to_string_lossy().into_owned();
        let project = self.project();
        let rendered = self.render_reader(opts)?;
        let file = match &rendered {
            Some(f) => f.shown.clone(),
            None => self.file.to_string_lossy().into_owned(),
        };
        let envs = [
            ("XTASK_SECRETS_DIR", dir_s.as_str()),
            ("XTASK_ENV", self.env.as_str()),
            ("XTASK_PROJECT", self.manifest.project.as_str()),
        ];
        if opts.dry_run {
            let looked = self.look(&envs, &project, &file, &dir);
            let program = looked.as_ref().map_or("docker compose", |l| l.0);
            self.sink.line(&format!(
                "would run: {program} -p {project} -f {file} up -d --remove-orphans"
            ));
            self.sink.line(&format!(
                "  with XTASK_SECRETS_DIR={dir_s} XTASK_ENV={} XTASK_PROJECT={}",
                self.env, self.manifest.project
            ));
            match looked {
                Ok((_, stale)) if stale.is_empty() => self.sink.line(
                    "would recreate no container for its secrets (none running started before its secret files changed)",
                ),
                Ok((_, stale)) => self.sink.line(&format!(
                    "would then recreate {} (their secrets changed after they started)",
                    stale.join(", ")
                )),
                Err(e) => self.sink.line(&format!(
                    "would then recreate the services whose secret files changed after they started (cannot tell which now: {e:#})"
                )),
            }
            self.sink.line(&format!(
                "would then wait up to {}s until every container runs (and is healthy where it has a health check)",
                opts.timeout.as_secs()
            ));
            return Ok(());
        }
        let docker = Docker::new()?;
        docker.ping()?;
        let compose = docker.compose()?;
        let up = ["-p", &project, "-f", &file, "up", "-d", "--remove-orphans"];
        compose.run(&self.root, &envs, &up, opts.timeout)?;
        let ids = compose_ids(&compose, &self.root, &envs, &project, &file)?;
        let stale = services_with_newer_secrets(&docker, &ids, &dir, &self.manifest)?;
        if !stale.is_empty() {
            self.sink.line(&format!(
                "recreating {} (their secrets changed after they started)",
                stale.join(", ")
            ));
            let mut args = vec![
                "-p",
                &project,
                "-f",
                &file,
                "up",
                "-d",
                "--no-deps",
                "--force-recreate",
            ];
            args.extend(stale.iter().map(String::as_str));
            compose.run(&self.root, &envs, &args, opts.timeout)?;
        }
        wait_converged(
            &*self.sink,
            &docker,
            &compose,
            &self.root,
            &envs,
            &project,
            &file,
            opts.timeout,
        )
    }
}

impl ComposeRuntime {
    /// For `--dry-run`: the Compose program, and the services the real run
    /// would recreate because their secret files changed after they started.
    fn look(
        &self,
        envs: &[(&str, &str)],
        project: &str,
        file: &str,
        dir: &Path,
    ) -> Result<(&'static str, Vec<String>)> {
        let docker = Docker::new()?;
        docker.ping()?;
        let compose = docker.compose()?;
        let ids = compose_ids(&compose, &self.root, envs, project, file)?;
        let stale = services_with_newer_secrets(&docker, &ids, dir, &self.manifest)?;
        Ok((compose.shown(), stale))
    }
}

fn compose_ids(
    compose: &Compose,
    root: &Path,
    envs: &[(&str, &str)],
    project: &str,
    file: &str,
) -> Result<Vec<String>> {
    Ok(compose
        .read(root, envs, &["-p", project, "-f", file, "ps", "-q"])?
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect())
}

const CONTAINER_FORMAT: &str = "{{.Name}}|{{.Created}}|{{index .Config.Labels \"com.docker.compose.service\"}}|{{range .Mounts}}{{.Source}},{{end}}";

/// Pure: each container's secret files (the mounts under `dir`, by file
/// name) from `docker inspect --format CONTAINER_FORMAT` lines, each stale
/// when `mtime` says the file changed after the container was created.
pub fn containers_running(
    out: &str,
    dir: &Path,
    mtime: impl Fn(&Path) -> Option<std::time::SystemTime>,
) -> Vec<super::drift::Running> {
    use super::drift::{Mounted, Running};
    let mut running = Vec::new();
    for line in out.lines() {
        let mut parts = line.splitn(4, '|');
        let (Some(name), Some(created), Some(service), Some(mounts)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let created = time::parse_rfc3339(created);
        let mounts = mounts
            .split(',')
            .map(Path::new)
            .filter(|m| m.starts_with(dir))
            .filter_map(|m| {
                let secret = m.file_name()?.to_str()?.to_string();
                let stale = match (created, mtime(m)) {
                    (Some(c), Some(t)) => t > c,
                    _ => false,
                };
                Some(Mounted::File { secret, stale })
            })
            .collect();
        running.push(Running {
            who: format!("container/{}", name.trim_start_matches('/')),
            service: service.to_string(),
            mounts,
        });
    }
    running
}

/// Services whose containers were created before one of their secret files
/// last changed. A secret the service keeps itself (`kept_by`: PostgreSQL,
/// Redis and Grafana read it only when they initialise their data; a rotate
/// hook changes the kept copy in place) does not count: recreating the server
/// would only restart it, and its clients would fail meanwhile.
fn services_with_newer_secrets(
    docker: &Docker,
    ids: &[String],
    dir: &Path,
    manifest: &Manifest,
) -> Result<Vec<String>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut args = vec![
        "inspect",
        "--format",
        "{{.Created}}|{{index .Config.Labels \"com.docker.compose.service\"}}|{{range .Mounts}}{{.Source}},{{end}}",
    ];
    args.extend(ids.iter().map(String::as_str));
    let out = docker.read(&args, "")?;
    let mut stale = Vec::new();
    for line in out.lines() {
        let mut parts = line.splitn(3, '|');
        let (Some(created), Some(service), Some(mounts)) =
            (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Some(created) = time::parse_rfc3339(created) else {
            continue;
        };
        let kept = |m: &&str| {
            let name = Path::new(m).file_name().and_then(|n| n.to_str());
            manifest.secrets.iter().any(|spec| {
                Some(spec.name.as_str()) == name && spec.kept_by.iter().any(|k| k == service)
            })
        };
        let mounts: Vec<&str> = mounts.split(',').filter(|m| !kept(m)).collect();
        if changed_since(&mounts, dir, created) && !stale.iter().any(|s| s == service) {
            stale.push(service.to_string());
        }
    }
    Ok(stale)
}

/// Polls the project's containers until every one is running (and healthy where
/// it has a health check), or fails naming the container that is not.
#[allow(clippy::too_many_arguments)]
fn wait_converged(
    sink: &dyn crate::sink::Sink,
    docker: &Docker,
    compose: &Compose,
    root: &Path,
    envs: &[(&str, &str)],
    project: &str,
    file: &str,
    timeout: Duration,
) -> Result<()> {
    super::wait_until(
        sink,
        project,
        timeout,
        Duration::from_millis(500),
        "",
        || {
            let ids = compose_ids(compose, root, envs, project, file)?;
            if ids.is_empty() {
                bail!("compose started no containers for {project}; check {file}");
            }
            let mut args = vec![
                "inspect",
                "--format",
                "{{.Name}}|{{.State.Status}}|{{if .State.Health}}{{.State.Health.Status}}{{end}}|{{.RestartCount}}|{{.State.ExitCode}}",
            ];
            args.extend(ids.iter().map(String::as_str));
            let out = docker.read(&args, "")?;
            let mut waiting = Vec::new();
            for line in out.lines() {
                if let Some(w) = container_state(line)? {
                    waiting.push(w);
                }
            }
            if waiting.is_empty() {
                Ok(Poll::Done(format!(
                    "{project}: {} containers running",
                    ids.len()
                )))
            } else {
                Ok(Poll::Waiting(waiting.join(", ")))
            }
        },
    )
}

/// One `name|status|health|restarts|exit` line: an error when the container
/// failed, what is awaited when it is not ready yet, else nothing.
fn container_state(line: &str) -> Result<Option<String>> {
    let f: Vec<&str> = line.split('|').collect();
    let [name, status, health, restarts, code] = f[..] else {
        return Ok(None);
    };
    let name = name.trim_start_matches('/');
    match (status, health) {
        ("exited" | "dead", _) => {
            bail!("{name} stopped (exit code {code}); see `docker logs {name}`")
        }
        (_, "unhealthy") => {
            bail!("{name} is unhealthy; see `docker inspect {name}` (State.Health.Log)")
        }
        ("restarting", _) if restarts.parse::<u32>().unwrap_or(0) >= 3 => {
            bail!("{name} keeps restarting ({restarts} restarts); see `docker logs {name}`")
        }
        ("running", "" | "healthy") => Ok(None),
        (_, "") => Ok(Some(format!("{name} {status}"))),
        _ => Ok(Some(format!("{name} {status}/{health}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &str = r#"
project = "demo"
[environments.production]
backend = "swarm"
[environments.develop]
backend = "compose"
[secrets.db_password]
kind = "password"
services = ["api", "db"]
[secrets.tls_key]
kind = "file"
services = ["proxy"]
environments = ["production"]
"#;

    #[test]
    fn finds_every_disagreement() {
        let m = Manifest::parse(M).unwrap();
        let s = stackfile::parse("services:\n  api:\n    secrets: [db_password, stray]\n  db:\n    image: x\nsecrets:\n  db_password:\n    file: ./x\n").unwrap();
        let p = check_file(&m, "f.yml", &s);
        assert!(
            p.iter()
                .any(|x| x.contains("service api uses secret stray, which")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|x| x.contains("service db does not mount db_password")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|x| x.contains("must be `file: ${XTASK_SECRETS_DIR")),
            "{p:?}"
        );
        // tls_key exists only in production (swarm): the compose file need not have it.
        assert!(!p.iter().any(|x| x.contains("tls_key")), "{p:?}");
        let ok = stackfile::parse("services:\n  api:\n    secrets: [db_password]\n  db:\n    secrets: [db_password]\nsecrets:\n  db_password:\n    file: ./s/db_password\n").unwrap();
        assert!(check_file(&m, "f.yml", &ok).is_empty());
    }

    #[test]
    fn containers_mount_secret_files_stale_when_changed_after_creation() {
        let dir = Path::new("/r/secrets/develop");
        let t = |s: &str| time::parse_rfc3339(s);
        let out = "/p-develop-backend-1|2026-01-02T00:00:00.5Z|backend|/r/secrets/develop/jwt,/r/secrets/develop/pw,/var/lib/x,\n\
                   /p-develop-postgres-1|2026-01-03T00:00:00Z|postgres|/r/secrets/develop/pw,\n";
        let mtime = |p: &Path| match p.file_name()?.to_str()? {
            "jwt" => t("2026-01-02T12:00:00Z"),
            _ => t("2026-01-01T00:00:00Z"),
        };
        use super::super::drift::Mounted::File;
        let r = containers_running(out, dir, mtime);
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].who.as_str(), r[0].service.as_str()),
            ("container/p-develop-backend-1", "backend")
        );
        assert_eq!(
            r[0].mounts,
            [
                File {
                    secret: "jwt".into(),
                    stale: true
                },
                File {
                    secret: "pw".into(),
                    stale: false
                }
            ]
        );
        assert_eq!(
            r[1].mounts,
            [File {
                secret: "pw".into(),
                stale: false
            }]
        );
    }

    #[test]
    fn container_states() {
        assert_eq!(container_state("/a|running||0|0").unwrap(), None);
        assert_eq!(
            container_state("/a|running|starting|0|0")
                .unwrap()
                .as_deref(),
            Some("a running/starting")
        );
        let e = container_state("/a|exited||0|3").unwrap_err();
        assert!(format!("{e}").contains("a stopped (exit code 3)"), "{e}");
    }
}
