//! Benchmarks that print figures against a real engine.
//!
//! `bench swarm`: for each size N, in a throwaway project with a unique prefix,
//! the baseline shell script (sequential `docker secret create`) against our
//! setup (one `docker secret ls`, then creates in parallel), the no-change
//! re-run (time and docker calls), and one rotation of one secret (new value,
//! new version, prune; no stack is deployed, so no redeploy is measured).
//! Ours runs in-process through the backend, as `setup-secrets` would after
//! parsing its arguments. Everything created is removed at the end.

use std::{
    fmt::Write as _,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    backend::{Action, Backend, Target, swarm::Swarm},
    docker::Docker,
    manifest::Manifest,
    output,
    resolve::{self, FINGERPRINT_KEY, Options},
    secret,
};

const RUNS: usize = 3;
const ENV: &str = "bench";

pub fn run(root: &Path, what: &str, sizes: &[usize]) -> Result<()> {
    if what != "swarm" {
        bail!("unknown benchmark {what:?}; available: swarm");
    }
    let docker = Docker::new()?;
    docker.ping()?;
    let baseline = match std::env::var_os("XTASK_BENCH_BASELINE") {
        Some(p) => PathBuf::from(p),
        None => root.join("../shared/bench/swarm-setup-baseline.sh"),
    };
    if !baseline.exists() {
        bail!(
            "the baseline script {} does not exist; set XTASK_BENCH_BASELINE to its path",
            baseline.display()
        );
    }
    let dir = std::env::temp_dir().join(format!("xtask-bench-{:x}", secret::random_u64()));
    std::fs::create_dir_all(&dir)?;
    let project = format!("xb{:08x}", secret::random_u64() as u32);
    let result = bench_all(&docker, &dir, &project, &baseline, sizes);
    cleanup(&docker, &project);
    let _ = std::fs::remove_dir_all(&dir);
    let rows = result?;
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

fn bench_all(
    docker: &Docker,
    dir: &Path,
    project: &str,
    baseline: &Path,
    sizes: &[usize],
) -> Result<Vec<Vec<String>>> {
    let wrapper = counting_wrapper(docker, dir)?;
    let mut rows = Vec::new();
    for &n in sizes {
        if n == 0 {
            continue;
        }
        println!("size {n}: writing {n} random secrets");
        let root = dir.join(format!("n{n}"));
        std::fs::create_dir_all(root.join("deploy"))?;
        let env_file = root.join("bench.env");
        let base_file = root.join("baseline.env");
        let mut text = String::new();
        let mut manifest = format!(
            "project = \"{project}\"\n[environments.{ENV}]\nbackend = \"swarm\"\nenv_file = \"{}\"\n",
            env_file.display()
        );
        for i in 0..n {
            let v = secret::generate(32)?;
            let v = v.expose_str().context("generated values are text")?;
            writeln!(text, "S{n}X{i:04}={v}")?;
            writeln!(manifest, "[secrets.s{n}x{i:04}]\nkind = \"key\"")?;
        }
        write_private(&base_file, &text)?;
        text.push_str(&format!(
            "{FINGERPRINT_KEY}={}\n",
            secret::generate(64)?.expose_str().unwrap_or_default()
        ));
        write_private(&env_file, &text)?;
        let m = Manifest::parse(&manifest)?;
        let env = m.env(ENV)?.clone();
        let t = Target {
            root: &root,
            manifest: &m,
            env: &env,
        };

        let mut base = Vec::new();
        for run in 0..RUNS {
            let prefix = format!("{project}_base{n}r{run}");
            let start = Instant::now();
            let out = Command::new(baseline)
                .arg(&base_file)
                .arg(&prefix)
                .current_dir(&root)
                .output()?;
            base.push(start.elapsed());
            if !out.status.success() {
                bail!(
                    "the baseline failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            let names: Vec<String> = (0..n).map(|i| format!("{prefix}_s{n}x{i:04}")).collect();
            remove(docker, &names)?;
        }

        let ours_backend = Swarm::with_docker(Docker {
            bin: docker.bin.clone(),
        });
        let counted = Swarm::with_docker(Docker {
            bin: wrapper.clone().into_os_string(),
        });
        let (mut ours, mut rerun, mut calls, mut rotate) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for run in 0..RUNS {
            let start = Instant::now();
            let r = resolve::resolve(&root, &m, &env, Options::read_only())?;
            let plan = ours_backend.plan(&t, &r)?;
            ours_backend.apply(&t, &r, &plan)?;
            ours.push(start.elapsed());
            if plan.iter().any(|s| s.action != Action::Create) {
                bail!("run {run}: expected a clean project");
            }

            let log = dir.join("calls.log");
            let _ = std::fs::remove_file(&log);
            let start = Instant::now();
            let r = resolve::resolve(&root, &m, &env, Options::read_only())?;
            let plan = counted.plan(&t, &r)?;
            rerun.push(start.elapsed());
            if plan.iter().any(|s| s.action != Action::Unchanged) {
                bail!("the re-run planned changes");
            }
            calls.push(
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .lines()
                    .count(),
            );

            // One rotation of one secret: a new value in the env file, then the new
            // version and the pruning of superseded ones (keep 1).
            let name = format!("s{n}x0000");
            let key = format!("S{n}X0000");
            let start = Instant::now();
            let mut r = resolve::resolve(&root, &m, &env, Options::read_only())?;
            r.file.write_updates(&[(key, secret::generate(32)?)], "")?;
            let r = resolve::resolve(&root, &m, &env, Options::read_only())?;
            let plan = ours_backend.plan(&t, &r)?;
            ours_backend.apply(&t, &r, &plan)?;
            ours_backend.prune(&t, std::slice::from_ref(&name), 1)?;
            rotate.push(start.elapsed());

            cleanup(docker, project);
        }
        let (b, o) = (median(&base), median(&ours));
        let mut c = calls.clone();
        c.sort();
        rows.push(vec![
            n.to_string(),
            secs(b),
            secs(o),
            format!("{:.2}x", o.as_secs_f64() / b.as_secs_f64()),
            secs(median(&rerun)),
            c[c.len() / 2].to_string(),
            secs(median(&rotate)),
        ]);
        println!("size {n}: baseline {}, ours {}", secs(b), secs(o));
    }
    Ok(rows)
}

/// A docker stand-in that logs one line per call, then runs the real one.
fn counting_wrapper(docker: &Docker, dir: &Path) -> Result<PathBuf> {
    let path = dir.join("docker");
    let real = Path::new(&docker.bin);
    let real = if real.is_absolute() {
        real.to_path_buf()
    } else {
        which::which(real)?
    };
    let log = dir.join("calls.log");
    let script = format!(
        "#!/bin/sh\necho \"$1 $2\" >> '{}'\nexec '{}' \"$@\"\n",
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

fn remove(docker: &Docker, names: &[String]) -> Result<()> {
    for chunk in names.chunks(200) {
        let mut args = vec!["secret", "rm"];
        args.extend(chunk.iter().map(String::as_str));
        docker.read(&args, "")?;
    }
    Ok(())
}

/// Removes every secret of the bench project (ours carry the label, the
/// baseline's only the name prefix).
fn cleanup(docker: &Docker, project: &str) {
    let filter = format!("name={project}_");
    if let Ok(out) = docker.read(
        &["secret", "ls", "--filter", &filter, "--format", "{{.Name}}"],
        "",
    ) {
        // `name=` matches anywhere in the name; keep exact prefix matches only.
        let names: Vec<String> = out
            .lines()
            .filter(|l| l.starts_with(&format!("{project}_")))
            .map(String::from)
            .collect();
        let _ = remove(docker, &names);
    }
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}
