//! `scan [--history] [--staged] [--install-hook]`: looks for every current
//! secret value of every environment in what git holds, through the engine's
//! scanner ([`secrets_engine::scan`]), and renders its findings: the place,
//! the environment and the secret, never the value, with the command that
//! rotates it, and how current the value is (since when; or, for an earlier
//! value `--history` finds, until when). Any finding of a current value, or
//! any value that could not be read, fails the command (the pre-commit hook
//! refuses the commit); a superseded value is listed, and fails nothing: it
//! was rotated already.

use std::path::Path;

use anyhow::{Result, bail};

use crate::{flags::ScanArgs, output};
use secrets_engine::{
    model::manifest::Manifest,
    scan::{self, Installed, MIN_SCANNED, Range},
};

pub fn run(root: &Path, a: ScanArgs) -> Result<()> {
    let git = scan::git()?;
    if a.install_hook {
        match scan::install_hook(&git, root)? {
            Installed::Already(p) => {
                println!(
                    "the pre-commit hook is already installed at {}",
                    p.display()
                )
            }
            Installed::Now(p) => println!(
                "installed the pre-commit hook at {}: each commit runs `cargo xtask scan --staged`",
                p.display()
            ),
        }
        return Ok(());
    }
    let manifest = Manifest::load(root)?;
    let range = match (a.staged, a.history) {
        (true, _) => Range::Staged,
        (false, true) => Range::History,
        (false, false) => Range::Tracked,
    };
    let report = scan::scan(&git, root, &manifest, range)?;
    for u in &report.unread {
        output::warn(u);
    }
    // A value that could not be read was not looked for: never "all clear".
    let could_not_look = |found: usize| {
        anyhow::anyhow!(
            "{} value(s) could not be read, so they were not searched (named above){}; fix what the warnings name and scan again",
            report.unread.len(),
            if found > 0 {
                format!(", and {found} finding(s) of the others")
            } else {
                String::new()
            }
        )
    };
    if report.values == 0 {
        if !report.unread.is_empty() {
            return Err(could_not_look(0));
        }
        println!("scan: no env file holds a value to look for; nothing to do");
        return Ok(());
    }
    let what = range.what();
    let findings = &report.findings;
    for f in findings {
        println!("{}", f.line());
    }
    let current = findings.iter().filter(|f| f.currency.is_current()).count();
    let superseded = findings.len() - current;
    if current == 0 {
        let note = match report.skipped {
            0 => String::new(),
            n => format!("; {n} shorter than {MIN_SCANNED} bytes not searched"),
        };
        let earlier = match report.superseded {
            0 => String::new(),
            n => format!(", and {n} earlier value(s) from the env files' versions in history"),
        };
        println!(
            "scan: no current secret value found in {what} ({} values in {} forms searched{earlier}{note})",
            report.values, report.forms
        );
        if superseded > 0 {
            println!(
                "scan: {superseded} place(s) above hold superseded values: each was rotated since, so nothing needs rotating for them"
            );
        }
        if !report.unread.is_empty() {
            return Err(could_not_look(0));
        }
        return Ok(());
    }
    if !report.unread.is_empty() {
        return Err(could_not_look(current));
    }
    let commands = scan::rotate_commands(findings);
    bail!(
        "{current} finding(s) of current secret values in {what}{}: each named secret is exposed. Rotate {} ({}), remove the value from the files, and if it was committed, from history too",
        match superseded {
            0 => String::new(),
            n => format!(" (and {n} of superseded ones, already rotated)"),
        },
        if commands.len() == 1 { "it" } else { "them" },
        commands
            .iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}
