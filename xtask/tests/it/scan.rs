//! `scan` on a copy of the repository with develop's real generated values: a
//! value planted in a tracked file, in staged changes and in history, plainly
//! and in base64, is found and reported by place, environment and name, and
//! never printed; a clean tree passes; the hook is installed without
//! clobbering another.

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
