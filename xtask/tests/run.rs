//! `run <env> -- COMMAND`: the child sees its secrets as 0600 files in a 0700
//! folder (SECRETS_DIR, <NAME>_FILE) or, with --plain-env, as variables; the
//! folder is gone after success, failure, SIGTERM and SIGINT of the tool, and
//! the exit code is passed through.

mod support;

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
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

/// Starts `run develop -- sh -c SCRIPT`, a script that prints its folder
/// first; returns the tool's process and that folder.
fn start(repo: &TempRepo, script: &str, stderr: Stdio) -> (Child, String) {
    let mut child = repo
        .xtask(&["run", "develop", "--", "sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(stderr)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut dir = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut dir)
        .unwrap();
    (child, dir.trim().to_string())
}

/// Starts a run whose child prints its folder and sleeps, sends `signal` to
/// the tool, and returns (exit code, folder, seconds taken).
fn signalled(repo: &TempRepo, signal: &str) -> (i32, String, f64) {
    let script = r#"echo "$SECRETS_DIR"; exec sleep 30"#;
    let (mut child, dir) = start(repo, script, Stdio::piped());
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

#[test]
fn a_child_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let repo = ready();
    let script = r#"trap '' TERM; echo "$SECRETS_DIR"; exec sleep 60"#;
    let (mut child, dir) = start(&repo, script, Stdio::null());
    let start = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(
        status.code(),
        Some(137),
        "killed with SIGKILL after the grace period"
    );
    assert!((9.0..40.0).contains(&secs), "took {secs} s");
    assert!(!Path::new(&dir).exists(), "{dir} left behind");
}

/// Ctrl-C typed on a real (pseudo-)terminal: the terminal signals the whole
/// foreground group, the child ends with it, and the tool outlives it, passes
/// its exit on and removes the folder.
#[test]
fn ctrl_c_on_a_terminal_ends_the_child_and_the_folder_goes() {
    use std::io::{Read, Write};
    if !support::script_or_skip() {
        return;
    }
    let repo = ready();
    let marker = repo.path("dir.txt");
    let line = format!(
        "{} run develop -- sh -c 'echo \"$SECRETS_DIR\" > {}; exec sleep 60'",
        env!("CARGO_BIN_EXE_xtask"),
        marker.display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .current_dir(&repo.root)
        .env("CARGO_MANIFEST_DIR", repo.root.join("xtask"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !marker.exists() && start.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let dir = std::fs::read_to_string(&marker).unwrap().trim().to_string();
    assert!(Path::new(&dir).is_dir());
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"\x03").unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = child.wait().unwrap();
    drop(stdin);
    assert_eq!(status.code(), Some(130), "{out}");
    assert!(
        start.elapsed().as_secs() < 50,
        "the child was not interrupted"
    );
    assert!(!Path::new(&dir).exists(), "{dir} left behind");
}
