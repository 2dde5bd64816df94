//! `probe load`: a bounded HTTP client for zero-downtime tests. It spreads
//! requests over every address of the target, retries the others and a fresh
//! lookup when one fails, and reports `requests= ok= failed=` and the last body.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use crate::{Fail, Usage, dns, http, number, parse_args};

/// `HOST:PORT` or `[IPv6]:PORT`.
fn parse_target(target: &str) -> Result<(String, u16), Usage> {
    let bad = || Usage(format!("--target must be HOST:PORT, got {target:?}"));
    let (host, port) = if let Some(rest) = target.strip_prefix('[') {
        rest.split_once("]:").ok_or_else(bad)?
    } else {
        let (host, port) = target.rsplit_once(':').ok_or_else(bad)?;
        if host.contains(':') {
            return Err(bad());
        }
        (host, port)
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_owned(), port.parse().map_err(|_| bad())?))
}

/// Resolved addresses, refreshed at most every 200 ms.
struct Resolver {
    host: String,
    port: u16,
    addrs: Vec<SocketAddr>,
    resolved_at: Option<Instant>,
}

impl Resolver {
    /// Re-resolves when `force`d or the cache is older than 200 ms. On a
    /// failed lookup the previous addresses are kept (and the error returned
    /// only if there are none).
    fn addrs(&mut self, force: bool) -> Result<Vec<SocketAddr>, String> {
        let stale = self
            .resolved_at
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(200));
        if force || stale {
            self.resolved_at = Some(Instant::now());
            match dns::resolve(&self.host, self.port) {
                Ok(addrs) => self.addrs = addrs,
                Err(e) if self.addrs.is_empty() => return Err(e),
                Err(_) => {}
            }
        }
        Ok(self.addrs.clone())
    }
}

/// One load request: round-robin start, then the other addresses, then one
/// re-resolve and another round; at most 3 s in all.
fn load_request(
    resolver: &mut Resolver,
    host_header: &str,
    round_robin: usize,
) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut errors = Vec::new();
    for round in 0..2 {
        let addrs = match resolver.addrs(round > 0) {
            Ok(addrs) => addrs,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        for i in 0..addrs.len() {
            let addr = addrs[(round_robin + i) % addrs.len()];
            if Instant::now() >= deadline {
                errors.push("3 s budget exhausted".into());
                return Err(errors.join("; "));
            }
            match http::get(addr, host_header, "/", deadline) {
                Ok(r) if r.status == 200 => return Ok(r.body),
                Ok(r) => errors.push(format!("{addr}: status {}", r.status)),
                Err(e) => errors.push(format!("{addr}: {e}")),
            }
        }
    }
    Err(errors.join("; "))
}

