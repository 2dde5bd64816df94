//! Crash tests: the real binary is SIGKILLed at every rename(2) (through
//! `strace --inject=rename:signal=KILL:when=N`) and before and after every
//! docker call (through a counting `DOCKER` wrapper that kills its parent),
//! and a plain re-run must converge: exit 0, an env file that parses with one
//! value per key, a store that matches it, no value lost, and no temporary
//! file left under `secrets/`.
//!
//! Scenarios: `setup-secrets develop` (compose file store), `rotate-secrets
//! develop --secret jwt_secret` (compose; its deploy goes to a stub docker
//! that answers like a converged one-container project, so no engine is
//! needed), and `setup-secrets develop --backend swarm` on the real swarm.
//! Each scenario stops at the first N the run completes without reaching, and
//! at most at [`CAP`] kill points per kind.

use crate::support;

use std::{
    collections::BTreeMap,
    os::unix::{
        fs::PermissionsExt,
        process::{CommandExt, ExitStatusExt},
    },
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use hmac::{KeyInit, Mac};
use support::{DEVELOP_SECRETS, Run, TempRepo};

/// At most this many kill points per kind of kill point and scenario.
const CAP: usize = 40;

/// The operator's own value in the seeded env file (never generated).
const SEED: &str = "POSTGRES_USER=distinct-user-4711\n";

/// Where the run is killed.
#[derive(Clone, Copy, Debug)]
enum Kill {
    /// On entering the N-th rename(2) of any one traced process (the rename
    /// does not happen).
    Rename(usize),
    /// The docker wrapper's N-th call kills xtask before running docker.
    DockerBefore(usize),
    /// The docker wrapper's N-th call runs docker, then kills xtask before it
    /// sees the result.
    DockerAfter(usize),
}

/// The counting docker wrapper: counts its calls in `$CRASH_DIR`, runs
/// `$CRASH_REAL`, and SIGKILLs its parent (xtask) on call `$CRASH_KILL_AT`,
/// before the call when `$CRASH_KILL_WHEN` is `before`, else after it. A
/// `running.<pid>` file marks a call in flight, so the test can wait for the
/// calls the killed run left behind (creates run up to eight at a time).
const WRAPPER: &str = r#"#!/bin/sh
d="$CRASH_DIR"
touch "$d/running.$$"
while ! mkdir "$d/lock" 2>/dev/null; do sleep 0.01; done
n=$(( $(cat "$d/count" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$d/count"
rmdir "$d/lock"
echo "$n $1 $2" >> "$d/calls"
if [ "$n" = "${CRASH_KILL_AT:-0}" ] && [ "$CRASH_KILL_WHEN" = before ]; then
  kill -KILL "$PPID"
  rm -f "$d/running.$$"
  exit 137
fi
"$CRASH_REAL" "$@"
rc=$?
if [ "$n" = "${CRASH_KILL_AT:-0}" ]; then
  kill -KILL "$PPID"
fi
rm -f "$d/running.$$"
exit $rc
"#;

/// A docker that answers the compose runtime like an engine whose project is
/// one running container, so rotate's deploy step converges without an engine.
const STUB_DOCKER: &str = r#"#!/bin/sh
case "$*" in
  "version --format"*) echo 20.10.0-stub ;;
  "compose version"*) echo "Docker Compose version v2.0.0-stub" ;;
  compose*" ps -q") echo 0123456789ab ;;
  *"{{.Created}}"*) echo "2000-01-01T00:00:00Z|backend|" ;;
  inspect*) echo "/crash-stub-backend-1|running||0|0" ;;
  compose*) ;;
  *) echo "stub docker: unexpected call: $*" >&2; exit 1 ;;
esac
exit 0
"#;

/// The scaffolding of one scenario: the repository copy and the wrapper.
struct Bench {
    repo: TempRepo,
    dir: PathBuf,
    wrapper: PathBuf,
    real_docker: PathBuf,
    extra: Vec<String>,
}

