//! A minimal DNS client (A records over UDP, TCP when truncated) for the load
//! client: statically linked glibc has no NSS in a `FROM scratch` image, so
//! `getaddrinfo` cannot resolve service names there.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::http::remaining;

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

pub fn query_id() -> u16 {
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
fn query_a(server: IpAddr, name: &str) -> Result<Vec<Ipv4Addr>, String> {
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
pub fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
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
    let addrs = query_a(server, host).map_err(|e| format!("resolve {host}: {e}"))?;
    if addrs.is_empty() {
        return Err(format!("resolve {host}: no A records"));
    }
    Ok(addrs
        .into_iter()
        .map(|ip| SocketAddr::new(IpAddr::V4(ip), port))
        .collect())
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
}
