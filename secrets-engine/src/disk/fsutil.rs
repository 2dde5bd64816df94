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
        crate::model::secret::random_u64()
    ));
    let result = (|| -> Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| io_error(e, "create a file in", dir))?;
        // The umask may have narrowed the mode further; make it exact.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .map_err(|e| io_error(e, "write", path))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&tmp, Some(uid), Some(gid)).with_context(|| {
                format!(
                    "cannot give {} to {uid}:{gid}; run as root (or as that user), or remove `owner` from the manifest",
                    path.display()
                )
            })?;
        }
        fs::rename(&tmp, path).map_err(|e| io_error(e, "replace", path))?;
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

/// Whether `name` is one of [`write_atomic`]'s temporary files:
/// `.<name>.tmp-<pid>-<hex>`.
pub fn is_temp_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    let Some((base, tail)) = rest.rsplit_once(".tmp-") else {
        return false;
    };
    let Some((pid, hex)) = tail.split_once('-') else {
        return false;
    };
    !base.is_empty()
        && !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && !hex.is_empty()
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The tool's own temporary files in `dir` (regular files only), if any.
pub fn leftover_temp_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e?;
        if e.file_type()?.is_file() && is_temp_name(&e.file_name().to_string_lossy()) {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Refuses a symbolic link where the tool reads or writes secrets: a link can
/// point the secrets somewhere else (another user's folder, a shared one), and
/// replacing a file by rename would silently turn the link into a plain file.
pub fn refuse_symlink(path: &Path, shown: &str) -> Result<()> {
    if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        let target = fs::read_link(path)
            .map(|t| t.display().to_string())
            .unwrap_or_else(|_| "?".into());
        bail!(
            "{shown} is a symbolic link (to {target}); the tool refuses links in secret paths, so that secrets stay where the repository says. Replace it with the real file or folder (move the target to {shown})"
        );
    }
    Ok(())
}

/// An I/O failure with the path and what to do: a read-only or full file
/// system is named as such, and a refused permission names the folder, its
/// owner and mode, so the fix fits the real cause (a folder the runner owns
/// but cannot write is not "another user's").
pub fn io_error(e: std::io::Error, what: &str, path: &Path) -> anyhow::Error {
    let fix = match e.raw_os_error() {
        Some(28) => "the file system is full: free some space and run again".to_string(),
        Some(30) => {
            "the file system is read-only: run where it is writable (or remount it read-write)"
                .to_string()
        }
        Some(13) => permission_fix(path),
        Some(1) => {
            let dir = folder_of(path);
            let which = if dir == path {
                dir.display().to_string()
            } else {
                format!("{} {}", path.display(), dir.display())
            };
            format!(
                "the operation is not permitted: {} or its folder may be immutable or append-only (see `lsattr -d {which}`; `chattr -i` removes the flag)",
                path.display()
            )
        }
        _ => "check the path and its permissions".to_string(),
    };
    anyhow::anyhow!("cannot {what} {}: {e}; {fix}", path.display())
}

/// The folder whose entries change when `path` is created or replaced.
fn folder_of(path: &Path) -> &Path {
    if path.is_dir() {
        path
    } else {
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    }
}

/// What to do when writing in or beside `path` was refused (EACCES).
fn permission_fix(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let dir = folder_of(path);
    let Ok(meta) = fs::metadata(dir) else {
        return format!(
            "permission denied: check that you may write in {}",
            dir.display()
        );
    };
    let mode = meta.permissions().mode() & 0o7777;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() == me {
        format!(
            "the folder {} is yours but not writable (mode {mode:04o}): `chmod u+w {}`, or move the file to a folder you can write",
            dir.display(),
            dir.display()
        )
    } else {
        format!(
            "the folder {} belongs to uid {} (mode {mode:04o}) and you are uid {me}: run as that user, or make the folder writable for you",
            dir.display(),
            meta.uid()
        )
    }
}

