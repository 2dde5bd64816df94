//! `probe serve [--port P] NAME...`: shows that a container reads the right
//! bytes for each named secret, by serving their fingerprints (never values).

use std::net::{Ipv4Addr, TcpListener};
use std::process::ExitCode;
use std::sync::Arc;

use secrets_reader::{Error, Reader, Secret};

use crate::{Fail, Usage, parse_args, port_option, server};

pub fn run(args: &[String]) -> Result<ExitCode, Fail> {
    let (options, names) = parse_args(args, &["--port"])?;
    let port = port_option(&options)?;
    if names.is_empty() {
        return Err(Usage("serve needs at least one secret NAME".into()).into());
    }
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| Fail::Other(format!("cannot listen on :{port}: {e}")))?;
    eprintln!("probe: serving {} secrets on :{port}", names.len());
    // A fresh reader per request, so a changed secret is seen at once.
    server::run(
        vec![listener],
        Arc::new(move |_path: &str| fingerprints(&Reader::from_env(), &names)),
    );
    Ok(ExitCode::SUCCESS)
}

/// `NAME FINGERPRINT` lines (200), or the error messages (500).
pub fn fingerprints(reader: &Reader, names: &[String]) -> (u16, String) {
    report(names.iter().map(|name| fingerprint_line(reader, name)))
}

/// `NAME FINGERPRINT\n` for one secret, or `NAME error: MESSAGE\n`.
/// `database_url` and `redis_url` go through the reader's URL builders.
pub fn fingerprint_line(reader: &Reader, name: &str) -> Result<String, String> {
    let result = match name {
        "database_url" => reader.database_url(),
        "redis_url" => reader.redis_url(),
        _ => reader.get(name),
    };
    line(name, result)
}

/// The line served for `name` once read: the fingerprint, never the value.
pub fn line(name: &str, result: Result<Secret, Error>) -> Result<String, String> {
    match result {
        Ok(secret) => Ok(format!("{name} {}\n", secret.fingerprint())),
        Err(err) => Err(format!("{name} error: {err}\n")),
    }
}

/// 200 with every line when all succeeded, else 500 with only the errors.
pub fn report(lines: impl IntoIterator<Item = Result<String, String>>) -> (u16, String) {
    let mut ok = String::new();
    let mut errors = String::new();
    for line in lines {
        match line {
            Ok(line) => ok.push_str(&line),
            Err(line) => errors.push_str(&line),
        }
    }
    if errors.is_empty() {
        (200, ok)
    } else {
        (500, errors)
    }
}
