//! `completions`: each shell's script is printed, names the commands, and the
//! bash (and, where installed, zsh and fish) script parses.

use crate::support;

use std::{io::Write, process::Command};

use support::TempRepo;

fn parses(shell: &str, args: &[&str], script: &str) -> Option<bool> {
    let mut c = Command::new(shell)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    c.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = c.wait_with_output().unwrap();
    if !out.status.success() {
        eprintln!("{shell}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Some(out.status.success())
}

#[test]
fn every_shell_gets_a_script_and_bash_parses_it() {
    let repo = TempRepo::new();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let r = repo.run(&["completions", shell]).ok();
        for word in ["restore-secrets", "backup-secrets", "scan", "plain-env"] {
            assert!(r.stdout.contains(word), "{shell}: no {word}");
        }
        let checked = match shell {
            "bash" => Some(parses("bash", &["-n"], &r.stdout).expect("bash is needed")),
            "zsh" => parses("zsh", &["-n"], &r.stdout),
            "fish" => parses("fish", &["--no-execute"], &r.stdout),
            _ => None,
        };
        assert_ne!(checked, Some(false), "{shell}: the script does not parse");
    }
    assert_eq!(
        repo.run(&["completions", "tcsh"]).code,
        2,
        "an unknown shell is a usage error"
    );
}
