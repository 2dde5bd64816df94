//! Read a service's secrets the same way everywhere, without ever showing them.
//!
//! # Why this crate exists
//!
//! Our services run in containers and receive their secrets in one of three
//! ways: as files under `/run/secrets` (Docker/Swarm and Compose secrets), as
//! a file named by a `<NAME>_FILE` environment variable (the convention of the
//! official postgres and mysql images), or, in development, as a plain
//! `<NAME>` environment variable. Every service used to implement this lookup
//! itself, each slightly differently (trailing newlines, empty values,
//! precedence), and secrets ended up in logs through `Debug` output and error
//! messages. This crate implements the lookup once:
//!
//! 1. `<dir>/<name>`, where `dir` is `/run/secrets` unless `SECRETS_DIR` is
//!    set and non-empty;
//! 2. the file named by `<NAME>_FILE`;
//! 3. the environment variable `<NAME>`.
//!
//! `NAME` is `name` upper-cased with `-` and `.` mapped to `_`. Setting both
//! `<NAME>` and `<NAME>_FILE` is an error ([`Error::Conflict`]), as in the
//! official postgres and mysql images. An environment variable set to the
//! empty string counts as unset. Trailing newlines (`\n`, `\r\n`, repeated)
//! are trimmed and nothing else; a value that is empty after trimming is an
//! error.
//!
//! Values are returned as [`Secret`], whose `Debug` and `Display` never show
//! the value and whose bytes are overwritten with zeros when it is dropped.
//! [`Error`] never contains a value either, so errors can be logged freely.
//!
//! ```no_run
//! let password = secrets_reader::get("postgres_password")?;
//! let url = secrets_reader::database_url()?;
//! eprintln!("using {} from {}", url.fingerprint(), url.source());
//! let _ = (password.expose(), url.expose_str()?);
//! # Ok::<(), secrets_reader::Error>(())
//! ```
//!
//! Wiping is best effort: it covers every buffer this crate owns, but not
//! copies the operating system or the caller make (the process environment,
//! page cache, strings built from [`Secret::expose`]).

use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_encode};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

/// Directory searched first when `SECRETS_DIR` is unset or empty.
pub const DEFAULT_DIR: &str = "/run/secrets";

/// Secret files larger than this (1 MiB) are refused with [`Error::Io`]
/// rather than read; Docker itself limits secrets to 500 KB.
pub const MAX_SECRET_LEN: u64 = 1 << 20;

/// Everything except the URL "unreserved" characters `A-Za-z0-9-._~`.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Overwrites the whole allocation of `buf` (length and spare capacity) with
/// zeros, leaving its length unchanged. `zeroize` writes in a way the compiler
/// may not remove; the spare capacity matters because trimming only shortens
/// the length.
fn wipe(buf: &mut Vec<u8>) {
    buf.as_mut_slice().zeroize();
    buf.spare_capacity_mut().zeroize();
}

/// A byte buffer that is wiped when dropped.
struct Wiped(Vec<u8>);

impl Clone for Wiped {
    fn clone(&self) -> Self {
        // `Vec::clone` allocates exactly `len` bytes once and copies: no
        // reallocation leaves an unwiped copy behind.
        Wiped(self.0.clone())
    }
}

impl Drop for Wiped {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

impl Wiped {
    /// Removes trailing `\n` and `\r\n` (repeated), nothing else. Only the
    /// length changes, so the removed bytes are still wiped on drop.
    fn trim_newlines(&mut self) {
        let v = &mut self.0;
        while v.last() == Some(&b'\n') {
            v.pop();
            if v.last() == Some(&b'\r') {
                v.pop();
            }
        }
    }
}

/// A secret value. It cannot be printed: `Debug` shows only where it came
/// from and `Display` shows `<redacted>`. Its bytes are overwritten with zeros
/// when it is dropped.
#[derive(Clone)]
pub struct Secret {
    bytes: Wiped,
    source: Source,
}

impl Secret {
    /// The secret's bytes. Anything built from them is the caller's to
    /// protect.
    pub fn expose(&self) -> &[u8] {
        &self.bytes.0
    }

    /// The secret as UTF-8 text, or [`Error::NotUtf8`] naming the source.
    pub fn expose_str(&self) -> Result<&str, Error> {
        std::str::from_utf8(&self.bytes.0).map_err(|_| Error::NotUtf8 {
            source: self.source.clone(),
        })
    }

    /// Where the secret was read from.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.0.len()
    }

    /// Whether the secret has no bytes (never true for secrets this crate
    /// reads: empty values are an error).
    pub fn is_empty(&self) -> bool {
        self.bytes.0.is_empty()
    }

