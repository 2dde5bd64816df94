//! One module per command; `run` is the single dispatch point. Each command
//! parses nothing (flags did), calls the engine
//! ([`secrets_engine::session::Session`] and the planning modules) and
//! renders what comes back; no command imports another.

mod adopt_secrets;
mod backup_secrets;
mod bench;
mod check;
mod completions;
mod deploy;
mod diff;
mod doctor;
mod generate_secret;
mod list_secrets;
mod migrate_env_to_secrets;
mod remove_secrets;
mod restore_secrets;
mod rotate_secrets;
mod run_local;
mod scan;
mod setup_secrets;
mod status;
mod verify_secrets;

use std::path::Path;

use anyhow::Result;

use crate::flags::Cmd;

pub fn run(cmd: Cmd, root: &Path) -> Result<()> {
    match cmd {
        Cmd::SetupSecrets(e, a) => setup_secrets::run(root, &e, a),
        Cmd::ListSecrets(e, json) => list_secrets::run(root, &e, json),
        Cmd::VerifySecrets(e) => verify_secrets::run(root, &e),
        Cmd::RemoveSecrets(e, a) => remove_secrets::run(root, &e, a),
        Cmd::RotateSecrets(e, a) => rotate_secrets::run(root, &e, a),
        Cmd::GenerateSecret { length } => generate_secret::run(length),
        Cmd::Deploy(e, a) => deploy::run(root, &e, a),
        Cmd::Doctor(e, json) => doctor::run(root, &e, json),
        Cmd::Check => check::run(root),
        Cmd::Status {
            envs,
            check,
            json,
            openmetrics,
            out,
        } => status::run(
            root,
            &envs,
            check,
            match (json, openmetrics) {
                (_, true) => status::Format::OpenMetrics { out },
                (true, _) => status::Format::Json,
                _ => status::Format::Table,
            },
        ),
        Cmd::Diff { a, b, json } => diff::run(root, &a, &b, json),
        Cmd::MigrateEnvToSecrets(a) => migrate_env_to_secrets::run(root, a),
        Cmd::AdoptSecrets(e, dry_run) => adopt_secrets::run(root, &e, dry_run),
        Cmd::Bench { what, sizes } => bench::run(root, &what, &sizes),
        Cmd::BackupSecrets(a) => backup_secrets::run(root, a),
        Cmd::RestoreSecrets(e, a) => restore_secrets::run(root, &e, a),
        Cmd::Scan(a) => scan::run(root, a),
        Cmd::Run(a) => run_local::run(root, a),
        Cmd::Completions { shell } => completions::run(&shell),
    }
}
