//! `probe`: a tiny test service for secrets-reader (std only, no async).
//!
//! ```text
//! probe serve [--port P] NAME...
//! probe health [--port P]
//! probe load --target HOST:PORT [--count N] [--max-seconds S] [--interval-ms M]
//! ```
//!
//! `serve` answers `GET /health` with `ok` and any other `GET` with one line
//! `NAME FINGERPRINT` per secret, read fresh for every request (500 with the
//! error messages if any secret fails; values are never shown). `health` is a
//! HEALTHCHECK for `FROM scratch` images. `load` is a bounded client for
//! zero-downtime tests; it resolves names itself over UDP DNS because
//! statically linked glibc cannot resolve names in a scratch image.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use secrets_reader::Reader;

const USAGE: &str = "usage:
  probe serve [--port P] NAME...
  probe health [--port P]
  probe load --target HOST:PORT [--count N] [--max-seconds S] [--interval-ms M]";

/// Largest request head or response the probe reads.
const MAX_HTTP: usize = 1 << 20;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("health") => health(&args[1..]),
        Some("load") => load(&args[1..]),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => Err(Usage("expected a subcommand".into()).into()),
    };
    match result {
        Ok(code) => code,
        Err(Fail::Usage(Usage(msg))) => {
            eprintln!("probe: {msg}\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Fail::Other(msg)) => {
            eprintln!("probe: {msg}");
            ExitCode::FAILURE
        }
    }
}

struct Usage(String);

enum Fail {
    Usage(Usage),
    Other(String),
}

impl From<Usage> for Fail {
    fn from(u: Usage) -> Self {
        Fail::Usage(u)
    }
}

/// `(flag, value)` pairs and positional arguments.
type Parsed<'a> = (Vec<(&'a str, &'a str)>, Vec<&'a str>);

/// Splits `--flag value` / `--flag=value` options (named in `flags`) from
/// positional args.
fn parse_args<'a>(args: &'a [String], flags: &[&str]) -> Result<Parsed<'a>, Usage> {
    let mut options = Vec::new();
    let mut positional = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if let Some((flag, value)) = arg.split_once('=').filter(|(f, _)| flags.contains(f)) {
            options.push((flag, value));
        } else if flags.contains(&arg.as_str()) {
            let value = it
                .next()
                .ok_or_else(|| Usage(format!("{arg} needs a value")))?;
            options.push((arg.as_str(), value.as_str()));
        } else if arg.starts_with("--") {
            return Err(Usage(format!("unknown option {arg}")));
        } else {
            positional.push(arg.as_str());
        }
    }
    Ok((options, positional))
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, Usage> {
    value
        .parse()
        .map_err(|_| Usage(format!("{flag}: not a valid number: {value:?}")))
}

fn port_option(options: &[(&str, &str)]) -> Result<u16, Usage> {
    let mut port = 8080;
    for &(flag, value) in options {
        if flag == "--port" {
            port = number(flag, value)?;
        }
    }
    Ok(port)
}

// ---------------------------------------------------------------- serve ---

