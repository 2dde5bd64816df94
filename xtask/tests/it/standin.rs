//! The stand-in image that replaces every image of the real manifests in
//! Kubernetes tests: started as the image's entrypoint or as a named service
//! from a `sh -c` command, it serves the fingerprints of the secret files it was
//! given (Kubernetes' `..data` link layout included) on several ports, and stops
//! cleanly on SIGTERM.

use crate::support;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{docker, sha12, standin_image, unique};

/// Containers removed (with `docker rm -f`) whatever happens in the test.
struct Containers(Vec<String>);

impl Drop for Containers {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("docker").args(["rm", "-f", name]).output();
        }
    }
}

/// A temporary secrets directory, removed on drop.
struct SecretsDir(PathBuf);

impl Drop for SecretsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `GET path` over plain HTTP/1.0: the status and the body.
fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())?;
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

/// `GET /health` until it answers `ok` (the container is starting), at most 30 s.
fn wait_healthy(addr: SocketAddr, container: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match get(addr, "/health") {
            Ok((200, body)) if body == "ok\n" => return,
            result if Instant::now() >= deadline => panic!(
                "{container} on {addr}: no health after 30 s: {result:?}\nlogs: {}",
                logs(container)
            ),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn logs(container: &str) -> String {
    let out = Command::new("docker")
        .args(["logs", container])
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn standin_serves_its_secret_files_as_any_service() {
    if !support::docker_or_skip("standin_serves_its_secret_files_as_any_service") {
        return;
    }
    let image = standin_image();

    // Two plain files, and a key mounted the way Kubernetes mounts a secret
    // volume: `NAME -> ..data/NAME`, `..data -> ..<timestamp>/`.
    let dir = SecretsDir(std::env::temp_dir().join(format!("xtask-standin-{}", unique())));
    let d = &dir.0;
    std::fs::create_dir_all(d.join("..2024_05_01_12_00_00.000000001")).unwrap();
    std::fs::write(d.join("jwt_secret"), "jwt-value\n").unwrap();
    std::fs::write(d.join("api_secret_key"), "api-value").unwrap();
    std::fs::write(
        d.join("..2024_05_01_12_00_00.000000001/redis_password"),
        "redis-value\r\n",
    )
    .unwrap();
    symlink("..2024_05_01_12_00_00.000000001", d.join("..data")).unwrap();
    symlink("..data/redis_password", d.join("redis_password")).unwrap();
    let want = format!(
        "api_secret_key {}\njwt_secret {}\nredis_password {}\n",
        sha12(b"api-value"),
        sha12(b"jwt-value"),
        sha12(b"redis-value")
    );

    // How a manifest starts the service -> the name the probe runs under.
    let id = unique();
    let cases: [(&str, &[&str], &str); 3] = [
        // No command: the image's entrypoint.
        ("default", &[image], "docker-entrypoint.sh"),
        // Kubernetes `command:` (the entrypoint replaced): busybox sh finds
        // redis-server on PATH and execs it; the `-` argument is ignored.
        (
            "command",
            &["--entrypoint", "sh", image, "-c", "exec redis-server -"],
            "redis-server",
        ),
        // Kubernetes `args:` (the entrypoint kept): the arguments are ignored.
        (
            "args",
            &[image, "sh", "-c", "exec redis-server -"],
            "docker-entrypoint.sh",
        ),
    ];
    let mount = format!("{}:/run/secrets:ro", d.display());
    let mut containers = Containers(Vec::new());
    for (case, args, _) in &cases {
        let name = format!("xtask-standin-{id}-{case}");
        containers.0.push(name.clone());
        let mut run = vec!["run", "-d", "--name", &name, "-v", &mount];
        run.extend_from_slice(args);
        docker(&run);
    }

    for ((case, _, runs_as), name) in cases.iter().zip(&containers.0) {
        let ip = docker(&[
            "inspect",
            "--format",
            "{{.NetworkSettings.IPAddress}}",
            name,
        ]);
        let ip: IpAddr = ip
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}: no bridge IP address: {ip:?}"));
        for port in [3000, 6379] {
            let addr = SocketAddr::new(ip, port);
            wait_healthy(addr, name);
            let (status, body) = get(addr, "/").unwrap();
            assert_eq!(
                (status, body.as_str()),
                (200, want.as_str()),
                "{case} :{port}"
            );
        }
        let log = logs(name);
        assert!(
            log.contains(&format!("probe: stand-in for {runs_as}: ")),
            "{case}: not started as {runs_as}: {log}"
        );

        // SIGTERM: a clean stop with status 0, well before docker's SIGKILL.
        let start = Instant::now();
        docker(&["stop", "-t", "20", name]);
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{case}: SIGTERM took {:?}",
            start.elapsed()
        );
        let code = docker(&["inspect", "--format", "{{.State.ExitCode}}", name]);
        assert_eq!(code.trim(), "0", "{case}: {}", logs(name));
        assert!(
            logs(name).contains("probe: stopped"),
            "{case}: {}",
            logs(name)
        );
    }
}
