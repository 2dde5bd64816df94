//! `cargo xtask doctor` against real engines: for each runtime and store a
//! healthy environment has no finding (exit 0), and each planted fault
//! produces its own finding with its fix (exit 1). Compose (real containers
//! of the busybox stand-in image and a `FROM scratch` one): an env file at
//! 0644, a secret missing from the store, a container still on the old value
//! after `setup-secrets` without `deploy`, an image with no `sha256sum`.
//! Swarm: a task on the old version. Kubernetes: a pod on the old version,
//! and `kubectl auth can-i` as a service account that may only read. Vault:
//! a sealed OpenBao. AWS (a moto server of the test's own): the identity,
//! region and store checks answer `ok` after setup; no region, a secret
//! deleted from the store and an endpoint that does not answer each give
//! their finding, with the fix that follows the cause. No planted value, nor
//! its SHA-256, is ever printed.

use crate::support;
use support::servers::cluster::{kubectl, kubectl_ok};
use support::set_env_value;

use std::{
    io::Write,
    process::{Command, Stdio},
};

use serde_json::Value;
use support::flows::{StackDown, own_project};
use support::{ComposeDown, Run, TempRepo, docker, sha256_hex, standin_image, unique};

/// A value that must never be shown, planted in the env file.
fn canary(tag: &str) -> String {
    format!("DrCanary{tag}-{}-Qz7xLm3Pw9", unique())
}

/// Neither `values` nor their SHA-256 appear anywhere in the run's output.
fn assert_nothing_shown(run: &Run, values: &[&str]) {
    let all = run.all();
    for v in values {
        assert!(!all.contains(v), "a planted value was printed:\n{all}");
        let h = sha256_hex(v.as_bytes());
        assert!(
            !all.contains(&h),
            "the SHA-256 of a planted value was printed:\n{all}"
        );
        assert!(
            !all.contains(&h[..16]),
            "part of a planted value's SHA-256 was printed:\n{all}"
        );
    }
}

/// The lines of the human output with this status word.
fn lines<'a>(run: &'a Run, status: &str) -> Vec<&'a str> {
    run.stdout
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(status))
        .collect()
}

/// Exit 1 with exactly one finding whose line holds every one of `needles`,
/// and a `fix:` line right after it holding `fix`.
fn assert_finding(run: &Run, needles: &[&str], fix: &str) {
    assert_eq!(run.code, 1, "expected exit 1\n{}{}", run.stdout, run.stderr);
    let all: Vec<&str> = run.stdout.lines().collect();
    let at = all
        .iter()
        .position(|l| l.starts_with("finding") && needles.iter().all(|n| l.contains(n)))
        .unwrap_or_else(|| panic!("no finding with {needles:?}:\n{}", run.stdout));
    let next = all.get(at + 1).copied().unwrap_or_default();
    assert!(
        next.trim_start().starts_with("fix:") && next.contains(fix),
        "the finding {:?} has no fix naming {fix:?} (next line {next:?})",
        all[at]
    );
}

// ------------------------------------------------------------------ compose

/// develop's compose file with the real services' secrets, on the busybox
/// stand-in (which has `sh` and `sha256sum`) sleeping instead of serving.
fn compose_variant(image: &str) -> String {
    let backend = support::BACKEND.join(", ");
    let mut s = format!(
        "version: \"3.8\"\nservices:\n  backend:\n    image: {image}\n    entrypoint: [\"/bin/sleep\", \"3600\"]\n    secrets: [{backend}]\n  grafana:\n    image: {image}\n    entrypoint: [\"/bin/sleep\", \"3600\"]\n    secrets: [grafana_admin_password]\nsecrets:\n"
    );
    for n in support::DEVELOP_SECRETS {
        s.push_str(&format!(
            "  {n}:\n    file: ${{XTASK_SECRETS_DIR:-./secrets/develop}}/{n}\n"
        ));
    }
    s
}

/// A check line of `service`'s first container (`p_backend_1` for Compose
/// v1, `p-backend-1` for v2).
fn in_service(line: &str, service: &str) -> bool {
    line.contains(&format!("_{service}_1 ")) || line.contains(&format!("-{service}-1 "))
}