fn serve(args: &[String]) -> Result<ExitCode, Fail> {
    let (options, names) = parse_args(args, &["--port"])?;
    let port = port_option(&options)?;
    if names.is_empty() {
        return Err(Usage("serve needs at least one secret NAME".into()).into());
    }
    let names: Arc<Vec<String>> = Arc::new(names.iter().map(|s| s.to_string()).collect());
    let make_reader: MakeReader = Arc::new(Reader::from_env);
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
        .map_err(|e| Fail::Other(format!("cannot listen on :{port}: {e}")))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Fail::Other(format!("cannot listen on :{port}: {e}")))?;
    signals::install();
    eprintln!("probe: serving {} secrets on :{port}", names.len());

    let active = Arc::new(AtomicUsize::new(0));
    while !signals::STOP.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let names = Arc::clone(&names);
                let make_reader = Arc::clone(&make_reader);
                let active = Arc::clone(&active);
                active.fetch_add(1, Ordering::SeqCst);
                thread::spawn(move || {
                    if let Err(e) = handle(stream, &names, &*make_reader) {
                        eprintln!("probe: connection: {e}");
                    }
                    active.fetch_sub(1, Ordering::SeqCst);
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                eprintln!("probe: accept: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
    // Stop accepting (new connections are refused), let requests in flight
    // finish for up to 5 s.
    drop(listener);
    let deadline = Instant::now() + Duration::from_secs(5);
    while active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    eprintln!("probe: stopped");
    Ok(ExitCode::SUCCESS)
}

/// Builds the reader for each request (tests substitute their own).
type MakeReader = Arc<dyn Fn() -> Reader + Send + Sync>;

fn handle(
    mut stream: TcpStream,
    names: &[String],
    make_reader: &dyn Fn() -> Reader,
) -> io::Result<()> {
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
        if head.len() > 16 * 1024 {
            return respond(&mut stream, 431, "request head too large\n");
        }
    }
    let (status, body) = match parse_request_line(&head) {
        Some(("GET", "/health")) => (200, "ok\n".to_owned()),
        Some(("GET", _)) => fingerprints(&make_reader(), names),
        Some(_) => (405, "only GET is supported\n".to_owned()),
        None => (400, "bad request\n".to_owned()),
    };
    respond(&mut stream, status, &body)
}

/// `NAME FINGERPRINT` lines (200), or the error messages (500).
fn fingerprints(reader: &Reader, names: &[String]) -> (u16, String) {
    let mut ok = String::new();
    let mut errors = String::new();
    for name in names {
        let result = match name.as_str() {
            "database_url" => reader.database_url(),
            "redis_url" => reader.redis_url(),
            _ => reader.get(name),
        };
        match result {
            Ok(secret) => ok.push_str(&format!("{name} {}\n", secret.fingerprint())),
            Err(err) => errors.push_str(&format!("{name} error: {err}\n")),
        }
    }
    if errors.is_empty() {
        (200, ok)
    } else {
        (500, errors)
    }
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

/// SIGTERM/SIGINT handling without extra crates: the handler only sets a
/// flag, which the (non-blocking) accept loop polls. Without a handler a
/// probe running as PID 1 in a container would ignore SIGTERM.
#[cfg(unix)]
mod signals {
    use std::sync::atomic::{AtomicBool, Ordering};

    pub static STOP: AtomicBool = AtomicBool::new(false);

    unsafe extern "C" {
        fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    }

    extern "C" fn on_signal(_: i32) {
        STOP.store(true, Ordering::SeqCst);
    }

    pub fn install() {
        const SIGINT: i32 = 2;
        const SIGTERM: i32 = 15;
        // SAFETY: `signal` is the C library's; the handler only stores to an
        // atomic, which is async-signal-safe.
        unsafe {
            signal(SIGINT, on_signal);
            signal(SIGTERM, on_signal);
        }
    }
}

#[cfg(not(unix))]
mod signals {
    use std::sync::atomic::AtomicBool;
    pub static STOP: AtomicBool = AtomicBool::new(false);
    pub fn install() {}
}

// ----------------------------------------------------------- HTTP client ---

#[derive(Debug, PartialEq)]
struct Response {
    status: u16,
    body: Vec<u8>,
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

fn remaining(deadline: Instant) -> Result<Duration, String> {
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
fn http_get(
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

// --------------------------------------------------------------- health ---

fn health(args: &[String]) -> Result<ExitCode, Fail> {
    let (options, rest) = parse_args(args, &["--port"])?;
    if !rest.is_empty() {
        return Err(Usage(format!("unexpected argument {:?}", rest[0])).into());
    }
    let port = port_option(&options)?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + Duration::from_secs(2);
    match http_get(addr, &format!("127.0.0.1:{port}"), "/health", deadline) {
        Ok(r) if r.status == 200 => Ok(ExitCode::SUCCESS),
        Ok(r) => Err(Fail::Other(format!("health: status {}", r.status))),
        Err(e) => Err(Fail::Other(format!("health: {e}"))),
    }
}

// ------------------------------------------------------------------ DNS ---

#[derive(Debug, PartialEq)]
struct DnsAnswer {
    addrs: Vec<Ipv4Addr>,
    truncated: bool,
}

/// A standard query (recursion desired) for the A records of `name`.
fn encode_query(id: u16, name: &str) -> Result<Vec<u8>, String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return Err(format!("invalid DNS name {name:?}"));
    }
    let mut packet = Vec::with_capacity(18 + name.len());
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&[0x01, 0x00]); // flags: RD
    packet.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // 1 question
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("invalid DNS name {name:?}"));
        }
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.push(0);
    packet.extend_from_slice(&[0, 1, 0, 1]); // QTYPE A, QCLASS IN
    Ok(packet)
}

