//! `status` and the audit log through the real binary: an overdue secret fails
//! `--check` with its finding line, a key one environment lacks is reported,
//! `--json` has the documented fields, an unreadable store is a note and not an
//! abort; every changing command (setup, rotate, remove) leaves audit lines with
//! its outcome and no value, and dry runs leave none. Compose store throughout
//! (no server needed); on a swarm, the age comes from the secret's creation time.

use crate::support;
use support::set_env_value;

use std::time::{Duration, SystemTime};

use support::{Run, TempRepo, swarm_or_skip, unique};

const LOG: &str = "deploy/audit-log.tsv";

/// RFC 3339 for a time `days` ago (the log's own format), via the binary's
/// neighbour: GNU date.
fn days_ago(days: u64) -> String {
    let t = SystemTime::now() - Duration::from_secs(days * 86_400);
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Whether a Docker engine answers: without one, `status` cannot ask the
/// compose runtime which versions run, which is one `unreachable` finding
/// (never "no drift"), so the compose-only checks below expect it.
fn engine() -> bool {
    // The docker the binary runs here (tests clear `$DOCKER`): from PATH.
    std::process::Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `status develop --check` on a develop that has nothing to report: exit 0
/// and "no findings", or without an engine exactly the runtime's finding.
fn check_clean(repo: &TempRepo) -> Run {
    let r = repo.run(&["status", "develop", "--check"]);
    if engine() {
        let r = r.ok();
        assert!(r.stdout.contains("no findings"), "{}", r.stdout);
        return r;
    }
    support::skip_note(format_args!(
        "note: no Docker engine: status cannot ask the compose runtime; expecting that finding only"
    ));
    let r = r.fails();
    let findings: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.contains(": develop"))
        .collect();
    assert!(
        r.stdout.lines().any(|l| l.starts_with(
            "unreachable: develop: the compose runtime could not be asked which secret versions run"
        )) && r.stderr.contains("status --check: 1 finding(s)"),
        "{findings:?}\n{}",
        r.all()
    );
    r
}

/// Only develop, so nothing asks a swarm.
fn develop_only(repo: &TempRepo, policy: &str) {
    let m = repo
        .read("deploy/secrets.toml")
        .replace(
            "[environments.production]\nbackend = \"swarm\"\nmin_length = 32\n\n[environments.staging]\nbackend = \"swarm\"\nmin_length = 32\n",
            "",
        )
        .replace("environments = [\"production\", \"staging\"]\n", "environments = [\"develop\"]\n")
        .replace("generate = true\n", &format!("generate = true\n{policy}"));
    assert!(!m.contains("[environments.production]"), "{m}");
    std::fs::write(repo.path("deploy/secrets.toml"), m).unwrap();
    // The file secrets exist only in develop now: give them files (a real
    // pair: every plan checks that the key is the certificate's).
    let (cert, key, _) = support::tls_pair();
    repo.write("secrets/tls.crt", cert);
    repo.write("secrets/tls.key", key);
    repo.write(
        "secrets/develop.env",
        "SSL_CERTIFICATE=tls.crt\nSSL_PRIVATE_KEY=tls.key\n",
    );
}

#[test]
fn an_overdue_secret_fails_check_with_its_finding_and_a_zero_policy_clears_it() {
    let repo = TempRepo::new();
    develop_only(&repo, "rotate_every_days = 30\n");
    repo.run(&["setup-secrets", "develop"]).ok();
    check_clean(&repo);
    // Compose files keep no creation record, so the age comes from the audit
    // log: make jwt_secret's creation 40 days old there.
    let old = days_ago(40);
    let log: String = repo
        .read(LOG)
        .lines()
        .map(|l| match l.contains("\tjwt_secret\t") {
            true => format!("{old}{}\n", &l[l.find('\t').unwrap()..]),
            false => format!("{l}\n"),
        })
        .collect();
    repo.write(LOG, &log);
    let r = repo.run(&["status", "develop", "--check"]).fails();
    let findings: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| {
            l.starts_with("overdue: ") || l.starts_with("missing: ") || l.starts_with("drift: ")
        })
        .collect();
    assert_eq!(
        findings,
        [
            "overdue: develop jwt_secret: current value is 40 days old (from the audit log), the policy is 30 days; run `cargo xtask rotate-secrets develop --secret jwt_secret`"
        ],
        "{}",
        r.stdout
    );
    let count = if engine() { 1 } else { 2 };
    assert!(
        r.stderr
            .contains(&format!("status --check: {count} finding(s)")),
        "{}",
        r.stderr
    );
    assert!(r.stdout.contains("overdue 10d"), "{}", r.stdout);
    // Without --check the same table, exit 0.
    repo.run(&["status"]).ok();
    // A per-secret policy of 0 turns the finding off.
    let m = repo.read("deploy/secrets.toml").replace(
        "[secrets.jwt_secret]\nkind = \"key\"\n",
        "[secrets.jwt_secret]\nkind = \"key\"\nrotate_every_days = 0\n",
    );
    std::fs::write(repo.path("deploy/secrets.toml"), &m).unwrap();
    check_clean(&repo);
    let m = m.replace("rotate_every_days = 0\n", "rotate_every_days = \"90\"\n");
    std::fs::write(repo.path("deploy/secrets.toml"), &m).unwrap();
    let bad = repo.run(&["status"]).fails();
    assert!(
        bad.stderr
            .contains("[secrets.jwt_secret]: `rotate_every_days` must be a whole number of days"),
        "{}",
        bad.stderr
    );
}