pub fn run(args: &[String]) -> Result<ExitCode, Fail> {
    let flags = ["--target", "--count", "--max-seconds", "--interval-ms"];
    let (options, rest) = parse_args(args, &flags)?;
    if !rest.is_empty() {
        return Err(Usage(format!("unexpected argument {:?}", rest[0])).into());
    }
    let mut target = None;
    let mut count: u64 = 200;
    let mut max_seconds: f64 = 60.0;
    let mut interval_ms: u64 = 20;
    for &(flag, value) in &options {
        match flag {
            "--target" => target = Some(parse_target(value)?),
            "--count" => count = number(flag, value)?,
            "--max-seconds" => max_seconds = number(flag, value)?,
            _ => interval_ms = number(flag, value)?,
        }
    }
    let (host, port) = target.ok_or_else(|| Usage("load needs --target HOST:PORT".into()))?;
    let host_header = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut resolver = Resolver {
        host,
        port,
        addrs: Vec::new(),
        resolved_at: None,
    };

    let start = Instant::now();
    let max = Duration::try_from_secs_f64(max_seconds)
        .map_err(|_| Usage("--max-seconds is out of range".into()))?;
    let (mut requests, mut ok, mut failed) = (0u64, 0u64, 0u64);
    let mut last = Vec::new();
    while requests < count && start.elapsed() < max {
        if requests > 0 {
            thread::sleep(Duration::from_millis(interval_ms));
            if start.elapsed() >= max {
                break;
            }
        }
        match load_request(&mut resolver, &host_header, requests as usize) {
            Ok(body) => {
                ok += 1;
                last = body;
            }
            Err(e) => {
                failed += 1;
                if failed <= 20 {
                    eprintln!("probe: request {} failed: {e}", requests + 1);
                }
            }
        }
        requests += 1;
    }
    if failed > 20 {
        eprintln!("probe: {} more failures not shown", failed - 20);
    }
    println!("requests={requests} ok={ok} failed={failed}");
    println!("last={}", String::from_utf8_lossy(&last).replace('\n', ";"));
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener};

    use secrets_reader::Reader;

    use crate::serve::fingerprints;

    #[test]
    fn targets() {
        assert_eq!(parse_target("web:8080").ok(), Some(("web".into(), 8080)));
        assert_eq!(
            parse_target("10.0.0.2:80").ok(),
            Some(("10.0.0.2".into(), 80))
        );
        assert_eq!(parse_target("[::1]:80").ok(), Some(("::1".into(), 80)));
        assert!(parse_target("web").is_err());
        assert!(parse_target(":80").is_err());
        assert!(parse_target("::1:80").is_err());
        assert!(parse_target("web:http").is_err());
    }

    #[test]
    fn serve_and_load_end_to_end() {
        // `handle` on an ephemeral port with a reader over a temp dir:
        // `/missing` serves a list with a missing secret, anything else `token`.
        let dir = std::env::temp_dir().join(format!(
            "test-support-probe-test-{}-{:x}",
            std::process::id(),
            dns::query_id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), "hello\n").unwrap();
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let server_dir = dir.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let dir = server_dir.clone();
                thread::spawn(move || {
                    let route = move |path: &str| {
                        let reader = Reader::new(&dir).with_env(|_| None);
                        let names = match path {
                            "/missing" => vec!["token".to_owned(), "nope".to_owned()],
                            _ => vec!["token".to_owned()],
                        };
                        fingerprints(&reader, &names)
                    };
                    let _ = http::handle(stream, &route);
                });
            }
        });
        let deadline = Instant::now() + Duration::from_secs(2);
        let r = http::get(addr, "x", "/health", deadline).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok\n"[..]));
        let r = http::get(addr, "x", "/", deadline).unwrap();
        // sha256("hello") starts with 2cf24dba5fb0.
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &b"token 2cf24dba5fb0\n"[..])
        );
        let r = http::get(addr, "x", "/missing", deadline).unwrap();
        assert_eq!(r.status, 500);
        let body = String::from_utf8(r.body).unwrap();
        assert!(
            body.starts_with("nope error: secret \"nope\" not found"),
            "{body}"
        );
        assert!(!body.contains("hello"));

        // A dead address first: the request still succeeds via the other,
        // and the secret is read fresh for every request.
        let dead = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap();
        let mut resolver = Resolver {
            host: "127.0.0.1".into(),
            port: addr.port(),
            addrs: vec![dead, addr],
            resolved_at: Some(Instant::now()),
        };
        assert_eq!(
            load_request(&mut resolver, "x", 0).unwrap(),
            b"token 2cf24dba5fb0\n"
        );
        std::fs::write(dir.join("token"), "other").unwrap();
        let body = load_request(&mut resolver, "x", 1).unwrap();
        assert_ne!(body, b"token 2cf24dba5fb0\n");
        std::fs::remove_dir_all(&dir).unwrap();

        // Nothing listening anywhere: failure names every address tried.
        let mut resolver = Resolver {
            host: "127.0.0.1".into(),
            port: dead.port(),
            addrs: vec![dead],
            resolved_at: Some(Instant::now()),
        };
        let err = load_request(&mut resolver, "x", 0).unwrap_err();
        assert!(err.contains(&format!("{dead}: connect")), "{err}");
    }
}
