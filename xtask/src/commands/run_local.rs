//! `run <env> [--plain-env] -- COMMAND...`: runs a local process with the
//! environment's secrets the way containers see them: a private temporary
//! folder (0700) of 0600 files, `SECRETS_DIR` and `<NAME>_FILE` pointing at
//! them (what the secrets reader and most images read). `--plain-env` passes
//! plain variables instead, for programs that only read those, with a warning.
//! The engine's [`secrets_engine::tools::child`] starts and supervises the
//! child (the folder, signals, masking); this command reads the arguments,
//! decides which streams are the terminal, and says what the operator must know.
//!
//! Masking (unless `--no-mask`): the child's stdout and stderr, when they are
//! not a terminal, go through a pipe and every form of every value is
//! replaced by `<redacted:NAME>` before they are passed on. A stream that is
//! a terminal stays the child's own (line editing, colours, `isatty` checks
//! keep working) and is not masked; a note says so.

use std::path::Path;

use anyhow::{Result, bail};

use crate::{flags::RunArgs, output};
use secrets_engine::{
    model::manifest::Manifest,
    model::mask::{self, Needles},
    plan::resolve,
    tools::child::{self, Masking},
};

pub fn run(root: &Path, a: RunArgs) -> Result<()> {
    // First, so an interrupt while the folder is filled still removes it.
    child::install_handlers();
    let manifest = Manifest::load(root)?;
    let env = manifest.env(&a.env)?;
    let r = resolve::resolve(root, &manifest, env, resolve::Options::read_only())?;
    for w in &r.warnings {
        output::warn(w);
    }
    let Some((program, args)) = a.command.split_first() else {
        bail!("no command given: put it after --, e.g. `cargo xtask run develop -- env`");
    };
    if a.plain_env {
        output::warn(&format!(
            "--plain-env: the {} values of {} are plain environment variables of the command and of everything it starts (visible in /proc/PID/environ to the same user, and in crash reports); prefer the files",
            r.desired.len(),
            env.name
        ));
    }
    let sink = output::terminal();
    let (c, dir) = child::with_values(program, args, &env.name, &r, a.plain_env, &sink)?;
    let needles = (!a.no_mask).then(|| needles(&r));
    let code = match child::caught() {
        // Interrupted before the command started: it never runs.
        0 => child::exit_code(child::supervise(c, program, needles.as_ref().map(masking))?),
        sig => 128 + sig,
    };
    drop(dir);
    std::process::exit(code);
}

/// The values to mask; says which are too short to mask.
fn needles(r: &resolve::Resolved) -> Needles {
    let (needles, short) = child::needles(r);
    if !short.is_empty() {
        output::warn(&format!(
            "{} shorter than {} bytes, not masked in the command's output: {}",
            if short.len() == 1 {
                "a value is"
            } else {
                "values are"
            },
            mask::MIN_MASKED,
            short.join(", ")
        ));
    }
    needles
}

/// The child's stdout and stderr masked on their way to ours, where ours are
/// not a terminal; says which stream is left unmasked on a terminal.
fn masking(needles: &Needles) -> Masking<'_> {
    use std::io::IsTerminal;
    let mut on_terminal = Vec::new();
    let mut m = Masking {
        needles,
        stdout: None,
        stderr: None,
    };
    if std::io::stdout().is_terminal() {
        on_terminal.push("stdout");
    } else {
        m.stdout = Some(Box::new(std::io::stdout()));
    }
    if std::io::stderr().is_terminal() {
        on_terminal.push("stderr");
    } else {
        m.stderr = Some(Box::new(std::io::stderr()));
    }
    if !on_terminal.is_empty() && !needles.is_empty() {
        eprintln!(
            "note: the command writes to the terminal directly ({}); what it prints there is not masked (pipe it, e.g. `| cat`, to mask it)",
            on_terminal.join(", ")
        );
    }
    m
}
