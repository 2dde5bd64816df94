//! The rotate hooks in `deploy/hooks/` with a recording `docker` in front of
//! them: each docker call's argv and the stdin of `docker secret create`. The
//! new value reaches docker only on that stdin (then the job's
//! `/run/secrets/new`), never an argv; the job runs the right program with the
//! right arguments on the right network, node and volume. Grafana's hook is
//! checked only this way and in the stack test's stand-in (Grafana is not
//! packaged in Debian, so it does not run here).

mod support;

use std::{io::Write, path::Path, process::Command};

use support::TempRepo;

/// A `docker` that records each call (one argv per line, words NUL-separated)
/// and the stdin of `secret create`, and answers what the hooks ask.
const FAKE_DOCKER: &str = r#"#!/bin/bash
printf '%s\0' "$@" >>"$REC/argv"; printf '\n' >>"$REC/argv"
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
    calls: Vec<Vec<String>>,
    stdin: String,
}

fn run_hook(repo: &TempRepo, hook: &str, phase: &str, value: &str) -> Recorded {
    let rec = repo.path("rec");
    std::fs::create_dir_all(&rec).unwrap();
    let bin = repo.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fake = bin.join("docker");
    std::fs::write(&fake, FAKE_DOCKER).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let mut child = Command::new(repo.path(hook))
        .current_dir(&repo.root)
        .env("PATH", path)
        .env("REC", &rec)
        .env("XTASK_PROJECT", "raqeem")
        .env("XTASK_ENV", "production")
        .env("XTASK_PHASE", phase)
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
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A hook with nothing to do in this phase exits without reading its
    // stdin; the tool ignores that broken pipe, and so does this test.
    match child.stdin.take().unwrap().write_all(value.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("{hook}: {e}"),
        _ => {}
    }
    let st = child.wait().unwrap();
    assert!(st.success(), "{hook} ({phase}) failed");
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
    let out = Recorded {
        calls,
        stdin: read(&rec.join("stdin")),
    };
    let _ = std::fs::remove_dir_all(&rec);
    out
}

fn call<'a>(r: &'a Recorded, a: &str, b: &str) -> &'a Vec<String> {
    r.calls
        .iter()
        .find(|c| c.len() > 1 && c[0] == a && c[1] == b)
        .unwrap_or_else(|| panic!("no `docker {a} {b}` call in {:?}", r.calls))
}

fn has_pair(argv: &[String], flag: &str, value: &str) -> bool {
    argv.windows(2).any(|w| w[0] == flag && w[1] == value)
}

const VALUE: &str = "n3w 'Pa$$\"w0rd`x";

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
            &format!("source={tag},target=new,mode=0400")
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
            "grafana cli --homepath /usr/share/grafana admin reset-admin-password --password-from-stdin </run/secrets/new",
        ],
        "{job:?}"
    );
    // The job, its container and the temporary secret are removed.
    assert!(
        r.calls
            .iter()
            .any(|c| c[..2] == ["service", "rm"] && c[2] == *tag)
    );
    assert!(
        r.calls
            .iter()
            .any(|c| c[..2] == ["secret", "rm"] && c[2] == *tag)
    );
    for c in &r.calls {
        assert!(
            !c.iter().any(|w| w.contains("Pa$$")),
            "value on argv: {c:?}"
        );
    }
    // The after phase has nothing to do for grafana.
    let after = run_hook(&repo, "deploy/hooks/grafana-admin-password", "after", VALUE);
    assert!(after.calls.is_empty(), "{:?}", after.calls);
}

#[test]
fn database_and_redis_hooks_keep_values_off_every_argv() {
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
        assert_eq!(before.stdin, VALUE, "{hook}");
        let job = call(&before, "service", "create");
        for l in live {
            assert!(has_pair(job, "--secret", l), "{hook}: {job:?}");
        }
        assert!(
            job.iter().any(|w| w.ends_with(",target=new,mode=0400")),
            "{hook}: {job:?}"
        );
        let after = run_hook(&repo, hook, "after", VALUE);
        assert!(
            after.stdin.is_empty(),
            "{hook}: the after phase needs no new secret"
        );
        let job = call(&after, "service", "create");
        assert!(
            !job.iter().any(|w| w.contains("target=new")),
            "{hook}: {job:?}"
        );
        for c in before.calls.iter().chain(&after.calls) {
            assert!(
                !c.iter().any(|w| w.contains("Pa$$")),
                "{hook}: value on argv: {c:?}"
            );
        }
    }
}
