//! The rotate hooks: the programs a secret's `rotate_hook` and
//! `rotated_hook` name, which change the copy a server keeps of it. Each runs
//! in the repository with what it is told in its environment (names,
//! versions, the runtime's programs; never a value) and the new value on its
//! stdin, in three phases: `check` before anything changes, `before` before
//! anything is swapped, `after` once the rollout converged. What a hook
//! prints goes to the session's sink, a line at a time; its check-phase
//! refusal comes back in the error.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    path::Path,
    process::Stdio,
};

use anyhow::{Context, Result, bail};

use crate::{
    model::manifest::SecretSpec,
    model::secret::SecretValue,
    plan::{Step, resolve, rotate::other_user},
    session::Session,
    sink::{Event, Sink},
    store::Delivery,
    tools::runner::Spawn,
};

/// When a hook runs: before anything changes, to say whether it can do its
/// work here (`check`); before anything is swapped (`rotate_hook`); or once
/// the rollout converged (`rotated_hook`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Asked whether it can work on this runtime and store; changes nothing.
    Check,
    /// Before the swap: the server learns the new value (`rotate_hook`).
    Before,
    /// Once the rollout converged: the old value is revoked (`rotated_hook`).
    After,
}

impl Phase {
    /// The phase as hooks get it in `XTASK_PHASE`.
    pub fn word(self) -> &'static str {
        match self {
            Phase::Check => "check",
            Phase::Before => "before",
            Phase::After => "after",
        }
    }
}

/// What every hook of this run is told besides its secret and phase: the
/// runtime's own names and programs, the store and its delivery.
fn hook_context(s: &Session) -> Result<Vec<(String, String)>> {
    let mut out = s.runtime()?.hook_env();
    out.push(("XTASK_STORE".into(), s.store.kind().name().into()));
    let delivery = match s.store.delivery()? {
        Delivery::Runtime => "runtime",
        Delivery::Fetch => "fetch",
        Delivery::Reader(_) => "reader",
    };
    out.push(("XTASK_DELIVERY".into(), delivery.into()));
    Ok(out)
}

/// The roles of an alternating pair, for the hook of the secret that has
/// one: the role in use before the rotation and the one after, a line each.
/// `updates` holds the env file's new values before they are written (check
/// phase). The hook reads them from a 0600 file (`XTASK_ALTERNATE_FILE`):
/// user names are values of the env file too, kept out of environments.
fn alternates(
    s: &Session,
    spec: &SecretSpec,
    r: &resolve::Resolved,
    updates: &[(String, SecretValue)],
) -> Result<Option<SecretValue>> {
    let Some(u) = &spec.alternate_user else {
        return Ok(None);
    };
    let user = s.manifest.secret(u)?;
    let new = match updates.iter().find(|(k, _)| k == &user.env_key()) {
        Some((_, v)) => v.expose_str().map(str::to_string),
        None => r
            .get(u)
            .and_then(|d| d.value.expose_str())
            .map(str::to_string),
    }
    .with_context(|| format!("{u} has no value in {}", r.file.shown))?;
    Ok(Some(SecretValue::from_string(format!(
        "{}\n{new}\n",
        other_user(&new)
    ))))
}

/// A private file for a hook (0600 in a 0700 folder of its own), removed on drop.
struct HookFile {
    dir: std::path::PathBuf,
    path: std::path::PathBuf,
}

impl HookFile {
    fn new(value: &SecretValue) -> Result<HookFile> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("xtask-hook-{}-{n}", std::process::id()));
        crate::disk::fsutil::private_dir(&dir, 0o700)?;
        let path = dir.join("alternate");
        crate::disk::fsutil::write_atomic(&path, value.expose(), 0o600, None)?;
        Ok(HookFile { dir, path })
    }
}

