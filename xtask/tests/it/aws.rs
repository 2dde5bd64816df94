//! The AWS Secrets Manager store against a real moto server that each test
//! starts on a free port (killed on drop), with dummy credentials: setup
//! creates every secret with the right value and tags, a no-change re-run
//! makes exactly one aws call (counted through an `AWS_CLI` wrapper), a changed
//! value becomes a new version with the old one kept as `AWSPREVIOUS`,
//! `remove-secrets --yes` schedules deletion, setup then names the restore
//! command, and strace over setup shows no value on any argv.
//!
//! Needs `moto_server` and `aws` (`bash .ci/moto.sh` installs both): without
//! them the tests fail under `CI=true` and are skipped loudly elsewhere.

use crate::support;

use std::{process::Command, time::Instant};

use serde_json::Value;
use support::flows::{Places, assert_shown, ok_with_nothing_on_argv, own_project};
use support::servers::free_port;
use support::servers::moto::{Moto, moto_or_skip};
use support::{DEVELOP_SECRETS, Run, TempRepo, env_value};

/// The shipped manifest with develop on the aws store and the compose runtime.
fn repo_on_aws() -> TempRepo {
    let repo = TempRepo::new();
    let m = repo.read("deploy/secrets.toml");
    let m = m.replacen(
        "[environments.develop]\nbackend = \"compose\"\n",
        "[environments.develop]\nstore = \"aws\"\nruntime = \"compose\"\n",
        1,
    );
    assert!(m.contains("store = \"aws\""), "the manifest changed shape");
    repo.write(
        "deploy/secrets.toml",
        &format!("{m}\n[environments.develop.aws]\nrecovery_days = 7\n"),
    );
    repo
}

/// What each develop secret must hold, from the env file.
fn expected(repo: &TempRepo, name: &str) -> String {
    if name == "database_url" {
        return format!(
            "postgresql://{}:{}@postgres:5432/raqeem_develop",
            env_value(repo, "develop", "POSTGRES_USER"),
            env_value(repo, "develop", "POSTGRES_PASSWORD")
        );
    }
    env_value(repo, "develop", &name.to_ascii_uppercase())
}

fn current(moto: &Moto, repo: &TempRepo, name: &str) -> String {
    let id = format!("raqeem/develop/{name}");
    let v = moto.aws(repo, &["get-secret-value", "--secret-id", &id]);
    v["SecretString"].as_str().unwrap().to_string()
}

