//! `setup-secrets <env>`: validate the env file, generate what may be generated,
//! and bring the store in line with it. Replaces `setup-secrets-<env>.sh`,
//! `create_secrets.sh`, `create_swarm_secrets.sh` and `create_k8s_secrets.sh`.
//!
//! Order: everything that can be checked offline, then the store is listed
//! (so it must answer), and only then is anything written: generated values
//! to the env file first (the source of truth), then the store.

use std::path::Path;

use anyhow::Result;

use crate::{
    flags::{EnvArgs, SetupArgs},
    output,
};
use secrets_engine::session::Session;
use secrets_engine::{disk::audit::Change, plan::Action, plan::resolve::Options};

const COMMAND: &str = "setup-secrets";

/// The secret an env-file key holds (`JWT_SECRET` → `jwt_secret`); other
/// keys (the fingerprint key) as they are.
fn secret_of(s: &Session, key: &str) -> String {
    let lower = key.to_ascii_lowercase();
    match s.manifest.secret(&lower) {
        Ok(_) => lower,
        Err(_) => key.to_string(),
    }
}

pub fn run(root: &Path, e: &EnvArgs, a: SetupArgs) -> Result<()> {
    let s = Session::open(root, e, output::terminal())?;
    let _lock = match a.dry_run {
        false => Some(s.lock(&format!("{COMMAND} {}", e.env), e.lock_timeout)?),
        true => None,
    };
    let mut r = s.resolve(Options {
        generate: a.generate_missing,
        read_only: false,
        accept_weak: a.accept_weak,
        ..Options::default()
    })?;
    let plan = s.plan(&r)?;
    if !r.moved.is_empty() {
        if !a.dry_run && r.generated.is_empty() {
            r.write_generated(&s.manifest.project)?;
        }
        println!(
            "{} {} in {} to {} file{} of {} own: {}",
            if a.dry_run { "would move" } else { "moved" },
            if r.moved.len() == 1 {
                "an inline PEM"
            } else {
                "inline PEMs"
            },
            r.file.shown,
            if r.moved.len() == 1 { "a" } else { "" },
            if r.moved.len() == 1 { "" } else { "s" },
            if r.moved.len() == 1 { "its" } else { "their" },
            r.moved.join(", ")
        );
    }
    if !r.generated.is_empty() {
        let verb = if a.dry_run {
            "would generate"
        } else {
            "generated"
        };
        if !a.dry_run {
            let changes: Vec<Change> = r
                .generated
                .iter()
                .map(|k| Change::new(&secret_of(&s, k), "generate", None))
                .collect();
            s.audited(COMMAND, &changes, || r.write_generated(&s.manifest.project))?;
        }
        println!(
            "{verb} {} in {}: {}",
            r.generated.len(),
            r.file.shown,
            r.generated.join(", ")
        );
    }
    output::print_plan(&s.heading(), &plan.steps);
    let (create, update, same) = (
        plan.count(Action::Create),
        plan.count(Action::Update),
        plan.count(Action::Unchanged),
    );
    if a.dry_run {
        if let Some(preview) = s.store.preview(&plan.steps) {
            println!("would apply (values redacted):\n{preview}");
        }
        println!(
            "dry run: {create} to create, {update} to update, {same} unchanged; nothing was changed"
        );
        return Ok(());
    }
    if create + update == 0 {
        println!("nothing to do: all {same} secrets are up to date");
        return Ok(());
    }
    let writes = plan.writes();
    s.apply_audited(COMMAND, &r, &writes)?;
    println!("done: {create} created, {update} updated, {same} unchanged");
    Ok(())
}
