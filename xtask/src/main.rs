//! `cargo xtask`: the secrets and deployment tasks of the project, in Rust.
//!
//! `main` parses the command line, moves to the repository root and hands the
//! work to one module per command.

mod age;
mod archive;
mod audit;
mod bench;
mod commands;
mod compose_edit;
mod docker;
mod engine_api;
mod envfile;
mod flags;
mod fsutil;
mod git;
mod keypair;
mod kube;
mod lock;
mod manifest;
mod migrate;
mod output;
mod plan;
mod progress;
mod resolve;
mod runner;
mod runtime;
mod secret;
mod stackfile;
mod store;
mod time;
mod validate;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod testutil;
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
    let root = project_root();
    std::env::set_current_dir(&root)?;
    commands::run(cmd, &root)
}

/// The repository root: the parent of the xtask crate. `CARGO_MANIFEST_DIR` is
/// read at run time first (cargo sets it; tests point it at a copy of the
/// repository), then the path this binary was built from.
fn project_root() -> PathBuf {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    dir.parent().map(PathBuf::from).unwrap_or(dir)
}
