//! The plaintext inside a backup, written and read in memory only (age
//! encrypts it on the way out): a short text header with the metadata and one
//! line per entry (length, SHA-256, role, path), then the entries' bytes back
//! to back. Simple enough to read by eye once decrypted, and every byte is
//! accounted for, so truncation and corruption are caught even before age's
//! own authentication would be needed.
//!
//! ```text
//! xtask-secrets-backup 1
//! project raqeem
//! environment production
//! created 2026-11-26T01:00:00Z
//! tool xtask 0.1.0
//! entry 412 9f86d0...  env secrets/production.env
//! entry 1180 2c26b4... file SSL_CERTIFICATE secrets/tls/cert.pem
//! end
//! <412 bytes><1180 bytes>
//! ```

use anyhow::{Result, bail};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

const MAGIC: &str = "xtask-secrets-backup 1";

/// What one entry is: the env file, or the file a file secret names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The environment's env file.
    EnvFile,
    /// The env-file key that names the file (`SSL_CERTIFICATE`).
    File(String),
}

/// One file in a backup, with its bytes (kept out of `Debug`, wiped on drop).
#[derive(Clone)]
pub struct Entry {
    /// What the file is.
    pub role: Role,
    /// Where it was, relative to the repository root (or absolute outside it).
    pub path: String,
    /// The file's content.
    pub bytes: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("role", &self.role)
            .field("path", &self.path)
            .field("len", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

/// A backup's plaintext: whose it is, when and by what it was made, and its files.
#[derive(Debug, Clone)]
pub struct Archive {
    /// The manifest's project.
    pub project: String,
    /// The environment backed up.
    pub environment: String,
    /// When, as RFC 3339 UTC (`2026-11-26T01:00:00Z`).
    pub created: String,
    /// The tool and its version that made it (`xtask 0.1.0`).
    pub tool: String,
    /// The files in archive order; one is the env file.
    pub entries: Vec<Entry>,
}

/// The SHA-256 of `bytes` in lower-case hex (64 characters).
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn one_line(what: &str, s: &str) -> Result<()> {
    if s.is_empty() || s.contains(['\n', '\r']) {
        bail!("a backup's {what} must be one non-empty line; got {s:?}");
    }
    Ok(())
}

impl Archive {
    /// The archive's bytes (wiped on drop: they hold every value).
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>> {
        for (what, v) in [
            ("project", &self.project),
            ("environment", &self.environment),
            ("time", &self.created),
            ("tool version", &self.tool),
        ] {
            one_line(what, v)?;
        }
        let mut head = format!(
            "{MAGIC}\nproject {}\nenvironment {}\ncreated {}\ntool {}\n",
            self.project, self.environment, self.created, self.tool
        );
        for e in &self.entries {
            one_line("path", &e.path)?;
            let role = match &e.role {
                Role::EnvFile => "env".to_string(),
                Role::File(k) => {
                    one_line("key", k)?;
                    if k.contains(' ') {
                        bail!("a backup's key must not contain spaces; got {k:?}");
                    }
                    format!("file {k}")
                }
            };
            head.push_str(&format!(
                "entry {} {} {role} {}\n",
                e.bytes.len(),
                sha256_hex(&e.bytes),
                e.path
            ));
        }
        head.push_str("end\n");
        let total = head.len() + self.entries.iter().map(|e| e.bytes.len()).sum::<usize>();
        let mut out = Zeroizing::new(Vec::with_capacity(total));
        out.extend_from_slice(head.as_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.bytes);
        }
        Ok(out)
    }

    /// Reads an archive, checking the layout, every length and every checksum.
    pub fn decode(bytes: &[u8]) -> Result<Archive> {
        let bad = |why: String| {
            anyhow::anyhow!(
                "the backup's content is damaged ({why}); it was not written by `cargo xtask backup-secrets`, or it is corrupted: use another copy"
            )
        };
        let Some(end) = find(bytes, b"\nend\n") else {
            return Err(bad("no end of header".into()));
        };
        let head = std::str::from_utf8(&bytes[..end + 1])
            .map_err(|_| bad("the header is not text".into()))?;
        let mut lines = head.lines();
        if lines.next() != Some(MAGIC) {
            return Err(bad(format!("it does not start with {MAGIC:?}")));
        }
        let mut field = |name: &str| -> Result<String> {
            lines
                .next()
                .and_then(|l| l.strip_prefix(name))
                .and_then(|l| l.strip_prefix(' '))
                .map(str::to_string)
                .ok_or_else(|| bad(format!("the {name} line is missing")))
        };
        let (project, environment, created, tool) = (
            field("project")?,
            field("environment")?,
            field("created")?,
            field("tool")?,
        );
        let mut body = &bytes[end + 5..];
        let mut entries = Vec::new();
        for (i, line) in lines.enumerate() {
            let (len, sum, role, path) =
                parse_entry(line).ok_or_else(|| bad(format!("entry {} is malformed", i + 1)))?;
            if body.len() < len {
                return Err(bad(format!("{path} is cut short (truncated)")));
            }
            let (data, rest) = body.split_at(len);
            if sha256_hex(data) != sum {
                return Err(bad(format!("the checksum of {path} does not match")));
            }
            entries.push(Entry {
                role,
                path: path.to_string(),
                bytes: Zeroizing::new(data.to_vec()),
            });
            body = rest;
        }
        if !body.is_empty() {
            return Err(bad(format!("{} unexpected bytes at the end", body.len())));
        }
        Ok(Archive {
            project,
            environment,
            created,
            tool,
            entries,
        })
    }
}

fn parse_entry(line: &str) -> Option<(usize, &str, Role, &str)> {
    let rest = line.strip_prefix("entry ")?;
    let (len, rest) = rest.split_once(' ')?;
    let (sum, rest) = rest.split_once(' ')?;
    let (role, path) = match rest.strip_prefix("env ") {
        Some(p) => (Role::EnvFile, p),
        None => {
            let (key, path) = rest.strip_prefix("file ")?.split_once(' ')?;
            (Role::File(key.to_string()), path)
        }
    };
    let ok = sum.len() == 64 && !path.is_empty();
    ok.then_some((len.parse().ok()?, sum, role, path))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Context for errors about one archive: which project and environment.
pub fn describe(a: &Archive) -> String {
    format!(
        "a backup of {} {} made {} by {}",
        a.project, a.environment, a.created, a.tool
    )
}

/// Refuses an archive of another project or environment.
pub fn check_target(a: &Archive, project: &str, env: &str, from: &str) -> Result<()> {
    if a.project != project || a.environment != env {
        bail!(
            "{from} is {}, not of {project} {env}; restore it into {} {} (or pick the backup of {env})",
            describe(a),
            a.project,
            a.environment
        );
    }
    if !a.entries.iter().any(|e| e.role == Role::EnvFile) {
        bail!("{from} holds no env file; it cannot be restored")
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Archive {
        Archive {
            project: "demo".into(),
            environment: "production".into(),
            created: "2026-11-26T01:00:00Z".into(),
            tool: "xtask 0.1.0".into(),
            entries: vec![
                Entry {
                    role: Role::EnvFile,
                    path: "secrets/production.env".into(),
                    bytes: Zeroizing::new(b"A=1\nB='two words'\n".to_vec()),
                },
                Entry {
                    role: Role::File("TLS_KEY".into()),
                    path: "secrets/my tls/key.pem".into(),
                    bytes: Zeroizing::new(b"\x00\xff-----BEGIN\nend\n\n".to_vec()),
                },
            ],
        }
    }

    #[test]
    fn round_trips_every_byte() {
        let a = sample();
        let b = Archive::decode(&a.encode().unwrap()).unwrap();
        assert_eq!(b.project, "demo");
        assert_eq!(b.environment, "production");
        assert_eq!(b.entries.len(), 2);
        assert_eq!(b.entries[1].role, Role::File("TLS_KEY".into()));
        assert_eq!(b.entries[1].path, "secrets/my tls/key.pem");
        assert_eq!(*b.entries[1].bytes, *a.entries[1].bytes);
        assert_eq!(*b.entries[0].bytes, *a.entries[0].bytes);
    }

    #[test]
    fn truncation_and_corruption_are_refused() {
        let bytes = sample().encode().unwrap();
        let e = format!(
            "{:#}",
            Archive::decode(&bytes[..bytes.len() - 1]).unwrap_err()
        );
        assert!(e.contains("cut short"), "{e}");
        let mut flipped = bytes.to_vec();
        let n = flipped.len() - 3;
        flipped[n] ^= 1;
        let e = format!("{:#}", Archive::decode(&flipped).unwrap_err());
        assert!(e.contains("checksum of secrets/my tls/key.pem"), "{e}");
        let mut longer = bytes.to_vec();
        longer.push(b'x');
        assert!(Archive::decode(&longer).is_err());
        assert!(Archive::decode(b"not a backup").is_err());
    }

    #[test]
    fn another_environment_is_refused() {
        let a = sample();
        let e = check_target(&a, "demo", "staging", "b.age").unwrap_err();
        assert!(
            format!("{e}").contains("is a backup of demo production"),
            "{e}"
        );
        assert!(check_target(&a, "demo", "production", "b.age").is_ok());
        assert!(check_target(&a, "other", "production", "b.age").is_err());
    }

    #[test]
    fn debug_never_shows_bytes() {
        let a = sample();
        assert!(!format!("{a:?}").contains("two words"));
    }
}
