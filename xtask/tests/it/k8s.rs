//! Kubernetes, live: the shipped `deploy/k8s/` manifests on a real cluster
//! (the one `KUBECONFIG` names; CI builds it with `.ci/k8s/up.sh`), with only
//! the image names replaced by a local stand-in image that serves the
//! fingerprints of every file in its `/run/secrets`.
//!
//! One test walks the whole flow, because each step needs the state the last
//! one left: setup (labels, annotations, immutability, one kubectl call on a
//! re-run), deploy (every pod reads every secret with the right bytes, every
//! Service resolves from a pod, the backend answers through its ClusterIP),
//! rotation under load (no failed request, ends on the new value, old versions
//! pruned), removal refused while in use, a failing rollout reported while the
//! old pods keep serving, strace over setup and rotation (no value on any
//! argv or child environment), and no `last-applied-configuration` anywhere.
//!
//! Another test exercises Services on their own: a Deployment reached by its
//! Service's name from another pod (cluster DNS, then the ClusterIP through
//! kube-proxy), and a rollout that moves its endpoints under a bounded client
//! loop with no failed request.

use crate::support;
use support::env_value;
use support::servers::cluster::{kubectl, kubectl_ok};
use support::servers::moto::{Moto, moto_or_skip};

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpStream,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use support::{Run, TempRepo, sha12, unique};

const ENV: &str = "staging";

/// Which secrets each workload mounts (docker-compose.swarm.yml's lists).
const MOUNTS: [(&str, &[&str]); 5] = [
    ("postgres", &["postgres_password", "postgres_user"]),
    ("redis", &["redis_password"]),
    (
        "backend",
        &[
            "api_secret_key",
            "better_auth_secret",
            "database_url",
            "jwt_secret",
            "postgres_password",
            "postgres_user",
            "redis_password",
        ],
    ),
    ("grafana", &["grafana_admin_password"]),
    ("nginx", &["ssl_certificate", "ssl_private_key"]),
];

/// Removes the namespace and the volume whatever happened.
struct Cleanup {
    ns: String,
    pv: String,
    dir: std::path::PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = kubectl(&[
            "delete",
            "namespace",
            &self.ns,
            "--wait=true",
            "--timeout=90s",
        ]);
        for pv in [self.pv.clone(), format!("{}-redis", self.pv)] {
            let _ = kubectl(&["delete", "pv", &pv, "--wait=false"]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(self.dir.with_extension("redis"));
    }
}

/// A hostPath volume bound in advance to postgres's claim (the test cluster
/// has no provisioner).
fn make_volume(ns: &str, pv: &str, dir: &std::path::Path) {
    make_labelled_volume(ns, pv, dir, "k8s");
}

/// [`make_volume`] with its own `xtask-test` label, out of [`sweep`]'s reach.
/// Two hostPath volumes bound in advance to the claims of postgres and redis
/// (the test cluster has no provisioner): `pv` at `dir`, `pv`-redis at
/// `dir`.redis, open to redis's own user (the kubelet applies no fsGroup to a
/// hostPath volume).
fn make_labelled_volume(ns: &str, pv: &str, dir: &std::path::Path, label: &str) {
    use std::os::unix::fs::PermissionsExt;
    for (name, claim, dir) in [
        (pv.to_string(), "data-postgres-0", dir.to_path_buf()),
        (
            format!("{pv}-redis"),
            "data-redis-0",
            dir.with_extension("redis"),
        ),
    ] {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let doc = format!(
            r#"{{"apiVersion":"v1","kind":"PersistentVolume","metadata":{{"name":"{name}","labels":{{"xtask-test":"{label}"}}}},
"spec":{{"capacity":{{"storage":"1Gi"}},"accessModes":["ReadWriteOnce"],"persistentVolumeReclaimPolicy":"Retain",
"hostPath":{{"path":"{}"}},"claimRef":{{"namespace":"{ns}","name":"{claim}"}}}}}}"#,
            dir.display()
        );
        let mut c = Command::new("kubectl")
            .args([
                "apply",
                "--server-side",
                "--field-manager=xtask-test",
                "-f",
                "-",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(doc.as_bytes()).unwrap();
        assert!(c.wait().unwrap().success(), "cannot create the volume");
    }
}

/// Stale namespaces of earlier runs of this test (killed before cleaning up).
fn sweep() {
    let out = kubectl_ok(&["get", "namespaces", "-l", "xtask-test=k8s", "-o", "name"]);
    for ns in out.lines() {
        let _ = kubectl(&["delete", ns, "--wait=false"]);
    }
    let out = kubectl_ok(&[
        "get",
        "pv",
        "-l",
        "xtask-test=k8s",
        "-o",
        "jsonpath={range .items[?(@.status.phase!=\"Bound\")]}{.metadata.name}{\"\\n\"}{end}",
    ]);
    for pv in out.lines().filter(|l| !l.is_empty()) {
        let _ = kubectl(&["delete", "pv", pv, "--wait=false"]);
    }
}

/// Every value the pods should see, by secret name.
fn expected(repo: &TempRepo) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for (_, names) in MOUNTS {
        for n in names {
            let v = match *n {
                "database_url" => format!(
                    "postgresql://{}:{}@postgres:5432/raqeem_{ENV}",
                    env_value(repo, ENV, "POSTGRES_USER"),
                    env_value(repo, ENV, "POSTGRES_PASSWORD")
                )
                .into_bytes(),
                "ssl_certificate" => repo.read("secrets/tls/cert.pem").into_bytes(),
                "ssl_private_key" => repo.read("secrets/tls/key.pem").into_bytes(),
                _ => env_value(repo, ENV, &n.to_uppercase()).into_bytes(),
            };
            out.insert(n.to_string(), v);
        }
    }
    out
}

