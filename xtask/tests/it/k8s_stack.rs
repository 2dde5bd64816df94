//! The stack the project ships, on the real Kubernetes cluster in `KUBECONFIG`:
//! `deploy/k8s/*.yaml` and `deploy/secrets.toml` as they are, with only the
//! image names and the pull policy given through the variables the manifests
//! read (`POSTGRES_IMAGE`, `REDIS_IMAGE`, `NGINX_IMAGE`, `BACKEND_IMAGE`,
//! `GRAFANA_IMAGE`, `XTASK_IMAGE_PULL_POLICY`), on real PostgreSQL 15, Redis 7
//! and nginx from Debian (`.ci/images.sh`; the backend image is the busybox CGI
//! that opens a new PostgreSQL and a new Redis connection per request, and
//! stands in for grafana). The Kubernetes counterpart of `stack.rs`.
//!
//! A load client in a pod of the stack's namespace sends requests to the nginx
//! Service during each rotation (every request a new TLS connection, proxied
//! to the backend Service, a new PostgreSQL and a new Redis connection) and
//! none may fail. Afterwards the old credentials are refused and the new ones
//! accepted, nginx serves the new certificate, every backend pod reads the new
//! values, and no secret value was on the command line of any process of this
//! host (the cluster's containers are processes of this host) before, during
//! and after. Prints the rotation times against `kubectl rollout restart` of
//! the same workloads, and each hook phase's time.
//!
//! The second test breaks a rotation half-way (new backend pods that cannot
//! start) and shows that the same command, run again, finishes it.

use crate::support;
use support::servers::cluster::{kubectl, kubectl_ok};