/// Removes a container whatever happens.
struct Rm(String);

impl Drop for Rm {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

#[test]
fn compose_healthy_then_each_planted_fault() {
    if !support::docker_or_skip("compose_healthy_then_each_planted_fault") {
        return;
    }
    let image = standin_image();
    let repo = TempRepo::new();
    let project = own_project(&repo);
    let stack = format!("{project}-develop");
    let _down = ComposeDown {
        root: repo.root.clone(),
        project: stack.clone(),
    };
    repo.write("docker-compose.prod.yml", &compose_variant(image));
    let first = canary("Jwt");
    repo.write("secrets/develop.env", &format!("JWT_SECRET={first}\n"));
    repo.run(&["setup-secrets", "develop"]).ok();
    repo.run(&["deploy", "develop"]).ok();

    // Healthy: no finding, every compared secret current, the kept ones named.
    let healthy = repo.run(&["doctor", "develop"]);
    assert_eq!(healthy.code, 0, "{}{}", healthy.stdout, healthy.stderr);
    assert!(lines(&healthy, "finding").is_empty(), "{}", healthy.stdout);
    for n in support::BACKEND {
        let kept = ["postgres_user", "postgres_password", "redis_password"].contains(&n);
        let line = healthy
            .stdout
            .lines()
            .find(|l| in_service(l, "backend") && l.contains(&format!(" {n}: ")))
            .unwrap_or_else(|| panic!("no check of backend's {n}:\n{}", healthy.stdout));
        // postgres and redis keep theirs, but backend reads the value: compared.
        assert!(
            line.starts_with("ok") && line.contains("holds the current value"),
            "{n} (kept by another service: {kept}): {line}"
        );
    }
    let grafana = healthy
        .stdout
        .lines()
        .find(|l| in_service(l, "grafana") && l.contains(" grafana_admin_password: "))
        .expect("grafana's secret is checked");
    assert!(
        grafana.starts_with("not-checked") && grafana.contains("kept (not compared)"),
        "{grafana}"
    );
    assert_nothing_shown(&healthy, &[&first]);

    // --json: the documented shape.
    let json = repo.run(&["doctor", "develop", "--json"]).ok();
    let v: Value = serde_json::from_str(&json.stdout).expect("doctor --json prints JSON");
    assert_eq!(v["environment"], "develop");
    assert_eq!(
        (v["store"].as_str(), v["runtime"].as_str()),
        (Some("compose"), Some("compose"))
    );
    let checks = v["checks"].as_array().unwrap();
    assert!(checks.len() > 10, "{v}");
    for c in checks {
        assert!(c["name"].is_string() && c["message"].is_string(), "{c}");
        assert!(
            ["ok", "not-checked"].contains(&c["status"].as_str().unwrap()),
            "{c}"
        );
        assert!(c["fix"].is_null(), "{c}");
    }
    assert_eq!(v["counts"]["finding"], 0);
    assert_nothing_shown(&json, &[&first]);

    // An old version: a new value in the store, not deployed.
    let second = canary("Jwt2");
    set_env_value(&repo, "develop", "JWT_SECRET", Some(&second));
    repo.run(&["setup-secrets", "develop"]).ok();
    let old = repo.run(&["doctor", "develop"]);
    assert_finding(
        &old,
        &["backend", "1 jwt_secret", "holds another value"],
        "cargo xtask deploy develop",
    );
    assert_eq!(lines(&old, "finding").len(), 1, "{}", old.stdout);
    assert!(old.stderr.contains("develop: 1 finding"), "{}", old.stderr);
    assert_nothing_shown(&old, &[&first, &second]);
    repo.run(&["deploy", "develop"]).ok();
    assert_eq!(repo.run(&["doctor", "develop"]).code, 0, "deploy fixed it");

    // A secret missing from the store.
    std::fs::remove_file(repo.path("secrets/develop/api_secret_key")).unwrap();
    let missing = repo.run(&["doctor", "develop"]);
    assert_finding(
        &missing,
        &["store api_secret_key", "not in the compose store"],
        "cargo xtask setup-secrets develop",
    );
    assert_eq!(lines(&missing, "finding").len(), 1, "{}", missing.stdout);
    repo.run(&["setup-secrets", "develop"]).ok();

    // The env file readable by others.
    let env_file = repo.path("secrets/develop.env");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mode = repo.run(&["doctor", "develop"]);
    assert_finding(
        &mode,
        &["file secrets/develop.env", "mode 644"],
        "chmod 600",
    );
    assert_nothing_shown(&mode, &[&first, &second]);
    std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        repo.run(&["doctor", "develop"]).code,
        0,
        "{}",
        repo.run(&["doctor", "develop"]).stdout
    );