/// One plain HTTP GET; the body on 200.
fn get(addr: &str) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(
        &addr.parse().map_err(|e| format!("{e}"))?,
        Duration::from_secs(2),
    )
    .map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).map_err(|e| e.to_string())?;
    match buf.split_once("\r\n\r\n") {
        Some((head, body))
            if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") =>
        {
            Ok(body.to_string())
        }
        _ => Err(format!(
            "{addr}: {}",
            buf.lines().next().unwrap_or("no answer")
        )),
    }
}

/// Ready pod IPs of one workload, from its Endpoints.
fn endpoints(ns: &str, svc: &str) -> Vec<String> {
    let o = kubectl(&[
        "-n",
        ns,
        "get",
        "endpoints",
        svc,
        "-o",
        "jsonpath={.subsets[*].addresses[*].ip}",
    ]);
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Pod name and IP of every running pod of one workload that is not being
/// deleted (a terminating pod still shows as Running).
fn pods(ns: &str, app: &str) -> Vec<(String, String)> {
    let sel = format!("app.kubernetes.io/name={app}");
    let out = kubectl_ok(&[
        "-n",
        ns,
        "get",
        "pods",
        "-l",
        &sel,
        "--field-selector=status.phase=Running",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
    ]);
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 2).then(|| (f[0].to_string(), f[1].to_string()))
        })
        .collect()
}

/// Waits until `app` has exactly `n` pods and none terminating, so the next
/// step starts from a settled rollout.
fn settle(ns: &str, app: &str, n: usize) {
    let sel = format!("app.kubernetes.io/name={app}");
    let start = Instant::now();
    loop {
        let all = kubectl_ok(&["-n", ns, "get", "pods", "-l", &sel, "-o", "name"]);
        if all.lines().count() == n && pods(ns, app).len() == n {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "{app} did not settle at {n} pods: {all}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// What the stand-in serves: the reader trims trailing newlines first.
fn served_line(name: &str, value: &[u8]) -> String {
    let mut v = value;
    while let Some(rest) = v.strip_suffix(b"\n").or_else(|| v.strip_suffix(b"\r")) {
        v = rest;
    }
    format!("{name} {}", sha12(v))
}

struct Env<'a> {
    repo: &'a TempRepo,
    ns: String,
    image: String,
}

impl Env<'_> {
    fn args<'b>(&'b self, cmd: &'b str, rest: &[&'b str]) -> Vec<&'b str> {
        let mut a = vec![cmd, ENV, "--backend", "k8s", "--namespace", &self.ns];
        a.extend_from_slice(rest);
        a
    }

    fn run(&self, cmd: &str, rest: &[&str]) -> Run {
        self.run_with(cmd, rest, &[])
    }

    fn run_with(&self, cmd: &str, rest: &[&str], envs: &[(&str, &str)]) -> Run {
        let mut c = self.repo.xtask(&self.args(cmd, rest));
        for img in [
            "POSTGRES_IMAGE",
            "REDIS_IMAGE",
            "BACKEND_IMAGE",
            "GRAFANA_IMAGE",
            "NGINX_IMAGE",
        ] {
            c.env(img, &self.image);
        }
        c.env("XTASK_IMAGE_PULL_POLICY", "Never");
        for (k, v) in envs {
            c.env(k, v);
        }
        Run::from(c.output().unwrap())
    }
}