fn be16(packet: &[u8], at: usize) -> Result<u16, String> {
    match packet.get(at..at + 2) {
        Some(b) => Ok(u16::from_be_bytes([b[0], b[1]])),
        None => Err("truncated DNS packet".into()),
    }
}

/// Position just after the (possibly compressed) name starting at `pos`.
fn skip_name(packet: &[u8], mut pos: usize) -> Result<usize, String> {
    loop {
        let len = *packet.get(pos).ok_or("truncated DNS name")?;
        match len & 0xc0 {
            0xc0 => {
                be16(packet, pos)?;
                return Ok(pos + 2);
            }
            0 if len == 0 => return Ok(pos + 1),
            0 => pos += 1 + usize::from(len),
            _ => return Err("bad DNS label".into()),
        }
    }
}

/// All A records in the answer section of a response to query `id`.
fn decode_response(id: u16, packet: &[u8]) -> Result<DnsAnswer, String> {
    if be16(packet, 0)? != id {
        return Err("DNS response id mismatch".into());
    }
    let flags = be16(packet, 2)?;
    if flags & 0x8000 == 0 {
        return Err("DNS packet is not a response".into());
    }
    let truncated = flags & 0x0200 != 0;
    match flags & 0x000f {
        0 => {}
        3 => return Err("no such name (NXDOMAIN)".into()),
        rcode => return Err(format!("DNS error (rcode {rcode})")),
    }
    let questions = be16(packet, 4)?;
    let answers = be16(packet, 6)?;
    let mut pos = 12;
    for _ in 0..questions {
        pos = skip_name(packet, pos)? + 4;
    }
    let mut addrs = Vec::new();
    for _ in 0..answers {
        pos = skip_name(packet, pos)?;
        let rtype = be16(packet, pos)?;
        let class = be16(packet, pos + 2)?;
        let rdlen = usize::from(be16(packet, pos + 8)?);
        pos += 10;
        let rdata = packet.get(pos..pos + rdlen).ok_or("truncated DNS record")?;
        if rtype == 1 && class == 1 && rdlen == 4 {
            addrs.push(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]));
        }
        pos += rdlen;
    }
    Ok(DnsAnswer { addrs, truncated })
}

/// The first `nameserver` in resolv.conf text (glibc's default otherwise).
fn parse_nameserver(resolv_conf: &str) -> IpAddr {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        .find_map(|addr| addr.split('%').next()?.parse().ok())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

fn query_id() -> u16 {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed)) as u16
}

fn udp_query(server: SocketAddr, query: &[u8], id: u16) -> Result<DnsAnswer, String> {
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).map_err(|e| format!("DNS socket: {e}"))?;
    socket
        .connect(server)
        .map_err(|e| format!("DNS {server}: {e}"))?;
    socket
        .send(query)
        .map_err(|e| format!("DNS {server}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buf = [0u8; 4096];
    loop {
        let left = remaining(deadline).map_err(|_| format!("DNS {server}: timed out"))?;
        socket
            .set_read_timeout(Some(left))
            .map_err(|e| format!("DNS socket: {e}"))?;
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!("DNS {server}: timed out"));
            }
            Err(e) => return Err(format!("DNS {server}: {e}")),
        };
        // Ignore stray packets (e.g. a late answer to an earlier attempt).
        if be16(&buf[..n], 0).ok() != Some(id) {
            continue;
        }
        let flags = be16(&buf[..n], 2)?;
        if flags & 0x0200 != 0 {
            return Ok(DnsAnswer {
                addrs: Vec::new(),
                truncated: true,
            });
        }
        return decode_response(id, &buf[..n]);
    }
}

fn tcp_query(server: SocketAddr, query: &[u8], id: u16) -> Result<DnsAnswer, String> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let err = |e: io::Error| format!("DNS over TCP {server}: {e}");
    let mut stream = TcpStream::connect_timeout(&server, Duration::from_secs(2)).map_err(err)?;
    stream
        .set_write_timeout(Some(remaining(deadline)?))
        .map_err(err)?;
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    stream.write_all(&framed).map_err(err)?;
    stream
        .set_read_timeout(Some(remaining(deadline)?))
        .map_err(err)?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).map_err(err)?;
    let mut packet = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut packet).map_err(err)?;
    decode_response(id, &packet)
}

