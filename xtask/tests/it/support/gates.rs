//! Whether this run is CI's, and the gates of the tests that need a tool or a
//! server: under `CI=true` a missing one fails the test; elsewhere the test is
//! skipped with a loud note that says so (a skipped test counts as passed).

use std::process::Command;
use std::sync::OnceLock;

use super::docker::sweep_stale_docker;

/// Whether this run is CI's (`CI` set, not `false` or `0`): a test that needs
/// a server fails then instead of skipping.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Says that a test skipped (or gives a figure), where `cargo test` shows it:
/// straight to the process's stderr, since libtest captures `eprintln!` of a
/// passing test and a skipped test is counted as passed. Under `CI=true` the
/// gates fail instead of skipping.
pub fn skip_note(msg: std::fmt::Arguments) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// True when a Docker engine answers. Under `CI=true` a missing engine fails the
/// test; elsewhere the test is skipped with a loud message.
pub fn docker_or_skip(test: &str) -> bool {
    let up = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if up {
        return true;
    }
    if ci() {
        panic!("{test}: CI is set but no Docker engine answers; .ci/run must start dockerd");
    }
    skip_note(format_args!(
        "\n*** SKIPPED {test}: no Docker engine answers (start dockerd to run it) ***\n"
    ));
    false
}

/// True when this node is a swarm manager (needed by swarm tests); same CI rule.
pub fn swarm_or_skip(test: &str) -> bool {
    if !docker_or_skip(test) {
        return false;
    }
    let out = Command::new("docker")
        .args([
            "info",
            "--format",
            "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}",
        ])
        .output()
        .unwrap();
    if String::from_utf8_lossy(&out.stdout).trim() == "active true" {
        static SWEPT: OnceLock<()> = OnceLock::new();
        SWEPT.get_or_init(sweep_stale_docker);
        return true;
    }
    if ci() {
        panic!(
            "{test}: CI is set but this Docker engine is not a swarm manager; .ci/run must run `docker swarm init`"
        );
    }
    skip_note(format_args!(
        "\n*** SKIPPED {test}: Docker is not in swarm mode (run `docker swarm init --advertise-addr 127.0.0.1`) ***\n"
    ));
    false
}

/// True when a cluster answers in KUBECONFIG. Under `CI=true` a missing one
/// fails the test; elsewhere the test is skipped loudly.
pub fn cluster_or_skip(test: &str) -> bool {
    let up = Command::new("kubectl")
        .args(["get", "--raw", "/readyz"])
        .output()
        .is_ok_and(|o| o.status.success());
    if up {
        return true;
    }
    if ci() {
        panic!(
            "{test}: CI is set but no Kubernetes cluster answers (KUBECONFIG={:?}); .ci/run must start it with .ci/k8s/up.sh",
            std::env::var("KUBECONFIG")
        );
    }
    skip_note(format_args!(
        "\n*** SKIPPED {test}: no Kubernetes cluster answers (set KUBECONFIG, or run .ci/k8s/up.sh) ***\n"
    ));
    false
}

/// True when strace is installed (the leak and crash tests need it). Under
/// `CI=true` a missing strace fails the test; elsewhere it is skipped loudly.
pub fn strace_or_skip(test: &str) -> bool {
    let ok = Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok && ci() {
        panic!("{test}: CI is set but strace is not installed; .ci/run must install it");
    }
    if !ok {
        skip_note(format_args!(
            "\n*** SKIPPED {test}: strace is not installed (apt-get install strace) ***\n"
        ));
    }
    ok
}

/// True when util-linux `script` (a pseudo-terminal) runs. Under `CI=true`
/// its absence fails the test; elsewhere the test is skipped loudly.
pub fn script_or_skip() -> bool {
    let ok = Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok && ci() {
        panic!("CI is set but `script` (util-linux, Debian: bsdutils) is not installed");
    }
    if !ok {
        skip_note(format_args!(
            "\n*** SKIPPED a terminal test: `script` (util-linux) is not installed ***\n"
        ));
    }
    ok
}
