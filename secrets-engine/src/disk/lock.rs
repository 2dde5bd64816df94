//! One run at a time per environment. Every command that writes an env file or
//! a store takes an OS file lock (`flock`) on `secrets/.<env>.lock`: the kernel
//! releases it when the process ends, however it ends, so a killed run never
//! leaves a stale lock. A second run waits, saying who holds the lock, and
//! gives up after `--lock-timeout`. Once it holds the lock, a run removes the
//! temporary files an interrupted run left behind.

use std::{
    fs::{File, OpenOptions, TryLockError},
    io::{Read, Seek, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result, bail};

use crate::{disk::fsutil, model::time, sink::Sink};

/// Held until dropped; the kernel releases it with the process too.
pub struct EnvLock {
    _file: File,
}

/// Where the lock of `env` lives.
pub fn path(root: &Path, env: &str) -> PathBuf {
    root.join("secrets").join(format!(".{env}.lock"))
}

/// Takes the lock of `env` for `command`, waiting up to `timeout`.
pub fn acquire(
    root: &Path,
    env: &str,
    command: &str,
    timeout: Duration,
    sink: &dyn Sink,
) -> Result<EnvLock> {
    let path = path(root, env);
    let dir = path.parent().context("the lock has a folder")?;
    if !dir.exists() {
        fsutil::private_dir(dir, 0o700)?;
    }
    fsutil::refuse_symlink(dir, "secrets")?;
    let shown = path
        .strip_prefix(root)
        .unwrap_or(&path)
        .display()
        .to_string();
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| {
            format!("cannot open the lock file {shown}; check that secrets/ is writable")
        })?;
    let start = Instant::now();
    let mut told = false;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) => {
                let holder = holder(&mut file);
                if start.elapsed() >= timeout {
                    bail!(
                        "another run holds the lock on {env} ({holder}); it was not released within {}s. Wait for it to finish (or stop it), then run again; --lock-timeout SECONDS waits longer",
                        timeout.as_secs()
                    );
                }
                if !told {
                    sink.warn(&format!("waiting for the lock on {env}: held by {holder}"));
                    told = true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {shown}"));
            }
        }
    }
    let me = format!(
        "pid {}, `cargo xtask {command}`, started {}",
        std::process::id(),
        time::rfc3339(SystemTime::now())
    );
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(me.as_bytes())?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(EnvLock { _file: file })
}

fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.rewind().and_then(|_| file.read_to_string(&mut text));
    let text = text.trim();
    if text.is_empty() {
        "a run that is starting".into()
    } else {
        text.to_string()
    }
}

/// Removes the tool's own leftover temporary files in `dirs` (only names that
/// match its pattern); returns what it removed, relative to `root`. Call
/// it while holding the lock.
pub fn sweep(root: &Path, dirs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for dir in dirs {
        let shown = dir.strip_prefix(root).unwrap_or(dir).display().to_string();
        fsutil::refuse_symlink(dir, &shown)?;
        for p in fsutil::leftover_temp_files(dir)? {
            std::fs::remove_file(&p).with_context(|| format!("cannot remove {}", p.display()))?;
            removed.push(p.strip_prefix(root).unwrap_or(&p).to_path_buf());
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_waits_then_fails_naming_the_first() {
        let dir = crate::testutil::TempDir::new();
        let told = crate::sink::Collect::default();
        let first = acquire(
            dir.path(),
            "prod",
            "setup-secrets prod",
            Duration::ZERO,
            &told,
        )
        .unwrap();
        let e = acquire(
            dir.path(),
            "prod",
            "rotate-secrets prod",
            Duration::from_millis(300),
            &told,
        )
        .err()
        .unwrap();
        let e = format!("{e:#}");
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        assert!(e.contains("`cargo xtask setup-secrets prod`"), "{e}");
        assert!(e.contains("--lock-timeout"), "{e}");
        // The wait was told once, as it began, naming the holder.
        let lines = told.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("warning: waiting for the lock on prod: held by"),
            "{lines:?}"
        );
        // Another environment is not blocked; the same one is free once dropped.
        acquire(dir.path(), "staging", "x", Duration::ZERO, &told).unwrap();
        drop(first);
        acquire(dir.path(), "prod", "x", Duration::ZERO, &told).unwrap();
        let mode = std::fs::metadata(path(dir.path(), "prod"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
