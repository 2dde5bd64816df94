//! The Compose stack the project ships, on real servers: `docker-compose.prod.yml`
//! and `deploy/secrets.toml` deployed on the compose runtime (environment
//! `develop`, file secrets) by `cargo xtask deploy develop`, with only the
//! image names changed to the locally built PostgreSQL 15, Redis 7 and
//! backend images of `.ci/images.sh` (the backend image also stands in for
//! Grafana's CLI). A row written into PostgreSQL before the rotations must
//! still be there after each, in the same data volume; each kept secret
//! (`postgres_password` with its alternating user, `redis_password`,
//! `grafana_admin_password`), then `--all`, ends with the new credential
//! accepted and the old one refused.
//!
//! Compose recreates the backend (one container) when its secret files
//! change, so a gap is expected: a bounded load client counts the failed
//! requests (each request a new PostgreSQL and a new Redis connection in the
//! backend) and the test prints them; failures are allowed only while compose
//! recreates containers (never before the first container stops, never after
//! the rotation returned), and the load ends with successes.

use crate::support;

use std::{
    collections::BTreeMap,
    path::Path,
    process::{Command, Output, Stdio},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use support::{TempRepo, source_root, unique};

const TEST: &str = "shipped_compose_stack_rotates_kept_secrets_and_keeps_the_data";
const ENV: &str = "develop";
const BASE: &str = "xtask-stack-base:bookworm";

fn docker_out(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().unwrap()
}

fn docker_ok(args: &[&str]) -> String {
    let o = docker_out(args);
    assert!(
        o.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// (base, postgres, backend) images; built with `.ci/images.sh` when one is
/// missing (CI builds them before the tests).
fn images() -> (String, String, String) {
    let t = support::images::stack_image_tag();
    let all = (
        BASE.to_string(),
        format!("xtask-stack-postgres:{t}"),
        format!("xtask-stack-backend:{t}"),
    );
    let have = |i: &str| docker_out(&["image", "inspect", i]).status.success();
    if !(have(&all.0) && have(&all.1) && have(&all.2)) {
        eprintln!("building the stack images with .ci/images.sh (a few minutes, once)");
        let st = Command::new("bash")
            .arg(source_root().join(".ci/images.sh"))
            .status()
            .unwrap();
        assert!(st.success(), ".ci/images.sh failed");
    }
    all
}

/// The shipped compose file with only its `image:` lines replaced; every
/// other line stays as shipped (checked).
fn with_local_images(shipped: &str) -> String {
    let (base, pg, backend) = images();
    let swaps = [
        ("    image: postgres:16-alpine", pg),
        ("    image: redis:7-alpine", base),
        (
            "    image: ${BACKEND_IMAGE:-raqeem/backend:latest}",
            backend.clone(),
        ),
        ("    image: grafana/grafana:11.1.0", backend),
    ];
    let mut text = shipped.to_string();
    for (line, image) in &swaps {
        assert_eq!(
            shipped.lines().filter(|l| l == line).count(),
            1,
            "docker-compose.prod.yml should have the line {line:?} once"
        );
        text = text.replacen(line, &format!("    image: \"{image}\""), 1);
    }
    let changed: Vec<(&str, &str)> = shipped
        .lines()
        .zip(text.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(changed.len(), swaps.len(), "only the image lines change");
    assert!(
        changed
            .iter()
            .all(|(a, b)| a.starts_with("    image: ") && b.starts_with("    image: "))
    );
    assert_eq!(shipped.lines().count(), text.lines().count());
    text
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
    use std::io::Read;
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

fn sha256(v: &str) -> String {
    support::sha256_hex(v.as_bytes())
}

/// One deployment of the shipped compose stack in a temporary copy of the
/// repository; everything of its compose project is removed on drop, also
/// when the test fails.
struct Stack {
    repo: TempRepo,
    /// The manifest's `project`.
    project: String,
    /// Compose's project: `<project>-develop`.
    compose: String,
    /// Every value the env file held at any time (never printed).
    seen: std::cell::RefCell<Vec<String>>,
}

impl Stack {
    fn new() -> Stack {
        let repo = TempRepo::new();
        let id = unique();
        let project = format!("xtc{}", &id[id.len().saturating_sub(9)..]);
        let manifest = repo.read("deploy/secrets.toml").replacen(
            "project = \"raqeem\"",
            &format!("project = \"{project}\""),
            1,
        );
        assert!(manifest.contains(&format!("project = \"{project}\"")));
        repo.write("deploy/secrets.toml", &manifest);
        let shipped = repo.read("docker-compose.prod.yml");
        std::fs::write(
            repo.path("docker-compose.prod.yml"),
            with_local_images(&shipped),
        )
        .unwrap();
        let compose = format!("{project}-{ENV}");
        Stack {
            repo,
            project,
            compose,
            seen: std::cell::RefCell::new(Vec::new()),
        }
    }

    fn net(&self) -> String {
        format!("{}_default", self.compose)
    }

    fn label(&self) -> String {
        format!("label=com.docker.compose.project={}", self.compose)
    }

    fn xtask(&self, args: &[&str]) -> support::Run {
        let run = self.repo.run(args);
        self.remember();
        run
    }

    /// The env file: generated values for every secret develop has.
    fn write_env(&self) {
        let v = || random_value(40);
        let text = format!(
            "POSTGRES_USER={p}_{ENV}\nPOSTGRES_PASSWORD={}\nBETTER_AUTH_SECRET={}\nREDIS_PASSWORD={}\nJWT_SECRET={}\nAPI_SECRET_KEY={}\nGRAFANA_ADMIN_PASSWORD={}\n",
            v(),
            v(),
            v(),
            v(),
            v(),
            v(),
            p = self.project
        );
        self.repo.write(&format!("secrets/{ENV}.env"), &text);
        self.remember();
    }

    fn env(&self) -> BTreeMap<String, String> {
        support::env_map(&self.repo.read(&format!("secrets/{ENV}.env")))
    }

    /// Adds the env file's current values to those never to be shown.
    fn remember(&self) {
        let Ok(text) = std::fs::read_to_string(self.repo.path(&format!("secrets/{ENV}.env")))
        else {
            return;
        };
        let mut seen = self.seen.borrow_mut();
        for (k, v) in support::env_map(&text) {
            // PostgreSQL names the role in its messages; the user name is not secret.
            if k != "POSTGRES_USER" && v.len() >= 8 && !seen.contains(&v) {
                seen.push(v);
            }
        }
    }

    /// `text` with every value the env file ever held replaced: what an
    /// assertion message may show.
    fn scrub(&self, text: &str) -> String {
        let mut t = text.to_string();
        for v in self.seen.borrow().iter() {
            t = t.replace(v.as_str(), "<a secret value>");
        }
        t
    }

    /// True when `text` holds a value the env file ever held.
    fn leaks(&self, text: &str) -> bool {
        self.seen.borrow().iter().any(|v| text.contains(v.as_str()))
    }

    /// Runs `client.sh MODE` in a container on the project's network with
    /// `creds` as 0600 files in /creds: (success, output).
    fn client(&self, mode: &str, creds: &[(&str, &str)]) -> (bool, String) {
        let dir = self.repo.path(&format!(".creds-{}", unique()));
        std::fs::create_dir_all(&dir).unwrap();
        for (k, v) in creds {
            write_0600(&dir.join(k), v);
        }
        let script = source_root().join("xtask/tests/data/compose_stack/client.sh");
        let o = docker_out(&[
            "run",
            "--rm",
            "--network",
            &self.net(),
            "-v",
            &format!("{}:/client.sh:ro", script.display()),
            "-v",
            &format!("{}:/creds:ro", dir.display()),
            BASE,
            "bash",
            "/client.sh",
            mode,
        ]);
        let _ = std::fs::remove_dir_all(&dir);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.success(), self.scrub(text.trim()))
    }

    fn sql(&self, user: &str, password: &str, sql: &str) -> (bool, String) {
        let db = format!("{}_{ENV}", self.project);
        self.client(
            "sql",
            &[
                ("db", &db),
                ("user", user),
                ("password", password),
                ("sql", sql),
            ],
        )
    }

    fn redis(&self, password: &str) -> (bool, String) {
        self.client("redis", &[("redis", password)])
    }

    /// The one running container of `service`.
    fn container(&self, service: &str) -> String {
        let ids = docker_ok(&[
            "ps",
            "-q",
            "--filter",
            &self.label(),
            "--filter",
            &format!("label=com.docker.compose.service={service}"),
        ]);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        assert_eq!(ids.len(), 1, "one running {service} container: {ids:?}");
        ids[0].to_string()
    }

    /// The postgres data volume: its name, and the birth time and inode of
    /// its directory on the host. (Docker's `CreatedAt` of a local volume is
    /// the directory's ctime, which PostgreSQL changes whenever it adds or
    /// removes a file there, postmaster.pid included.) A `down -v` and a new
    /// volume of the same name would give a new directory.
    fn pg_volume(&self) -> (String, String) {
        let names = docker_ok(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            &self.label(),
            "--filter",
            "label=com.docker.compose.volume=postgres-data",
        ]);
        let names: Vec<&str> = names.split_whitespace().collect();
        assert_eq!(names.len(), 1, "one postgres-data volume: {names:?}");
        let dir = docker_ok(&["volume", "inspect", "--format", "{{.Mountpoint}}", names[0]]);
        let o = Command::new("stat")
            .args(["-c", "born %w inode %i"])
            .arg(dir.trim())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "stat {}: {}",
            dir.trim(),
            String::from_utf8_lossy(&o.stderr)
        );
        let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
        (names[0].to_string(), id)
    }

    /// When each service's containers stopped and started between `from`
    /// and `to` (epoch seconds), from the engine's events.
    fn recreations(&self, from: f64, to: f64) -> BTreeMap<String, (f64, f64)> {
        let out = docker_ok(&[
            "events",
            "--since",
            &format!("{from:.3}"),
            "--until",
            &format!("{:.3}", to + 1.0),
            "--filter",
            &self.label(),
            "--filter",
            "type=container",
            "--format",
            "{{.TimeNano}}|{{.Action}}|{{index .Actor.Attributes \"com.docker.compose.service\"}}",
        ]);
        let mut seen: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        for line in out.lines() {
            let f: Vec<&str> = line.split('|').collect();
            let [t, action, service] = f[..] else {
                continue;
            };
            let Ok(t) = t.parse::<f64>() else { continue };
            let t = t / 1e9;
            if service.is_empty() || service == "load" {
                continue;
            }
            let e = seen
                .entry(service.to_string())
                .or_insert((f64::NAN, f64::NAN));
            match action {
                "kill" | "stop" | "die" if e.0.is_nan() || t < e.0 => e.0 = t,
                "start" if e.1.is_nan() || t > e.1 => e.1 = t,
                _ => {}
            }
        }
        seen.retain(|_, (stop, start)| !stop.is_nan() && !start.is_nan());
        seen
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = docker_out(&["rm", "-f", &format!("{}-load", self.compose)]);
        // Compose's own down, scoped to this project (and its volumes).
        let _ = Command::new("docker-compose")
            .args(["-p", &self.compose, "-f", "docker-compose.prod.yml"])
            .args(["down", "-t", "1", "-v", "--remove-orphans"])
            .current_dir(&self.repo.root)
            .env("XTASK_SECRETS_DIR", self.repo.path("secrets/develop"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // Whatever is left of this project, by its label only.
        let label = self.label();
        let ids = docker_out(&["ps", "-aq", "--filter", &label]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = docker_out(&["rm", "-f", "-v", id]);
        }
        for (kind, q) in [("volume", "-q"), ("network", "-q")] {
            let ids = docker_out(&[kind, "ls", q, "--filter", &label]);
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = docker_out(&[kind, "rm", id]);
            }
        }
    }
}

/// The bounded load client in a container on the project's network.
struct Load<'a> {
    stack: &'a Stack,
    name: String,
}

impl<'a> Load<'a> {
    fn start(stack: &'a Stack) -> Load<'a> {
        let name = format!("{}-load", stack.compose);
        let script = source_root().join("xtask/tests/data/compose_stack/load.sh");
        let _ = docker_out(&["rm", "-f", &name]);
        docker_ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            &stack.net(),
            "-e",
            "MAX_SECONDS=240",
            "-e",
            "MAX_REQUESTS=20000",
            "-v",
            &format!("{}:/load.sh:ro", script.display()),
            BASE,
            "bash",
            "/load.sh",
        ]);
        let load = Load { stack, name };
        // Its first requests succeed before the rotation begins.
        load.wait_ok_after(now(), 3);
        load
    }

    /// The per-request lines so far: (epoch, ok, reason).
    fn lines(&self) -> Vec<(f64, bool, String)> {
        let logs = docker_out(&["logs", &self.name]);
        String::from_utf8_lossy(&logs.stdout)
            .lines()
            .filter_map(|l| {
                let mut f = l.splitn(3, ' ');
                let t = f.next()?.parse::<f64>().ok()?;
                let ok = f.next()? == "ok";
                Some((t, ok, f.next().unwrap_or_default().to_string()))
            })
            .collect()
    }

    /// Waits (at most 60 s) until `n` requests made after `t` succeeded.
    fn wait_ok_after(&self, t: f64, n: usize) {
        let start = Instant::now();
        loop {
            let ok = self.lines().iter().filter(|l| l.0 > t && l.1).count();
            if ok >= n {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the load client had {ok} successful requests in 60 s; last lines: {:?}",
                self.stack.scrub(&format!(
                    "{:?}",
                    self.lines().iter().rev().take(5).collect::<Vec<_>>()
                ))
            );
            thread::sleep(Duration::from_millis(300));
        }
    }

    /// Stops the client: (requests, ok, failed, the per-request lines).
    fn finish(self) -> (u64, u64, u64, Vec<(f64, bool, String)>) {
        let _ = docker_out(&["exec", &self.name, "touch", "/tmp/stop"]);
        docker_ok(&["wait", &self.name]);
        let lines = self.lines();
        let logs = docker_out(&["logs", &self.name]);
        let out = String::from_utf8_lossy(&logs.stdout).to_string();
        let _ = docker_out(&["rm", "-f", &self.name]);
        let line = out
            .lines()
            .find(|l| l.starts_with("requests="))
            .unwrap_or_else(|| panic!("no report from the load client"));
        let field = |k: &str| -> u64 {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(&format!("{k}=")))
                .unwrap()
                .parse()
                .unwrap()
        };
        (field("requests"), field("ok"), field("failed"), lines)
    }
}

