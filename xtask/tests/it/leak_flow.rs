//! Whole-flow leak tracing: every command that exists, on the compose and
//! swarm stores, under `strace -f -e trace=execve -v -s 65536`. No value, nor
//! its base64 or percent-encoded form, may appear in any argv or child
//! environment, in the tool's output, or in any file the tool wrote outside the
//! secret folders (the rotation log, the lock). Kubernetes runs the same check
//! in `k8s.rs`. The checker itself is tested against a deliberately leaky command.

use crate::support;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use support::{Run, TempRepo, probe_image, unique};

/// Runs `program args` under strace; returns the run and the trace.
fn traced(dir: &Path, program: &Path, args: &[&str], envs: &[(&str, &str)]) -> (Run, String) {
    let log = std::env::temp_dir().join(format!("xtask-trace-{}.log", unique()));
    let mut c = Command::new("strace");
    c.args(["-f", "-v", "-e", "trace=execve", "-s", "65536", "-o"])
        .arg(&log)
        .arg(program)
        .args(args)
        .current_dir(dir)
        .env("CARGO_MANIFEST_DIR", dir.join("xtask"))
        .env("NO_COLOR", "1")
        .env("XTASK_RESOLVE_IMAGE", "never");
    for (k, v) in envs {
        c.env(k, v);
    }
    let run = Run::from(c.output().unwrap());
    let trace = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    (run, trace)
}

