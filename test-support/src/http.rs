//! Just enough HTTP/1.x for the probe, both sides: one request per connection,
//! `Connection: close`, plain text bodies. No crate: the probe must stay a small
//! static binary with only std and the reader.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Largest response the client reads.
const MAX_HTTP: usize = 1 << 20;

/// Largest request head the server reads.
const MAX_HEAD: usize = 16 * 1024;

/// The status and body for a `GET` of a path other than `/health`.
pub type Route = dyn Fn(&str) -> (u16, String) + Send + Sync;

/// Answers one request on `stream`: `GET /health` with `ok`, any other `GET`
/// with `route(path)`, everything else with an error status.
pub fn handle(mut stream: TcpStream, route: &Route) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while find(&head, b"\r\n\r\n").is_none() {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(()); // closed before a full request (e.g. a port check)
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return respond(&mut stream, 431, "request head too large\n");
        }
    }
    let (status, body) = match parse_request_line(&head) {
        Some(("GET", "/health")) => (200, "ok\n".to_owned()),
        Some(("GET", path)) => route(path),
        Some(_) => (405, "only GET is supported\n".to_owned()),
        None => (400, "bad request\n".to_owned()),
    };
    respond(&mut stream, status, &body)
}

fn respond(stream: &mut TcpStream, status: u16, body: &str) -> io::Result<()> {
    stream.write_all(&response_bytes(status, body))?;
    stream.flush()?;
    let _ = stream.shutdown(Shutdown::Write);
    Ok(())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

fn response_bytes(status: u16, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        reason(status),
        body.len()
    )
    .into_bytes()
}

/// `(method, path)` from the first line of a request head.
fn parse_request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line_end = find(head, b"\r\n")?;
    let line = std::str::from_utf8(&head[..line_end]).ok()?;
    let mut parts = line.split(' ');
    let method = parts.next()?;
    let target = parts.next()?;
    let version = parts.next()?;
    if parts.next().is_some() || !version.starts_with("HTTP/1.") || method.is_empty() {
        return None;
    }
    let path = target.split('?').next().unwrap_or(target);
    Some((method, path))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[derive(Debug, PartialEq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Parses a complete `Connection: close` response.
fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let head_end = find(raw, b"\r\n\r\n").ok_or("incomplete response head")?;
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| "response head is not UTF-8")?;
    let rest = &raw[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status: u16 = code
        .parse()
        .map_err(|_| format!("bad status line {status_line:?}"))?;
    let mut content_length = None;
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header line {line:?}"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value
                .parse()
                .map_err(|_| format!("bad Content-Length {value:?}"))?;
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && !value.eq_ignore_ascii_case("identity")
        {
            return Err(format!("unsupported Transfer-Encoding {value:?}"));
        }
    }
    let body = match content_length {
        Some(n) if rest.len() < n => {
            return Err(format!("truncated body: {} of {n} bytes", rest.len()));
        }
        Some(n) => rest[..n].to_vec(),
        None => rest.to_vec(),
    };
    Ok(Response { status, body })
}

/// Time left until `deadline`, or an error once it has passed.
pub fn remaining(deadline: Instant) -> Result<Duration, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err("timed out".into())
    } else {
        Ok(left)
    }
}

/// `GET path` on `addr`; everything (connect, write, read) before `deadline`.
/// Connecting is also limited to 1 s so a vanished peer leaves time for
/// others.
pub fn get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    deadline: Instant,
) -> Result<Response, String> {
    let io = |what: &str, e: io::Error| format!("{what}: {e}");
    let connect_timeout = remaining(deadline)?.min(Duration::from_secs(1));
    let mut stream =
        TcpStream::connect_timeout(&addr, connect_timeout).map_err(|e| io("connect", e))?;
    stream
        .set_write_timeout(Some(remaining(deadline)?))
        .map_err(|e| io("socket", e))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| io("write", e))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        stream
            .set_read_timeout(Some(remaining(deadline)?))
            .map_err(|e| io("socket", e))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if raw.len() > MAX_HTTP {
                    return Err("response too large".into());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io("read", e)),
        }
    }
    parse_response(&raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_response_parsing() {
        let raw = response_bytes(200, "a 0123456789ab\nb ba9876543210\n");
        let r = parse_response(&raw).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"a 0123456789ab\nb ba9876543210\n");

        let r = parse_response(b"HTTP/1.0 500 Oops\r\ncontent-length: 2\r\n\r\nabcd").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (500, &b"ab"[..]));

        // No Content-Length: the body runs to the end (Connection: close).
        let r = parse_response(b"HTTP/1.1 204 No Content\r\nX: y\r\n\r\n").unwrap();
        assert_eq!((r.status, r.body.len()), (204, 0));

        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 2000 OK\r\n\r\n").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
                .is_err()
        );
    }

    #[test]
    fn request_line_parsing() {
        assert_eq!(
            parse_request_line(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(("GET", "/health"))
        );
        assert_eq!(
            parse_request_line(b"GET /?x=1 HTTP/1.0\r\n\r\n"),
            Some(("GET", "/"))
        );
        assert_eq!(parse_request_line(b"GET /\r\n\r\n"), None);
        assert_eq!(parse_request_line(b"\x16\x03\x01 TLS\r\n"), None);
    }
}
