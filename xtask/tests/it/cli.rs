//! The real xtask binary in a temporary copy of the repository, with the
//! compose backend (no server needed): files, modes, plans, refusals, messages,
//! and that no secret value ever reaches the output.

use crate::support;

use std::os::unix::fs::PermissionsExt;

use support::TempRepo;

const NAMES: [&str; 8] = support::DEVELOP_SECRETS;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Every value in an env file, for "never printed" assertions.
fn values(env_text: &str) -> Vec<String> {
    env_text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(_, v)| v.trim_matches('\'').to_string())
        .filter(|v| v.len() >= 8)
        .collect()
}

fn assert_no_values(outputs: &[&str], vals: &[String]) {
    for o in outputs {
        for v in vals {
            assert!(!o.contains(v.as_str()), "a secret value was printed:\n{o}");
        }
    }
}

#[test]
fn setup_develop_from_a_fresh_clone_writes_private_files_and_is_idempotent() {
    let repo = TempRepo::new();
    let first = repo.run(&["setup-secrets", "develop"]).ok();
    assert!(
        first.stdout.contains("generated 8 in secrets/develop.env"),
        "{}",
        first.stdout
    );
    assert!(
        first
            .stdout
            .contains("done: 8 created, 0 updated, 0 unchanged"),
        "{}",
        first.stdout
    );

    let env_text = repo.read("secrets/develop.env");
    assert_eq!(mode(&repo.path("secrets/develop.env")), 0o600);
    assert_eq!(mode(&repo.path("secrets/develop")), 0o700);
    for n in NAMES {
        let p = repo.path(&format!("secrets/develop/{n}"));
        assert_eq!(mode(&p), 0o600, "{n}");
        let bytes = std::fs::read(&p).unwrap();
        assert!(!bytes.ends_with(b"\n"), "{n} has a trailing newline");
        assert!(!bytes.is_empty());
    }
    // The file's bytes are the env file's value; the URL is built from its parts.
    let get = |k: &str| {
        env_text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap()
            .to_string()
    };
    assert_eq!(
        repo.read("secrets/develop/postgres_password"),
        get("POSTGRES_PASSWORD")
    );
    assert_eq!(
        repo.read("secrets/develop/database_url"),
        format!(
            "postgresql://{}:{}@postgres:5432/raqeem_develop",
            get("POSTGRES_USER"),
            get("POSTGRES_PASSWORD")
        )
    );
    assert_eq!(get("JWT_SECRET").len(), 64, "length from the manifest");

    let before = std::fs::metadata(repo.path("secrets/develop/jwt_secret"))
        .unwrap()
        .modified()
        .unwrap();
    let second = repo.run(&["setup-secrets", "develop"]).ok();
    assert!(
        second
            .stdout
            .contains("nothing to do: all 8 secrets are up to date"),
        "{}",
        second.stdout
    );
    let after = std::fs::metadata(repo.path("secrets/develop/jwt_secret"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after, "an unchanged secret was rewritten");
    assert_eq!(
        repo.read("secrets/develop.env"),
        env_text,
        "the env file changed on a no-op run"
    );

    let verify = repo.run(&["verify-secrets", "develop"]).ok();
    let list = repo.run(&["list-secrets", "develop"]).ok();
    assert!(
        list.stdout.contains("postgres_password       current"),
        "{}",
        list.stdout
    );
    let json = repo.run(&["list-secrets", "develop", "--json"]).ok();
    assert!(
        json.stdout.contains("\"state\": \"current\""),
        "{}",
        json.stdout
    );
    assert_no_values(
        &[
            &first.all(),
            &second.all(),
            &verify.all(),
            &list.all(),
            &json.all(),
        ],
        &values(&env_text),
    );
}

#[test]
fn dry_run_plans_without_writing_or_printing_values() {
    let repo = TempRepo::new();
    let run = repo.run(&["setup-secrets", "develop", "--dry-run"]).ok();
    assert!(
        run.stdout
            .contains("would generate 8 in secrets/develop.env"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("create    postgres_password"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("dry run: 8 to create, 0 to update, 0 unchanged; nothing was changed"),
        "{}",
        run.stdout
    );
    assert!(!repo.path("secrets/develop.env").exists());
    assert!(!repo.path("secrets/develop").exists());
}

#[test]
fn changed_values_are_updated_and_verify_reports_drift() {
    let repo = TempRepo::new();
    repo.run(&["setup-secrets", "develop"]).ok();
    // Someone edits a mounted file by hand: verify must say so and exit 1.
    std::fs::write(
        repo.path("secrets/develop/redis_password"),
        "tampered-value-1234567890",
    )
    .unwrap();
    let v = repo.run(&["verify-secrets", "develop"]).fails();
    assert!(
        v.stdout.contains("update    redis_password"),
        "{}",
        v.stdout
    );
    assert!(
        v.stderr.contains("run `cargo xtask setup-secrets develop`"),
        "{}",
        v.stderr
    );
    assert!(!v.all().contains("tampered-value"), "{}", v.all());
    let s = repo.run(&["setup-secrets", "develop"]).ok();
    assert!(
        s.stdout.contains("update    redis_password"),
        "{}",
        s.stdout
    );
    assert!(
        s.stdout.contains("done: 0 created, 1 updated, 7 unchanged"),
        "{}",
        s.stdout
    );
    repo.run(&["verify-secrets", "develop"]).ok();
}

#[test]
fn special_characters_are_percent_encoded_in_the_database_url() {
    let repo = TempRepo::new();
    repo.write(
        "secrets/develop.env",
        "POSTGRES_USER=app\nPOSTGRES_PASSWORD='p@ss/w:rd?#%x Yz9-ABCDEFGH'\n",
    );
    repo.run(&["setup-secrets", "develop"]).ok();
    assert_eq!(
        repo.read("secrets/develop/postgres_password"),
        "p@ss/w:rd?#%x Yz9-ABCDEFGH"
    );
    assert_eq!(
        repo.read("secrets/develop/database_url"),
        "postgresql://app:p%40ss%2Fw%3Ard%3F%23%25x%20Yz9-ABCDEFGH@postgres:5432/raqeem_develop"
    );
    // The operator's lines are kept; generated ones are appended.
    let text = repo.read("secrets/develop.env");
    assert!(
        text.starts_with("POSTGRES_USER=app\nPOSTGRES_PASSWORD='p@ss/w:rd?#%x Yz9-ABCDEFGH'\n"),
        "{text}"
    );
    assert!(text.contains("\nJWT_SECRET="), "{text}");
}

#[test]
fn production_lists_every_missing_key_and_generates_only_when_asked() {
    let repo = TempRepo::new();
    repo.write("secrets/production.env", "POSTGRES_USER=raqeem_prod\n");
    let r = repo
        .run(&["setup-secrets", "production", "--backend", "compose"])
        .fails();
    let e = &r.stderr;
    for k in [
        "POSTGRES_PASSWORD",
        "BETTER_AUTH_SECRET",
        "REDIS_PASSWORD",
        "JWT_SECRET",
        "API_SECRET_KEY",
        "GRAFANA_ADMIN_PASSWORD",
        "SSL_CERTIFICATE",
        "SSL_PRIVATE_KEY",
    ] {
        assert!(e.contains(k), "{k} not listed: {e}");
    }
    assert!(e.contains("--generate-missing"), "{e}");
    assert_eq!(
        repo.read("secrets/production.env"),
        "POSTGRES_USER=raqeem_prod\n",
        "a failed run changed the env file"
    );
    assert!(!repo.path("secrets/production").exists());
}

#[test]
fn weak_placeholder_and_reused_values_are_refused_without_echo() {
    let repo = TempRepo::new();
    let prod_pw = "Zq9xWv8uTs7rQp6oNm5lKj4iHg3fEd2c";
    repo.write(
        "secrets/production.env",
        &format!("POSTGRES_USER=p\nPOSTGRES_PASSWORD={prod_pw}\nBETTER_AUTH_SECRET=xK9mP2nQ7vL4zR8wE5tY1cA6sD3fG0hJ\nREDIS_PASSWORD=short-Pw1\n"),
    );
    repo.write(
        "secrets/staging.env",
        &format!("POSTGRES_USER=s\nPOSTGRES_PASSWORD={prod_pw}\n"),
    );
    let r = repo
        .run(&[
            "setup-secrets",
            "production",
            "--backend",
            "compose",
            "--generate-missing",
        ])
        .fails();
    assert!(
        r.stderr
            .contains("secrets/production.env:3: BETTER_AUTH_SECRET is a placeholder"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(
            "secrets/production.env:4: REDIS_PASSWORD is 9 characters; production needs at least 32"
        ),
        "{}",
        r.stderr
    );
    let s = repo
        .run(&[
            "setup-secrets",
            "staging",
            "--backend",
            "compose",
            "--generate-missing",
        ])
        .fails();
    assert!(
        s.stderr.contains(
            "POSTGRES_PASSWORD has the same value as in production (secrets/production.env:2)"
        ),
        "{}",
        s.stderr
    );
    assert_no_values(
        &[&r.all(), &s.all()],
        &[
            prod_pw.into(),
            "short-Pw1".into(),
            "xK9mP2nQ7vL4zR8wE5tY1cA6sD3fG0hJ".into(),
        ],
    );
}

#[test]
fn unsafe_env_files_are_refused_with_the_fix() {
    let repo = TempRepo::new();
    repo.write("secrets/develop.env", "POSTGRES_USER=a\n");
    std::fs::set_permissions(
        repo.path("secrets/develop.env"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let r = repo.run(&["setup-secrets", "develop"]).fails();
    assert!(
        r.stderr.contains(
            "secrets/develop.env is readable by group or others (mode 644); run `chmod 600"
        ),
        "{}",
        r.stderr
    );

    std::fs::set_permissions(
        repo.path("secrets/develop.env"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    repo.git(&["add", "-f", "secrets/develop.env"]);
    let r = repo.run(&["setup-secrets", "develop"]).fails();
    assert!(
        r.stderr.contains("secrets/develop.env is tracked by git"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("git rm --cached secrets/develop.env"),
        "{}",
        r.stderr
    );
}

#[test]
fn parse_errors_point_at_the_line() {
    let repo = TempRepo::new();
    repo.write(
        "secrets/develop.env",
        "POSTGRES_USER=a\n\nPOSTGRES_PASSWORD='unterminated-TOPSECRET\n",
    );
    let r = repo.run(&["setup-secrets", "develop"]).fails();
    assert!(
        r.stderr
            .contains("secrets/develop.env:3: cannot parse this line"),
        "{}",
        r.stderr
    );
    assert!(!r.all().contains("TOPSECRET"));
}

#[test]
fn seed_layout_env_files_work_and_both_layouts_are_refused() {
    let repo = TempRepo::new();
    repo.write("secrets-develop.env", "POSTGRES_USER=seeduser\n");
    let r = repo.run(&["setup-secrets", "develop"]).ok();
    assert!(r.stdout.contains("in secrets-develop.env"), "{}", r.stdout);
    assert_eq!(repo.read("secrets/develop/postgres_user"), "seeduser");
    repo.write("secrets/develop.env", "POSTGRES_USER=other\n");
    let r = repo.run(&["setup-secrets", "develop"]).fails();
    assert!(
        r.stderr
            .contains("both secrets/develop.env and secrets-develop.env exist"),
        "{}",
        r.stderr
    );
}

#[test]
fn unknown_keys_are_warned_about() {
    let repo = TempRepo::new();
    repo.write(
        "secrets/develop.env",
        "POSTGRES_USER=a\nPOSTGRES_PASWORD=typo-typo-typo-typo\nSSL_CERTIFICATE=x.pem\n",
    );
    let r = repo.run(&["setup-secrets", "develop"]).ok();
    assert!(r.stderr.contains("secrets/develop.env:2: unknown key POSTGRES_PASWORD (it is not a secret in deploy/secrets.toml)"), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("unknown key SSL_CERTIFICATE (it is not used in develop)"),
        "{}",
        r.stderr
    );
}

#[test]
fn remove_asks_for_yes_without_a_terminal() {
    let repo = TempRepo::new();
    repo.run(&["setup-secrets", "develop"]).ok();
    let r = repo
        .run(&["remove-secrets", "develop", "--secret", "jwt_secret"])
        .fails();
    assert!(
        r.stderr
            .contains("there is no terminal to ask on; pass --yes"),
        "{}",
        r.stderr
    );
    assert!(repo.path("secrets/develop/jwt_secret").exists());
    repo.run(&[
        "remove-secrets",
        "develop",
        "--secret",
        "jwt_secret",
        "--yes",
    ])
    .ok();
    assert!(!repo.path("secrets/develop/jwt_secret").exists());
    assert!(repo.path("secrets/develop/redis_password").exists());
    repo.run(&["verify-secrets", "develop"]).fails();
    let r = repo
        .run(&[
            "remove-secrets",
            "develop",
            "--secret",
            "jwt_secrt",
            "--yes",
        ])
        .fails();
    assert!(
        r.stderr
            .contains("jwt_secrt is neither a secret of develop"),
        "{}",
        r.stderr
    );
    let r = repo.run(&["remove-secrets", "develop", "--dry-run"]).ok();
    assert!(
        r.stdout.contains("dry run: nothing was removed"),
        "{}",
        r.stdout
    );
    assert!(repo.path("secrets/develop/redis_password").exists());
    repo.run(&["remove-secrets", "develop", "--yes"]).ok();
    assert!(!repo.path("secrets/develop").exists());
}

#[test]
fn planned_stores_unreachable_clusters_and_unknown_environments_say_so_plainly() {
    let repo = TempRepo::new();
    // A store CLI that cannot be run is found before anything is written.
    for (b, var) in [("vault", "VAULT_CLI"), ("aws", "AWS_CLI")] {
        let r = repo
            .xtask(&["setup-secrets", "develop", "--backend", b])
            .env(var, "/nonexistent/cli")
            .env("VAULT_ADDR", "http://127.0.0.1:1")
            .env("AWS_REGION", "eu-west-1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!(
                "{var} is set to /nonexistent/cli, which does not exist"
            )),
            "{err}"
        );
    }
    // A cluster that does not answer is found before anything is written.
    repo.write(
        "dead.kubeconfig",
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: \"https://127.0.0.1:1\"}}]\nusers: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n",
    );
    let r = repo
        .xtask(&["setup-secrets", "develop", "--backend", "k8s"])
        .env("KUBECONFIG", repo.path("dead.kubeconfig"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    // Without kubectl (a machine with only Rust) the same run stops on that,
    // just as early: before anything is written.
    let expected: &[&str] = if which::which("kubectl").is_ok() {
        &["the Kubernetes cluster does not answer", "KUBECONFIG"]
    } else {
        &["kubectl is not installed", "KUBECTL"]
    };
    assert!(expected.iter().all(|e| err.contains(e)), "{err}");
    assert!(
        !repo.path("secrets/develop.env").exists(),
        "a refused backend still wrote files"
    );
    let r = repo.run(&["setup-secrets", "prod"]).fails();
    assert!(r.stderr.contains("unknown environment \"prod\"; deploy/secrets.toml defines: develop, production, staging"), "{}", r.stderr);
}

#[test]
fn generate_secret_prints_one_value_of_the_asked_length() {
    let repo = TempRepo::new();
    let r = repo.run(&["generate-secret", "--length", "40"]).ok();
    let v = r.stdout.trim_end();
    assert_eq!(v.len(), 40);
    assert!(
        v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    assert_ne!(
        v,
        repo.run(&["generate-secret", "--length", "40"])
            .ok()
            .stdout
            .trim_end()
    );
    repo.run(&["generate-secret", "--length", "8"]);
}

#[test]
fn check_catches_a_compose_file_that_disagrees_with_the_manifest() {
    let repo = TempRepo::new();
    repo.run(&["check"]).ok();
    let text = repo
        .read("docker-compose.prod.yml")
        .replace("      - jwt_secret\n", "");
    std::fs::write(repo.path("docker-compose.prod.yml"), text).unwrap();
    let r = repo.run(&["check"]).fails();
    assert!(
        r.stderr
            .contains("docker-compose.prod.yml: service backend does not mount jwt_secret"),
        "{}",
        r.stderr
    );
}

#[test]
fn owner_from_the_manifest_is_applied_to_written_files() {
    use std::os::unix::fs::MetadataExt;
    let repo = TempRepo::new();
    let m = repo.read("deploy/secrets.toml").replace(
        "generate = true\n",
        "generate = true\nowner = \"1234:2345\"\n",
    );
    std::fs::write(repo.path("deploy/secrets.toml"), m).unwrap();
    let r = repo.run(&["setup-secrets", "develop"]);
    if r.code != 0 {
        // Not root: chown is refused, and the message says what to do.
        assert!(r.stderr.contains("run as root"), "{}", r.stderr);
        return;
    }
    let meta = std::fs::metadata(repo.path("secrets/develop/postgres_password")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1234, 2345));
}

#[test]
fn a_failing_rotate_hook_stops_the_rotation_before_anything_is_swapped() {
    let repo = TempRepo::new();
    let m = repo.read("deploy/secrets.toml").replace(
        "[secrets.jwt_secret]\nkind = \"key\"\n",
        "[secrets.jwt_secret]\nkind = \"key\"\nrotate_hook = [\"false\"]\n",
    );
    assert!(m.contains("rotate_hook = [\"false\"]"));
    std::fs::write(repo.path("deploy/secrets.toml"), &m).unwrap();
    repo.run(&["setup-secrets", "develop"]).ok();
    let before = repo.read("secrets/develop/jwt_secret");
    let env_before = repo.read("secrets/develop.env");
    // `false` answers the check phase with a failure: refused before anything
    // changes, the dry run too, the env file included.
    for dry in [true, false] {
        let mut args = vec!["rotate-secrets", "develop", "--secret", "jwt_secret"];
        if dry {
            args.push("--dry-run");
        }
        let r = repo.run(&args).fails();
        assert!(
            r.stderr.contains("cannot rotate jwt_secret in develop (compose runtime): its rotate_hook (false) answered the check that it cannot do its work here")
                && r.stderr.contains("Nothing was changed"),
            "{}",
            r.stderr
        );
        assert_eq!(repo.read("secrets/develop.env"), env_before);
    }
    // A hook that passes its check and fails in the before phase.
    let m = m.replace(
        "rotate_hook = [\"false\"]",
        "rotate_hook = [\"sh\", \"-c\", \"test \\\"$XTASK_PHASE\\\" = check\"]",
    );
    std::fs::write(repo.path("deploy/secrets.toml"), &m).unwrap();
    let r = repo
        .run(&["rotate-secrets", "develop", "--secret", "jwt_secret"])
        .fails();
    assert!(
        r.stderr.contains("the rotate_hook of jwt_secret failed"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("nothing was swapped"), "{}", r.stderr);
    assert_eq!(
        repo.read("secrets/develop/jwt_secret"),
        before,
        "the old value must stay live"
    );
    // The env file holds the new value, so a re-run picks it up (and converges).
    let env = repo.read("secrets/develop.env");
    assert!(
        !env.contains(&format!("JWT_SECRET={before}\n")),
        "the env file should hold the new value"
    );
    let dry = repo
        .run(&[
            "rotate-secrets",
            "develop",
            "--secret",
            "jwt_secret",
            "--dry-run",
        ])
        .ok();
    assert!(
        dry.stdout
            .contains("jwt_secret: using the new value in secrets/develop.env"),
        "{}",
        dry.stdout
    );
    // The attempt is in the audit log as failed, and nothing as done.
    let log = repo.read("deploy/audit-log.tsv");
    assert!(
        log.lines().any(
            |l| l.contains("\tdevelop\trotate-secrets\tupdate\tjwt_secret\t")
                && l.ends_with("\tcompose\tfailed")
        ),
        "{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.contains("\tupdate\tjwt_secret\t") && l.ends_with("\tok")),
        "a failed rotation was logged as done: {log}"
    );
}

/// Two first runs at once on a fresh environment: the lock serializes them, so
/// the env file and the store end up holding the same values, and the second
/// run finds nothing to do instead of generating a second set.
#[test]
fn concurrent_first_runs_agree_through_the_lock() {
    let repo = TempRepo::new();
    let spawn = || {
        repo.xtask(&["setup-secrets", "develop"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    for o in &outs {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let text: String = outs
        .iter()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .collect();
    assert_eq!(text.matches("generated 8 in").count(), 1, "{text}");
    assert!(text.contains("nothing to do"), "{text}");
    // Every file holds the env file's value.
    repo.run(&["verify-secrets", "develop"]).ok();
    let env = repo.read("secrets/develop.env");
    for n in ["jwt_secret", "api_secret_key", "redis_password"] {
        let key = n.to_uppercase();
        let v = env
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap();
        assert_eq!(repo.read(&format!("secrets/develop/{n}")), v);
    }
}

/// A value replaced by setup is a rotation completed: it is logged, and the
/// log is created 0600 even under umask 000.
#[test]
fn setup_logs_replaced_values_in_a_private_log() {
    let repo = TempRepo::new();
    repo.run(&["setup-secrets", "develop"]).ok();
    let env = repo.read("secrets/develop.env");
    let new = "Replaced-Value-0123456789abcdefXYZ";
    let env: String = env
        .lines()
        .map(|l| {
            if l.starts_with("JWT_SECRET=") {
                format!("JWT_SECRET={new}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    repo.write("secrets/develop.env", &env);
    let out = std::process::Command::new("sh")
        .args(["-c", "umask 000 && exec \"$0\" setup-secrets develop"])
        .arg(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(&repo.root)
        .env("CARGO_MANIFEST_DIR", repo.root.join("xtask"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = repo.path("deploy/audit-log.tsv");
    assert_eq!(mode(&log), 0o600);
    let text = repo.read("deploy/audit-log.tsv");
    assert!(
        text.lines().any(
            |l| l.contains("\tdevelop\tsetup-secrets\tupdate\tjwt_secret\t-\t")
                && l.ends_with("\tcompose\tok")
        ),
        "{text}"
    );
    assert!(!text.contains(new));
}

/// A file secret given as the PEM itself (as `migrate-env-to-secrets` moves an
/// inline `.env` value): setup writes it to a 0600 file of its own, names that
/// file on the line, stores the same bytes, and never prints the key. The pair
/// is checked first: the wrong key changes nothing.
#[test]
fn an_inline_pem_is_moved_into_a_private_file_and_stored() {
    let repo = TempRepo::new();
    let (cert, key, other) = support::tls_pair();
    repo.write("secrets/tls/production.crt", cert);
    std::fs::set_permissions(
        repo.path("secrets/tls/production.crt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let env = |k: &str| {
        format!(
            "POSTGRES_USER=app\nPOSTGRES_PASSWORD=_UJEMbwVItkwX3fcEn2u37RFrRirD-ZEGyZAtCJ1\nBETTER_AUTH_SECRET=dI4qT4xa5MJ7rBh6QYzo7miOk7WXCmf2MOKvIVbilkCxte7o\nREDIS_PASSWORD=yC7WXnJhF4W3Qwa68WU4Y2S1hCy7WGbjovNPopzz\nJWT_SECRET=hKjVRJ5rSvXzg0_dMYLcNfv0qdKX4ei3cGDU21zj6n0YsL7Ub-VPrNKvQpZmf_AB\nAPI_SECRET_KEY=5bR-j873q6r1pk04e9AR_Bc1RNivF4cZ5uQ-PA8J\nGRAFANA_ADMIN_PASSWORD=9iI7XwZIu4yIByvt_qDuM2BUChkI6aK4K1UvpB_J\nSSL_CERTIFICATE=tls/production.crt\nSSL_PRIVATE_KEY=\"{k}\"\nXTASK_FINGERPRINT_KEY=2PLGBT06WPNpCjHr3aL9H0bPj17MCrXAJDoACTOQxmOx3HNG12oHkcCQLPonggZM\n"
        )
    };
    let key_lines: Vec<String> = [key, other]
        .iter()
        .flat_map(|k| k.lines())
        .filter(|l| !l.starts_with("-----"))
        .map(String::from)
        .collect();
    let setup = ["setup-secrets", "production", "--backend", "compose"];
    // The wrong key first: refused, nothing written.
    repo.write("secrets/production.env", &env(other));
    std::fs::set_permissions(
        repo.path("secrets/production.env"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let r = repo.run(&setup).fails();
    assert!(
        r.stderr
            .contains("ssl_private_key is not the private key of ssl_certificate"),
        "{}",
        r.stderr
    );
    assert!(
        !repo.path("secrets/production").exists(),
        "a refused run wrote files"
    );
    assert_no_values(&[&r.stdout, &r.stderr], &key_lines);
    // The right one: moved, named, stored.
    repo.write("secrets/production.env", &env(key));
    let r = repo.run(&setup).ok();
    assert!(
        r.stdout
            .contains("moved an inline PEM in secrets/production.env")
            && r.stdout.contains("SSL_PRIVATE_KEY"),
        "{}",
        r.all()
    );
    assert_no_values(&[&r.stdout, &r.stderr], &key_lines);
    let moved = repo.path("secrets/production/pem/ssl_private_key.pem");
    assert_eq!(std::fs::read_to_string(&moved).unwrap(), *key);
    assert_eq!(mode(&moved), 0o600);
    let text = repo.read("secrets/production.env");
    assert!(
        text.contains("SSL_PRIVATE_KEY=production/pem/ssl_private_key.pem\n")
            && !text.contains("BEGIN PRIVATE KEY")
            && text.contains("XTASK_FINGERPRINT_KEY=2PLGBT06"),
        "{text}"
    );
    assert_eq!(repo.read("secrets/production/ssl_private_key"), *key);
    let again = repo.run(&setup).ok();
    assert!(again.stdout.contains("nothing to do"), "{}", again.all());
}

/// Small traps: a secret named as the env file spells it, `--keep 0` said out
/// loud, `--version`, and the binary run directly working on the repository it
/// runs in (not the one it was built in).
#[test]
fn names_keep_zero_version_and_the_repository_run_in() {
    let repo = TempRepo::new();
    let m = repo.read("deploy/secrets.toml");
    repo.write(
        "deploy/secrets.toml",
        &m.replace("project = \"raqeem\"", "project = \"copyproj\""),
    );
    repo.run(&["setup-secrets", "develop"]).ok();
    let r = repo
        .run(&[
            "rotate-secrets",
            "develop",
            "--secret",
            "JWT_SECRET",
            "--keep",
            "0",
            "--dry-run",
        ])
        .ok();
    assert!(r.stdout.contains("jwt_secret"), "{}", r.all());
    assert!(
        r.stderr.contains("--keep 0: no previous version is kept")
            && r.stderr.contains("a rollback has nothing to return to"),
        "{}",
        r.all()
    );
    let v = repo.run(&["--version"]).ok();
    assert_eq!(
        v.stdout.trim(),
        format!("xtask {}", env!("CARGO_PKG_VERSION"))
    );
    // Run directly (no CARGO_MANIFEST_DIR), from a folder inside the copy:
    // the copy's secrets are listed, not the source checkout's.
    let sub = repo.path("deploy/k8s");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["list-secrets", "develop"])
        .current_dir(&sub)
        .env_remove("CARGO_MANIFEST_DIR")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("copyproj secrets for develop"),
        "listed another repository:\n{stdout}"
    );
    // Outside any repository it refuses, naming the folder.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["list-secrets", "develop"])
        .current_dir(std::env::temp_dir())
        .env_remove("CARGO_MANIFEST_DIR")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is not inside a repository of this tool"),
        "{err}"
    );
}