impl Bench {
    /// `real_docker`: the program the wrapper runs (the real docker, or the stub).
    fn new(real_docker: Option<PathBuf>, extra: &[&str]) -> Bench {
        let repo = TempRepo::new();
        let dir = repo.path("crash-tools");
        std::fs::create_dir_all(&dir).unwrap();
        let exe = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p
        };
        let wrapper = exe("docker-wrapper", WRAPPER);
        let real_docker = real_docker.unwrap_or_else(|| exe("docker-stub", STUB_DOCKER));
        Bench {
            repo,
            dir,
            wrapper,
            real_docker,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn calls_dir(&self) -> PathBuf {
        self.dir.join("calls")
    }

    /// xtask ARGS (plus the scenario's extra arguments), killed as `kill` says.
    /// Returns the run and whether xtask died of SIGKILL.
    fn run(&self, args: &[&str], kill: Kill) -> (Run, bool) {
        let calls = self.calls_dir();
        let _ = std::fs::remove_dir_all(&calls);
        std::fs::create_dir_all(&calls).unwrap();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(self.extra.iter().map(String::as_str));
        let mut c = match kill {
            Kill::Rename(n) => {
                let mut c = Command::new("strace");
                c.args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=rename"])
                    .arg(format!("--inject=rename:signal=KILL:when={n}"))
                    .arg(env!("CARGO_BIN_EXE_xtask"))
                    .args(&all)
                    .current_dir(&self.repo.root)
                    .env("CARGO_MANIFEST_DIR", self.repo.root.join("xtask"))
                    .env("NO_COLOR", "1");
                c
            }
            _ => self.repo.xtask(&all),
        };
        let (at, when) = match kill {
            Kill::DockerBefore(n) => (n, "before"),
            Kill::DockerAfter(n) => (n, "after"),
            _ => (0, "never"),
        };
        c.env("DOCKER", &self.wrapper)
            .env("CRASH_DIR", &calls)
            .env("CRASH_REAL", &self.real_docker)
            .env("CRASH_KILL_AT", at.to_string())
            .env("CRASH_KILL_WHEN", when);
        // Its own process group, so the calls a killed run left behind (a
        // wrapper may not even have marked itself running yet) can be waited for.
        c.process_group(0)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let child = c.spawn().unwrap();
        let group = child.id().to_string();
        let out = child.wait_with_output().unwrap();
        let killed = out.status.signal() == Some(9);
        // Calls the killed run started may still be running: wait for them.
        let start = Instant::now();
        loop {
            let group_alive = Command::new("kill")
                .args(["-0", "--", &format!("-{group}")])
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            let busy = std::fs::read_dir(&calls)
                .unwrap()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("running."));
            if !busy && !group_alive {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "docker calls of the killed run did not finish within 60s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        (Run::from(out), killed)
    }

    fn docker_calls(&self) -> String {
        std::fs::read_to_string(self.calls_dir().join("calls")).unwrap_or_default()
    }
}

/// The env file as a map; panics unless it parses (with dotenvy, as the tool
/// reads it) and holds each key once.
fn env_map(repo: &TempRepo) -> Option<BTreeMap<String, String>> {
    let path = repo.path("secrets/develop.env");
    let text = std::fs::read_to_string(&path).ok()?;
    let mut seen = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let key = line.split_once('=').map(|(k, _)| k.trim()).unwrap_or(line);
        *seen.entry(key.to_string()).or_insert(0) += 1;
    }
    let dups: Vec<&String> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, _)| k)
        .collect();
    assert!(
        dups.is_empty(),
        "secrets/develop.env holds more than one value for {dups:?}"
    );
    let map: BTreeMap<String, String> = dotenvy::from_path_iter(&path)
        .unwrap_or_else(|e| panic!("secrets/develop.env does not parse: {e}"))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("secrets/develop.env does not parse: {e}"));
    assert_eq!(
        map.len(),
        seen.len(),
        "secrets/develop.env: keys seen {:?}, parsed {:?}",
        seen.keys().collect::<Vec<_>>(),
        map.keys().collect::<Vec<_>>()
    );
    Some(map)
}