use std::{
    collections::BTreeMap,
    io::{BufRead, Read, Write},
    path::Path,
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use support::{Run, TempRepo, source_root, unique};

const ENV: &str = "production";
const BASE: &str = "xtask-stack-base:bookworm";
/// The test cluster's busybox (`.ci/k8s/up.sh` loads it): exits at once as a
/// backend, so its pods crash-loop.
const CRASHING: &str = "k8stest/busybox:1.35";

/// `kubectl ARGS` with `input` on its stdin.
fn kubectl_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut c = Command::new("kubectl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    let _ = stdin.write_all(input);
    drop(stdin);
    c.wait_with_output().unwrap()
}

fn postgres_image() -> String {
    format!(
        "xtask-stack-postgres:{}",
        support::images::stack_image_tag()
    )
}

fn backend_image() -> String {
    format!("xtask-stack-backend:{}", support::images::stack_image_tag())
}

/// Builds the images with `.ci/images.sh` when one is missing, and loads them
/// into the cluster's containerd (pods run them with pull policy Never).
fn ensure_images() {
    let images = [BASE.to_string(), postgres_image(), backend_image()];
    let have = |i: &str| {
        Command::new("docker")
            .args(["image", "inspect", i])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !images.iter().all(|i| have(i)) {
        eprintln!("building the stack images with .ci/images.sh (a few minutes, once)");
        let st = Command::new("bash")
            .arg(source_root().join(".ci/images.sh"))
            .status()
            .unwrap();
        assert!(st.success(), ".ci/images.sh failed");
    }
    for i in &images {
        support::load_into_cluster(i);
    }
}

/// Every value a process must never show: the env file's values (not the
/// user name, which PostgreSQL puts in each connection's process title) and
/// the base64 lines of the PEM files it names.
fn needles_of(env: &BTreeMap<String, String>, secrets_dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in env {
        if k == "POSTGRES_USER" {
            continue;
        }
        if k.starts_with("SSL_") {
            let pem = std::fs::read_to_string(secrets_dir.join(v)).unwrap_or_default();
            out.extend(
                pem.lines()
                    .filter(|l| l.len() >= 40 && !l.starts_with("-----"))
                    .map(String::from),
            );
        } else if v.len() >= 8 {
            out.push(v.clone());
        }
    }
    out
}

fn random_value(len: usize) -> String {
    let mut buf = vec![0u8; len];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut buf)
        .unwrap();
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    buf.iter()
        .map(|b| A[*b as usize % A.len()] as char)
        .collect()
}

/// A new self-signed EC pair `NAME.crt`/`NAME.key` in `dir`, written by openssl.
fn new_pair(dir: &Path, name: &str) {
    let key = dir.join(format!("{name}.key"));
    let crt = dir.join(format!("{name}.crt"));
    let st = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj"])
        .arg(format!("/CN=k8s-stack-test-{name}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "openssl req failed");
}

fn fingerprint(crt: &Path) -> String {
    let o = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(crt)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn sha256(v: &str) -> String {
    support::sha256_hex(v.as_bytes())
}

/// One deployment of the shipped stack in its own namespace, from a
/// temporary copy of the repository. Dropping it deletes the namespace and
/// the volume, also when the test fails.
struct Stack {
    repo: TempRepo,
    project: String,
    ns: String,
    pv: String,
    pv_dir: std::path::PathBuf,
    /// In the environment of every run of the tool (a Vault's address).
    extra: Vec<(String, String)>,
}

impl Stack {
    fn new() -> Stack {
        Stack::new_on("backend = \"k8s\"", Vec::new())
    }

    /// The stack with production's store and runtime given by `backend`
    /// (the lines after `[environments.production]`), and `extra` in the
    /// environment of every run of the tool.
    fn new_on(backend: &str, extra: Vec<(String, String)>) -> Stack {
        let repo = TempRepo::new();
        let id = unique();
        let project = format!("xks{}", &id[id.len().saturating_sub(9)..]);
        let ns = format!("{project}-{ENV}");
        let manifest = repo.read("deploy/secrets.toml");
        let manifest = manifest
            .replacen(
                "project = \"raqeem\"",
                &format!("project = \"{project}\""),
                1,
            )
            .replacen(
                "[environments.production]\nbackend = \"swarm\"",
                &format!("[environments.production]\n{backend}"),
                1,
            );
        assert!(
            manifest.contains(&project)
                && manifest.contains(&format!("[environments.production]\n{backend}")),
            "the test's manifest edit no longer applies"
        );
        repo.write("deploy/secrets.toml", &manifest);
        let pv_dir = std::env::temp_dir().join(format!("xks-pv-{id}"));
        let s = Stack {
            repo,
            extra,
            pv: format!("{project}-pg"),
            project,
            ns,
            pv_dir,
        };
        kubectl_ok(&["create", "namespace", &s.ns]);
        kubectl_ok(&["label", "namespace", &s.ns, "xtask-test=k8s-stack"]);
        s.make_volume();
        s
    }

    /// A hostPath volume bound in advance to postgres's claim (the test
    /// cluster has no provisioner).
    /// hostPath volumes bound in advance to the claims of postgres and redis
    /// (the test cluster has no provisioner); redis's is open to its own user
    /// (the kubelet applies no fsGroup to a hostPath volume).
    fn make_volume(&self) {
        use std::os::unix::fs::PermissionsExt;
        for (name, claim, dir) in [
            (self.pv.clone(), "data-postgres-0", self.pv_dir.clone()),
            (
                format!("{}-redis", self.pv),
                "data-redis-0",
                self.pv_dir.with_extension("redis"),
            ),
        ] {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
            let doc = format!(
                r#"{{"apiVersion":"v1","kind":"PersistentVolume","metadata":{{"name":"{name}","labels":{{"xtask-test":"k8s-stack"}}}},
"spec":{{"capacity":{{"storage":"1Gi"}},"accessModes":["ReadWriteOnce"],"persistentVolumeReclaimPolicy":"Retain",
"hostPath":{{"path":"{}"}},"claimRef":{{"namespace":"{}","name":"{claim}"}}}}}}"#,
                dir.display(),
                self.ns
            );
            let o = kubectl_stdin(
                &[
                    "apply",
                    "--server-side",
                    "--field-manager=xtask-test",
                    "-f",
                    "-",
                ],
                doc.as_bytes(),
            );
            assert!(
                o.status.success(),
                "cannot create the volume: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }

    /// The real binary in the copy, with the stack's images.
    fn cmd(&self, args: &[&str], envs: &[(&str, &str)]) -> Command {
        let mut c = self.repo.xtask(args);
        let (pg, backend) = (postgres_image(), backend_image());
        for (k, v) in [
            ("POSTGRES_IMAGE", pg.as_str()),
            ("REDIS_IMAGE", BASE),
            ("NGINX_IMAGE", BASE),
            ("BACKEND_IMAGE", backend.as_str()),
            ("GRAFANA_IMAGE", backend.as_str()),
            ("XTASK_IMAGE_PULL_POLICY", "Never"),
        ] {
            c.env(k, v);
        }
        for (k, v) in &self.extra {
            c.env(k, v);
        }
        for (k, v) in envs {
            c.env(k, v);
        }
        c
    }

    fn xtask(&self, args: &[&str]) -> Run {
        Run::from(self.cmd(args, &[]).output().unwrap())
    }

    /// Runs xtask, timing its output lines: the run, its whole time, and
    /// Kubernetes' part: from the start of the workloads' apply (the tool's
    /// `applying` line; kubectl prints what it applied only at its end) to
    /// `rolled out`, as Swarm's part starts at its first `Updating service`.
    fn xtask_timed(&self, args: &[&str], envs: &[(&str, &str)]) -> (Run, Duration, Duration) {
        let mut c = self.cmd(args, envs);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let start = Instant::now();
        let mut child = c.spawn().unwrap();
        let mut err = child.stderr.take().unwrap();
        let errs = thread::spawn(move || {
            let mut t = String::new();
            let _ = err.read_to_string(&mut t);
            t
        });
        let (mut first, mut done, mut out) = (None, None, String::new());
        for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            if first.is_none() && line.contains(": applying ") {
                first = Some(start.elapsed());
            }
            if line.contains("workloads rolled out in") {
                done = Some(start.elapsed());
            }
            out.push_str(&line);
            out.push('\n');
        }
        let status = child.wait().unwrap();
        let total = start.elapsed();
        let k8s = match (first, done) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => Duration::ZERO,
        };
        let run = Run {
            code: status.code().unwrap_or(-1),
            stdout: out,
            stderr: errs.join().unwrap(),
        };
        (run, total, k8s)
    }

    /// The env file: generated values, and the first TLS pair.
    fn write_env(&self) {
        let tls = self.repo.path("secrets/tls");
        std::fs::create_dir_all(&tls).unwrap();
        new_pair(&tls, "a");
        let v = || random_value(40);
        let text = format!(
            "POSTGRES_USER={p}_{ENV}\nPOSTGRES_PASSWORD={}\nBETTER_AUTH_SECRET={}\nREDIS_PASSWORD={}\nJWT_SECRET={}\nAPI_SECRET_KEY={}\nGRAFANA_ADMIN_PASSWORD={}\nSSL_CERTIFICATE=tls/a.crt\nSSL_PRIVATE_KEY=tls/a.key\n",
            v(),
            v(),
            v(),
            random_value(64),
            v(),
            v(),
            p = self.project
        );
        self.repo.write(&format!("secrets/{ENV}.env"), &text);
    }

    fn env(&self) -> BTreeMap<String, String> {
        support::env_map(&self.repo.read(&format!("secrets/{ENV}.env")))
    }

    fn set_env(&self, key: &str, value: &str) {
        let text = self.repo.read(&format!("secrets/{ENV}.env"));
        let text: Vec<String> = text
            .lines()
            .map(|l| match l.split_once('=') {
                Some((k, _)) if k == key => format!("{k}={value}"),
                _ => l.to_string(),
            })
            .collect();
        self.repo
            .write(&format!("secrets/{ENV}.env"), &(text.join("\n") + "\n"));
    }

    fn needles(&self) -> Vec<String> {
        needles_of(&self.env(), &self.repo.path("secrets"))
    }

    /// setup-secrets, deploy, and the client pod.
    fn deploy(&self) {
        self.write_env();
        self.xtask(&["setup-secrets", ENV, "--generate-missing"])
            .ok();
        let start = Instant::now();
        let d = self.xtask(&["deploy", ENV, "--timeout", "400"]).ok();
        assert!(d.stdout.contains("workloads rolled out"), "{}", d.stdout);
        println!(
            "deployed the shipped stack in namespace {} in {:.1}s",
            self.ns,
            start.elapsed().as_secs_f64()
        );
        self.client_pod();
    }

    /// A pod of the base image that only waits, with load.sh and check.sh
    /// from a ConfigMap: the load client and the checks run in it.
    fn client_pod(&self) {
        let data = source_root().join("xtask/tests/data/stack");
        kubectl_ok(&[
            "-n",
            &self.ns,
            "create",
            "configmap",
            "xtask-test-scripts",
            &format!("--from-file=load.sh={}", data.join("load.sh").display()),
            &format!("--from-file=check.sh={}", data.join("check.sh").display()),
        ]);
        let pod = format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"client"}},"spec":{{
"terminationGracePeriodSeconds":0,"automountServiceAccountToken":false,"enableServiceLinks":false,
"containers":[{{"name":"client","image":"{BASE}","imagePullPolicy":"Never","command":["sleep","3600"],
"volumeMounts":[{{"name":"scripts","mountPath":"/scripts","readOnly":true}}]}}],
"volumes":[{{"name":"scripts","configMap":{{"name":"xtask-test-scripts"}}}}]}}}}"#
        );
        let o = kubectl_stdin(
            &[
                "-n",
                &self.ns,
                "apply",
                "--server-side",
                "--field-manager=xtask-test",
                "-f",
                "-",
            ],
            pod.as_bytes(),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        kubectl_ok(&[
            "-n",
            &self.ns,
            "wait",
            "--for=condition=Ready",
            "pod/client",
            "--timeout=90s",
        ]);
    }

    /// check.sh MODE in the client pod; `creds` reach it on stdin (`key=value`
    /// lines, written by bash builtins into a 0700 folder), never on argv.
    fn check(&self, mode: &str, creds: &[(&str, &str)]) -> (bool, String) {
        let input: String = creds.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        let script = r#"umask 077; d=$(mktemp -d); trap 'rm -rf "$d"' EXIT
while IFS= read -r l; do printf '%s' "${l#*=}" >"$d/${l%%=*}"; done
CREDS=$d NGINX=nginx bash /scripts/check.sh "$1""#;
        let o = kubectl_stdin(
            &[
                "-n", &self.ns, "exec", "-i", "client", "--", "bash", "-c", script, "check", mode,
            ],
            input.as_bytes(),
        );
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).trim().to_string(),
        )
    }

    fn pg_accepts(&self, user: &str, password: &str) -> (bool, String) {
        let db = format!("{}_{ENV}", self.project);
        self.check("pg", &[("db", &db), ("user", user), ("password", password)])
    }

    fn redis_accepts(&self, password: &str) -> (bool, String) {
        self.check("redis", &[("redis", password)])
    }

    fn served_fingerprint(&self) -> String {
        self.check("tls", &[]).1
    }

    /// Running pods of one workload that are not being deleted.
    fn pods(&self, app: &str) -> Vec<String> {
        let out = kubectl_ok(&[
            "-n",
            &self.ns,
            "get",
            "pods",
            "-l",
            &format!("app.kubernetes.io/name={app}"),
            "--field-selector=status.phase=Running",
            "-o",
            "go-template={{range .items}}{{if not .metadata.deletionTimestamp}}{{.metadata.name}}{{\"\\n\"}}{{end}}{{end}}",
        ]);
        out.lines().map(str::to_string).collect()
    }

    /// `kind/name=generation` of every Deployment and StatefulSet.
    fn generations(&self) -> BTreeMap<String, String> {
        let out = kubectl_ok(&[
            "-n",
            &self.ns,
            "get",
            "deployments,statefulsets",
            "-o",
            "jsonpath={range .items[*]}{.kind}/{.metadata.name}={.metadata.generation}{\"\\n\"}{end}",
        ]);
        out.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect()
    }

    /// Waits until every workload has its desired pods and none terminating.
    fn settle(&self) {
        let start = Instant::now();
        loop {
            let all = kubectl_ok(&[
                "-n",
                &self.ns,
                "get",
                "pods",
                "-l",
                "app.kubernetes.io/managed-by=cargo-xtask",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
            ]);
            let settled = all.lines().count() == 7
                && all.lines().all(|l| {
                    l.split_whitespace().collect::<Vec<_>>()
                        == [l.split_whitespace().next().unwrap_or(""), "Running"]
                });
            if settled {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "the stack did not settle:\n{all}"
            );
            thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = kubectl(&[
            "delete",
            "namespace",
            &self.ns,
            "--wait=true",
            "--timeout=120s",
        ]);
        for pv in [self.pv.clone(), format!("{}-redis", self.pv)] {
            let _ = kubectl(&["delete", "pv", &pv, "--wait=false"]);
        }
        let _ = std::fs::remove_dir_all(&self.pv_dir);
        let _ = std::fs::remove_dir_all(self.pv_dir.with_extension("redis"));
    }
}

