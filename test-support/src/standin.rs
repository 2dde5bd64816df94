//! Stand-in mode, for tests that deploy the project's real manifests with every
//! image replaced by one local test image: whatever service the probe is started
//! as (a link named `redis-server`, `postgres`, `docker-entrypoint.sh`...), it
//! ignores its arguments and stdin, and shows which secrets the service was given.
//!
//! It listens on every port in `PROBE_PORTS` (comma separated; default 3000,
//! 5432, 6379, 80, 443 and 8080), answers `GET /health` with `ok` and any other
//! `GET` with one `NAME FINGERPRINT` line per regular file in `$SECRETS_DIR`
//! (default `/run/secrets`), sorted by name and read fresh for every request.
//! Kubernetes mounts a secret volume as `..data` (a link to a timestamped
//! directory) and one link `NAME -> ..data/NAME` per key: links to files are
//! followed, directories and names starting with `.` are skipped.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use secrets_reader::Reader;

use crate::serve::{line, report};
use crate::{Fail, server};

/// What the project's services listen on: grafana, postgres, redis, nginx
/// (HTTP and HTTPS) and the backend.
const DEFAULT_PORTS: [u16; 6] = [3000, 5432, 6379, 80, 443, 8080];

/// Serves until SIGTERM. `name` is what the probe was started as, for the log.
pub fn run(name: &str) -> Result<ExitCode, Fail> {
    let ports = ports(std::env::var_os("PROBE_PORTS").as_deref()).map_err(Fail::Other)?;
    // The reader's rule for the directory: `$SECRETS_DIR` unless unset or empty.
    let dir = Reader::from_env().dir().to_path_buf();
    // A port taken by another container of the same pod does not stop the
    // others from being served; none at all is an error.
    let mut listeners = Vec::new();
    let mut bound = Vec::new();
    for port in ports {
        match TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
        {
            Ok(listener) => {
                listeners.push(listener);
                bound.push(format!(":{port}"));
            }
            Err(e) => eprintln!("probe: stand-in for {name}: cannot listen on :{port}: {e}"),
        }
    }
    if listeners.is_empty() {
        return Err(Fail::Other(format!(
            "stand-in for {name}: no port could be bound"
        )));
    }
    eprintln!(
        "probe: stand-in for {name}: serving the fingerprints of {} on {}",
        dir.display(),
        bound.join(" ")
    );
    server::run(listeners, Arc::new(move |_path: &str| listing(&dir)));
    Ok(ExitCode::SUCCESS)
}

/// The ports to listen on: `PROBE_PORTS` when set and not empty, else
/// [`DEFAULT_PORTS`]. Repeats are dropped.
fn ports(value: Option<&OsStr>) -> Result<Vec<u16>, String> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(DEFAULT_PORTS.to_vec());
    };
    let text = value
        .to_str()
        .ok_or_else(|| format!("PROBE_PORTS is not UTF-8: {value:?}"))?;
    let mut ports = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let port = item
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("PROBE_PORTS: {item:?} is not a port number (1-65535)"))?;
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    if ports.is_empty() {
        return Err(format!("PROBE_PORTS names no port: {text:?}"));
    }
    Ok(ports)
}

/// The names of the regular files in `dir` (links followed), sorted; names
/// starting with `.`, directories, links to directories and dangling links
/// are left out.
fn secret_files(dir: &Path) -> io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.as_encoded_bytes().starts_with(b".") {
            continue;
        }
        // `fs::metadata` follows links, unlike `DirEntry::metadata`. A link
        // that dangles for a moment while Kubernetes swaps `..data` is skipped.
        if fs::metadata(entry.path()).is_ok_and(|m| m.is_file()) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// The stand-in's answer to `GET /`: 200 with `NAME FINGERPRINT` per file of