    // A container of the project from a FROM scratch image: could not look.
    let name = format!("{stack}-scratch-{}", unique());
    let _rm = Rm(name.clone());
    let secret = repo.path("secrets/develop/jwt_secret");
    docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        &format!("com.docker.compose.project={stack}"),
        "--label",
        "com.docker.compose.service=backend",
        "-v",
        &format!("{}:/run/secrets/jwt_secret:ro", secret.display()),
        support::probe_image(),
        "serve",
        "--port",
        "8080",
        "jwt_secret",
    ]);
    let blind = repo.run(&["doctor", "develop"]);
    assert_finding(
        &blind,
        &[&name, "no `sha256sum`"],
        "add busybox or coreutils",
    );
    assert_eq!(lines(&blind, "finding").len(), 1, "{}", blind.stdout);
    assert_nothing_shown(&blind, &[&first, &second]);
}

// ------------------------------------------------------------------ swarm

fn swarm_manifest(project: &str) -> String {
    format!(
        r#"project = "{project}"
stack_file = "doctor-stack.yml"

[environments.develop]
backend = "swarm"

[secrets.api_key]
kind = "key"
services = ["web"]
"#
    )
}

fn swarm_stack(image: &str) -> String {
    format!(
        r#"version: "3.8"
services:
  web:
    image: {image}
    entrypoint: ["/bin/sleep", "3600"]
    stop_grace_period: 1s
    secrets:
      - {{ source: api_key, target: key.txt }}
secrets:
  api_key:
    external: true
    name: ${{XTASK_SECRET_API_KEY:?set by cargo xtask deploy}}
"#
    )
}

#[test]
fn swarm_task_on_an_old_version() {
    if !support::swarm_or_skip("swarm_task_on_an_old_version") {
        return;
    }
    let image = standin_image();
    let repo = TempRepo::new();
    let project = format!("xt{}", unique());
    let _down = StackDown(project.clone());
    repo.write("deploy/secrets.toml", &swarm_manifest(&project));
    repo.write("doctor-stack.yml", &swarm_stack(image));
    let first = canary("Swarm");
    repo.write("secrets/develop.env", &format!("API_KEY={first}\n"));
    repo.run(&["setup-secrets", "develop", "--generate-missing"])
        .ok();
    repo.run(&["deploy", "develop"]).ok();

    let healthy = repo.run(&["doctor", "develop"]);
    assert_eq!(healthy.code, 0, "{}{}", healthy.stdout, healthy.stderr);
    let line = healthy
        .stdout
        .lines()
        .find(|l| l.contains(" api_key: /run/secrets/key.txt"))
        .unwrap_or_else(|| panic!("the task's target path is checked:\n{}", healthy.stdout));
    assert!(
        line.starts_with("ok") && line.contains(&format!("task {project}-develop_web.1")),
        "{line}"
    );
    assert_nothing_shown(&healthy, &[&first]);

    let second = canary("Swarm2");
    set_env_value(&repo, "develop", "API_KEY", Some(&second));
    repo.run(&["setup-secrets", "develop"]).ok();
    let old = repo.run(&["doctor", "develop"]);
    assert_finding(
        &old,
        &["_web.1", "api_key", "holds another value"],
        "cargo xtask deploy develop",
    );
    assert_eq!(lines(&old, "finding").len(), 1, "{}", old.stdout);
    assert_nothing_shown(&old, &[&first, &second]);
}

// ------------------------------------------------------------------ k8s

