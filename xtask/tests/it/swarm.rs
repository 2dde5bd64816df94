//! The swarm backend on a real engine: versioned secrets with labels, a stack
//! that reads them, a no-op re-run in one docker call, a rotation under load
//! with no failed request, pruning, and removal that refuses while in use.
//!
//! No IPVS here, so the service uses `endpoint_mode: dnsrr` on an attachable
//! overlay network, and a client container on that network sends the requests.

use crate::support;
use support::env_value;

use std::{
    os::unix::fs::PermissionsExt,
    process::Command,
    time::{Duration, Instant},
};

use support::flows::{load_report, probe_manifest, probe_stack, secret_labels, served, start_load};
use support::{TempRepo, docker, probe_image, swarm_or_skip, unique};

const ENV: &str = "stage";

/// Rotates one secret; used twice to see versions kept and pruned.
const ROTATE_PASSWORD: [&str; 6] = [
    "rotate-secrets",
    ENV,
    "--secret",
    "app_password",
    "--timeout",
    "120",
];

/// Removes everything the test created, whatever happened.
struct Cleanup {
    project: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let p = &self.project;
        let quiet = |args: &[&str]| Command::new("docker").args(args).output();
        let _ = quiet(&["rm", "-f", &format!("{p}-load")]);
        let _ = quiet(&["stack", "rm", &format!("{p}-{ENV}")]);
        wait_stack_gone(&format!("{p}-{ENV}"));
        let label = format!("label=xtask.project={p}");
        if let Ok(o) = quiet(&["secret", "ls", "-q", "--filter", &label]) {
            let ids: Vec<String> = String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(String::from)
                .collect();
            if !ids.is_empty() {
                let mut args = vec!["secret".to_string(), "rm".into()];
                args.extend(ids);
                let _ = Command::new("docker").args(&args).output();
            }
        }
        let _ = quiet(&["network", "rm", &format!("{p}-net")]);
    }
}

/// The app_password hook: writes what it reads on stdin to hook-out.txt.
const HOOK: &str = "rotate_hook = [\"dd\", \"of=hook-out.txt\", \"status=none\"]\n";

/// Rollbacks start the old task first too.
const ROLLBACK: &str = "      rollback_config: { order: start-first }\n";

