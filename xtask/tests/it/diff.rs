//! `diff <env-a> <env-b>` through the real binary: two environments on the
//! real compose file store agree (exit 0), then planted differences (a key
//! removed from one env file, a secret removed from one store, a production
//! value copied into the other) are each found (exit 1), `--json` has the
//! documented shape, and no value, base64 of one or fingerprint is printed;
//! a store that cannot be read and an env file that is not here are findings,
//! never "same"; on the machine's swarm, versions and ages come from the store.

use crate::support;
use support::{env_value, set_env_value};

use support::{Run, TempRepo, swarm_or_skip, unique};

/// develop (compose) and `live`, a second compose environment that is a
/// production one (min_length 32, the TLS pair only there by the manifest).
fn two_compose_environments() -> TempRepo {
    let repo = TempRepo::new();
    let m = repo
        .read("deploy/secrets.toml")
        .replace(
            "[environments.production]\nbackend = \"swarm\"\nmin_length = 32\n\n[environments.staging]\nbackend = \"swarm\"\nmin_length = 32\n",
            "[environments.live]\nbackend = \"compose\"\nmin_length = 32\nproduction = true\n",
        )
        .replace(
            "environments = [\"production\", \"staging\"]\n",
            "environments = [\"live\"]\n",
        );
    assert!(m.contains("[environments.live]") && !m.contains("[environments.staging]"));
    std::fs::write(repo.path("deploy/secrets.toml"), m).unwrap();
    let (cert, key, _) = support::tls_pair();
    repo.write("secrets/tls.crt", cert);
    repo.write("secrets/tls.key", key);
    repo.write(
        "secrets/live.env",
        "SSL_CERTIFICATE=tls.crt\nSSL_PRIVATE_KEY=tls.key\n",
    );
    repo.run(&["setup-secrets", "develop"]).ok();
    repo.run(&["setup-secrets", "live", "--generate-missing"])
        .ok();
    repo
}

/// A table line's cells (columns are two spaces or more apart).
fn cols(line: &str) -> Vec<String> {
    let mut cells: Vec<String> = line
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect();
    if cells.last().is_some_and(|c| c == "differs") {
        cells.pop();
    }
    cells
}

/// No value of either env file (8 bytes or more), nor its base64, nor
/// anything shaped like a fingerprint (16 hex digits), in `out`.
fn assert_no_value(repo: &TempRepo, envs: &[&str], out: &str) {
    use base64::{Engine, engine::general_purpose::STANDARD};
    for env in envs {
        for l in repo.read(&format!("secrets/{env}.env")).lines() {
            let Some((_, v)) = l.split_once('=') else {
                continue;
            };
            let v = v.trim_matches('\'');
            if v.len() >= 8 && !v.ends_with(".crt") && !v.ends_with(".key") {
                assert!(
                    !out.contains(v),
                    "a value of {env} was printed (the output is not shown: it holds the value)"
                );
                assert!(
                    !out.contains(&STANDARD.encode(v)),
                    "a base64 value of {env} was printed"
                );
            }
        }
    }
    let hex_run = out
        .as_bytes()
        .split(|b| !b.is_ascii_hexdigit())
        .map(<[u8]>::len)
        .max()
        .unwrap_or(0);
    assert!(
        hex_run < 16,
        "something like a fingerprint was printed:\n{out}"
    );
}

