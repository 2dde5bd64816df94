//! `probe`: a tiny test service for secrets-reader (std only, no async), built
//! statically into `FROM scratch` test images.
//!
//! ```text
//! probe serve [--port P] NAME...
//! probe health [--port P]
//! probe load --target HOST:PORT [--count N] [--max-seconds S] [--interval-ms M]
//! probe standin
//! ```
//!
//! `serve` answers `GET /health` with `ok` and any other `GET` with one line
//! `NAME FINGERPRINT` per secret, read fresh for every request (500 with the
//! error messages if any secret fails; values are never shown). `health` is a
//! HEALTHCHECK for `FROM scratch` images. `load` is a bounded client for
//! zero-downtime tests; it resolves names itself over UDP DNS because
//! statically linked glibc cannot resolve names in a scratch image.
//!
//! Run under any other name than `probe` (busybox style: a link named
//! `redis-server`, `postgres`, `docker-entrypoint.sh`...), or as
//! `probe standin`, it is a stand-in for that service: see [`standin`].

mod dns;
mod http;
mod load;
mod serve;
mod server;
mod signals;
mod standin;

use std::ffi::OsStr;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "usage:
  probe serve [--port P] NAME...
  probe health [--port P]
  probe load --target HOST:PORT [--count N] [--max-seconds S] [--interval-ms M]
  probe standin    (also: run under any other name, e.g. a link named redis-server)";

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    let name = invoked_as(args.next().as_deref());
    if name != "probe" {
        // A stand-in ignores its arguments, which need not even be UTF-8.
        return exit(standin::run(&name));
    }
    let args: Vec<String> = match args.map(|a| a.into_string()).collect() {
        Ok(args) => args,
        Err(arg) => return exit(Err(Usage(format!("argument {arg:?} is not UTF-8")).into())),
    };
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve::run(&args[1..]),
        Some("health") => health(&args[1..]),
        Some("load") => load::run(&args[1..]),
        Some("standin") => standin::run("probe standin"),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => Err(Usage("expected a subcommand".into()).into()),
    };
    exit(result)
}

/// The file name the executable was started under (`argv[0]`), `probe` when
/// there is none.
fn invoked_as(argv0: Option<&OsStr>) -> String {
    argv0
        .and_then(|a| Path::new(a).file_name())
        .map_or_else(|| "probe".to_owned(), |n| n.to_string_lossy().into_owned())
}

fn exit(result: Result<ExitCode, Fail>) -> ExitCode {
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

fn health(args: &[String]) -> Result<ExitCode, Fail> {
    let (options, rest) = parse_args(args, &["--port"])?;
    if !rest.is_empty() {
        return Err(Usage(format!("unexpected argument {:?}", rest[0])).into());
    }
    let port = port_option(&options)?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + Duration::from_secs(2);
    match http::get(addr, &format!("127.0.0.1:{port}"), "/health", deadline) {
        Ok(r) if r.status == 200 => Ok(ExitCode::SUCCESS),
        Ok(r) => Err(Fail::Other(format!("health: status {}", r.status))),
        Err(e) => Err(Fail::Other(format!("health: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_decides_the_mode() {
        let as_name = |a: &str| invoked_as(Some(OsStr::new(a)));
        assert_eq!(as_name("/probe"), "probe");
        assert_eq!(as_name("probe"), "probe");
        assert_eq!(as_name("/usr/local/bin/redis-server"), "redis-server");
        assert_eq!(as_name("docker-entrypoint.sh"), "docker-entrypoint.sh");
        assert_eq!(as_name("./target/release/postgres"), "postgres");
        assert_eq!(invoked_as(None), "probe");
    }

    #[test]
    fn options() {
        let args: Vec<String> = ["--port=81", "a", "--port", "82", "b"]
            .map(String::from)
            .into();
        let (options, positional) = parse_args(&args, &["--port"]).ok().unwrap();
        assert_eq!(options, [("--port", "81"), ("--port", "82")]);
        assert_eq!(positional, ["a", "b"]);
        assert_eq!(port_option(&options).ok(), Some(82));
        assert_eq!(port_option(&[]).ok(), Some(8080));
        let bad: Vec<String> = vec!["--nope".into()];
        assert!(parse_args(&bad, &["--port"]).is_err());
        let missing: Vec<String> = vec!["--port".into()];
        assert!(parse_args(&missing, &["--port"]).is_err());
    }
}