/// The value each develop secret must have, from the env file.
fn expected(env: &BTreeMap<String, String>, project: &str) -> BTreeMap<&'static str, String> {
    DEVELOP_SECRETS
        .iter()
        .map(|&n| {
            let v = if n == "database_url" {
                format!(
                    "postgresql://{}:{}@postgres:5432/{project}_develop",
                    env["POSTGRES_USER"], env["POSTGRES_PASSWORD"]
                )
            } else {
                env.get(&n.to_uppercase())
                    .unwrap_or_else(|| panic!("{} missing from the env file", n.to_uppercase()))
                    .clone()
            };
            (n, v)
        })
        .collect()
}

/// Every file under `dir` whose name follows the tool's temporary pattern
/// `.<name>.tmp-<pid>-<hex>`.
fn temp_files(dir: &Path) -> Vec<String> {
    fn is_temp(name: &str) -> bool {
        let Some(rest) = name.strip_prefix('.') else {
            return false;
        };
        let Some((base, tail)) = rest.rsplit_once(".tmp-") else {
            return false;
        };
        let Some((pid, hex)) = tail.split_once('-') else {
            return false;
        };
        !base.is_empty()
            && !pid.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
            && !hex.is_empty()
            && hex.bytes().all(|b| b.is_ascii_hexdigit())
    }
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(temp_files(&p));
        } else if is_temp(&e.file_name().to_string_lossy()) {
            out.push(p.display().to_string());
        }
    }
    out
}

/// The compose store's files, by secret name.
fn compose_files(repo: &TempRepo) -> BTreeMap<String, String> {
    let Ok(entries) = std::fs::read_dir(repo.path("secrets/develop")) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Failures collected over all kill points, reported together at the end.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn check(&mut self, ok: bool, at: &str, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(format!("{at}: {}", what()));
        }
    }

    fn finish(self, scenario: &str) {
        if self.0.is_empty() {
            return;
        }
        // The same failure at many kill points is one finding: show each once,
        // with the kill points it happened at.
        let mut by_msg: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for f in &self.0 {
            let (at, msg) = f.split_once(": ").unwrap();
            by_msg.entry(msg.to_string()).or_default().push(at.into());
        }
        let mut text = String::new();
        for (msg, at) in by_msg {
            text.push_str(&format!("- at {}:\n  {msg}\n", at.join(", ")));
        }
        panic!(
            "{scenario}: {} failed assertion(s) after kills:\n{text}",
            self.0.len()
        );
    }
}

/// Checks shared by the compose scenarios after the re-run: verify passes,
/// every file matches the env file, and no temporary file is left.
fn check_compose_converged(
    bench: &Bench,
    at: &str,
    f: &mut Failures,
) -> Option<BTreeMap<String, String>> {
    let repo = &bench.repo;
    let env = env_map(repo).expect("no env file after the re-run");
    let want = expected(&env, "raqeem");
    let files = compose_files(repo);
    for (name, value) in &want {
        f.check(files.get(*name) == Some(value), at, || {
            format!("secrets/develop/{name} does not hold the env file's value after the re-run")
        });
    }
    f.check(files.len() == want.len(), at, || {
        format!(
            "secrets/develop/ holds {:?}",
            files.keys().collect::<Vec<_>>()
        )
    });
    let v = repo.run(&["verify-secrets", "develop"]);
    f.check(v.code == 0, at, || {
        format!("verify-secrets after the re-run: {}", v.all())
    });
    let temps = temp_files(&repo.path("secrets"));
    f.check(temps.is_empty(), at, || {
        format!(
            "temporary files left under secrets/ after the re-run: {}",
            temps
                .iter()
                .map(|t| t
                    .strip_prefix(&format!("{}/", repo.root.display()))
                    .unwrap_or(t))
                .collect::<Vec<_>>()
                .join(", ")
        )
    });
    Some(env)
}

