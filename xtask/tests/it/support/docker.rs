//! The Docker engine as the tests use it: `docker` with a checked outcome, the
//! sweep of what killed runs left behind, a project's swarm secrets removed,
//! and the compose project whose backend shows what it read.

use std::process::Command;

/// Runs docker with `args`, asserting success, returning stdout.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes what earlier test runs left on the shared engine when they were
/// killed before their own clean-up ran: stacks and secrets of test projects
/// (names starting `xt`, `xl`, `xb`, `xc`, `xk`) older than 30 minutes, so
/// nothing a concurrent test is using now is touched.
pub fn sweep_stale_docker() {
    let old = |created: &str| -> bool {
        let out = Command::new("date")
            .args(["-d", created.split(" +").next().unwrap_or(created), "+%s"])
            .output();
        let then: u64 = out
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(u64::MAX);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        now.saturating_sub(then) > 1800
    };
    let test_name = |n: &str| {
        ["xt", "xl", "xb", "xc", "xk"]
            .iter()
            .any(|p| n.starts_with(p))
    };
    let lines = |args: &[&str]| -> Vec<String> {
        Command::new("docker")
            .args(args)
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    for svc in lines(&["service", "ls", "-q"]) {
        let info = lines(&[
            "service",
            "inspect",
            "--format",
            "{{index .Spec.Labels \"com.docker.stack.namespace\"}}|{{.CreatedAt}}",
            &svc,
        ]);
        let Some((stack, created)) = info.first().and_then(|l| l.split_once('|')) else {
            continue;
        };
        if test_name(stack) && old(created) {
            let _ = Command::new("docker").args(["stack", "rm", stack]).output();
        }
    }
    for name in lines(&[
        "secret",
        "ls",
        "--filter",
        "label=xtask.tool=cargo-xtask",
        "--format",
        "{{.Name}}",
    ]) {
        if !test_name(&name) {
            continue;
        }
        let created = lines(&["secret", "inspect", "--format", "{{.CreatedAt}}", &name]);
        if created.first().is_some_and(|c| old(c)) {
            let _ = Command::new("docker")
                .args(["secret", "rm", &name])
                .output();
        }
    }
}

/// Removes every swarm secret of a test project (by its project label).
pub fn remove_project_secrets(project: &str) {
    let label = format!("label=xtask.project={project}");
    let Ok(out) = Command::new("docker")
        .args(["secret", "ls", "-q", "--filter", &label])
        .output()
    else {
        return;
    };
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect();
    if !ids.is_empty() {
        let _ = Command::new("docker")
            .args(["secret", "rm"])
            .args(&ids)
            .output();
    }
}

/// The backend's secrets in develop (every develop secret but grafana's).
pub const BACKEND: [&str; 7] = [
    "postgres_user",
    "postgres_password",
    "database_url",
    "better_auth_secret",
    "redis_password",
    "jwt_secret",
    "api_secret_key",
];

/// A compose file whose backend mounts its secrets as files (as the
/// project's own does) and runs the probe on the host network, so a reader
/// inside it reaches the dev server on 127.0.0.1.
pub fn host_compose(image: &str, port: u16) -> String {
    let mut s = format!(
        "version: \"3.8\"\nservices:\n  backend:\n    image: {image}\n    network_mode: host\n    command: [\"serve\", \"--port\", \"{port}\", \"jwt_secret\"]\n    healthcheck:\n      test: [\"CMD\", \"/probe\", \"health\", \"--port\", \"{port}\"]\n      interval: 1s\n      retries: 20\n    secrets: [{}]\nsecrets:\n",
        BACKEND.join(", ")
    );
    for n in BACKEND {
        s.push_str(&format!(
            "  {n}:\n    file: ${{XTASK_SECRETS_DIR:-./secrets/develop}}/{n}\n"
        ));
    }
    s
}

/// Brings the compose project down whatever happens in the test.
pub struct ComposeDown {
    pub root: std::path::PathBuf,
    pub project: String,
}

impl Drop for ComposeDown {
    fn drop(&mut self) {
        let _ = Command::new("docker-compose")
            .args(["-p", &self.project, "-f", "docker-compose.prod.yml"])
            .args(["down", "-t", "1", "-v"])
            .current_dir(&self.root)
            .env("XTASK_SECRETS_DIR", self.root.join("secrets/develop"))
            .output();
    }
}

/// `show NAME...` inside the project's one backend container: name, source, fingerprint.
pub fn show_in_backend(project: &str, names: &[&str]) -> Vec<(String, String, String)> {
    let id = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
        "--filter",
        "label=com.docker.compose.service=backend",
    ]);
    let id = id.trim();
    assert!(!id.is_empty() && !id.contains('\n'), "one backend: {id:?}");
    let mut args = vec!["exec", id, "/show"];
    args.extend(names);
    let out = Command::new("docker").args(&args).output().unwrap();
    show_lines(&String::from_utf8_lossy(&out.stdout))
}

/// The reader's `show` output: name, source, fingerprint per line.
pub fn show_lines(stdout: &str) -> Vec<(String, String, String)> {
    stdout
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.splitn(3, '\t').collect();
            assert_eq!(f.len(), 3, "show printed {l:?}");
            (f[0].to_string(), f[1].to_string(), f[2].to_string())
        })
        .collect()
}
