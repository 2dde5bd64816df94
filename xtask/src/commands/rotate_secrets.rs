//! `rotate-secrets <env> (--all | --secret NAME...)`: replaces `rotate_secrets.sh`.
//!
//! New values first go into the env file (the source of truth), so a rotation
//! that stops half-way converges on a re-run. Then hooks, new versions in the
//! store, a redeploy that waits for convergence, pruning; each step is
//! written to the audit log with its outcome.

use std::{collections::BTreeMap, io::Write, path::Path};

use anyhow::{Context, Result, bail};

use crate::{
    flags::{EnvArgs, RotateArgs},
    output,
};
use secrets_engine::session::Session;
use secrets_engine::{
    disk::audit::{self, Change},
    model::manifest::{Kind, SecretSpec},
    model::secret::SecretValue,
    plan::resolve,
    plan::{self, Action, Naming, Step, Stored},
    runtime::DeployOptions,
    store::Delivery,
};

const COMMAND: &str = "rotate-secrets";

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
        return kept_needs_hook(spec).map(|_| Choice::FromEnvFile);
    }
    let why = match spec.kind {
        Kind::Password | Kind::Key if spec.generate => {
            return kept_needs_hook(spec).map(|_| Choice::Generate);
        }
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

/// Pure: a secret whose consumers keep their own copy rotates only through a
/// hook that changes that copy; a new version alone would lock clients out.
pub fn kept_needs_hook(spec: &SecretSpec) -> Result<()> {
    if spec.kept_by.is_empty() || !spec.rotate_hook.is_empty() {
        return Ok(());
    }
    let who = spec.kept_by.join(", ");
    bail!(
        "cannot rotate {name}: {who} keep(s) their own copy of it (read only when they initialise), so a new version would not change the credential {who} check(s), and every task given the new value would be refused. Add a rotate_hook to [secrets.{name}] in deploy/secrets.toml that changes it in {who} (deploy/hooks/ has examples), or remove kept_by if {who} read(s) it at every start",
        name = spec.name
    )
}

/// Pure: the other role of an alternating pair: `<user>` and `<user>_b`.
pub fn other_user(user: &str) -> String {
    match user.strip_suffix("_b") {
        Some(base) if !base.is_empty() => base.to_string(),
        _ => format!("{user}_b"),
    }
}

/// Pure: the chosen secrets plus every derived secret built from them, in
/// manifest order (parts before what is built from them).
pub fn with_derived(specs: &[&SecretSpec], chosen: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for spec in specs {
        let from_chosen = spec.template_parts().iter().any(|p| out.contains(p));
        if chosen.contains(&spec.name) || (spec.kind == Kind::Derived && from_chosen) {
            out.push(spec.name.clone());
        }
    }
    out
}

/// Pure: what the rotation writes. Secrets in `rotating` get a new version (or
/// are replaced in place); the store's plan already says so where the env file
/// holds a new value, and a generated value will be new anyway.
pub fn rotation_plan(naming: &dyn Naming, before: &[Step], rotating: &[String]) -> Vec<Step> {
    rotating
        .iter()
        .filter_map(|name| {
            let b = before.iter().find(|s| &s.secret == name)?;
            if b.action.writes() {
                return Some(b.clone());
            }
            let (id, version) = match b.version {
                Some(v) if naming.versioned() => (naming.identity(name, v + 1), Some(v + 1)),
                _ => (b.id.clone(), b.version),
            };
            let detail = match b.version {
                Some(v) => format!("new value, replaces v{v}"),
                None => "new value".to_string(),
            };
            Some(Step {
                secret: name.clone(),
                action: Action::Update,
                id,
                version,
                detail,
            })
        })
        .collect()
}

/// The chosen specs: all, or the named ones (each must exist in this environment).
fn chosen_specs<'a>(s: &'a Session, a: &RotateArgs) -> Result<Vec<&'a SecretSpec>> {
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