/// The bounded load client: load.sh in the client pod through `kubectl exec`
/// (at most 20000 requests or 400 s), against the nginx Service.
struct Load {
    ns: String,
    child: Child,
}

impl Load {
    fn start(s: &Stack) -> Load {
        let child = Command::new("kubectl")
            .args(["-n", &s.ns, "exec", "client", "--", "bash", "-c"])
            .arg("rm -f /tmp/stop; URL=https://nginx/cgi-bin/check MAX_SECONDS=400 MAX_REQUESTS=20000 exec bash /scripts/load.sh")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Let it make its first requests before the rotation begins.
        thread::sleep(Duration::from_secs(2));
        Load {
            ns: s.ns.clone(),
            child,
        }
    }

    /// Stops the client; returns (requests, ok, failed, failures shown).
    fn finish(self) -> (u64, u64, u64, String) {
        kubectl_ok(&["-n", &self.ns, "exec", "client", "--", "touch", "/tmp/stop"]);
        let o = self.child.wait_with_output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        let line = out
            .lines()
            .find(|l| l.starts_with("requests="))
            .unwrap_or_else(|| panic!("no report from the load client:\n{out}{err}"));
        let field = |k: &str| -> u64 {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(&format!("{k}=")))
                .unwrap()
                .parse()
                .unwrap()
        };
        (field("requests"), field("ok"), field("failed"), err)
    }
}

