//! Compose file secrets: one file per secret in `secrets/<env>/`, bind-mounted
//! by Compose at `/run/secrets/<name>`. Files are replaced in place (by rename),
//! so this store has no versions.
//!
//! Compose without Swarm ignores `uid`, `gid` and `mode`: the container sees the
//! host file's owner and mode. Files are 0600, so an image that runs as a
//! non-root user needs `owner` (`[environments.<env>.compose]`) to name that
//! user's uid:gid.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    time::SystemTime,
};

use anyhow::{Context, Result};

use super::{Item, Scope, SecretStore};
use crate::{
    disk::fsutil,
    model::manifest::BackendKind,
    model::secret::SecretValue,
    plan::{Naming, Step, Stored},
};

pub(crate) struct FileStore {
    root: PathBuf,
    dir: PathBuf,
    /// `owner` per secret (the secret's own, else the environment's).
    owners: BTreeMap<String, (u32, u32)>,
}

/// `secrets/<env>/`, where the files live.
pub fn secrets_dir(root: &Path, env: &str) -> PathBuf {
    root.join("secrets").join(env)
}

/// The compose table: `file` (the compose file, read by the runtime) and `owner`.
pub struct Settings {
    /// The compose file, relative to the root (default `docker-compose.prod.yml`).
    pub file: PathBuf,
    /// `owner = "UID:GID"`: who owns the secret files, unless a secret names its own.
    pub owner: Option<(u32, u32)>,
}

/// Reads the environment's compose table; an error names a wrong or unknown key.
pub fn settings(env: &crate::model::manifest::Environment) -> Result<Settings> {
    let mut t = env.settings_for(BackendKind::Compose);
    let s = Settings {
        file: PathBuf::from(
            t.opt_str("file")?
                .unwrap_or_else(|| "docker-compose.prod.yml".into()),
        ),
        owner: t.opt_owner("owner")?,
    };
    t.finish()?;
    Ok(s)
}

impl FileStore {
    pub(crate) fn new(s: &Scope) -> Result<FileStore> {
        let set = settings(s.env)?;
        let owners = s
            .manifest
            .secrets
            .iter()
            .filter_map(|spec| spec.owner.or(set.owner).map(|o| (spec.name.clone(), o)))
            .collect();
        Ok(FileStore {
            root: s.root.to_path_buf(),
            dir: secrets_dir(s.root, &s.env.name),
            owners,
        })
    }

    fn rel(&self, p: &Path) -> String {
        p.strip_prefix(&self.root)
            .unwrap_or(p)
            .display()
            .to_string()
    }
}

/// What setup must put right besides the content: mode and owner.
pub fn file_fix(mode: u32, ids: (u32, u32), owner: Option<(u32, u32)>) -> Option<String> {
    let mut why = Vec::new();
    if mode & 0o777 != 0o600 {
        why.push(format!("mode {:03o} -> 600", mode & 0o777));
    }
    if let Some(o) = owner
        && o != ids
    {
        why.push(format!("owner {}:{} -> {}:{}", ids.0, ids.1, o.0, o.1));
    }
    (!why.is_empty()).then(|| why.join(", "))
}

impl Naming for FileStore {
    fn versioned(&self) -> bool {
        false
    }

    fn identity(&self, secret: &str, _version: u32) -> String {
        self.rel(&self.dir.join(secret))
    }
}

impl SecretStore for FileStore {
    fn kind(&self) -> BackendKind {
        BackendKind::Compose
    }

    fn dates_values(&self) -> bool {
        false
    }

    fn keeps_fingerprints(&self) -> bool {
        false
    }

    fn check(&self, _secret: &str, _origin: &str, _value: &[u8]) -> Result<()> {
        Ok(())
    }

    fn list(&self, key: &SecretValue) -> Result<Vec<Stored>> {
        fsutil::refuse_symlink(&self.dir, &self.rel(&self.dir))?;
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for e in rd {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            // Dotfiles are the tool's own (temporary files); folders are not secrets.
            if name.starts_with('.') {
                continue;
            }
            if !e.file_type()?.is_file() {
                fsutil::refuse_symlink(&e.path(), &self.rel(&e.path()))?;
                continue;
            }
            let path = e.path();
            let bytes =
                fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let m = fs::metadata(&path)?;
            out.push(Stored {
                id: self.rel(&path),
                fingerprint: SecretValue::new(bytes).fingerprint(key),
                version: None,
                created: m.modified().ok(),
                fix: file_fix(
                    m.permissions().mode(),
                    (m.uid(), m.gid()),
                    self.owners.get(&name).copied(),
                ),
                kept: None,
                secret: name,
            });
        }
        out.sort_by(|a, b| a.secret.cmp(&b.secret));
        Ok(out)
    }

    fn write(&self, items: &[Item]) -> Result<()> {
        fsutil::private_dir(&self.dir, 0o700)?;
        for it in items {
            fsutil::write_atomic(
                &self.dir.join(&it.step.secret),
                it.value.expose(),
                0o600,
                self.owners.get(&it.step.secret).copied(),
            )?;
        }
        Ok(())
    }

    fn delete(&self, steps: &[Step]) -> Result<()> {
        for s in steps {
            let p = self.dir.join(&s.secret);
            fs::remove_file(&p).with_context(|| format!("cannot remove {}", p.display()))?;
        }
        // Leave no empty directory behind; keep it if anything else is there.
        let _ = fs::remove_dir(&self.dir);
        Ok(())
    }
}

/// Files in `dir` changed after `since` (for the runtime's recreate step).
pub fn changed_since(paths: &[&str], dir: &Path, since: SystemTime) -> bool {
    paths
        .iter()
        .filter(|m| Path::new(m).starts_with(dir))
        .any(|m| {
            fs::metadata(m)
                .and_then(|md| md.modified())
                .is_ok_and(|mt| mt > since)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixes_name_mode_and_owner() {
        assert_eq!(file_fix(0o100600, (0, 0), None), None);
        assert_eq!(
            file_fix(0o100644, (0, 0), None).as_deref(),
            Some("mode 644 -> 600")
        );
        assert_eq!(
            file_fix(0o100600, (0, 0), Some((999, 999))).as_deref(),
            Some("owner 0:0 -> 999:999")
        );
    }
}