pub fn run(root: &Path, e: &EnvArgs, a: RotateArgs) -> Result<()> {
    let s = Session::open(root, e, output::terminal())?;
    let _lock = match a.dry_run {
        false => Some(s.lock(&format!("{COMMAND} {}", e.env), e.lock_timeout)?),
        true => None,
    };
    if _lock.is_some() {
        s.sweep_hook_leftovers();
    }
    if a.keep == 0 {
        output::warn(
            "--keep 0: no previous version is kept once the rollout is done, so a rollback has nothing to return to (the default, --keep 1, keeps one)",
        );
    }
    // A weak value of a chosen secret (one `migrate-env-to-secrets` moved,
    // say) does not stop the rotation that replaces it.
    let replacing = chosen_specs(&s, &a)?
        .iter()
        .map(|sp| sp.name.clone())
        .collect();
    let mut r = s.resolve(resolve::Options {
        read_only: true,
        replacing,
        ..Default::default()
    })?;
    let before = s.plan(&r)?;
    let resumed = unfinished(&s, &before)?;
    let (rotating, updates) = choose_all(&s, &a, &before, &r, &resumed)?;
    let rotating = with_derived(&s.manifest.secrets_for(&s.env.name), &rotating);
    let resumed: Vec<String> = resumed
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| !rotating.contains(n))
        .collect();
    if rotating.is_empty() && resumed.is_empty() {
        println!("nothing to rotate in {}", s.env.name);
        return Ok(());
    }
    let left: Vec<&str> = before
        .writes()
        .iter()
        .map(|p| p.secret.as_str())
        .filter(|n| !rotating.iter().any(|r| r == n))
        .collect();
    if !left.is_empty() {
        output::warn(&format!(
            "left alone, not rotated: {} (the env file differs from the store; `cargo xtask setup-secrets {}` applies it)",
            left.join(", "),
            s.env.name
        ));
    }
    // Every hook says whether it can do its work on this runtime and store
    // before anything changes (deploy/hooks/lib.sh, the check phase).
    let hooked: Vec<String> = rotating.iter().chain(&resumed).cloned().collect();
    check_hooks(&s, &r, &hooked, &updates)?;
    let plan = rotation_plan(s.store.as_ref(), &before.steps, &rotating);
    if !plan.is_empty() {
        output::print_plan(
            &format!("new versions for {} ({} backend):", s.env.name, s.label()),
            &plan,
        );
    }
    if a.dry_run {
        print_rest_of_plan(&s, &plan, &resumed, &before.listed, &a);
        let mut what = rotating.join(", ");
        if !resumed.is_empty() {
            if !what.is_empty() {
                what.push_str("; ");
            }
            what.push_str(&format!("finish {}", resumed.join(", ")));
        }
        println!(
            "dry run: would rotate {what} in {}; nothing was changed",
            s.env.name,
        );
        return Ok(());
    }
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
    execute(&s, &plan, &resumed, &a)
}

/// The rotations of this environment that wrote a new version and stopped
/// before they completed (the audit log says so, and the store still holds
/// that version as the env file's value): a re-run finishes them.
fn unfinished(
    s: &Session,
    before: &secrets_engine::session::Planned,
) -> Result<Vec<(String, Option<u32>)>> {
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
        println!(
            "{name}: finishing its rotation{to}, which stopped before it completed (logged {}); no new value",
            secrets_engine::model::time::rfc3339(when)
        );
        out.push((name, version));
    }
    Ok(out)
}

/// Pure: the versions a rotation's pruning removes once the redeploy has
/// moved every service to the new versions (a version something still uses
/// then is kept, which the real run says).
pub fn expected_prune(listed: &[Stored], plan: &[Step], keep: usize) -> Vec<Step> {
    let mut after = listed.to_vec();
    for st in plan {
        if listed.iter().any(|l| l.id == st.id) {
            continue;
        }
        after.push(Stored {
            id: st.id.clone(),
            secret: st.secret.clone(),
            version: st.version,
            fingerprint: String::new(),
            created: None,
            fix: None,
            kept: None,
        });
    }
    let names: Vec<String> = plan.iter().map(|st| st.secret.clone()).collect();
    plan::prune(&after, &names, keep, &Default::default())
}

