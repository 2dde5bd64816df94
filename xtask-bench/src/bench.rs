//! Benchmarks that print figures against real servers.
//!
//! `bench swarm`: for each size N, in a throwaway project with a unique prefix,
//! the baseline shell script (`xtask-bench/swarm-setup-baseline.sh`,
//! sequential `docker secret create`) against our setup (one `docker secret
//! ls`, then creates in parallel), the no-change re-run (time and docker
//! calls), and one rotation of one secret (new value, new version, prune; no
//! stack is deployed, so no redeploy is measured).
//!
//! `bench k8s`: in a throwaway namespace of the cluster in KUBECONFIG, setup of
//! N secrets, the no-change re-run (time and kubectl calls, counted through a
//! `KUBECTL` wrapper), and one secret's rotation to converged on a two-replica
//! Deployment against `kubectl rollout restart` plus `rollout status` alone.
//!
//! `bench aws` (not part of `all`): against a `moto_server` it starts on a
//! free loopback port, the time of one `aws secretsmanager` call, setup of N
//! secrets from nothing by the real binary, and the no-change re-run, each
//! with its aws calls counted through an `AWS_CLI` wrapper.
//!
//! Setup runs in-process through the store, as `setup-secrets` would after
//! parsing its arguments; the k8s rotation runs the real binary. Everything
//! created is removed at the end.

