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
//!
//! # Order: `SECRETS_ORDER`
//!
//! `SECRETS_ORDER` (a comma-separated list, spaces allowed) chooses which
//! providers [`Reader::get`] consults and in which order: `files` (steps 1
//! and 2 above), `env` (step 3), and with the cargo features below `vault`
//! and `aws`. Unset or empty, it is `files,env,vault,aws` (the remote ones
//! only when compiled in). A provider left out is not consulted; naming one
//! twice, an unknown one, or one this build lacks (`vault` without the
//! `vault` feature) is [`Error::InvalidVar`]. The `<NAME>`/`<NAME>_FILE`
//! conflict is an error whatever the order.
//!
//! # Remote stores: the `vault` and `aws` features
//!
//! Both are off by default; the default build depends on `percent-encoding`,
//! `sha2` and `zeroize` only. Either feature adds a blocking HTTP client
//! (`ureq`, TLS through `rustls` with the `ring` provider and the Mozilla
//! roots of `webpki-roots`; plain `http://` works too, e.g. for loopback)
//! and `serde_json`.
//!
//! In the default order a remote store is consulted only when its prefix
//! variable is set, after files and environment; named in `SECRETS_ORDER`
//! it must be configured. Not found in a store means "try the next
//! provider", and [`Error::NotFound`] lists the store's path among the
//! places looked at. Remote values follow the same rules as files:
//! trailing newlines trimmed, empty is an error. Any other failure (refused token, unreachable server,
//! malformed answer) is `Error::Provider`, which names the provider and the
//! path, never a value or a token. Redirects are not followed (they would
//! carry the token elsewhere); every request times out after 10 s.
//!
//! **`vault`**: Vault or OpenBao KV version 2, `GET
//! $VAULT_ADDR/v1/<mount>/data/<prefix>/<name>` with the header
//! `X-Vault-Token`.
//!
//! | variable | meaning |
//! |---|---|
//! | `SECRETS_VAULT_PREFIX` | e.g. `raqeem/production`; required, turns the provider on |
//! | `SECRETS_VAULT_MOUNT` | the KV v2 mount, default `secret` |
//! | `VAULT_ADDR` | e.g. `https://vault.internal:8200`; required |
//! | `VAULT_TOKEN` or `VAULT_TOKEN_FILE` | the token, or a file holding it (read on each fetch); exactly one |
//! | `VAULT_NAMESPACE` | sent as `X-Vault-Namespace` when set |
//!
//! The entry must hold a key named like the secret, as `cargo xtask` writes
//! it (`kv put -mount=secret raqeem/production/jwt_secret jwt_secret=-`). A
//! deleted or destroyed current version counts as not found.
//!
//! **`aws`**: AWS Secrets Manager `GetSecretValue` of `<prefix>/<name>`
//! (its `AWSCURRENT` version), signed with Signature Version 4.
//! `SecretString` is used as is, `SecretBinary` base64-decoded.
//!
//! | variable | meaning |
//! |---|---|
//! | `SECRETS_AWS_PREFIX` | e.g. `raqeem/production`; required, turns the provider on |
//! | `AWS_REGION` or `AWS_DEFAULT_REGION` | required |
//! | `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` | credentials |
//! | `AWS_SHARED_CREDENTIALS_FILE`, `AWS_PROFILE` | else this file (default `~/.aws/credentials`), profile (default `default`) |
//! | `AWS_ENDPOINT_URL_SECRETS_MANAGER`, `AWS_ENDPOINT_URL` | endpoint override, e.g. a local moto; default `https://secretsmanager.<region>.amazonaws.com` |
//!
//! Instance, container and web-identity credentials (IMDS, ECS, IRSA) and
//! `AWS_CONFIG_FILE` settings are not supported.
//!
//! **Cache.** Values read from a remote store are cached for
//! `SECRETS_CACHE_SECONDS` (default 60; `0` turns the cache off) and read
//! again after that, so a rotated value reaches a long-running service
//! without a restart, within that time. Only values found are cached;
//! errors are not, and a failed re-read does not fall back to the expired
//! value. Cached values are wiped when they expire and when the cache is
//! dropped. A [`Reader`] made with [`Reader::new`] has a cache of its own;
//! [`Reader::from_env`] and the free functions share one for the process,
//! so calling [`get`] each time a secret is needed is cheap. Files and
//! environment variables are read on every call, as before.
//!
//! Response bodies are read into buffers that are wiped on drop, and the
//! parsed JSON's strings are wiped; copies inside the HTTP and JSON
//! libraries' own buffers and in the kernel are beyond this crate's reach.

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
    /// A Vault KV v2 entry: `path` is the API path after `/v1/`, e.g.
    /// `secret/data/raqeem/production/jwt_secret`, on the server `addr`.
    #[cfg(feature = "vault")]
    Vault { addr: String, path: String },
    /// An AWS Secrets Manager secret, e.g. `raqeem/production/jwt_secret`.
    #[cfg(feature = "aws")]
    Aws { region: String, id: String },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Dir(path) => write!(f, "{}", path.display()),
            Source::FileEnv { var, path } => write!(f, "${var} ({})", path.display()),
            Source::Env(var) => write!(f, "${var}"),
            Source::Built(parts) => write!(f, "built from {parts}"),
            #[cfg(feature = "vault")]
            Source::Vault { addr, path } => write!(f, "vault {path} at {addr}"),
            #[cfg(feature = "aws")]
            Source::Aws { region, id } => write!(f, "aws secretsmanager {id} in {region}"),
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
    /// A remote store (`vault`, `aws` features) answered with an error or
    /// could not be reached. `reason` names what went wrong, never a value
    /// or a token.
    #[cfg(any(feature = "vault", feature = "aws"))]
    Provider {
        name: String,
        source: Source,
        reason: String,
    },
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
            #[cfg(any(feature = "vault", feature = "aws"))]
            Error::Provider {
                name,
                source,
                reason,
            } => write!(f, "cannot read secret {name:?} from {source}: {reason}"),
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
    #[cfg(any(feature = "vault", feature = "aws"))]
    remote: remote::Remote,
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
    ///
    /// With the `vault` or `aws` feature, all readers made by `from_env` (and
    /// the free functions [`get`], [`database_url`], [`redis_url`]) share one
    /// process-wide cache of remote values.
    pub fn from_env() -> Self {
        #[allow(unused_mut)]
        let mut reader = Reader::new(dir_from(std::env::var_os("SECRETS_DIR")));
        #[cfg(any(feature = "vault", feature = "aws"))]
        {
            reader.remote = remote::Remote::shared();
        }
        reader
    }

    /// A reader for `dir`. Variables come from the process environment until
    /// replaced with [`Reader::with_env`].
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Reader {
            dir: dir.into(),
            env: Box::new(|key| std::env::var_os(key)),
            #[cfg(any(feature = "vault", feature = "aws"))]
            remote: remote::Remote::new(),
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

    /// The providers to consult, in order, and whether each was named
    /// explicitly in `$SECRETS_ORDER` (an unconfigured remote store named
    /// there is an error; one only in the default order is skipped).
    fn order(&self) -> Result<Vec<(Provider, bool)>, Error> {
        const VAR: &str = "SECRETS_ORDER";
        let invalid = |reason| Error::InvalidVar {
            var: VAR.to_owned(),
            reason,
        };
        let Some(raw) = self.var(VAR) else {
            return Ok(Provider::DEFAULT.iter().map(|&p| (p, false)).collect());
        };
        let mut order = Vec::new();
        for item in raw.to_string_lossy().split(',') {
            let provider = match item.trim() {
                "files" => Provider::Files,
                "env" => Provider::Env,
                #[cfg(feature = "vault")]
                "vault" => Provider::Vault,
                #[cfg(not(feature = "vault"))]
                "vault" => {
                    return Err(invalid(
                        "names vault, but this build lacks the `vault` feature",
                    ));
                }
                #[cfg(feature = "aws")]
                "aws" => Provider::Aws,
                #[cfg(not(feature = "aws"))]
                "aws" => return Err(invalid("names aws, but this build lacks the `aws` feature")),
                _ => {
                    return Err(invalid(
                        "must be a comma-separated list of files, env, vault and aws",
                    ));
                }
            };
            if order.iter().any(|&(p, _)| p == provider) {
                return Err(invalid("names a provider twice"));
            }
            order.push((provider, true));
        }
        Ok(order)
    }

    /// Reads the secret `name` (e.g. `postgres_password`) from the providers
    /// in `$SECRETS_ORDER` (default `files,env,vault,aws`): `files` is
    /// `<dir>/<name>`, then the file named by `$<NAME>_FILE`; `env` is
    /// `$<NAME>`; `vault` and `aws` need their features and settings (see the
    /// crate documentation).
    pub fn get(&self, name: &str) -> Result<Secret, Error> {
        validate_name(name)?;
        let order = self.order()?;
        let var = env_var_name(name);
        let file_var = format!("{var}_FILE");
        // Wrapped at once so the value is wiped on every return path.
        let mut direct = self.var(&var).map(|v| Wiped(v.into_encoded_bytes()));
        let mut file_path = self.var(&file_var).map(PathBuf::from);
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

        let mut looked = Vec::new();
        for (provider, _explicit) in order {
            match provider {
                Provider::Files => {
                    let dir_path = self.dir.join(name);
                    match read_file(&dir_path) {
                        Ok(bytes) => return finish(name, bytes, Source::Dir(dir_path)),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io_error(Source::Dir(dir_path), e)),
                    }
                    looked.push(dir_path.display().to_string());
                    if let Some(path) = file_path.take() {
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
                    looked.push(format!("${file_var}"));
                }
                Provider::Env => {
                    if let Some(bytes) = direct.take() {
                        return finish(name, bytes, Source::Env(var));
                    }
                    looked.push(format!("${var}"));
                }
                #[cfg(feature = "vault")]
                Provider::Vault => {
                    if let Some(s) = vault::get(self, name, _explicit, &mut looked)? {
                        return Ok(s);
                    }
                }
                #[cfg(feature = "aws")]
                Provider::Aws => {
                    if let Some(s) = aws::get(self, name, _explicit, &mut looked)? {
                        return Ok(s);
                    }
                }
            }
        }

        Err(Error::NotFound {
            name: name.to_owned(),
            looked,
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

/// A place [`Reader::get`] looks in; see `SECRETS_ORDER`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Provider {
    Files,
    Env,
    #[cfg(feature = "vault")]
    Vault,
    #[cfg(feature = "aws")]
    Aws,
}

impl Provider {
    const DEFAULT: &[Provider] = &[
        Provider::Files,
        Provider::Env,
        #[cfg(feature = "vault")]
        Provider::Vault,
        #[cfg(feature = "aws")]
        Provider::Aws,
    ];
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

#[cfg(feature = "aws")]
mod aws;
#[cfg(any(feature = "vault", feature = "aws"))]
mod remote;
#[cfg(feature = "vault")]
mod vault;

#[cfg(test)]
mod tests;
