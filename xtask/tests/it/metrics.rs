//! Monitoring and runtime drift through the real binary, the real Docker
//! engine and the real `promtool` (built by `.ci/promtool.sh`):
//!
//! - the shipped alert rules pass `promtool check rules`, and `promtool test
//!   rules` fires each alert from input series whose names and label names
//!   are those the tool writes (checked against its real output);
//! - on the compose store and runtime: `status --format openmetrics --out`
//!   writes atomically (0644, no temporary file left), `promtool check
//!   metrics` accepts it, a failed rotation shows as such, a container that
//!   started before its secret file changed is runtime drift, and no value
//!   nor a SHA-256 of one is in the metrics;
//! - on a swarm: services and tasks on a superseded version are named in
//!   `status --check` (`runtime-drift`), `--json`, `list-secrets` and the
//!   metrics, a `kept_by` service on the old version is "kept", not drift, and
//!   once the service runs the current version it has converged.

use crate::support;

use std::{
    collections::BTreeSet,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use support::{Run, TempRepo, docker_or_skip, skip_note, swarm_or_skip, unique};

const PROMTOOL_VERSION: &str = "v0.316.0";

/// `promtool`: `$PROMTOOL`, else on PATH, else where `.ci/promtool.sh` builds
/// it. Under `CI=true` a missing one fails the test.
fn promtool_or_skip(test: &str) -> Option<PathBuf> {
    let answers = |p: &Path| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let candidates = [
        std::env::var_os("PROMTOOL").map(PathBuf::from),
        Some(PathBuf::from("promtool")),
        Some(PathBuf::from(format!(
            "/var/tmp/promtool-{PROMTOOL_VERSION}/bin/promtool"
        ))),
    ];
    if let Some(p) = candidates.into_iter().flatten().find(|p| answers(p)) {
        return Some(p);
    }
    if support::ci() {
        panic!("{test}: CI is set but there is no promtool; .ci/run must source .ci/promtool.sh");
    }
    skip_note(format_args!(
        "\n*** SKIPPED {test}: no promtool (run `bash .ci/promtool.sh`, or set PROMTOOL) ***\n"
    ));
    None
}

fn promtool(bin: &Path, args: &[&str], stdin: Option<&[u8]>, dir: &Path) -> Run {
    let mut c = Command::new(bin);
    c.args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        let mut i = child.stdin.take().unwrap();
        if let Some(b) = stdin {
            // A promtool that stopped reading says why in its output.
            let _ = i.write_all(b);
        }
    }
    Run::from(child.wait_with_output().unwrap())
}

/// `(name, label names)` of every sample line of an exposition text.
fn shapes(text: &str) -> BTreeSet<(String, Vec<String>)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| series_shape(l.rsplit_once(' ').map_or(l, |(s, _)| s)))
        .collect()
}

/// `name{a="x",b="y"}` → `(name, [a, b])` (label values hold no `=` here).
fn series_shape(series: &str) -> (String, Vec<String>) {
    let (name, rest) = series.split_once('{').unwrap_or((series, ""));
    let mut labels: Vec<String> = rest
        .trim_end_matches('}')
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap().0.trim().to_string())
        .collect();
    labels.sort();
    (name.trim().to_string(), labels)
}

/// The input series of the rules test file.
fn rule_test_series() -> Vec<String> {
    let text = std::fs::read_to_string(
        support::source_root().join("xtask/tests/data/prometheus/secrets-alerts.test.yml"),
    )
    .unwrap();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("- series: "))
        .map(|s| s.trim_matches('\'').to_string())
        .collect()
}

