//! The repository harness: a throwaway copy of the repository's tracked files
//! to run the real `xtask` binary in, the outcome of a run, the values a test
//! reads back from an environment's env file, and the fixtures tests write
//! into a copy (values an operator really writes, a real TLS pair).

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::OnceLock,
};

/// The develop secrets of the shipped manifest, in manifest order.
pub const DEVELOP_SECRETS: [&str; 8] = [
    "postgres_user",
    "postgres_password",
    "database_url",
    "better_auth_secret",
    "redis_password",
    "jwt_secret",
    "api_secret_key",
    "grafana_admin_password",
];

/// The repository this test binary was built from.
pub fn source_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A throwaway copy of the repository's tracked files (the index: committed
/// or `git add`ed), itself a git repository (so the "tracked by git" rule can
/// be exercised), removed on drop. Untracked files never come along: what the
/// tool wrote in the checkout (the audit log, env files, runtime files) must
/// not change what a test sees.
pub struct TempRepo {
    pub root: PathBuf,
}

impl TempRepo {
    pub fn new() -> TempRepo {
        let root =
            std::env::temp_dir().join(format!("xtask-it-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&root).unwrap();
        let src = source_root();
        let files = Command::new("git")
            .args(["ls-files", "-z", "--cached"])
            .current_dir(&src)
            .output()
            .unwrap();
        assert!(
            files.status.success(),
            "git ls-files failed in {}",
            src.display()
        );
        for rel in files.stdout.split(|b| *b == 0).filter(|s| !s.is_empty()) {
            let rel = Path::new(std::str::from_utf8(rel).unwrap());
            // A developer's own secret material never goes into the copy.
            if rel.starts_with("secrets")
                && !rel.ends_with("README.md")
                && !rel.ends_with("example.env")
            {
                continue;
            }
            // The audit log is committed by policy, but it is this team's
            // history: every test starts from none.
            if rel == Path::new("deploy/audit-log.tsv")
                || rel == Path::new("deploy/rotation-log.tsv")
            {
                continue;
            }
            let from = src.join(rel);
            if !from.is_file() {
                continue;
            }
            let to = root.join(rel);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&from, &to).unwrap();
        }
        let repo = TempRepo { root };
        repo.git(&["init", "-q"]);
        repo.git(&["add", "-A"]);
        repo.git(&[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t.invalid",
            "commit",
            "-qm",
            "copy",
        ]);
        repo
    }

    pub fn git(&self, args: &[&str]) -> Output {
        let out = Command::new("git")
            .args(args)
            .current_dir(&self.root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The real xtask binary, run in this copy.
    pub fn xtask(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
        c.args(args)
            .current_dir(&self.root)
            .env("CARGO_MANIFEST_DIR", self.root.join("xtask"))
            .env("NO_COLOR", "1")
            .env_remove("DOCKER");
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.xtask(args).output().unwrap())
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap()
    }
}

impl Drop for TempRepo {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The outcome of one run, with both streams as text for assertions.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn fails(self) -> Run {
        assert_eq!(
            self.code, 1,
            "expected exit 1\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

pub fn unique() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{:x}{:x}", n, std::process::id())
}

/// Values an operator really writes, for the store tests: a key with quotes,
/// spaces, `$` and `#`, and a multi-line PEM file secret (`tls_bundle`, added
/// to develop). Returns both values as the store must hold them.
pub fn write_special_values(repo: &TempRepo) -> (&'static str, &'static str) {
    let m = repo.read("deploy/secrets.toml");
    repo.write(
        "deploy/secrets.toml",
        &format!(
            "{m}\n[secrets.tls_bundle]\nkind = \"file\"\npem = true\nenvironments = [\"develop\"]\n"
        ),
    );
    let special = "Sp3c \"quoted\" $HOME #not-a-comment x9Z";
    let pem = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUXr2+/=\nAbCdEf0123456789\n-----END CERTIFICATE-----\n";
    repo.write("secrets/tls.pem", pem);
    repo.write(
        "secrets/develop.env",
        &format!("API_SECRET_KEY='{special}'\nTLS_BUNDLE=tls.pem\n"),
    );
    (special, pem)
}

/// A real TLS pair made once per test process with openssl (P-256, self
/// signed): the certificate, its private key, and a second key that is not
/// its own (for the mismatched-pair cases). PEM text.
pub fn tls_pair() -> &'static (String, String, String) {
    static PAIR: OnceLock<(String, String, String)> = OnceLock::new();
    PAIR.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("xtask-tls-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&dir).unwrap();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("openssl is needed to make the tests' TLS pair (apt-get install openssl)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        for key in ["key.pem", "other.pem"] {
            openssl(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                key,
            ]);
        }
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            "key.pem",
            "-subj",
            "/CN=xtask-test",
            "-days",
            "3650",
            "-out",
            "cert.pem",
        ]);
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        let pair = (read("cert.pem"), read("key.pem"), read("other.pem"));
        let _ = std::fs::remove_dir_all(&dir);
        pair
    })
}

/// The value of `key` in `secrets/<env>.env` of `repo`, its single quotes
/// taken off; panics when the file has no such line.
pub fn env_value(repo: &TempRepo, env: &str, key: &str) -> String {
    repo.read(&format!("secrets/{env}.env"))
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} is not in secrets/{env}.env"))
        .trim_matches('\'')
        .to_string()
}

/// Replaces `key`'s line in `secrets/<env>.env` with `key=value`, or with
/// `None` removes it (0600 kept); other lines stay as they are.
pub fn set_env_value(repo: &TempRepo, env: &str, key: &str, value: Option<&str>) {
    let rel = format!("secrets/{env}.env");
    let text: String = repo
        .read(&rel)
        .lines()
        .filter_map(|l| match (l.starts_with(&format!("{key}=")), value) {
            (true, Some(v)) => Some(format!("{key}={v}\n")),
            (true, None) => None,
            (false, _) => Some(format!("{l}\n")),
        })
        .collect();
    repo.write(&rel, &text);
}

/// An env file's text as a map: every `KEY=value` line but comments, single
/// quotes taken off the value.
pub fn env_map(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect()
}