/// Reads `/proc/*/cmdline` of every process of this host (the cluster's
/// containers included): (processes read, findings). A finding names the
/// process, never the value.
fn scan_host(needles: &[String]) -> (usize, Vec<String>, bool) {
    let mut seen = 0;
    let mut bad = Vec::new();
    let (mut redis, mut httpd) = (false, false);
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if raw.is_empty() {
            continue; // kernel threads
        }
        seen += 1;
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        redis |= cmd.starts_with("redis-server");
        httpd |= cmd.starts_with("httpd -f -p 3000");
        if needles.iter().any(|n| cmd.contains(n.as_str())) {
            let prog = cmd.split_whitespace().next().unwrap_or("?").to_string();
            bad.push(format!(
                "pid {pid} ({prog}): a secret value on its command line"
            ));
        }
    }
    (seen, bad, redis && httpd)
}

/// Scans in a loop while a rotation runs, re-reading the env file's values.
struct Scanner {
    stop: Arc<AtomicBool>,
    found: Arc<Mutex<(usize, usize, Vec<String>)>>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Scanner {
    fn start(s: &Stack) -> Scanner {
        let stop = Arc::new(AtomicBool::new(false));
        let found = Arc::new(Mutex::new((0, 0, Vec::new())));
        let env_path = s.repo.path(&format!("secrets/{ENV}.env"));
        let dir = s.repo.path("secrets");
        let (s2, f2) = (stop.clone(), found.clone());
        let handle = thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                let env = support::env_map(&std::fs::read_to_string(&env_path).unwrap_or_default());
                let (n, bad, _) = scan_host(&needles_of(&env, &dir));
                let mut f = f2.lock().unwrap();
                f.0 += 1;
                f.1 += n;
                f.2.extend(bad);
                drop(f);
                thread::sleep(Duration::from_millis(300));
            }
        });
        Scanner {
            stop,
            found,
            handle: Some(handle),
        }
    }

    /// (scans, processes read, findings)
    fn finish(mut self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
        self.found.lock().unwrap().clone()
    }
}