#[test]
fn a_key_missing_in_one_environment_is_reported_and_json_has_the_documented_shape() {
    let repo = TempRepo::new();
    develop_only(&repo, "");
    // A second compose environment beside develop.
    let m = repo.read("deploy/secrets.toml").replace(
        "[secrets.postgres_user]",
        "[environments.qa]\nbackend = \"compose\"\ngenerate = true\n\n[secrets.postgres_user]",
    );
    std::fs::write(repo.path("deploy/secrets.toml"), m).unwrap();
    repo.run(&["setup-secrets", "develop"]).ok();
    repo.run(&["setup-secrets", "qa"]).ok();
    set_env_value(&repo, "qa", "JWT_SECRET", None);
    std::fs::remove_file(repo.path("secrets/qa/jwt_secret")).unwrap();
    let r = repo.run(&["status", "--check"]).fails();
    for want in [
        "missing: qa jwt_secret: not in the compose store (present in develop); run `cargo xtask setup-secrets qa`",
        "missing: qa jwt_secret: secrets/qa.env has no JWT_SECRET key (present in develop)",
    ] {
        assert!(r.stdout.lines().any(|l| l == want), "{want}\n{}", r.stdout);
    }
    assert!(
        r.stdout
            .contains("note: qa: the store is not compared with the env file"),
        "{}",
        r.stdout
    );

    // Drift: develop's env file and store disagree on one key.
    set_env_value(
        &repo,
        "develop",
        "API_SECRET_KEY",
        Some("Drifted-Value-0123456789abcdefXYZ"),
    );
    let j = repo.run(&["status", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&j.stdout).expect("status --json is JSON");
    assert!(v["generated_at"].as_str().unwrap().ends_with('Z'));
    let envs = v["environments"].as_array().unwrap();
    assert_eq!(envs.len(), 2);
    for e in envs {
        for k in [
            "name",
            "store",
            "runtime",
            "env_file",
            "reachable",
            "error",
            "notes",
        ] {
            assert!(e.get(k).is_some(), "environment without {k}: {e}");
        }
    }
    let secrets = v["secrets"].as_array().unwrap();
    let row = |env: &str, name: &str| {
        secrets
            .iter()
            .find(|s| s["environment"] == env && s["name"] == name)
            .unwrap_or_else(|| panic!("no row {env} {name}"))
            .clone()
    };
    let jwt = row("develop", "jwt_secret");
    for k in [
        "environment",
        "name",
        "store",
        "state",
        "version",
        "location",
        "created",
        "age_days",
        "age_source",
        "rotate_every_days",
        "due_in_days",
        "overdue",
        "last_rotation",
        "services",
        "used_by",
    ] {
        assert!(jwt.get(k).is_some(), "secret row without {k}: {jwt}");
    }
    assert_eq!(jwt["state"], "current");
    assert_eq!(jwt["store"], "compose");
    assert_eq!(jwt["age_source"], "audit-log");
    assert_eq!(jwt["age_days"], 0);
    assert_eq!(jwt["rotate_every_days"], 90);
    assert_eq!(jwt["due_in_days"], 90);
    assert_eq!(jwt["overdue"], false);
    assert_eq!(jwt["services"], serde_json::json!(["backend"]));
    assert!(jwt["used_by"].is_null(), "compose cannot tell its users");
    assert_eq!(row("develop", "api_secret_key")["state"], "drift");
    assert_eq!(row("qa", "jwt_secret")["state"], "missing");
    assert!(row("develop", "postgres_user")["rotate_every_days"].is_null());
    let kinds: Vec<(&str, &str, &str)> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap(),
                f["environment"].as_str().unwrap(),
                f["secret"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("drift", "develop", "api_secret_key")),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("missing", "qa", "jwt_secret")),
        "{kinds:?}"
    );
    // Nothing printed holds a value.
    let values = repo.read("secrets/develop.env") + &repo.read("secrets/qa.env");
    for line in values.lines().filter_map(|l| l.split_once('=')) {
        let val = line.1.trim_matches('\'');
        if val.len() >= 16 {
            assert!(
                !j.all().contains(val) && !r.all().contains(val),
                "a value was printed"
            );
        }
    }
}

