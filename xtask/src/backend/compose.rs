//! Compose file secrets: one file per secret in `secrets/<env>/`, bind-mounted
//! by Compose at `/run/secrets/<name>`.
//!
//! Compose without Swarm ignores `uid`, `gid` and `mode`: the container sees the
//! host file's owner and mode. Files are 0600, so an image that runs as a
//! non-root user needs the manifest's `owner` to name that user's uid:gid.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result, bail};

use super::{Action, Backend, DeployOptions, Poll, Row, State, Step, Target};
use crate::{docker::Docker, fsutil, resolve::Resolved};

pub struct Compose;

impl Compose {
    pub fn new() -> Result<Compose> {
        Ok(Compose)
    }
}

/// `secrets/<env>/`, where the files live.
pub fn secrets_dir(t: &Target) -> PathBuf {
    t.root.join("secrets").join(&t.env.name)
}

fn owner_of(t: &Target, name: &str) -> Option<(u32, u32)> {
    t.manifest
        .secrets
        .iter()
        .find(|s| s.name == name)
        .and_then(|s| s.owner)
        .or(t.env.owner)
}

/// Pure comparison of one wanted file with what is on disk.
pub fn file_action(
    current: Option<(&[u8], u32, (u32, u32))>,
    want: &[u8],
    owner: Option<(u32, u32)>,
) -> (Action, String) {
    match current {
        None => (Action::Create, String::new()),
        Some((bytes, mode, ids)) => {
            let mut why = Vec::new();
            if bytes != want {
                why.push("content changed".to_string());
            }
            if mode & 0o777 != 0o600 {
                why.push(format!("mode {:03o} -> 600", mode & 0o777));
            }
            if let Some(o) = owner
                && o != ids
            {
                why.push(format!("owner {}:{} -> {}:{}", ids.0, ids.1, o.0, o.1));
            }
            if why.is_empty() {
                (Action::Unchanged, String::new())
            } else {
                (Action::Update, why.join(", "))
            }
        }
    }
}

