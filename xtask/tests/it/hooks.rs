//! The rotate hooks in `deploy/hooks/` with a recording `docker` and
//! `kubectl` in front of them: each call's argv and the stdin of `docker
//! secret create`, `docker exec` and `kubectl exec`. On every runtime the new
//! value reaches them only on stdin, never an argv; the work runs in the
//! right container, pod, namespace, network, node and volume; the check phase
//! refuses what the hook cannot do. Grafana's hook is checked only this way
//! and in the stack tests' stand-in (Grafana is not packaged in Debian, so it
//! does not run here).

use crate::support;

use std::{io::Write, path::Path, process::Command};

use support::TempRepo;

/// A `docker` that records each call (one argv per line, words NUL-separated)
/// and the stdin of `secret create`, and answers what the hooks ask.
const FAKE_DOCKER: &str = r#"#!/bin/bash
prog=$(basename "$0")
printf '%s\0' "$prog" "$@" >>"$REC/argv"; printf '\n' >>"$REC/argv"
args=("$@")
if [ "$prog" = kubectl ]; then
  while [ "${args[0]:-}" = --context ] || [ "${args[0]:-}" = -n ]; do args=("${args[@]:2}"); done
fi
set -- "${args[@]}"
case "$prog $1" in
  "docker exec" | "kubectl exec") cat >>"$REC/stdin"; exit "${EXEC_EXIT:-0}" ;;
  "kubectl get")
    [ -n "${NO_SERVER:-}" ] || for a; do case $a in app.kubernetes.io/name=*) echo "${a#*=}-0" ;; esac; done
    exit 0 ;;
  "docker ps")
    case " $* " in
      *compose.project=raqeem-develop*) [ -n "${NO_SERVER:-}" ] || echo c0ffee ;;
      *swarm.service.name=raqeem-production_*) [ -z "${LOCAL_TASK:-}" ] || echo d0d0 ;;
    esac
    exit 0 ;;
esac
case "$1 $2" in
  "secret create") cat >>"$REC/stdin" ;;
  "service inspect") echo "example/image:1" ;;
  "service ps")
    case " $* " in
      *" -q "*) echo task1 ;;
      *) echo "Complete 1 second ago" ;;
    esac ;;
  "inspect --type") echo node-w ;;
esac
exit 0
"#;

struct Recorded {
    /// Each call: the program's name, then its arguments.
    calls: Vec<Vec<String>>,
    /// What `docker secret create`, `docker exec` and `kubectl exec` read.
    stdin: String,
    code: i32,
    stderr: String,
}

/// The runtime settings a hook gets from rotate-secrets, per runtime.
fn runtime_env(runtime: &str) -> Vec<(&'static str, &'static str)> {
    match runtime {
        "compose" => vec![
            ("XTASK_ENV", "develop"),
            ("XTASK_COMPOSE_PROJECT", "raqeem-develop"),
            ("XTASK_STORE", "compose"),
        ],
        "k8s" => vec![
            ("XTASK_ENV", "production"),
            ("XTASK_K8S_NAMESPACE", "raqeem-prod-ns"),
            ("XTASK_K8S_CONTEXT", "prod-ctx"),
            ("XTASK_STORE", "k8s"),
        ],
        _ => vec![
            ("XTASK_ENV", "production"),
            ("XTASK_STACK", "raqeem-production"),
            ("XTASK_STORE", "swarm"),
        ],
    }
}

fn run_hook(repo: &TempRepo, hook: &str, phase: &str, value: &str) -> Recorded {
    let r = run_hook_with(repo, hook, phase, value, &runtime_env("swarm"), "swarm");
    assert_eq!(r.code, 0, "{hook} ({phase}) failed: {}", r.stderr);
    r
}