/// A records of `name` from `server`: UDP with a 2 s timeout and one retry,
/// TCP when the answer is truncated.
fn dns_resolve(server: IpAddr, name: &str) -> Result<Vec<Ipv4Addr>, String> {
    let server = SocketAddr::new(server, 53);
    let mut last_err = String::new();
    for _attempt in 0..2 {
        let id = query_id();
        let query = encode_query(id, name)?;
        match udp_query(server, &query, id) {
            Ok(answer) if answer.truncated => return Ok(tcp_query(server, &query, id)?.addrs),
            Ok(answer) => return Ok(answer.addrs),
            Err(e) if e.contains("NXDOMAIN") => return Err(e),
            Err(e) => last_err = e,
        }
    }
    Err(last_err)
}

/// Addresses for `name` in hosts-file text.
fn hosts_lookup(hosts: &str, name: &str) -> Vec<IpAddr> {
    hosts
        .lines()
        .filter_map(|line| {
            let line = line.split('#').next()?;
            let mut words = line.split_whitespace();
            let addr: IpAddr = words.next()?.parse().ok()?;
            words.any(|w| w.eq_ignore_ascii_case(name)).then_some(addr)
        })
        .collect()
}

/// IP literal, `/etc/hosts`, then DNS via the first resolv.conf nameserver.
fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let from_hosts = hosts_lookup(
        &std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
        host,
    );
    if !from_hosts.is_empty() {
        return Ok(from_hosts
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect());
    }
    if host.eq_ignore_ascii_case("localhost") {
        // Not through getaddrinfo: static glibc has no NSS in a scratch image.
        return Ok(vec![SocketAddr::from((Ipv4Addr::LOCALHOST, port))]);
    }
    let server = parse_nameserver(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
    let addrs = dns_resolve(server, host).map_err(|e| format!("resolve {host}: {e}"))?;
    if addrs.is_empty() {
        return Err(format!("resolve {host}: no A records"));
    }
    Ok(addrs
        .into_iter()
        .map(|ip| SocketAddr::new(IpAddr::V4(ip), port))
        .collect())
}

// ----------------------------------------------------------------- load ---

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
            match resolve(&self.host, self.port) {
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
            match http_get(addr, host_header, "/", deadline) {
                Ok(r) if r.status == 200 => return Ok(r.body),
                Ok(r) => errors.push(format!("{addr}: status {}", r.status)),
                Err(e) => errors.push(format!("{addr}: {e}")),
            }
        }
    }
    Err(errors.join("; "))
}

