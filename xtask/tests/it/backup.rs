//! `backup-secrets` and `restore-secrets` with the real `age` CLI in a copy of
//! the repository: every byte back (a PEM included) and the store in line;
//! a wrong identity, a corrupted or truncated file, a backup of another
//! environment or project, and differing values without `--force` are refused
//! with nothing changed.

use crate::support;

use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use support::{Run, TempRepo};

/// True when `age` and `age-keygen` run. Under `CI=true` their absence fails
/// the test (.ci/age.sh installs them); elsewhere the test is skipped loudly.
fn age_or_skip(test: &str) -> bool {
    let ok = ["age", "age-keygen"].iter().all(|p| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !ok && support::ci() {
        panic!("{test}: CI is set but age is not installed; .ci/age.sh must install it");
    }
    if !ok {
        support::skip_note(format_args!(
            "\n*** SKIPPED {test}: age is not installed (apt-get install age) ***\n"
        ));
    }
    ok
}

/// A new age key in `dir`: (identity file, public key).
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let p = dir.join(name);
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&p)
        .output()
        .unwrap();
    assert!(out.status.success(), "age-keygen failed");
    let public = Command::new("age-keygen")
        .arg("-y")
        .arg(&p)
        .output()
        .unwrap();
    (
        p,
        String::from_utf8(public.stdout).unwrap().trim().to_string(),
    )
}

/// Every file under `secrets/` with its bytes and mode.
fn snapshot(repo: &TempRepo) -> BTreeMap<String, (Vec<u8>, u32)> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, (Vec<u8>, u32)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, root, out);
            } else if !p.file_name().unwrap().to_string_lossy().ends_with(".lock") {
                let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, (std::fs::read(&p).unwrap(), mode));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&repo.path("secrets"), &repo.root, &mut out);
    out
}

/// A develop environment with a quoted special value and a PEM file secret,
/// set up in the compose store, backed up to `backup.age`.
fn backed_up(repo: &TempRepo) -> (PathBuf, &'static str, &'static str) {
    let (special, pem) = support::write_special_values(repo);
    repo.run(&["setup-secrets", "develop"]).ok();
    let (identity, public) = keygen(&repo.root, "key.txt");
    let r = repo
        .run(&[
            "backup-secrets",
            "develop",
            "--out",
            "backup.age",
            "--recipient",
            &public,
        ])
        .ok();
    assert!(r.stdout.contains("secrets/develop.env"), "{}", r.stdout);
    assert!(r.stdout.contains("TLS_BUNDLE file"), "{}", r.stdout);
    (identity, special, pem)
}

/// `restore-secrets ENV --from FILE --identity ID` and `extra`, not yet judged.
fn restore(repo: &TempRepo, env: &str, from: &str, id: &str, extra: &[&str]) -> Run {
    let mut args = vec!["restore-secrets", env, "--from", from, "--identity", id];
    args.extend_from_slice(extra);
    repo.run(&args)
}

fn leaks(r: &Run, values: &[&str]) {
    for v in values {
        assert!(!r.all().contains(v), "a value was printed:\n{}", r.all());
    }
}

