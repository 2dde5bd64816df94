//! `adopt-secrets` on a real swarm: secrets created exactly as the Raqeem
//! scripts did (`docker secret create <project>_<env>_<name> -`, no version,
//! no labels) and a stack deployed with them the old way. Adoption changes no
//! secret ID and does not touch the service (same spec version, same tasks);
//! the next rotation moves the service to `_v1` under load with no failed
//! request and removes the old secrets.
//!
//! No IPVS here: the service uses `endpoint_mode: dnsrr` on an attachable
//! overlay network and a client container on it sends the requests.

use crate::support;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use support::flows::{
    NAMES, load_report, probe_manifest, probe_stack, secret_labels, served, start_load,
};
use support::{TempRepo, docker, probe_image, swarm_or_skip, unique};

const ENV: &str = "prod";
/// Removes everything the test created, whatever happened.
struct Cleanup {
    project: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let p = &self.project;
        let quiet = |args: &[&str]| Command::new("docker").args(args).output();
        let _ = quiet(&["rm", "-f", &format!("{p}-load")]);
        let _ = quiet(&["stack", "rm", &format!("{p}-{ENV}")]);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            let left = quiet(&["ps", "-aq", "--filter", &format!("name={p}-{ENV}_")]);
            if left
                .map(|o| o.stdout.iter().all(u8::is_ascii_whitespace))
                .unwrap_or(true)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        if let Ok(o) = quiet(&[
            "secret",
            "ls",
            "-q",
            "--filter",
            &format!("name={p}_{ENV}_"),
        ]) {
            let ids: Vec<String> = String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(String::from)
                .collect();
            if !ids.is_empty() {
                let mut args = vec!["secret".to_string(), "rm".into()];
                args.extend(ids);
                let _ = Command::new("docker").args(&args).output();
            }
        }
        let _ = quiet(&["network", "rm", &format!("{p}-net")]);
    }
}

/// `printf %s "$VALUE" | docker secret create NAME -`, as the old scripts did.
fn old_script_create(name: &str, value: &str) {
    let mut child = Command::new("docker")
        .args(["secret", "create", name, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(value.as_bytes())
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "docker secret create {name}"
    );
}

/// The tool's keyed fingerprint: HMAC-SHA-256, first 16 hex digits.
fn fingerprint(key: &str, value: &str) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(value.as_bytes());
    mac.finalize().into_bytes()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn load_once(net: &str, image: &str) -> String {
    let out = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            net,
            image,
            "load",
            "--target",
            "web:8080",
            "--count",
            "4",
        ])
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The secret IDs and names under the project's prefix, sorted.
fn secrets(prefix: &str) -> Vec<String> {
    let out = docker(&[
        "secret",
        "ls",
        "--filter",
        &format!("name={prefix}"),
        "--format",
        "{{.ID}} {{.Name}}",
    ]);
    let mut v: Vec<String> = out.lines().map(String::from).collect();
    v.sort();
    v
}

/// What shows a service was touched: its spec version, update time and tasks.
fn service_state(svc: &str) -> String {
    let spec = docker(&[
        "service",
        "inspect",
        "--format",
        "{{.Version.Index}} {{.UpdatedAt}}",
        svc,
    ]);
    let tasks = docker(&["service", "ps", "-q", "--no-trunc", svc]);
    let mut t: Vec<&str> = tasks.split_whitespace().collect();
    t.sort();
    format!("{} tasks {}", spec.trim(), t.join(","))
}

