//! `rotate-secrets <env> (--all | --secret NAME...)`: replaces `rotate_secrets.sh`.
//!
//! New values first go into the env file (the source of truth), so a rotation
//! that stops half-way converges on a re-run. Then hooks, new versions in the
//! store, a redeploy that waits for convergence, pruning and a log line.

use std::{
    io::Write,
    path::Path,
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result, bail};

use super::Session;
use crate::{
    backend::{Action, DeployOptions},
    flags::{EnvArgs, RotateArgs},
    manifest::{Kind, SecretSpec},
    output, resolve,
    secret::SecretValue,
};

pub const LOG_PATH: &str = "deploy/rotation-log.tsv";
const LOG_HEADER: &str = "time\tenvironment\tsecret\tversion\toperator\tbackend\n";

/// What happens to one chosen secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// The env file already holds a value the store does not: use it.
    FromEnvFile,
    /// Generate a new value and write it to the env file.
    Generate,
    /// Not rotated, with the reason (only with `--all`).
    Skip(String),
}

/// Pure: what to do with one secret given its kind and whether the store
/// already holds the env file's value. `explicit` is true for `--secret NAME`.
pub fn choose(spec: &SecretSpec, store_action: Option<Action>, explicit: bool) -> Result<Choice> {
    if matches!(store_action, Some(Action::Create | Action::Update)) && spec.kind != Kind::Derived {
        return Ok(Choice::FromEnvFile);
    }
    let why = match spec.kind {
        Kind::Password | Kind::Key if spec.generate => return Ok(Choice::Generate),
        Kind::Password | Kind::Key => format!(
            "{} has generate = false; put a new value in the env file",
            spec.name
        ),
        Kind::Derived => format!(
            "{} is built from {}; rotate those and it is rebuilt",
            spec.name,
            spec.template_parts()
                .into_iter()
                .filter(|p| p != "env" && p != "project")
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Kind::Username | Kind::File => format!(
            "{} is a {} secret, which cannot be generated; put the new value in the env file, then run rotate-secrets again",
            spec.name,
            spec.kind.name()
        ),
    };
    if explicit {
        bail!("cannot rotate {why}")
    } else {
        Ok(Choice::Skip(why))
    }
}

pub fn run(root: &Path, e: &EnvArgs, a: RotateArgs) -> Result<()> {
    let s = Session::open(root, e)?;
    let t = s.target(root);
    let mut r = s.resolve_read_only(root)?;
    let specs = s.manifest.secrets_for(&s.env.name);
    let chosen: Vec<&SecretSpec> = if a.all {
        specs.clone()
    } else {
        let mut out = Vec::new();
        for n in &a.secrets {
            match specs.iter().find(|sp| &sp.name == n) {
                Some(sp) => out.push(*sp),
                None => {
                    s.manifest.secret(n)?;
                    bail!("{n} is not used in {}; see deploy/secrets.toml", s.env.name)
                }
            }
        }
        out
    };
    let plan = s.backend.plan(&t, &r)?;
    let mut updates: Vec<(String, SecretValue)> = Vec::new();
    let mut rotating: Vec<String> = Vec::new();
    for spec in chosen {
        let action = plan.iter().find(|p| p.name == spec.name).map(|p| p.action);
        match choose(spec, action, !a.all)? {
            Choice::FromEnvFile => {
                println!("{}: using the new value in {}", spec.name, r.file.shown);
                rotating.push(spec.name.clone());
            }
            Choice::Generate => {
                let v = resolve::generate_for(spec, &s.env, &s.manifest.project)?;
                println!(
                    "{}: generating a new value{}",
                    spec.name,
                    if a.dry_run {
                        ""
                    } else {
                        " (written to the env file)"
                    }
                );
                updates.push((spec.env_key(), v));
                rotating.push(spec.name.clone());
            }
            Choice::Skip(why) => println!("{}: skipped ({why})", spec.name),
        }
    }
    if rotating.is_empty() {
        println!("nothing to rotate in {}", s.env.name);
        return Ok(());
    }
    if a.dry_run {
        println!(
            "dry run: would rotate {} in {}, redeploy, and keep {} previous version(s); nothing was changed",
            rotating.join(", "),
            s.env.name,
            a.keep
        );
        return Ok(());
    }
    if !updates.is_empty() {
        let header = format!(
            "# Secrets for {} ({}). Never commit this file.\n",
            s.env.name, s.manifest.project
        );
        r.file.write_updates(&updates, &header)?;
    }
    // Re-resolve: derived secrets whose parts changed are rebuilt from the file.
    let r = s.resolve_read_only(root)?;
    let plan = s.backend.plan(&t, &r)?;
    let changed: Vec<String> = plan
        .iter()
        .filter(|p| matches!(p.action, Action::Create | Action::Update))
        .map(|p| p.name.clone())
        .collect();
    output::print_plan(
        &format!(
            "new versions for {} ({} backend):",
            s.env.name, s.env.backend
        ),
        &plan,
    );

    // Hooks run before anything is swapped, so a failing one leaves the old
    // values live everywhere (the env file already holds the new ones; a
    // re-run converges).
    for name in &changed {
        let d = r.get(name).context("a changed secret was not resolved")?;
        if d.spec.rotate_hook.is_empty() {
            continue;
        }
        run_hook(root, &s.env.name, &d.spec, &d.value)?;
    }
    s.backend.apply(&t, &r, &plan)?;
    s.backend.deploy(
        &t,
        &r,
        &DeployOptions {
            dry_run: false,
            timeout: a.timeout,
        },
    )?;
    let removed = s.backend.prune(&t, &changed, a.keep)?;
    if !removed.is_empty() {
        println!("removed superseded versions: {}", removed.join(", "));
    }
    let versions = s.backend.stored_versions(&t)?;
    let operator = operator();
    let now = rfc3339(SystemTime::now());
    let lines: Vec<String> = changed
        .iter()
        .map(|n| {
            let v = versions.get(n).map(String::as_str).unwrap_or("-");
            [
                now.as_str(),
                s.env.name.as_str(),
                n,
                v,
                operator.as_str(),
                s.env.backend.name(),
            ]
            .join("\t")
        })
        .collect();
    append_log(&root.join(LOG_PATH), &lines)?;
    println!(
        "rotated {} in {}; logged to {LOG_PATH}",
        changed.join(", "),
        s.env.name
    );
    Ok(())
}

fn run_hook(root: &Path, env: &str, spec: &SecretSpec, value: &SecretValue) -> Result<()> {
    let (prog, args) = spec
        .rotate_hook
        .split_first()
        .context("empty rotate_hook")?;
    println!("{}: running its rotate_hook ({prog})", spec.name);
    let fail = |why: String| {
        anyhow::anyhow!(
            "the rotate_hook of {} failed ({why}); nothing was swapped. The env file holds the new value: fix the hook and run rotate-secrets again",
            spec.name
        )
    };
    // std's Command rather than xshell: a hook may ignore its stdin, and a
    // broken pipe then is not a failure; only its exit status is.
    let mut child = std::process::Command::new(prog)
        .args(args)
        .current_dir(root)
        .env("XTASK_ENV", env)
        .env("XTASK_SECRET", &spec.name)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot start {prog}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        match stdin.write_all(value.expose()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                return Err(fail(format!("cannot write to its stdin: {e}")));
            }
            _ => {}
        }
    }
    let status = child.wait().map_err(|e| fail(e.to_string()))?;
    if !status.success() {
        return Err(fail(format!("{prog} exited with {status}")));
    }
    Ok(())
}