/// Creates `dir` (and parents) and sets it to `mode` exactly.
pub fn private_dir(dir: &Path, mode: u32) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| io_error(e, "create", dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .map_err(|e| io_error(e, "set the mode of", dir))
}

/// Refuses a secret file that group or others may read, naming the fix.
pub fn check_private(path: &Path, shown: &str) -> Result<()> {
    let meta = fs::metadata(path).with_context(|| format!("cannot read {shown}"))?;
    if meta.is_dir() {
        bail!(
            "{shown} is a folder, not an env file; move it away and put the environment's KEY=value lines in a file of that name"
        );
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{shown} is readable by group or others (mode {mode:03o}); run `chmod 600 {}` and try again",
            path.display()
        );
    }
    Ok(())
}

/// Whether process `pid` still runs here. A zombie (ended, not yet reaped:
/// its parent was killed too and nobody has waited for it) counts as ended.
pub fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S ...`: the state follows the last `)`.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| !matches!(state, "Z" | "X" | "x")),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_match_only_the_tools_own() {
        assert!(is_temp_name(".production.env.tmp-1234-9f3a"));
        assert!(is_temp_name(".jwt_secret.tmp-1-a"));
        assert!(!is_temp_name("jwt_secret"));
        assert!(!is_temp_name(".production.env"));
        assert!(!is_temp_name(".x.tmp-12-zz"));
        assert!(!is_temp_name(".x.tmp-ab-12"));
        assert!(!is_temp_name("..tmp-1-a"));
    }

    #[test]
    fn symlinks_are_refused_with_their_target() {
        let d = crate::testutil::TempDir::new();
        let link = d.path().join("l");
        std::os::unix::fs::symlink("/elsewhere", &link).unwrap();
        let e = refuse_symlink(&link, "secrets/develop").unwrap_err();
        assert!(
            format!("{e}").contains("secrets/develop is a symbolic link (to /elsewhere)"),
            "{e}"
        );
        assert!(refuse_symlink(d.path(), "x").is_ok());
    }

    /// A refused permission names the folder and what fits the real cause:
    /// the runner's own folder is "yours but not writable", never "run as
    /// the user who owns it".
    #[test]
    fn permission_messages_name_the_real_cause() {
        use std::os::unix::fs::MetadataExt;
        let d = crate::testutil::TempDir::new();
        let sub = d.path().join("plain");
        fs::create_dir(&sub).unwrap();
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o555)).unwrap();
        let e = io_error(
            std::io::Error::from_raw_os_error(13),
            "create a file in",
            &sub,
        );
        let msg = format!("{e}");
        let mine = fs::metadata(&sub).unwrap().uid() == unsafe { libc::geteuid() };
        assert!(mine, "a folder this test made is its own");
        assert!(
            msg.contains("is yours but not writable (mode 0555)")
                && msg.contains(&format!("`chmod u+w {}`", sub.display())),
            "{msg}"
        );
        assert!(!msg.contains("run as the user who owns it"), "{msg}");
        // A file in it: the folder is what matters.
        let e = io_error(
            std::io::Error::from_raw_os_error(13),
            "replace",
            &sub.join(".env"),
        );
        assert!(format!("{e}").contains(&format!("the folder {}", sub.display())));
        // Another user's folder: the owner and the runner's own uid.
        let e = io_error(
            std::io::Error::from_raw_os_error(13),
            "create a file in",
            Path::new("/"),
        );
        let me = unsafe { libc::geteuid() };
        if me != 0 {
            assert!(format!("{e}").contains("belongs to uid 0"), "{e}");
        }
        let e = io_error(std::io::Error::from_raw_os_error(1), "replace", &sub);
        assert!(format!("{e}").contains("immutable or append-only"), "{e}");
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn a_zombie_is_not_alive() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(u32::MAX - 1));
        // A child that ended and is not waited for yet: a zombie.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        assert!(!process_alive(pid), "a zombie counted as running");
        child.wait().unwrap();
    }
}