/// The old world: secrets created as the Raqeem scripts did, from the seeds'
/// env file (`secrets-<env>.env`), and the stack deployed with them, serving.
/// Returns the values by secret name.
fn old_world(repo: &TempRepo, project: &str, image: &str) -> Vec<(&'static str, String)> {
    let prefix = format!("{project}_{ENV}_");
    let stack_name = format!("{project}-{ENV}");
    let net = format!("{project}-net");
    repo.write("deploy/secrets.toml", &probe_manifest(project, ENV, ""));
    repo.write("test-stack.yml", &probe_stack(image, &net, ""));
    let u = unique();
    let user = format!("app_{u}");
    let password = format!("Pw-{u}-aB3dE5gH7jK9mN1pQ3sT5vW7xZ");
    let api_key = format!("Key-{u}-Zq9Yx8Wv7Ut6Sr5Qp4On3Ml2Kj");
    let url = format!("postgresql://{user}:{password}@db/{project}_{ENV}");
    repo.write(
        &format!("secrets-{ENV}.env"),
        &format!("APP_USER={user}\nAPP_PASSWORD={password}\nAPP_URL={url}\nAPI_KEY={api_key}\n"),
    );
    let values = vec![
        ("app_user", user),
        ("app_password", password),
        ("app_url", url),
        ("api_key", api_key),
    ];
    for (n, v) in &values {
        old_script_create(&format!("{prefix}{n}"), v);
    }
    // The old deploy script: the stack with the unversioned names.
    let mut deploy = Command::new("docker");
    deploy
        .args([
            "stack",
            "deploy",
            "--resolve-image",
            "never",
            "-c",
            "test-stack.yml",
            &stack_name,
        ])
        .current_dir(&repo.root);
    for n in NAMES {
        deploy.env(
            format!("XTASK_SECRET_{}", n.to_uppercase()),
            format!("{prefix}{n}"),
        );
    }
    assert!(deploy.output().unwrap().status.success());
    let want = served("app_password", &values[1].1);
    let start = Instant::now();
    let mut client = String::new();
    while start.elapsed() < Duration::from_secs(120) {
        client = load_once(&net, image);
        if client.contains("failed=0") && client.contains(&want) {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(
        client.contains(&want),
        "the old stack never served: {client}"
    );
    values
}

/// The names under the prefix, without IDs.
fn names(prefix: &str) -> Vec<String> {
    secrets(prefix)
        .into_iter()
        .map(|l| l.split_whitespace().nth(1).unwrap_or_default().to_string())
        .collect()
}

#[test]
fn adopt_the_old_scripts_secrets_then_rotate_to_v1_under_load() {
    if !swarm_or_skip("adopt_the_old_scripts_secrets_then_rotate_to_v1_under_load") {
        return;
    }
    let image = probe_image();
    let project = format!("xa{}", unique());
    let prefix = format!("{project}_{ENV}_");
    let stack_name = format!("{project}-{ENV}");
    let svc = format!("{stack_name}_web");
    let net = format!("{project}-net");
    let _cleanup = Cleanup {
        project: project.clone(),
    };
    let repo = TempRepo::new();
    let values = old_world(&repo, &project, image);
    let url = values[2].1.clone();

    // Setup and list point at adopt-secrets while the old secrets are unmanaged.
    let list = repo.run(&["list-secrets", ENV]).ok();
    assert!(
        list.stderr
            .contains(&format!("cargo xtask adopt-secrets {ENV}")),
        "{}",
        list.stderr
    );
    assert!(
        list.stderr.contains(&format!("{prefix}app_password")),
        "{}",
        list.stderr
    );

    let setup = repo.run(&["setup-secrets", ENV, "--dry-run"]).fails();
    assert!(
        setup
            .stderr
            .contains(&format!("cargo xtask adopt-secrets {ENV}")),
        "{}",
        setup.stderr
    );
    let ids_before = secrets(&prefix);
    let svc_before = service_state(&svc);
    let dry = repo.run(&["adopt-secrets", ENV, "--dry-run"]).ok();
    assert!(
        dry.stdout.contains(&format!("used by {svc}")),
        "{}",
        dry.stdout
    );
    let out = repo.run(&["adopt-secrets", ENV]).ok();
    for (_, v) in &values {
        assert!(!out.all().contains(v.as_str()), "a value was printed");
    }
    assert_eq!(
        secrets(&prefix),
        ids_before,
        "adoption must not recreate a secret"
    );
    assert_eq!(
        service_state(&svc),
        svc_before,
        "adoption must not touch the service"
    );
    let labels = secret_labels(&format!("{prefix}app_password"));
    assert_eq!(labels["xtask.tool"], "cargo-xtask");
    assert_eq!(labels["xtask.version"], "0");
    assert_eq!(labels["xtask.secret"], "app_password");
    let env_file = repo.read(&format!("secrets-{ENV}.env"));
    let key = env_file
        .lines()
        .find_map(|l| l.strip_prefix("XTASK_FINGERPRINT_KEY="))
        .expect("adoption adds the fingerprint key to the env file");
    assert_eq!(labels["xtask.fingerprint"], fingerprint(key, &values[1].1));
    // The fingerprints match the env file: list-secrets says current, no hint left.
    let list = repo.run(&["list-secrets", ENV]).ok();
    // The STATE column (RUNNING, the runtime's view, says current too).
    let states = list
        .stdout
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("current"))
        .count();
    assert_eq!(states, 4, "{}", list.stdout);
    assert!(!list.stderr.contains("adopt-secrets"), "{}", list.stderr);
    let again = repo.run(&["adopt-secrets", ENV]).ok();
    assert!(
        again.stdout.contains("nothing to adopt"),
        "{}",
        again.stdout
    );

    // The next rotation moves everything to _v1 under load, then retires the old names.
    let load_name = format!("{project}-load");
    start_load(&load_name, &net, image);
    let rot = support::Run::from(
        repo.xtask(&["rotate-secrets", ENV, "--all", "--timeout", "120"])
            .env("XTASK_RESOLVE_IMAGE", "never")
            .output()
            .unwrap(),
    )
    .ok();
    assert!(
        rot.stdout.contains("removed superseded versions"),
        "{}",
        rot.stdout
    );
    let logs = load_report(&load_name, "the move to _v1");
    assert!(logs.contains(&served("app_url", &url)), "{logs}");
    let used = docker(&[
        "service",
        "inspect",
        "--format",
        "{{range .Spec.TaskTemplate.ContainerSpec.Secrets}}{{.SecretName}} {{end}}",
        &svc,
    ]);
    let mut used: Vec<&str> = used.split_whitespace().collect();
    used.sort();
    let mut want: Vec<String> = NAMES.iter().map(|n| format!("{prefix}{n}_v1")).collect();
    want.sort();
    assert_eq!(used, want, "the service does not use the _v1 secrets");
    let left = names(&prefix);
    for n in NAMES {
        assert!(
            !left.contains(&format!("{prefix}{n}")),
            "the old {n} is still there: {left:?}"
        );
    }
    assert_eq!(left.len(), 4, "{left:?}");
}

#[test]
fn adopted_secrets_move_with_setup_then_deploy() {
    if !swarm_or_skip("adopted_secrets_move_with_setup_then_deploy") {
        return;
    }
    let image = probe_image();
    let project = format!("xb{}", unique());
    let prefix = format!("{project}_{ENV}_");
    let _cleanup = Cleanup {
        project: project.clone(),
    };
    let repo = TempRepo::new();
    old_world(&repo, &project, image);
    repo.run(&["adopt-secrets", ENV]).ok();
    let refused = repo.run(&["deploy", ENV]).fails();
    assert!(
        refused.stderr.contains("setup-secrets"),
        "{}",
        refused.stderr
    );
    let setup = repo.run(&["setup-secrets", ENV]).ok();
    assert!(
        setup.stdout.contains(&format!(
            "adopted {prefix}api_key, moves to the versioned scheme"
        )),
        "{}",
        setup.stdout
    );
    let mut both: Vec<String> = NAMES
        .iter()
        .flat_map(|n| [format!("{prefix}{n}"), format!("{prefix}{n}_v1")])
        .collect();
    both.sort();
    let mut now = names(&prefix);
    now.sort();
    assert_eq!(now, both, "setup creates _v1 beside the adopted secrets");
    let out = support::Run::from(
        repo.xtask(&["deploy", ENV, "--timeout", "120"])
            .env("XTASK_RESOLVE_IMAGE", "never")
            .output()
            .unwrap(),
    )
    .ok();
    assert!(
        out.stdout
            .contains("removed adopted secrets nothing uses any more"),
        "{}",
        out.stdout
    );
    let mut v1: Vec<String> = NAMES.iter().map(|n| format!("{prefix}{n}_v1")).collect();
    v1.sort();
    let mut now = names(&prefix);
    now.sort();
    assert_eq!(now, v1);
    repo.run(&["verify-secrets", ENV]).ok();
}