#[test]
fn an_unreachable_store_is_a_note_not_an_abort() {
    let repo = TempRepo::new();
    repo.run(&["setup-secrets", "develop"]).ok();
    let r = Run::from(
        repo.xtask(&["status", "--check"])
            .env("DOCKER", "/nonexistent/docker")
            .output()
            .unwrap(),
    )
    .fails();
    for env in ["production", "staging"] {
        assert!(
            r.stdout
                .lines()
                .any(|l| l.starts_with(&format!("note: {env}: the swarm store could not be read"))),
            "{}",
            r.stdout
        );
        assert!(
            r.stdout
                .lines()
                .any(|l| l.starts_with(&format!("unreachable: {env}: "))),
            "{}",
            r.stdout
        );
    }
    // develop is still in the table.
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("develop ") && l.contains("jwt_secret")),
        "{}",
        r.stdout
    );
}

/// The changing commands on the compose store: setup (generate, create), a
/// setup that replaces a value (update), a rotation whose redeploy fails
/// (update ok, deploy failed), a removal; dry runs add nothing, and no value
/// of any moment is in the log.
#[test]
fn every_changing_command_leaves_audit_lines_and_no_value() {
    let repo = TempRepo::new();
    let run = |args: &[&str]| {
        Run::from(
            repo.xtask(args)
                .env("XTASK_OPERATOR", "Test Operator <op@example.org>")
                .env("DOCKER", "/bin/false")
                .output()
                .unwrap(),
        )
    };
    let mut values = Vec::new();
    let collect = |repo: &TempRepo, values: &mut Vec<String>| {
        for l in repo.read("secrets/develop.env").lines() {
            if let Some((_, v)) = l.split_once('=') {
                values.push(v.trim_matches('\'').to_string());
            }
        }
    };
    run(&["setup-secrets", "develop", "--dry-run"]).ok();
    assert!(!repo.path(LOG).exists(), "a dry run wrote the audit log");
    run(&["setup-secrets", "develop"]).ok();
    collect(&repo, &mut values);
    let replaced = "Replaced-Value-0123456789abcdefXYZ";
    set_env_value(&repo, "develop", "JWT_SECRET", Some(replaced));
    values.push(replaced.into());
    run(&["setup-secrets", "develop"]).ok();
    let before = repo.read(LOG);
    run(&[
        "rotate-secrets",
        "develop",
        "--secret",
        "api_secret_key",
        "--dry-run",
    ])
    .ok();
    run(&[
        "remove-secrets",
        "develop",
        "--secret",
        "grafana_admin_password",
        "--dry-run",
    ])
    .ok();
    assert_eq!(repo.read(LOG), before, "a dry run wrote to the audit log");
    let rot = run(&[
        "rotate-secrets",
        "develop",
        "--secret",
        "api_secret_key",
        "--timeout",
        "5",
    ])
    .fails();
    collect(&repo, &mut values);
    assert!(
        rot.stderr.contains("docker") || rot.stderr.contains("Docker"),
        "{}",
        rot.stderr
    );
    // The rotation stopped at its redeploy: the error says how to finish it,
    // and the re-run finishes it (no other new value) rather than rotating again.
    assert!(
        rot.stderr.contains("the rollout did not converge")
            && rot.stderr.contains(
                "run `cargo xtask rotate-secrets develop --secret api_secret_key` again: it finishes this rotation without making another new value"
            ),
        "{}",
        rot.stderr
    );
    let key_line = |repo: &TempRepo| {
        repo.read("secrets/develop.env")
            .lines()
            .find(|l| l.starts_with("API_SECRET_KEY="))
            .map(str::to_string)
            .unwrap()
    };
    let rotated = key_line(&repo);
    let again = run(&[
        "rotate-secrets",
        "develop",
        "--secret",
        "api_secret_key",
        "--timeout",
        "5",
    ])
    .fails();
    assert!(
        again
            .stdout
            .contains("api_secret_key: finishing its rotation, which stopped before it completed")
            && !again.stdout.contains("generating a new value"),
        "{}",
        again.all()
    );
    assert_eq!(key_line(&repo), rotated, "the re-run made another value");
    run(&[
        "remove-secrets",
        "develop",
        "--secret",
        "grafana_admin_password",
        "--yes",
    ])
    .ok();

    let log = repo.read(LOG);
    assert!(
        log.starts_with(
            "time\tenvironment\tcommand\taction\tsecret\tversion\toperator\tstore\toutcome\n"
        ),
        "{log}"
    );
    let has = |command: &str, action: &str, secret: &str, outcome: &str| {
        log.lines().any(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            f.len() == 9
                && f[1] == "develop"
                && f[2] == command
                && f[3] == action
                && f[4] == secret
                && f[6] == "Test Operator <op@example.org>"
                && f[7] == "compose"
                && f[8] == outcome
        })
    };
    for (command, action, secret, outcome) in [
        ("setup-secrets", "generate", "jwt_secret", "ok"),
        ("setup-secrets", "create", "jwt_secret", "ok"),
        ("setup-secrets", "create", "database_url", "ok"),
        ("setup-secrets", "update", "jwt_secret", "ok"),
        ("rotate-secrets", "generate", "api_secret_key", "ok"),
        ("rotate-secrets", "update", "api_secret_key", "ok"),
        ("rotate-secrets", "deploy", "api_secret_key", "failed"),
        ("remove-secrets", "remove", "grafana_admin_password", "ok"),
    ] {
        assert!(
            has(command, action, secret, outcome),
            "no {command} {action} {secret} {outcome} line:\n{log}"
        );
    }
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("\tupdate\tjwt_secret\t"))
            .count(),
        1,
        "{log}"
    );
    assert!(values.len() >= 16, "{values:?}");
    for v in values.iter().filter(|v| v.len() >= 8) {
        assert!(!log.contains(v.as_str()), "a value is in the audit log");
    }
    // status reads the rotation back with its operator.
    let st = repo.run(&["status", "develop", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    let api = v["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "api_secret_key")
        .unwrap()
        .clone();
    assert_eq!(
        api["last_rotation"]["operator"],
        "Test Operator <op@example.org>"
    );
    assert_eq!(api["last_rotation"]["command"], "rotate-secrets");
}

#[test]
fn the_old_rotation_log_is_still_read() {
    let repo = TempRepo::new();
    repo.run(&["setup-secrets", "develop"]).ok();
    repo.write(
        "deploy/rotation-log.tsv",
        &format!(
            "time\tenvironment\tsecret\tversion\toperator\tbackend\n{}\tdevelop\tredis_password\t-\tveteran\tcompose\n",
            days_ago(3)
        ),
    );
    let st = repo.run(&["status", "develop"]).ok();
    let line = st
        .stdout
        .lines()
        .find(|l| l.contains(" redis_password "))
        .unwrap();
    assert!(line.contains("veteran"), "{}", st.stdout);
}

/// On a swarm the age is the secret's own creation time; setup and removal
/// are audited with versions.
#[test]
fn swarm_age_comes_from_the_secret_and_changes_are_audited() {
    if !swarm_or_skip("swarm_age_comes_from_the_secret_and_changes_are_audited") {
        return;
    }
    let project = format!("st{}", unique());
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            support::remove_project_secrets(&self.0);
        }
    }
    let _c = Cleanup(project.clone());
    let repo = TempRepo::new();
    std::fs::write(
        repo.path("deploy/secrets.toml"),
        format!(
            "project = \"{project}\"\nstack_file = \"no-stack.yml\"\n\n[environments.stage]\nbackend = \"swarm\"\ngenerate = true\n\n[secrets.api_key]\nkind = \"key\"\n\n[secrets.db_password]\nkind = \"password\"\nrotate_every_days = 7\n"
        ),
    )
    .unwrap();
    repo.run(&["setup-secrets", "stage"]).ok();
    let j = repo.run(&["status", "stage", "--json", "--check"]).ok();
    let v: serde_json::Value = serde_json::from_str(&j.stdout).unwrap();
    let pw = v["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "db_password")
        .unwrap()
        .clone();
    assert_eq!(pw["age_source"], "store", "{pw}");
    assert_eq!(
        (pw["version"].clone(), pw["state"].clone()),
        (1.into(), "current".into())
    );
    assert_eq!(
        (pw["rotate_every_days"].clone(), pw["due_in_days"].clone()),
        (7.into(), 7.into())
    );
    let created = support::docker(&[
        "secret",
        "inspect",
        "--format",
        "{{.CreatedAt.UTC.Format \"2006-01-02T15:04:05Z\"}}",
        &format!("{project}_stage_db_password_v1"),
    ]);
    assert_eq!(pw["created"].as_str().unwrap(), created.trim(), "{pw}");
    repo.run(&["remove-secrets", "stage", "--yes"]).ok();
    let log = repo.read(LOG);
    for want in [
        "\tstage\tsetup-secrets\tcreate\tdb_password\tv1\t",
        "\tstage\tremove-secrets\tremove\tdb_password\tv1\t",
        "\tstage\tremove-secrets\tremove\tapi_key\tv1\t",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains(want) && l.ends_with("\tswarm\tok")),
            "{want}\n{log}"
        );
    }
    for l in repo.read("secrets/stage.env").lines() {
        if let Some((_, val)) = l.split_once('=') {
            assert!(
                !log.contains(val.trim_matches('\'')),
                "a value is in the audit log"
            );
        }
    }
}

