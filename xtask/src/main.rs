//! `cargo xtask`: the secrets and deployment tasks of the project, in Rust.
//!
//! `main` parses the command line, moves to the repository root and hands the
//! work to one module per command.

mod commands;
mod flags;
mod output;
mod progress;

#[cfg(test)]
mod tidy;

use std::path::PathBuf;

use anyhow::Result;

fn main() {
    if let Err(e) = try_main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn try_main() -> Result<()> {
    let cmd = flags::parse()?;
    if matches!(
        cmd,
        flags::Cmd::GenerateSecret { .. } | flags::Cmd::Completions { .. }
    ) {
        // Neither reads the repository: they run anywhere.
        return commands::run(cmd, std::path::Path::new("."));
    }
    let root = project_root()?;
    std::env::set_current_dir(&root)?;
    commands::run(cmd, &root)
}

/// The repository root. Through cargo (`cargo xtask`), the parent of the
/// xtask crate (`CARGO_MANIFEST_DIR`, which cargo sets; tests point it at a
/// copy). Run directly, the binary works on the repository it is run in: the
/// nearest folder above the current one that holds `deploy/secrets.toml`,
/// never the one it happened to be built in.
fn project_root() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from) {
        return Ok(dir.parent().map(PathBuf::from).unwrap_or(dir));
    }
    let cwd = std::env::current_dir()?;
    match cwd.ancestors().find(|d| {
        d.join(secrets_engine::model::manifest::MANIFEST_PATH)
            .is_file()
    }) {
        Some(root) => Ok(root.to_path_buf()),
        None => anyhow::bail!(
            "{} is not inside a repository of this tool (no {} in it or above it); cd into the repository whose secrets you mean, or run `cargo xtask` there",
            cwd.display(),
            secrets_engine::model::manifest::MANIFEST_PATH
        ),
    }
}