/// What one rotation under load printed and proved.
struct Case {
    label: String,
    requests: u64,
    ok: u64,
    failed: u64,
    secs: f64,
    recreated: Vec<String>,
    /// Longest run of consecutive failures, in seconds.
    gap: f64,
}

/// Rotates with `args` under load; `expect`: the services compose must
/// recreate (the servers keep their credentials: hooks change them in place).
fn rotate_under_load(
    s: &Stack,
    label: &str,
    args: &[&str],
    expect: &[&str],
    outputs: &mut String,
) -> Case {
    let load = Load::start(s);
    let mut full = vec!["rotate-secrets", ENV];
    full.extend(args);
    full.extend(["--timeout", "180"]);
    let t0 = now();
    let run = s.xtask(&full);
    let t1 = now();
    let all = run.all();
    assert!(
        !s.leaks(&all),
        "{label}: rotate-secrets printed a secret value"
    );
    assert_eq!(
        run.code,
        0,
        "{label}: rotate-secrets failed:\n{}",
        s.scrub(&all)
    );
    assert!(
        !all.contains("down -v"),
        "{label}: the tool suggests `down -v`:\n{}",
        s.scrub(&all)
    );
    outputs.push_str(&all);
    for l in all
        .lines()
        .filter(|l| l.contains("hook") || l.contains("step done"))
    {
        println!("{label}: {l}");
    }
    // The load goes on until it has succeeded again after the rotation.
    load.wait_ok_after(t1, 5);
    let (requests, ok, failed, lines) = load.finish();
    let events = s.recreations(t0, t1);
    let first_stop = events.values().map(|e| e.0).fold(f64::INFINITY, f64::min);
    let fails: Vec<&(f64, bool, String)> = lines.iter().filter(|l| !l.1).collect();
    println!("{label}: requests={requests} ok={ok} failed={failed}");
    let mut recreated = Vec::new();
    for (svc, (stop, start)) in &events {
        println!(
            "{label}: compose recreated {svc}: stopped at +{:.2}s, new container started at +{:.2}s",
            stop - t0,
            start - t0
        );
        recreated.push(svc.clone());
    }
    let mut gap: f64 = 0.0;
    let mut run_start: Option<f64> = None;
    for l in &lines {
        match (l.1, run_start) {
            (false, None) => run_start = Some(l.0),
            (true, Some(a)) => {
                gap = gap.max(l.0 - a);
                run_start = None;
            }
            _ => {}
        }
    }
    if let (Some(first), Some(last)) = (fails.first(), fails.last()) {
        println!(
            "{label}: failures from +{:.2}s to +{:.2}s (rotate-secrets took {:.2}s); first: {}",
            first.0 - t0,
            last.0 - t0,
            t1 - t0,
            s.scrub(&first.2)
        );
    }
    assert_eq!(recreated, expect, "{label}: the services compose recreated");
    assert!(requests > 0 && ok > 0, "{label}: no successful requests");
    assert_eq!(requests, ok + failed);
    // Failures only while compose recreates: none before the first container
    // of the project stopped, none after the rotation returned.
    for f in &fails {
        assert!(
            f.0 >= first_stop - 0.5 && f.0 <= t1,
            "{label}: a request failed at +{:.2}s, outside the recreation (first stop +{:.2}s, rotation done +{:.2}s): {}",
            f.0 - t0,
            first_stop - t0,
            t1 - t0,
            s.scrub(&f.2)
        );
    }
    // The load ends on successes.
    let tail: Vec<bool> = lines.iter().rev().take(5).map(|l| l.1).collect();
    assert!(
        tail.len() == 5 && tail.iter().all(|ok| *ok),
        "{label}: the load does not end with successes"
    );
    Case {
        label: label.to_string(),
        requests,
        ok,
        failed,
        secs: t1 - t0,
        recreated,
        gap,
    }
}