fn kubectl_apply(doc: &str) {
    let mut c = Command::new("kubectl")
        .args([
            "apply",
            "--server-side",
            "--field-manager=xtask-test",
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(doc.as_bytes()).unwrap();
    assert!(c.wait().unwrap().success(), "kubectl apply failed");
}

/// Deletes the test's namespace whatever happened.
struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "namespace", &self.0, "--wait=false"]);
    }
}

fn k8s_manifest(project: &str) -> String {
    format!(
        r#"project = "{project}"

[k8s]
manifests = "doctor-k8s"

[environments.develop]
backend = "k8s"

[secrets.api_key]
kind = "key"
services = ["web"]
"#
    )
}

fn k8s_workload(image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 1
      containers:
        - name: web
          image: {image}
          imagePullPolicy: Never
          command: ["/bin/sleep", "3600"]
          volumeMounts:
            - {{name: secrets, mountPath: /run/secrets, readOnly: true}}
      volumes:
        - name: secrets
          projected:
            defaultMode: 288
            sources:
              - secret:
                  name: "${{XTASK_SECRET_API_KEY:?set by cargo xtask deploy}}"
                  items: [{{key: api_key, path: api_key}}]
"#
    )
}

/// A kubeconfig for the cluster of KUBECONFIG as `token`'s service account.
fn kubeconfig_for(token: &str, path: &std::path::Path) {
    let cfg: Value = serde_json::from_str(&kubectl_ok(&[
        "config", "view", "--raw", "--minify", "-o", "json",
    ]))
    .unwrap();
    let cluster = &cfg["clusters"][0]["cluster"];
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "reader", "user": {"token": token}}],
        "contexts": [{"name": "r", "context": {"cluster": "c", "user": "reader"}}],
        "current-context": "r",
    });
    std::fs::write(path, doc.to_string()).unwrap();
}

#[test]
fn k8s_pod_on_an_old_version_and_missing_verbs() {
    if !support::cluster_or_skip("k8s_pod_on_an_old_version_and_missing_verbs") {
        return;
    }
    let image = standin_image();
    support::load_into_cluster(image);
    let repo = TempRepo::new();
    let project = format!("xk{}", unique());
    let ns = format!("{project}-develop");
    kubectl_ok(&["create", "namespace", &ns]);
    let _ns = Namespace(ns.clone());
    kubectl_ok(&["label", "namespace", &ns, "xtask-test=doctor"]);
    repo.write("deploy/secrets.toml", &k8s_manifest(&project));
    repo.write("doctor-k8s/web.yaml", &k8s_workload(image));
    let first = canary("Pod");
    repo.write("secrets/develop.env", &format!("API_KEY={first}\n"));
    repo.run(&["setup-secrets", "develop", "--generate-missing"])
        .ok();
    repo.run(&["deploy", "develop", "--timeout", "180"]).ok();

    let healthy = repo.run(&["doctor", "develop"]);
    assert_eq!(healthy.code, 0, "{}{}", healthy.stdout, healthy.stderr);
    let pod = healthy
        .stdout
        .lines()
        .find(|l| l.contains("pod web-") && l.contains("/web api_key: /run/secrets/api_key"))
        .unwrap_or_else(|| panic!("the pod's mount is checked:\n{}", healthy.stdout));
    assert!(
        pod.starts_with("ok") && pod.contains("current value"),
        "{pod}"
    );
    let can = healthy
        .stdout
        .lines()
        .find(|l| {
            l.contains(&format!(
                "access kubectl auth can-i secrets (namespace {ns})"
            ))
        })
        .unwrap_or_else(|| panic!("can-i asked:\n{}", healthy.stdout));
    assert!(
        can.starts_with("ok") && can.contains("get, list, create, patch, delete"),
        "{can}"
    );
    assert_nothing_shown(&healthy, &[&first]);

    // A pod on the old version: v2 in the store, the pod still mounts v1.
    let second = canary("Pod2");
    set_env_value(&repo, "develop", "API_KEY", Some(&second));
    repo.run(&["setup-secrets", "develop"]).ok();
    let old = repo.run(&["doctor", "develop"]);
    assert_finding(
        &old,
        &["pod web-", "api_key", "holds another value"],
        "cargo xtask deploy develop",
    );
    assert_eq!(lines(&old, "finding").len(), 1, "{}", old.stdout);
    assert_nothing_shown(&old, &[&first, &second]);

    // Credentials that may only read: the verbs deploy and setup need are findings.
    let role = format!(
        r#"{{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role","metadata":{{"name":"reader","namespace":"{ns}"}},
"rules":[{{"apiGroups":[""],"resources":["secrets","pods"],"verbs":["get","list"]}}]}}"#
    );
    kubectl_ok(&["-n", &ns, "create", "serviceaccount", "reader"]);
    kubectl_apply(&role);
    kubectl_ok(&[
        "-n",
        &ns,
        "create",
        "rolebinding",
        "reader",
        "--role=reader",
        &format!("--serviceaccount={ns}:reader"),
    ]);
    let token = kubectl_ok(&["-n", &ns, "create", "token", "reader", "--duration=10m"]);
    let cfg = repo.path("reader.kubeconfig");
    kubeconfig_for(token.trim(), &cfg);
    let limited = Run::from(
        repo.xtask(&["doctor", "develop", "--json"])
            .env("KUBECONFIG", &cfg)
            .output()
            .unwrap(),
    );
    assert_eq!(limited.code, 1, "{}{}", limited.stdout, limited.stderr);
    let v: Value = serde_json::from_str(&limited.stdout).unwrap();
    let check = |name: &str| -> Value {
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no check {name}: {v}"))
    };
    let secrets = check(&format!(
        "access kubectl auth can-i secrets (namespace {ns})"
    ));
    assert_eq!(secrets["status"], "finding", "{secrets}");
    assert!(
        secrets["message"]
            .as_str()
            .unwrap()
            .contains("not allowed: create, patch, delete"),
        "{secrets}"
    );
    assert!(
        secrets["fix"].as_str().unwrap().contains("Role"),
        "{secrets}"
    );
    let exec = check(&format!(
        "access kubectl auth can-i pods/exec (namespace {ns})"
    ));
    assert_eq!(exec["status"], "finding", "{exec}");
    let pods = check(&format!("access kubectl auth can-i pods (namespace {ns})"));
    assert_eq!(pods["status"], "ok", "{pods}");
    assert!(
        !limited.all().contains(token.trim()),
        "the token was printed"
    );
    assert_nothing_shown(&limited, &[&first, &second]);
}

