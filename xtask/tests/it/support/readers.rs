//! The TypeScript and Python readers as live services (the compose end-to-end
//! test): thin images built for one test from `xtask-readers-base:bookworm`
//! (Debian's nodejs and python3, made by `.ci/images.sh`), each holding its
//! reader package and a tiny HTTP server (`tests/data/readers/`) that serves
//! `NAME LENGTH SHA256 SOURCE` lines of what the reader read.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use super::images::BuildContext;
use super::{ci, docker, skip_note, source_root, unique};

/// The base both reader images are built from (`.ci/images.sh readers-base`).
pub const READERS_BASE: &str = "xtask-readers-base:bookworm";

/// The port both servers listen on inside their containers.
pub const PORT: u16 = 8080;

/// Fails under `CI=true`, else says loudly that the live proof is skipped.
fn unavailable(test: &str, why: std::fmt::Arguments) -> Option<ReaderImages> {
    if ci() {
        panic!("{test}: CI is set but {why}");
    }
    skip_note(format_args!(
        "\n*** SKIPPED {test}, the TypeScript and Python readers' live services: {why} ***\n"
    ));
    None
}

/// The Node and Python images of one test, removed (with `rmi -f`) on drop:
/// drop it after the containers that run them.
pub struct ReaderImages {
    pub node: String,
    pub python: String,
}

impl Drop for ReaderImages {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.node, &self.python])
            .output();
    }
}