use std::{
    fmt::Write as _,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::table;
use secrets_engine::{
    model::manifest::Manifest,
    model::secret,
    plan::resolve::{self, FINGERPRINT_KEY, Options},
    plan::{self, Action},
    store::{self, Item, SecretStore},
    tools::docker::Docker,
    tools::runner::Tool,
};

const RUNS: usize = 3;
const ENV: &str = "bench";

/// Runs the benchmarks `what` names at each size and prints one table.
pub fn run(root: &Path, what: &str, sizes: &[usize]) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("xtask-bench-{:x}", secret::random_u64()));
    std::fs::create_dir_all(&dir)?;
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let result = (|| -> Result<()> {
        let all = what == "all";
        if all || what == "compose" {
            rows.extend(compose(&dir, sizes)?);
        }
        if all || what == "swarm" {
            rows.extend(swarm(root, &dir, sizes)?);
        }
        if all || what == "k8s" {
            match k8s(&dir, sizes) {
                Ok(r) => rows.extend(r),
                Err(e) if all => notes.push(format!("k8s skipped: {e:#}")),
                Err(e) => return Err(e),
            }
        }
        if what == "aws" {
            notes.push(aws(&dir, sizes)?);
        }
        if all || what == "build" {
            notes.push(build(root)?);
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    println!(
        "\nbench {what}: medians of {RUNS} runs on {} cores; setup in-process through the store, re-runs and rotations by the real binary",
        cores()
    );
    if !rows.is_empty() {
        let table: Vec<Vec<String>> = rows.iter().map(Row::cells).collect();
        table::print(
            &[
                "STORE", "SECRETS", "BASELINE", "SETUP", "RATIO", "RE-RUN", "CALLS", "ROTATE",
                "RESTART", "DIFF",
            ],
            &table,
        );
        println!(
            "BASELINE: the seeds' script, one `docker secret create` per secret. CALLS: CLI calls of a no-change re-run. ROTATE: one secret to converged (swarm and k8s: new version, redeploy, wait, prune); RESTART: a plain restart of the same service to converged."
        );
    }
    for n in notes {
        println!("{n}");
    }
    Ok(())
}

/// One line of the report.
#[derive(Default)]
struct Row {
    store: &'static str,
    n: usize,
    baseline: Option<Duration>,
    setup: Duration,
    rerun: Duration,
    calls: usize,
    rotate: Option<Duration>,
    restart: Option<Duration>,
}

impl Row {
    fn cells(&self) -> Vec<String> {
        let opt = |d: Option<Duration>| d.map(secs).unwrap_or_else(|| "-".into());
        vec![
            self.store.to_string(),
            self.n.to_string(),
            opt(self.baseline),
            secs(self.setup),
            self.baseline
                .map(|b| format!("{:.2}x", self.setup.as_secs_f64() / b.as_secs_f64()))
                .unwrap_or_else(|| "-".into()),
            secs(self.rerun),
            self.calls.to_string(),
            opt(self.rotate),
            opt(self.restart),
            match (self.rotate, self.restart) {
                (Some(a), Some(b)) => format!("{:+.2}s", a.as_secs_f64() - b.as_secs_f64()),
                _ => "-".into(),
            },
        ]
    }
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The cold build as `cargo xtask` builds it (the `xtask` profile; an empty
/// target directory, then `--help`) and the warm `--help`.
fn build(root: &Path) -> Result<String> {
    let target = std::env::temp_dir().join(format!("xtask-bench-build-{:x}", secret::random_u64()));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    println!("build: cold build of xtask into {}", target.display());
    let start = Instant::now();
    let st = Command::new(&cargo)
        .args(["build", "--quiet", "--profile", "xtask", "-p", "xtask"])
        .current_dir(root)
        .env("CARGO_TARGET_DIR", &target)
        .status()?;
    let out = Command::new(target.join("xtask/xtask"))
        .arg("--help")
        .output();
    let cold = start.elapsed();
    let _ = std::fs::remove_dir_all(&target);
    if !st.success() || !out.is_ok_and(|o| o.status.success()) {
        bail!("the cold build failed");
    }
    let exe = xtask_bin()?;
    let mut warm = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        Command::new(&exe).arg("--help").output()?;
        warm.push(start.elapsed());
    }
    Ok(format!(
        "build: cold (empty target directory, then --help) {}; warm --help of the built binary {:.1} ms (median of 5)",
        secs(cold),
        median(&warm).as_secs_f64() * 1000.0
    ))
}

/// Compose file secrets: setup and the no-change re-run (no CLI at all).
fn compose(dir: &Path, sizes: &[usize]) -> Result<Vec<Row>> {
    let project = format!("xb{:08x}", secret::random_u64() as u32);
    let mut rows = Vec::new();
    for &n in sizes.iter().filter(|n| **n > 0) {
        let f = fixture(&dir.join("compose"), &project, n, "backend = \"compose\"")?;
        let (mut setup, mut rerun, mut calls) = (vec![], vec![], vec![]);
        for _ in 0..RUNS {
            let _ = std::fs::remove_dir_all(f.root.join("secrets"));
            let store = open_store(&f)?;
            let start = Instant::now();
            setup_once(&f, store.as_ref())?;
            setup.push(start.elapsed());
            let (t, c) = counted_rerun(&f, dir, "DOCKER", "docker")?;
            rerun.push(t);
            calls.push(c);
        }
        rows.push(Row {
            store: "compose",
            n,
            setup: median(&setup),
            rerun: median(&rerun),
            calls: median_count(&calls),
            ..Row::default()
        });
    }
    Ok(rows)
}

/// A throwaway repository root with a manifest of `n` key secrets and an env
/// file holding their values (and the fingerprint key).
struct Fixture {
    root: PathBuf,
    manifest: Manifest,
    /// The same values without the fingerprint key, for the baseline script.
    baseline_env: PathBuf,
}

fn fixture(dir: &Path, project: &str, n: usize, backend_toml: &str) -> Result<Fixture> {
    let root = dir.join(format!("n{n}"));
    std::fs::create_dir_all(root.join("deploy"))?;
    let env_file = root.join("bench.env");
    let baseline_env = root.join("baseline.env");
    let mut text = String::new();
    let mut manifest = format!(
        "project = \"{project}\"\n[environments.{ENV}]\n{backend_toml}\nenv_file = \"{}\"\n",
        env_file.display()
    );
    for i in 0..n {
        let v = secret::generate(32)?;
        let v = v.expose_str().context("generated values are text")?;
        writeln!(text, "S{n}X{i:04}={v}")?;
        // Only the first is mounted by the k8s bench's Deployment.
        let services = if i == 0 { "[\"app\"]" } else { "[]" };
        writeln!(
            manifest,
            "[secrets.s{n}x{i:04}]\nkind = \"key\"\nservices = {services}"
        )?;
    }
    write_private(&baseline_env, &text)?;
    text.push_str(&format!(
        "{FINGERPRINT_KEY}={}\n",
        secret::generate(64)?.expose_str().unwrap_or_default()
    ));
    write_private(&env_file, &text)?;
    std::fs::write(root.join("deploy/secrets.toml"), &manifest)?;
    Ok(Fixture {
        manifest: Manifest::parse(&manifest)?,
        root,
        baseline_env,
    })
}

/// One in-process setup through `store`: resolve, list, plan, write.
fn setup_once(f: &Fixture, store: &dyn SecretStore) -> Result<Vec<Action>> {
    let env = f.manifest.env(ENV)?;
    let r = resolve::resolve(&f.root, &f.manifest, env, Options::read_only())?;
    let key = r.fingerprint_key()?.clone();
    let wanted: Vec<(String, String)> = r
        .desired
        .iter()
        .map(|d| (d.spec.name.clone(), d.value.fingerprint(&key)))
        .collect();
    let listed = store.list(&key)?;
    let steps = plan::setup(store, ENV, &wanted, &listed);
    let items: Vec<Item> = steps
        .iter()
        .filter(|s| s.action.writes())
        .map(|s| {
            let d = r.get(&s.secret).expect("planned secrets are resolved");
            Item {
                step: s,
                value: &d.value,
                fingerprint: d.value.fingerprint(&key),
            }
        })
        .collect();
    store.write(&items)?;
    Ok(steps.iter().map(|s| s.action).collect())
}

fn open_store(f: &Fixture) -> Result<Box<dyn SecretStore>> {
    store::open(&secrets_engine::Scope {
        root: &f.root,
        manifest: &f.manifest,
        env: f.manifest.env(ENV)?,
        sink: &(std::sync::Arc::new(secrets_engine::sink::Silent) as secrets_engine::sink::Shared),
    })
}

/// Times a no-change `setup-secrets` run of the real binary, with `var`
/// pointing at a wrapper that counts the CLI calls.
fn counted_rerun(f: &Fixture, dir: &Path, var: &str, real: &str) -> Result<(Duration, usize)> {
    let wrapper = counting_wrapper(dir, real, &which::which(real)?)?;
    let log = dir.join("calls.log");
    let _ = std::fs::remove_file(&log);
    let start = Instant::now();
    let out = xtask(f, &[(var, wrapper.as_os_str())], &["setup-secrets", ENV])?;
    let took = start.elapsed();
    if !out.contains("nothing to do") {
        bail!("the re-run planned changes:\n{out}");
    }
    let calls = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .count();
    Ok((took, calls))
}

/// The operator's binary that `cargo xtask bench` ran this from
/// (`XTASK_BIN`): the runs it times are the real tool's.
fn xtask_bin() -> Result<PathBuf> {
    std::env::var_os("XTASK_BIN")
        .map(PathBuf::from)
        .context("XTASK_BIN is not set: run the benchmarks as `cargo xtask bench`")
}

/// Runs the operator's binary in the fixture's root and returns its stdout.
fn xtask(f: &Fixture, envs: &[(&str, &std::ffi::OsStr)], args: &[&str]) -> Result<String> {
    let mut c = Command::new(xtask_bin()?);
    c.args(args)
        .current_dir(&f.root)
        .env("CARGO_MANIFEST_DIR", f.root.join("xtask"))
        .env("NO_COLOR", "1");
    for (k, v) in envs {
        c.env(k, v);
    }
    let out = c.output()?;
    if !out.status.success() {
        bail!(
            "xtask {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn swarm(root: &Path, dir: &Path, sizes: &[usize]) -> Result<Vec<Row>> {
    let docker = Docker::new()?;
    docker.ping()?;
    let baseline = root.join("xtask-bench/swarm-setup-baseline.sh");
    let project = format!("xb{:08x}", secret::random_u64() as u32);
    let mut rows = Vec::new();
    let result = (|| -> Result<()> {
        for &n in sizes.iter().filter(|n| **n > 0) {
            println!("swarm, {n} secrets");
            let f = fixture(&dir.join("swarm"), &project, n, "backend = \"swarm\"")?;
            let mut base = Vec::new();
            for run in 0..RUNS {
                let prefix = format!("{project}_base{n}r{run}");
                let start = Instant::now();
                let out = Command::new(&baseline)
                    .arg(&f.baseline_env)
                    .arg(&prefix)
                    .current_dir(&f.root)
                    .output()?;
                base.push(start.elapsed());
                if !out.status.success() {
                    bail!(
                        "the baseline failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
                swarm_cleanup(&docker, &project);
            }
            let (mut ours, mut rerun, mut calls) = (vec![], vec![], vec![]);
            for _ in 0..RUNS {
                let store = open_store(&f)?;
                let start = Instant::now();
                let actions = setup_once(&f, store.as_ref())?;
                ours.push(start.elapsed());
                if actions.iter().any(|a| *a != Action::Create) {
                    bail!("expected a clean project");
                }
                let (t, c) = counted_rerun(&f, dir, "DOCKER", "docker")?;
                rerun.push(t);
                calls.push(c);
                swarm_cleanup(&docker, &project);
            }
            let store = open_store(&f)?;
            setup_once(&f, store.as_ref())?;
            let (rotate, restart) = swarm_rotation(&f, &docker, &project, n)?;
            rows.push(Row {
                store: "swarm",
                n,
                baseline: Some(median(&base)),
                setup: median(&ours),
                rerun: median(&rerun),
                calls: median_count(&calls),
                rotate: Some(rotate),
                restart: Some(restart),
            });
            swarm_cleanup(&docker, &project);
        }
        Ok(())
    })();
    swarm_cleanup(&docker, &project);
    result.map(|_| rows)
}

/// Median times of our rotation to converged and of `docker service update
/// --force` (a restart, which waits for convergence) on the same service.
fn swarm_rotation(
    f: &Fixture,
    docker: &Docker,
    project: &str,
    n: usize,
) -> Result<(Duration, Duration)> {
    let image = bench_image();
    let var = format!("XTASK_SECRET_S{n}X0000");
    let stack = format!(
        r#"version: "3.8"
services:
  app:
    image: {image}
    command: ["sleep", "100000"]
    stop_grace_period: 1s
    secrets:
      - {{ source: s{n}x0000, target: s{n}x0000 }}
    deploy:
      replicas: 2
      update_config: {{ order: start-first, parallelism: 1 }}
secrets:
  s{n}x0000:
    external: true
    name: ${{{var}:?set by cargo xtask deploy}}
"#
    );
    std::fs::write(f.root.join("docker-compose.swarm.yml"), stack)?;
    let never = std::ffi::OsStr::new("never");
    let envs = [("XTASK_RESOLVE_IMAGE", never)];
    xtask(f, &envs, &["deploy", ENV, "--timeout", "180"])?;
    let service = format!("{project}-{ENV}_app");
    let secret = format!("s{n}x0000");
    let (mut ours, mut base) = (vec![], vec![]);
    for _ in 0..RUNS {
        let start = Instant::now();
        xtask(
            f,
            &envs,
            &[
                "rotate-secrets",
                ENV,
                "--secret",
                &secret,
                "--timeout",
                "180",
            ],
        )?;
        ours.push(start.elapsed());
        let start = Instant::now();
        docker.read(&["service", "update", "--force", "--quiet", &service], "")?;
        base.push(start.elapsed());
    }
    let stack_name = format!("{project}-{ENV}");
    docker.read(&["stack", "rm", &stack_name], "")?;
    for _ in 0..60 {
        let filter = format!("label=com.docker.stack.namespace={stack_name}");
        if docker
            .read(&["ps", "-q", "--filter", &filter], "")?
            .trim()
            .is_empty()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok((median(&ours), median(&base)))
}

/// A small local image with `sleep` and `cat` (the test cluster's busybox).
fn bench_image() -> String {
    std::env::var("XTASK_BENCH_IMAGE").unwrap_or_else(|_| "k8stest/busybox:1.35".into())
}

fn k8s(dir: &Path, sizes: &[usize]) -> Result<Vec<Row>> {
    let kubectl = Tool::find("kubectl", "KUBECTL", "install kubectl")?;
    kubectl.read(
        &["get", "--raw", "/readyz"],
        "the benchmark needs the cluster in KUBECONFIG",
    )?;
    let image = bench_image();
    let project = format!("xb{:08x}", secret::random_u64() as u32);
    let ns = format!("{project}-{ENV}");
    kubectl.read(&["create", "namespace", &ns], "")?;
    let mut rows = Vec::new();
    let result = (|| -> Result<()> {
        for &n in sizes.iter().filter(|n| **n > 0) {
            println!("k8s, {n} secrets in namespace {ns}");
            let f = fixture(&dir.join("k8s"), &project, n, "backend = \"k8s\"")?;
            std::fs::create_dir_all(f.root.join("deploy/k8s"))?;
            std::fs::write(
                f.root.join("deploy/k8s/app.yaml"),
                bench_deployment(&image, n),
            )?;
            let (mut setup, mut rerun, mut calls) = (vec![], vec![], vec![]);
            for _ in 0..RUNS {
                kubectl.read(&["-n", &ns, "delete", "secrets", "--all"], "")?;
                let store = open_store(&f)?;
                let start = Instant::now();
                setup_once(&f, store.as_ref())?;
                setup.push(start.elapsed());
                let (t, c) = counted_rerun(&f, dir, "KUBECTL", "kubectl")?;
                rerun.push(t);
                calls.push(c);
            }
            let (ours, baseline) = k8s_rotation(&f, &kubectl, &ns, n)?;
            rows.push(Row {
                store: "k8s",
                n,
                setup: median(&setup),
                rerun: median(&rerun),
                calls: median_count(&calls),
                rotate: Some(ours),
                restart: Some(baseline),
                ..Row::default()
            });
        }
        Ok(())
    })();
    let _ = kubectl.read(&["delete", "namespace", &ns, "--wait=false"], "");
    result.map(|_| rows)
}

/// A two-replica Deployment mounting the first secret, as `deploy/k8s` would.
fn bench_deployment(image: &str, n: usize) -> String {
    let var = format!("XTASK_SECRET_S{n}X0000");
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: app}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: bench}}}}
  strategy: {{type: RollingUpdate, rollingUpdate: {{maxUnavailable: 0, maxSurge: 1}}}}
  template:
    metadata: {{labels: {{app: bench}}}}
    spec:
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: {image}
        imagePullPolicy: Never
        command: ["sleep", "100000"]
        readinessProbe: {{exec: {{command: ["cat", "/run/secrets/s{n}x0000"]}}, periodSeconds: 1}}
        volumeMounts: [{{name: secrets, mountPath: /run/secrets, readOnly: true}}]
      volumes:
      - name: secrets
        projected:
          sources:
          - secret: {{name: "${{{var}:?set by cargo xtask deploy}}", items: [{{key: s{n}x0000, path: s{n}x0000}}]}}
"#
    )
}

/// Median times of our rotation to converged and of restart + status alone.
fn k8s_rotation(f: &Fixture, kubectl: &Tool, ns: &str, n: usize) -> Result<(Duration, Duration)> {
    xtask(f, &[], &["deploy", ENV, "--timeout", "180"])?;
    let secret = format!("s{n}x0000");
    let (mut ours, mut base) = (vec![], vec![]);
    for _ in 0..RUNS {
        let start = Instant::now();
        xtask(
            f,
            &[],
            &[
                "rotate-secrets",
                ENV,
                "--secret",
                &secret,
                "--timeout",
                "180",
            ],
        )?;
        ours.push(start.elapsed());
        let start = Instant::now();
        kubectl.read(&["-n", ns, "rollout", "restart", "deployment/app"], "")?;
        kubectl.read(
            &[
                "-n",
                ns,
                "rollout",
                "status",
                "deployment/app",
                "--timeout=180s",
            ],
            "",
        )?;
        base.push(start.elapsed());
    }
    Ok((median(&ours), median(&base)))
}

/// A moto server on a free loopback port, killed on drop.
struct Moto(std::process::Child, String);

impl Moto {
    fn start() -> Result<Moto> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("cannot start moto_server; install it with `pip install 'moto[server]'`")?;
        let m = Moto(child, format!("http://127.0.0.1:{port}"));
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if start.elapsed() > Duration::from_secs(30) {
                bail!("moto_server did not listen on port {port} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(m)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `bench aws`: one call, setup from nothing, no-change re-run (see the module docs).
fn aws(dir: &Path, sizes: &[usize]) -> Result<String> {
    let moto = Moto::start()?;
    let no_file = dir.join("no-aws-file");
    let envs: Vec<(&str, &std::ffi::OsStr)> = vec![
        ("AWS_ACCESS_KEY_ID", "bench".as_ref()),
        ("AWS_SECRET_ACCESS_KEY", "bench".as_ref()),
        ("AWS_CONFIG_FILE", no_file.as_os_str()),
        ("AWS_SHARED_CREDENTIALS_FILE", no_file.as_os_str()),
    ];
    let aws = Tool::find("aws", "AWS_CLI", "pip install awscli")?;
    let (mut one, mut one_cpu) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let start = Instant::now();
        let cpu = children_cpu();
        let args = [
            "--region",
            "us-east-1",
            "--endpoint-url",
            &moto.1,
            "secretsmanager",
            "list-secrets",
        ];
        let plain: Vec<(&str, &str)> = envs
            .iter()
            .map(|(k, v)| (*k, v.to_str().unwrap_or_default()))
            .collect();
        let out = aws.output_in(None, &plain, &args, None)?;
        if !out.status.success() {
            bail!(
                "aws list-secrets against moto failed: {}",
                out.stderr.trim()
            );
        }
        one.push(start.elapsed());
        one_cpu.push(children_cpu() - cpu);
    }
    let one = median(&one);
    let mut report = format!(
        "bench aws (moto on this machine, medians of {RUNS} runs): one aws call {} ({} CPU)\nSECRETS  SETUP   CALLS  SETUP/CALL  SETUP-CPU  CPU/CORES  RE-RUN  CALLS  RE-RUN/CALL\n",
        secs(one),
        secs(median(&one_cpu))
    );
    for &n in sizes {
        let (mut setups, mut scalls, mut reruns, mut rcalls) = (vec![], vec![], vec![], vec![]);
        let mut scpu = vec![];
        for run in 0..RUNS {
            let project = format!("xa{:08x}", secret::random_u64() as u32);
            let toml = format!(
                "store = \"aws\"\nruntime = \"compose\"\naws = {{ endpoint_url = \"{}\", region = \"us-east-1\" }}",
                moto.1
            );
            let f = fixture(&dir.join(format!("aws{run}")), &project, n, &toml)?;
            let wrapper = counting_wrapper(dir, "aws", Path::new(&aws.bin))?;
            let log = dir.join("calls.log");
            let _ = std::fs::remove_file(&log);
            let mut with = envs.clone();
            with.push(("AWS_CLI", wrapper.as_os_str()));
            let start = Instant::now();
            let cpu = children_cpu();
            let out = xtask(&f, &with, &["setup-secrets", ENV])?;
            setups.push(start.elapsed());
            scpu.push(children_cpu() - cpu);
            if !out.contains(&format!("{n} created")) {
                bail!("setup did not create {n} secrets:\n{out}");
            }
            scalls.push(std::fs::read_to_string(&log)?.lines().count());
            let _ = std::fs::remove_file(&log);
            let start = Instant::now();
            let out = xtask(&f, &with, &["setup-secrets", ENV])?;
            reruns.push(start.elapsed());
            if !out.contains("nothing to do") {
                bail!("the re-run planned changes:\n{out}");
            }
            rcalls.push(
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .lines()
                    .count(),
            );
        }
        let (s, r) = (median(&setups), median(&reruns));
        let ratio = |d: Duration| d.as_secs_f64() / one.as_secs_f64();
        let cpu = median(&scpu);
        writeln!(
            report,
            "{n:<8} {:<7} {:<6} {:<11} {:<10} {:<10} {:<7} {:<6} {:.1}x",
            secs(s),
            median_count(&scalls),
            format!("{:.1}x", ratio(s)),
            secs(cpu),
            secs(cpu / cores() as u32),
            secs(r),
            median_count(&rcalls),
            ratio(r)
        )?;
    }
    report.push_str("SETUP and RE-RUN are the real binary's whole run (start, env file, plan, calls); CALLS counts aws calls; SETUP-CPU is the CPU time of the tool and its aws processes, CPU/CORES the least wall time that CPU allows on this machine (moto's own share not counted). Aim: setup within 3x one call, a re-run in at most 2 calls.");
    Ok(report)
}

/// A stand-in for `name` (the program at `real`) that logs one line per
/// call, then runs it.
fn counting_wrapper(dir: &Path, name: &str, real: &Path) -> Result<PathBuf> {
    let path = dir.join(format!("counting-{name}"));
    let log = dir.join("calls.log");
    let script = format!(
        "#!/bin/sh\necho call >> '{}'\nexec '{}' \"$@\"\n",
        log.display(),
        real.display()
    );
    std::fs::write(&path, script)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    secrets_engine::disk::fsutil::write_atomic(path, text.as_bytes(), 0o600, None)
}

/// Removes every secret of the bench project (ours carry the label, the
/// baseline's only the name prefix).
fn swarm_cleanup(docker: &Docker, project: &str) {
    let filter = format!("name={project}_");
    if let Ok(out) = docker.read(
        &["secret", "ls", "--filter", &filter, "--format", "{{.Name}}"],
        "",
    ) {
        // `name=` matches anywhere in the name; keep exact prefix matches only.
        let names: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with(&format!("{project}_")))
            .collect();
        for chunk in names.chunks(200) {
            let mut args = vec!["secret", "rm"];
            args.extend(chunk);
            let _ = docker.read(&args, "");
        }
    }
}

/// User and system CPU time of every child process waited for so far (and
/// of the children they waited for).
fn children_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

fn median_count(v: &[usize]) -> usize {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}