#[test]
fn alert_rules_pass_promtool_check_and_every_alert_fires_in_promtool_test() {
    let Some(bin) =
        promtool_or_skip("alert_rules_pass_promtool_check_and_every_alert_fires_in_promtool_test")
    else {
        return;
    };
    let root = support::source_root();
    let check = promtool(
        &bin,
        &["check", "rules", "deploy/prometheus/secrets-alerts.yml"],
        None,
        &root,
    );
    assert_eq!(check.code, 0, "promtool check rules:\n{}", check.all());
    assert!(
        check.all().contains("SUCCESS: 7 rules found"),
        "{}",
        check.all()
    );
    let test = promtool(
        &bin,
        &[
            "test",
            "rules",
            "xtask/tests/data/prometheus/secrets-alerts.test.yml",
        ],
        None,
        &root,
    );
    assert_eq!(test.code, 0, "promtool test rules:\n{}", test.all());
    // Each alert of the rules file is exercised by the test file.
    let rules = std::fs::read_to_string(root.join("deploy/prometheus/secrets-alerts.yml")).unwrap();
    let tests =
        std::fs::read_to_string(root.join("xtask/tests/data/prometheus/secrets-alerts.test.yml"))
            .unwrap();
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!(
                "alertname: {alert}\n        exp_alerts:\n          - exp_labels:"
            )),
            "{alert} is never expected to fire in the rules test"
        );
    }
    // A rules test that cannot fail proves nothing: a wrong expectation fails.
    let dir = std::env::temp_dir().join(format!("xtask-rules-{}", unique()));
    std::fs::create_dir_all(&dir).unwrap();
    let broken = tests
        .replace(
            "../../../../deploy/prometheus/secrets-alerts.yml",
            &root
                .join("deploy/prometheus/secrets-alerts.yml")
                .display()
                .to_string(),
        )
        .replace("secret: postgres_password\n", "secret: jwt_secret\n");
    std::fs::write(dir.join("t.yml"), broken).unwrap();
    let bad = promtool(&bin, &["test", "rules", "t.yml"], None, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    assert_ne!(bad.code, 0, "a wrong expectation passed:\n{}", bad.all());
}

/// The files a compose environment's values live in: the env file's values
/// and the secret files.
fn planted_values(repo: &TempRepo, env: &str) -> Vec<String> {
    let mut out: Vec<String> = repo
        .read(&format!("secrets/{env}.env"))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(_, v)| v.trim_matches('\'').trim_matches('"').to_string())
        .filter(|v| v.len() >= 8)
        .collect();
    if let Ok(rd) = std::fs::read_dir(repo.path(&format!("secrets/{env}"))) {
        for e in rd.flatten() {
            if let Ok(v) = std::fs::read_to_string(e.path())
                && v.len() >= 8
            {
                out.push(v);
            }
        }
    }
    out
}

fn assert_no_value(text: &str, values: &[String]) {
    for v in values {
        assert!(
            !text.contains(v.as_str()),
            "a secret value is in the metrics"
        );
        let h = support::sha256_hex(v.as_bytes());
        assert!(
            !text.contains(&h[..16]),
            "a SHA-256 of a value is in the metrics"
        );
    }
}

/// Removes the container when dropped, also when the test fails.
struct Container(String);
impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