/// `--dry-run`: what follows the new versions in the real run: hooks, the
/// redeploy, and the pruning.
fn print_rest_of_plan(
    s: &Session,
    plan: &[Step],
    resumed: &[String],
    listed: &[Stored],
    a: &RotateArgs,
) {
    for name in resumed {
        println!(
            "would finish the rotation of {name}: no new value; the redeploy below, then its rotated_hook"
        );
    }
    for st in plan {
        if let Ok(spec) = s.manifest.secret(&st.secret)
            && let Some(prog) = spec.rotate_hook.first()
        {
            println!(
                "would run the rotate_hook of {} ({prog}) with the new value on stdin, before anything is swapped",
                st.secret
            );
        }
    }
    let after_hooks = || {
        for name in plan.iter().map(|st| &st.secret).chain(resumed) {
            if let Ok(spec) = s.manifest.secret(name)
                && let Some(prog) = spec.rotated_hook.first()
            {
                println!(
                    "would then run the rotated_hook of {name} ({prog}), which makes the server refuse the old value"
                );
            }
        }
    };
    match s.store.delivery() {
        Ok(Delivery::Reader(_)) => {
            println!(
                "the {} store keeps the versions itself; services read the new value at run time through the secrets reader: nothing to redeploy or prune",
                s.store.kind()
            );
            after_hooks();
            return;
        }
        Ok(Delivery::Fetch) => {
            println!(
                "would copy the new versions from the {} store into {}'s own secrets, redeploy and wait up to {}s for it to converge",
                s.store.kind(),
                s.env.runtime,
                a.timeout.as_secs()
            );
            after_hooks();
            return;
        }
        Ok(Delivery::Runtime) | Err(_) => {}
    }
    println!(
        "would redeploy {} on {} with the new versions and wait up to {}s for it to converge",
        s.env.name,
        s.env.runtime,
        a.timeout.as_secs()
    );
    after_hooks();
    let mut gone = expected_prune(listed, plan, a.keep);
    gone.extend(plan::prune(listed, resumed, a.keep, &Default::default()));
    if gone.is_empty() {
        println!(
            "would remove no superseded version (keeping {} previous)",
            a.keep
        );
    } else {
        output::print_plan(
            &format!(
                "then, keeping {} previous version(s), would remove what nothing uses any more:",
                a.keep
            ),
            &gone,
        );
    }
}

/// The secrets that rotate, and the generated values for the env file.
type Choices = (Vec<String>, Vec<(String, SecretValue)>);

/// Which chosen secrets rotate (printing why or why not for each), and the
/// new values to generate for the env file.
fn choose_all(
    s: &Session,
    a: &RotateArgs,
    before: &secrets_engine::session::Planned,
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
                println!("{}: using the new value in {env_file}", spec.name);
                rotating.push(spec.name.clone());
            }
            Choice::Generate => {
                let when = if a.dry_run {
                    ""
                } else {
                    " (written to the env file)"
                };
                println!("{}: generating a new value{when}", spec.name);
                updates.push((
                    spec.env_key(),
                    resolve::generate_for(spec, &s.env, &s.manifest.project)?,
                ));
                rotating.push(spec.name.clone());
            }
            Choice::Skip(why) => println!("{}: skipped ({why})", spec.name),
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
            println!(
                "{u}: switching to the idle role of the pair, which {}'s hook prepares (written to the env file)",
                spec.name
            );
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
        secrets_engine::model::keypair::check(value(cert)?, value(&key.name)?, (cert, &key.name))?;
    }
    Ok(())
}