/// Runs `kinds` kill points in order (each N from 1 until the run completes
/// without being killed), calling `reset` before and `check` after each one.
/// Returns the number of kill points that ran, per kind.
fn sweep(
    bench: &Bench,
    args: &[&str],
    kinds: &[fn(usize) -> Kill],
    reset: &mut dyn FnMut(&Bench),
    check: &mut dyn FnMut(&Bench, &str, &Run),
) -> Vec<usize> {
    let mut counts = Vec::new();
    for kind in kinds {
        let mut n = 1;
        loop {
            assert!(
                n <= CAP,
                "{args:?} was still killed at kill point {:?}; raise CAP if the command grew",
                kind(CAP)
            );
            reset(bench);
            let kill = kind(n);
            let (run, killed) = bench.run(args, kill);
            if !killed {
                assert_eq!(
                    run.code,
                    0,
                    "{args:?} with {kill:?} neither completed nor was killed\nstdout:\n{}\nstderr:\n{}\ndocker calls:\n{}",
                    run.stdout,
                    run.stderr,
                    bench.docker_calls()
                );
                counts.push(n - 1);
                break;
            }
            check(bench, &format!("{kill:?}"), &run);
            n += 1;
        }
    }
    counts
}

fn reset_secrets(repo: &TempRepo) {
    let _ = std::fs::remove_dir_all(repo.path("secrets/develop"));
    let _ = std::fs::remove_file(repo.path("secrets/develop.env"));
    for t in temp_files(&repo.path("secrets")) {
        let _ = std::fs::remove_file(t);
    }
}

#[test]
fn compose_setup_converges_after_a_kill_at_every_rename() {
    let test = "compose_setup_converges_after_a_kill_at_every_rename";
    if !support::strace_or_skip(test) {
        return;
    }
    let started = Instant::now();
    let bench = Bench::new(None, &[]);
    let args = ["setup-secrets", "develop"];
    let mut f = Failures::default();
    let mut counts = Vec::new();
    let mut left_temp = 0;
    // From an env file holding the operator's POSTGRES_USER, and from none
    // (a fresh clone: everything generated).
    for seed in [Some(SEED), None] {
        let mut reset = |b: &Bench| {
            reset_secrets(&b.repo);
            if let Some(seed) = seed {
                b.repo.write("secrets/develop.env", seed);
            }
        };
        let mut check = |b: &Bench, at: &str, _: &Run| {
            let repo = &b.repo;
            let at = &format!("{}{at}", if seed.is_some() { "seeded " } else { "fresh " });
            // At the kill: the env file (if any yet) parses, and every file
            // already written holds its value (nothing torn, nothing ahead).
            let at_kill = env_map(repo);
            if seed.is_some() {
                f.check(
                    at_kill
                        .as_ref()
                        .and_then(|e| e.get("POSTGRES_USER"))
                        .map(String::as_str)
                        == Some("distinct-user-4711"),
                    at,
                    || "the operator's POSTGRES_USER is not in the env file after the kill".into(),
                );
            }
            let files = compose_files(repo);
            if !files.is_empty() {
                match &at_kill {
                    Some(env) => {
                        let want = expected(env, "raqeem");
                        for (name, value) in &files {
                            f.check(want.get(name.as_str()) == Some(value), at, || {
                                format!(
                                    "after the kill, secrets/develop/{name} does not hold the env file's value"
                                )
                            });
                        }
                    }
                    None => f.check(false, at, || {
                        "secret files were written before the env file that holds their values"
                            .into()
                    }),
                }
            }
            if !temp_files(&repo.path("secrets")).is_empty() {
                left_temp += 1;
            }
            let again = repo.run(&["setup-secrets", "develop"]);
            f.check(again.code == 0, at, || {
                format!("the re-run failed: {}", again.all())
            });
            if again.code != 0 {
                return;
            }
            let Some(after) = check_compose_converged(b, at, &mut f) else {
                return;
            };
            for (k, v) in at_kill.iter().flatten() {
                f.check(after.get(k) == Some(v), at, || {
                    format!("{k} changed or vanished in the re-run (a value was lost)")
                });
            }
        };
        counts.extend(sweep(
            &bench,
            &args,
            &[Kill::Rename],
            &mut reset,
            &mut check,
        ));
    }
    println!(
        "crash: {} kill points in setup (compose) [renames: {} seeded, {} fresh; {} left a temporary file for the re-run to sweep], {:.1}s",
        counts.iter().sum::<usize>(),
        counts[0],
        counts[1],
        left_temp,
        started.elapsed().as_secs_f64()
    );
    assert!(
        counts.iter().all(|&c| c >= 2),
        "setup killed at only {counts:?} renames: is rename(2) still the call the tool uses?"
    );
    assert!(
        left_temp > 0,
        "no kill left a temporary file: the leftover assertion tested nothing"
    );
    f.finish("setup-secrets develop (compose)");
}