/// What must hold after every rotation: the row, the same data volume.
fn data_survives(s: &Stack, label: &str, marker: &str, volume: &(String, String)) {
    let env = s.env();
    let (ok, out) = s.sql(
        &env["POSTGRES_USER"],
        &env["POSTGRES_PASSWORD"],
        "SELECT marker FROM rotation_proof ORDER BY id;\n",
    );
    assert!(
        ok && out == marker,
        "{label}: the row written before is not there: {out}"
    );
    assert_eq!(
        &s.pg_volume(),
        volume,
        "{label}: the postgres data volume is another one"
    );
}

fn pg_checks(s: &Stack, label: &str, old: &BTreeMap<String, String>) {
    let new = s.env();
    let (ok, out) = s.sql(
        &new["POSTGRES_USER"],
        &new["POSTGRES_PASSWORD"],
        "SELECT 1;\n",
    );
    assert!(
        ok && out == "1",
        "{label}: PostgreSQL refuses the new credentials: {out}"
    );
    let (ok, out) = s.sql(
        &old["POSTGRES_USER"],
        &old["POSTGRES_PASSWORD"],
        "SELECT 1;\n",
    );
    assert!(
        !ok && out.contains("password authentication failed"),
        "{label}: the old PostgreSQL credentials: {out}"
    );
}