fn run_hook_with(
    repo: &TempRepo,
    hook: &str,
    phase: &str,
    value: &str,
    env: &[(&str, &str)],
    runtime: &str,
) -> Recorded {
    let rec = repo.path("rec");
    std::fs::create_dir_all(&rec).unwrap();
    let bin = repo.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for prog in ["docker", "kubectl"] {
        let fake = bin.join(prog);
        std::fs::write(&fake, FAKE_DOCKER).unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let alt = repo.path("alternate");
    std::fs::write(&alt, "raqeem_production\nraqeem_production_b\n").unwrap();
    let mut child = Command::new(repo.path(hook))
        .current_dir(&repo.root)
        .env("PATH", path)
        .env("REC", &rec)
        .env("XTASK_PROJECT", "raqeem")
        .env("XTASK_RUNTIME", runtime)
        .env("XTASK_SECRET", "the_secret")
        .env("XTASK_PHASE", phase)
        .env("XTASK_ALTERNATE_FILE", &alt)
        .env(
            "XTASK_ID_POSTGRES_USER",
            "raqeem_production_postgres_user_v2",
        )
        .env(
            "XTASK_ID_POSTGRES_PASSWORD",
            "raqeem_production_postgres_password_v2",
        )
        .env("XTASK_ID_DATABASE_URL", "raqeem_production_database_url_v2")
        .env(
            "XTASK_ID_REDIS_PASSWORD",
            "raqeem_production_redis_password_v4",
        )
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A hook with nothing to do in this phase exits without reading its
    // stdin; the tool ignores that broken pipe, and so does this test.
    match child.stdin.take().unwrap().write_all(value.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("{hook}: {e}"),
        _ => {}
    }
    let out = child.wait_with_output().unwrap();
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let calls = read(&rec.join("argv"))
        .lines()
        .map(|l| {
            l.split('\0')
                .filter(|w| !w.is_empty())
                .map(String::from)
                .collect()
        })
        .collect();
    let r = Recorded {
        calls,
        stdin: read(&rec.join("stdin")),
        code: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    let _ = std::fs::remove_dir_all(&rec);
    r
}

/// The first `docker A B ...` call.
fn call<'a>(r: &'a Recorded, a: &str, b: &str) -> &'a Vec<String> {
    r.calls
        .iter()
        .find(|c| c.len() > 2 && c[0] == "docker" && c[1] == a && c[2] == b)
        .unwrap_or_else(|| panic!("no `docker {a} {b}` call in {:?}", r.calls))
}

fn has_pair(argv: &[String], flag: &str, value: &str) -> bool {
    argv.windows(2).any(|w| w[0] == flag && w[1] == value)
}

const VALUE: &str = "n3w 'Pa$$\"w0rd`x";

fn no_value_on_argv(r: &Recorded, what: &str) {
    for c in &r.calls {
        assert!(
            !c.iter().any(|w| w.contains("Pa$$")),
            "{what}: value on argv: {c:?}"
        );
    }
}

