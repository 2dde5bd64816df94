//! `scan` on a copy of the repository with develop's real generated values: a
//! value planted in a tracked file, in staged changes and in history, plainly
//! and in base64, is found and reported by place, environment and name, and
//! never printed; a clean tree passes; the hook is installed without
//! clobbering another. Each finding says how current its value is: since the
//! audit log's last store write of it (or "since when is unknown"), and for
//! an earlier value that a committed env file's history holds, "superseded"
//! until the next version that changed it or the next logged store write.

use crate::support;

use std::os::unix::fs::PermissionsExt;

use base64::Engine;
use support::{Run, TempRepo};

/// develop set up, and the value of `key` from its env file.
fn with_values(key: &str) -> (TempRepo, String) {
    let repo = TempRepo::new();
    repo.run(&["setup-secrets", "develop"]).ok();
    let env = repo.read("secrets/develop.env");
    let v = env
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap()
        .trim_matches('\'')
        .to_string();
    (repo, v)
}

/// `git commit -qm MSG` as a throwaway identity.
fn commit_args(msg: &str) -> [&str; 7] {
    [
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t.invalid",
        "commit",
        "-qm",
        msg,
    ]
}

fn commit(repo: &TempRepo, msg: &str) {
    repo.git(&commit_args(msg));
}

/// The time of the last `ok` audit-log line of `secret` in develop with `action`.
fn logged(repo: &TempRepo, secret: &str, action: &str) -> String {
    repo.read("deploy/audit-log.tsv")
        .lines()
        .rfind(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            f.len() == 9 && f[1] == "develop" && f[3] == action && f[4] == secret && f[8] == "ok"
        })
        .and_then(|l| l.split('\t').next())
        .unwrap_or_else(|| panic!("no {action} of {secret} in the audit log"))
        .to_string()
}

/// HEAD's commit time (RFC 3339, UTC) and short id.
fn head(repo: &TempRepo) -> (String, String) {
    let out = std::process::Command::new("git")
        .args([
            "log",
            "-1",
            "--date=format-local:%Y-%m-%dT%H:%M:%SZ",
            "--format=%cd %h",
        ])
        .current_dir(&repo.root)
        .env("TZ", "UTC")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (t, h) = text.trim().split_once(' ').unwrap();
    (t.to_string(), h.to_string())
}

/// Past the current second: log and commit times are to the second.
fn tick() {
    std::thread::sleep(std::time::Duration::from_millis(1100));
}

fn never_printed(r: &Run, v: &str) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(v);
    assert!(
        !r.all().contains(v) && !r.all().contains(&b64[..b64.len() - 4]),
        "the value was printed:\n{}",
        r.all()
    );
}

#[test]
fn a_clean_tree_passes_and_a_planted_value_is_found() {
    let (repo, jwt) = with_values("JWT_SECRET");
    let r = repo.run(&["scan"]).ok();
    assert!(
        r.stdout.contains("no current secret value found"),
        "{}",
        r.stdout
    );

    // Plain in one tracked file, base64 inside longer base64 in another.
    repo.write("docs/notes.md", &format!("# notes\n\ntoken: {jwt}\n"));
    let mut blob = b"{\"k\":\"".to_vec();
    blob.extend_from_slice(jwt.as_bytes());
    blob.extend_from_slice(b"\"}");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&blob);
    repo.write("deploy/config.yaml", &format!("a: 1\nb: 2\ndata: {b64}\n"));
    repo.git(&["add", "docs/notes.md", "deploy/config.yaml"]);
    let r = repo.run(&["scan"]).fails();
    assert!(
        r.stdout
            .contains("docs/notes.md:3: develop JWT_SECRET (plain)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("deploy/config.yaml:3: develop JWT_SECRET (base64)"),
        "{}",
        r.stdout
    );
    assert!(r.stderr.contains("2 finding(s)"), "{}", r.stderr);
    never_printed(&r, &jwt);

    // Each says since when the value is current: setup's store write.
    let since = logged(&repo, "jwt_secret", "create");
    assert!(
        r.stdout.contains(&format!(
            "docs/notes.md:3: develop JWT_SECRET (plain), current now (since {since}); rotate: `cargo xtask rotate-secrets develop --secret jwt_secret`"
        )),
        "{}",
        r.stdout
    );
    // With no audit log, that is unknown, and said so.
    std::fs::remove_file(repo.path("deploy/audit-log.tsv")).unwrap();
    let r = repo.run(&["scan"]).fails();
    assert!(
        r.stdout.contains(
            "docs/notes.md:3: develop JWT_SECRET (plain), current now (since when is unknown); rotate:"
        ),
        "{}",
        r.stdout
    );
}