impl Drop for HookFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The check phase: every hook of the secrets about to rotate (or finish)
/// says, before anything changes, whether it can do its work on this
/// environment's runtime and store. A kept secret whose servers cannot be
/// changed is refused here, with the hook's reason and fix; so is a kept
/// secret under reader delivery, where no rollout tells when every service
/// has moved to the new value.
pub fn check_hooks(
    s: &Session,
    r: &resolve::Resolved,
    names: &[String],
    updates: &[(String, SecretValue)],
) -> Result<()> {
    let mut todo = Vec::new();
    for name in names {
        let spec = s.manifest.secret(name)?;
        if !spec.kept_by.is_empty() && matches!(s.store.delivery()?, Delivery::Reader(_)) {
            bail!(
                "cannot rotate {name} in {}: {} keep(s) their own copy of it, and with delivery = \"reader\" services pick the new value up within their cache time, so no rollout tells when the old value may be refused. Use delivery = \"fetch\" for [environments.{}] in deploy/secrets.toml (the tool then redeploys and runs the hooks once every service has the new value); nothing was changed",
                s.env.name,
                spec.kept_by.join(", "),
                s.env.name
            );
        }
        let mut argvs: Vec<&Vec<String>> = [&spec.rotate_hook, &spec.rotated_hook]
            .into_iter()
            .filter(|v| !v.is_empty())
            .collect();
        argvs.dedup();
        for argv in argvs {
            todo.push(HookRun {
                argv,
                name: &spec.name,
                value: None,
                alt: alternates(s, spec, r, updates)?,
            });
        }
    }
    run_all(s, Phase::Check, &todo, &BTreeMap::new())
}

/// One hook to run: its argv, its secret, the new value (none in the check
/// phase) and the alternating roles.
struct HookRun<'a> {
    argv: &'a [String],
    name: &'a str,
    value: Option<&'a SecretValue>,
    alt: Option<SecretValue>,
}

/// Runs `todo` for `phase` all at once (each changes a different server);
/// fails with the first failure after all finished.
fn run_all(
    s: &Session,
    phase: Phase,
    todo: &[HookRun],
    live: &BTreeMap<String, String>,
) -> Result<()> {
    if todo.is_empty() {
        return Ok(());
    }
    let context = hook_context(s)?;
    let at = Where {
        root: &s.root,
        project: &s.manifest.project,
        env: &s.env.name,
        runtime: s.env.runtime.name(),
        context: &context,
        sink: s.sink.as_ref(),
    };
    let at = &at;
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let running: Vec<_> = todo
            .iter()
            .map(|h| {
                scope.spawn(move || {
                    run_hook(at, h.argv, phase, h.name, h.value, h.alt.as_ref(), live)
                })
            })
            .collect();
        running
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a hook thread panicked")))
            })
            .collect()
    });
    results.into_iter().collect()
}

/// Runs each changed secret's hook for `phase`, all at once: each changes a
/// different server, so they need not wait for each other. `live` maps every
/// secret to the version in the store at that moment (hooks get them as
/// XTASK_ID_*). Fails with the first failure after all finished.
pub fn run_hooks(
    s: &Session,
    r: &resolve::Resolved,
    steps: &[&Step],
    phase: Phase,
    live: &BTreeMap<String, String>,
) -> Result<()> {
    let mut todo = Vec::new();
    for st in steps {
        let d = r
            .get(&st.secret)
            .context("a changed secret was not resolved")?;
        let argv = match phase {
            Phase::Check | Phase::Before => &d.spec.rotate_hook,
            Phase::After => &d.spec.rotated_hook,
        };
        if !argv.is_empty() {
            todo.push(HookRun {
                argv,
                name: &d.spec.name,
                value: Some(&d.value),
                alt: alternates(s, &d.spec, r, &[])?,
            });
        }
    }
    run_all(s, phase, &todo, live)
}

/// Pure: the environment a hook runs with (names and versions, never values).
pub fn hook_env(
    project: &str,
    env: (&str, &str),
    secret: &str,
    phase: Phase,
    live: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let mut out = vec![
        ("XTASK_PROJECT".to_string(), project.to_string()),
        ("XTASK_ENV".to_string(), env.0.to_string()),
        ("XTASK_RUNTIME".to_string(), env.1.to_string()),
        ("XTASK_SECRET".to_string(), secret.to_string()),
        ("XTASK_PHASE".to_string(), phase.word().to_string()),
    ];
    for (name, id) in live {
        out.push((
            format!("XTASK_ID_{}", name.to_ascii_uppercase()),
            id.clone(),
        ));
    }
    out
}

/// Where a hook runs: the repository, and what it is told about the target.
struct Where<'a> {
    root: &'a Path,
    project: &'a str,
    env: &'a str,
    runtime: &'a str,
    /// [`hook_context`]: the runtime's names and programs, store, delivery.
    context: &'a [(String, String)],
    /// Where the hook's output and the lines about it go.
    sink: &'a dyn Sink,
}

