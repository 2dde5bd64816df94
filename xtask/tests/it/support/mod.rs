//! Shared scaffolding for integration tests: a temporary copy of the repository
//! to run the real `xtask` binary in, the Docker gate (fail under CI, skip loudly
//! elsewhere), and the locally built `FROM scratch` test images: the probe's, and
//! the stand-in that replaces every image of the real manifests. `readers` builds
//! the TypeScript and Python readers' service images.
#![allow(dead_code)]

pub mod flows;
pub mod openbao;
pub mod readers;

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
    if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0") {
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
    if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0") {
        panic!(
            "{test}: CI is set but this Docker engine is not a swarm manager; .ci/run must run `docker swarm init`"
        );
    }
    skip_note(format_args!(
        "\n*** SKIPPED {test}: Docker is not in swarm mode (run `docker swarm init --advertise-addr 127.0.0.1`) ***\n"
    ));
    false
}

pub const PROBE_IMAGE: &str = "xtask-probe:test";

/// Static builds of the test-support crate's `probe` and the secrets-reader
/// example `show` (once per test process), for `FROM scratch` images: the
/// paths of `probe` and `show`.
fn static_binaries() -> &'static (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let src = source_root();
        let target_dir = src.join("target/static");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "--release",
                "--target",
                "x86_64-unknown-linux-gnu",
                "-p",
                "test-support",
                "-p",
                "secrets-reader",
                "--bin",
                "probe",
                "--example",
                "show",
            ])
            .current_dir(&src)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env("CARGO_TARGET_DIR", &target_dir)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "static build of probe (test-support) and show (secrets-reader example) failed"
        );
        let release = target_dir.join("x86_64-unknown-linux-gnu/release");
        (release.join("probe"), release.join("examples/show"))
    })
}

/// A fresh, empty docker build context, removed on drop.
struct BuildContext(PathBuf);

impl BuildContext {
    fn new(tag: &str) -> BuildContext {
        let dir = std::env::temp_dir().join(format!("xtask-{tag}-ctx-{}", unique()));
        std::fs::create_dir_all(&dir).unwrap();
        BuildContext(dir)
    }

    /// `docker build -q -t image .` with the classic builder (no BuildKit,
    /// no registry), panicking with docker's message on failure.
    fn build(&self, dockerfile: &str, image: &str) {
        std::fs::write(self.0.join("Dockerfile"), dockerfile).unwrap();
        let out = Command::new("docker")
            .args(["build", "-q", "-t", image, "."])
            .current_dir(&self.0)
            .env("DOCKER_BUILDKIT", "0")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker build of {image} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for BuildContext {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Builds (once per test process) a `FROM scratch` image holding static `/probe`
/// (the test-support crate) and `/show` (the secrets-reader example). No
/// registry is needed.
pub fn probe_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let (probe, show) = static_binaries();
        let ctx = BuildContext::new("probe");
        std::fs::copy(probe, ctx.0.join("probe")).unwrap();
        std::fs::copy(show, ctx.0.join("show")).unwrap();
        ctx.build(
            "FROM scratch\nCOPY probe show /\nENTRYPOINT [\"/probe\"]\n",
            PROBE_IMAGE,
        );
    });
    PROBE_IMAGE
}

pub const READER_IMAGE: &str = "xtask-reader:test";

