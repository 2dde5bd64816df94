//! The child of `run`: a local process started with an environment's secrets
//! the way containers see them (a private 0700 folder of 0600 files,
//! `SECRETS_DIR` and `<NAME>_FILE` pointing at them; or, when asked, plain
//! variables), supervised until it ends: the signals the tool gets are passed
//! on, and its piped output is masked on the way to where the caller says.
//!
//! The folder is removed however the run ends: success, failure, Ctrl-C
//! (passed on to the child) or SIGTERM of the tool (passed on, then the child
//! is waited for). Only SIGKILL cannot be caught; the next run removes folders
//! whose tool process is gone. Signals are caught with `libc` (already built
//! for `rand` and `which`, so it costs no build time): std has no signal API.
//!
//! Masking: a stream the caller gives a writer for goes through a pipe, and
//! [`crate::model::mask`] replaces every form of every value by
//! `<redacted:NAME>` before it is passed on, one read at a time. A stream
//! without a writer stays the child's own (inherited), unmasked. Which
//! streams are the terminal is the caller's question: the engine never
//! writes to the terminal itself.

use std::{
    ffi::OsStr,
    io::{Read, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::atomic::{AtomicI32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use crate::{
    disk::fsutil::io_error,
    model::mask::{self, Masker, Needles},
    plan::resolve,
    sink::Shared,
    tools::runner::Spawn,
};

/// How long a child may take to exit after a forwarded SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(10);

/// `program args` with the values of `r`: as files in a [`SecretsDir`]
/// (returned: dropping it removes them), or with `plain` as plain variables.
pub fn with_values(
    program: &OsStr,
    args: &[std::ffi::OsString],
    env: &str,
    r: &resolve::Resolved,
    plain: bool,
    sink: &Shared,
) -> Result<(Spawn, Option<SecretsDir>)> {
    let mut c = Spawn::new(program).args(args);
    if plain {
        for d in &r.desired {
            let key = d.spec.env_key();
            c = c.env_remove(format!("{key}_FILE"));
            c = c.plain_env(&key, d.value.expose());
        }
        return Ok((c, None));
    }
    let dir = SecretsDir::create(env, sink)?;
    for d in &r.desired {
        let path = dir.write(&d.spec.name, d.value.expose())?;
        c = c
            .env_remove(d.spec.env_key())
            .env(format!("{}_FILE", d.spec.env_key()), &path);
    }
    c = c.env("SECRETS_DIR", &dir.0);
    Ok((c, Some(dir)))
}

/// The values of `r` to mask, and the names of those too short to mask.
pub fn needles(r: &resolve::Resolved) -> (Needles, Vec<String>) {
    Needles::new(
        r.desired
            .iter()
            .map(|d| (d.spec.env_key(), d.value.expose())),
    )
}

/// A stream's destination when the child's output is masked.
pub type Dest = Box<dyn Write + Send>;

/// What to mask the child's output with, and where each masked stream goes
/// (`None`: the stream stays the child's own, unmasked).
pub struct Masking<'a> {
    /// The values (in every form) to replace with `<redacted:NAME>`.
    pub needles: &'a Needles,
    /// Where the child's masked stdout goes.
    pub stdout: Option<Dest>,
    /// Where the child's masked stderr goes.
    pub stderr: Option<Dest>,
}

/// Copies a child's pipe to `dst`, masked, one read at a time. A partial
/// match held back is let go after [`mask::FLUSH_AFTER`] without more
/// output. When `dst` fails (a closed pipe downstream), the pipe is closed,
/// so the child gets SIGPIPE as it would in a shell pipeline.
fn pump(mut src: impl Read + std::os::fd::AsRawFd, mut dst: impl Write, needles: &Needles) {
    let mut m = Masker::new(needles);
    let mut buf = zeroize::Zeroizing::new(vec![0u8; 64 * 1024]);
    let mut send = |bytes: Vec<u8>| -> bool {
        bytes.is_empty() || (dst.write_all(&bytes).is_ok() && dst.flush().is_ok())
    };
    loop {
        if m.holding() {
            let mut pfd = libc::pollfd {
                fd: src.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = mask::FLUSH_AFTER.as_millis() as libc::c_int;
            // SAFETY: one valid pollfd for a descriptor this function owns.
            if unsafe { libc::poll(&mut pfd, 1, ms) } == 0 {
                if !send(m.flush()) {
                    return;
                }
                continue;
            }
        }
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if !send(m.push(&buf[..n])) {
            return;
        }
    }
    send(m.flush());
}

/// Starts the child and waits for it, passing on the signals the tool gets;
/// with `masking`, copies its piped output masked until the pipes close.
/// `program` names it in the error when it cannot start.
pub fn supervise(c: Spawn, program: &OsStr, masking: Option<Masking>) -> Result<ExitStatus> {
    let (needles, out_to, err_to) = match masking {
        Some(m) => (Some(m.needles), m.stdout, m.stderr),
        None => (None, None, None),
    };
    let mut c = c;
    if out_to.is_some() {
        c = c.stdout(Stdio::piped());
    }
    if err_to.is_some() {
        c = c.stderr(Stdio::piped());
    }
    let mut child = c.start().with_context(|| {
        format!(
            "cannot start {}; check the command's name and that it is on PATH",
            Path::new(program).display()
        )
    })?;
    let (out, err) = (child.stdout.take(), child.stderr.take());
    std::thread::scope(|s| {
        if let (Some(n), Some(p), Some(d)) = (needles, out, out_to) {
            s.spawn(move || pump(p, d, n));
        }
        if let (Some(n), Some(p), Some(d)) = (needles, err, err_to) {
            s.spawn(move || pump(p, d, n));
        }
        wait(&mut child)
    })
}

/// Waits for the child, passing on the signals the tool gets.
fn wait(child: &mut std::process::Child) -> Result<ExitStatus> {
    let pid = child.id() as libc::pid_t;
    let mut term_at: Option<Instant> = None;
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(s);
        }
        let sig = SIGNAL.swap(0, Ordering::SeqCst);
        if sig != 0 && !(sig == libc::SIGINT && child_had_it_from_terminal()) {
            // SAFETY: kill(2) with the pid of our own, not yet reaped, child.
            unsafe { libc::kill(pid, sig) };
        }
        if sig == libc::SIGTERM || sig == libc::SIGHUP {
            term_at.get_or_insert_with(Instant::now);
        }
        if term_at.is_some_and(|t| t.elapsed() > GRACE) {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A Ctrl-C on a terminal reaches the whole foreground process group, the
/// child included: passing it on again would interrupt the child twice.
fn child_had_it_from_terminal() -> bool {
    // SAFETY: plain queries of this process's own state.
    unsafe {
        let fg = libc::tcgetpgrp(libc::STDIN_FILENO);
        fg != -1 && fg == libc::getpgrp()
    }
}

/// The child's exit code, or 128 + the signal that ended it (as shells report).
pub fn exit_code(s: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    s.code()
        .or_else(|| s.signal().map(|n| 128 + n))
        .unwrap_or(1)
}

static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
}

/// Catches SIGINT, SIGTERM and SIGHUP so the tool outlives them long enough
/// to pass them on and clean up. The handler only stores the number.
pub fn install_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction with an async-signal-safe handler (one
        // atomic store) and an empty mask is a valid argument to sigaction(2).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// The signal caught since [`install_handlers`] and not yet passed on
/// (0: none).
pub fn caught() -> i32 {
    SIGNAL.load(Ordering::SeqCst)
}

/// The private folder of one run, removed on drop.
pub struct SecretsDir(PathBuf, Shared);

const PREFIX: &str = "xtask-run-";

impl SecretsDir {
    /// `$XDG_RUNTIME_DIR` (a per-user tmpfs, never on disk) when set, else the
    /// temporary folder. Folders of runs whose tool is gone are removed first.
    fn create(env: &str, sink: &Shared) -> Result<SecretsDir> {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        sweep(&base, sink);
        let dir = base.join(format!(
            "{PREFIX}{env}-{}-{:x}",
            std::process::id(),
            crate::model::secret::random_u64()
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| io_error(e, "create", &dir))?;
        let made = SecretsDir(dir, sink.clone());
        std::fs::set_permissions(&made.0, std::fs::Permissions::from_mode(0o700))?;
        Ok(made)
    }

    fn write(&self, name: &str, value: &[u8]) -> Result<PathBuf> {
        let p = self.0.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
            .map_err(|e| io_error(e, "create", &p))?;
        f.write_all(value).map_err(|e| io_error(e, "write", &p))?;
        Ok(p)
    }
}

impl Drop for SecretsDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            self.1.warn(&format!(
                "could not remove {} ({e}); remove it by hand: it holds secret values",
                self.0.display()
            ));
        }
    }
}

/// Removes `xtask-run-<env>-<pid>-<hex>` folders of this user whose pid is no
/// longer running (a tool killed with SIGKILL).
fn sweep(base: &Path, sink: &Shared) {
    let Ok(rd) = std::fs::read_dir(base) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = dead_owner(&name) else {
            continue;
        };
        let mine = std::os::unix::fs::MetadataExt::uid(&match e.metadata() {
            Ok(m) => m,
            Err(_) => continue,
        }) == unsafe { libc::geteuid() };
        if mine && std::fs::remove_dir_all(e.path()).is_ok() {
            sink.warn(&format!(
                "removed {}, left by a run (pid {pid}) that was killed",
                e.path().display()
            ));
        }
    }
}

/// The pid in a run folder's name when that process no longer exists.
fn dead_owner(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(PREFIX)?;
    let mut parts = rest.rsplitn(3, '-');
    let (_hex, pid) = (parts.next()?, parts.next()?);
    parts.next()?;
    let pid: i32 = pid.parse().ok()?;
    // SAFETY: kill with signal 0 only checks whether the process exists.
    let gone = unsafe { libc::kill(pid, 0) } == -1
        && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    gone.then_some(pid)
}
