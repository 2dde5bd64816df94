//! The stack the project ships, on real servers: `docker-compose.swarm.yml` and
//! `deploy/secrets.toml` deployed as they are (a test override file changes
//! only the image names and makes the network attachable), with PostgreSQL 15,
//! Redis 7 and nginx from Debian (`.ci/images.sh`). A load client sends
//! requests through nginx to the backend during each rotation (every request a
//! new TLS connection, a new PostgreSQL and a new Redis connection) and none
//! may fail; afterwards the old credentials are refused, nginx serves the new
//! certificate, and no secret value was on any container process's command
//! line. Then the same on a two-node swarm of the test's own (two engines in
//! network namespaces), with tasks on the worker. Prints the rotation times
//! against `docker service update --force` of the same services.
//!
//! No IPVS here: clients reach the tasks through Docker's DNS (`tasks.nginx`)
//! on the overlay network; the ingress mesh and VIPs are not exercised.

use crate::support;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use support::{TempRepo, source_root, swarm_or_skip, unique};

const ENV: &str = "production";

/// A Docker engine: the machine's own, or one of the test's in a namespace.
#[derive(Clone)]
struct Engine {
    host: Option<String>,
}

impl Engine {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker");
        if let Some(h) = &self.host {
            c.env("DOCKER_HOST", h);
        }
        c.args(args);
        c
    }

    fn out(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.out(args);
        assert!(
            o.status.success(),
            "docker {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

const BASE: &str = "xtask-stack-base:bookworm";

fn images() -> [String; 3] {
    let t = support::images::stack_image_tag();
    [
        BASE.to_string(),
        format!("xtask-stack-postgres:{t}"),
        format!("xtask-stack-backend:{t}"),
    ]
}

/// Builds the images with `.ci/images.sh` when one is missing (CI builds them
/// before the tests; a first local build takes a few minutes).
fn ensure_images(e: &Engine) {
    if images()
        .iter()
        .all(|i| e.out(&["image", "inspect", i]).status.success())
    {
        return;
    }
    eprintln!("building the stack images with .ci/images.sh (a few minutes, once)");
    let st = Command::new("bash")
        .arg(source_root().join(".ci/images.sh"))
        .status()
        .unwrap();
    assert!(st.success(), ".ci/images.sh failed");
}

/// The override: image names, and an attachable network for the test's
/// clients. With `pin`, the single-replica services go to the worker node.
fn override_file(pin: bool) -> String {
    let [base, pg, backend] = images();
    let at = if pin {
        ", deploy: { placement: { constraints: [\"node.role == worker\"] } }"
    } else {
        ""
    };
    format!(
        r#"# Test override (xtask/tests/it/stack.rs): local images built by .ci/images.sh.
version: "3.8"
services:
  postgres: {{ image: "{pg}"{at} }}
  redis: {{ image: "{base}"{at} }}
  backend: {{ image: "{backend}" }}
  grafana: {{ image: "{backend}"{at} }}
  nginx: {{ image: "{base}" }}
networks:
  default: {{ attachable: true }}
"#
    )
}

/// One deployment of the shipped stack in a temporary copy of the repository.
struct Stack {
    repo: TempRepo,
    project: String,
    engine: Engine,
    port: String,
}

impl Stack {
    fn new(engine: Engine, pin: bool) -> Stack {
        let repo = TempRepo::new();
        // Names under 20 characters keep versioned secret names under 64.
        let id = unique();
        let project = format!("xts{}", &id[id.len().saturating_sub(9)..]);
        let manifest = repo.read("deploy/secrets.toml");
        let manifest = manifest
            .replacen("project = \"raqeem\"", &format!("project = \"{project}\""), 1)
            .replacen(
                "[environments.staging]",
                "[environments.production.swarm]\nstack_overrides = [\"stack-test.yml\"]\n\n[environments.staging]",
                1,
            );
        assert!(manifest.contains(&project) && manifest.contains("stack-test.yml"));
        repo.write("deploy/secrets.toml", &manifest);
        repo.write("stack-test.yml", &override_file(pin));
        let port =
            (20000 + u32::from_str_radix(&id[id.len() - 4..], 16).unwrap_or(0) % 20000).to_string();
        Stack {
            repo,
            project,
            engine,
            port,
        }
    }

    fn stack(&self) -> String {
        format!("{}-{ENV}", self.project)
    }

    fn net(&self) -> String {
        format!("{}_default", self.stack())
    }

    fn xtask(&self, args: &[&str]) -> support::Run {
        let mut c = self.repo.xtask(args);
        c.env("XTASK_RESOLVE_IMAGE", "never");
        // The ingress port is swarm-wide: one of its own per test stack.
        c.env("NGINX_HTTPS_PORT", &self.port);
        if let Some(h) = &self.engine.host {
            c.env("DOCKER_HOST", h);
        }
        support::Run::from(c.output().unwrap())
    }

    /// Runs xtask, timing its output lines: returns the run, its whole time,
    /// and the time from the stack deploy's first `Updating service` to the
    /// `converged` line (the rest is the tool's own, hooks included).
    fn xtask_timed(&self, args: &[&str]) -> (support::Run, Duration, Duration) {
        use std::io::{BufRead, Read};
        let mut c = self.repo.xtask(args);
        c.env("XTASK_RESOLVE_IMAGE", "never")
            .env("NGINX_HTTPS_PORT", &self.port)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(h) = &self.engine.host {
            c.env("DOCKER_HOST", h);
        }
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
            if first.is_none() && line.starts_with("Updating service") {
                first = Some(start.elapsed());
            }
            if line.contains(": converged (") {
                done = Some(start.elapsed());
            }
            out.push_str(&line);
            out.push('\n');
        }
        let status = child.wait().unwrap();
        let total = start.elapsed();
        let swarm = match (first, done) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => Duration::ZERO,
        };
        let run = support::Run {
            code: status.code().unwrap_or(-1),
            stdout: out,
            stderr: errs.join().unwrap(),
        };
        (run, total, swarm)
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
            v(),
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

    /// Every value a process must never show (see [`needles_of`]).
    fn needles(&self) -> Vec<String> {
        needles_of(&self.env(), &self.repo.path("secrets"))
    }

    /// Runs `.../check.sh MODE` on the stack's network with `creds` as files.
    fn check(&self, mode: &str, creds: &[(&str, &str)]) -> (bool, String) {
        let dir = self.repo.path(&format!(".creds-{}", unique()));
        std::fs::create_dir_all(&dir).unwrap();
        for (k, v) in creds {
            write_0600(&dir.join(k), v);
        }
        let script = source_root().join("xtask/tests/data/stack/check.sh");
        let o = self.engine.out(&[
            "run",
            "--rm",
            "--network",
            &self.net(),
            "-v",
            &format!("{}:/check.sh:ro", script.display()),
            "-v",
            &format!("{}:/creds:ro", dir.display()),
            BASE,
            "bash",
            "/check.sh",
            mode,
        ]);
        let _ = std::fs::remove_dir_all(&dir);
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
}

impl Drop for Stack {
    fn drop(&mut self) {
        let e = &self.engine;
        let p = &self.project;
        let _ = e.out(&["rm", "-f", &format!("{p}-load")]);
        let _ = e.out(&["stack", "rm", &self.stack()]);
        let label = format!("label=com.docker.stack.namespace={}", self.stack());
        for _ in 0..120 {
            let left = e.out(&["ps", "-aq", "--filter", &label]);
            if left.stdout.iter().all(u8::is_ascii_whitespace) {
                break;
            }
            thread::sleep(Duration::from_millis(500));
        }
        let secrets = e.out(&[
            "secret",
            "ls",
            "-q",
            "--filter",
            &format!("label=xtask.project={p}"),
        ]);
        let ids: Vec<String> = String::from_utf8_lossy(&secrets.stdout)
            .split_whitespace()
            .map(String::from)
            .collect();
        if !ids.is_empty() {
            let mut args = vec!["secret", "rm"];
            args.extend(ids.iter().map(String::as_str));
            let _ = e.out(&args);
        }
        for v in ["postgres-data", "redis-data", "grafana-data"] {
            let _ = e.out(&["volume", "rm", &format!("{}_{v}", self.stack())]);
        }
    }
}

fn write_0600(path: &Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn random_value(len: usize) -> String {
    let mut buf = vec![0u8; len];
    use std::io::Read;
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
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj"])
        .arg(format!("/CN=stack-test-{name}"))
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

/// The bounded load client, running in a container on the stack's network.
struct Load<'a> {
    stack: &'a Stack,
    name: String,
}

impl<'a> Load<'a> {
    fn start(stack: &'a Stack) -> Load<'a> {
        let name = format!("{}-load", stack.project);
        let script = source_root().join("xtask/tests/data/stack/load.sh");
        let _ = stack.engine.out(&["rm", "-f", &name]);
        stack.engine.ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            &stack.net(),
            "-e",
            "MAX_SECONDS=900",
            "-v",
            &format!("{}:/load.sh:ro", script.display()),
            BASE,
            "bash",
            "/load.sh",
        ]);
        // Let it make its first requests before the rotation begins.
        thread::sleep(Duration::from_secs(2));
        Load { stack, name }
    }

    /// Stops the client; returns (requests, ok, failed, failures shown).
    fn finish(self) -> (u64, u64, u64, String) {
        let e = &self.stack.engine;
        e.ok(&["exec", &self.name, "touch", "/tmp/stop"]);
        e.ok(&["wait", &self.name]);
        let logs = e.out(&["logs", &self.name]);
        let _ = e.out(&["rm", "-f", &self.name]);
        let out = String::from_utf8_lossy(&logs.stdout).to_string();
        let err = String::from_utf8_lossy(&logs.stderr).to_string();
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

/// Scans in a loop while a rotation runs, re-reading the env file's values.
struct Scanner {
    stop: Arc<AtomicBool>,
    found: Arc<Mutex<(usize, usize, Vec<String>)>>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Scanner {
    fn start(engines: Vec<Engine>, stack: &Stack) -> Scanner {
        let stop = Arc::new(AtomicBool::new(false));
        let found = Arc::new(Mutex::new((0, 0, Vec::new())));
        let env_path = stack.repo.path(&format!("secrets/{ENV}.env"));
        let tls = stack.repo.path("secrets");
        let project = stack.project.clone();
        let (s2, f2) = (stop.clone(), found.clone());
        // A Stack view for the scanner thread: only the project name is used.
        let handle = thread::spawn(move || {
            let view = StackName { project };
            while !s2.load(Ordering::Relaxed) {
                let env = support::env_map(&std::fs::read_to_string(&env_path).unwrap_or_default());
                let needles = needles_of(&env, &tls);
                let (n, bad) = view.scan(&engines, &needles);
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

struct StackName {
    project: String,
}

impl StackName {
    fn scan(&self, engines: &[Engine], needles: &[String]) -> (usize, Vec<String>) {
        let mut seen = 0;
        let mut bad = Vec::new();
        for e in engines {
            let ids = e.out(&["ps", "--no-trunc", "--format", "{{.ID}} {{.Names}}"]);
            for line in String::from_utf8_lossy(&ids.stdout).lines() {
                let Some((id, name)) = line.split_once(' ') else {
                    continue;
                };
                if !name.starts_with(&self.project) && !name.starts_with("xtask-hook-") {
                    continue;
                }
                // `ps -ef` columns as docker top prints them: the host PIDs.
                let top = e.out(&["top", id]);
                let top = String::from_utf8_lossy(&top.stdout).to_string();
                let col = top
                    .lines()
                    .next()
                    .and_then(|h| h.split_whitespace().position(|c| c == "PID"))
                    .unwrap_or(1);
                let pids: Vec<&str> = top
                    .lines()
                    .skip(1)
                    .filter_map(|l| l.split_whitespace().nth(col))
                    .collect();
                for pid in pids {
                    let Ok(raw) = std::fs::read(format!("/proc/{}/cmdline", pid.trim())) else {
                        continue;
                    };
                    seen += 1;
                    let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
                    if needles.iter().any(|n| cmd.contains(n.as_str())) {
                        bad.push(format!(
                            "{name} pid {}: a secret value on its command line",
                            pid.trim()
                        ));
                    }
                }
            }
        }
        (seen, bad)
    }
}

/// The env file's values and the base64 lines of the PEM files it names.
/// Not the user name: PostgreSQL names the role and database of each
/// connection in its process title (`postgres: user db host`) whatever
/// `update_process_title` says; every password, key, URL and PEM is checked.
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

/// One timed rotation under load with the command-line scanner running.
struct Case {
    label: String,
    requests: u64,
    ok: u64,
    failed: u64,
    tool: Duration,
    /// From `docker stack deploy`'s first update to converged: Swarm's part.
    swarm: Duration,
    services: Vec<String>,
}

fn rotate_under_load(s: &Stack, engines: &[Engine], label: &str, args: &[&str]) -> Case {
    let load = Load::start(s);
    let scanner = Scanner::start(engines.to_vec(), s);
    let mut full = vec!["rotate-secrets", ENV];
    full.extend(args);
    full.extend(["--timeout", "300"]);
    let started = std::time::SystemTime::now();
    let (run, tool, swarm) = s.xtask_timed(&full);
    let (scans, procs, bad) = scanner.finish();
    let (requests, ok, failed, failures) = load.finish();
    println!("{label}: requests={requests} ok={ok} failed={failed}");
    println!(
        "{label}: {scans} command-line scans of {procs} container processes during the rotation"
    );
    let run = run.ok();
    assert!(bad.is_empty(), "{label}: {bad:?}");
    assert_eq!(
        failed,
        0,
        "{label}: failed requests:\n{failures}\n{}",
        run.all()
    );
    assert!(
        requests > 0 && ok == requests,
        "{label}: no requests were made"
    );
    for l in run.stdout.lines().filter(|l| l.contains("hook done in")) {
        println!("{label}: {l}");
    }
    let services = updated_services(s, started);
    Case {
        label: label.to_string(),
        requests,
        ok,
        failed,
        tool,
        swarm,
        services,
    }
}

/// The services a rotation rolled: those whose last update completed after
/// it started (stack deploy names every service, changed or not).
fn updated_services(s: &Stack, started: std::time::SystemTime) -> Vec<String> {
    let e = &s.engine;
    let since = started
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ls = e.ok(&[
        "service",
        "ls",
        "--filter",
        &format!("label=com.docker.stack.namespace={}", s.stack()),
        "--format",
        "{{.Name}}",
    ]);
    let mut out = Vec::new();
    for svc in ls.lines() {
        let done = e.ok(&[
            "service",
            "inspect",
            "--format",
            "{{if .UpdateStatus}}{{.UpdateStatus.CompletedAt}}{{end}}",
            svc,
        ]);
        let done = done.trim();
        let at = Command::new("date")
            .args(["-d", done.split(" +").next().unwrap_or(done), "+%s"])
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .parse::<u64>()
                    .ok()
            });
        if at.is_some_and(|t| t >= since) {
            out.push(svc.to_string());
        }
    }
    out
}

/// Swarm's own rolling update of the same services (`docker service update
/// --force`, in parallel), to the same end as the tool's: every update
/// `completed`, its monitor window included.
fn force_update(e: &Engine, services: &[String]) -> Duration {
    let format = "{{if .UpdateStatus}}{{.UpdateStatus.StartedAt}}|{{.UpdateStatus.State}}{{end}}";
    let status = |svc: &str| e.ok(&["service", "inspect", "--format", format, svc]);
    let before: Vec<String> = services.iter().map(|s| status(s)).collect();
    let start = Instant::now();
    for svc in services {
        e.ok(&["service", "update", "--force", "--detach", "--quiet", svc]);
    }
    for (svc, was) in services.iter().zip(&before) {
        loop {
            let now = status(svc);
            if now != *was && now.trim().ends_with("|completed") {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(300),
                "{svc} did not converge"
            );
            thread::sleep(Duration::from_millis(250));
        }
    }
    start.elapsed()
}

/// The four rotations with their checks; returns the cases for the figures.
fn exercise(s: &Stack, engines: &[Engine]) -> Vec<Case> {
    let env = s.env();
    let (ok, why) = s.pg_accepts(&env["POSTGRES_USER"], &env["POSTGRES_PASSWORD"]);
    assert!(ok, "PostgreSQL refuses the deployed credentials: {why}");
    let (before_scans, bad) = StackName {
        project: s.project.clone(),
    }
    .scan(engines, &s.needles());
    assert!(bad.is_empty(), "before any rotation: {bad:?}");
    assert!(
        before_scans > 5,
        "too few container processes seen: {before_scans}"
    );
    let mut cases = Vec::new();

    // PostgreSQL logs every statement from here on, where its task runs on
    // one of these engines: the rotation's statements carry a SCRAM verifier,
    // never the password.
    let logging = log_statements(s, engines);
    let old = s.env();
    cases.push(rotate_under_load(
        s,
        engines,
        "postgres_password",
        &["--secret", "postgres_password"],
    ));
    let new = s.env();
    if let Some((e, id)) = &logging {
        let logs = e.out(&["logs", id]);
        let logs = String::from_utf8_lossy(&logs.stderr).to_string()
            + &String::from_utf8_lossy(&logs.stdout);
        assert!(
            logs.lines()
                .any(|l| l.contains("statement: ALTER USER") && l.contains("'SCRAM-SHA-256$4096:")),
            "the hook's statement, with the verifier, is not in PostgreSQL's log"
        );
        for (k, v) in [
            ("old", &old["POSTGRES_PASSWORD"]),
            ("new", &new["POSTGRES_PASSWORD"]),
        ] {
            assert!(
                !logs.contains(v.as_str()),
                "the {k} password is in PostgreSQL's log"
            );
        }
        println!("PostgreSQL's statement log holds the SCRAM-SHA-256 verifier, never the password");
    }
    assert_ne!(
        old["POSTGRES_USER"], new["POSTGRES_USER"],
        "the user alternates"
    );
    assert!(
        s.pg_accepts(&new["POSTGRES_USER"], &new["POSTGRES_PASSWORD"])
            .0
    );
    let (ok, why) = s.pg_accepts(&old["POSTGRES_USER"], &old["POSTGRES_PASSWORD"]);
    assert!(
        !ok && why.contains("password authentication failed"),
        "old PostgreSQL credentials: {why}"
    );

    let old = s.env();
    cases.push(rotate_under_load(
        s,
        engines,
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
    s.set_env("SSL_PRIVATE_KEY", "tls/b.key");
    cases.push(rotate_under_load(
        s,
        engines,
        "ssl_certificate+ssl_private_key",
        &["--secret", "ssl_certificate", "--secret", "ssl_private_key"],
    ));
    assert_eq!(
        s.served_fingerprint(),
        fingerprint(&tls.join("b.crt")),
        "nginx serves the new certificate"
    );

    let old = s.env();
    cases.push(rotate_under_load(s, engines, "--all", &["--all"]));
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
    check_grafana(s, engines, &new["GRAFANA_ADMIN_PASSWORD"]);
    check_backends_read(s, engines, &new);
    check_pruned(s);

    let (after, bad) = StackName {
        project: s.project.clone(),
    }
    .scan(engines, &s.needles());
    assert!(bad.is_empty(), "after the rotations: {bad:?}");
    println!(
        "command lines: {before_scans} processes before, {after} after the rotations: no secret value"
    );
    cases
}

/// Turns on `log_statement = all` in the stack's PostgreSQL where its task
/// runs on one of `engines`; returns that engine and container.
fn log_statements(s: &Stack, engines: &[Engine]) -> Option<(Engine, String)> {
    let label = format!("label=com.docker.swarm.service.name={}_postgres", s.stack());
    for e in engines {
        let ps = e.ok(&["ps", "-q", "--filter", &label]);
        let Some(id) = ps.split_whitespace().next() else {
            continue;
        };
        for sql in [
            "ALTER SYSTEM SET log_statement = 'all'",
            "SELECT pg_reload_conf()",
        ] {
            e.ok(&[
                "exec", "-u", "postgres", id, "psql", "-XqtA", "-d", "postgres", "-c", sql,
            ]);
        }
        return Some((e.clone(), id.to_string()));
    }
    None
}

/// The grafana hook's job gave the new password to `grafana cli` on stdin, in
/// the grafana-data volume of the node that runs grafana (the test image's
/// stand-in CLI stores its SHA-256 there).
fn check_grafana(s: &Stack, engines: &[Engine], password: &str) {
    let label = format!("label=com.docker.swarm.service.name={}_grafana", s.stack());
    for e in engines {
        let task = e.ok(&["ps", "-q", "--filter", &label]);
        if let Some(id) = task.split_whitespace().next() {
            let stored = e.ok(&["exec", id, "cat", "/var/lib/grafana/admin-password.sha256"]);
            assert_eq!(
                stored.trim(),
                sha256(password),
                "grafana cli got the new password on stdin"
            );
            return;
        }
    }
    panic!("no running grafana task on any node");
}

/// Every backend task, on every node, reads the new values from /run/secrets.
fn check_backends_read(s: &Stack, engines: &[Engine], env: &BTreeMap<String, String>) {
    let label = format!("label=com.docker.swarm.service.name={}_backend", s.stack());
    let mut tasks = 0;
    for (i, e) in engines.iter().enumerate() {
        for id in e.ok(&["ps", "-q", "--filter", &label]).split_whitespace() {
            for (file, key) in [
                ("postgres_password", "POSTGRES_PASSWORD"),
                ("redis_password", "REDIS_PASSWORD"),
                ("jwt_secret", "JWT_SECRET"),
            ] {
                let out = e.ok(&["exec", id, "sha256sum", &format!("/run/secrets/{file}")]);
                assert_eq!(
                    out.split_whitespace().next().unwrap_or_default(),
                    sha256(&env[key]),
                    "node {i}: backend task {id} reads {file}"
                );
            }
            tasks += 1;
        }
    }
    assert_eq!(tasks, 2, "two backend tasks");
    println!(
        "backend tasks on {} node(s) read the new values",
        engines.len()
    );
}

/// database_url rotated twice (postgres_password, then --all): with --keep 1
/// its v1 is gone from the swarm once no task on any node uses it; the
/// versions kept_by services still mount stay.
fn check_pruned(s: &Stack) {
    let names = s.engine.ok(&["secret", "ls", "--format", "{{.Name}}"]);
    let has = |n: &str| {
        names
            .lines()
            .any(|l| l == format!("{}_{ENV}_{n}", s.project))
    };
    assert!(has("database_url_v3") && has("database_url_v2"), "{names}");
    assert!(
        !has("database_url_v1"),
        "database_url_v1 should be removed:\n{names}"
    );
    assert!(
        has("postgres_password_v1"),
        "postgres keeps the version it started with"
    );
    println!(
        "superseded versions removed once unused; versions kept by postgres, redis and grafana stay"
    );
}

fn sha256(v: &str) -> String {
    support::sha256_hex(v.as_bytes())
}

fn figures(title: &str, e: &Engine, cases: &[Case]) {
    println!("\n{title}");
    println!(
        "{:<32} {:>8} {:>6} {:>6}  {:>8} {:>8} {:>7}  {:>8} {:>8}  services",
        "CASE", "REQUESTS", "OK", "FAILED", "ROTATE", "FORCE", "DIFF", "SWARM", "OWN"
    );
    for c in cases {
        let base = force_update(e, &c.services);
        let diff = c.tool.as_secs_f64() - base.as_secs_f64();
        let own = c.tool.as_secs_f64() - c.swarm.as_secs_f64();
        let names: Vec<&str> = c
            .services
            .iter()
            .map(|n| n.rsplit('_').next().unwrap_or(n))
            .collect();
        println!(
            "{:<32} {:>8} {:>6} {:>6}  {:>7.2}s {:>7.2}s {:>+6.2}s  {:>7.2}s {:>7.2}s  {}",
            c.label,
            c.requests,
            c.ok,
            c.failed,
            c.tool.as_secs_f64(),
            base.as_secs_f64(),
            diff,
            c.swarm.as_secs_f64(),
            own,
            names.join(",")
        );
    }
    println!(
        "ROTATE: rotate-secrets from start to converged; FORCE: docker service update --force of the same services to completed; SWARM: ROTATE's part from the stack deploy's first update to converged; OWN: the rest (checks, new versions, hooks, pruning)"
    );
}

fn deploy(s: &Stack) {
    s.write_env();
    s.xtask(&["setup-secrets", ENV, "--generate-missing"]).ok();
    let start = Instant::now();
    s.xtask(&["deploy", ENV, "--timeout", "400"]).ok();
    println!(
        "deployed {} in {:.1}s",
        s.stack(),
        start.elapsed().as_secs_f64()
    );
}

#[test]
fn shipped_stack_rotates_every_secret_with_no_failed_request() {
    if !swarm_or_skip("shipped_stack_rotates_every_secret_with_no_failed_request") {
        return;
    }
    let _one = support::heavy_lock();
    let engine = Engine { host: None };
    ensure_images(&engine);
    let s = Stack::new(engine.clone(), false);
    deploy(&s);
    let cases = exercise(&s, std::slice::from_ref(&engine));
    figures("one node (the machine's swarm):", &engine, &cases);
}

/// A two-node swarm of the test's own: two engines, each in its own network
/// namespace joined by a veth pair, so the machine's engine and its swarm are
/// left alone (TESTBED: an extra dockerd in the host namespace with
/// `--bridge none` would delete the host's docker0). Torn down on drop, also
/// when the test fails.
struct TwoNodes {
    dir: PathBuf,
    names: [String; 2],
    engines: Vec<std::process::Child>,
    manager: Engine,
    worker: Engine,
}

impl TwoNodes {
    fn up() -> TwoNodes {
        let id = unique();
        let tag = &id[id.len().saturating_sub(6)..];
        let dir = PathBuf::from(format!("/var/tmp/xtask-nodes-{tag}"));
        let names = [format!("xtm{tag}"), format!("xtw{tag}")];
        // A /24 of 10.99.0.0/16 picked from the suffix, away from the recipe's 10.99.0.x.
        let net = 100 + (u32::from_str_radix(&tag[tag.len() - 2..], 16).unwrap_or(0) % 150);
        let mut nodes = TwoNodes {
            dir: dir.clone(),
            names: names.clone(),
            engines: Vec::new(),
            manager: Engine {
                host: Some(format!("unix://{}/m.sock", dir.display())),
            },
            worker: Engine {
                host: Some(format!("unix://{}/w.sock", dir.display())),
            },
        };
        std::fs::create_dir_all(&dir).unwrap();
        let ip = |args: &[&str]| {
            let o = Command::new("ip").args(args).output().unwrap();
            assert!(
                o.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        let (vm, vw) = (format!("vm{tag}"), format!("vw{tag}"));
        for n in &names {
            ip(&["netns", "add", n]);
            ip(&["-n", n, "link", "set", "lo", "up"]);
        }
        ip(&["link", "add", &vm, "type", "veth", "peer", "name", &vw]);
        ip(&["link", "set", &vm, "netns", &names[0]]);
        ip(&["link", "set", &vw, "netns", &names[1]]);
        let addr = [format!("10.99.{net}.1"), format!("10.99.{net}.2")];
        for (n, (v, a)) in names.iter().zip([(&vm, &addr[0]), (&vw, &addr[1])]) {
            ip(&["-n", n, "addr", "add", &format!("{a}/24"), "dev", v]);
            ip(&["-n", n, "link", "set", v, "up"]);
        }
        for (i, n) in names.iter().enumerate() {
            let k = ["m", "w"][i];
            let root = dir.join(k);
            std::fs::create_dir_all(&root).unwrap();
            let log = std::fs::File::create(dir.join(format!("{k}.log"))).unwrap();
            // nsenter, not `ip netns exec` (which remounts /sys: "Devices cgroup isn't mounted").
            let child = Command::new("nsenter")
                .arg(format!("--net=/var/run/netns/{n}"))
                .arg("/usr/sbin/dockerd")
                .arg("--data-root")
                .arg(root.join("data"))
                .arg("--exec-root")
                .arg(format!("/run/xtask-{k}{tag}"))
                .arg("--pidfile")
                .arg(dir.join(format!("{k}.pid")))
                .arg("-H")
                .arg(format!("unix://{}/{k}.sock", dir.display()))
                .args(["--bridge", "none", "--iptables=false"])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            nodes.engines.push(child);
        }
        for e in [&nodes.manager, &nodes.worker] {
            let start = Instant::now();
            while !e.out(&["info"]).status.success() {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "a test engine did not start; see {}",
                    dir.display()
                );
                thread::sleep(Duration::from_millis(300));
            }
        }
        nodes
            .manager
            .ok(&["swarm", "init", "--advertise-addr", &addr[0]]);
        let token = nodes.manager.ok(&["swarm", "join-token", "-q", "worker"]);
        nodes.worker.ok(&[
            "swarm",
            "join",
            "--advertise-addr",
            &addr[1],
            "--token",
            token.trim(),
            &format!("{}:2377", addr[0]),
        ]);
        nodes
    }

    /// Copies the stack images into both engines (images are per node).
    fn load_images(&self) {
        let tar = self.dir.join("images.tar");
        let mut args = vec!["save".to_string(), "-o".into(), tar.display().to_string()];
        args.extend(images());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Engine { host: None }.ok(&args);
        for e in [&self.manager, &self.worker] {
            e.ok(&["load", "-q", "-i", &tar.display().to_string()]);
        }
        let _ = std::fs::remove_file(&tar);
    }

    fn node_id(&self, e: &Engine) -> String {
        e.ok(&["info", "--format", "{{.Swarm.NodeID}}"])
            .trim()
            .to_string()
    }
}

impl Drop for TwoNodes {
    fn drop(&mut self) {
        for e in [&self.worker, &self.manager] {
            let _ = e.out(&["swarm", "leave", "--force"]);
        }
        for c in &self.engines {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
        }
        for c in &mut self.engines {
            let start = Instant::now();
            while c.try_wait().ok().flatten().is_none() {
                if start.elapsed() > Duration::from_secs(45) {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                thread::sleep(Duration::from_millis(200));
            }
        }
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
        for k in ["m", "w"] {
            let _ = Command::new("umount")
                .args(["-R", "-l"])
                .arg(self.dir.join(k).join("data"))
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn shipped_stack_rotates_on_a_two_node_swarm() {
    if !swarm_or_skip("shipped_stack_rotates_on_a_two_node_swarm") {
        return;
    }
    let _one = support::heavy_lock();
    let host = Engine { host: None };
    ensure_images(&host);
    let start = Instant::now();
    let nodes = TwoNodes::up();
    nodes.load_images();
    println!(
        "two-node swarm up with the images in {:.1}s",
        start.elapsed().as_secs_f64()
    );
    let s = Stack::new(nodes.manager.clone(), true);
    deploy(&s);
    let worker = nodes.node_id(&nodes.worker);
    let on_worker = |svc: &str| -> usize {
        let tasks = nodes.manager.ok(&[
            "service",
            "ps",
            "-q",
            "--filter",
            "desired-state=running",
            &format!("{}_{svc}", s.stack()),
        ]);
        tasks
            .split_whitespace()
            .filter(|t| {
                nodes
                    .manager
                    .ok(&["inspect", "--type", "task", "--format", "{{.NodeID}}", t])
                    .trim()
                    == worker
            })
            .count()
    };
    for (svc, want) in [
        ("postgres", 1),
        ("redis", 1),
        ("grafana", 1),
        ("backend", 1),
        ("nginx", 1),
    ] {
        let n = on_worker(svc);
        println!("{svc}: {n} task(s) on the worker");
        assert!(n >= want, "{svc} has no task on the worker");
    }
    let engines = [nodes.manager.clone(), nodes.worker.clone()];
    let cases = exercise(&s, &engines);
    figures(
        "two nodes (the test's own swarm, engines in network namespaces):",
        &nodes.manager,
        &cases,
    );
    drop(s);
}