/// `dir`, 500 with the error lines if any file cannot be read. A missing
/// directory is a service that was given no secrets: 200 with no lines.
fn listing(dir: &Path) -> (u16, String) {
    let names = match secret_files(dir) {
        Ok(names) => names,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return (500, format!("cannot list {}: {e}\n", dir.display())),
    };
    // Only the directory counts: a stand-in serves the files it was given,
    // whatever `<NAME>` or `<NAME>_FILE` variables the manifest also sets.
    let reader = Reader::new(dir).with_env(|_| None);
    report(names.iter().map(|name| match name.to_str() {
        Some(name) => line(name, reader.get(name)),
        None => Err(format!(
            "{} error: the file name is not UTF-8\n",
            name.to_string_lossy()
        )),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    /// A unique directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "test-support-standin-{tag}-{}-{:x}",
                std::process::id(),
                crate::dns::query_id()
            ));
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn write(&self, rel: &str, content: &str) {
            fs::write(self.0.join(rel), content).unwrap();
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn lists_files_and_kubernetes_links_sorted() {
        let dir = TempDir::new("k8s");
        let d = &dir.0;
        dir.write("b", "b\n"); // trailing newline trimmed, as the reader does
        dir.write("a", "a");
        dir.write(".hidden", "x");
        fs::create_dir(d.join("sub")).unwrap();
        dir.write("sub/inner", "x");
        symlink("sub", d.join("dir_link")).unwrap();
        symlink("nowhere", d.join("dangling")).unwrap();
        // What Kubernetes mounts for a secret volume with the key `k`.
        fs::create_dir(d.join("..2024_01_01_00_00_00.1")).unwrap();
        dir.write("..2024_01_01_00_00_00.1/k", "k\r\n");
        symlink("..2024_01_01_00_00_00.1", d.join("..data")).unwrap();
        symlink("..data/k", d.join("k")).unwrap();

        assert_eq!(secret_files(d).unwrap(), ["a", "b", "k"]);
        // sha256("a"), sha256("b"), sha256("k"): the values after trimming.
        assert_eq!(
            listing(d),
            (
                200,
                "a ca978112ca1b\nb 3e23e8160039\nk 8254c329a928\n".to_owned()
            )
        );

        // Read fresh for every request: a swapped `..data` is seen at once.
        fs::create_dir(d.join("..new")).unwrap();
        dir.write("..new/k", "hello");
        fs::remove_file(d.join("..data")).unwrap();
        symlink("..new", d.join("..data")).unwrap();
        fs::remove_file(d.join("a")).unwrap();
        assert_eq!(
            listing(d),
            (200, "b 3e23e8160039\nk 2cf24dba5fb0\n".to_owned())
        );
    }

    #[test]
    fn errors_and_empty_directories() {
        let dir = TempDir::new("err");
        assert_eq!(listing(&dir.0), (200, String::new()));
        assert_eq!(listing(&dir.0.join("missing")), (200, String::new()));

        // Any unreadable file turns the answer into the list of errors.
        dir.write("good", "a");
        dir.write("empty", "\n");
        dir.write("bad..name", "a");
        let (status, body) = listing(&dir.0);
        assert_eq!(status, 500);
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(lines.len(), 2, "{body}");
        assert!(lines[0].starts_with("bad..name error: invalid secret name"));
        assert!(lines[1].starts_with("empty error: secret \"empty\" from "));

        // A file where a directory should be.
        let (status, body) = listing(&dir.0.join("good"));
        assert_eq!(status, 500);
        assert!(body.starts_with("cannot list "), "{body}");
    }

    #[test]
    fn port_lists() {
        let p = |s: &str| ports(Some(OsStr::new(s)));
        assert_eq!(ports(None).unwrap(), DEFAULT_PORTS);
        assert_eq!(p("").unwrap(), DEFAULT_PORTS);
        assert_eq!(p("8080").unwrap(), [8080]);
        assert_eq!(p(" 80, 443,,80 ,").unwrap(), [80, 443]);
        assert!(p("0").is_err());
        assert!(p("70000").is_err());
        assert!(p("http").is_err());
        assert!(p(",").is_err());
    }
}