#[test]
fn kubernetes_store_and_runtime_on_a_real_cluster() {
    if !support::cluster_or_skip("kubernetes_store_and_runtime_on_a_real_cluster")
        || !support::docker_or_skip("k8s")
    {
        return;
    }
    sweep();
    let image = support::standin_image().to_string();
    support::load_into_cluster(&image);
    let id = unique();
    let ns = format!("xk-{id}");
    let pv = format!("xk-{id}");
    let _cleanup = Cleanup {
        ns: ns.clone(),
        pv: pv.clone(),
        dir: std::env::temp_dir().join(format!("xk-pv-{id}")),
    };
    kubectl_ok(&["create", "namespace", &ns]);
    kubectl_ok(&["label", "namespace", &ns, "xtask-test=k8s"]);
    make_volume(&ns, &pv, &std::env::temp_dir().join(format!("xk-pv-{id}")));

    let repo = TempRepo::new();
    // A real pair: every plan checks that the key is the certificate's.
    let (cert, key, _) = support::tls_pair();
    repo.write("secrets/tls/cert.pem", cert);
    repo.write("secrets/tls/key.pem", key);
    // A user name of its own: the default `<project>_<env>` is also the
    // database's name, which a dry run prints.
    repo.write(
        &format!("secrets/{ENV}.env"),
        "POSTGRES_USER=k8s-user-4711\nSSL_CERTIFICATE=tls/cert.pem\nSSL_PRIVATE_KEY=tls/key.pem\n",
    );
    let e = Env {
        repo: &repo,
        ns: ns.clone(),
        image,
    };

    setup_labels_and_one_call_rerun(&e);
    let want = expected(&repo);
    deploy_serves_every_secret(&e, &want);
    stack_services_resolve(&e, &want);
    rotation_under_load(&e);
    removal_refused_while_in_use(&e);
    failing_rollout_keeps_old_pods(&e);
    let all = kubectl_ok(&[
        "-n",
        &ns,
        "get",
        "secrets,deployments,statefulsets,replicasets,pods,services",
        "-o",
        "json",
    ]);
    assert!(
        !all.contains("last-applied-configuration"),
        "client-side apply left an annotation"
    );
}