/// One timed rotation under load with the command-line scanner running.
struct Case {
    label: String,
    requests: u64,
    ok: u64,
    failed: u64,
    tool: Duration,
    /// From the workloads' apply to `rolled out`: Kubernetes' part.
    k8s: Duration,
    workloads: Vec<String>,
    hooks: Vec<String>,
}

/// Runs `rotate-secrets ENV ARGS --timeout 300` under load; the run is
/// returned whatever its outcome, with the load and scan results.
fn rotate_loaded(
    s: &Stack,
    label: &str,
    args: &[&str],
    envs: &[(&str, &str)],
) -> (Run, Case, String) {
    let before = s.generations();
    let load = Load::start(s);
    let scanner = Scanner::start(s);
    let mut full = vec!["rotate-secrets", ENV];
    full.extend(args);
    if !args.contains(&"--timeout") {
        full.extend(["--timeout", "300"]);
    }
    let (run, tool, k8s) = s.xtask_timed(&full, envs);
    let (scans, procs, bad) = scanner.finish();
    let (requests, ok, failed, failures) = load.finish();
    println!("{label}: requests={requests} ok={ok} failed={failed}");
    println!("{label}: {scans} command-line scans of {procs} host processes during the rotation");
    assert!(bad.is_empty(), "{label}: {bad:?}");
    assert!(
        scans >= 2 && procs > 40 * scans,
        "{label}: too few processes scanned ({procs} in {scans} scans)"
    );
    let after = s.generations();
    let workloads: Vec<String> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect();
    let hooks: Vec<String> = run
        .stdout
        .lines()
        .filter(|l| l.contains("hook done in"))
        .map(str::to_string)
        .collect();
    for h in &hooks {
        println!("{label}: {h}");
    }
    let case = Case {
        label: label.to_string(),
        requests,
        ok,
        failed,
        tool,
        k8s,
        workloads,
        hooks,
    };
    (run, case, failures)
}

/// A rotation that must succeed with no failed request.
fn rotate_under_load(s: &Stack, label: &str, args: &[&str]) -> Case {
    s.settle();
    let (run, case, failures) = rotate_loaded(s, label, args, &[]);
    let run = run.ok();
    assert_eq!(
        case.failed,
        0,
        "{label}: failed requests:\n{failures}\n{}",
        run.all()
    );
    assert!(
        case.requests > 0 && case.ok == case.requests,
        "{label}: no requests were made"
    );
    case
}

/// Kubernetes' own restart of the same workloads: `kubectl rollout restart`,
/// then `kubectl rollout status` of each (the first figure), then until no
/// old pod is left terminating (the second): the end the tool waits for,
/// since an old pod serves with the old credential through its `preStop` and
/// grace period, and the after hooks revoke that credential.
fn restart(s: &Stack, workloads: &[String]) -> (Duration, Duration) {
    if workloads.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    s.settle();
    let start = Instant::now();
    let mut args = vec!["-n", s.ns.as_str(), "rollout", "restart"];
    args.extend(workloads.iter().map(String::as_str));
    kubectl_ok(&args);
    for w in workloads {
        kubectl_ok(&["-n", &s.ns, "rollout", "status", w, "--timeout=300s"]);
    }
    let rolled = start.elapsed();
    loop {
        let leaving = kubectl_ok(&[
            "-n",
            &s.ns,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/managed-by=cargo-xtask",
            "-o",
            "jsonpath={range .items[*]}{.metadata.deletionTimestamp}{\"\\n\"}{end}",
        ]);
        if leaving.lines().all(|l| l.trim().is_empty()) {
            return (rolled, start.elapsed());
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "the restarted pods did not drain:\n{leaving}"
        );
        thread::sleep(Duration::from_millis(250));
    }
}