fn redis_checks(s: &Stack, label: &str, old: &BTreeMap<String, String>) {
    let new = s.env();
    let (ok, out) = s.redis(&new["REDIS_PASSWORD"]);
    assert!(ok, "{label}: Redis refuses the new password: {out}");
    let (ok, out) = s.redis(&old["REDIS_PASSWORD"]);
    assert!(
        !ok && out.contains("WRONGPASS"),
        "{label}: the old Redis password: {out}"
    );
}

/// The grafana stand-in's CLI got the new password on stdin (it stores the
/// SHA-256 of what it read in /var/lib/grafana).
fn grafana_checks(s: &Stack, label: &str) {
    let new = s.env();
    let id = s.container("grafana");
    let stored = docker_out(&["exec", &id, "cat", "/var/lib/grafana/admin-password.sha256"]);
    assert!(
        String::from_utf8_lossy(&stored.stdout).trim() == sha256(&new["GRAFANA_ADMIN_PASSWORD"]),
        "{label}: grafana does not hold the new admin password ({})",
        s.scrub(&String::from_utf8_lossy(&stored.stderr))
    );
}

#[test]
fn shipped_compose_stack_rotates_kept_secrets_and_keeps_the_data() {
    if !support::docker_or_skip(TEST) {
        return;
    }
    let _one = support::heavy_lock();
    let started = Instant::now();
    let s = Stack::new();
    s.write_env();
    let mut outputs = String::new();
    let setup = s.xtask(&["setup-secrets", ENV]);
    outputs.push_str(&setup.all());
    setup.ok();
    let t = Instant::now();
    let deploy = s.xtask(&["deploy", ENV, "--timeout", "240"]);
    outputs.push_str(&deploy.all());
    assert!(
        deploy.code == 0,
        "deploy failed:\n{}",
        s.scrub(&deploy.all())
    );
    println!(
        "deployed {} in {:.1}s",
        s.compose,
        t.elapsed().as_secs_f64()
    );
    let volume = s.pg_volume();

    // A row in the app database, written with the deployed credentials.
    let env = s.env();
    let marker = format!("written-before-rotations-{}", unique());
    let (ok, out) = s.sql(
        &env["POSTGRES_USER"],
        &env["POSTGRES_PASSWORD"],
        &format!(
            "CREATE TABLE rotation_proof (id serial PRIMARY KEY, marker text NOT NULL);\nINSERT INTO rotation_proof (marker) VALUES ('{marker}');\n"
        ),
    );
    assert!(ok, "cannot write the row: {out}");
    data_survives(&s, "deployed", &marker, &volume);
    let (ok, out) = s.redis(&env["REDIS_PASSWORD"]);
    assert!(ok, "Redis refuses the deployed password: {out}");

    let mut cases = Vec::new();
    // A secret nothing keeps: only the backend is recreated.
    let old = s.env();
    cases.push(rotate_under_load(
        &s,
        "jwt_secret",
        &["--secret", "jwt_secret"],
        &["backend"],
        &mut outputs,
    ));
    assert_ne!(sha256(&old["JWT_SECRET"]), sha256(&s.env()["JWT_SECRET"]));
    data_survives(&s, "jwt_secret", &marker, &volume);

    let old = s.env();
    cases.push(rotate_under_load(
        &s,
        "postgres_password",
        &["--secret", "postgres_password"],
        &["backend"],
        &mut outputs,
    ));
    assert_ne!(
        old["POSTGRES_USER"],
        s.env()["POSTGRES_USER"],
        "the user alternates"
    );
    pg_checks(&s, "postgres_password", &old);
    data_survives(&s, "postgres_password", &marker, &volume);

    let old = s.env();
    cases.push(rotate_under_load(
        &s,
        "redis_password",
        &["--secret", "redis_password"],
        &["backend"],
        &mut outputs,
    ));
    redis_checks(&s, "redis_password", &old);
    data_survives(&s, "redis_password", &marker, &volume);

    cases.push(rotate_under_load(
        &s,
        "grafana_admin_password",
        &["--secret", "grafana_admin_password"],
        &[],
        &mut outputs,
    ));
    grafana_checks(&s, "grafana_admin_password");
    data_survives(&s, "grafana_admin_password", &marker, &volume);

    let old = s.env();
    cases.push(rotate_under_load(
        &s,
        "--all",
        &["--all"],
        &["backend"],
        &mut outputs,
    ));
    let new = s.env();
    for k in [
        "POSTGRES_PASSWORD",
        "REDIS_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
        "JWT_SECRET",
    ] {
        assert_ne!(sha256(&old[k]), sha256(&new[k]), "--all rotated {k}");
    }
    pg_checks(&s, "--all", &old);
    redis_checks(&s, "--all", &old);
    grafana_checks(&s, "--all");
    data_survives(&s, "--all", &marker, &volume);

    assert!(
        !outputs.contains("down -v"),
        "the tool suggested `down -v`:\n{}",
        s.scrub(&outputs)
    );
    assert!(!s.leaks(&outputs), "the tool printed a secret value");

    println!(
        "\ncompose runtime, one backend container (a gap is expected while compose recreates it):"
    );
    println!(
        "{:<24} {:>8} {:>6} {:>6} {:>8} {:>8}  recreated",
        "CASE", "REQUESTS", "OK", "FAILED", "GAP", "ROTATE"
    );
    for c in &cases {
        println!(
            "{:<24} {:>8} {:>6} {:>6} {:>7.2}s {:>7.2}s  {}",
            c.label,
            c.requests,
            c.ok,
            c.failed,
            c.gap,
            c.secs,
            c.recreated.join(",")
        );
    }
    println!(
        "the row written before the rotations is still there, in the same volume {}; whole test {:.1}s",
        volume.0,
        started.elapsed().as_secs_f64()
    );
}