#[test]
fn round_trip_restores_every_byte_and_the_store() {
    if !age_or_skip("round_trip_restores_every_byte_and_the_store") {
        return;
    }
    let repo = TempRepo::new();
    let (identity, special, pem) = backed_up(&repo);
    let before = snapshot(&repo);
    let sealed = std::fs::read(repo.path("backup.age")).unwrap();
    assert_eq!(
        std::fs::metadata(repo.path("backup.age"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let plain_env = std::fs::read(repo.path("secrets/develop.env")).unwrap();
    for v in [special.as_bytes(), pem.as_bytes(), &plain_env[..40]] {
        assert!(
            !sealed.windows(v.len()).any(|w| w == v),
            "plaintext in the backup"
        );
    }
    // Lose everything: the env file, the PEM and the store's files.
    std::fs::remove_dir_all(repo.path("secrets/develop")).unwrap();
    std::fs::remove_file(repo.path("secrets/develop.env")).unwrap();
    std::fs::remove_file(repo.path("secrets/tls.pem")).unwrap();
    let id = identity.to_str().unwrap();
    let dry = restore(&repo, "develop", "backup.age", id, &["--dry-run"]).ok();
    assert!(
        dry.stdout.contains("create    secrets/tls.pem"),
        "{}",
        dry.stdout
    );
    assert!(
        !repo.path("secrets/develop.env").exists(),
        "--dry-run wrote"
    );
    let r = restore(&repo, "develop", "backup.age", id, &[]).ok();
    leaks(&r, &[special, "MIIBszCCAVmgAwIBAgIU"]);
    assert!(
        r.stdout.contains("create    secrets/develop.env"),
        "{}",
        r.stdout
    );
    let after = snapshot(&repo);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (path, (bytes, mode)) in &before {
        let (b, m) = &after[path];
        assert!(b == bytes, "{path}: bytes differ after the restore");
        assert_eq!(m, mode, "{path}: mode");
    }
    assert_eq!(repo.read("secrets/develop/tls_bundle"), pem);
    assert_eq!(after["secrets/tls.pem"].1, 0o600);
    // The store is in line: verify passes, and a second restore changes nothing.
    repo.run(&["verify-secrets", "develop"]).ok();
    let again = restore(&repo, "develop", "backup.age", id, &[]).ok();
    assert!(
        again.stdout.contains("restored 0 file(s)"),
        "{}",
        again.stdout
    );
}

#[test]
fn bad_backups_and_differing_values_change_nothing() {
    if !age_or_skip("bad_backups_and_differing_values_change_nothing") {
        return;
    }
    let repo = TempRepo::new();
    let (identity, special, _) = backed_up(&repo);
    let id = identity.to_str().unwrap();
    // The operator has since changed a value: restoring would overwrite it.
    let env = repo.read("secrets/develop.env");
    let jwt = "Changed0JwtSecretValue0ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ9";
    let changed: String = env
        .lines()
        .map(|l| {
            if l.starts_with("JWT_SECRET=") {
                format!("JWT_SECRET={jwt}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    repo.write("secrets/develop.env", &changed);
    let before = snapshot(&repo);
    let unchanged = |what: &str| assert!(snapshot(&repo) == before, "{what} changed files");

    let r = restore(&repo, "develop", "backup.age", id, &[]).fails();
    assert!(
        r.stderr.contains("differ from the backup in: JWT_SECRET"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("--force"), "{}", r.stderr);
    leaks(&r, &[jwt, special]);
    unchanged("a refused overwrite");

    let (other, _) = keygen(&repo.root, "other.txt");
    let r = restore(&repo, "develop", "backup.age", other.to_str().unwrap(), &[]).fails();
    assert!(
        r.stderr.contains("cannot decrypt backup.age"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("no identity matched"), "{}", r.stderr);
    unchanged("a wrong identity");

    let sealed = std::fs::read(repo.path("backup.age")).unwrap();
    let mut corrupt = sealed.clone();
    let mid = corrupt.len() - 40;
    corrupt[mid] ^= 0x20;
    std::fs::write(repo.path("corrupt.age"), &corrupt).unwrap();
    std::fs::write(repo.path("short.age"), &sealed[..sealed.len() - 30]).unwrap();
    for f in ["corrupt.age", "short.age"] {
        let r = restore(&repo, "develop", f, id, &["--force"]).fails();
        assert!(
            r.stderr.contains(&format!("cannot decrypt {f}")),
            "{}",
            r.stderr
        );
        assert!(r.stderr.contains("truncated or corrupted"), "{}", r.stderr);
        unchanged(f);
    }

    let r = restore(&repo, "staging", "backup.age", id, &["--force"]).fails();
    assert!(
        r.stderr.contains("is a backup of raqeem develop"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("not of raqeem staging"), "{}", r.stderr);
    unchanged("another environment");

    let m = repo.read("deploy/secrets.toml");
    repo.write(
        "deploy/secrets.toml",
        &m.replace("project = \"raqeem\"", "project = \"other\""),
    );
    let r = restore(&repo, "develop", "backup.age", id, &["--force"]).fails();
    assert!(r.stderr.contains("not of other develop"), "{}", r.stderr);
    unchanged("another project");
    repo.write("deploy/secrets.toml", &m);

    // A file secret that is a link is never replaced by a plain file.
    std::fs::rename(repo.path("secrets/tls.pem"), repo.path("elsewhere.pem")).unwrap();
    std::fs::write(
        repo.path("elsewhere.pem"),
        "-----BEGIN CERTIFICATE-----\nnew\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(repo.path("elsewhere.pem"), repo.path("secrets/tls.pem")).unwrap();
    let linked = snapshot(&repo);
    let r = restore(&repo, "develop", "backup.age", id, &["--force"]).fails();
    assert!(
        r.stderr.contains("secrets/tls.pem is a symbolic link"),
        "{}",
        r.stderr
    );
    assert!(snapshot(&repo) == linked, "a refused link changed files");
    std::fs::remove_file(repo.path("secrets/tls.pem")).unwrap();

    // With --force the backup's value comes back, in the file and the store.
    let r = restore(&repo, "develop", "backup.age", id, &["--force"]).ok();
    assert!(
        r.stdout.contains("update    secrets/develop.env"),
        "{}",
        r.stdout
    );
    assert_eq!(repo.read("secrets/develop.env"), env);
    let stored = repo.read("secrets/develop/jwt_secret");
    assert!(
        env.contains(&format!("JWT_SECRET={stored}")),
        "store not in line"
    );
}

#[test]
fn backup_needs_recipients_off_a_terminal_and_never_overwrites() {
    if !age_or_skip("backup_needs_recipients_off_a_terminal_and_never_overwrites") {
        return;
    }
    let repo = TempRepo::new();
    repo.run(&["setup-secrets", "develop"]).ok();
    // In a new session, so there is no terminal even when the tests run on one.
    let mut c = repo.xtask(&["backup-secrets", "develop", "--out", "b.age"]);
    // SAFETY: setsid is async-signal-safe and touches only the new child.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut c, || {
            libc::setsid();
            Ok(())
        });
    }
    let r = Run::from(c.output().unwrap()).fails();
    assert!(r.stderr.contains("--recipient"), "{}", r.stderr);
    assert!(
        r.stderr.contains("only be typed on a terminal"),
        "{}",
        r.stderr
    );
    assert!(!repo.path("b.age").exists());
    // Recipients from the manifest.
    let (_, public) = keygen(&repo.root, "k.txt");
    let m = repo.read("deploy/secrets.toml");
    repo.write(
        "deploy/secrets.toml",
        &m.replace(
            "project = \"raqeem\"\n",
            &format!("project = \"raqeem\"\nbackup_recipients = [\"{public}\"]\n"),
        ),
    );
    repo.run(&["backup-secrets", "develop", "--out", "b.age"])
        .ok();
    let r = repo
        .run(&["backup-secrets", "develop", "--out", "b.age"])
        .fails();
    assert!(r.stderr.contains("b.age exists"), "{}", r.stderr);
}

/// Runs the tool under `strace -f -v` (execve with every environment, and
/// every file opened or renamed); returns the run and the trace.
fn traced(repo: &TempRepo, args: &[&str]) -> (Run, String) {
    let log = std::env::temp_dir().join(format!("xtask-backup-trace-{}.log", support::unique()));
    let inner = repo.xtask(args);
    let mut c = Command::new("strace");
    c.args([
        "-f",
        "-v",
        "-s",
        "65536",
        "-e",
        "trace=execve,open,openat,creat,rename,renameat,renameat2",
        "-o",
    ])
    .arg(&log)
    .arg(inner.get_program())
    .args(inner.get_args())
    .current_dir(&repo.root);
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let run = Run::from(c.output().unwrap());
    let trace = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    (run, trace)
}

/// The paths that any process of the trace created or opened for writing.
fn written(trace: &str) -> Vec<String> {
    trace
        .lines()
        .filter(|l| l.contains("O_CREAT") || l.contains("O_WRONLY") || l.contains("O_RDWR"))
        .filter(|l| !l.contains("= -1"))
        .filter_map(|l| l.split('"').nth(1).map(str::to_string))
        .filter(|p| !p.starts_with("/dev/"))
        .collect()
}

#[test]
fn plaintext_travels_only_through_pipes() {
    let test = "plaintext_travels_only_through_pipes";
    if !age_or_skip(test) || !support::strace_or_skip(test) {
        return;
    }
    let repo = TempRepo::new();
    let (special, pem) = support::write_special_values(&repo);
    repo.run(&["setup-secrets", "develop"]).ok();
    let (identity, public) = keygen(&repo.root, "key.txt");
    let env = repo.read("secrets/develop.env");
    let jwt = env
        .lines()
        .find_map(|l| l.strip_prefix("JWT_SECRET="))
        .unwrap()
        .to_string();
    let b64 = |v: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(v)
    };
    let values = [
        special.to_string(),
        jwt.clone(),
        "MIIBszCCAVmgAwIBAgIU".to_string(),
        b64(&jwt),
    ];
    let check = |what: &str, run: &Run, trace: &str| {
        assert!(trace.contains("execve("), "{what}: strace recorded nothing");
        assert!(
            trace.contains("--recipient") || trace.contains("--decrypt"),
            "{what}: age not traced"
        );
        for (i, v) in values.iter().enumerate() {
            assert!(
                !trace.contains(v.as_str()),
                "{what}: value #{i} in an argv or environment"
            );
            assert!(
                !run.all().contains(v.as_str()),
                "{what}: value #{i} printed"
            );
        }
    };

    let (r, trace) = traced(
        &repo,
        &[
            "backup-secrets",
            "develop",
            "--out",
            "b.age",
            "--recipient",
            &public,
        ],
    );
    let r = r.ok();
    check("backup", &r, &trace);
    let files = written(&trace);
    assert!(
        files.iter().all(|p| p.contains(".b.age.tmp-")),
        "backup wrote files other than its output: {files:?}"
    );
    assert!(!files.is_empty(), "the trace shows no write of b.age");

    std::fs::remove_file(repo.path("secrets/develop.env")).unwrap();
    std::fs::remove_file(repo.path("secrets/tls.pem")).unwrap();
    let id = identity.to_str().unwrap().to_string();
    let (r, trace) = traced(
        &repo,
        &[
            "restore-secrets",
            "develop",
            "--from",
            "b.age",
            "--identity",
            &id,
        ],
    );
    let r = r.ok();
    check("restore", &r, &trace);
    // Every file written is a restored file, a store file or the lock, all in
    // secrets/, or the audit log (which holds no value, checked below).
    let root = repo.root.display().to_string();
    for p in written(&trace) {
        let rel = p.strip_prefix(&format!("{root}/")).unwrap_or(&p);
        assert!(
            rel.starts_with("secrets/")
                || rel.starts_with("deploy/.audit-log.tsv")
                || rel == "deploy/audit-log.tsv",
            "restore wrote {p} outside secrets/"
        );
    }
    let log = repo.read("deploy/audit-log.tsv");
    assert!(log.contains("\trestore-secrets\trestore\t"), "{log}");
    for (i, v) in values.iter().enumerate() {
        assert!(
            !log.contains(v.as_str()),
            "value #{i} reached the audit log"
        );
    }
    assert_eq!(repo.read("secrets/develop.env"), env);
    assert_eq!(repo.read("secrets/tls.pem"), pem);
}

/// Runs the tool on a pseudo-terminal (util-linux `script`) with `typed` as
/// the keyboard, for age's passphrase prompts.
fn on_terminal(repo: &TempRepo, args: &[&str], typed: &str) -> Option<Run> {
    use std::io::Write;
    if !support::script_or_skip() {
        return None;
    }
    let line = std::iter::once(env!("CARGO_BIN_EXE_xtask"))
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .current_dir(&repo.root)
        .env("CARGO_MANIFEST_DIR", repo.root.join("xtask"))
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(typed.as_bytes()).unwrap();
    // Keep the keyboard open until the run ends: an early EOF would end it.
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    Some(Run::from(out))
}

#[test]
fn a_passphrase_works_on_a_terminal() {
    if !age_or_skip("a_passphrase_works_on_a_terminal") {
        return;
    }
    let repo = TempRepo::new();
    repo.run(&["setup-secrets", "develop"]).ok();
    let env = repo.read("secrets/develop.env");
    let pass = "correct horse battery staple\n";
    let Some(r) = on_terminal(
        &repo,
        &["backup-secrets", "develop", "--out", "p.age"],
        &pass.repeat(2),
    ) else {
        return;
    };
    assert!(
        r.stdout.contains("encrypted to a passphrase"),
        "{}",
        r.all()
    );
    let sealed = std::fs::read(repo.path("p.age")).unwrap();
    assert!(
        sealed.starts_with(b"age-encryption.org/v1\n-> scrypt "),
        "not a passphrase age file"
    );
    std::fs::remove_file(repo.path("secrets/develop.env")).unwrap();
    let r = on_terminal(
        &repo,
        &["restore-secrets", "develop", "--from", "p.age"],
        "wrong passphrase\n",
    )
    .unwrap();
    assert!(
        !repo.path("secrets/develop.env").exists(),
        "a wrong passphrase restored: {}",
        r.all()
    );
    assert!(
        r.all()
            .contains("cannot decrypt p.age: incorrect passphrase"),
        "{}",
        r.all()
    );
    assert!(r.all().contains("type the right passphrase"), "{}", r.all());
    assert_ne!(r.code, 0);
    let r = on_terminal(
        &repo,
        &["restore-secrets", "develop", "--from", "p.age"],
        pass,
    )
    .unwrap();
    assert!(
        r.stdout.contains("create    secrets/develop.env"),
        "{}",
        r.all()
    );
    assert_eq!(repo.read("secrets/develop.env"), env);
}

/// Removes a test project's swarm secrets however the test ends.
struct SwarmProject(String);

impl Drop for SwarmProject {
    fn drop(&mut self) {
        support::remove_project_secrets(&self.0);
    }
}

#[test]
fn restore_brings_a_swarm_store_back() {
    let test = "restore_brings_a_swarm_store_back";
    if !age_or_skip(test) || !support::swarm_or_skip(test) {
        return;
    }
    let repo = TempRepo::new();
    let project = SwarmProject(format!("xb{}", support::unique()));
    repo.write(
        "deploy/secrets.toml",
        &format!(
            "project = \"{}\"\n[environments.stage]\nbackend = \"swarm\"\n[secrets.app_password]\nkind = \"password\"\n[secrets.tls_key]\nkind = \"file\"\npem = true\n",
            project.0
        ),
    );
    let pem =
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIBBx+/9zzz\n-----END PRIVATE KEY-----\n";
    repo.write("secrets/tls/key.pem", pem);
    repo.write("secrets/stage.env", "TLS_KEY=tls/key.pem\n");
    repo.run(&["setup-secrets", "stage", "--generate-missing"])
        .ok();
    let (identity, public) = keygen(&repo.root, "key.txt");
    repo.run(&[
        "backup-secrets",
        "stage",
        "--out",
        "s.age",
        "--recipient",
        &public,
    ])
    .ok();
    let env = repo.read("secrets/stage.env");
    repo.run(&["remove-secrets", "stage", "--yes"]).ok();
    std::fs::remove_file(repo.path("secrets/stage.env")).unwrap();
    std::fs::remove_file(repo.path("secrets/tls/key.pem")).unwrap();
    repo.run(&["verify-secrets", "stage"]).fails();

    let r = restore(&repo, "stage", "s.age", identity.to_str().unwrap(), &[]).ok();
    assert!(
        r.stdout.contains("create    secrets/tls/key.pem"),
        "{}",
        r.stdout
    );
    assert_eq!(repo.read("secrets/stage.env"), env);
    assert_eq!(repo.read("secrets/tls/key.pem"), pem);
    repo.run(&["verify-secrets", "stage"]).ok();
    let names = support::docker(&[
        "secret",
        "ls",
        "--filter",
        &format!("label=xtask.project={}", project.0),
        "--format",
        "{{.Name}}",
    ]);
    assert_eq!(names.lines().count(), 2, "{names}");
}

/// A backup whose TLS key is not its certificate's (made while the files were
/// mismatched, or with one swapped) is refused before anything is written.
#[test]
fn restore_refuses_a_mismatched_tls_pair_and_changes_nothing() {
    let test = "restore_refuses_a_mismatched_tls_pair_and_changes_nothing";
    if !age_or_skip(test) {
        return;
    }
    let repo = TempRepo::new();
    repo.write(
        "deploy/secrets.toml",
        "project = \"pairs\"\n[environments.stage]\nbackend = \"compose\"\n[secrets.app_password]\nkind = \"password\"\n[secrets.cert]\nkind = \"file\"\npem = true\n[secrets.cert_key]\nkind = \"file\"\npem = true\nkey_of = \"cert\"\n",
    );
    let (cert, key, other) = support::tls_pair();
    repo.write("secrets/tls/cert.pem", cert);
    repo.write("secrets/tls/key.pem", other);
    repo.write(
        "secrets/stage.env",
        "CERT=tls/cert.pem\nCERT_KEY=tls/key.pem\n",
    );
    // Setup refuses the pair; a backup takes the files as they are.
    let r = repo
        .run(&["setup-secrets", "stage", "--generate-missing"])
        .fails();
    assert!(
        r.stderr.contains("cert_key is not the private key of cert"),
        "{}",
        r.stderr
    );
    let (identity, public) = keygen(&repo.root, "key.txt");
    repo.run(&[
        "backup-secrets",
        "stage",
        "--out",
        "bad.age",
        "--recipient",
        &public,
    ])
    .ok();
    // The files are put right, the store set up; then the bad backup.
    repo.write("secrets/tls/key.pem", key);
    repo.run(&["setup-secrets", "stage", "--generate-missing"])
        .ok();
    let before = snapshot(&repo);
    let r = restore(
        &repo,
        "stage",
        "bad.age",
        identity.to_str().unwrap(),
        &["--force"],
    )
    .fails();
    assert!(
        r.stderr.contains("in the backup bad.age")
            && r.stderr.contains("cert_key is not the private key of cert"),
        "{}",
        r.stderr
    );
    assert_eq!(snapshot(&repo), before, "a refused restore changed files");
    assert_eq!(repo.read("secrets/tls/key.pem"), *key);
}
