//! `completions <shell>`: prints the completion script for bash, zsh, fish,
//! elvish or PowerShell, generated from the same clap command the tool parses
//! with, so it never falls behind the commands and flags.

use anyhow::{Result, bail};
use clap_complete::{Shell, generate};

pub fn run(shell: &str) -> Result<()> {
    let shell = match shell {
        "bash" => Shell::Bash,
        "zsh" => Shell::Zsh,
        "fish" => Shell::Fish,
        "elvish" => Shell::Elvish,
        "powershell" => Shell::PowerShell,
        other => bail!("unknown shell {other:?}; use bash, zsh, fish, elvish or powershell"),
    };
    let mut cmd = crate::flags::command();
    // Completions are for what the operator types: `cargo xtask ...`, where
    // the alias hands the rest to this binary, named xtask.
    generate(shell, &mut cmd, "xtask", &mut std::io::stdout());
    Ok(())
}