/// Carries out a rotation plan (the env file already holds the new values)
/// and finishes the `resumed` rotations (their new versions are stored).
fn execute(s: &Session, plan: &[Step], resumed: &[String], a: &RotateArgs) -> Result<()> {
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
                secrets_engine::deliver::deploy(s, &r, &planned, &opts)
            })
            .map_err(stalled)?;
            after(&current)?;
            return done(s, &all);
        }
        Delivery::Reader(_) => {
            println!(
                "the {} store keeps the versions itself; services read the new value at run time through the secrets reader, within its cache time (SECRETS_CACHE_SECONDS, default 60 s); nothing to redeploy",
                s.store.kind()
            );
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
    after(&current)?;
    if let Some(users) = runtime.users()? {
        let listed = s.store.list(&s.compare_key(&r)?)?;
        let names: Vec<String> = all.iter().map(|st| st.secret.clone()).collect();
        let gone = plan::prune(&listed, &names, a.keep, &users);
        for l in plan::prune(&listed, &names, a.keep, &Default::default()) {
            if let Some(u) = users.get(&l.id) {
                println!("kept {}: still used by {}", l.id, u.join(", "));
            }
        }
        if !gone.is_empty() {
            s.delete_audited(COMMAND, &gone)?;
            let shown: Vec<&str> = gone.iter().map(|g| g.id.as_str()).collect();
            println!("removed superseded versions: {}", shown.join(", "));
        }
    }
    done(s, &all)
}

fn done(s: &Session, steps: &[&Step]) -> Result<()> {
    let names: Vec<&str> = steps.iter().map(|st| st.secret.as_str()).collect();
    println!(
        "rotated {} in {}; logged to {}",
        names.join(", "),
        s.env.name,
        audit::PATH
    );
    Ok(())
}

/// When a hook runs: before anything changes, to say whether it can do its
/// work here (`check`); before anything is swapped (`rotate_hook`); or once
/// the rollout converged (`rotated_hook`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Check,
    Before,
    After,
}