#[test]
fn planted_differences_and_a_reused_value_are_found_never_printed_and_json_has_its_shape() {
    let repo = two_compose_environments();
    let same = repo.run(&["diff", "develop", "live"]).ok();
    assert!(
        same.stdout.contains("no findings: develop and live hold the same keys in their env files and stores, and no production value is reused"),
        "{}",
        same.stdout
    );
    // Settings and policy differences are shown, and are no finding.
    for want in [
        ["min_length", "16", "32", "differs"],
        ["production", "no", "yes", "differs"],
        ["store", "compose", "compose", ""],
    ] {
        assert!(
            same.stdout
                .lines()
                .any(|l| cols(l) == want[..3] && l.ends_with(want[3])),
            "{want:?}\n{}",
            same.stdout
        );
    }
    let row = |out: &str, secret: &str| -> String {
        out.lines()
            .find(|l| l.starts_with(&format!("{secret} ")))
            .unwrap_or_else(|| panic!("no row {secret}:\n{out}"))
            .to_string()
    };
    assert!(
        row(&same.stdout, "ssl_certificate")
            .ends_with("manifest: only live, env_file: only live, store: only live"),
        "{}",
        same.stdout
    );
    assert!(
        row(&same.stdout, "jwt_secret").contains("min_length 16/32"),
        "{}",
        same.stdout
    );

    // The plants: a key gone from develop's env file, a secret gone from its
    // store, and live's (production) JWT secret copied into develop.
    set_env_value(&repo, "develop", "API_SECRET_KEY", None);
    std::fs::remove_file(repo.path("secrets/develop/redis_password")).unwrap();
    let prod_jwt = env_value(&repo, "live", "JWT_SECRET");
    set_env_value(&repo, "develop", "JWT_SECRET", Some(&prod_jwt));
    let r = repo.run(&["diff", "develop", "live"]).fails();
    let jwt_line = repo
        .read("secrets/live.env")
        .lines()
        .position(|l| l.starts_with("JWT_SECRET="))
        .unwrap()
        + 1;
    for want in [
        format!("reused: develop jwt_secret: JWT_SECRET holds the same value in develop and live (secrets/live.env:{jwt_line}); live values must not be reused, generate a new one for develop"),
        "missing: develop redis_password: not in the compose store (present in live's compose store); run `cargo xtask setup-secrets develop`".to_string(),
        "missing: develop api_secret_key: secrets/develop.env has no API_SECRET_KEY key (present in secrets/live.env); add it, or run `cargo xtask setup-secrets develop --generate-missing`".to_string(),
    ] {
        assert!(r.stdout.lines().any(|l| l == want), "{want}\n{}", r.stdout);
    }
    assert!(r.stdout.contains("3 finding(s):"), "{}", r.stdout);
    assert!(row(&r.stdout, "jwt_secret").contains("SAME VALUE (reused)"));
    assert!(
        cols(&row(&r.stdout, "redis_password"))[1] == "missing",
        "{}",
        r.stdout
    );
    assert!(
        r.stderr
            .contains("diff: 3 finding(s) between develop and live"),
        "{}",
        r.stderr
    );
    assert_no_value(&repo, &["develop", "live"], &r.all());
    // The checker catches a printed value and a fingerprint-shaped run.
    for leak in [prod_jwt.clone(), "fp 0123456789abcdef".to_string()] {
        let caught = std::panic::catch_unwind(|| assert_no_value(&repo, &["live"], &leak));
        assert!(caught.is_err(), "the checker missed a leak");
    }

    // --json, field by field.
    let j = Run::from(
        repo.xtask(&["diff", "develop", "live", "--json"])
            .output()
            .unwrap(),
    )
    .fails();
    assert_no_value(&repo, &["develop", "live"], &j.all());
    let v: serde_json::Value = serde_json::from_str(&j.stdout).expect("diff --json is JSON");
    assert!(v["generated_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(v["agree"], false);
    let envs = v["environments"].as_array().unwrap();
    assert_eq!(envs.len(), 2);
    assert_eq!(
        (envs[0]["name"].clone(), envs[1]["name"].clone()),
        ("develop".into(), "live".into())
    );
    for e in envs {
        for k in [
            "name",
            "store",
            "runtime",
            "delivery",
            "production",
            "env_file",
            "env_file_read",
            "reachable",
            "error",
            "notes",
        ] {
            assert!(e.get(k).is_some(), "environment without {k}: {e}");
        }
    }
    assert_eq!(envs[1]["production"], true);
    let min = v["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"] == "min_length")
        .unwrap();
    assert_eq!(min["values"], serde_json::json!(["16", "32"]));
    assert_eq!(min["differs"], true);
    let secret = |name: &str| {
        v["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no secret {name}"))
            .clone()
    };
    let jwt = secret("jwt_secret");
    assert_eq!(jwt["reused"], true);
    for side in jwt["sides"].as_array().unwrap() {
        for k in [
            "in_manifest",
            "in_env_file",
            "in_store",
            "state",
            "version",
            "created",
            "age_days",
            "age_source",
            "due_in_days",
            "last_rotation",
            "policy",
        ] {
            assert!(side.get(k).is_some(), "side without {k}: {side}");
        }
        assert_eq!(
            side["age_source"], "audit-log",
            "compose ages come from the audit log"
        );
        assert_eq!(side["age_days"], 0);
        assert!(side["version"].is_null(), "compose files have no versions");
        assert_eq!(side["policy"]["kind"], "key");
    }
    // Validation refuses develop's env file now (the reused value), so its
    // values are not compared with its store: "present", and a note says why.
    assert_eq!(jwt["sides"][0]["state"], "present");
    assert!(
        envs[0]["notes"][0]
            .as_str()
            .unwrap()
            .contains("JWT_SECRET has the same value as in live"),
        "{}",
        envs[0]
    );
    assert!(
        jwt["differences"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({"field": "min_length", "values": ["16", "32"]})),
        "{jwt}"
    );
    let redis = secret("redis_password");
    assert_eq!(
        (
            redis["sides"][0]["in_store"].clone(),
            redis["sides"][1]["in_store"].clone()
        ),
        (false.into(), true.into())
    );
    let api = secret("api_secret_key");
    assert_eq!(
        (
            api["sides"][0]["in_env_file"].clone(),
            api["sides"][1]["in_env_file"].clone()
        ),
        (false.into(), true.into())
    );
    let ssl = secret("ssl_certificate");
    assert_eq!(
        (
            ssl["sides"][0]["in_manifest"].clone(),
            ssl["sides"][0]["policy"].clone()
        ),
        (false.into(), serde_json::Value::Null)
    );
    let kinds: Vec<(String, String, String)> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().into(),
                f["environment"].as_str().unwrap().into(),
                f["secret"].as_str().unwrap_or("-").into(),
            )
        })
        .collect();
    let k = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    assert_eq!(
        kinds,
        [
            k("missing", "develop", "redis_password"),
            k("reused", "develop", "jwt_secret"),
            k("missing", "develop", "api_secret_key"),
        ]
    );
    // The finding lines also go to stderr with --json, as status --check does.
    assert!(
        j.stderr.contains("reused: develop jwt_secret:"),
        "{}",
        j.stderr
    );
}

