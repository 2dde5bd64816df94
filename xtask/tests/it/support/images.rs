//! The locally built `FROM scratch` test images: the probe's, the reader's
//! (with its `vault` and `aws` features) and the stand-in that replaces every
//! image of the real manifests. Each is built once per test process.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use super::repo::{source_root, unique};

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
pub struct BuildContext(pub PathBuf);

impl BuildContext {
    pub fn new(tag: &str) -> BuildContext {
        let dir = std::env::temp_dir().join(format!("xtask-{tag}-ctx-{}", unique()));
        std::fs::create_dir_all(&dir).unwrap();
        BuildContext(dir)
    }

    /// `docker build -q -t image .` with the classic builder (no BuildKit,
    /// no registry), panicking with docker's message on failure.
    pub fn build(&self, dockerfile: &str, image: &str) {
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

/// The tag `.ci/images.sh` builds the stack tests' images with (its
/// `XTASK_IMAGE_TAG` default).
pub fn stack_image_tag() -> String {
    let script = std::fs::read_to_string(source_root().join(".ci/images.sh")).unwrap();
    script
        .lines()
        .find_map(|l| l.strip_prefix("XTASK_IMAGE_TAG=${XTASK_IMAGE_TAG:-"))
        .and_then(|r| r.strip_suffix('}'))
        .expect("XTASK_IMAGE_TAG default in .ci/images.sh")
        .to_string()
}