/// A store write that fails half-way: what the store holds afterwards is
/// logged `ok`, the rest `failed`.
#[test]
fn a_failed_write_logs_what_landed_ok_and_the_rest_failed() {
    let repo = TempRepo::new();
    // A folder where jwt_secret's file goes: that write fails.
    std::fs::create_dir_all(repo.path("secrets/develop/jwt_secret")).unwrap();
    let r = repo.run(&["setup-secrets", "develop"]).fails();
    assert!(r.stderr.contains("jwt_secret"), "{}", r.stderr);
    let log = repo.read(LOG);
    let outcome = |secret: &str| {
        log.lines()
            .find(|l| l.contains(&format!("\tsetup-secrets\tcreate\t{secret}\t")))
            .and_then(|l| l.rsplit('\t').next())
            .unwrap_or_else(|| panic!("no create line for {secret}:\n{log}"))
            .to_string()
    };
    assert_eq!(outcome("postgres_password"), "ok", "{log}");
    assert_eq!(outcome("jwt_secret"), "failed", "{log}");
    std::fs::remove_dir(repo.path("secrets/develop/jwt_secret")).unwrap();
    repo.run(&["setup-secrets", "develop"]).ok();
    let log = repo.read(LOG);
    assert!(
        log.lines()
            .any(|l| l.contains("\tsetup-secrets\tcreate\tjwt_secret\t") && l.ends_with("\tok")),
        "the re-run that completes it is logged ok:\n{log}"
    );
}