fn setup_labels_and_one_call_rerun(e: &Env) {
    let (run, trace) = traced(e, &e.args("setup-secrets", &["--generate-missing"]));
    let run = run.ok();
    assert!(run.stdout.contains("done: 10 created"), "{}", run.stdout);
    assert_no_values(e.repo, &trace, &run);
    let name = format!("raqeem-{ENV}-jwt-secret-v1");
    let s: serde_json::Value = serde_json::from_str(&kubectl_ok(&[
        "-n", &e.ns, "get", "secret", &name, "-o", "json",
    ]))
    .unwrap();
    assert_eq!(s["immutable"], true);
    let labels = &s["metadata"]["labels"];
    assert_eq!(
        (
            labels["xtask.project"].as_str(),
            labels["xtask.environment"].as_str()
        ),
        (Some("raqeem"), Some(ENV))
    );
    assert_eq!(
        (
            labels["xtask.secret"].as_str(),
            labels["xtask.version"].as_str()
        ),
        (Some("jwt_secret"), Some("1"))
    );
    assert_eq!(labels["xtask.tool"], "cargo-xtask");
    assert_eq!(
        s["metadata"]["annotations"]["xtask.fingerprint"]
            .as_str()
            .map(str::len),
        Some(16)
    );
    assert!(
        s["metadata"]["annotations"]["xtask.rotated-at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    let value = s["data"]["jwt_secret"].as_str().unwrap();
    assert_eq!(
        decode64(value),
        env_value(e.repo, ENV, "JWT_SECRET").into_bytes()
    );

    // A re-run with nothing changed: exactly one kubectl call.
    let log = e.repo.path("kubectl-calls.log");
    let wrapper = e.repo.path("counting-kubectl");
    let real = which::which("kubectl").unwrap().display().to_string();
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho call >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            real.trim()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let again = e
        .run_with(
            "setup-secrets",
            &[],
            &[("KUBECTL", wrapper.to_str().unwrap())],
        )
        .ok();
    assert!(again.stdout.contains("nothing to do"), "{}", again.stdout);
    let calls = std::fs::read_to_string(&log).unwrap();
    assert_eq!(calls.lines().count(), 1, "calls:\n{calls}");
}

fn deploy_serves_every_secret(e: &Env, want: &BTreeMap<String, Vec<u8>>) {
    let dry = e.run("deploy", &["--dry-run"]).ok();
    assert!(
        dry.stdout
            .contains(&format!("name: \"raqeem-{ENV}-jwt-secret-v1\"")),
        "{}",
        dry.stdout
    );
    let d = e.run("deploy", &["--timeout", "240"]).ok();
    assert!(d.stdout.contains("workloads rolled out"), "{}", d.stdout);
    for (app, names) in MOUNTS {
        let ps = pods(&e.ns, app);
        assert!(!ps.is_empty(), "no running pod for {app}");
        for (pod, ip) in ps {
            let body =
                get(&format!("{ip}:3000")).unwrap_or_else(|err| panic!("{app} pod {pod}: {err}"));
            let lines: Vec<&str> = body.lines().collect();
            let expect: Vec<String> = names.iter().map(|n| served_line(n, &want[*n])).collect();
            assert_eq!(
                lines, expect,
                "{app} pod {pod} serves other secrets or bytes"
            );
        }
    }
}

fn rotation_under_load(e: &Env) {
    let stop = Arc::new(AtomicBool::new(false));
    let ns = e.ns.clone();
    let flag = Arc::clone(&stop);
    // A bounded client: at most 3000 requests or 240 s, to the ready backend
    // pods by their IPs on the cluster's bridge (it follows the Endpoints
    // itself; the Service's own path: service_name_and_clusterip_through_a_rollout).
    let client = std::thread::spawn(move || {
        let (mut ok, mut failed, mut last) = (0u32, Vec::new(), String::new());
        let start = Instant::now();
        let mut ips = endpoints(&ns, "backend");
        let mut refreshed = Instant::now();
        let mut i = 0usize;
        while !flag.load(Ordering::SeqCst)
            && ok + (failed.len() as u32) < 3000
            && start.elapsed() < Duration::from_secs(240)
        {
            if refreshed.elapsed() > Duration::from_millis(250) {
                ips = endpoints(&ns, "backend");
                refreshed = Instant::now();
            }
            if ips.is_empty() {
                failed.push("no ready backend endpoint".to_string());
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            i += 1;
            match get(&format!("{}:3000", ips[i % ips.len()])) {
                Ok(body) => {
                    ok += 1;
                    last = body;
                }
                Err(err) => failed.push(err),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (ok, failed, last)
    });
    std::thread::sleep(Duration::from_secs(2));
    let old = env_value(e.repo, ENV, "JWT_SECRET");
    let (run, trace) = traced(
        e,
        &e.args(
            "rotate-secrets",
            &["--secret", "jwt_secret", "--timeout", "240"],
        ),
    );
    let run = run.ok();
    assert_no_values(e.repo, &trace, &run);
    let new = env_value(e.repo, ENV, "JWT_SECRET");
    assert_ne!(old, new);
    assert!(!run.all().contains(&new) && !run.all().contains(&old));
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    let (ok, failed, last) = client.join().unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the rotation: {:?}",
        failed.len(),
        ok as usize + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 20, "the client made only {ok} requests");
    assert!(
        last.contains(&served_line("jwt_secret", new.as_bytes())),
        "last answer is not the new value: {last}"
    );
    // A second rotation: v1 is pruned (keep 1 keeps v2 beside v3).
    settle(&e.ns, "backend", 2);
    let second = e
        .run(
            "rotate-secrets",
            &["--secret", "jwt_secret", "--timeout", "240"],
        )
        .ok();
    let names = kubectl_ok(&[
        "-n",
        &e.ns,
        "get",
        "secrets",
        "-l",
        "xtask.secret=jwt_secret",
        "-o",
        "name",
    ]);
    let mut names: Vec<&str> = names.lines().collect();
    names.sort();
    assert_eq!(
        names,
        [
            format!("secret/raqeem-{ENV}-jwt-secret-v2"),
            format!("secret/raqeem-{ENV}-jwt-secret-v3")
        ],
        "{}",
        second.stdout
    );
    let log = e.repo.read("deploy/audit-log.tsv");
    assert!(
        log.lines().any(|l| l.contains(&format!(
            "\t{ENV}\trotate-secrets\tupdate\tjwt_secret\tv3\t"
        )) && l.ends_with("\tk8s\tok")),
        "{log}"
    );
    let list = e.run("list-secrets", &[]).ok();
    assert!(
        list.stdout.contains("jwt_secret") && list.stdout.contains("deployment/backend@v3"),
        "{}",
        list.stdout
    );
}

fn removal_refused_while_in_use(e: &Env) {
    // The commands not traced elsewhere, traced here: list, verify, a dry run,
    // and the refusal itself.
    for args in [
        e.args("list-secrets", &[]),
        e.args("list-secrets", &["--json"]),
        e.args("verify-secrets", &[]),
        e.args("deploy", &["--dry-run"]),
        e.args(
            "rotate-secrets",
            &[
                "--secret",
                "jwt_secret",
                "--secret",
                "api_secret_key",
                "--dry-run",
            ],
        ),
    ] {
        let (run, trace) = traced(e, &args);
        assert_eq!(run.code, 0, "{args:?}: {}", run.all());
        assert_no_values(e.repo, &trace, &run);
    }
    // The stand-in pods have no psql or redis-cli: the hooks' check phase
    // says so, and `--all` is refused before anything changes (a dry run
    // included), the refusal traced like the rest.
    let env_before = e.repo.read(&format!("secrets/{ENV}.env"));
    let (run, trace) = traced(e, &e.args("rotate-secrets", &["--all", "--dry-run"]));
    assert_no_values(e.repo, &trace, &run);
    let run = run.fails();
    assert!(
        run.stderr
            .contains("answered the check that it cannot do its work here")
            && run.stderr.contains("Nothing was changed"),
        "{}",
        run.stderr
    );
    assert_eq!(e.repo.read(&format!("secrets/{ENV}.env")), env_before);
    let (r, trace) = traced(
        e,
        &e.args("remove-secrets", &["--secret", "jwt_secret", "--yes"]),
    );
    assert_no_values(e.repo, &trace, &r);
    let r = r.fails();
    assert!(
        r.stderr.contains("used by") && r.stderr.contains("deployment/backend"),
        "{}",
        r.stderr
    );
    assert!(
        kubectl(&[
            "-n",
            &e.ns,
            "get",
            "secret",
            &format!("raqeem-{ENV}-jwt-secret-v3")
        ])
        .status
        .success()
    );
}

fn failing_rollout_keeps_old_pods(e: &Env) {
    settle(&e.ns, "backend", 2);
    let before = pods(&e.ns, "backend");
    let r = e
        .run_with(
            "deploy",
            &["--timeout", "120"],
            &[("BACKEND_IMAGE", "xtask-no-such-image:never")],
        )
        .fails();
    assert!(
        r.stderr.contains("deployment/backend") && r.stderr.contains("ErrImageNeverPull"),
        "{}",
        r.stderr
    );
    for (pod, ip) in &before {
        get(&format!("{ip}:3000"))
            .unwrap_or_else(|err| panic!("old pod {pod} stopped serving: {err}"));
    }
    assert_eq!(
        endpoints(&e.ns, "backend").len(),
        before.len(),
        "the old pods left the endpoints"
    );
    // An image that starts and exits at once: a crash loop, named as such.
    if kubectl(&["get", "--raw", "/readyz"]).status.success()
        && Command::new("docker")
            .args(["image", "inspect", "k8stest/busybox:1.35"])
            .output()
            .is_ok_and(|o| o.status.success())
    {
        let r = e
            .run_with(
                "deploy",
                &["--timeout", "150"],
                &[("BACKEND_IMAGE", "k8stest/busybox:1.35")],
            )
            .fails();
        assert!(
            r.stderr.contains("deployment/backend") && r.stderr.contains("CrashLoopBackOff"),
            "{}",
            r.stderr
        );
        for (pod, ip) in &before {
            get(&format!("{ip}:3000"))
                .unwrap_or_else(|err| panic!("old pod {pod} stopped serving: {err}"));
        }
    }
}

/// Runs xtask under `strace -f -e trace=execve -v` and returns the trace.
fn traced(e: &Env, args: &[&str]) -> (Run, String) {
    let log = e.repo.path(&format!("strace-{}.log", unique()));
    let mut c = Command::new("strace");
    c.args(["-f", "-v", "-e", "trace=execve", "-s", "65536", "-o"])
        .arg(&log)
        .arg(env!("CARGO_BIN_EXE_xtask"))
        .args(args);
    c.current_dir(&e.repo.root)
        .env("CARGO_MANIFEST_DIR", e.repo.root.join("xtask"))
        .env("NO_COLOR", "1")
        .env("XTASK_IMAGE_PULL_POLICY", "Never");
    for img in [
        "POSTGRES_IMAGE",
        "REDIS_IMAGE",
        "BACKEND_IMAGE",
        "GRAFANA_IMAGE",
        "NGINX_IMAGE",
    ] {
        c.env(img, &e.image);
    }
    let run = Run::from(c.output().expect("strace runs (apt-get install strace)"));
    let trace = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert!(
        trace.contains("execve("),
        "strace recorded nothing: {}",
        run.stderr
    );
    (run, trace)
}

/// No value of the env file, nor its base64, appears in the trace or output.
fn assert_no_values(repo: &TempRepo, trace: &str, run: &Run) {
    let text = repo.read(&format!("secrets/{ENV}.env"));
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim_matches('\'');
        if v.len() < 12 || k.starts_with("SSL_") {
            continue;
        }
        for form in [v.to_string(), encode64(v.as_bytes())] {
            assert!(
                !trace.contains(&form),
                "{k} (or its base64) reached an argv or a child's environment"
            );
            assert!(!run.all().contains(&form), "{k} was printed");
        }
    }
}

fn encode64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            out.push(if i <= c.len() {
                A[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

fn decode64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| *c != b'=').collect();
    let mut out = Vec::new();
    for c in bytes.chunks(4) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(val(*b)) << (18 - 6 * i)));
        for i in 0..c.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// `store = "aws"`, `runtime = "k8s"`, `delivery = "fetch"`: deploy copies
/// the values from Secrets Manager into versioned Kubernetes Secrets, and
/// every pod reads every secret with the right bytes.
#[test]
fn aws_store_delivered_into_kubernetes_secrets() {
    let test = "aws_store_delivered_into_kubernetes_secrets";
    if !support::cluster_or_skip(test) || !support::docker_or_skip(test) {
        return;
    }
    if !moto_or_skip(test) {
        return;
    }
    let moto = Moto::start();
    let image = support::standin_image().to_string();
    support::load_into_cluster(&image);
    let id = unique();
    let ns = format!("xa-{id}");
    let pv = format!("xa-{id}");
    let dir = std::env::temp_dir().join(format!("xa-pv-{id}"));
    let _cleanup = Cleanup {
        ns: ns.clone(),
        pv: pv.clone(),
        dir: dir.clone(),
    };
    kubectl_ok(&["create", "namespace", &ns]);
    kubectl_ok(&["label", "namespace", &ns, "xtask-test=k8s-aws"]);
    make_labelled_volume(&ns, &pv, &dir, "k8s-aws");

    let repo = TempRepo::new();
    let m = repo.read("deploy/secrets.toml").replacen(
        &format!("[environments.{ENV}]\nbackend = \"swarm\""),
        &format!("[environments.{ENV}]\nstore = \"aws\"\nruntime = \"k8s\""),
        1,
    );
    assert!(
        m.contains("runtime = \"k8s\""),
        "the manifest changed shape"
    );
    repo.write("deploy/secrets.toml", &m);
    // A real pair: every plan checks that the key is the certificate's.
    let (cert, key, _) = support::tls_pair();
    repo.write("secrets/tls/cert.pem", cert);
    repo.write("secrets/tls/key.pem", key);
    repo.write(
        &format!("secrets/{ENV}.env"),
        "POSTGRES_USER=k8s-user-4711\nSSL_CERTIFICATE=tls/cert.pem\nSSL_PRIVATE_KEY=tls/key.pem\n",
    );
    let run = |args: &[&str]| {
        let mut c = repo.xtask(args);
        c.args(["--namespace", &ns]);
        for img in [
            "POSTGRES_IMAGE",
            "REDIS_IMAGE",
            "BACKEND_IMAGE",
            "GRAFANA_IMAGE",
            "NGINX_IMAGE",
        ] {
            c.env(img, &image);
        }
        c.env("XTASK_IMAGE_PULL_POLICY", "Never");
        moto.env(&mut c, &repo);
        Run::from(c.output().unwrap())
    };
    let setup = run(&["setup-secrets", ENV, "--generate-missing"]).ok();
    assert!(setup.stdout.contains("10 created"), "{}", setup.all());
    let d = run(&["deploy", ENV, "--timeout", "240"]).ok();
    assert!(
        d.stdout
            .contains("copies in the k8s runtime, read from the aws store")
            && d.stdout.contains("workloads rolled out"),
        "{}",
        d.all()
    );
    let want = expected(&repo);
    for (app, names) in MOUNTS {
        let ps = pods(&ns, app);
        assert!(!ps.is_empty(), "no running pod for {app}");
        for (pod, ip) in ps {
            let body =
                get(&format!("{ip}:3000")).unwrap_or_else(|err| panic!("{app} pod {pod}: {err}"));
            let lines: Vec<&str> = body.lines().collect();
            let expect: Vec<String> = names.iter().map(|n| served_line(n, &want[*n])).collect();
            assert_eq!(
                lines, expect,
                "{app} pod {pod} serves other secrets or bytes"
            );
        }
    }
    let name = format!("raqeem-{ENV}-jwt-secret-v1");
    let s: serde_json::Value = serde_json::from_str(&kubectl_ok(&[
        "-n", &ns, "get", "secret", &name, "-o", "json",
    ]))
    .unwrap();
    assert_eq!(
        decode64(s["data"]["jwt_secret"].as_str().unwrap()),
        env_value(&repo, ENV, "JWT_SECRET").into_bytes()
    );
    // A no-change redeploy writes no copy.
    let again = run(&["deploy", ENV, "--timeout", "240"]).ok();
    assert!(!again.stdout.contains("create "), "{}", again.all());
}

/// `kubectl -n NS apply --server-side -f -` of a manifest written here.
fn apply(ns: &str, doc: &str) {
    let mut c = Command::new("kubectl")
        .args([
            "-n",
            ns,
            "apply",
            "--server-side",
            "--field-manager=xtask-test",
            "-f",
            "-",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(doc.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "kubectl apply: {}\n{doc}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The test cluster's busybox (`.ci/k8s/up.sh` loads it), for client pods.
const BUSYBOX: &str = "k8stest/busybox:1.35";

/// A pod that only waits, to run clients in with `kubectl exec`.
fn client_pod(ns: &str) {
    apply(
        ns,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: client}}\nspec:\n  terminationGracePeriodSeconds: 0\n  automountServiceAccountToken: false\n  containers:\n  - name: client\n    image: {BUSYBOX}\n    imagePullPolicy: Never\n    command: [sleep, \"3600\"]\n"
        ),
    );
    kubectl_ok(&[
        "-n",
        ns,
        "wait",
        "--for=condition=Ready",
        "pod/client",
        "--timeout=90s",
    ]);
}

/// `kubectl exec client -- ARGS` in `ns`: (exit success, stdout).
fn in_client(ns: &str, args: &[&str]) -> (bool, String) {
    let mut a = vec!["-n", ns, "exec", "client", "--"];
    a.extend_from_slice(args);
    let o = kubectl(&a);
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

/// One HTTP GET from the client pod with busybox `nc` (its `wget`, static
/// glibc in a scratch image, crashes there): the body on a 200.
fn http_in_client(ns: &str, ip: &str, port: &str) -> Result<String, String> {
    let (_, out) = in_client(ns, &["sh", "-c", HTTP_GET, "get", ip, port]);
    match out.split_once("\r\n\r\n") {
        Some((head, body))
            if head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200") =>
        {
            Ok(body.to_string())
        }
        _ => Err(format!(
            "{ip}:{port}: {:?}",
            out.lines().next().unwrap_or("no answer")
        )),
    }
}

/// `GET /` to `$1:$2` with busybox `nc`; the whole answer on stdout.
const HTTP_GET: &str = r"printf 'GET / HTTP/1.0\r\nHost: x\r\n\r\n' | nc -w 2 $1 $2";

/// The addresses busybox `nslookup NAME` prints for the name (not the server's).
fn resolve_in_client(ns: &str, name: &str) -> Vec<String> {
    let (_, out) = in_client(ns, &["nslookup", name]);
    out.split("Name:")
        .skip(1)
        .flat_map(|answer| {
            answer
                .lines()
                .filter_map(|l| l.trim().strip_prefix("Address:"))
                .map(|a| a.trim().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The shipped stack's Services, from a pod in its namespace: every name
/// resolves through the cluster DNS (a ClusterIP Service to its ClusterIP,
/// the headless `postgres` to its pod), and the backend answers through
/// its ClusterIP, served by kube-proxy's rules.
fn stack_services_resolve(e: &Env, want: &BTreeMap<String, Vec<u8>>) {
    client_pod(&e.ns);
    for svc in ["backend", "grafana", "nginx", "redis", "postgres"] {
        let fqdn = format!("{svc}.{}.svc.cluster.local", e.ns);
        let ip = kubectl_ok(&[
            "-n",
            &e.ns,
            "get",
            "service",
            svc,
            "-o",
            "jsonpath={.spec.clusterIP}",
        ]);
        let expect: Vec<String> = if ip == "None" {
            pods(&e.ns, svc).into_iter().map(|(_, ip)| ip).collect()
        } else {
            vec![ip]
        };
        let got = resolve_in_client(&e.ns, &fqdn);
        assert_eq!(got, expect, "{fqdn} resolves elsewhere");
        // The short name, through the pod's search path.
        assert_eq!(resolve_in_client(&e.ns, svc), expect, "{svc} (short name)");
    }
    let ip = kubectl_ok(&[
        "-n",
        &e.ns,
        "get",
        "service",
        "backend",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let body = http_in_client(&e.ns, &ip, "3000")
        .unwrap_or_else(|err| panic!("backend through its ClusterIP: {err}"));
    let (_, names) = MOUNTS.iter().find(|(app, _)| *app == "backend").unwrap();
    let expect: Vec<String> = names.iter().map(|n| served_line(n, &want[*n])).collect();
    assert_eq!(body.lines().collect::<Vec<_>>(), expect);
    kubectl_ok(&["-n", &e.ns, "delete", "pod", "client", "--wait=true"]);
}

/// Deletes the Services test's namespace whatever happened.
struct SvcCleanup(String);

impl Drop for SvcCleanup {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "namespace", &self.0, "--wait=false"]);
    }
}

/// Deployment `web` (busybox httpd answering `VERSION HOSTNAME`) behind
/// Service `web` (port 80). A rolling update that never drops below the
/// replica count, readiness before traffic, and a preStop pause so a pod
/// leaves the Service's endpoints (and kube-proxy's rules) before it stops.
fn web(version: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: 8080, protocol: TCP}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  strategy: {{type: RollingUpdate, rollingUpdate: {{maxUnavailable: 0, maxSurge: 1}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 8
      containers:
      - name: web
        image: {BUSYBOX}
        imagePullPolicy: Never
        env: [{{name: VERSION, value: {version}}}]
        command: [sh, -c, 'mkdir -p /www && echo \"$VERSION $(hostname)\" > /www/index.html && exec httpd -f -p 8080 -h /www']
        ports: [{{name: http, containerPort: 8080, protocol: TCP}}]
        readinessProbe:
          tcpSocket: {{port: 8080}}
          periodSeconds: 1
        lifecycle:
          preStop:
            exec: {{command: [sleep, \"4\"]}}
"
    )
}

/// Requests from the client pod to `$1:80` (busybox `nc`, one connection
/// each), until /stop exists or 1500 were made: one line of counts at
/// the end, `v1`/`v2` counting which version answered.
const LOOP: &str = r#"i=0; ok=0; failed=0; v1=0; v2=0
while [ "$i" -lt 1500 ] && [ ! -e /stop ]; do
  i=$((i + 1))
  answer=$(printf 'GET / HTTP/1.0\r\nHost: x\r\n\r\n' | nc -w 2 "$1" 80 2>/dev/null)
  case "$answer" in
    "HTTP/1.1 200 OK"*) ok=$((ok + 1)) ;;
    *) failed=$((failed + 1)) ;;
  esac
  case "$answer" in
    *"
v1 "*) v1=$((v1 + 1)) ;;
    *"
v2 "*) v2=$((v2 + 1)) ;;
  esac
  sleep 0.05
done
echo "requests=$i ok=$ok failed=$failed v1=$v1 v2=$v2""#;

/// Services for real: a Deployment reached through its Service's name from
/// another pod (cluster DNS, then the ClusterIP through kube-proxy's rules),
/// and a rollout that moves every endpoint of the Service while a bounded
/// client in that pod keeps requesting: no request fails.
#[test]
fn service_name_and_clusterip_through_a_rollout() {
    let test = "service_name_and_clusterip_through_a_rollout";
    if !support::cluster_or_skip(test) {
        return;
    }
    let out = kubectl_ok(&[
        "get",
        "namespaces",
        "-l",
        "xtask-test=k8s-svc",
        "-o",
        "name",
    ]);
    for ns in out.lines() {
        let _ = kubectl(&["delete", ns, "--wait=false"]);
    }
    let ns = format!("xk-svc-{}", unique());
    let _cleanup = SvcCleanup(ns.clone());
    kubectl_ok(&["create", "namespace", &ns]);
    kubectl_ok(&["label", "namespace", &ns, "xtask-test=k8s-svc"]);
    apply(&ns, &web("v1"));
    client_pod(&ns);
    kubectl_ok(&[
        "-n",
        &ns,
        "rollout",
        "status",
        "deployment/web",
        "--timeout=120s",
    ]);

    // DNS: the Service's name, short and in full, is its ClusterIP.
    let vip = kubectl_ok(&[
        "-n",
        &ns,
        "get",
        "service",
        "web",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let octets: Vec<u8> = vip.split('.').filter_map(|o| o.parse().ok()).collect();
    assert!(
        octets.len() == 4 && octets[0] == 10 && (96..112).contains(&octets[1]),
        "ClusterIP {vip} is not in the Service range 10.96.0.0/12"
    );
    let fqdn = format!("web.{ns}.svc.cluster.local");
    assert_eq!(
        resolve_in_client(&ns, &fqdn),
        std::slice::from_ref(&vip),
        "{fqdn}"
    );
    assert_eq!(
        resolve_in_client(&ns, "web"),
        std::slice::from_ref(&vip),
        "web"
    );
    // Then the ClusterIP: both replicas answer behind it, once kube-proxy
    // has written the new Service's rules (its sync takes a moment).
    let start = Instant::now();
    while let Err(err) = http_in_client(&ns, &vip, "80") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the ClusterIP never answered: {err}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let body = http_in_client(&ns, &vip, "80").unwrap_or_else(|err| panic!("{err}"));
        assert!(body.starts_with("v1 "), "through {vip}: {body:?}");
        seen.insert(body.trim().to_string());
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "one replica answered: {seen:?}");

    // A rollout under load: every endpoint moves, no request fails.
    let before = endpoints(&ns, "web");
    assert_eq!(before.len(), 2, "{before:?}");
    let client = {
        let (ns, vip) = (ns.clone(), vip.clone());
        std::thread::spawn(move || in_client(&ns, &["sh", "-c", LOOP, "loop", &vip]))
    };
    std::thread::sleep(Duration::from_secs(3));
    let t0 = Instant::now();
    apply(&ns, &web("v2"));
    kubectl_ok(&[
        "-n",
        &ns,
        "rollout",
        "status",
        "deployment/web",
        "--timeout=180s",
    ]);
    let rolled = t0.elapsed();
    // Until the old pods are gone, then a little more traffic on the new ones.
    let start = Instant::now();
    while kubectl_ok(&["-n", &ns, "get", "pods", "-l", "app=web", "-o", "name"])
        .lines()
        .count()
        > 2
    {
        assert!(start.elapsed() < Duration::from_secs(60), "old pods stay");
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(3));
    let (stopped, _) = in_client(&ns, &["touch", "/stop"]);
    assert!(stopped, "cannot stop the client loop");
    let (_, counts) = client.join().unwrap();
    let after = endpoints(&ns, "web");
    // Straight to stderr: libtest captures `eprintln!` of a passing test.
    let _ = writeln!(
        std::io::stderr(),
        "{test}: rollout {rolled:.1?}; {}",
        counts.trim()
    );
    let count = |k: &str| -> u32 {
        counts
            .split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {counts:?}"))
    };
    assert_eq!(
        count("failed"),
        0,
        "requests failed during the rollout: {counts}"
    );
    assert!(count("ok") > 50, "too few requests: {counts}");
    assert!(count("v1") > 0 && count("v2") > 0, "{counts}");
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(
        after.iter().all(|ip| !before.contains(ip)),
        "the endpoints did not move: {before:?} -> {after:?}"
    );
    let body = http_in_client(&ns, &vip, "80").unwrap_or_else(|err| panic!("{err}"));
    assert!(body.starts_with("v2 "), "after the rollout: {body:?}");
}