#[test]
fn compose_metrics_pass_promtool_and_a_container_older_than_its_file_is_drift() {
    let test = "compose_metrics_pass_promtool_and_a_container_older_than_its_file_is_drift";
    if !docker_or_skip(test) {
        return;
    }
    let Some(bin) = promtool_or_skip(test) else {
        return;
    };
    let repo = TempRepo::new();
    // A project of its own, so no other test's compose project is seen.
    let project = format!("xm{}", unique());
    let m = repo
        .read("deploy/secrets.toml")
        .replace("project = \"raqeem\"", &format!("project = \"{project}\""));
    std::fs::write(repo.path("deploy/secrets.toml"), m).unwrap();
    repo.run(&["setup-secrets", "develop"]).ok();
    // A container of the project's backend service (the labels Compose
    // sets), mounting jwt_secret's file as Compose does.
    let name = format!("{project}-develop-backend-1");
    let file = repo.path("secrets/develop/jwt_secret");
    let _c = Container(name.clone());
    support::docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        &format!("com.docker.compose.project={project}-develop"),
        "--label",
        "com.docker.compose.service=backend",
        "-v",
        &format!("{}:/run/secrets/jwt_secret:ro", file.display()),
        support::probe_image(),
        "serve",
        "--port",
        "8080",
        "jwt_secret",
    ]);
    let before = repo.run(&["status", "develop", "--check"]).ok();
    let row = |out: &str, secret: &str| {
        out.lines()
            .find(|l| l.starts_with("develop ") && l.split_whitespace().nth(1) == Some(secret))
            .unwrap_or_else(|| panic!("no {secret} row in\n{out}"))
            .to_string()
    };
    assert!(
        row(&before.stdout, "jwt_secret").ends_with(" current"),
        "{}",
        before.stdout
    );
    // A rotation whose redeploy fails: the file is replaced, the container
    // still reads the old inode, and the rotation did not complete.
    std::thread::sleep(Duration::from_millis(1100));
    let rot = Run::from(
        repo.xtask(&["rotate-secrets", "develop", "--secret", "jwt_secret"])
            .env("DOCKER", "/bin/false")
            .output()
            .unwrap(),
    );
    assert_ne!(rot.code, 0, "{}", rot.all());
    let after = repo.run(&["status", "develop", "--check"]).fails();
    let line = format!(
        "runtime-drift: develop jwt_secret: container/{name} started before the secret file last changed and still read the old content; run `cargo xtask deploy develop`"
    );
    assert!(
        after.stdout.lines().any(|l| l == line),
        "{line}\n{}",
        after.stdout
    );
    assert!(
        row(&after.stdout, "jwt_secret").contains("drift (backend@old-file)"),
        "{}",
        after.stdout
    );
    let list = repo.run(&["list-secrets", "develop"]).ok();
    assert!(
        list.stdout.contains("drift (backend@old-file)"),
        "{}",
        list.stdout
    );

    std::fs::create_dir_all(repo.path("metrics")).unwrap();
    let r = repo
        .run(&[
            "status",
            "develop",
            "--format",
            "openmetrics",
            "--out",
            "metrics/xtask_secrets.prom",
        ])
        .ok();
    assert!(
        r.stderr.contains("metrics to metrics/xtask_secrets.prom"),
        "{}",
        r.all()
    );
    let path = repo.path("metrics/xtask_secrets.prom");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    let left: Vec<_> = std::fs::read_dir(repo.path("metrics"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), 1, "a temporary file was left: {left:?}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.ends_with("\n# EOF\n"), "{text}");
    for want in [
        "xtask_secret_drift{environment=\"develop\",secret=\"jwt_secret\"} 1",
        "xtask_secret_drift{environment=\"develop\",secret=\"api_secret_key\"} 0",
        "xtask_secret_last_rotation_success{environment=\"develop\",secret=\"jwt_secret\"} 0",
        "xtask_secret_present{environment=\"develop\",secret=\"jwt_secret\",store=\"compose\"} 1",
        "xtask_secret_environment_up{environment=\"develop\",part=\"runtime\"} 1",
        "xtask_secret_findings{environment=\"develop\",kind=\"runtime-drift\"} 1",
    ] {
        assert!(text.lines().any(|l| l == want), "no {want:?} in\n{text}");
    }
    assert!(
        text.lines().any(|l| l.starts_with(
            "xtask_secret_failed_operations{environment=\"develop\",command=\"rotate-secrets\"} "
        ) && !l.ends_with(" 0")),
        "{text}"
    );
    assert_no_value(&text, &planted_values(&repo, "develop"));
    let check = promtool(
        &bin,
        &["check", "metrics"],
        Some(text.as_bytes()),
        &repo.root,
    );
    assert_eq!(
        check.code,
        0,
        "promtool check metrics:\n{}\n{text}",
        check.all()
    );
    // Every input series of the rules test is shaped like this output.
    let have = shapes(&text);
    for s in rule_test_series() {
        let shape = series_shape(&s);
        assert!(
            have.contains(&shape),
            "the rules test's {s} is not shaped like the output:\n{text}"
        );
    }
    // Stdout without --out, the same families.
    let out = repo
        .run(&["status", "develop", "--format", "openmetrics"])
        .ok();
    assert!(out.stdout.ends_with("# EOF\n"));
    assert_eq!(shapes(&out.stdout), have);
    // A runtime that cannot be asked is not "no drift".
    let down = Run::from(
        repo.xtask(&["status", "develop", "--check", "--format", "openmetrics"])
            .env("DOCKER", "/nonexistent/docker")
            .output()
            .unwrap(),
    )
    .fails();
    assert!(
        down.stdout
            .contains("xtask_secret_environment_up{environment=\"develop\",part=\"runtime\"} 0"),
        "{}",
        down.stdout
    );
    assert!(
        !down.stdout.contains("xtask_secret_drift{"),
        "{}",
        down.stdout
    );
    assert!(
        down.stderr.lines().any(|l| l.starts_with(
            "unreachable: develop: the compose runtime could not be asked which secret versions run ("
        )),
        "{}",
        down.stderr
    );
}