fn tags(moto: &Moto, repo: &TempRepo, name: &str) -> std::collections::BTreeMap<String, String> {
    let id = format!("raqeem/develop/{name}");
    let d = moto.aws(repo, &["describe-secret", "--secret-id", &id]);
    d["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["Key"].as_str().unwrap().to_string(),
                t["Value"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn setup_rerun_rotate_and_remove_on_moto() {
    if !moto_or_skip("setup_rerun_rotate_and_remove_on_moto") {
        return;
    }
    let moto = Moto::start();
    let repo = repo_on_aws();

    let t0 = Instant::now();
    let first = moto.run(&repo, &["setup-secrets", "develop"]).ok();
    let took = t0.elapsed();
    assert!(
        first
            .stdout
            .contains("done: 8 created, 0 updated, 0 unchanged"),
        "{}",
        first.all()
    );
    eprintln!("setup of 8 secrets on moto: {:.1} s", took.as_secs_f64());
    for n in DEVELOP_SECRETS {
        assert_eq!(current(&moto, &repo, n), expected(&repo, n), "{n}");
        let t = tags(&moto, &repo, n);
        assert_eq!(t["xtask.tool"], "cargo-xtask", "{n}");
        assert_eq!(t["xtask.project"], "raqeem", "{n}");
        assert_eq!(t["xtask.environment"], "develop", "{n}");
        assert_eq!(t["xtask.secret"], n, "{n}");
        assert_eq!(t["xtask.version"], "1", "{n}");
        assert_eq!(t["xtask.fingerprint"].len(), 16, "{n}");
        assert!(t["xtask.rotated-at"].ends_with('Z'), "{n}: {t:?}");
    }

    // A no-change re-run: exactly one aws call, counted through AWS_CLI.
    let count = repo.path("aws-calls");
    let wrapper = repo.path("aws-wrapper");
    let real = which::which("aws").unwrap();
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            count.display(),
            real.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let again = Run::from(
        moto.xtask(&repo, &["setup-secrets", "develop"])
            .env("AWS_CLI", &wrapper)
            .output()
            .unwrap(),
    )
    .ok();
    assert!(again.stdout.contains("nothing to do"), "{}", again.all());
    let calls = std::fs::read_to_string(&count).unwrap();
    assert_eq!(calls.lines().count(), 1, "aws calls:\n{calls}");
    assert!(calls.contains("list-secrets"), "{calls}");

    // A changed value: a new version, the old one kept as AWSPREVIOUS.
    let old = env_value(&repo, "develop", "POSTGRES_PASSWORD");
    let new = "Rotated-Passw0rd-4711-xyzzy-QWERTY";
    let text = repo.read("secrets/develop.env").replace(
        &format!("POSTGRES_PASSWORD={old}"),
        &format!("POSTGRES_PASSWORD={new}"),
    );
    repo.write("secrets/develop.env", &text);
    let rotated = moto.run(&repo, &["setup-secrets", "develop"]).ok();
    // database_url is built from the password, so it changes too.
    assert!(
        rotated
            .stdout
            .contains("done: 0 created, 2 updated, 6 unchanged"),
        "{}",
        rotated.all()
    );
    assert_eq!(current(&moto, &repo, "postgres_password"), new);
    let prev = moto.aws(
        &repo,
        &[
            "get-secret-value",
            "--secret-id",
            "raqeem/develop/postgres_password",
            "--version-stage",
            "AWSPREVIOUS",
        ],
    );
    assert_eq!(prev["SecretString"].as_str(), Some(old.as_str()));
    assert_eq!(
        tags(&moto, &repo, "postgres_password")["xtask.version"],
        "2"
    );
    assert_eq!(tags(&moto, &repo, "jwt_secret")["xtask.version"], "1");
    assert_eq!(
        current(&moto, &repo, "database_url"),
        expected(&repo, "database_url")
    );

    let list = moto.run(&repo, &["list-secrets", "develop"]).ok();
    let line = list
        .stdout
        .lines()
        .find(|l| l.starts_with("postgres_password"))
        .unwrap_or_else(|| panic!("{}", list.all()));
    assert!(
        line.contains("current")
            && line.contains("v2")
            && line.contains("raqeem/develop/postgres_password")
            && line.contains("AWSCURRENT, and AWSPREVIOUS for rollback"),
        "{line}"
    );
    let json = moto.run(&repo, &["list-secrets", "develop", "--json"]).ok();
    let rows: Value = serde_json::from_str(&json.stdout).unwrap();
    let kept = |n: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == n)
            .unwrap()["kept"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        kept("postgres_password"),
        "AWSCURRENT, and AWSPREVIOUS for rollback"
    );
    assert_eq!(kept("jwt_secret"), "AWSCURRENT only");
    for o in [&first, &again, &rotated, &list] {
        for v in [old.as_str(), new] {
            assert!(!o.all().contains(v), "a value was printed:\n{}", o.all());
        }
    }

    // Removal schedules deletion with the recovery window; setup then says
    // how to restore instead of AWS's raw error.
    let rm = moto
        .run(&repo, &["remove-secrets", "develop", "--yes"])
        .ok();
    assert!(rm.stdout.contains("removed 8 secret(s)"), "{}", rm.all());
    assert!(rm.stdout.contains("7-day recovery window"), "{}", rm.all());
    let live = moto.aws(&repo, &["list-secrets"]);
    assert_eq!(
        live["SecretList"].as_array().map(Vec::len),
        Some(0),
        "{live}"
    );
    let all = moto.aws(&repo, &["list-secrets", "--include-planned-deletion"]);
    let doomed = all["SecretList"].as_array().unwrap();
    assert_eq!(doomed.len(), 8, "{all}");
    assert!(doomed.iter().all(|s| !s["DeletedDate"].is_null()), "{all}");
    let refused = moto.run(&repo, &["setup-secrets", "develop"]).fails();
    assert!(
        refused
            .all()
            .contains("aws secretsmanager restore-secret --secret-id raqeem/develop/jwt_secret"),
        "{}",
        refused.all()
    );
}

#[test]
fn errors_name_the_next_step() {
    if !moto_or_skip("errors_name_the_next_step") {
        return;
    }
    let repo = repo_on_aws();
    // No server on this port: the endpoint does not answer.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut c = repo.xtask(&["list-secrets", "develop"]);
    c.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", &url)
        .env("AWS_MAX_ATTEMPTS", "1")
        .env("AWS_CONFIG_FILE", repo.path("no-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            repo.path("no-aws-credentials"),
        )
        .env_remove("AWS_PROFILE");
    let r = Run::from(c.output().unwrap());
    assert!(r.all().contains("endpoint does not answer"), "{}", r.all());

    // No CLI where AWS_CLI points.
    let r = Run::from(
        repo.xtask(&["list-secrets", "develop"])
            .env("AWS_CLI", repo.path("no-such-aws"))
            .output()
            .unwrap(),
    );
    assert!(r.all().contains("AWS_CLI is set to"), "{}", r.all());

    // No credentials at all.
    let moto = Moto::start();
    let mut c = repo.xtask(&["list-secrets", "develop"]);
    moto.env(&mut c, &repo);
    c.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    let r = Run::from(c.output().unwrap());
    assert!(r.all().contains("no AWS credentials"), "{}", r.all());

    // An unknown settings key.
    let m = repo.read("deploy/secrets.toml");
    repo.write(
        "deploy/secrets.toml",
        &m.replace("recovery_days = 7", "recovery_days = 7\nregoin = \"x\""),
    );
    let r = moto.run(&repo, &["list-secrets", "develop"]);
    assert!(r.all().contains("unknown key `regoin`"), "{}", r.all());
}

#[test]
fn setup_puts_no_value_on_argv_under_strace() {
    if !moto_or_skip("setup_puts_no_value_on_argv_under_strace")
        || !support::strace_or_skip("setup_puts_no_value_on_argv_under_strace")
    {
        return;
    }
    let moto = Moto::start();
    let repo = repo_on_aws();
    // Services read AWS at run time here, so a rotation only writes AWS (the
    // fetch redeploy is covered by aws_deploy_fetch_then_reader_on_compose).
    let m = format!(
        "{}delivery = \"reader\"\nservice_credentials_file = \"secrets/develop.aws-credentials\"\n",
        repo.read("deploy/secrets.toml")
    );
    repo.write("deploy/secrets.toml", &m);
    let log = repo.path("strace.log");
    // The whole flow on this store: every command, old and new values.
    let flow: [&[&str]; 8] = [
        &["setup-secrets", "develop"],
        &["setup-secrets", "develop"],
        &["list-secrets", "develop"],
        &["list-secrets", "develop", "--json"],
        &["verify-secrets", "develop"],
        &["rotate-secrets", "develop", "--secret", "jwt_secret"],
        &[
            "remove-secrets",
            "develop",
            "--secret",
            "grafana_admin_password",
            "--yes",
        ],
        &[
            "remove-secrets",
            "develop",
            "--secret",
            "api_secret_key",
            "--yes",
            "--force",
        ],
    ];
    let mut places = Places::default();
    for args in flow {
        let mut c = Command::new("strace");
        c.args(["-f", "-v", "-e", "trace=execve", "-s", "65536", "-o"])
            .arg(&log)
            .arg(env!("CARGO_BIN_EXE_xtask"))
            .args(args)
            .current_dir(&repo.root)
            .env("CARGO_MANIFEST_DIR", repo.root.join("xtask"))
            .env("NO_COLOR", "1");
        moto.env(&mut c, &repo);
        let run = Run::from(c.output().unwrap()).ok();
        let trace = std::fs::read_to_string(&log).unwrap();
        if args == ["setup-secrets", "develop"] && run.stdout.contains("8 created") {
            assert!(
                trace.contains("\"create-secret\"") && trace.contains("file:///dev/stdin"),
                "strace did not record the aws calls:\n{}",
                &trace[..trace.len().min(4000)]
            );
        }
        places.add(args, trace, &run);
        for n in DEVELOP_SECRETS {
            places.value(expected(&repo, n));
        }
    }
    places.assert_none_shown(9, "the rotation added no value");
}

/// Values an operator really writes: quotes, spaces, `$` and `#` in a key,
/// and a multi-line PEM file secret. AWS must hold them byte for byte.
#[test]
fn special_and_multi_line_values_arrive_byte_for_byte() {
    if !moto_or_skip("special_and_multi_line_values_arrive_byte_for_byte") {
        return;
    }
    let moto = Moto::start();
    let repo = repo_on_aws();
    let (special, pem) = support::write_special_values(&repo);
    let out = Run::from(
        moto.xtask(&repo, &["setup-secrets", "develop"])
            .output()
            .unwrap(),
    );
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(current(&moto, &repo, "api_secret_key"), special);
    assert_eq!(current(&moto, &repo, "tls_bundle"), pem);
}

#[test]
fn aws_deploy_fetch_then_reader_on_compose() {
    let test = "aws_deploy_fetch_then_reader_on_compose";
    if !moto_or_skip(test) || !support::docker_or_skip(test) {
        return;
    }
    let moto = Moto::start();
    let repo = repo_on_aws();
    let name = own_project(&repo);
    repo.write(
        "docker-compose.prod.yml",
        &support::host_compose(support::reader_image(), free_port()),
    );
    let project = format!("{name}-develop");
    let _down = support::ComposeDown {
        root: repo.root.clone(),
        project: project.clone(),
    };
    moto.run(&repo, &["setup-secrets", "develop"]).ok();
    let in_aws = |s: &str| {
        let id = format!("{name}/develop/{s}");
        moto.aws(&repo, &["get-secret-value", "--secret-id", &id])["SecretString"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // Fetch: one batch-get-secret-value call reads the 8 values.
    let calls = repo.path("aws-calls.log");
    let wrapper = repo.path("aws-counting.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/usr/bin/env bash\nprintf '%s\\n' \"$*\" >> {}\nexec aws \"$@\"\n",
            calls.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Under strace when there is one: no value and no service key on any argv.
    let strace = support::strace_or_skip("aws_deploy_fetch_then_reader_on_compose (strace)");
    let log = strace.then(|| repo.path("strace.log"));
    let traced = |inner: Command| -> Run {
        let hidden = ["service-reader-key"];
        ok_with_nothing_on_argv(inner, log.as_deref(), &in_aws, &hidden, "deploy")
    };
    let mut fetch = moto.xtask(&repo, &["deploy", "develop", "--timeout", "120"]);
    fetch.env("AWS_CLI", &wrapper);
    let d = traced(fetch);
    assert!(
        d.stdout
            .contains("copies in the compose runtime, read from the aws store"),
        "{}",
        d.all()
    );
    let log = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(
        log.matches("batch-get-secret-value").count(),
        1,
        "expected one batched read:\n{log}"
    );
    assert!(!log.contains("secretsmanager get-secret-value"), "{log}");
    let shown = support::show_in_backend(&project, &support::BACKEND);
    assert_shown(&shown, true, &in_aws);

    // Reader: the services' own credentials file, never the operator's keys.
    repo.write(
        "secrets/develop.aws-credentials",
        "[default]\naws_access_key_id = service-reader\naws_secret_access_key = service-reader-key\n",
    );
    let m = format!(
        "{}delivery = \"reader\"\nservice_credentials_file = \"secrets/develop.aws-credentials\"\nregion = \"us-east-1\"\n",
        repo.read("deploy/secrets.toml")
    );
    repo.write("deploy/secrets.toml", &m);
    let d = traced(moto.xtask(&repo, &["deploy", "develop", "--timeout", "120"]));
    assert!(d.stdout.contains("at run time"), "{}", d.all());
    let shown = support::show_in_backend(&project, &support::BACKEND);
    assert_shown(&shown, false, &in_aws);
    let rot = moto
        .run(
            &repo,
            &["rotate-secrets", "develop", "--secret", "jwt_secret"],
        )
        .ok();
    assert!(rot.stdout.contains("cache time"), "{}", rot.all());
    let jwt = support::show_in_backend(&project, &["jwt_secret"]);
    assert_eq!(jwt[0].2, support::sha12(in_aws("jwt_secret").as_bytes()));
    // The operator's own secret key is refused.
    repo.write(
        "secrets/develop.aws-credentials",
        "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    );
    let own = moto.run(&repo, &["deploy", "develop"]).fails();
    assert!(
        own.all().contains("your own aws credential"),
        "{}",
        own.all()
    );
}