/// `$SUDO_USER`, `$USER`, else `id -un`.
fn operator() -> String {
    for k in ["SUDO_USER", "USER"] {
        if let Ok(v) = std::env::var(k)
            && !v.is_empty()
        {
            return v;
        }
    }
    xshell::Shell::new()
        .ok()
        .and_then(|sh| xshell::cmd!(sh, "id -un").quiet().read().ok())
        .unwrap_or_else(|| "unknown".into())
}

fn append_log(path: &Path, lines: &[String]) -> Result<()> {
    let fresh = !path.exists();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let mut text = String::new();
    if fresh {
        text.push_str(LOG_HEADER);
    }
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// UTC, second precision: `2026-11-22T10:00:00Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;

    const M: &str = r#"
project = "demo"
[environments.staging]
backend = "swarm"
[secrets.user]
kind = "username"
[secrets.pw]
kind = "password"
[secrets.url]
kind = "derived"
template = "x://{user}:{pw}@h"
"#;

    #[test]
    fn choices_follow_kind_and_store() {
        let m = Manifest::parse(M).unwrap();
        let s = |n: &str| m.secrets.iter().find(|x| x.name == n).unwrap();
        assert_eq!(
            choose(s("pw"), Some(Action::Unchanged), true).unwrap(),
            Choice::Generate
        );
        assert_eq!(
            choose(s("pw"), Some(Action::Update), true).unwrap(),
            Choice::FromEnvFile
        );
        assert_eq!(
            choose(s("user"), Some(Action::Update), true).unwrap(),
            Choice::FromEnvFile
        );
        let e = format!(
            "{:#}",
            choose(s("user"), Some(Action::Unchanged), true).unwrap_err()
        );
        assert!(
            e.contains(
                "username secret, which cannot be generated; put the new value in the env file"
            ),
            "{e}"
        );
        assert!(matches!(
            choose(s("user"), Some(Action::Unchanged), false).unwrap(),
            Choice::Skip(_)
        ));
        let e = format!(
            "{:#}",
            choose(s("url"), Some(Action::Update), true).unwrap_err()
        );
        assert!(e.contains("built from user, pw"), "{e}");
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000)),
            "2026-11-18T11:06:40Z"
        );
    }
}