/// Swarm services of the test: removed (then the project's secrets) on drop.
struct Swarm {
    project: String,
    services: Vec<String>,
}
impl Drop for Swarm {
    fn drop(&mut self) {
        for s in &self.services {
            let _ = Command::new("docker").args(["service", "rm", s]).output();
        }
        // The tasks hold the secrets until they are gone.
        for _ in 0..30 {
            let left = Command::new("docker")
                .args([
                    "ps",
                    "-q",
                    "--filter",
                    &format!("label=com.docker.stack.namespace={}-stage", self.project),
                ])
                .output()
                .map(|o| o.stdout.is_empty())
                .unwrap_or(true);
            if left {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        support::remove_project_secrets(&self.project);
    }
}

/// Waits (bounded) until every task of `service` that should run runs.
fn wait_running(service: &str) {
    let start = Instant::now();
    loop {
        let out = support::docker(&[
            "service",
            "ps",
            service,
            "--filter",
            "desired-state=running",
            "--format",
            "{{.CurrentState}}",
        ]);
        let states: Vec<&str> = out.lines().collect();
        if !states.is_empty() && states.iter().all(|s| s.starts_with("Running")) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "{service} did not run within 90 s: {out}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn swarm_tasks_on_a_superseded_version_are_drift_and_kept_services_are_not() {
    let test = "swarm_tasks_on_a_superseded_version_are_drift_and_kept_services_are_not";
    if !swarm_or_skip(test) {
        return;
    }
    let Some(bin) = promtool_or_skip(test) else {
        return;
    };
    let project = format!("xm{}", unique());
    let stack = format!("{project}-stage");
    let backend = format!("{stack}_backend");
    let db = format!("{stack}_postgres");
    let mut guard = Swarm {
        project: project.clone(),
        services: Vec::new(),
    };
    let repo = TempRepo::new();
    std::fs::write(
        repo.path("deploy/secrets.toml"),
        format!(
            "project = \"{project}\"\n\n[environments.stage]\nbackend = \"swarm\"\ngenerate = true\n\n\
             [secrets.jwt]\nkind = \"key\"\nservices = [\"backend\"]\n\n\
             [secrets.pw]\nkind = \"password\"\nservices = [\"backend\", \"postgres\"]\nkept_by = [\"postgres\"]\nrotate_hook = [\"deploy/hooks/none\"]\n"
        ),
    )
    .unwrap();
    repo.run(&["setup-secrets", "stage"]).ok();
    let id = |s: &str, v: u32| format!("{project}_stage_{s}_v{v}");
    let image = support::probe_image();
    let create = |name: &str, secrets: &[(String, &str)]| {
        let mut args: Vec<String> = [
            "service",
            "create",
            "--detach",
            "--name",
            name,
            "--label",
            &format!("com.docker.stack.namespace={stack}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for (src, target) in secrets {
            args.push("--secret".into());
            args.push(format!("source={src},target={target}"));
        }
        // The probe serves the fingerprints of the secrets it is given.
        args.extend([image, "serve", "--port", "8080"].map(String::from));
        args.extend(secrets.iter().map(|(_, target)| target.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        support::docker(&args);
    };
    create(&backend, &[(id("jwt", 1), "jwt"), (id("pw", 1), "pw")]);
    guard.services.push(backend.clone());
    create(&db, &[(id("pw", 1), "pw")]);
    guard.services.push(db.clone());
    wait_running(&backend);
    wait_running(&db);
    let fresh = repo.run(&["status", "stage", "--check"]).ok();
    assert!(fresh.stdout.contains("no findings"), "{}", fresh.stdout);

    // New values for both: v2 in the store; nothing redeployed.
    let env = repo.read("secrets/stage.env");
    let new: String = env
        .lines()
        .map(|l| match l.split_once('=') {
            Some(("JWT", _)) => {
                "JWT=0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUV\n".to_string()
            }
            Some(("PW", _)) => "PW=Zyxwvutsrqponmlkjihgfedcba9876543210ZYXW\n".to_string(),
            _ => format!("{l}\n"),
        })
        .collect();
    repo.write("secrets/stage.env", &new);
    let values = planted_values(&repo, "stage");
    repo.run(&["setup-secrets", "stage"]).ok();

    let r = repo.run(&["status", "stage", "--check"]).fails();
    let findings: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.starts_with("runtime-drift: "))
        .collect();
    let drift_line = |s: &str| {
        format!(
            "runtime-drift: stage {s}: service/{backend}, task/{backend}.1 run v1, the current version is v2; run `cargo xtask deploy stage`"
        )
    };
    assert_eq!(
        findings,
        [drift_line("jwt"), drift_line("pw")],
        "{}",
        r.stdout
    );
    assert!(
        !r.stdout.contains(&format!("task/{db}.1 run")),
        "{}",
        r.stdout
    );
    let pw_row = r
        .stdout
        .lines()
        .find(|l| l.starts_with("stage ") && l.split_whitespace().nth(1) == Some("pw"))
        .unwrap();
    assert!(
        pw_row.ends_with("drift (backend@v1); kept (postgres@v1)"),
        "{pw_row}"
    );
    let j = Run::from(repo.xtask(&["status", "stage", "--json"]).output().unwrap()).ok();
    let v: serde_json::Value = serde_json::from_str(&j.stdout).unwrap();
    let pw = v["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "pw")
        .unwrap()
        .clone();
    assert_eq!(pw["runtime"]["state"], "drift", "{pw}");
    assert_eq!(pw["runtime"]["current_version"], 2, "{pw}");
    let kept: Vec<&str> = pw["runtime"]["kept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["who"].as_str().unwrap())
        .collect();
    assert_eq!(
        kept,
        [format!("service/{db}"), format!("task/{db}.1")],
        "{pw}"
    );
    assert_eq!(pw["runtime"]["in_use"]["postgres"], 1, "{pw}");
    let list = repo.run(&["list-secrets", "stage"]).ok();
    assert!(
        list.stdout.contains("drift (backend@v1)"),
        "{}",
        list.stdout
    );

    let m = repo
        .run(&["status", "stage", "--format", "openmetrics"])
        .ok()
        .stdout;
    for want in [
        "xtask_secret_drift{environment=\"stage\",secret=\"jwt\"} 1",
        "xtask_secret_version{environment=\"stage\",secret=\"jwt\"} 2",
        "xtask_secret_version_in_use{environment=\"stage\",secret=\"pw\",service=\"postgres\",kept=\"true\"} 1",
        "xtask_secret_version_in_use{environment=\"stage\",secret=\"pw\",service=\"backend\",kept=\"false\"} 1",
    ] {
        assert!(m.lines().any(|l| l == want), "no {want:?} in\n{m}");
    }
    assert_no_value(&m, &values);
    let check = promtool(&bin, &["check", "metrics"], Some(m.as_bytes()), &repo.root);
    assert_eq!(
        check.code,
        0,
        "promtool check metrics:\n{}\n{m}",
        check.all()
    );

    // The backend moves to v2; postgres keeps v1 by design: converged.
    support::docker(&[
        "service",
        "update",
        "--detach",
        "--secret-rm",
        &id("jwt", 1),
        "--secret-rm",
        &id("pw", 1),
        "--secret-add",
        &format!("source={},target=jwt", id("jwt", 2)),
        "--secret-add",
        &format!("source={},target=pw", id("pw", 2)),
        &backend,
    ]);
    let start = Instant::now();
    let done = loop {
        let r = repo.run(&["status", "stage", "--check"]);
        if r.code == 0 || start.elapsed() > Duration::from_secs(90) {
            break r;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let done = done.ok();
    assert!(done.stdout.contains("no findings"), "{}", done.stdout);
    let m = repo
        .run(&["status", "stage", "--format", "openmetrics"])
        .ok()
        .stdout;
    assert!(
        m.lines()
            .any(|l| l == "xtask_secret_drift{environment=\"stage\",secret=\"jwt\"} 0"),
        "{m}"
    );
}

/// Deletes the test's namespace whatever happened.
struct Namespace(String);
impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("kubectl")
            .args(["delete", "namespace", &self.0, "--wait=false"])
            .output();
    }
}

fn kubectl_ok(args: &[&str], stdin: Option<&str>) -> String {
    let mut c = Command::new("kubectl");
    c.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        let mut i = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            i.write_all(s.as_bytes()).unwrap();
        }
    }
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn kubernetes_pods_on_a_superseded_secret_are_drift_until_the_rollout() {
    let test = "kubernetes_pods_on_a_superseded_secret_are_drift_until_the_rollout";
    if !support::cluster_or_skip(test) {
        return;
    }
    let Some(bin) = promtool_or_skip(test) else {
        return;
    };
    let project = format!("xm{}", unique());
    let ns = format!("{project}-stage");
    let _ns = Namespace(ns.clone());
    kubectl_ok(&["create", "namespace", &ns], None);
    kubectl_ok(&["label", "namespace", &ns, "xtask-test=metrics"], None);
    let repo = TempRepo::new();
    std::fs::write(
        repo.path("deploy/secrets.toml"),
        format!(
            "project = \"{project}\"\n\n[environments.stage]\nbackend = \"k8s\"\ngenerate = true\n\n\
             [secrets.jwt]\nkind = \"key\"\nservices = [\"backend\"]\n"
        ),
    )
    .unwrap();
    repo.run(&["setup-secrets", "stage"]).ok();
    // The test cluster's own busybox (.ci/k8s/up.sh loads it), mounting one
    // version of the Secret the way deploy/k8s does (a projected volume).
    let deployment = |v: u32| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: backend}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: backend}}}}\n  template:\n    metadata: {{labels: {{app: backend}}}}\n    spec:\n      terminationGracePeriodSeconds: 0\n      automountServiceAccountToken: false\n      containers:\n      - name: backend\n        image: k8stest/busybox:1.35\n        imagePullPolicy: Never\n        command: [sleep, \"3600\"]\n        volumeMounts: [{{name: secrets, mountPath: /run/secrets, readOnly: true}}]\n      volumes:\n      - name: secrets\n        projected:\n          sources:\n          - secret: {{name: {project}-stage-jwt-v{v}}}\n"
        )
    };
    let roll = |v: u32| {
        kubectl_ok(&["-n", &ns, "apply", "-f", "-"], Some(&deployment(v)));
        kubectl_ok(
            &[
                "-n",
                &ns,
                "rollout",
                "status",
                "deployment/backend",
                "--timeout=120s",
            ],
            None,
        );
    };
    roll(1);
    let fresh = repo.run(&["status", "stage", "--check"]).ok();
    assert!(fresh.stdout.contains("no findings"), "{}", fresh.stdout);

