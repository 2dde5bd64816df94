//! Proof that values never reach a command line or a child's environment: the
//! real binary runs under `strace -f -e trace=execve -v`, which records every
//! argv and envp of every child process, and no secret value may appear there.

use crate::support;

use std::process::Command;

use support::TempRepo;

/// Runs xtask ARGS under strace and returns the trace.
fn traced(repo: &TempRepo, args: &[&str]) -> (support::Run, String) {
    let log = repo.path("strace.log");
    let mut c = Command::new("strace");
    c.args(["-f", "-v", "-e", "trace=execve", "-s", "65536", "-o"])
        .arg(&log)
        .arg(env!("CARGO_BIN_EXE_xtask"))
        .args(args);
    c.current_dir(&repo.root)
        .env("CARGO_MANIFEST_DIR", repo.root.join("xtask"))
        .env("NO_COLOR", "1");
    let run = support::Run::from(c.output().unwrap());
    let trace = std::fs::read_to_string(&log).unwrap();
    std::fs::remove_file(&log).unwrap();
    (run, trace)
}

fn env_values(repo: &TempRepo, env: &str) -> Vec<String> {
    repo.read(&format!("secrets/{env}.env"))
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            l.split_once('=')
                .map(|(_, v)| v.trim_matches('\'').to_string())
        })
        .filter(|v| v.len() >= 12)
        .collect()
}

#[test]
fn compose_setup_puts_no_value_on_argv() {
    if !support::strace_or_skip("compose_setup_puts_no_value_on_argv") {
        return;
    }
    let repo = TempRepo::new();
    // An existing env file makes the run ask git about it (a traced child).
    repo.write("secrets/develop.env", "POSTGRES_USER=distinct-user-4711\n");
    let (run, trace) = traced(&repo, &["setup-secrets", "develop"]);
    assert_eq!(run.code, 0, "{}", run.all());
    // The trace did record children (git), so an empty trace cannot pass.
    assert!(
        trace.contains("execve(") && trace.contains("\"git\""),
        "strace recorded no child processes:\n{trace}"
    );
    let values = env_values(&repo, "develop");
    assert_eq!(
        values.len(),
        8,
        "expected the user name and the generated values"
    );
    for v in &values {
        assert!(
            !trace.contains(v.as_str()),
            "a secret value appears in a child's argv or environment"
        );
    }
}

#[test]
fn swarm_setup_puts_no_value_on_argv() {
    let test = "swarm_setup_puts_no_value_on_argv";
    if !support::strace_or_skip(test) || !support::swarm_or_skip(test) {
        return;
    }
    let repo = TempRepo::new();
    let project = format!("xt{}", support::unique());
    let m = repo
        .read("deploy/secrets.toml")
        .replace("project = \"raqeem\"", &format!("project = \"{project}\""));
    std::fs::write(repo.path("deploy/secrets.toml"), m).unwrap();
    // A user name of its own: the default `<project>_<env>` is part of every secret's name.
    repo.write("secrets/develop.env", "POSTGRES_USER=distinct-user-4711\n");
    let cleanup = Cleanup(project.clone());
    let (run, trace) = traced(&repo, &["setup-secrets", "develop", "--backend", "swarm"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        trace.contains("\"secret\", \"create\""),
        "no `docker secret create` was traced:\n{}",
        &trace[..trace.len().min(4000)]
    );
    let values = env_values(&repo, "develop");
    assert_eq!(values.len(), 8);
    for (i, v) in values.iter().enumerate() {
        assert!(
            !trace.contains(v.as_str()),
            "value #{i} of secrets/develop.env appears in a child's argv or environment"
        );
    }
    drop(cleanup);
}

/// Removes every swarm secret the test created (by its project label).
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        support::remove_project_secrets(&self.0);
    }
}