// ------------------------------------------------------------------ vault

use support::servers::openbao::{DevServer, TOKEN};

/// xtask against the dev server; an empty BAO_TOKEN must not win over VAULT_TOKEN.
fn vault_xtask(srv: &DevServer, repo: &TempRepo, args: &[&str]) -> Run {
    Run::from(
        repo.xtask(args)
            .env("PATH", support::servers::openbao::path())
            .env("VAULT_ADDR", &srv.addr)
            .env("VAULT_TOKEN", TOKEN)
            .env("BAO_TOKEN", "")
            .env("BAO_ADDR", "")
            .env_remove("VAULT_CLI")
            .env_remove("VAULT_NAMESPACE")
            .env_remove("BAO_NAMESPACE")
            .output()
            .unwrap(),
    )
}

#[test]
fn vault_sealed_is_a_finding() {
    if !support::servers::openbao::bao_or_skip("vault_sealed_is_a_finding") {
        return;
    }
    let srv = DevServer::start();
    let repo = TempRepo::new();
    let first = canary("Vault");
    repo.write("secrets/develop.env", &format!("JWT_SECRET={first}\n"));
    vault_xtask(
        &srv,
        &repo,
        &["setup-secrets", "develop", "--backend", "vault"],
    )
    .ok();
    let healthy = vault_xtask(&srv, &repo, &["doctor", "develop", "--backend", "vault"]);
    assert_eq!(healthy.code, 0, "{}{}", healthy.stdout, healthy.stderr);
    for l in [
        "ok          access vault status: the Vault server at",
        "ok          access token: the Vault token never expires",
        "ok          access secret/data/raqeem/develop/jwt_secret: allowed: create, read, update",
        "ok          access secret/metadata/raqeem/develop: allowed: list",
    ] {
        assert!(healthy.stdout.contains(l), "no {l:?}:\n{}", healthy.stdout);
    }
    assert!(!healthy.all().contains(TOKEN), "the token was printed");
    assert_nothing_shown(&healthy, &[&first]);

    let sealed = srv.bao(&["operator", "seal"]);
    assert!(
        sealed.status.success(),
        "{}",
        String::from_utf8_lossy(&sealed.stderr)
    );
    let run = vault_xtask(&srv, &repo, &["doctor", "develop", "--backend", "vault"]);
    assert_finding(
        &run,
        &["access vault status", "is sealed"],
        "operator unseal",
    );
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("finding")
                && l.contains("store: the vault store could not be read")),
        "a store that cannot be read is a finding, never all good:\n{}",
        run.stdout
    );
    assert!(!run.all().contains(TOKEN), "the token was printed");
    assert_nothing_shown(&run, &[&first]);
}

