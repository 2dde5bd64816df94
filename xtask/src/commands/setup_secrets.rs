//! `setup-secrets <env>`: validate the env file, generate what may be generated,
//! and bring the backend in line with it. Replaces `setup-secrets-<env>.sh`,
//! `create_secrets.sh` and `create_swarm_secrets.sh`.

use std::path::Path;

use anyhow::Result;

use super::Session;
use crate::{
    backend::Action,
    flags::{EnvArgs, SetupArgs},
    output,
    resolve::Options,
};

pub fn run(root: &Path, e: &EnvArgs, a: SetupArgs) -> Result<()> {
    let s = Session::open(root, e)?;
    let t = s.target(root);
    let r = s.resolve(
        root,
        Options {
            generate: a.generate_missing,
            dry_run: a.dry_run,
            read_only: false,
        },
    )?;
    if !r.generated.is_empty() {
        let verb = if a.dry_run {
            "would generate"
        } else {
            "generated"
        };
        println!(
            "{verb} {} in {}: {}",
            r.generated.len(),
            r.file.shown,
            r.generated.join(", ")
        );
    }
    let plan = s.backend.plan(&t, &r)?;
    output::print_plan(
        &format!(
            "{} secrets for {} ({} backend):",
            s.manifest.project, s.env.name, s.env.backend
        ),
        &plan,
    );
    let count = |act: Action| plan.iter().filter(|p| p.action == act).count();
    let (create, update, same) = (
        count(Action::Create),
        count(Action::Update),
        count(Action::Unchanged),
    );
    if a.dry_run {
        println!(
            "dry run: {create} to create, {update} to update, {same} unchanged; nothing was changed"
        );
        return Ok(());
    }
    if create + update == 0 {
        println!("nothing to do: all {same} secrets are up to date");
        return Ok(());
    }
    s.backend.apply(&t, &r, &plan)?;
    println!("done: {create} created, {update} updated, {same} unchanged");
    Ok(())
}