/// An env file committed by mistake, then rotated: `--history` finds its
/// earlier values in the commits that hold them, as superseded and until
/// when, with no rotate command; the current ones as current since when.
#[test]
fn an_earlier_value_in_history_is_superseded_until_it_changed() {
    let (repo, old_jwt) = with_values("JWT_SECRET");
    let old_redis = support::env_value(&repo, "develop", "REDIS_PASSWORD");
    tick();
    // v1: committed by mistake.
    repo.git(&["add", "-f", "secrets/develop.env"]);
    commit(&repo, "v1: add the env file");
    let (_, v1) = head(&repo);
    tick();
    // v2: JWT_SECRET changed in the file and committed; then the file is
    // untracked at last (setup refuses a tracked one), and set up.
    let new_jwt = format!("Rotated-Jwt-{}-Qz7xLm3Pw9kR", support::unique());
    support::set_env_value(&repo, "develop", "JWT_SECRET", Some(&new_jwt));
    repo.git(&["add", "-f", "secrets/develop.env"]);
    commit(&repo, "v2: rotate the jwt");
    let (v2_time, v2) = head(&repo);
    repo.git(&["rm", "-q", "--cached", "secrets/develop.env"]);
    commit(&repo, "v3: stop tracking it");
    repo.run(&["setup-secrets", "develop"]).ok();
    tick();
    // Then REDIS_PASSWORD rotated outside git.
    let new_redis = format!("Rotated-Redis-{}-Wm4Tz8Kp", support::unique());
    support::set_env_value(&repo, "develop", "REDIS_PASSWORD", Some(&new_redis));
    repo.run(&["setup-secrets", "develop"]).ok();
    let redis_rotated = logged(&repo, "redis_password", "update");
    let jwt_since = logged(&repo, "jwt_secret", "update");

    // The work tree holds none of them any more.
    repo.run(&["scan"]).ok();
    let r = repo.run(&["scan", "--history"]).fails();
    let line = |commit: &str, key: &str, rest: &str| {
        r.stdout
            .lines()
            .find(|l| {
                l.starts_with(&format!("commit {commit} secrets/develop.env:"))
                    && l.contains(&format!(": develop {key} (plain), {rest}"))
            })
            .unwrap_or_else(|| panic!("no {key} in {commit} with {rest:?}:\n{}", r.stdout))
            .to_string()
    };
    // The first JWT value: until the commit of v2, which changed it.
    let l = line(
        &v1,
        "JWT_SECRET",
        &format!("superseded (last current until {v2_time}); already rotated"),
    );
    assert!(!l.contains("rotate-secrets"), "{l}");
    // The first REDIS value, in v1 and v2: until the logged store write
    // that replaced it (no version in history changed it).
    for c in [&v1, &v2] {
        line(
            c,
            "REDIS_PASSWORD",
            &format!("superseded (last current until {redis_rotated}); already rotated"),
        );
    }
    // The current JWT value, in v2: since its store write.
    line(
        &v2,
        "JWT_SECRET",
        &format!(
            "current now (since {jwt_since}); rotate: `cargo xtask rotate-secrets develop --secret jwt_secret`"
        ),
    );
    // Only current values are to rotate; the superseded ones are counted apart.
    assert!(
        r.stderr.contains("--secret jwt_secret") && !r.stderr.contains("--secret redis_password"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("of superseded ones, already rotated"),
        "{}",
        r.stderr
    );
    for v in [&old_jwt, &new_jwt, &old_redis, &new_redis] {
        never_printed(&r, v);
    }
}

/// History holding superseded values only: each is listed, dated as far as
/// anything tells (here nothing does: no later version, no logged write), and
/// the scan passes, for nothing needs rotating.
#[test]
fn superseded_values_alone_are_listed_and_fail_nothing() {
    let repo = TempRepo::new();
    let first = format!("First-Jwt-{}-Qz7xLm3Pw9kR", support::unique());
    repo.write("secrets/develop.env", &format!("JWT_SECRET={first}\n"));
    repo.git(&["add", "-f", "secrets/develop.env"]);
    commit(&repo, "add the env file by mistake");
    let (_, c) = head(&repo);
    repo.git(&["rm", "-q", "--cached", "secrets/develop.env"]);
    commit(&repo, "stop tracking it");
    let second = format!("Second-Jwt-{}-Wm4Tz8Kp", support::unique());
    repo.write("secrets/develop.env", &format!("JWT_SECRET={second}\n"));
    let r = repo.run(&["scan", "--history"]).ok();
    assert!(
        r.stdout.contains(&format!(
            "commit {c} secrets/develop.env:1: develop JWT_SECRET (plain), superseded (until when it was current is unknown); already rotated"
        )),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("no current secret value found")
            && r.stdout
                .contains("1 earlier value(s) from the env files' versions in history")
            && r.stdout.contains("1 place(s) above hold superseded values"),
        "{}",
        r.stdout
    );
    never_printed(&r, &first);
    never_printed(&r, &second);
}

#[test]
fn staged_changes_and_history_are_searched() {
    let (repo, pw) = with_values("REDIS_PASSWORD");
    repo.write(
        "app/settings.env",
        &format!("REDIS=redis://:{pw}@redis:6379\n"),
    );
    repo.git(&["add", "app/settings.env"]);
    let r = repo.run(&["scan", "--staged"]).fails();
    assert!(
        r.stdout
            .contains("app/settings.env:1 (staged): develop REDIS_PASSWORD (plain)"),
        "{}",
        r.stdout
    );
    never_printed(&r, &pw);

    // Committed, then deleted: only --history still finds it, with the commit.
    commit(&repo, "oops");
    let sha = String::from_utf8(repo.git(&["rev-parse", "--short", "HEAD"]).stdout).unwrap();
    repo.git(&["rm", "-q", "app/settings.env"]);
    commit(&repo, "remove it");
    repo.run(&["scan"]).ok();
    repo.run(&["scan", "--staged"]).ok();
    let r = repo.run(&["scan", "--history"]).fails();
    assert!(
        r.stdout.contains(&format!(
            "commit {} app/settings.env:1: develop REDIS_PASSWORD (plain)",
            sha.trim()
        )),
        "{}",
        r.stdout
    );
    never_printed(&r, &pw);

    // git is asked through pipes only: no value on any argv or in any environment.
    if support::strace_or_skip("staged_changes_and_history_are_searched") {
        let log = std::env::temp_dir().join(format!("xtask-scan-trace-{}.log", support::unique()));
        let out = support::under_strace(&repo.xtask(&["scan", "--history"]), true, &log)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let trace = std::fs::read_to_string(&log).unwrap();
        let _ = std::fs::remove_file(&log);
        assert!(
            trace.contains("\"cat-file\", \"--batch\""),
            "git cat-file not traced"
        );
        assert!(
            !trace.contains(&pw),
            "a value reached an argv or environment"
        );
    }
}

#[test]
fn the_hook_is_installed_and_never_clobbers_another() {
    let repo = TempRepo::new();
    let r = repo.run(&["scan", "--install-hook"]).ok();
    assert!(
        r.stdout.contains("installed the pre-commit hook"),
        "{}",
        r.stdout
    );
    let hook = repo.path(".git/hooks/pre-commit");
    assert!(
        repo.read(".git/hooks/pre-commit")
            .contains("exec cargo xtask scan --staged\n")
    );
    assert_eq!(
        std::fs::metadata(&hook).unwrap().permissions().mode() & 0o777,
        0o755
    );
    repo.run(&["scan", "--install-hook"]).ok();
    std::fs::write(&hook, "#!/bin/sh\nmake lint\n").unwrap();
    let r = repo.run(&["scan", "--install-hook"]).fails();
    assert!(
        r.stderr
            .contains("is a different hook; it was left as it is"),
        "{}",
        r.stderr
    );
    assert_eq!(repo.read(".git/hooks/pre-commit"), "#!/bin/sh\nmake lint\n");
}

/// The installed hook refuses a commit that adds a value, and lets a clean one
/// through. `cargo` is a stand-in on PATH that runs this build's binary, so the
/// hook runs exactly its own command line without building the copy.
#[test]
fn the_hook_refuses_a_commit_holding_a_value() {
    use std::os::unix::fs::PermissionsExt;
    let (repo, key) = with_values("API_SECRET_KEY");
    repo.run(&["scan", "--install-hook"]).ok();
    let bin = repo.path("fake-bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(
        bin.join("cargo"),
        format!(
            "#!/bin/sh\n[ \"$1\" = xtask ] || exit 99\nshift\nexec {} \"$@\"\n",
            env!("CARGO_BIN_EXE_xtask")
        ),
    )
    .unwrap();
    std::fs::set_permissions(bin.join("cargo"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let commit = |msg: &str| {
        std::process::Command::new("git")
            .args(commit_args(msg))
            .current_dir(&repo.root)
            .env("PATH", &path)
            .env("CARGO_MANIFEST_DIR", repo.root.join("xtask"))
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    };
    let head = || String::from_utf8(repo.git(&["rev-parse", "HEAD"]).stdout).unwrap();
    let before = head();
    repo.write("config/app.toml", &format!("[api]\nkey = \"{key}\"\n"));
    repo.git(&["add", "config/app.toml"]);
    let out = commit("add config");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "the commit went through: {text}");
    assert!(
        text.contains("config/app.toml:2 (staged): develop API_SECRET_KEY (plain)"),
        "{text}"
    );
    assert!(!text.contains(&key), "the hook printed the value");
    assert_eq!(head(), before, "a commit was made");
    repo.write(
        "config/app.toml",
        "[api]\nkey_file = \"/run/secrets/api_secret_key\"\n",
    );
    repo.git(&["add", "config/app.toml"]);
    let out = commit("add config");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(head(), before);
}