/// The forms a value could leak in: as is, base64, percent-encoded.
fn forms(v: &str) -> Vec<String> {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for c in v.as_bytes().chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            b64.push(if i <= c.len() {
                A[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    let pct: String = v
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let mut out = vec![v.to_string(), b64];
    if pct != v {
        out.push(pct);
    }
    out
}

/// Every place (named) where a value (numbered) or one of its forms appears.
fn leaks(places: &[(String, String)], values: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, v) in values.iter().enumerate() {
        for f in forms(v) {
            for (name, text) in places {
                if text.contains(&f) {
                    out.push(format!("value #{i} appears in {name}"));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Values of 12+ characters in an env file (short ones match by chance).
fn values_in(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            l.split_once('=')
                .map(|(_, v)| v.trim_matches('\'').to_string())
        })
        .filter(|v| v.len() >= 12)
        .collect()
}

/// Every file outside the secret folders, with its text (lock files included:
/// they live in secrets/ but hold no secret).
fn files_outside_secrets(root: &Path) -> Vec<(String, String)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if rel.starts_with(".git") || rel.starts_with("secrets") || rel.starts_with("target") {
                continue;
            }
            // Secret material by design, 0600 (checked by the migrate tests):
            // the plain `.env` a migration reads, and its backup.
            let name = rel.to_string_lossy();
            if name == ".env" || (name.starts_with(".env.pre-migrate-") && name.ends_with(".bak")) {
                continue;
            }
            if p.is_dir() {
                walk(&p, root, out);
            } else if let Ok(text) = std::fs::read(&p) {
                out.push((
                    format!("the file {}", rel.display()),
                    String::from_utf8_lossy(&text).into_owned(),
                ));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    // The lock lives in secrets/ but holds no secret: check it too.
    for p in std::fs::read_dir(root.join("secrets"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if p.file_name().to_string_lossy().ends_with(".lock") {
            out.push((
                format!("the lock {}", p.path().display()),
                std::fs::read_to_string(p.path()).unwrap_or_default(),
            ));
        }
    }
    out
}

struct Flow<'a> {
    repo: &'a TempRepo,
    places: Vec<(String, String)>,
    values: Vec<String>,
    /// The files before the flow: only what the tool wrote or changed is checked.
    before: Vec<(String, String)>,
}

fn flow(repo: &TempRepo) -> Flow<'_> {
    Flow {
        repo,
        places: Vec::new(),
        values: Vec::new(),
        before: files_outside_secrets(&repo.root),
    }
}

impl Flow<'_> {
    fn run(&mut self, args: &[&str], expect_ok: bool) -> Run {
        let program = Path::new(env!("CARGO_BIN_EXE_xtask"));
        let (mut run, mut trace) = traced(&self.repo.root, program, args, &[]);
        // strace itself can fail on a tracee that stops and dies at once
        // ("ptrace(PTRACE_LISTEN...): Input/output error"), and then detaches
        // from the run. Its trace so far is still checked; the command runs
        // again (commands converge, and the lock makes it wait for the first).
        if run.code != 0 && run.stderr.contains("strace: ptrace(") {
            eprintln!(
                "strace failed under {args:?}; running it again:\n{}",
                run.stderr
            );
            self.places
                .push((format!("the first trace of `{}`", args.join(" ")), trace));
            (run, trace) = traced(&self.repo.root, program, args, &[]);
        }
        assert!(
            trace.contains("execve("),
            "strace recorded nothing for {args:?}"
        );
        if expect_ok {
            assert_eq!(run.code, 0, "{args:?}:\n{}", run.all());
        }
        let name = args.join(" ");
        self.places.push((format!("the trace of `{name}`"), trace));
        self.places
            .push((format!("the output of `{name}`"), run.all()));
        self.collect();
        run
    }

    /// Old and new values both count: a rotation must not leak either.
    fn collect(&mut self) {
        let text =
            std::fs::read_to_string(self.repo.path("secrets/develop.env")).unwrap_or_default();
        for v in values_in(&text) {
            if !self.values.contains(&v) {
                self.values.push(v);
            }
        }
    }

    fn finish(mut self, expect_values: usize) {
        let written: Vec<(String, String)> = files_outside_secrets(&self.repo.root)
            .into_iter()
            .filter(|f| !self.before.contains(f))
            .collect();
        assert!(
            written.iter().any(|(n, _)| n.contains("audit-log.tsv")),
            "the flow wrote no audit log"
        );
        self.places.extend(written);
        assert!(
            self.values.len() >= expect_values,
            "only {} values collected",
            self.values.len()
        );
        let found = leaks(&self.places, &self.values);
        assert!(found.is_empty(), "leaks:\n{}", found.join("\n"));
    }
}

#[test]
fn the_checker_catches_a_leaky_command() {
    if !support::strace_or_skip("the_checker_catches_a_leaky_command") {
        return;
    }
    let value = "Leaky-Value-0123456789/+@";
    let dir = std::env::temp_dir();
    let env = PathBuf::from("/usr/bin/env");
    // A value on argv, in a child's environment, and printed base64-encoded.
    let (_, on_argv) = traced(&dir, &env, &["true", value], &[]);
    let (_, in_env) = traced(&dir, &env, &["true"], &[("SOME_VAR", value)]);
    let values = vec![value.to_string()];
    assert!(!leaks(&[("argv".into(), on_argv)], &values).is_empty());
    assert!(!leaks(&[("env".into(), in_env)], &values).is_empty());
    let b64 = forms(value)[1].clone();
    assert!(!leaks(&[("output".into(), format!("x {b64} y"))], &values).is_empty());
    let pct = forms(value)[2].clone();
    assert!(pct.contains("%2F"), "{pct}");
    assert!(!leaks(&[("url".into(), pct)], &values).is_empty());
    assert!(leaks(&[("clean".into(), "nothing here".into())], &values).is_empty());
}

/// The backend's secrets in the shipped manifest.
const BACKEND: [&str; 7] = [
    "postgres_user",
    "postgres_password",
    "database_url",
    "better_auth_secret",
    "redis_password",
    "jwt_secret",
    "api_secret_key",
];

/// A compose file whose one service mounts the backend's secrets.
fn compose_file(image: &str) -> String {
    let names = BACKEND;
    let mut s = format!(
        "version: \"3.8\"\nservices:\n  backend:\n    image: {image}\n    command: [\"serve\", \"--port\", \"8080\", \"jwt_secret\"]\n    secrets: [{}]\nsecrets:\n",
        names.join(", ")
    );
    for n in names {
        s.push_str(&format!(
            "  {n}:\n    file: ${{XTASK_SECRETS_DIR:-./secrets/develop}}/{n}\n"
        ));
    }
    s
}

#[test]
fn every_command_on_the_compose_store_leaks_nothing() {
    let test = "every_command_on_the_compose_store_leaks_nothing";
    if !support::strace_or_skip(test) || !support::docker_or_skip(test) {
        return;
    }
    let repo = TempRepo::new();
    let project = format!("xl{}", unique());
    let m = repo
        .read("deploy/secrets.toml")
        .replace("project = \"raqeem\"", &format!("project = \"{project}\""));
    std::fs::write(repo.path("deploy/secrets.toml"), m).unwrap();
    std::fs::write(
        repo.path("docker-compose.prod.yml"),
        compose_file(probe_image()),
    )
    .unwrap();
    repo.write("secrets/develop.env", "POSTGRES_USER=distinct-user-4711\n");
    let _down = ComposeDown(repo.root.clone(), format!("{project}-develop"));
    let mut f = flow(&repo);
    f.run(&["check"], true);
    f.run(&["setup-secrets", "develop", "--dry-run"], true);
    f.run(&["setup-secrets", "develop"], true);
    f.run(&["setup-secrets", "develop"], true);
    f.run(&["list-secrets", "develop"], true);
    f.run(&["list-secrets", "develop", "--json"], true);
    f.run(&["verify-secrets", "develop"], true);
    f.run(&["deploy", "develop", "--dry-run"], true);
    f.run(&["deploy", "develop", "--timeout", "120"], true);
    f.run(
        &[
            "rotate-secrets",
            "develop",
            "--secret",
            "jwt_secret",
            "--dry-run",
        ],
        true,
    );
    f.run(
        &[
            "rotate-secrets",
            "develop",
            "--secret",
            "jwt_secret",
            "--timeout",
            "120",
        ],
        true,
    );
    // No PostgreSQL, Redis or Grafana runs here, so the hooks' check phase
    // refuses `--all` (its kept secrets) before anything changes.
    let refused = f.run(
        &["rotate-secrets", "develop", "--all", "--timeout", "120"],
        false,
    );
    assert!(
        refused.code == 1 && refused.stderr.contains("has nothing running"),
        "{}",
        refused.all()
    );
    f.run(
        &[
            "rotate-secrets",
            "develop",
            "--secret",
            "better_auth_secret",
            "--secret",
            "api_secret_key",
            "--timeout",
            "120",
        ],
        true,
    );
    f.run(
        &[
            "remove-secrets",
            "develop",
            "--secret",
            "grafana_admin_password",
            "--dry-run",
        ],
        true,
    );
    f.run(
        &[
            "remove-secrets",
            "develop",
            "--secret",
            "grafana_admin_password",
            "--yes",
        ],
        true,
    );
    // A refusal's message must not leak either.
    f.run(
        &["rotate-secrets", "develop", "--secret", "database_url"],
        false,
    );
    f.finish(10);
}

#[test]
fn every_command_on_the_swarm_store_leaks_nothing() {
    let test = "every_command_on_the_swarm_store_leaks_nothing";
    if !support::strace_or_skip(test) || !support::swarm_or_skip(test) {
        return;
    }
    let repo = TempRepo::new();
    let project = format!("xl{}", unique());
    let image = probe_image();
    let m = repo
        .read("deploy/secrets.toml")
        .replace("project = \"raqeem\"", &format!("project = \"{project}\""))
        .replace(
            "[environments.develop]\nbackend = \"compose\"",
            "[environments.develop]\nbackend = \"swarm\"",
        );
    std::fs::write(repo.path("deploy/secrets.toml"), m).unwrap();
    let mut stack = format!(
        "version: \"3.8\"\nservices:\n  backend:\n    image: {image}\n    command: [\"serve\", \"--port\", \"8080\", \"jwt_secret\"]\n    deploy:\n      update_config: {{ order: start-first }}\n    secrets:\n"
    );
    for n in BACKEND {
        stack.push_str(&format!("      - {{ source: {n}, target: {n} }}\n"));
    }
    stack.push_str("secrets:\n");
    for n in BACKEND {
        let var = n.to_uppercase();
        stack.push_str(&format!(
            "  {n}:\n    external: true\n    name: ${{XTASK_SECRET_{var}:?set by cargo xtask deploy}}\n"
        ));
    }
    std::fs::write(repo.path("docker-compose.swarm.yml"), stack).unwrap();
    repo.write("secrets/develop.env", "POSTGRES_USER=distinct-user-4711\n");
    let _cleanup = support::flows::StackDown(project.clone());
    let mut f = flow(&repo);
    f.run(&["setup-secrets", "develop", "--dry-run"], true);
    f.run(&["setup-secrets", "develop"], true);
    f.run(&["setup-secrets", "develop"], true);
    f.run(&["list-secrets", "develop"], true);
    f.run(&["list-secrets", "develop", "--json"], true);
    f.run(&["verify-secrets", "develop"], true);
    f.run(&["deploy", "develop", "--dry-run"], true);
    f.run(&["deploy", "develop", "--timeout", "120"], true);
    f.run(
        &[
            "rotate-secrets",
            "develop",
            "--secret",
            "jwt_secret",
            "--timeout",
            "120",
        ],
        true,
    );
    // Refused: in use.
    f.run(
        &[
            "remove-secrets",
            "develop",
            "--secret",
            "jwt_secret",
            "--yes",
        ],
        false,
    );
    f.run(
        &[
            "remove-secrets",
            "develop",
            "--secret",
            "grafana_admin_password",
            "--yes",
        ],
        true,
    );
    f.finish(8);
}

struct ComposeDown(PathBuf, String);

impl Drop for ComposeDown {
    fn drop(&mut self) {
        let _ = Command::new("docker-compose")
            .args([
                "-p",
                &self.1,
                "-f",
                "docker-compose.prod.yml",
                "down",
                "-t",
                "1",
                "-v",
            ])
            .current_dir(&self.0)
            .env("XTASK_SECRETS_DIR", self.0.join("secrets/develop"))
            .output();
    }
}

/// The commands that move values between files: `migrate-env-to-secrets
/// --write-compose` (a plain `.env` into the env file, the compose file edited,
/// then setup), `backup-secrets` and `restore-secrets --force` (an encrypted
/// backup put back over changed values), traced like the flows above. The
/// plain `.env`'s values count as well as the env file's.
#[test]
fn migrate_backup_and_restore_leak_nothing() {
    let test = "migrate_backup_and_restore_leak_nothing";
    if !support::strace_or_skip(test) {
        return;
    }
    let have = |p: &str| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !(have("age") && have("age-keygen")) {
        if support::ci() {
            panic!("{test}: CI is set but age is not installed; .ci/run must run .ci/age.sh");
        }
        support::skip_note(format_args!(
            "\n*** SKIPPED {test}: age is not installed (apt-get install age) ***\n"
        ));
        return;
    }
    let repo = TempRepo::new();
    // The compose file reads REDIS_PASSWORD from `.env`, as before a migration.
    let compose = repo.read("docker-compose.prod.yml");
    let old = "    secrets: [redis_password]\n    volumes:\n";
    assert!(
        compose.contains(old),
        "the shipped compose file changed; update this test"
    );
    repo.write(
        "docker-compose.prod.yml",
        &compose.replace(
            old,
            "    environment:\n      REDIS_PASSWORD: ${REDIS_PASSWORD}\n    volumes:\n",
        ),
    );
    let dotenv = "REDIS_PASSWORD=Migrated-Redis-Pa55-word-4711\nJWT_SECRET=Migrated-Jwt-Secret-0123456789-abcdefghijkl\nLOG_LEVEL=debug\n";
    repo.write(".env", dotenv);
    let key = repo.path("age-key.txt");
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "age-keygen failed");
    let public = String::from_utf8_lossy(
        &Command::new("age-keygen")
            .arg("-y")
            .arg(&key)
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
    .to_string();
    let mut f = flow(&repo);
    f.values.extend(values_in(dotenv));
    f.run(&["migrate-env-to-secrets", "--dry-run"], true);
    f.run(&["migrate-env-to-secrets", "--write-compose"], true);
    assert!(
        repo.read("docker-compose.prod.yml")
            .contains("REDIS_PASSWORD_FILE"),
        "--write-compose changed nothing"
    );
    let backup = repo.path("develop-backup.age");
    let backup_arg = backup.to_str().unwrap().to_string();
    let key_arg = key.to_str().unwrap().to_string();
    f.run(
        &[
            "backup-secrets",
            "develop",
            "--out",
            &backup_arg,
            "--recipient",
            &public,
        ],
        true,
    );
    // Change a value, then put the backup's back.
    let env = repo.read("secrets/develop.env").replace(
        "JWT_SECRET=Migrated-Jwt-Secret-0123456789-abcdefghijkl",
        "JWT_SECRET=Replaced-Jwt-Secret-9876543210-zyxwvutsrqpo",
    );
    assert!(
        env.contains("Replaced-Jwt"),
        "the migrated value is not in the env file"
    );
    repo.write("secrets/develop.env", &env);
    f.collect();
    let restore = [
        "restore-secrets",
        "develop",
        "--from",
        &backup_arg,
        "--identity",
        &key_arg,
    ];
    f.run(&[&restore[..], &["--dry-run"]].concat(), false);
    f.run(&[&restore[..], &["--force"]].concat(), true);
    assert!(
        repo.read("secrets/develop.env")
            .contains("Migrated-Jwt-Secret-0123456789-abcdefghijkl"),
        "the restore did not put the backup's value back"
    );
    // Six generated, two migrated, the replaced one, the fingerprint key.
    f.finish(9);
}