/// Runs one hook for `phase` with `value` on stdin (none in the check phase,
/// whose output is kept for the refusal). `alt` names the alternating roles.
fn run_hook(
    s: &Where,
    argv: &[String],
    phase: Phase,
    name: &str,
    value: Option<&SecretValue>,
    alt: Option<&SecretValue>,
    live: &BTreeMap<String, String>,
) -> Result<()> {
    let (prog, args) = argv.split_first().context("empty hook")?;
    let (key, after) = match phase {
        Phase::Check => ("rotate_hook", ""),
        Phase::Before => (
            "rotate_hook",
            "nothing was swapped. The env file holds the new value: fix the hook and run rotate-secrets again",
        ),
        Phase::After => (
            "rotated_hook",
            "the new value is live everywhere, but the old one may still be accepted. Fix the cause, then run rotate-secrets again with the same --secret: it finishes this rotation (runs this hook again) without making another new value",
        ),
    };
    let started = std::time::Instant::now();
    let fail = |why: String| anyhow::anyhow!("the {key} of {name} failed ({why}); {after}");
    let mut cmd = Spawn::new(prog)
        .args(args)
        .dir(s.root)
        .envs(hook_env(s.project, (s.env, s.runtime), name, phase, live))
        .envs(s.context.iter().cloned());
    let alt_file = alt.map(HookFile::new).transpose()?;
    if let Some(f) = &alt_file {
        cmd = cmd.env("XTASK_ALTERNATE_FILE", &f.path);
    }
    if phase == Phase::Check {
        let out = cmd.output().map_err(|e| {
            anyhow::anyhow!(
                "cannot rotate {name}: its {key} ({prog}) cannot be started: {e}; nothing was changed"
            )
        })?;
        if !out.status.success() {
            let said = String::from_utf8_lossy(&out.stderr);
            let said = said.trim();
            let said = if said.is_empty() {
                "it gave no reason".to_string()
            } else {
                said.to_string()
            };
            bail!(
                "cannot rotate {name} in {} ({} runtime): its {key} ({prog}) answered the check that it cannot do its work here ({}): {said}\nNothing was changed. A hook says in its check phase (XTASK_PHASE=check) whether it can change the server's copy on this runtime and store; see docs/rotation.md",
                s.env,
                s.runtime,
                out.status
            );
        }
        s.sink.line(&format!(
            "{name}: {key} done in {:.1}s (check phase)",
            started.elapsed().as_secs_f64()
        ));
        return Ok(());
    }
    s.sink.line(&format!("{name}: running its {key} ({prog})"));
    let mut child = cmd
        .streams(Stdio::piped(), Stdio::piped(), Stdio::piped())
        .start()
        .map_err(|e| fail(format!("cannot start {prog}: {e}")))?;
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let status = std::thread::scope(|scope| {
        scope.spawn(|| forward(out, |l| s.sink.line(l)));
        scope.spawn(|| forward(err, |l| s.sink.event(Event::Diagnostic(l))));
        // A hook may ignore its stdin: a broken pipe then is not a failure;
        // only its exit status is.
        if let (Some(mut stdin), Some(value)) = (child.stdin.take(), value) {
            match stdin.write_all(value.expose()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    // Its work goes on without the value: let it end first.
                    let _ = child.wait();
                    return Err(fail(format!("cannot write to its stdin: {e}")));
                }
                _ => {}
            }
        }
        child.wait().map_err(|e| fail(e.to_string()))
    })?;
    if !status.success() {
        return Err(fail(format!("{prog} exited with {status}")));
    }
    s.sink.line(&format!(
        "{name}: {key} done in {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Passes what a hook prints on one stream to `show`, a line at a time, as
/// it comes (a long hook shows its progress): stdout as lines, stderr as
/// diagnostics.
fn forward(stream: Option<impl Read>, show: impl Fn(&str)) {
    let Some(stream) = stream else { return };
    let mut r = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                show(text.trim_end_matches(['\n', '\r']));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_get_names_and_versions_never_values() {
        let live = [("pw".to_string(), "demo_staging_pw_v3".to_string())].into();
        let env = hook_env("demo", ("staging", "swarm"), "pw", Phase::After, &live);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("XTASK_PROJECT"), Some("demo"));
        assert_eq!(get("XTASK_ENV"), Some("staging"));
        assert_eq!(get("XTASK_RUNTIME"), Some("swarm"));
        assert_eq!(get("XTASK_SECRET"), Some("pw"));
        assert_eq!(get("XTASK_PHASE"), Some("after"));
        assert_eq!(get("XTASK_ID_PW"), Some("demo_staging_pw_v3"));
        assert_eq!(env.len(), 6);
    }
}