#[test]
fn grafana_hook_runs_grafana_cli_with_the_value_on_stdin_only() {
    let repo = TempRepo::new();
    let r = run_hook(
        &repo,
        "deploy/hooks/grafana-admin-password",
        "before",
        VALUE,
    );
    assert_eq!(
        r.stdin, VALUE,
        "the value reaches docker secret create on stdin"
    );
    let create = call(&r, "secret", "create");
    assert_eq!(
        create.last().unwrap(),
        "-",
        "secret create reads stdin: {create:?}"
    );
    let job = call(&r, "service", "create");
    assert!(has_pair(job, "--mode", "replicated-job"), "{job:?}");
    assert!(
        has_pair(job, "--network", "raqeem-production_default"),
        "{job:?}"
    );
    assert!(has_pair(job, "--constraint", "node.id==node-w"), "{job:?}");
    assert!(
        has_pair(
            job,
            "--mount",
            "type=volume,source=raqeem-production_grafana-data,target=/var/lib/grafana"
        ),
        "{job:?}"
    );
    let tag = &create[create.len() - 2];
    assert!(
        has_pair(
            job,
            "--secret",
            &format!("source={tag},target=in,mode=0400")
        ),
        "{job:?}"
    );
    let tail: Vec<&str> = job[job.len() - 5..].iter().map(String::as_str).collect();
    assert_eq!(
        tail,
        [
            "--entrypoint",
            "sh",
            "example/image:1",
            "-euc",
            "grafana cli --homepath /usr/share/grafana admin reset-admin-password --password-from-stdin </run/secrets/in",
        ],
        "{job:?}"
    );
    // The job, its container and the temporary secret are removed.
    assert!(
        r.calls
            .iter()
            .any(|c| c[1..3] == ["service", "rm"] && c[3] == *tag)
    );
    assert!(
        r.calls
            .iter()
            .any(|c| c[1..3] == ["secret", "rm"] && c[3] == *tag)
    );
    no_value_on_argv(&r, "grafana");
    // The after phase has nothing to do for grafana.
    let after = run_hook(&repo, "deploy/hooks/grafana-admin-password", "after", VALUE);
    assert!(after.calls.is_empty(), "{:?}", after.calls);
}

#[test]
fn database_and_redis_jobs_keep_values_off_every_argv() {
    let repo = TempRepo::new();
    for (hook, live) in [
        (
            "deploy/hooks/postgres-password",
            [
                "source=raqeem_production_postgres_user_v2,target=user,mode=0400",
                "source=raqeem_production_postgres_password_v2,target=password,mode=0400",
            ],
        ),
        (
            "deploy/hooks/redis-password",
            [
                "source=raqeem_production_redis_password_v4,target=password,mode=0400",
                "source=raqeem_production_redis_password_v4,target=password,mode=0400",
            ],
        ),
    ] {
        let before = run_hook(&repo, hook, "before", VALUE);
        assert!(
            before.stdin.starts_with("before\n") && before.stdin.contains(&format!("\n{VALUE}\n")),
            "{hook}: the job's input holds the phase and the value"
        );
        let job = call(&before, "service", "create");
        for l in live {
            assert!(has_pair(job, "--secret", l), "{hook}: {job:?}");
        }
        assert!(
            job.iter().any(|w| w.ends_with(",target=in,mode=0400")),
            "{hook}: {job:?}"
        );
        let after = run_hook(&repo, hook, "after", VALUE);
        assert!(after.stdin.starts_with("after\n"), "{hook}");
        no_value_on_argv(&before, hook);
        no_value_on_argv(&after, hook);
    }
}

/// Compose and Kubernetes (and swarm with the server's task on this node):
/// the work runs inside the server's container, the value on exec's stdin.
#[test]
fn hooks_exec_into_the_server_on_every_runtime() {
    let repo = TempRepo::new();
    for (runtime, extra) in [
        ("compose", vec![]),
        ("k8s", vec![]),
        ("swarm", vec![("LOCAL_TASK", "1")]),
    ] {
        let mut env = runtime_env(runtime);
        env.extend(extra);
        for (hook, server) in [
            ("deploy/hooks/postgres-password", "postgres"),
            ("deploy/hooks/redis-password", "redis"),
            ("deploy/hooks/grafana-admin-password", "grafana"),
        ] {
            let what = format!("{hook} on {runtime}");
            let r = run_hook_with(&repo, hook, "before", VALUE, &env, runtime);
            assert_eq!(r.code, 0, "{what}: {}", r.stderr);
            assert!(r.stdin.contains(VALUE), "{what}: the value on exec's stdin");
            no_value_on_argv(&r, &what);
            assert!(
                !r.calls
                    .iter()
                    .any(|c| c.get(1).is_some_and(|w| w == "service" || w == "secret")),
                "{what}: no job, no temporary secret: {:?}",
                r.calls
            );
            let exec = r
                .calls
                .iter()
                .find(|c| c.iter().any(|w| w == "exec"))
                .unwrap_or_else(|| panic!("{what}: no exec in {:?}", r.calls));
            match runtime {
                "k8s" => {
                    assert_eq!(exec[0], "kubectl", "{what}");
                    assert!(has_pair(exec, "--context", "prod-ctx"), "{what}: {exec:?}");
                    assert!(has_pair(exec, "-n", "raqeem-prod-ns"), "{what}: {exec:?}");
                    assert!(exec.contains(&format!("{server}-0")), "{what}: {exec:?}");
                    let get = r
                        .calls
                        .iter()
                        .find(|c| c.iter().any(|w| w == "get"))
                        .unwrap();
                    assert!(
                        get.contains(&format!("app.kubernetes.io/name={server}")),
                        "{what}: {get:?}"
                    );
                }
                "compose" => assert!(exec.contains(&"c0ffee".to_string()), "{what}: {exec:?}"),
                _ => assert!(exec.contains(&"d0d0".to_string()), "{what}: {exec:?}"),
            }
            assert!(
                exec.iter().any(|w| w == "-i") && exec.iter().any(|w| w == "sh"),
                "{what}: `exec -i ... sh -c SCRIPT`: {exec:?}"
            );
        }
    }
}

