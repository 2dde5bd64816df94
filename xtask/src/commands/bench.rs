//! `cargo xtask bench`: the developers' benchmarks live in the `xtask-bench`
//! crate, outside the operator's build; this hands over to it (`cargo run
//! -p xtask-bench`), with this binary's path in `XTASK_BIN`, so the runs it
//! times are this tool's.

use std::{path::Path, time::Duration};

use anyhow::{Context, Result};
use secrets_engine::tools::runner::Tool;

/// Long enough for `bench all` at large sizes; the benchmarks bound their own steps.
const LIMIT: Duration = Duration::from_secs(4 * 3600);

pub fn run(root: &Path, what: &str, sizes: &[usize]) -> Result<()> {
    let cargo = Tool::find(
        "cargo",
        "CARGO",
        "the benchmarks are built by cargo: run them as `cargo xtask bench` in the repository",
    )?;
    let exe = std::env::current_exe().context("cannot tell where this binary is")?;
    let exe = exe.to_string_lossy();
    let sizes: Vec<String> = sizes.iter().map(|n| n.to_string()).collect();
    let sizes = sizes.join(",");
    let args = [
        "run",
        "--quiet",
        "-p",
        "xtask-bench",
        "--",
        what,
        "--sizes",
        &sizes,
    ];
    cargo.stream(root, &[("XTASK_BIN", &exe)], &args, LIMIT)
}
