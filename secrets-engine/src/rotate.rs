//! A rotation carried out: the secrets chosen, their new values written to
//! the env file first (the source of truth, so a rotation that stops half-way
//! converges on a re-run), then hooks, new versions in the store, a redeploy
//! that waits for convergence, and pruning; each step written to the audit
//! log with its outcome. The pure planning is [`crate::plan::rotate`]; the
//! hooks are [`crate::tools::hooks`]. What the operator must see goes to the
//! session's sink; the plan comes back as a [`Prepared`] value.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context, Result, bail};

use crate::{
    disk::audit::{self, Change},
    model::manifest::{Kind, SecretSpec},
    model::secret::SecretValue,
    plan::rotate::{Choice, choose, other_user, rotation_plan, with_derived},
    plan::{self, Action, Step, Stored, resolve},
    runtime::DeployOptions,
    session::{Planned, Session},
    store::Delivery,
    tools::hooks::{Phase, check_hooks, run_hooks},
};

/// The command the audit log names.
pub const COMMAND: &str = "rotate-secrets";

/// What to rotate and how.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Every secret of the environment (`--all`).
    pub all: bool,
    /// The named secrets (names or env-file keys).
    pub secrets: Vec<String>,
    /// How many previous versions pruning keeps.
    pub keep: usize,
    /// Plan only: nothing is written.
    pub dry_run: bool,
    /// How long the redeploy may take to converge.
    pub timeout: Duration,
}

/// A rotation ready to be carried out (or shown, in a dry run).
pub struct Prepared {
    /// The secrets that get a new value, derived ones included.
    pub rotating: Vec<String>,
    /// The rotations that stopped before they completed, finished now.
    pub resumed: Vec<String>,
    /// The new versions the store gets.
    pub plan: Vec<Step>,
    /// What the store held before.
    pub listed: Vec<Stored>,
    updates: Vec<(String, SecretValue)>,
    r: resolve::Resolved,
}

/// Chooses what rotates, checks every hook can do its work here, and plans
/// the new versions; nothing is written. `None`: nothing to rotate.
pub fn prepare(s: &Session, a: &Options) -> Result<Option<Prepared>> {
    // A weak value of a chosen secret (one `migrate-env-to-secrets` moved,
    // say) does not stop the rotation that replaces it.
    let replacing = chosen_specs(s, a)?
        .iter()
        .map(|sp| sp.name.clone())
        .collect();
    let r = s.resolve(resolve::Options {
        read_only: true,
        replacing,
        ..Default::default()
    })?;
    let before = s.plan(&r)?;
    let resumed = unfinished(s, &before)?;
    let (rotating, updates) = choose_all(s, a, &before, &r, &resumed)?;
    let rotating = with_derived(&s.manifest.secrets_for(&s.env.name), &rotating);
    let resumed: Vec<String> = resumed
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| !rotating.contains(n))
        .collect();
    if rotating.is_empty() && resumed.is_empty() {
        return Ok(None);
    }
    let left: Vec<&str> = before
        .writes()
        .iter()
        .map(|p| p.secret.as_str())
        .filter(|n| !rotating.iter().any(|r| r == n))
        .collect();
    if !left.is_empty() {
        s.sink.warn(&format!(
            "left alone, not rotated: {} (the env file differs from the store; `cargo xtask setup-secrets {}` applies it)",
            left.join(", "),
            s.env.name
        ));
    }
    // Every hook says whether it can do its work on this runtime and store
    // before anything changes (deploy/hooks/lib.sh, the check phase).
    let hooked: Vec<String> = rotating.iter().chain(&resumed).cloned().collect();
    check_hooks(s, &r, &hooked, &updates)?;
    let plan = rotation_plan(s.store.as_ref(), &before.steps, &rotating);
    Ok(Some(Prepared {
        rotating,
        resumed,
        plan,
        listed: before.listed,
        updates,
        r,
    }))
}