    /// The first 12 lowercase hex characters (48 bits) of the SHA-256 of the
    /// bytes.
    ///
    /// This is a short, *unkeyed* fingerprint meant for checking that two
    /// sides hold the same bytes (e.g. a service and the operator who created
    /// the secret). It is not a MAC and does not hide low-entropy values from
    /// a brute-force search; do not publish fingerprints of guessable secrets.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(&self.bytes.0);
        digest[..6].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret {{ source: {}, value: <redacted> }}", self.source)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where a secret came from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// A file in the secrets directory, e.g. `/run/secrets/postgres_password`.
    Dir(PathBuf),
    /// The file named by the environment variable `var` (`<NAME>_FILE`).
    FileEnv { var: String, path: PathBuf },
    /// The environment variable with this name (`<NAME>`).
    Env(String),
    /// Built from other secrets, e.g. `postgres_user, postgres_password`.
    Built(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Dir(path) => write!(f, "{}", path.display()),
            Source::FileEnv { var, path } => write!(f, "${var} ({})", path.display()),
            Source::Env(var) => write!(f, "${var}"),
            Source::Built(parts) => write!(f, "built from {parts}"),
        }
    }
}

/// Why a secret could not be read. Never contains a secret value.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The name is empty or contains `/`, `\0`, `..` or `=`.
    InvalidName { name: String, reason: &'static str },
    /// Both `<NAME>` and `<NAME>_FILE` are set and non-empty.
    Conflict {
        name: String,
        var: String,
        file_var: String,
    },
    /// The secret is in none of the places looked at.
    NotFound { name: String, looked: Vec<String> },
    /// A URL secret was not found and the secrets it is built from are
    /// missing too.
    CannotBuild {
        name: String,
        missing: Vec<String>,
        looked: Vec<String>,
    },
    /// The value is empty after trimming trailing newlines.
    Empty { name: String, source: Source },
    /// [`Secret::expose_str`] on a value that is not UTF-8.
    NotUtf8 { source: Source },
    /// A secret file exists (or was named by `<NAME>_FILE`) but cannot be
    /// read, or is larger than [`MAX_SECRET_LEN`].
    Io {
        name: String,
        source: Source,
        error: io::Error,
    },
    /// A plain (non-secret) setting such as `POSTGRES_PORT` is malformed.
    InvalidVar { var: String, reason: &'static str },
}

fn join(items: &[String]) -> String {
    items.join(", ")
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidName { name, reason } => {
                write!(f, "invalid secret name {name:?}: {reason}")
            }
            Error::Conflict {
                name,
                var,
                file_var,
            } => write!(
                f,
                "secret {name:?}: both ${var} and ${file_var} are set; set only one"
            ),
            Error::NotFound { name, looked } => {
                write!(f, "secret {name:?} not found; looked at {}", join(looked))
            }
            Error::CannotBuild {
                name,
                missing,
                looked,
            } => write!(
                f,
                "secret {name:?} not found and cannot be built: missing {}; looked at {}",
                join(missing),
                join(looked)
            ),
            Error::Empty { name, source } => write!(f, "secret {name:?} from {source} is empty"),
            Error::NotUtf8 { source } => write!(f, "secret from {source} is not valid UTF-8"),
            Error::Io {
                name,
                source,
                error,
            } => write!(
                f,
                "cannot read secret {name:?} from {source}: {error} ({:?})",
                error.kind()
            ),
            Error::InvalidVar { var, reason } => write!(f, "${var} {reason}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}

fn validate_name(name: &str) -> Result<(), Error> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.contains('/') {
        "contains '/'"
    } else if name.contains('\0') {
        "contains a NUL byte"
    } else if name.contains("..") {
        "contains '..'"
    } else if name.contains('=') {
        "contains '='"
    } else {
        return Ok(());
    };
    Err(Error::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

/// `postgres_password` → `POSTGRES_PASSWORD`; `-` and `.` become `_`.
fn env_var_name(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

/// Reads at most [`MAX_SECRET_LEN`] bytes of `path` into a wiped buffer.
fn read_file(path: &Path) -> io::Result<Wiped> {
    let file = File::open(path)?;
    let hint = file.metadata().map(|m| m.len()).unwrap_or(0);
    // One allocation big enough for the whole file plus the EOF probe, so
    // `read_to_end` does not reallocate and leave unwiped copies behind.
    let mut buf = Wiped(Vec::with_capacity(hint.min(MAX_SECRET_LEN) as usize + 1));
    file.take(MAX_SECRET_LEN + 1).read_to_end(&mut buf.0)?;
    if buf.0.len() as u64 > MAX_SECRET_LEN {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("secret file is larger than {MAX_SECRET_LEN} bytes"),
        ));
    }
    Ok(buf)
}

fn finish(name: &str, mut bytes: Wiped, source: Source) -> Result<Secret, Error> {
    bytes.trim_newlines();
    if bytes.0.is_empty() {
        return Err(Error::Empty {
            name: name.to_owned(),
            source,
        });
    }
    Ok(Secret { bytes, source })
}

enum Piece<'a> {
    Raw(&'a [u8]),
    Encoded(&'a [u8]),
}

/// Concatenates `pieces` (percent-encoding the `Encoded` ones) into a single
/// allocation of exactly the right size.
fn build(pieces: &[Piece<'_>]) -> Wiped {
    let len: usize = pieces
        .iter()
        .map(|p| match p {
            Piece::Raw(b) => b.len(),
            Piece::Encoded(b) => percent_encode(b, UNRESERVED).map(str::len).sum(),
        })
        .sum();
    let mut out = Wiped(Vec::with_capacity(len));
    for p in pieces {
        match p {
            Piece::Raw(b) => out.0.extend_from_slice(b),
            Piece::Encoded(b) => {
                for chunk in percent_encode(b, UNRESERVED) {
                    out.0.extend_from_slice(chunk.as_bytes());
                }
            }
        }
    }
    out
}

type EnvFn = dyn Fn(&str) -> Option<OsString> + Send + Sync;

/// Looks secrets up in a directory and an environment.
///
/// [`Reader::from_env`] uses the process environment; tests use
/// [`Reader::new`] and [`Reader::with_env`] so they never have to mutate it.
pub struct Reader {
    dir: PathBuf,
    env: Box<EnvFn>,
}

impl fmt::Debug for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn dir_from(secrets_dir: Option<OsString>) -> PathBuf {
    match secrets_dir {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(DEFAULT_DIR),
    }
}

impl Reader {
    /// The directory is `$SECRETS_DIR` when set and non-empty, else
    /// `/run/secrets`; variables come from the process environment.
    pub fn from_env() -> Self {
        Reader::new(dir_from(std::env::var_os("SECRETS_DIR")))
    }

    /// A reader for `dir`. Variables come from the process environment until
    /// replaced with [`Reader::with_env`].
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Reader {
            dir: dir.into(),
            env: Box::new(|key| std::env::var_os(key)),
        }
    }

    /// Replaces the environment: `env(key)` returns the variable's value.
    pub fn with_env(
        mut self,
        env: impl Fn(&str) -> Option<OsString> + Send + Sync + 'static,
    ) -> Self {
        self.env = Box::new(env);
        self
    }

    /// The secrets directory searched first.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A variable's value; set to the empty string counts as unset.
    fn var(&self, key: &str) -> Option<OsString> {
        (self.env)(key).filter(|v| !v.is_empty())
    }

    /// Reads the secret `name` (e.g. `postgres_password`): from
    /// `<dir>/<name>`, else the file named by `$<NAME>_FILE`, else `$<NAME>`.
    pub fn get(&self, name: &str) -> Result<Secret, Error> {
        validate_name(name)?;
        let var = env_var_name(name);
        let file_var = format!("{var}_FILE");
        // Wrapped at once so the value is wiped on every return path.
        let direct = self.var(&var).map(|v| Wiped(v.into_encoded_bytes()));
        let file_path = self.var(&file_var).map(PathBuf::from);
        if direct.is_some() && file_path.is_some() {
            return Err(Error::Conflict {
                name: name.to_owned(),
                var,
                file_var,
            });
        }
        let io_error = |source, error| Error::Io {
            name: name.to_owned(),
            source,
            error,
        };

        let dir_path = self.dir.join(name);
        match read_file(&dir_path) {
            Ok(bytes) => return finish(name, bytes, Source::Dir(dir_path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(Source::Dir(dir_path), e)),
        }

        if let Some(path) = file_path {
            let read = read_file(&path);
            let source = Source::FileEnv {
                var: file_var,
                path,
            };
            return match read {
                Ok(bytes) => finish(name, bytes, source),
                Err(e) => Err(io_error(source, e)),
            };
        }

        if let Some(bytes) = direct {
            return finish(name, bytes, Source::Env(var));
        }

        Err(Error::NotFound {
            name: name.to_owned(),
            looked: vec![
                dir_path.display().to_string(),
                format!("${file_var}"),
                format!("${var}"),
            ],
        })
    }

    /// Reads `name` as a part of a built secret: `Ok(None)` when not found
    /// (recording the name and the places looked), other errors returned.
    fn part(
        &self,
        name: &str,
        missing: &mut Vec<String>,
        looked: &mut Vec<String>,
    ) -> Result<Option<Secret>, Error> {
        match self.get(name) {
            Ok(secret) => Ok(Some(secret)),
            Err(Error::NotFound { looked: l, .. }) => {
                missing.push(name.to_owned());
                looked.extend(l);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// A plain setting, or `default` when unset or empty.
    fn plain(&self, var: &str, default: &str) -> String {
        self.var(var)
            .map(|v| v.to_string_lossy().into_owned())
            .unwrap_or_else(|| default.to_owned())
    }

    /// A plain numeric setting in `range`, or `default` when unset or empty.
    fn number(
        &self,
        var: &str,
        default: &str,
        range: RangeInclusive<u32>,
        reason: &'static str,
    ) -> Result<String, Error> {
        match self.plain(var, default).trim().parse::<u32>() {
            Ok(n) if range.contains(&n) => Ok(n.to_string()),
            _ => Err(Error::InvalidVar {
                var: var.to_owned(),
                reason,
            }),
        }
    }

    /// The `database_url` secret when found; otherwise
    /// `postgresql://{user}:{password}@{host}:{port}/{db}` built from the
    /// secrets `postgres_user` and `postgres_password` and the plain
    /// variables `POSTGRES_HOST` (default `postgres`), `POSTGRES_PORT`
    /// (default `5432`) and `POSTGRES_DB` (default: the user name). User,
    /// password and database are percent-encoded.
    ///
    /// Errors other than "not found" for `database_url` (e.g. a conflict) are
    /// returned rather than falling back.
    pub fn database_url(&self) -> Result<Secret, Error> {
        let mut looked = match self.get("database_url") {
            Ok(secret) => return Ok(secret),
            Err(Error::NotFound { looked, .. }) => looked,
            Err(e) => return Err(e),
        };
        let mut missing = Vec::new();
        let user = self.part("postgres_user", &mut missing, &mut looked)?;
        let password = self.part("postgres_password", &mut missing, &mut looked)?;
        let (Some(user), Some(password)) = (user, password) else {
            return Err(Error::CannotBuild {
                name: "database_url".to_owned(),
                missing,
                looked,
            });
        };
        let host = self.plain("POSTGRES_HOST", "postgres");
        let port = self.number("POSTGRES_PORT", "5432", PORTS, PORT_REASON)?;
        let db = self.var("POSTGRES_DB").map(OsString::into_encoded_bytes);
        let db = db.as_deref().unwrap_or(user.expose());
        let url = build(&[
            Piece::Raw(b"postgresql://"),
            Piece::Encoded(user.expose()),
            Piece::Raw(b":"),
            Piece::Encoded(password.expose()),
            Piece::Raw(b"@"),
            Piece::Raw(host.as_bytes()),
            Piece::Raw(b":"),
            Piece::Raw(port.as_bytes()),
            Piece::Raw(b"/"),
            Piece::Encoded(db),
        ]);
        Ok(Secret {
            bytes: url,
            source: Source::Built("postgres_user, postgres_password".to_owned()),
        })
    }

    /// The `redis_url` secret when found; otherwise
    /// `redis://:{password}@{host}:{port}/{db}` built from the secret
    /// `redis_password` (percent-encoded) and the plain variables
    /// `REDIS_HOST` (default `redis`), `REDIS_PORT` (default `6379`) and
    /// `REDIS_DB` (default `0`).
    pub fn redis_url(&self) -> Result<Secret, Error> {
        let mut looked = match self.get("redis_url") {
            Ok(secret) => return Ok(secret),
            Err(Error::NotFound { looked, .. }) => looked,
            Err(e) => return Err(e),
        };
        let mut missing = Vec::new();
        let Some(password) = self.part("redis_password", &mut missing, &mut looked)? else {
            return Err(Error::CannotBuild {
                name: "redis_url".to_owned(),
                missing,
                looked,
            });
        };
        let host = self.plain("REDIS_HOST", "redis");
        let port = self.number("REDIS_PORT", "6379", PORTS, PORT_REASON)?;
        let db = self.number("REDIS_DB", "0", 0..=u32::MAX, "is not a database number")?;
        let url = build(&[
            Piece::Raw(b"redis://:"),
            Piece::Encoded(password.expose()),
            Piece::Raw(b"@"),
            Piece::Raw(host.as_bytes()),
            Piece::Raw(b":"),
            Piece::Raw(port.as_bytes()),
            Piece::Raw(b"/"),
            Piece::Raw(db.as_bytes()),
        ]);
        Ok(Secret {
            bytes: url,
            source: Source::Built("redis_password".to_owned()),
        })
    }
}

const PORTS: RangeInclusive<u32> = 1..=65535;
const PORT_REASON: &str = "is not a port number (1-65535)";

/// Reads the secret `name` with [`Reader::from_env`].
pub fn get(name: &str) -> Result<Secret, Error> {
    Reader::from_env().get(name)
}

/// [`Reader::database_url`] with [`Reader::from_env`].
pub fn database_url() -> Result<Secret, Error> {
    Reader::from_env().database_url()
}

/// [`Reader::redis_url`] with [`Reader::from_env`].
pub fn redis_url() -> Result<Secret, Error> {
    Reader::from_env().redis_url()
}

#[cfg(test)]
mod tests;