// ------------------------------------------------------------------ aws

use support::servers::moto::{Moto, moto_or_skip};

/// The shipped manifest under a project of the test's own, with develop on
/// the aws store and the compose runtime (as `aws.rs` sets it up).
fn repo_on_aws() -> (TempRepo, String) {
    let repo = TempRepo::new();
    let project = own_project(&repo);
    let m = repo.read("deploy/secrets.toml").replacen(
        "[environments.develop]\nbackend = \"compose\"\n",
        "[environments.develop]\nstore = \"aws\"\nruntime = \"compose\"\n",
        1,
    );
    assert!(m.contains("store = \"aws\""), "the manifest changed shape");
    repo.write(
        "deploy/secrets.toml",
        &format!("{m}\n[environments.develop.aws]\nrecovery_days = 7\n"),
    );
    (repo, project)
}

/// The line of the check `name` (`access region`, `store jwt_secret`, ...).
fn check<'a>(run: &'a Run, name: &str) -> &'a str {
    run.stdout
        .lines()
        .find(|l| {
            l.split_once(": ")
                .is_some_and(|(h, _)| h.ends_with(&format!(" {name}")))
        })
        .unwrap_or_else(|| panic!("no check {name:?}:\n{}{}", run.stdout, run.stderr))
}

/// The `fix:` line right after the check `name`.
fn fix_of<'a>(run: &'a Run, name: &str) -> &'a str {
    let line = check(run, name);
    let all: Vec<&str> = run.stdout.lines().collect();
    let at = all.iter().position(|l| *l == line).unwrap();
    let next = all.get(at + 1).copied().unwrap_or_default();
    assert!(
        next.trim_start().starts_with("fix:"),
        "{name} has no fix:\n{}",
        run.stdout
    );
    next
}

/// Findings other than the containers' (Docker may be out of reach: then
/// that is a finding of its own, and not this test's).
fn store_findings(run: &Run) -> Vec<&str> {
    lines(run, "finding")
        .into_iter()
        .filter(|l| !l.contains(" compose containers: "))
        .collect()
}