/// Carries out a prepared rotation: the generated values into the env file,
/// then the hooks, the store, the redeploy and the pruning.
pub fn apply(s: &Session, p: Prepared, a: &Options) -> Result<()> {
    let Prepared {
        plan,
        resumed,
        updates,
        mut r,
        ..
    } = p;
    if !updates.is_empty() {
        let header = format!(
            "# Secrets for {} ({}). Never commit this file.\n",
            s.env.name, s.manifest.project
        );
        let changes: Vec<Change> = updates
            .iter()
            .map(|(k, _)| Change::new(&k.to_ascii_lowercase(), "generate", None))
            .collect();
        s.audited(COMMAND, &changes, || {
            r.file.write_updates(&updates, &header)
        })?;
    }
    execute(s, &plan, &resumed, a)
}

/// The chosen specs: all, or the named ones (each must exist in this environment).
fn chosen_specs<'a>(s: &'a Session, a: &Options) -> Result<Vec<&'a SecretSpec>> {
    let specs = s.manifest.secrets_for(&s.env.name);
    if a.all {
        return Ok(specs);
    }
    let mut out = Vec::new();
    for arg in &a.secrets {
        // The secret's name, or its env-file key (`JWT_SECRET`).
        let n = &s.manifest.secret_named(arg)?.name;
        match specs.iter().find(|sp| &sp.name == n) {
            Some(sp) => out.push(*sp),
            None => bail!(
                "{n} is not used in {} (its `environments` in deploy/secrets.toml leave it out); secrets of {}: {}",
                s.env.name,
                s.env.name,
                specs
                    .iter()
                    .map(|sp| sp.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    Ok(out)
}

/// The rotations of this environment that wrote a new version and stopped
/// before they completed (the audit log says so, and the store still holds
/// that version as the env file's value): a re-run finishes them.
fn unfinished(s: &Session, before: &Planned) -> Result<Vec<(String, Option<u32>)>> {
    let (log, _) = audit::read(&s.root)?;
    let mut out = Vec::new();
    for (name, (version, when)) in audit::unfinished_rotations(&log, &s.env.name) {
        let Some(step) = before.steps.iter().find(|st| st.secret == name) else {
            continue;
        };
        if step.action != Action::Unchanged || (step.version.is_some() && step.version != version) {
            continue;
        }
        let to = version.map(|v| format!(" to v{v}")).unwrap_or_default();
        s.sink.line(&format!(
            "{name}: finishing its rotation{to}, which stopped before it completed (logged {}); no new value",
            crate::model::time::rfc3339(when)
        ));
        out.push((name, version));
    }
    Ok(out)
}

/// The secrets that rotate, and the generated values for the env file.
type Choices = (Vec<String>, Vec<(String, SecretValue)>);

/// Which chosen secrets rotate (printing why or why not for each), and the
/// new values to generate for the env file.
fn choose_all(
    s: &Session,
    a: &Options,
    before: &Planned,
    r: &resolve::Resolved,
    resumed: &[(String, Option<u32>)],
) -> Result<Choices> {
    let env_file = &r.file.shown;
    let mut updates = Vec::new();
    let mut rotating: Vec<String> = Vec::new();
    for spec in chosen_specs(s, a)? {
        if resumed.iter().any(|(n, _)| n == &spec.name) {
            continue;
        }
        // A weak env-file value is never taken: a new one is generated.
        let action = before
            .steps
            .iter()
            .find(|p| p.secret == spec.name)
            .map(|p| p.action)
            .filter(|_| !r.replace.contains(&spec.name));
        match choose(spec, action, !a.all)? {
            Choice::FromEnvFile => {
                s.sink
                    .line(&format!("{}: using the new value in {env_file}", spec.name));
                rotating.push(spec.name.clone());
            }
            Choice::Generate => {
                let when = if a.dry_run {
                    ""
                } else {
                    " (written to the env file)"
                };
                s.sink
                    .line(&format!("{}: generating a new value{when}", spec.name));
                updates.push((
                    spec.env_key(),
                    resolve::generate_for(spec, &s.env, &s.manifest.project)?,
                ));
                rotating.push(spec.name.clone());
            }
            Choice::Skip(why) => s.sink.line(&format!("{}: skipped ({why})", spec.name)),
        }
        if rotating.last() == Some(&spec.name)
            && let Some(u) = &spec.alternate_user
            && !rotating.contains(u)
        {
            let user = s.manifest.secret(u)?;
            let now = r
                .get(u)
                .and_then(|d| d.value.expose_str())
                .with_context(|| format!("{u} has no value in {env_file}"))?;
            s.sink.line(&format!(
                "{u}: switching to the idle role of the pair, which {}'s hook prepares (written to the env file)",
                spec.name
            ));
            updates.retain(|(k, _)| k != &user.env_key());
            updates.push((user.env_key(), SecretValue::from_string(other_user(now))));
            rotating.push(u.clone());
        }
    }
    check_pairs(s, &rotating, r, &updates)?;
    Ok((rotating, updates))
}

/// A certificate or its key rotates only when the new pair matches (the key
/// file is read as the env file now names it; file secrets are never generated).
fn check_pairs(
    s: &Session,
    rotating: &[String],
    r: &resolve::Resolved,
    updates: &[(String, SecretValue)],
) -> Result<()> {
    for key in s.manifest.secrets_for(&s.env.name) {
        let Some(cert) = &key.key_of else { continue };
        if !rotating.contains(&key.name) && !rotating.contains(cert) {
            continue;
        }
        let value = |n: &str| -> Result<&SecretValue> {
            let spec = s.manifest.secret(n)?;
            if let Some((_, v)) = updates.iter().find(|(k, _)| k == &spec.env_key()) {
                return Ok(v);
            }
            r.get(n)
                .map(|d| &d.value)
                .with_context(|| format!("{n} has no value in {}", r.file.shown))
        };
        crate::model::keypair::check(value(cert)?, value(&key.name)?, (cert, &key.name))?;
    }
    Ok(())
}

/// Carries out a rotation plan (the env file already holds the new values)
/// and finishes the `resumed` rotations (their new versions are stored).
fn execute(s: &Session, plan: &[Step], resumed: &[String], a: &Options) -> Result<()> {
    // Re-resolve: derived secrets whose parts changed are rebuilt from the file.
    let r = s.resolve_read_only()?;
    let now = s.plan(&r)?;
    let steps: Vec<&Step> = now
        .writes()
        .into_iter()
        .filter(|st| plan.iter().any(|p| p.secret == st.secret))
        .collect();
    let ids = |v: Vec<&Step>| v.into_iter().map(|s| s.id.clone()).collect::<Vec<_>>();
    if ids(steps.clone()) != ids(plan.iter().collect()) {
        bail!(
            "the store changed while rotating (another run?); nothing was swapped. The env file holds the new values: run rotate-secrets again"
        );
    }
    let finishing: Vec<&Step> = now
        .steps
        .iter()
        .filter(|st| resumed.contains(&st.secret))
        .collect();
    let all: Vec<&Step> = steps.iter().chain(&finishing).copied().collect();
    let complete: Vec<Change> = all
        .iter()
        .map(|st| Change::new(&st.secret, "complete", st.version))
        .collect();
    // Hooks run before anything is swapped, so a failing one leaves the old
    // values live everywhere (the env file already holds the new ones; a
    // re-run converges). A failing hook is logged as a failed update.
    let live = plan::current(&now.listed);
    if let Err(e) = run_hooks(s, &r, &steps, Phase::Before, &live) {
        return Err(s.failed(COMMAND, &Change::of_steps(&steps), &[], e));
    }
    if !steps.is_empty() {
        s.apply_audited(COMMAND, &r, &steps)?;
    }
    let mut current = live;
    for st in &steps {
        current.insert(st.secret.clone(), st.id.clone());
    }
    let deployed: Vec<Change> = all
        .iter()
        .map(|st| Change::new(&st.secret, "deploy", st.version))
        .collect();
    let opts = DeployOptions {
        dry_run: false,
        timeout: a.timeout,
        reader: None,
    };
    let names: Vec<&str> = all.iter().map(|st| st.secret.as_str()).collect();
    // The name to re-run with: a secret of its own (any of them finishes all).
    let again = names
        .iter()
        .copied()
        .find(|n| {
            s.manifest
                .secret(n)
                .is_ok_and(|sp| !matches!(sp.kind, Kind::Derived | Kind::Username))
        })
        .or(names.first().copied())
        .unwrap_or("NAME");
    let stalled = |e: anyhow::Error| {
        e.context(format!(
            "the rollout did not converge, so the rotation of {} stopped before its rotated hooks: the servers accept both the old and the new values, and what still runs keeps working. Fix the cause, then run `cargo xtask rotate-secrets {} --secret {}` again: it finishes this rotation without making another new value",
            names.join(", "),
            s.env.name,
            again,
        ))
    };
    let after = |current: &BTreeMap<String, String>| -> Result<()> {
        s.audited(COMMAND, &complete, || {
            run_hooks(s, &r, &all, Phase::After, current)
        })
    };
    match s.store.delivery()? {
        Delivery::Runtime => {}
        Delivery::Fetch => {
            // The new versions are in the store: deliver them like a deploy.
            let planned = s.plan(&r)?;
            s.audited(COMMAND, &deployed, || {
                crate::deliver::deploy(s, &r, &planned, &opts)
            })
            .map_err(stalled)?;
            after(&current)?;
            return done(s, &all);
        }
        Delivery::Reader(_) => {
            s.sink.line(&format!(
                "the {} store keeps the versions itself; services read the new value at run time through the secrets reader, within its cache time (SECRETS_CACHE_SECONDS, default 60 s); nothing to redeploy",
                s.store.kind()
            ));
            after(&current)?;
            return done(s, &all);
        }
    }
    let runtime = s
        .audited(COMMAND, &deployed, || {
            let runtime = s.runtime()?;
            runtime.deploy(&current, &opts)?;
            Ok(runtime)
        })
        .map_err(stalled)?;
    // The after hooks and pruning's two lookups (who uses which version,
    // what the store holds) run at once: the lookups only read, and nothing
    // is removed unless every hook succeeded.
    let (hooked, users, listed) = std::thread::scope(|scope| {
        let hooked = scope.spawn(|| after(&current));
        let listed = scope.spawn(|| -> Result<_> { s.store.list(&s.compare_key(&r)?) });
        let users = runtime.users();
        let join = |e| anyhow::anyhow!("a rotation thread panicked: {e:?}");
        (
            hooked.join().map_err(join).and_then(|x| x),
            users,
            listed.join().map_err(join).and_then(|x| x),
        )
    });
    hooked?;
    if let Some(users) = users? {
        let listed = listed?;
        let names: Vec<String> = all.iter().map(|st| st.secret.clone()).collect();
        let gone = plan::prune(&listed, &names, a.keep, &users);
        for l in plan::prune(&listed, &names, a.keep, &Default::default()) {
            if let Some(u) = users.get(&l.id) {
                s.sink
                    .line(&format!("kept {}: still used by {}", l.id, u.join(", ")));
            }
        }
        if !gone.is_empty() {
            s.delete_audited(COMMAND, &gone)?;
            let shown: Vec<&str> = gone.iter().map(|g| g.id.as_str()).collect();
            s.sink.line(&format!(
                "removed superseded versions: {}",
                shown.join(", ")
            ));
        }
    }
    done(s, &all)
}

fn done(s: &Session, steps: &[&Step]) -> Result<()> {
    let names: Vec<&str> = steps.iter().map(|st| st.secret.as_str()).collect();
    s.sink.line(&format!(
        "rotated {} in {}; logged to {}",
        names.join(", "),
        s.env.name,
        audit::PATH
    ));
    Ok(())
}