fn wait_stack_gone(stack: &str) {
    let start = Instant::now();
    let label = "label=com.docker.swarm.service.name";
    while start.elapsed() < Duration::from_secs(60) {
        let out = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                label,
                "--filter",
                &format!("name={stack}_"),
            ])
            .output();
        let svc = Command::new("docker")
            .args([
                "service",
                "ls",
                "-q",
                "--filter",
                &format!("label=com.docker.stack.namespace={stack}"),
            ])
            .output();
        let empty = |o: std::io::Result<std::process::Output>| {
            o.map(|o| o.stdout.iter().all(u8::is_ascii_whitespace))
                .unwrap_or(true)
        };
        if empty(out) && empty(svc) {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// KEY=value lines of the env file (generated values need no unquoting).
/// A short run of the load client on the stack's network; returns its report.
fn load_once(net: &str, image: &str, count: &str) -> String {
    docker(&[
        "run",
        "--rm",
        "--network",
        net,
        image,
        "load",
        "--target",
        "web:8080",
        "--count",
        count,
    ])
}

fn url(repo: &TempRepo, project: &str) -> String {
    format!(
        "postgresql://{}:{}@db/{project}_{ENV}",
        env_value(repo, ENV, "APP_USER"),
        env_value(repo, ENV, "APP_PASSWORD")
    )
}

#[test]
fn swarm_setup_deploy_rotate_remove() {
    if !swarm_or_skip("swarm_setup_deploy_rotate_remove") {
        return;
    }
    let image = probe_image();
    let project = format!("xt{}", unique());
    let stack_name = format!("{project}-{ENV}");
    let net = format!("{project}-net");
    let _cleanup = Cleanup {
        project: project.clone(),
    };
    let repo = TempRepo::new();
    repo.write("deploy/secrets.toml", &probe_manifest(&project, ENV, HOOK));
    repo.write("test-stack.yml", &probe_stack(image, &net, ROLLBACK));
    let run = |args: &[&str]| {
        support::Run::from(
            repo.xtask(args)
                .env("XTASK_RESOLVE_IMAGE", "never")
                .output()
                .unwrap(),
        )
    };

    run(&["check"]).ok();

    // 1. setup creates v1 of everything, labelled; deploy serves the values.
    let out = run(&["setup-secrets", ENV, "--generate-missing"]).ok();
    assert!(
        out.stdout
            .contains(&format!("{project}_{ENV}_app_password_v1")),
        "{}",
        out.stdout
    );
    let labels = secret_labels(&format!("{project}_{ENV}_app_password_v1"));
    assert_eq!(labels["xtask.tool"], "cargo-xtask");
    assert_eq!(labels["xtask.project"], project.as_str());
    assert_eq!(labels["xtask.environment"], ENV);
    assert_eq!(labels["xtask.secret"], "app_password");
    assert_eq!(labels["xtask.version"], "1");
    assert_eq!(labels["xtask.fingerprint"].as_str().unwrap().len(), 16);

    let dry = run(&["deploy", ENV, "--dry-run"]).ok();
    assert!(
        dry.stdout
            .contains(&format!("name: {project}_{ENV}_api_key_v1")),
        "{}",
        dry.stdout
    );
    let deployed = run(&["deploy", ENV, "--timeout", "120"]).ok();
    assert!(!deployed.stdout.contains('\r'), "{:?}", deployed.stdout);
    let client = load_once(&net, image, "5");
    assert!(client.contains("failed=0"), "{client}");
    for (name, value) in [
        ("app_password", env_value(&repo, ENV, "APP_PASSWORD")),
        ("api_key", env_value(&repo, ENV, "API_KEY")),
        ("app_url", url(&repo, &project)),
    ] {
        assert!(
            client.contains(&served(name, &value)),
            "{name} not served right: {client}"
        );
    }

    // 2. verify passes; a re-run of setup changes nothing in one docker call.
    run(&["verify-secrets", ENV]).ok();
    let dir = repo.path("wrap");
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("calls.log");
    let wrapper = dir.join("docker");
    let real =
        String::from_utf8(Command::new("which").arg("docker").output().unwrap().stdout).unwrap();
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec {} \"$@\"\n",
            log.display(),
            real.trim()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let again = support::Run::from(
        repo.xtask(&["setup-secrets", ENV])
            .env("DOCKER", &wrapper)
            .output()
            .unwrap(),
    )
    .ok();
    assert!(again.stdout.contains("nothing to do"), "{}", again.stdout);
    let calls = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        calls.lines().count(),
        1,
        "expected one docker call, got:\n{calls}"
    );
    assert!(calls.starts_with("secret ls"), "{calls}");

    let list = run(&["list-secrets", ENV]).ok();
    assert!(
        list.stdout.contains("current") && list.stdout.contains(&format!("{stack_name}_web@v1")),
        "{}",
        list.stdout
    );

    // 3. rotation under continuous load: no failed request, new value served.
    let old_password = env_value(&repo, ENV, "APP_PASSWORD");
    let load_name = format!("{project}-load");
    start_load(&load_name, &net, image);
    let rot = run(&ROTATE_PASSWORD).ok();
    let new_password = env_value(&repo, ENV, "APP_PASSWORD");
    assert_ne!(old_password, new_password);
    // The hook ran before the swap with the new value, and only it, on stdin.
    assert_eq!(
        repo.read("hook-out.txt"),
        new_password,
        "the rotate_hook did not get the new value on stdin"
    );
    assert!(
        !rot.all().contains(&new_password) && !rot.all().contains(&old_password),
        "a value was printed"
    );
    let logs = load_report(&load_name, "rotation");
    assert!(
        logs.contains(&served("app_password", &new_password)),
        "not on the new value at the end: {logs}"
    );
    assert!(
        logs.contains(&served("app_url", &url(&repo, &project))),
        "{logs}"
    );
    let tsv = repo.read("deploy/audit-log.tsv");
    assert!(
        tsv.starts_with(
            "time\tenvironment\tcommand\taction\tsecret\tversion\toperator\tstore\toutcome\n"
        ),
        "{tsv}"
    );
    assert!(
        tsv.lines().any(|l| l.contains(&format!(
            "\t{ENV}\trotate-secrets\tupdate\tapp_password\tv2\t"
        )) && l.ends_with("\tswarm\tok")),
        "{tsv}"
    );
    assert!(!tsv.contains(&new_password));

    // A second rotation: v3 is live, v2 (the previous) is kept, v1 is gone.
    run(&ROTATE_PASSWORD).ok();
    let names = docker(&[
        "secret",
        "ls",
        "--filter",
        &format!("label=xtask.project={project}"),
        "--format",
        "{{.Name}}",
    ]);
    let pw = |v: u32| format!("{project}_{ENV}_app_password_v{v}");
    assert!(
        names.lines().any(|n| n == pw(3)) && names.lines().any(|n| n == pw(2)),
        "{names}"
    );
    assert!(
        !names.lines().any(|n| n == pw(1)),
        "v1 should have been pruned: {names}"
    );
    let client = load_once(&net, image, "3");
    assert!(
        client.contains(&served(
            "app_password",
            &env_value(&repo, ENV, "APP_PASSWORD")
        )),
        "{client}"
    );

    // 4. removal refuses while the stack uses the secrets, works after.
    let refused = run(&["remove-secrets", ENV, "--yes"]).fails();
    assert!(
        refused.stderr.contains("used by") && refused.stderr.contains(&format!("{stack_name}_web")),
        "{}",
        refused.stderr
    );
    docker(&["rm", "-f", &load_name]);
    docker(&["stack", "rm", &stack_name]);
    wait_stack_gone(&stack_name);
    run(&["remove-secrets", ENV, "--yes"]).ok();
    let left = docker(&[
        "secret",
        "ls",
        "-q",
        "--filter",
        &format!("label=xtask.project={project}"),
    ]);
    assert!(left.trim().is_empty(), "secrets left: {left}");
}

