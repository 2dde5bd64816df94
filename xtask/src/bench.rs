//! Benchmarks that print figures against real servers.
//!
//! `bench swarm`: for each size N, in a throwaway project with a unique prefix,
//! the baseline shell script (`xtask/bench/swarm-setup-baseline.sh`,
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

use crate::{
    docker::Docker,
    manifest::Manifest,
    output,
    plan::{self, Action},
    resolve::{self, FINGERPRINT_KEY, Options},
    runner::Tool,
    secret,
    store::{self, Item, SecretStore},
};

const RUNS: usize = 3;
const ENV: &str = "bench";

pub fn run(root: &Path, what: &str, sizes: &[usize]) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("xtask-bench-{:x}", secret::random_u64()));
    std::fs::create_dir_all(&dir)?;
    let result = match what {
        "swarm" => swarm(root, &dir, sizes),
        "k8s" => k8s(&dir, sizes),
        _ => Err(anyhow::anyhow!(
            "unknown benchmark {what:?}; available: swarm, k8s"
        )),
    };
    let _ = std::fs::remove_dir_all(&dir);
    result
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
    store::open(&store::Scope {
        root: &f.root,
        manifest: &f.manifest,
        env: f.manifest.env(ENV)?,
    })
}

/// Times a no-change `setup-secrets` run of the real binary, with `var`
/// pointing at a wrapper that counts the CLI calls.
fn counted_rerun(f: &Fixture, dir: &Path, var: &str, real: &str) -> Result<(Duration, usize)> {
    let wrapper = counting_wrapper(dir, real)?;
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

/// Runs this binary in the fixture's root and returns its stdout.
fn xtask(f: &Fixture, envs: &[(&str, &std::ffi::OsStr)], args: &[&str]) -> Result<String> {
    let mut c = Command::new(std::env::current_exe()?);
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

fn swarm(root: &Path, dir: &Path, sizes: &[usize]) -> Result<()> {
    let docker = Docker::new()?;
    docker.ping()?;
    let baseline = root.join("xtask/bench/swarm-setup-baseline.sh");
    let project = format!("xb{:08x}", secret::random_u64() as u32);
    let mut rows = Vec::new();
    let result = (|| -> Result<()> {
        for &n in sizes.iter().filter(|n| **n > 0) {
            println!("size {n}: writing {n} random secrets");
            let f = fixture(dir, &project, n, "backend = \"swarm\"")?;
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
            let (mut ours, mut rerun, mut calls, mut rotate) = (vec![], vec![], vec![], vec![]);
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
                let start = Instant::now();
                rotate_one(&f, store.as_ref(), n)?;
                rotate.push(start.elapsed());
                swarm_cleanup(&docker, &project);
            }
            let (b, o) = (median(&base), median(&ours));
            rows.push(vec![
                n.to_string(),
                secs(b),
                secs(o),
                format!("{:.2}x", o.as_secs_f64() / b.as_secs_f64()),
                secs(median(&rerun)),
                median_count(&calls).to_string(),
                secs(median(&rotate)),
            ]);
        }
        Ok(())
    })();
    swarm_cleanup(&docker, &project);
    result?;
    println!(
        "\nbench swarm: medians of {RUNS} runs; ours = resolve + plan (1 `docker secret ls`) + parallel creates, in-process"
    );
    output::print_table(
        &[
            "SECRETS",
            "BASELINE",
            "OURS",
            "RATIO",
            "RE-RUN",
            "RE-RUN CALLS",
            "ROTATE ONE (setup+prune)",
        ],
        &rows,
    );
    Ok(())
}

/// A new value for the first secret, its new version, and pruning (keep 1).
fn rotate_one(f: &Fixture, store: &dyn SecretStore, n: usize) -> Result<()> {
    let env = f.manifest.env(ENV)?;
    let mut r = resolve::resolve(&f.root, &f.manifest, env, Options::read_only())?;
    r.file
        .write_updates(&[(format!("S{n}X0000"), secret::generate(32)?)], "")?;
    setup_once(f, store)?;
    let key = r.fingerprint_key()?.clone();
    let listed = store.list(&key)?;
    let gone = plan::prune(&listed, &[format!("s{n}x0000")], 1, &plan::Users::new());
    store.delete(&gone)
}

fn k8s(dir: &Path, sizes: &[usize]) -> Result<()> {
    let kubectl = Tool::find("kubectl", "KUBECTL", "install kubectl")?;
    kubectl.read(
        &["get", "--raw", "/readyz"],
        "the benchmark needs the cluster in KUBECONFIG",
    )?;
    let image =
        std::env::var("XTASK_BENCH_IMAGE").unwrap_or_else(|_| "k8stest/busybox:1.35".into());
    let project = format!("xb{:08x}", secret::random_u64() as u32);
    let ns = format!("{project}-{ENV}");
    kubectl.read(&["create", "namespace", &ns], "")?;
    let mut rows = Vec::new();
    let result = (|| -> Result<()> {
        for &n in sizes.iter().filter(|n| **n > 0) {
            println!("size {n}: {n} secrets in namespace {ns}");
            let f = fixture(dir, &project, n, "backend = \"k8s\"")?;
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
            rows.push(vec![
                n.to_string(),
                secs(median(&setup)),
                secs(median(&rerun)),
                median_count(&calls).to_string(),
                secs(ours),
                secs(baseline),
                format!("{:+.2}s", ours.as_secs_f64() - baseline.as_secs_f64()),
            ]);
        }
        Ok(())
    })();
    let _ = kubectl.read(&["delete", "namespace", &ns, "--wait=false"], "");
    result?;
    println!(
        "\nbench k8s: medians of {RUNS} runs (rotation: median of {RUNS}); setup in-process, rotation by the real binary"
    );
    output::print_table(
        &[
            "SECRETS",
            "SETUP",
            "RE-RUN",
            "RE-RUN CALLS",
            "ROTATE ONE",
            "RESTART+STATUS",
            "DIFFERENCE",
        ],
        &rows,
    );
    Ok(())
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

/// A stand-in for `real` that logs one line per call, then runs it.
fn counting_wrapper(dir: &Path, real: &str) -> Result<PathBuf> {
    let path = dir.join(format!("counting-{real}"));
    let real = which::which(real)?;
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
    crate::fsutil::write_atomic(path, text.as_bytes(), 0o600, None)
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