/// Builds the test's two reader images, or `None` (after a loud note) when the
/// base image cannot be built or the TypeScript reader cannot be compiled
/// outside CI. Under `CI=true` either of those fails the test.
pub fn images_or_skip(test: &str) -> Option<ReaderImages> {
    let src = source_root();
    if !have_image(READERS_BASE) {
        let debootstrap = ["/usr/sbin/debootstrap", "/usr/bin/debootstrap"]
            .iter()
            .any(|p| Path::new(p).is_file());
        if !debootstrap {
            return unavailable(
                test,
                format_args!(
                    "{READERS_BASE} is missing and debootstrap is not installed (apt-get install debootstrap, then run .ci/images.sh)"
                ),
            );
        }
        let out = Command::new("bash")
            .args([".ci/images.sh", "readers-base"])
            .current_dir(&src)
            .output()
            .unwrap();
        if !out.status.success() || !have_image(READERS_BASE) {
            return unavailable(
                test,
                format_args!(
                    "`.ci/images.sh readers-base` did not build {READERS_BASE}: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            );
        }
    }
    let ts = src.join("readers/typescript");
    if let Err(why) = typescript_dist(&ts) {
        return unavailable(test, format_args!("{why}"));
    }

    let id = unique();
    let images = ReaderImages {
        node: format!("xtask-readers-node:{id}"),
        python: format!("xtask-readers-python:{id}"),
    };
    let data = src.join("xtask/tests/data/readers");
    let label = "LABEL xtask.test=compose_e2e\n";

    // The package as a backend installs it: package.json (its exports map)
    // and the compiled dist/src under node_modules/@raqeem/secrets-reader.
    let ctx = BuildContext::new("readers-node");
    let pkg = ctx.0.join("pkg");
    copy_files(&ts.join("dist/src"), &pkg.join("dist/src"), &["js"]);
    std::fs::copy(ts.join("package.json"), pkg.join("package.json")).unwrap();
    std::fs::copy(data.join("server.mjs"), ctx.0.join("server.mjs")).unwrap();
    ctx.build(
        &format!(
            "FROM {READERS_BASE}\nCOPY pkg/ /app/node_modules/@raqeem/secrets-reader/\nCOPY server.mjs /app/\nWORKDIR /app\nENTRYPOINT [\"node\", \"/app/server.mjs\"]\n{label}"
        ),
        &images.node,
    );

    let ctx = BuildContext::new("readers-python");
    copy_files(
        &src.join("readers/python/secrets_reader"),
        &ctx.0.join("secrets_reader"),
        &["py", "typed"],
    );
    std::fs::copy(data.join("server.py"), ctx.0.join("server.py")).unwrap();
    ctx.build(
        &format!(
            "FROM {READERS_BASE}\nCOPY secrets_reader/ /app/secrets_reader/\nCOPY server.py /app/\nWORKDIR /app\nENV PYTHONDONTWRITEBYTECODE=1\nENTRYPOINT [\"python3\", \"/app/server.py\"]\n{label}"
        ),
        &images.python,
    );
    Some(images)
}

fn have_image(image: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Makes sure `dist/src/index.js` is compiled from the current sources: runs
/// `npm run build` when it is missing or older than a source, with the
/// compiler `npm ci` installed.
fn typescript_dist(ts: &Path) -> Result<(), String> {
    let index = ts.join("dist/src/index.js");
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let built = mtime(&index);
    let mut sources = vec![ts.join("package.json"), ts.join("tsconfig.json")];
    for e in std::fs::read_dir(ts.join("src")).unwrap() {
        sources.push(e.unwrap().path());
    }
    let stale = built.is_none_or(|b| sources.iter().any(|s| mtime(s).is_some_and(|m| m > b)));
    if !stale {
        return Ok(());
    }
    if !ts.join("node_modules/.bin/tsc").is_file() {
        return Err(format!(
            "the TypeScript reader is not compiled and its compiler is not installed (run `npm ci` in {})",
            ts.display()
        ));
    }
    let out = Command::new("npm")
        .args(["run", "build", "--silent"])
        .current_dir(ts)
        .output()
        .map_err(|e| format!("cannot run npm ({e}); Node.js 20+ with npm is needed"))?;
    if !out.status.success() || !index.is_file() {
        return Err(format!(
            "`npm run build` in {} failed: {}{}",
            ts.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// Copies the files of `from` whose names end in one of `exts` into `to`.
fn copy_files(from: &Path, to: &Path, exts: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    let mut n = 0;
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let ext = p.extension().and_then(|x| x.to_str()).unwrap_or_default();
        if p.is_file() && exts.contains(&ext) {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
            n += 1;
        }
    }
    assert!(n > 0, "no {exts:?} files in {}", from.display());
}

/// What one reader service read for one secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub len: usize,
    pub sha256: String,
    pub source: String,
}

/// The address of a container on its (one) network, from the host.
pub fn container_addr(id: &str, port: u16) -> SocketAddr {
    let ip = docker(&[
        "inspect",
        "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
        id,
    ]);
    let ip = ip.split_whitespace().next().unwrap_or_default();
    let ip = ip
        .parse()
        .unwrap_or_else(|_| panic!("{id}: no IP address on its network: {ip:?}"));
    SocketAddr::new(ip, port)
}

/// `GET path` over HTTP/1.0: status and body. Bounded by short timeouts.
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let bad = || std::io::Error::other(format!("bad response {raw:?}"));
    let (head, body) = raw.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_string()))
}

/// `GET /` until it answers 200 (at most 60 s), retrying refused connections
/// and errors: the service's body, for `what` in the panic message.
pub fn get_ok(addr: SocketAddr, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match get(addr, "/") {
            Ok((200, body)) => return body,
            result if Instant::now() >= deadline => {
                panic!("{what} on {addr}: no 200 after 60 s: {result:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// A reader service's `NAME LENGTH SHA256 SOURCE` lines, by name.
pub fn reads(addr: SocketAddr, what: &str) -> BTreeMap<String, Read> {
    get_ok(addr, what)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.splitn(4, '\t').collect();
            assert_eq!(f.len(), 4, "{what} served {l:?}");
            let read = Read {
                len: f[1].parse().unwrap_or_else(|_| panic!("{what}: {l:?}")),
                sha256: f[2].to_string(),
                source: f[3].to_string(),
            };
            (f[0].to_string(), read)
        })
        .collect()
}

/// The probe's `NAME FINGERPRINT` lines, by name.
pub fn fingerprints(addr: SocketAddr, what: &str) -> BTreeMap<String, String> {
    get_ok(addr, what)
        .lines()
        .map(|l| {
            let (name, fp) = l
                .split_once(' ')
                .unwrap_or_else(|| panic!("{what} served {l:?}"));
            (name.to_string(), fp.to_string())
        })
        .collect()
}
