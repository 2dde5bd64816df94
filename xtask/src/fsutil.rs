//! File-system steps that must never leave a half-written or over-readable file:
//! atomic replacement, private modes, and the permission check on secret files.

use std::{
    fs::{self, OpenOptions},
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
};

use anyhow::{Context, Result, bail};

/// Writes `bytes` to a new file beside `path` with `mode`, syncs it and renames it
/// over `path`, so readers see the old content or the new, never a mix. An
/// interrupted run leaves at most a `.tmp` file, which the next run ignores.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32, owner: Option<(u32, u32)>) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .context("a file path has no file name")?
        .to_string_lossy();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{:x}",
        std::process::id(),
        crate::secret::random_u64()
    ));
    let result = (|| -> Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("cannot create a file in {}", dir.display()))?;
        // The umask may have narrowed the mode further; make it exact.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&tmp, Some(uid), Some(gid)).with_context(|| {
                format!(
                    "cannot give {} to {uid}:{gid}; run as root (or as that user), or remove `owner` from the manifest",
                    path.display()
                )
            })?;
        }
        fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates `dir` (and parents) and sets it to `mode` exactly.
pub fn private_dir(dir: &Path, mode: u32) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", dir.display()))
}

/// Refuses a secret file that group or others may read, naming the fix.
pub fn check_private(path: &Path, shown: &str) -> Result<()> {
    let meta = fs::metadata(path).with_context(|| format!("cannot read {shown}"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{shown} is readable by group or others (mode {mode:03o}); run `chmod 600 {}` and try again",
            path.display()
        );
    }
    Ok(())
}
