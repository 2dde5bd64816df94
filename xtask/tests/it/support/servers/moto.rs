//! A moto (AWS Secrets Manager mock) server of a test's own on a free loopback
//! port, killed on drop, with dummy credentials isolated from any real AWS
//! set-up; and the gate that fails under CI when `moto_server` or `aws` is
//! missing (`bash .ci/moto.sh` installs both).

use std::{
    net::TcpStream,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::super::{Run, TempRepo, ci, skip_note};

/// True when `moto_server` and `aws` are on PATH. Under `CI=true` a missing
/// one fails the test; elsewhere the test is skipped loudly.
pub fn moto_or_skip(test: &str) -> bool {
    let missing: Vec<&str> = ["moto_server", "aws"]
        .into_iter()
        .filter(|p| which::which(p).is_err())
        .collect();
    if missing.is_empty() {
        return true;
    }
    if ci() {
        panic!(
            "{test}: CI is set but {} is not installed; .ci/run must run `bash .ci/moto.sh`",
            missing.join(" and ")
        );
    }
    skip_note(format_args!(
        "\n*** SKIPPED {test}: {} not installed (`bash .ci/moto.sh`, or `pip install 'moto[server]' awscli`) ***\n",
        missing.join(" and ")
    ));
    false
}

/// A moto server on a free port, killed on drop.
pub struct Moto {
    child: Child,
    pub url: String,
}

impl Moto {
    /// Starts `moto_server` and waits (at most 30 s) until it listens.
    pub fn start() -> Moto {
        let port = super::free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = Moto {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "moto_server did not listen on port {port} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    /// Dummy credentials and the endpoint, isolated from any real AWS set-up.
    pub fn env(&self, c: &mut Command, repo: &TempRepo) {
        c.env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", &self.url)
            .env("AWS_CONFIG_FILE", repo.path("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                repo.path("no-aws-credentials"),
            )
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_REGION")
            .env_remove("AWS_CLI");
    }

    /// `aws secretsmanager ARGS` against this server, parsed JSON.
    pub fn aws(&self, repo: &TempRepo, args: &[&str]) -> Value {
        let mut c = Command::new("aws");
        c.args(["--output", "json", "secretsmanager"]).args(args);
        self.env(&mut c, repo);
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "aws secretsmanager {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// The real xtask binary in `repo`, against this server.
    pub fn xtask(&self, repo: &TempRepo, args: &[&str]) -> Command {
        let mut c = repo.xtask(args);
        self.env(&mut c, repo);
        c
    }

    pub fn run(&self, repo: &TempRepo, args: &[&str]) -> Run {
        Run::from(self.xtask(repo, args).output().unwrap())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