fn figures(s: &Stack, cases: &[Case]) {
    let rows: Vec<((Duration, Duration), &Case)> = cases
        .iter()
        .map(|c| (restart(s, &c.workloads), c))
        .collect();
    println!("\nKubernetes v1.34 (the test cluster), namespace {}:", s.ns);
    println!(
        "{:<32} {:>8} {:>6} {:>6}  {:>8} {:>8} {:>8} {:>7}  {:>8} {:>8}  workloads",
        "CASE", "REQUESTS", "OK", "FAILED", "ROTATE", "RESTART", "DRAINED", "DIFF", "K8S", "OWN"
    );
    for ((rolled, drained), c) in rows {
        let diff = c.tool.as_secs_f64() - drained.as_secs_f64();
        let own = c.tool.as_secs_f64() - c.k8s.as_secs_f64();
        println!(
            "{:<32} {:>8} {:>6} {:>6}  {:>7.2}s {:>7.2}s {:>7.2}s {:>+6.2}s  {:>7.2}s {:>7.2}s  {}",
            c.label,
            c.requests,
            c.ok,
            c.failed,
            c.tool.as_secs_f64(),
            rolled.as_secs_f64(),
            drained.as_secs_f64(),
            diff,
            c.k8s.as_secs_f64(),
            own,
            c.workloads.join(",")
        );
        for h in &c.hooks {
            println!("    {h}");
        }
    }
    println!(
        "ROTATE: rotate-secrets from start to end; RESTART: kubectl rollout restart of the same workloads, then rollout status of each; DRAINED: RESTART until no old pod is left terminating (the end the tool waits for before its after hooks); DIFF: ROTATE - DRAINED; K8S: ROTATE's part from the workloads' apply to rolled out; OWN: the rest (checks, hooks, new versions, pruning)"
    );
}

/// Every backend pod reads the new values from /run/secrets (hashes only).
fn check_backends_read(s: &Stack, env: &BTreeMap<String, String>) {
    let pods = s.pods("backend");
    assert_eq!(pods.len(), 2, "two backend pods: {pods:?}");
    for pod in &pods {
        for (file, key) in [
            ("postgres_password", "POSTGRES_PASSWORD"),
            ("redis_password", "REDIS_PASSWORD"),
            ("jwt_secret", "JWT_SECRET"),
        ] {
            let out = kubectl_ok(&[
                "-n",
                &s.ns,
                "exec",
                pod,
                "--",
                "sha256sum",
                &format!("/run/secrets/{file}"),
            ]);
            assert_eq!(
                out.split_whitespace().next().unwrap_or_default(),
                sha256(&env[key]),
                "backend pod {pod} reads {file}"
            );
        }
    }
    println!("both backend pods read the new values");
}

fn assert_clean_scan(when: &str, s: &Stack) -> usize {
    let (seen, bad, stack_seen) = scan_host(&s.needles());
    assert!(bad.is_empty(), "{when}: {bad:?}");
    assert!(seen > 40, "too few processes seen: {seen}");
    assert!(
        stack_seen,
        "{when}: the stack's redis-server and httpd were not among the {seen} processes read"
    );
    seen
}

fn gate(test: &str) -> bool {
    support::cluster_or_skip(test) && support::docker_or_skip(test)
}

/// The manifests carry copies of deploy/postgres/alternating-roles.sh and
/// deploy/redis/start.sh in ConfigMaps (each dollar sign doubled for deploy's
/// rendering): the copies must be the scripts.
#[test]
fn the_manifests_carry_the_shipped_scripts() {
    for (yaml, script) in [
        (
            "deploy/k8s/postgres.yaml",
            "deploy/postgres/alternating-roles.sh",
        ),
        ("deploy/k8s/redis.yaml", "deploy/redis/start.sh"),
    ] {
        let yaml = std::fs::read_to_string(source_root().join(yaml)).unwrap();
        let script = std::fs::read_to_string(source_root().join(script)).unwrap();
        let copy: String = script
            .replace('$', "$$")
            .lines()
            .map(|l| {
                if l.is_empty() {
                    "\n".to_string()
                } else {
                    format!("    {l}\n")
                }
            })
            .collect();
        assert!(yaml.contains(&copy), "the copy of {script:.40}... differs");
    }
}