impl Backend for Compose {
    fn plan(&self, t: &Target, r: &Resolved) -> Result<Vec<Step>> {
        let dir = secrets_dir(t);
        let mut steps = Vec::new();
        for d in &r.desired {
            let path = dir.join(&d.spec.name);
            let current = match fs::read(&path) {
                Ok(bytes) => {
                    let m = fs::metadata(&path)?;
                    Some((bytes, m.permissions().mode(), (m.uid(), m.gid())))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
            };
            let owner = owner_of(t, &d.spec.name);
            let (action, why) = file_action(
                current.as_ref().map(|(b, m, o)| (b.as_slice(), *m, *o)),
                d.value.expose(),
                owner,
            );
            let shown = rel(t.root, &path);
            let detail = if why.is_empty() {
                shown
            } else {
                format!("{shown} ({why})")
            };
            steps.push(Step {
                name: d.spec.name.clone(),
                action,
                detail,
            });
        }
        for name in extra_files(&dir, r.desired.iter().map(|d| d.spec.name.as_str()))? {
            steps.push(Step {
                detail: format!(
                    "{} (not in the manifest for {}; remove it with remove-secrets)",
                    rel(t.root, &dir.join(&name)),
                    t.env.name
                ),
                name,
                action: Action::Extra,
            });
        }
        Ok(steps)
    }

    fn apply(&self, t: &Target, r: &Resolved, plan: &[Step]) -> Result<()> {
        let dir = secrets_dir(t);
        fsutil::private_dir(&dir, 0o700)?;
        for step in plan
            .iter()
            .filter(|s| matches!(s.action, Action::Create | Action::Update))
        {
            let d = r
                .get(&step.name)
                .context("plan names a secret that was not resolved")?;
            fsutil::write_atomic(
                &dir.join(&step.name),
                d.value.expose(),
                0o600,
                owner_of(t, &step.name),
            )?;
        }
        Ok(())
    }

    fn list(&self, t: &Target, r: Option<&Resolved>) -> Result<Vec<Row>> {
        let dir = secrets_dir(t);
        let plan = r.map(|r| self.plan(t, r)).transpose()?;
        let mut rows = Vec::new();
        for spec in t.manifest.secrets_for(&t.env.name) {
            let path = dir.join(&spec.name);
            let meta = fs::metadata(&path).ok();
            let state = match (&meta, &plan) {
                (None, _) => State::Missing,
                (Some(_), None) => State::Unchecked,
                (Some(_), Some(p)) => {
                    match p.iter().find(|s| s.name == spec.name).map(|s| s.action) {
                        Some(Action::Unchanged) => State::Current,
                        _ => State::Drift,
                    }
                }
            };
            rows.push(Row {
                name: spec.name.clone(),
                state,
                location: rel(t.root, &path),
                version: None,
                age: meta
                    .and_then(|m| m.modified().ok())
                    .and_then(|m| SystemTime::now().duration_since(m).ok()),
                used_by: spec.services.clone(),
            });
        }
        let known: Vec<&str> = t
            .manifest
            .secrets_for(&t.env.name)
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        for name in extra_files(&dir, known.into_iter())? {
            rows.push(Row {
                location: rel(t.root, &dir.join(&name)),
                name,
                state: State::Extra,
                version: None,
                age: None,
                used_by: Vec::new(),
            });
        }
        Ok(rows)
    }

    fn plan_remove(&self, t: &Target, names: &[String]) -> Result<Vec<Step>> {
        let dir = secrets_dir(t);
        let mut all: Vec<String> = t
            .manifest
            .secrets_for(&t.env.name)
            .iter()
            .map(|s| s.name.clone())
            .collect();
        all.extend(extra_files(&dir, all.clone().iter().map(String::as_str))?);
        for n in names {
            if !all.contains(n) {
                bail!(
                    "{n} is neither a secret of {} in deploy/secrets.toml nor a file in {}; known: {}",
                    t.env.name,
                    rel(t.root, &dir),
                    all.join(", ")
                );
            }
        }
        let chosen: Vec<String> = if names.is_empty() {
            all
        } else {
            names.to_vec()
        };
        Ok(chosen
            .into_iter()
            .filter(|n| dir.join(n).exists())
            .map(|n| Step {
                detail: rel(t.root, &dir.join(&n)),
                name: n,
                action: Action::Update,
            })
            .collect())
    }

    fn remove(&self, t: &Target, plan: &[Step]) -> Result<()> {
        let dir = secrets_dir(t);
        for s in plan {
            let p = dir.join(&s.name);
            fs::remove_file(&p).with_context(|| format!("cannot remove {}", p.display()))?;
        }
        // Leave no empty directory behind; keep it if anything else is there.
        let _ = fs::remove_dir(&dir);
        Ok(())
    }

    fn deploy(&self, t: &Target, r: &Resolved, opts: &DeployOptions) -> Result<()> {
        let compose_file = t.manifest.compose_file.clone();
        if !t.root.join(&compose_file).exists() {
            bail!(
                "{} does not exist; the compose backend deploys it (set compose_file in deploy/secrets.toml)",
                compose_file.display()
            );
        }
        let plan = self.plan(t, r)?;
        let stale: Vec<_> = plan
            .iter()
            .filter(|s| matches!(s.action, Action::Create | Action::Update))
            .map(|s| s.name.as_str())
            .collect();
        if !stale.is_empty() {
            bail!(
                "the secret files of {} are not up to date ({}); run `cargo xtask setup-secrets {}` first",
                t.env.name,
                stale.join(", "),
                t.env.name
            );
        }
        let dir = secrets_dir(t);
        let dir_s = dir.to_string_lossy().into_owned();
        let project = t.stack_name();
        let file = compose_file.to_string_lossy().into_owned();
        let envs = [
            ("XTASK_SECRETS_DIR", dir_s.as_str()),
            ("XTASK_ENV", t.env.name.as_str()),
        ];
        if opts.dry_run {
            println!("would run: docker compose -p {project} -f {file} up -d --remove-orphans");
            println!("  with XTASK_SECRETS_DIR={dir_s} XTASK_ENV={}", t.env.name);
            return Ok(());
        }
        let docker = Docker::new()?;
        docker.ping()?;
        docker.run_compose(
            t.root,
            &envs,
            &["-p", &project, "-f", &file, "up", "-d", "--remove-orphans"],
        )?;
        // Files are replaced by rename, and a bind mount keeps the old inode: a
        // container created before a secret changed still reads the old bytes.
        // Recreate exactly those services.
        let ids = compose_ids(&docker, t.root, &envs, &project, &file)?;
        let stale = services_with_newer_secrets(&docker, &ids, &dir)?;
        if !stale.is_empty() {
            println!(
                "recreating {} (their secrets changed after they started)",
                stale.join(", ")
            );
            let mut args = vec![
                "-p",
                project.as_str(),
                "-f",
                file.as_str(),
                "up",
                "-d",
                "--no-deps",
                "--force-recreate",
            ];
            args.extend(stale.iter().map(String::as_str));
            docker.run_compose(t.root, &envs, &args)?;
        }
        wait_converged(&docker, t.root, &envs, &project, &file, opts.timeout)
    }
}

fn compose_ids(
    docker: &Docker,
    root: &Path,
    envs: &[(&str, &str)],
    project: &str,
    file: &str,
) -> Result<Vec<String>> {
    let compose = docker.compose()?;
    let (prog, pre) = compose.split_first().context("compose command is empty")?;
    let sh = docker.shell()?;
    sh.change_dir(root);
    let mut c = xshell::cmd!(sh, "{prog} {pre...} -p {project} -f {file} ps -q").quiet();
    for (k, v) in envs {
        c = c.env(k, v);
    }
    Ok(c.read()?
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect())
}

/// Services whose containers were created before one of their secret files last changed.
fn services_with_newer_secrets(docker: &Docker, ids: &[String], dir: &Path) -> Result<Vec<String>> {
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
        let Some(created) = parse_rfc3339(created) else {
            continue;
        };
        let newer = mounts
            .split(',')
            .filter(|m| Path::new(m).starts_with(dir))
            .any(|m| {
                fs::metadata(m)
                    .and_then(|md| md.modified())
                    .is_ok_and(|mt| mt > created)
            });
        if newer && !stale.iter().any(|s| s == service) {
            stale.push(service.to_string());
        }
    }
    Ok(stale)
}