/// Builds (once per test process) a `FROM scratch` image holding static
/// `/probe` and `/show` built with the reader's `vault` and `aws` features
/// (its own target folder, so the plain `show` of [`probe_image`] stays as
/// it is): a container that reads Vault or Secrets Manager at run time.
pub fn reader_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let (probe, _) = static_binaries();
        let src = source_root();
        let target_dir = src.join("target/static-remote");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "--release",
                "--target",
                "x86_64-unknown-linux-gnu",
                "-p",
                "secrets-reader",
                "--example",
                "show",
                "--features",
                "vault,aws",
            ])
            .current_dir(&src)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env("CARGO_TARGET_DIR", &target_dir)
            .status()
            .unwrap();
        assert!(st.success(), "static build of show with vault,aws failed");
        let show = target_dir.join("x86_64-unknown-linux-gnu/release/examples/show");
        let ctx = BuildContext::new("reader");
        std::fs::copy(probe, ctx.0.join("probe")).unwrap();
        std::fs::copy(show, ctx.0.join("show")).unwrap();
        ctx.build(
            "FROM scratch\nCOPY probe show /\nENTRYPOINT [\"/probe\"]\n",
            READER_IMAGE,
        );
    });
    READER_IMAGE
}

pub const STANDIN_IMAGE: &str = "xtask-standin:test";

/// The label holding the SHA-256 of the probe binary inside the stand-in image.
const STANDIN_LABEL: &str = "xtask.standin.probe-sha256";

/// The names the probe answers to in the stand-in image: the commands and
/// entrypoints of the services in the real manifests.
pub const STANDIN_NAMES: [&str; 6] = [
    "redis-server",
    "docker-entrypoint.sh",
    "postgres",
    "nginx",
    "grafana-server",
    "backend",
];

/// Builds (once per test process) `xtask-standin:test`, one image that can
/// replace every image of the real manifests: busybox (for `sh -c` commands)
/// and the static probe, which serves as a stand-in under each of
/// [`STANDIN_NAMES`] and under the entrypoint when no command is given. An
/// existing image is reused when its label holds the probe's current hash.
pub fn standin_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let (probe, _) = static_binaries();
        // The probe's hash and the layout's version (2: a /tmp for
        // deploy/redis/start.sh, which runs as redis's own user).
        let hash = format!("{}-2", sha256_file(probe));
        let labels = Command::new("docker")
            .args([
                "image",
                "inspect",
                "--format",
                "{{json .Config.Labels}}",
                STANDIN_IMAGE,
            ])
            .output()
            .unwrap();
        if labels.status.success() {
            let labels: serde_json::Value =
                serde_json::from_slice(&labels.stdout).unwrap_or_default();
            if labels[STANDIN_LABEL].as_str() == Some(hash.as_str()) {
                return;
            }
        }
        let busybox = Path::new("/bin/busybox");
        assert!(
            busybox.is_file(),
            "{STANDIN_IMAGE} needs a static busybox at /bin/busybox: apt-get install busybox-static"
        );
        let ctx = BuildContext::new("standin");
        std::fs::copy(busybox, ctx.0.join("busybox")).unwrap();
        let rootfs = ctx.0.join("rootfs");
        let bin = rootfs.join("usr/local/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy(probe, rootfs.join("probe")).unwrap();
        for name in STANDIN_NAMES {
            // Hard links keep the context (and, where the builder keeps
            // them, the layer) at one copy of the binary.
            if std::fs::hard_link(rootfs.join("probe"), bin.join(name)).is_err() {
                std::fs::copy(rootfs.join("probe"), bin.join(name)).unwrap();
            }
        }
        ctx.build(
            &format!(
                r#"FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN ["/bin/busybox", "mkdir", "-m", "1777", "/tmp"]
COPY rootfs/ /
ENV PATH=/usr/local/bin:/bin
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD []
LABEL {STANDIN_LABEL}={hash}
"#
            ),
            STANDIN_IMAGE,
        );
    });
    STANDIN_IMAGE
}

/// The SHA-256 of a file in hex, from `sha256sum`.
fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success(), "sha256sum {}", path.display());
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

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

/// First 12 hex digits of SHA-256, as the reader's `fingerprint()` prints them.
pub fn sha12(bytes: &[u8]) -> String {
    sha256_hex(bytes)[..12].to_string()
}

/// The SHA-256 of `bytes` in hex, from `sha256sum`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(bytes)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
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
    if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0") {
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

