//! `run <env> -- COMMAND`: the child sees its secrets as 0600 files in a 0700
//! folder (SECRETS_DIR, <NAME>_FILE) or, with --plain-env, as variables; the
//! folder is gone after success, failure, SIGTERM and SIGINT of the tool, and
//! the exit code is passed through.

mod support;

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use support::TempRepo;

fn value(repo: &TempRepo, key: &str) -> String {
    repo.read("secrets/develop.env")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap()
        .trim_matches('\'')
        .to_string()
}

fn ready() -> TempRepo {
    let repo = TempRepo::new();
    repo.run(&["setup-secrets", "develop"]).ok();
    repo
}

/// The folder the child printed on its first line.
fn first_line_dir(out: &str) -> String {
    out.lines().next().unwrap_or_default().trim().to_string()
}

#[test]
fn files_in_a_private_folder_removed_after_success_and_failure() {
    let repo = ready();
    let script = r#"echo "$SECRETS_DIR"; stat -c %a "$SECRETS_DIR" "$JWT_SECRET_FILE"; cat "$JWT_SECRET_FILE"; echo; test -z "$JWT_SECRET" && echo no-plain-var"#;
    let r = repo.run(&["run", "develop", "--", "sh", "-c", script]).ok();
    let dir = first_line_dir(&r.stdout);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(&lines[1..3], ["700", "600"], "{}", r.stdout);
    assert_eq!(lines[3], value(&repo, "JWT_SECRET"));
    assert_eq!(lines[4], "no-plain-var");
    assert!(!Path::new(&dir).exists(), "{dir} left behind after success");
    let url = repo
        .run(&[
            "run",
            "develop",
            "--",
            "sh",
            "-c",
            r#"cat "$SECRETS_DIR/database_url""#,
        ])
        .ok();
    assert!(
        url.stdout.starts_with("postgresql://raqeem_develop:"),
        "derived value missing"
    );

    let r = repo.run(&[
        "run",
        "develop",
        "--",
        "sh",
        "-c",
        r#"echo "$SECRETS_DIR"; exit 7"#,
    ]);
    assert_eq!(r.code, 7, "exit code not passed through: {}", r.all());
    let dir = first_line_dir(&r.stdout);
    assert!(
        !dir.is_empty() && !Path::new(&dir).exists(),
        "{dir} left after failure"
    );
    let r = repo.run(&["run", "develop", "--", "no-such-program-xtask"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("cannot start no-such-program-xtask"),
        "{}",
        r.stderr
    );
}

#[test]
fn plain_env_passes_variables_with_a_warning() {
    let repo = ready();
    let r = repo
        .run(&[
            "run",
            "develop",
            "--plain-env",
            "--",
            "sh",
            "-c",
            r#"printf %s "$JWT_SECRET"; test -z "$SECRETS_DIR""#,
        ])
        .ok();
    assert_eq!(r.stdout, value(&repo, "JWT_SECRET"));
    assert!(r.stderr.contains("warning: --plain-env"), "{}", r.stderr);
}

/// Starts a run whose child prints its folder and sleeps, sends `signal` to
/// the tool, and returns (exit code, folder, seconds taken).
fn signalled(repo: &TempRepo, signal: &str) -> (i32, String, f64) {
    let mut child = repo
        .xtask(&[
            "run",
            "develop",
            "--",
            "sh",
            "-c",
            r#"echo "$SECRETS_DIR"; exec sleep 30"#,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut dir = String::new();
    out.read_line(&mut dir).unwrap();
    let dir = dir.trim().to_string();
    assert!(
        Path::new(&dir).is_dir(),
        "the folder {dir} should exist while the child runs"
    );
    let start = Instant::now();
    let st = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = child.wait().unwrap();
    (
        status.code().unwrap_or(-1),
        dir,
        start.elapsed().as_secs_f64(),
    )
}

#[test]
fn sigterm_and_sigint_reach_the_child_and_the_folder_goes() {
    let repo = ready();
    for (signal, code) in [("-TERM", 143), ("-INT", 130)] {
        let (got, dir, secs) = signalled(&repo, signal);
        assert_eq!(
            got, code,
            "{signal}: the child's end by signal is passed through"
        );
        assert!(
            secs < 10.0,
            "{signal}: took {secs} s: the child was not signalled"
        );
        assert!(!Path::new(&dir).exists(), "{signal}: {dir} left behind");
    }
}