#[test]
fn compose_rotate_converges_after_a_kill_at_every_rename_and_docker_call() {
    let test = "compose_rotate_converges_after_a_kill_at_every_rename_and_docker_call";
    if !support::strace_or_skip(test) {
        return;
    }
    let started = Instant::now();
    let bench = Bench::new(None, &[]);
    // The state every kill point starts from: set up once, then restored.
    bench.repo.write("secrets/develop.env", SEED);
    bench.repo.run(&["setup-secrets", "develop"]).ok();
    let env0 = env_map(&bench.repo).unwrap();
    let env0_text = bench.repo.read("secrets/develop.env");
    let files0 = compose_files(&bench.repo);
    let args = ["rotate-secrets", "develop", "--secret", "jwt_secret"];
    let mut f = Failures::default();
    let mut reset = |b: &Bench| {
        reset_secrets(&b.repo);
        let _ = std::fs::remove_file(b.repo.path("deploy/audit-log.tsv"));
        b.repo.write("secrets/develop.env", &env0_text);
        for (name, value) in &files0 {
            b.repo.write(&format!("secrets/develop/{name}"), value);
        }
        std::fs::set_permissions(
            b.repo.path("secrets/develop"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
    };
    let mut check = |b: &Bench, at: &str, _: &Run| {
        let repo = &b.repo;
        let at_kill = env_map(repo).expect("the env file vanished in the kill");
        let jwt_file_at_kill = compose_files(repo).get("jwt_secret").cloned();
        // At the kill: the live file holds the old value or the env file's
        // new one, never anything else.
        f.check(
            jwt_file_at_kill.as_deref() == Some(env0["JWT_SECRET"].as_str())
                || jwt_file_at_kill.as_deref() == Some(at_kill["JWT_SECRET"].as_str()),
            at,
            || "after the kill, secrets/develop/jwt_secret holds neither the old value nor the env file's".into(),
        );
        let again = support::Run::from(
            repo.xtask(&args)
                .env("DOCKER", &b.real_docker)
                .output()
                .unwrap(),
        );
        f.check(again.code == 0, at, || {
            format!("the re-run failed: {}", again.all())
        });
        if again.code != 0 {
            return;
        }
        let Some(after) = check_compose_converged(b, at, &mut f) else {
            return;
        };
        for (k, v) in &env0 {
            if k != "JWT_SECRET" {
                f.check(after.get(k) == Some(v), at, || {
                    format!("{k} changed or vanished, though only jwt_secret was rotated")
                });
            }
        }
        f.check(after["JWT_SECRET"] != env0["JWT_SECRET"], at, || {
            "jwt_secret is not rotated after the re-run".into()
        });
        // A new value the env file held but the store did not yet use must be
        // the one the re-run puts live (it may already be in a hook's hands).
        if at_kill["JWT_SECRET"] != env0["JWT_SECRET"]
            && jwt_file_at_kill.as_deref() != Some(at_kill["JWT_SECRET"].as_str())
        {
            f.check(after["JWT_SECRET"] == at_kill["JWT_SECRET"], at, || {
                "the new jwt_secret written to the env file before the kill was replaced by another (a value was lost)".into()
            });
        }
        let log = std::fs::read_to_string(repo.path("deploy/audit-log.tsv")).unwrap_or_default();
        f.check(
            log.lines().any(|l| {
                l.contains("\tdevelop\trotate-secrets\tupdate\tjwt_secret\t") && l.ends_with("\tok")
            }),
            at,
            || format!("no audit-log line for jwt_secret after the re-run: {log:?}"),
        );
    };
    let counts = sweep(
        &bench,
        &args,
        &[Kill::Rename, Kill::DockerBefore, Kill::DockerAfter],
        &mut reset,
        &mut check,
    );
    println!(
        "crash: {} kill points in rotate (compose) [renames {}, before docker call {}, after docker call {}], {:.1}s",
        counts.iter().sum::<usize>(),
        counts[0],
        counts[1],
        counts[2],
        started.elapsed().as_secs_f64()
    );
    assert!(
        counts[0] >= 2,
        "rotate killed at only {} renames: is rename(2) still the call the tool uses?",
        counts[0]
    );
    f.finish("rotate-secrets develop --secret jwt_secret (compose)");
}

/// Prefix of every project this test creates; the rest is the test process's
/// pid, so a sweep can tell leftovers of dead runs from a run in progress.
const SWARM_PREFIX: &str = "xtcrash";

/// Removes swarm secrets of earlier runs of this test whose process is gone.
fn sweep_leftovers() {
    let Ok(out) = Command::new("docker")
        .args([
            "secret",
            "ls",
            "--filter",
            "label=xtask.project",
            "--format",
            "{{.ID}} {{.Name}}",
        ])
        .output()
    else {
        return;
    };
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (id, name) = l.split_once(' ')?;
            let pid = name.strip_prefix(SWARM_PREFIX)?.split('x').next()?;
            let alive = !pid.is_empty() && Path::new(&format!("/proc/{pid}")).exists();
            (!alive).then(|| id.to_string())
        })
        .collect();
    if !ids.is_empty() {
        eprintln!(
            "crash: removing {} swarm secrets left by earlier runs",
            ids.len()
        );
        let _ = Command::new("docker")
            .args(["secret", "rm"])
            .args(&ids)
            .output();
    }
}