#[test]
fn shipped_k8s_stack_rotates_every_secret_with_no_failed_request() {
    if !gate("shipped_k8s_stack_rotates_every_secret_with_no_failed_request") {
        return;
    }
    let _one = support::heavy_lock();
    ensure_images();
    let s = Stack::new();
    s.deploy();
    let env = s.env();
    let (ok, why) = s.pg_accepts(&env["POSTGRES_USER"], &env["POSTGRES_PASSWORD"]);
    assert!(ok, "PostgreSQL refuses the deployed credentials: {why}");
    assert!(s.redis_accepts(&env["REDIS_PASSWORD"]).0);
    let before_scan = assert_clean_scan("before any rotation", &s);
    let mut cases = Vec::new();

    // The TLS pair: a new certificate alone does not match the key and is refused.
    let tls = s.repo.path("secrets/tls");
    new_pair(&tls, "b");
    s.set_env("SSL_CERTIFICATE", "tls/b.crt");
    let refused = s
        .xtask(&["rotate-secrets", ENV, "--secret", "ssl_certificate"])
        .fails();
    assert!(
        refused
            .all()
            .contains("ssl_private_key is not the private key of ssl_certificate"),
        "{}",
        refused.all()
    );
    assert_eq!(
        s.served_fingerprint(),
        fingerprint(&tls.join("a.crt")),
        "the refused certificate changed nothing"
    );
    s.set_env("SSL_PRIVATE_KEY", "tls/b.key");
    cases.push(rotate_under_load(
        &s,
        "ssl_certificate+ssl_private_key",
        &["--secret", "ssl_certificate", "--secret", "ssl_private_key"],
    ));
    s.settle();
    for _ in 0..4 {
        assert_eq!(
            s.served_fingerprint(),
            fingerprint(&tls.join("b.crt")),
            "nginx serves the new certificate"
        );
    }

    let old = s.env();
    cases.push(rotate_under_load(
        &s,
        "postgres_password",
        &["--secret", "postgres_password"],
    ));
    let new = s.env();
    assert_ne!(old["POSTGRES_PASSWORD"], new["POSTGRES_PASSWORD"]);
    let (ok, why) = s.pg_accepts(&new["POSTGRES_USER"], &new["POSTGRES_PASSWORD"]);
    assert!(ok, "new PostgreSQL credentials: {why}");
    let (ok, why) = s.pg_accepts(&old["POSTGRES_USER"], &old["POSTGRES_PASSWORD"]);
    assert!(
        !ok && why.contains("password authentication failed"),
        "old PostgreSQL credentials: {why}"
    );

    let old = s.env();
    cases.push(rotate_under_load(
        &s,
        "redis_password",
        &["--secret", "redis_password"],
    ));
    let new = s.env();
    assert!(s.redis_accepts(&new["REDIS_PASSWORD"]).0);
    let (ok, why) = s.redis_accepts(&old["REDIS_PASSWORD"]);
    assert!(
        !ok && why.contains("WRONGPASS"),
        "old Redis password: {why}"
    );

    let old = s.env();
    cases.push(rotate_under_load(&s, "--all", &["--all"]));
    let new = s.env();
    for k in [
        "POSTGRES_PASSWORD",
        "REDIS_PASSWORD",
        "JWT_SECRET",
        "GRAFANA_ADMIN_PASSWORD",
    ] {
        assert_ne!(old[k], new[k], "{k} rotated");
    }
    assert!(
        !s.pg_accepts(&old["POSTGRES_USER"], &old["POSTGRES_PASSWORD"])
            .0
    );
    assert!(
        s.pg_accepts(&new["POSTGRES_USER"], &new["POSTGRES_PASSWORD"])
            .0
    );
    assert!(!s.redis_accepts(&old["REDIS_PASSWORD"]).0);
    assert!(s.redis_accepts(&new["REDIS_PASSWORD"]).0);
    s.settle();
    check_backends_read(&s, &new);
    check_grafana(&s, &new["GRAFANA_ADMIN_PASSWORD"]);

    let after_scan = assert_clean_scan("after the rotations", &s);
    println!(
        "command lines: {before_scan} host processes before, {after_scan} after the rotations: no secret value"
    );
    figures(&s, &cases);
}

/// Grafana (the backend image's stand-in) is not restarted by a rotation (it
/// keeps the version it started with); the hook ran `grafana cli` in its pod
/// with the new password on stdin (the stand-in stores its SHA-256).
fn check_grafana(s: &Stack, password: &str) {
    let pods = s.pods("grafana");
    let pod = pods.first().expect("a running grafana pod");
    let stored = kubectl_ok(&[
        "-n",
        &s.ns,
        "exec",
        pod,
        "--",
        "cat",
        "/var/lib/grafana/admin-password.sha256",
    ]);
    assert_eq!(
        stored.trim(),
        sha256(password),
        "grafana cli got the new password on stdin"
    );
    println!("grafana: its CLI got the new password on stdin in pod {pod}");
}