impl Phase {
    fn word(self) -> &'static str {
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
        secrets_engine::disk::fsutil::private_dir(&dir, 0o700)?;
        let path = dir.join("alternate");
        secrets_engine::disk::fsutil::write_atomic(&path, value.expose(), 0o600, None)?;
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
fn check_hooks(
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
fn run_hooks(
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
    let mut cmd = std::process::Command::new(prog);
    cmd.args(args)
        .current_dir(s.root)
        .envs(hook_env(s.project, (s.env, s.runtime), name, phase, live))
        .envs(s.context.iter().cloned());
    let alt_file = alt.map(HookFile::new).transpose()?;
    if let Some(f) = &alt_file {
        cmd.env("XTASK_ALTERNATE_FILE", &f.path);
    }
    if phase == Phase::Check {
        let out = cmd
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| {
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
        println!(
            "{name}: {key} done in {:.1}s (check phase)",
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    println!("{name}: running its {key} ({prog})");
    // std's Command rather than xshell: a hook may ignore its stdin, and a
    // broken pipe then is not a failure; only its exit status is.
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot start {prog}: {e}")))?;
    if let (Some(mut stdin), Some(value)) = (child.stdin.take(), value) {
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
    println!(
        "{name}: {key} done in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrets_engine::model::manifest::Manifest;

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
    fn derived_secrets_follow_their_parts_and_nothing_else() {
        let m = Manifest::parse(M).unwrap();
        let specs = m.secrets_for("staging");
        assert_eq!(with_derived(&specs, &["pw".into()]), ["pw", "url"]);
        assert_eq!(with_derived(&specs, &["user".into()]), ["user", "url"]);
        assert!(with_derived(&specs, &[]).is_empty());
    }

    const KEPT: &str = r#"
project = "demo"
[environments.staging]
backend = "swarm"
[secrets.user]
kind = "username"
services = ["db", "api"]
kept_by = ["db"]
[secrets.pw]
kind = "password"
services = ["db", "api"]
kept_by = ["db"]
alternate_user = "user"
[secrets.hooked]
kind = "password"
services = ["db"]
kept_by = ["db"]
rotate_hook = ["deploy/hooks/x"]
"#;

    #[test]
    fn a_kept_secret_without_a_hook_is_refused_with_the_fix() {
        let m = Manifest::parse(KEPT).unwrap();
        let s = |n: &str| m.secrets.iter().find(|x| x.name == n).unwrap();
        for (action, explicit) in [
            (Some(Action::Unchanged), true),
            (Some(Action::Unchanged), false),
            (Some(Action::Update), true),
        ] {
            let e = format!("{:#}", choose(s("pw"), action, explicit).unwrap_err());
            assert!(
                e.starts_with("cannot rotate pw: db keep(s) their own copy"),
                "{e}"
            );
            assert!(
                e.contains("Add a rotate_hook to [secrets.pw] in deploy/secrets.toml"),
                "{e}"
            );
        }
        assert_eq!(
            choose(s("hooked"), Some(Action::Unchanged), true).unwrap(),
            Choice::Generate
        );
        // A kept username that is not being changed is only skipped.
        assert!(matches!(
            choose(s("user"), Some(Action::Unchanged), false).unwrap(),
            Choice::Skip(_)
        ));
    }

    #[test]
    fn alternating_users_take_turns() {
        assert_eq!(other_user("raqeem_production"), "raqeem_production_b");
        assert_eq!(other_user("raqeem_production_b"), "raqeem_production");
        assert_eq!(other_user(&other_user("a")), "a");
        assert_eq!(other_user("_b"), "_b_b");
    }

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

    #[test]
    fn manifest_links_are_checked() {
        let bad = KEPT.replace(
            "kept_by = [\"db\"]\nalternate_user",
            "kept_by = [\"cache\"]\nalternate_user",
        );
        let e = format!("{:#}", Manifest::parse(&bad).unwrap_err());
        assert!(
            e.contains("kept_by names \"cache\", which is not in its services"),
            "{e}"
        );
        let bad = KEPT.replace("alternate_user = \"user\"", "alternate_user = \"hooked\"");
        let e = format!("{:#}", Manifest::parse(&bad).unwrap_err());
        assert!(
            e.contains("alternate_user must name a username secret"),
            "{e}"
        );
    }

    struct V;
    impl Naming for V {
        fn versioned(&self) -> bool {
            true
        }
        fn identity(&self, s: &str, v: u32) -> String {
            format!("{s}_v{v}")
        }
    }

    #[test]
    fn dry_run_names_what_pruning_will_remove() {
        let l = |v: u32| Stored {
            id: format!("pw_v{v}"),
            secret: "pw".into(),
            version: Some(v),
            fingerprint: String::new(),
            created: None,
            fix: None,
            kept: None,
        };
        let step = Step {
            secret: "pw".into(),
            action: Action::Update,
            id: "pw_v4".into(),
            version: Some(4),
            detail: String::new(),
        };
        let ids = |k| {
            expected_prune(&[l(1), l(2), l(3)], std::slice::from_ref(&step), k)
                .into_iter()
                .map(|s| s.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(1), ["pw_v2", "pw_v1"]);
        assert_eq!(ids(3), Vec::<String>::new());
    }

    #[test]
    fn rotation_plans_name_the_next_version() {
        let step = |s: &str, a: Action, v: u32| Step {
            secret: s.into(),
            action: a,
            id: format!("{s}_v{v}"),
            version: Some(v),
            detail: String::new(),
        };
        let before = [
            step("pw", Action::Unchanged, 3),
            step("url", Action::Unchanged, 1),
            step("key", Action::Update, 2),
            step("other", Action::Update, 5),
        ];
        let p = rotation_plan(&V, &before, &["pw".into(), "key".into()]);
        let got: Vec<(&str, &str)> = p
            .iter()
            .map(|s| (s.secret.as_str(), s.id.as_str()))
            .collect();
        assert_eq!(got, [("pw", "pw_v4"), ("key", "key_v2")]);
        assert_eq!(p[0].detail, "new value, replaces v3");
    }
}