#[test]
fn aws_healthy_then_each_planted_fault() {
    if !moto_or_skip("aws_healthy_then_each_planted_fault") {
        return;
    }
    let moto = Moto::start();
    let (repo, project) = repo_on_aws();
    moto.run(&repo, &["setup-secrets", "develop"]).ok();
    let values: Vec<String> = ["JWT_SECRET", "REDIS_PASSWORD", "POSTGRES_PASSWORD"]
        .iter()
        .map(|k| support::env_value(&repo, "develop", k))
        .collect();
    let values: Vec<&str> = values.iter().map(String::as_str).collect();

    // Healthy: identity, region, store and every secret `ok`.
    let healthy = moto.run(&repo, &["doctor", "develop"]);
    assert!(
        store_findings(&healthy).is_empty(),
        "{}{}",
        healthy.stdout,
        healthy.stderr
    );
    let is_ok = |run: &Run, name: &str, has: &str| {
        let l = check(run, name);
        assert!(
            l.starts_with("ok ") && l.contains(has),
            "{name}: {l}\n{}",
            run.stdout
        );
    };
    is_ok(
        &healthy,
        "access identity",
        "the AWS credentials are arn:aws:",
    );
    is_ok(&healthy, "access region", "region us-east-1");
    is_ok(&healthy, "store", "the aws store answers");
    is_ok(
        &healthy,
        &format!("access ListSecrets (names {project}/develop/*)"),
        "allowed: secretsmanager:ListSecrets",
    );
    for n in support::DEVELOP_SECRETS {
        is_ok(
            &healthy,
            &format!("store {n}"),
            &format!("current in the aws store ({project}/develop/{n})"),
        );
    }
    if lines(&healthy, "finding").is_empty() {
        assert_eq!(healthy.code, 0, "{}", healthy.stderr);
    }
    assert_nothing_shown(&healthy, &values);

    // No region: its own finding, and the identity's fix names the region.
    let run = Run::from(
        moto.xtask(&repo, &["doctor", "develop"])
            .env_remove("AWS_DEFAULT_REGION")
            .output()
            .unwrap(),
    );
    assert_finding(
        &run,
        &["access region", "no AWS region is set"],
        "AWS_REGION",
    );
    assert!(
        fix_of(&run, "access region").contains("`region` in [environments.develop.aws]"),
        "{}",
        run.stdout
    );
    // The CLI cannot sign a request without a region: the identity fails too.
    let id = check(&run, "access identity");
    let fix = fix_of(&run, "access identity");
    assert!(
        id.starts_with("finding")
            && fix.contains("`region` in [environments.develop.aws]")
            && !fix.contains("credentials"),
        "the identity's fix does not follow the cause: {id}\n{fix}"
    );
    assert!(
        check(&run, "store").starts_with("finding"),
        "a store that cannot be read without a region is a finding:\n{}",
        run.stdout
    );
    assert_nothing_shown(&run, &values);

    // A secret missing from the store: deleted by name, as listed.
    let listed = moto.aws(&repo, &["list-secrets"]);
    let name = listed["SecretList"][0]["Name"]
        .as_str()
        .expect("moto lists the secrets")
        .to_string();
    let secret = name.rsplit('/').next().unwrap().to_string();
    moto.aws(
        &repo,
        &[
            "delete-secret",
            "--secret-id",
            &name,
            "--force-delete-without-recovery",
        ],
    );
    let missing = moto.run(&repo, &["doctor", "develop"]);
    assert_finding(
        &missing,
        &[&format!("store {secret}"), "not in the aws store"],
        "cargo xtask setup-secrets develop",
    );
    assert_eq!(store_findings(&missing).len(), 1, "{}", missing.stdout);
    is_ok(&missing, "access identity", "arn:aws:");
    is_ok(&missing, "store", "the aws store answers");
    moto.run(&repo, &["setup-secrets", "develop"]).ok();
    assert!(store_findings(&moto.run(&repo, &["doctor", "develop"])).is_empty());

    // A store that does not answer: it could not look, never `ok`.
    let closed = format!("http://127.0.0.1:{}", support::servers::free_port());
    let down = Run::from(
        moto.xtask(&repo, &["doctor", "develop"])
            .env("AWS_ENDPOINT_URL", &closed)
            .env("AWS_MAX_ATTEMPTS", "1")
            .output()
            .unwrap(),
    );
    assert_finding(
        &down,
        &[
            "store:",
            "could not be read, so no secret in it was checked",
        ],
        "cargo xtask doctor",
    );
    assert!(
        check(&down, "store").contains("endpoint does not answer"),
        "{}",
        down.stdout
    );
    assert!(
        !down
            .stdout
            .lines()
            .any(|l| l.starts_with("ok ") && l.contains(" store")),
        "a store that does not answer is never ok:\n{}",
        down.stdout
    );
    assert_finding(
        &down,
        &["access identity", "endpoint does not answer"],
        "endpoint_url",
    );
    let fix = fix_of(&down, "access identity");
    assert!(
        fix.contains("`endpoint_url` in [environments.develop.aws]")
            && fix.contains("AWS_ENDPOINT_URL")
            && fix.contains("network")
            && !fix.contains("credentials"),
        "{fix}"
    );
    assert!(
        !down.stdout.contains("[environments.<env>"),
        "a message names no real environment:\n{}",
        down.stdout
    );
    assert_nothing_shown(&down, &values);
}