#[test]
fn a_failed_rollout_during_rotation_is_finished_by_a_re_run() {
    if !gate("a_failed_rollout_during_rotation_is_finished_by_a_re_run") {
        return;
    }
    let _one = support::heavy_lock();
    ensure_images();
    support::load_into_cluster(CRASHING);
    let s = Stack::new();
    s.deploy();
    let old = s.env();

    // New backend pods that crash: the rollout cannot finish.
    s.settle();
    let (run, case, failures) = rotate_loaded(
        &s,
        "postgres_password, backend crashing",
        &["--secret", "postgres_password", "--timeout", "90"],
        &[("BACKEND_IMAGE", CRASHING)],
    );
    let run = run.fails();
    assert!(
        run.stderr.contains("deployment/backend")
            && (run.stderr.contains("CrashLoopBackOff") || run.stderr.contains("Error")),
        "the failure names the workload and the cause:\n{}",
        run.all()
    );
    assert_eq!(
        case.failed, 0,
        "old pods keep serving with the old credential:\n{failures}"
    );
    assert!(case.requests > 0 && case.ok == case.requests);
    let mid = s.env();
    assert_ne!(
        mid["POSTGRES_PASSWORD"], old["POSTGRES_PASSWORD"],
        "the env file holds the new value"
    );
    let (ok, why) = s.pg_accepts(&old["POSTGRES_USER"], &old["POSTGRES_PASSWORD"]);
    assert!(ok, "the old credential, still used by the old pods: {why}");
    let (ok, why) = s.pg_accepts(&mid["POSTGRES_USER"], &mid["POSTGRES_PASSWORD"]);
    assert!(ok, "the new credential is accepted already: {why}");
    println!("after the failed rollout: old and new PostgreSQL credentials both accepted");

    // The same command with the normal image finishes that rotation.
    let (run, case, failures) = rotate_loaded(
        &s,
        "postgres_password, re-run",
        &["--secret", "postgres_password"],
        &[],
    );
    let run = run.ok();
    assert_eq!(
        case.failed,
        0,
        "re-run: failed requests:\n{failures}\n{}",
        run.all()
    );
    let end = s.env();
    assert_eq!(
        sha256(&end["POSTGRES_PASSWORD"]),
        sha256(&mid["POSTGRES_PASSWORD"]),
        "the re-run finished the rotation with the value it began, it did not generate another"
    );
    assert_eq!(end["POSTGRES_USER"], mid["POSTGRES_USER"]);
    let (ok, why) = s.pg_accepts(&end["POSTGRES_USER"], &end["POSTGRES_PASSWORD"]);
    assert!(ok, "new credential after the re-run: {why}");
    let (ok, why) = s.pg_accepts(&old["POSTGRES_USER"], &old["POSTGRES_PASSWORD"]);
    assert!(
        !ok && why.contains("password authentication failed"),
        "old credential after the re-run: {why}"
    );
    s.settle();
    check_backends_read(&s, &end);
    let (n, bad, _) = scan_host(&s.needles());
    assert!(bad.is_empty(), "after the re-run: {bad:?}");
    println!("after the re-run: {n} host processes, no secret value on a command line");
}

/// The same stack with an OpenBao store (Vault KV v2) and the k8s runtime,
/// `delivery = "fetch"` (the default): deploy copies the values into
/// versioned Kubernetes Secrets; a rotation writes the new version in
/// OpenBao, runs the hooks in the server's pod, delivers and redeploys.
#[test]
fn openbao_store_on_k8s_rotates_postgres_password_under_load() {
    let test = "openbao_store_on_k8s_rotates_postgres_password_under_load";
    if !gate(test) || !support::servers::openbao::bao_or_skip(test) {
        return;
    }
    let _one = support::heavy_lock();
    ensure_images();
    let srv = support::servers::openbao::DevServer::start();
    let path = support::servers::openbao::path()
        .to_string_lossy()
        .into_owned();
    let s = Stack::new_on(
        "store = \"vault\"\nruntime = \"k8s\"",
        vec![
            ("PATH".into(), path),
            ("VAULT_ADDR".into(), srv.addr.clone()),
            (
                "VAULT_TOKEN".into(),
                support::servers::openbao::TOKEN.into(),
            ),
            ("BAO_ADDR".into(), String::new()),
            ("BAO_TOKEN".into(), String::new()),
        ],
    );
    s.deploy();
    let project = s.project.clone();
    let in_vault = |name: &str| {
        srv.text(&[
            "kv",
            "get",
            "-mount=secret",
            &format!("-field={name}"),
            &format!("{project}/{ENV}/{name}"),
        ])
    };
    let old = s.env();
    assert_eq!(
        sha256(&in_vault("postgres_password")),
        sha256(&old["POSTGRES_PASSWORD"]),
        "OpenBao holds the deployed password"
    );
    let (ok, why) = s.pg_accepts(&old["POSTGRES_USER"], &old["POSTGRES_PASSWORD"]);
    assert!(ok, "PostgreSQL refuses the deployed credentials: {why}");
    assert_clean_scan("before the rotation", &s);
    let case = rotate_under_load(
        &s,
        "postgres_password (openbao store)",
        &["--secret", "postgres_password"],
    );
    let new = s.env();
    assert_ne!(
        old["POSTGRES_USER"], new["POSTGRES_USER"],
        "the user alternates"
    );
    assert_eq!(
        sha256(&in_vault("postgres_password")),
        sha256(&new["POSTGRES_PASSWORD"]),
        "OpenBao holds the new password"
    );
    let (ok, why) = s.pg_accepts(&new["POSTGRES_USER"], &new["POSTGRES_PASSWORD"]);
    assert!(ok, "the new credential: {why}");
    let (ok, why) = s.pg_accepts(&old["POSTGRES_USER"], &old["POSTGRES_PASSWORD"]);
    assert!(
        !ok && why.contains("password authentication failed"),
        "the old credential: {why}"
    );
    s.settle();
    check_backends_read(&s, &new);
    assert_clean_scan("after the rotation", &s);
    figures(&s, &[case]);
}