/// Polls the project's containers until every one is running (and healthy where
/// it has a health check), or fails naming the container that is not.
fn wait_converged(
    docker: &Docker,
    root: &Path,
    envs: &[(&str, &str)],
    project: &str,
    file: &str,
    timeout: Duration,
) -> Result<()> {
    super::wait_until(project, timeout, Duration::from_millis(500), "", || {
        let ids = compose_ids(docker, root, envs, project, file)?;
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
            let f: Vec<&str> = line.split('|').collect();
            let [name, status, health, restarts, code] = f[..] else {
                continue;
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
                ("running", "" | "healthy") => {}
                _ => waiting.push(format!(
                    "{name} {status}{}",
                    if health.is_empty() {
                        String::new()
                    } else {
                        format!("/{health}")
                    }
                )),
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
    })
}

/// Docker's `Created` (RFC 3339 with nanoseconds, UTC) as a SystemTime.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, mo, da) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let time = time.trim_end_matches('Z');
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>());
    let (h, mi, se) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let frac: String = frac
        .chars()
        .take_while(char::is_ascii_digit)
        .take(9)
        .collect();
    let nanos: u32 = format!("{frac:0<9}").parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = days * 86400 + h * 3600 + mi * 60 + se;
    Some(SystemTime::UNIX_EPOCH + Duration::new(u64::try_from(secs).ok()?, nanos))
}

fn extra_files<'a>(dir: &Path, known: impl Iterator<Item = &'a str>) -> Result<Vec<String>> {
    let known: Vec<&str> = known.collect();
    let Ok(rd) = fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut out: BTreeMap<String, ()> = BTreeMap::new();
    for e in rd {
        let name = e?.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && !known.contains(&name.as_str()) {
            out.insert(name, ());
        }
    }
    Ok(out.into_keys().collect())
}

pub fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_actions() {
        assert_eq!(file_action(None, b"x", None).0, Action::Create);
        assert_eq!(
            file_action(Some((b"x", 0o100600, (0, 0))), b"x", None).0,
            Action::Unchanged
        );
        assert_eq!(
            file_action(Some((b"x", 0o100600, (0, 0))), b"y", None),
            (Action::Update, "content changed".into())
        );
        assert_eq!(
            file_action(Some((b"x", 0o100644, (0, 0))), b"x", None),
            (Action::Update, "mode 644 -> 600".into())
        );
        assert_eq!(
            file_action(Some((b"x", 0o100600, (0, 0))), b"x", Some((999, 999))),
            (Action::Update, "owner 0:0 -> 999:999".into())
        );
    }

    #[test]
    fn rfc3339() {
        let t = parse_rfc3339("2026-11-23T17:04:05.123456789Z").unwrap();
        let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(d.as_secs(), 1795453445);
        assert_eq!(d.subsec_nanos(), 123456789);
        assert_eq!(
            parse_rfc3339("1970-01-01T00:00:00Z").unwrap(),
            SystemTime::UNIX_EPOCH
        );
    }
}