/// A store that does not answer and an env file that is not on this machine
/// are findings, and the other environment is still shown.
#[test]
fn an_unreadable_store_or_absent_env_file_is_a_finding_never_the_same() {
    let repo = TempRepo::new();
    repo.run(&["setup-secrets", "develop"]).ok();
    let r = Run::from(
        repo.xtask(&["diff", "develop", "production"])
            .env("DOCKER", "/nonexistent/docker")
            .output()
            .unwrap(),
    )
    .fails();
    for want in [
        "unreachable: production: the swarm store could not be read (",
        "unreadable: production: secrets/production.env does not exist here: its keys were not compared with develop's, nor its values with the other's (the reuse check)",
    ] {
        assert!(
            r.stdout.lines().any(|l| l.starts_with(want)),
            "{want}\n{}",
            r.stdout
        );
    }
    assert!(!r.stdout.contains("no findings"), "{}", r.stdout);
    // develop's side is read; production's is unknown, never "missing".
    let jwt = r
        .stdout
        .lines()
        .find(|l| l.starts_with("jwt_secret "))
        .unwrap();
    let cells = cols(jwt);
    assert!(cells[1].starts_with("current "), "{jwt}");
    assert_eq!(cells[2], "?", "{jwt}");
    assert!(!r.stdout.contains("missing:"), "{}", r.stdout);
    assert_no_value(&repo, &["develop"], &r.all());
}

/// On the machine's swarm: a production environment on the swarm store
/// against develop on compose files: versions and ages from the store side
/// by side with the audit log's, and a planted reuse found.
#[test]
fn swarm_against_compose_versions_ages_and_a_reuse() {
    if !swarm_or_skip("swarm_against_compose_versions_ages_and_a_reuse") {
        return;
    }
    let project = format!("df{}", unique());
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
            "project = \"{project}\"\nstack_file = \"no-stack.yml\"\n\n[environments.develop]\nbackend = \"compose\"\n\n[environments.stage]\nbackend = \"swarm\"\nproduction = true\nmin_length = 32\nrotate_every_days = 30\n\n[secrets.api_key]\nkind = \"key\"\n\n[secrets.db_password]\nkind = \"password\"\n"
        ),
    )
    .unwrap();
    repo.run(&["setup-secrets", "develop"]).ok();
    repo.run(&["setup-secrets", "stage", "--generate-missing"])
        .ok();
    let j = repo.run(&["diff", "stage", "develop", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&j.stdout).unwrap();
    assert_eq!(v["agree"], true);
    let pw = v["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "db_password")
        .unwrap()
        .clone();
    let (stage, dev) = (&pw["sides"][0], &pw["sides"][1]);
    assert_eq!(
        (stage["version"].clone(), stage["age_source"].clone()),
        (1.into(), "store".into()),
        "{pw}"
    );
    assert_eq!(
        (dev["version"].clone(), dev["age_source"].clone()),
        (serde_json::Value::Null, "audit-log".into()),
        "{pw}"
    );
    assert_eq!(
        (stage["state"].clone(), dev["state"].clone()),
        ("current".into(), "current".into())
    );
    let fields: Vec<&str> = pw["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["min_length", "generate", "rotate_every_days"],
        "{pw}"
    );

    // develop takes stage's password: found, never printed.
    let prod = env_value(&repo, "stage", "DB_PASSWORD");
    set_env_value(&repo, "develop", "DB_PASSWORD", Some(&prod));
    let r = repo.run(&["diff", "stage", "develop"]).fails();
    assert!(
        r.stdout.lines().any(|l| l.starts_with("reused: develop db_password: DB_PASSWORD holds the same value in stage and develop (secrets/develop.env:")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("db_password ") && cols(l)[1].starts_with("present v1 ")),
        "{}",
        r.stdout
    );
    assert_no_value(&repo, &["develop", "stage"], &r.all());
}
