//! `rotate-secrets <env> (--all | --secret NAME...)`: replaces `rotate_secrets.sh`.
//!
//! The engine's [`secrets_engine::rotate`] chooses what rotates, checks the
//! hooks and carries the rotation out (new values into the env file first,
//! then hooks, new versions in the store, a redeploy that waits for
//! convergence, pruning; each step in the audit log). This command takes the
//! lock, renders the plan and, in a dry run, what the real run would do.

use std::path::Path;

use anyhow::Result;

use crate::{
    flags::{EnvArgs, RotateArgs},
    output,
};
use secrets_engine::{
    plan::{self, Step, Stored},
    rotate,
    session::Session,
    store::Delivery,
};

pub fn run(root: &Path, e: &EnvArgs, a: RotateArgs) -> Result<()> {
    let s = Session::open(root, e, output::terminal())?;
    let o = rotate::Options {
        all: a.all,
        secrets: a.secrets,
        keep: a.keep,
        dry_run: a.dry_run,
        timeout: a.timeout,
    };
    let _lock = match o.dry_run {
        false => Some(s.lock(&format!("{} {}", rotate::COMMAND, e.env), e.lock_timeout)?),
        true => None,
    };
    if _lock.is_some() {
        s.sweep_hook_leftovers();
    }
    if o.keep == 0 {
        output::warn(
            "--keep 0: no previous version is kept once the rollout is done, so a rollback has nothing to return to (the default, --keep 1, keeps one)",
        );
    }
    let Some(p) = rotate::prepare(&s, &o)? else {
        println!("nothing to rotate in {}", s.env.name);
        return Ok(());
    };
    if !p.plan.is_empty() {
        output::print_plan(
            &format!("new versions for {} ({} backend):", s.env.name, s.label()),
            &p.plan,
        );
    }
    if o.dry_run {
        print_rest_of_plan(&s, &p.plan, &p.resumed, &p.listed, &o);
        let mut what = p.rotating.join(", ");
        if !p.resumed.is_empty() {
            if !what.is_empty() {
                what.push_str("; ");
            }
            what.push_str(&format!("finish {}", p.resumed.join(", ")));
        }
        println!(
            "dry run: would rotate {what} in {}; nothing was changed",
            s.env.name,
        );
        return Ok(());
    }
    rotate::apply(&s, p, &o)
}

/// `--dry-run`: what follows the new versions in the real run: hooks, the
/// redeploy, and the pruning.
fn print_rest_of_plan(
    s: &Session,
    plan: &[Step],
    resumed: &[String],
    listed: &[Stored],
    a: &rotate::Options,
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
    let mut gone = plan::rotate::expected_prune(listed, plan, a.keep);
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