/// Removes every swarm secret of `project` (by its label), on drop too.
struct SwarmCleanup(String);

impl SwarmCleanup {
    fn remove_all(&self) {
        support::remove_project_secrets(&self.0);
    }
}

impl Drop for SwarmCleanup {
    fn drop(&mut self) {
        self.remove_all();
    }
}

/// (name, version, fingerprint) of every swarm secret of `project`.
fn swarm_versions(project: &str) -> Vec<(String, u32, String)> {
    let ids = support::docker(&[
        "secret",
        "ls",
        "-q",
        "--filter",
        &format!("label=xtask.project={project}"),
    ]);
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if ids.is_empty() {
        return Vec::new();
    }
    let mut args = vec!["secret", "inspect", "--format", "{{json .Spec.Labels}}"];
    args.extend(&ids);
    support::docker(&args)
        .lines()
        .map(|l| {
            let labels: serde_json::Value = serde_json::from_str(l).unwrap();
            let s = |k: &str| labels[k].as_str().unwrap_or_default().to_string();
            (
                s("xtask.secret"),
                s("xtask.version").parse().unwrap_or(0),
                s("xtask.fingerprint"),
            )
        })
        .collect()
}

/// The tool's keyed fingerprint: HMAC-SHA-256, first 16 hex digits.
fn fingerprint(key: &str, value: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(value.as_bytes());
    mac.finalize().into_bytes()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn swarm_setup_converges_after_a_kill_at_every_rename_and_docker_call() {
    let test = "swarm_setup_converges_after_a_kill_at_every_rename_and_docker_call";
    if !support::strace_or_skip(test) || !support::swarm_or_skip(test) {
        return;
    }
    let started = Instant::now();
    sweep_leftovers();
    let project = format!(
        "{SWARM_PREFIX}{}x{}",
        std::process::id(),
        &support::unique()[..6]
    );
    let cleanup = SwarmCleanup(project.clone());
    let real = which_docker();
    let bench = Bench::new(Some(real), &["--backend", "swarm"]);
    let m = bench
        .repo
        .read("deploy/secrets.toml")
        .replace("project = \"raqeem\"", &format!("project = \"{project}\""));
    std::fs::write(bench.repo.path("deploy/secrets.toml"), m).unwrap();
    let args = ["setup-secrets", "develop"];
    let mut f = Failures::default();
    let mut reset = |b: &Bench| {
        cleanup.remove_all();
        reset_secrets(&b.repo);
        b.repo.write("secrets/develop.env", SEED);
    };
    let mut check = |b: &Bench, at: &str, _: &Run| {
        let repo = &b.repo;
        let at_kill = env_map(repo).expect("the seeded env file vanished");
        let again = repo.run(&["setup-secrets", "develop", "--backend", "swarm"]);
        f.check(again.code == 0, at, || {
            format!("the re-run failed: {}", again.all())
        });
        if again.code != 0 {
            return;
        }
        let after = env_map(repo).expect("no env file after the re-run");
        for (k, v) in &at_kill {
            f.check(after.get(k) == Some(v), at, || {
                format!("{k} changed or vanished in the re-run (a value was lost)")
            });
        }
        let v = repo.run(&["verify-secrets", "develop", "--backend", "swarm"]);
        f.check(v.code == 0, at, || {
            format!("verify-secrets after the re-run: {}", v.all())
        });
        let key = after
            .get("XTASK_FINGERPRINT_KEY")
            .expect("no XTASK_FINGERPRINT_KEY after the re-run");
        let want = expected(&after, &project);
        let versions = swarm_versions(&project);
        for (name, value) in &want {
            let fp = fingerprint(key, value);
            let mine: Vec<&(String, u32, String)> =
                versions.iter().filter(|v| v.0 == *name).collect();
            let matching: Vec<u32> = mine.iter().filter(|v| v.2 == fp).map(|v| v.1).collect();
            let newest = mine.iter().map(|v| v.1).max();
            f.check(
                matching.len() == 1 && newest == matching.first().copied(),
                at,
                || {
                    format!(
                        "{name}: versions {:?}, of which {:?} match the env file; want exactly one, the newest",
                        mine.iter().map(|v| v.1).collect::<Vec<_>>(),
                        matching
                    )
                },
            );
            let mut fps: Vec<&str> = mine.iter().map(|v| v.2.as_str()).collect();
            fps.sort();
            let n = fps.len();
            fps.dedup();
            f.check(fps.len() == n, at, || {
                format!("{name}: two versions hold the same content")
            });
        }
        let stray: Vec<&str> = versions
            .iter()
            .map(|v| v.0.as_str())
            .filter(|n| !want.contains_key(n))
            .collect();
        f.check(stray.is_empty(), at, || {
            format!("secrets of no develop secret: {stray:?}")
        });
        let temps = temp_files(&repo.path("secrets"));
        f.check(temps.is_empty(), at, || {
            format!(
                "temporary files left under secrets/ after the re-run: {}",
                temps
                    .iter()
                    .map(|t| t
                        .strip_prefix(&format!("{}/", repo.root.display()))
                        .unwrap_or(t))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
    };
    let counts = sweep(
        &bench,
        &args,
        &[Kill::Rename, Kill::DockerBefore, Kill::DockerAfter],
        &mut reset,
        &mut check,
    );
    println!(
        "crash: {} kill points in setup (swarm) [renames {}, before docker call {}, after docker call {}], {:.1}s",
        counts.iter().sum::<usize>(),
        counts[0],
        counts[1],
        counts[2],
        started.elapsed().as_secs_f64()
    );
    assert!(
        counts[1] >= 2,
        "setup made only {} docker calls: is DOCKER still honoured?",
        counts[1]
    );
    drop(cleanup);
    f.finish("setup-secrets develop --backend swarm");
}

fn which_docker() -> PathBuf {
    let out = Command::new("which").arg("docker").output().unwrap();
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}