    let new: String = repo
        .read("secrets/stage.env")
        .lines()
        .map(|l| match l.starts_with("JWT=") {
            true => "JWT=k8sRotated0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH\n".to_string(),
            false => format!("{l}\n"),
        })
        .collect();
    repo.write("secrets/stage.env", &new);
    repo.run(&["setup-secrets", "stage"]).ok();
    let r = repo.run(&["status", "stage", "--check"]).fails();
    let line = r
        .stdout
        .lines()
        .find(|l| l.starts_with("runtime-drift: stage jwt: "))
        .unwrap_or_else(|| panic!("no runtime-drift finding:\n{}", r.stdout));
    let pod = kubectl_ok(
        &["-n", &ns, "get", "pods", "-l", "app=backend", "-o", "name"],
        None,
    );
    let rs = kubectl_ok(&["-n", &ns, "get", "replicasets", "-o", "name"], None);
    // kubectl names it `replicaset.apps/<name>`.
    let rs = format!("replicaset/{}", rs.trim().rsplit('/').next().unwrap());
    for who in ["deployment/backend", pod.trim(), rs.as_str()] {
        assert!(line.contains(who), "{who} not named: {line}");
    }
    assert!(
        line.ends_with(" run v1, the current version is v2; run `cargo xtask deploy stage`"),
        "{line}"
    );
    let m = repo
        .run(&["status", "stage", "--format", "openmetrics"])
        .ok()
        .stdout;
    for want in [
        "xtask_secret_drift{environment=\"stage\",secret=\"jwt\"} 1",
        "xtask_secret_version_in_use{environment=\"stage\",secret=\"jwt\",service=\"backend\",kept=\"false\"} 1",
        "xtask_secret_environment_up{environment=\"stage\",part=\"runtime\"} 1",
    ] {
        assert!(m.lines().any(|l| l == want), "no {want:?} in\n{m}");
    }
    let check = promtool(&bin, &["check", "metrics"], Some(m.as_bytes()), &repo.root);
    assert_eq!(
        check.code,
        0,
        "promtool check metrics:\n{}\n{m}",
        check.all()
    );

    // The rollout to v2: the old ReplicaSet scales to 0, its pod goes.
    roll(2);
    let start = Instant::now();
    let done = loop {
        let r = repo.run(&["status", "stage", "--check"]);
        if r.code == 0 || start.elapsed() > Duration::from_secs(90) {
            break r;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let done = done.ok();
    assert!(done.stdout.contains("no findings"), "{}", done.stdout);
}