fn load(args: &[String]) -> Result<ExitCode, Fail> {
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

    /// A response to `query` (id 0x1234 for `tasks.web`) with a CNAME and
    /// A records, names compressed with pointers to the question.
    fn response(flags: u16, answers: &[(u16, &[u8])]) -> Vec<u8> {
        let query = encode_query(0x1234, "tasks.web").unwrap();
        let mut p = query[..12].to_vec();
        p[2..4].copy_from_slice(&flags.to_be_bytes());
        p[6..8].copy_from_slice(&(answers.len() as u16).to_be_bytes());
        p.extend_from_slice(&query[12..]);
        for (rtype, rdata) in answers {
            p.extend_from_slice(&[0xc0, 12]); // pointer to the question name
            p.extend_from_slice(&rtype.to_be_bytes());
            p.extend_from_slice(&[0, 1]); // class IN
            p.extend_from_slice(&600u32.to_be_bytes()); // TTL
            p.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            p.extend_from_slice(rdata);
        }
        p
    }

    #[test]
    fn query_encoding() {
        let q = encode_query(0xbeef, "tasks.web.").unwrap();
        assert_eq!(
            q,
            [
                &[0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0][..],
                b"\x05tasks\x03web\x00",
                &[0, 1, 0, 1],
            ]
            .concat()
        );
        assert!(encode_query(1, "").is_err());
        assert!(encode_query(1, "a..b").is_err());
        assert!(encode_query(1, &"x".repeat(64)).is_err());
        assert!(encode_query(1, &["x"; 130].join(".")).is_err());
    }

    #[test]
    fn response_decoding() {
        // A CNAME (type 5) whose rdata is a compressed name, then two A.
        let p = response(
            0x8180,
            &[(5, &[0xc0, 12]), (1, &[10, 0, 1, 7]), (1, &[10, 0, 1, 8])],
        );
        assert_eq!(
            decode_response(0x1234, &p).unwrap(),
            DnsAnswer {
                addrs: vec![Ipv4Addr::new(10, 0, 1, 7), Ipv4Addr::new(10, 0, 1, 8)],
                truncated: false,
            }
        );
        // An uncompressed owner name works too.
        let mut p2 = response(0x8180, &[]);
        p2[7] = 1;
        p2.extend_from_slice(b"\x05tasks\x03web\x00\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04");
        p2.extend_from_slice(&[192, 168, 0, 1]);
        assert_eq!(
            decode_response(0x1234, &p2).unwrap().addrs,
            [Ipv4Addr::new(192, 168, 0, 1)]
        );

        assert!(
            decode_response(0x1234, &response(0x8380, &[]))
                .unwrap()
                .truncated
        );
        assert!(
            decode_response(0x9999, &p)
                .unwrap_err()
                .contains("mismatch")
        );
        assert!(decode_response(0x1234, &response(0x0100, &[])).is_err());
        assert!(
            decode_response(0x1234, &response(0x8183, &[]))
                .unwrap_err()
                .contains("NXDOMAIN")
        );
        assert!(decode_response(0x1234, &response(0x8182, &[])).is_err());
        // Every truncation of a valid packet is an error, never a panic.
        for len in 0..p.len() {
            assert!(decode_response(0x1234, &p[..len]).is_err(), "len {len}");
        }
        // A bad label type.
        let mut bad = p.clone();
        bad[12] = 0x80;
        assert!(decode_response(0x1234, &bad).is_err());
    }

    #[test]
    fn resolv_conf_and_hosts() {
        let conf = "# comment\nsearch example.com\nnameserver 127.0.0.11\nnameserver 8.8.8.8\noptions ndots:0\n";
        assert_eq!(parse_nameserver(conf), IpAddr::from([127, 0, 0, 11]));
        assert_eq!(
            parse_nameserver("nameserver fe80::1%eth0\n"),
            "fe80::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(parse_nameserver(""), IpAddr::from([127, 0, 0, 1]));
        let hosts = "127.0.0.1 localhost\n10.0.0.5 web web.local # x\n# 10.9.9.9 web\n";
        assert_eq!(hosts_lookup(hosts, "WEB"), [IpAddr::from([10, 0, 0, 5])]);
        assert!(hosts_lookup(hosts, "db").is_empty());
    }

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
        // `handle` on an ephemeral port with a reader over a temp dir.
        let dir = std::env::temp_dir().join(format!(
            "secrets-reader-probe-test-{}-{:x}",
            std::process::id(),
            query_id()
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
                    let make = move || Reader::new(&dir).with_env(|_| None);
                    let names = ["token".to_owned()];
                    let missing = ["token".to_owned(), "nope".to_owned()];
                    let _ = handle_with_paths(stream, &names, &missing, &make);
                });
            }
        });
        let deadline = Instant::now() + Duration::from_secs(2);
        let r = http_get(addr, "x", "/health", deadline).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok\n"[..]));
        let r = http_get(addr, "x", "/", deadline).unwrap();
        // sha256("hello") starts with 2cf24dba5fb0.
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &b"token 2cf24dba5fb0\n"[..])
        );
        let r = http_get(addr, "x", "/missing", deadline).unwrap();
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

    /// `handle`, serving `missing_names` for `/missing` and `names` otherwise.
    fn handle_with_paths(
        stream: TcpStream,
        names: &[String],
        missing_names: &[String],
        make: &dyn Fn() -> Reader,
    ) -> io::Result<()> {
        // The client sends its request with one write; on loopback a peek
        // sees the request line.
        let mut peek = [0u8; 64];
        let n = stream.peek(&mut peek)?;
        let names = if peek[..n].starts_with(b"GET /missing ") {
            missing_names
        } else {
            names
        };
        handle(stream, names, make)
    }
}