#[test]
fn swarm_deploy_surfaces_an_image_that_cannot_be_pulled() {
    if !swarm_or_skip("swarm_deploy_surfaces_an_image_that_cannot_be_pulled") {
        return;
    }
    let project = format!("xt{}", unique());
    let net = format!("{project}-net");
    let _cleanup = Cleanup {
        project: project.clone(),
    };
    let repo = TempRepo::new();
    repo.write("deploy/secrets.toml", &probe_manifest(&project, ENV, HOOK));
    repo.write(
        "test-stack.yml",
        &probe_stack("xtask-no-such-image:never", &net, ROLLBACK),
    );
    let run = |args: &[&str]| {
        support::Run::from(
            repo.xtask(args)
                .env("XTASK_RESOLVE_IMAGE", "never")
                .output()
                .unwrap(),
        )
    };
    run(&["setup-secrets", ENV, "--generate-missing"]).ok();
    let started = Instant::now();
    let out = run(&["deploy", ENV, "--timeout", "90"]).fails();
    assert!(
        out.stderr.contains(&format!("{project}-{ENV}_web")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.to_lowercase().contains("image"),
        "{}",
        out.stderr
    );
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "it waited for the timeout instead of reporting the task error"
    );
    // Not a terminal: the wait is plain lines with the elapsed time, never a
    // carriage return or an escape code.
    assert!(out.stdout.contains("waiting ("), "{}", out.stdout);
    assert!(
        !out.stdout.contains('\r') && !out.stdout.contains('\x1b'),
        "{:?}",
        out.stdout
    );
}

/// A rotation killed while its hook runs leaves the hook's temporary secret
/// (`xtask-hook-<pid>-<n>`, which holds the new value); the next rotation,
/// deploy or removal on this host removes it, as the hook's own process is
/// gone (or a zombie).
#[test]
fn a_rotation_killed_mid_hook_leaves_no_secret_after_the_next_run() {
    let test = "a_rotation_killed_mid_hook_leaves_no_secret_after_the_next_run";
    if !swarm_or_skip(test) {
        return;
    }
    let project = format!("xt{}", unique());
    let _cleanup = Cleanup {
        project: project.clone(),
    };
    let repo = TempRepo::new();
    // The hook stores its stdin (the new value) as the temporary secret, as
    // the shipped hooks do, says so, and hangs until it is killed.
    repo.write(
        "deploy/hooks/slow-hook",
        "#!/usr/bin/env bash\nsource \"$(dirname \"$0\")/lib.sh\"\n[ \"$phase\" != check ] || exit 0\njob_input\ntouch hook-ready\nsleep 120\n",
    );
    std::fs::set_permissions(
        repo.path("deploy/hooks/slow-hook"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    repo.write(
        "deploy/secrets.toml",
        &probe_manifest(
            &project,
            ENV,
            "rotate_hook = [\"deploy/hooks/slow-hook\"]\n",
        ),
    );
    repo.run(&["setup-secrets", ENV, "--generate-missing"]).ok();
    use std::os::unix::process::CommandExt;
    let mut rotation = repo
        .xtask(&["rotate-secrets", ENV, "--secret", "app_password"])
        .process_group(0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !repo.path("hook-ready").exists() {
        if started.elapsed() > Duration::from_secs(60) || rotation.try_wait().unwrap().is_some() {
            let _ = unsafe { libc::kill(-(rotation.id() as i32), libc::SIGKILL) };
            panic!("the hook never started (or the rotation ended first)");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let hook_secrets = || {
        docker(&[
            "secret",
            "ls",
            "--filter",
            "label=xtask.hook=1",
            "--format",
            "{{.Name}} {{.Label \"xtask.hook.pid\"}}",
        ])
    };
    // The hook's own pid, from the secret it made (others' may be listed too).
    let ours: Vec<String> = hook_secrets()
        .lines()
        .filter(|l| {
            l.split_whitespace().nth(1).is_some_and(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.contains("slow-hook"))
            })
        })
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(ours.len(), 1, "the hook's secret: {}", hook_secrets());
    // Killed as a whole (the tool, and the hook it started): no cleanup runs.
    unsafe { libc::kill(-(rotation.id() as i32), libc::SIGKILL) };
    rotation.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        hook_secrets().contains(&ours[0]),
        "the killed hook's secret went by itself; the test proves nothing"
    );
    // The next run on this host that drives the runtime sweeps it (here a
    // removal of a secret no service uses: no stack is deployed).
    let next = repo
        .run(&["remove-secrets", ENV, "--secret", "api_key", "--yes"])
        .ok();
    assert!(
        next.stdout
            .contains(&format!("removed the temporary secret {}", ours[0])),
        "{}",
        next.all()
    );
    assert!(
        !hook_secrets().contains(&ours[0]),
        "still there: {}",
        hook_secrets()
    );
}