/// Makes an image of the Docker engine available to the test cluster's pods
/// (they run `imagePullPolicy: Never`). The cluster `.ci/k8s/up.sh` starts runs
/// its own containerd, whose socket is `containerd/containerd.sock` beside
/// KUBECONFIG (or `K8S_CONTAINERD_ADDRESS`): `docker save IMAGE` is piped into
/// `ctr -n k8s.io images import -`, once per image and test binary. A cluster
/// with no such socket is taken to share the Docker engine's images.
pub fn load_into_cluster(image: &str) {
    use std::{collections::BTreeSet, process::Stdio, sync::Mutex};
    static LOADED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    if loaded.contains(image) {
        return;
    }
    let address = std::env::var_os("K8S_CONTAINERD_ADDRESS")
        .map(PathBuf::from)
        .or_else(|| {
            let kubeconfig = PathBuf::from(std::env::var_os("KUBECONFIG")?);
            Some(kubeconfig.parent()?.join("containerd/containerd.sock"))
        });
    let Some(address) = address.filter(|a| a.exists()) else {
        return;
    };
    let mut save = Command::new("docker")
        .args(["save", image])
        .stdout(Stdio::piped())
        .spawn()
        .expect("docker save runs");
    let import = Command::new("ctr")
        .arg("--address")
        .arg(&address)
        .args(["-n", "k8s.io", "images", "import", "-"])
        .stdin(save.stdout.take().unwrap())
        .output()
        .expect("ctr runs (apt-get install containerd)");
    let saved = save.wait().unwrap();
    assert!(
        saved.success() && import.status.success(),
        "loading {image} into the cluster's containerd ({}): {}",
        address.display(),
        String::from_utf8_lossy(&import.stderr)
    );
    loaded.insert(image.to_string());
}

/// True when strace is installed (the leak and crash tests need it). Under
/// `CI=true` a missing strace fails the test; elsewhere it is skipped loudly.
pub fn strace_or_skip(test: &str) -> bool {
    let ok = Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok && std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0") {
        panic!("{test}: CI is set but strace is not installed; .ci/run must install it");
    }
    if !ok {
        skip_note(format_args!(
            "\n*** SKIPPED {test}: strace is not installed (apt-get install strace) ***\n"
        ));
    }
    ok
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

/// `inner` (program, arguments, environment, folder) run under
/// `strace -f -e trace=execve -s 65536`, the trace written to `log`. With
/// `verbose`, children's environments are recorded in full too.
pub fn under_strace(inner: &Command, verbose: bool, log: &Path) -> Command {
    let mut c = Command::new("strace");
    c.arg("-f");
    if verbose {
        c.arg("-v");
    }
    c.args(["-e", "trace=execve", "-s", "65536", "-o"])
        .arg(log)
        .arg(inner.get_program())
        .args(inner.get_args());
    if let Some(d) = inner.get_current_dir() {
        c.current_dir(d);
    }
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
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

/// True when util-linux `script` (a pseudo-terminal) runs. Under `CI=true`
/// its absence fails the test; elsewhere the test is skipped loudly.
pub fn script_or_skip() -> bool {
    let ok = Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok && std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0") {
        panic!("CI is set but `script` (util-linux, Debian: bsdutils) is not installed");
    }
    if !ok {
        skip_note(format_args!(
            "\n*** SKIPPED a terminal test: `script` (util-linux) is not installed ***\n"
        ));
    }
    ok
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

/// Says that a test skipped (or gives a figure), where `cargo test` shows it:
/// straight to the process's stderr, since libtest captures `eprintln!` of a
/// passing test and a skipped test is counted as passed. Under `CI=true` the
/// gates fail instead of skipping.
pub fn skip_note(msg: std::fmt::Arguments) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{msg}");
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

/// Whether this run is CI's (`CI` set, not `false` or `0`): a test that needs
/// a server fails then instead of skipping.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}