/// The check phase refuses, before anything changes, what a hook cannot do:
/// an unknown runtime, a server that is not running, a server that refuses.
#[test]
fn the_check_phase_refuses_what_a_hook_cannot_do() {
    let repo = TempRepo::new();
    for hook in [
        "deploy/hooks/postgres-password",
        "deploy/hooks/redis-password",
        "deploy/hooks/grafana-admin-password",
    ] {
        let ok = run_hook_with(&repo, hook, "check", "", &runtime_env("compose"), "compose");
        assert_eq!(ok.code, 0, "{hook}: {}", ok.stderr);
        assert!(ok.stdin.is_empty() || !ok.stdin.contains("Pa$$"));
        let nomad = run_hook_with(&repo, hook, "check", "", &runtime_env("compose"), "nomad");
        assert_eq!(nomad.code, 3, "{hook}: {}", nomad.stderr);
        assert!(
            nomad
                .stderr
                .contains("on the swarm, k8s and compose runtimes")
                && nomad.stderr.contains("'nomad'"),
            "{hook}: {}",
            nomad.stderr
        );
        let mut env = runtime_env("k8s");
        env.push(("NO_SERVER", "1"));
        let none = run_hook_with(&repo, hook, "check", "", &env, "k8s");
        assert_eq!(none.code, 3, "{hook}: {}", none.stderr);
        assert!(
            none.stderr.contains("has nothing running")
                && none.stderr.contains("cargo xtask deploy production"),
            "{hook}: {}",
            none.stderr
        );
        let mut env = runtime_env("compose");
        env.push(("EXEC_EXIT", "3"));
        let refused = run_hook_with(&repo, hook, "check", "", &env, "compose");
        assert_ne!(
            refused.code, 0,
            "{hook}: a refusal inside the server is a refusal"
        );
        // swarm without a local task, with a vault store: the job cannot mount.
        let mut env = runtime_env("swarm");
        env.retain(|(k, _)| *k != "XTASK_STORE");
        env.push(("XTASK_STORE", "vault"));
        let vault = run_hook_with(&repo, hook, "check", "", &env, "swarm");
        if hook.ends_with("grafana-admin-password") {
            assert_eq!(vault.code, 0, "{hook}: its job mounts no store secret");
        } else {
            assert_eq!(vault.code, 3, "{hook}: {}", vault.stderr);
            assert!(
                vault.stderr.contains("a vault store does not keep"),
                "{hook}: {}",
                vault.stderr
            );
        }
    }
    // A phase the protocol does not have is an error, not a silent success.
    let r = run_hook_with(
        &repo,
        "deploy/hooks/redis-password",
        "during",
        VALUE,
        &runtime_env("compose"),
        "compose",
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
}
