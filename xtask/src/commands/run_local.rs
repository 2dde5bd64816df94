//! `run <env> [--plain-env] -- COMMAND...`: runs a local process with the
//! environment's secrets the way containers see them: a private temporary
//! folder (0700) of 0600 files, `SECRETS_DIR` and `<NAME>_FILE` pointing at
//! them (what the secrets reader and most images read). `--plain-env` passes
//! plain variables instead, for programs that only read those, with a warning.
//!
//! The folder is removed however the run ends: success, failure, Ctrl-C
//! (passed on to the child) or SIGTERM of the tool (passed on, then the child
//! is waited for). Only SIGKILL cannot be caught; the next run removes folders
//! whose tool process is gone. Signals are caught with `libc` (already built
//! for `rand` and `which`, so it costs no build time): std has no signal API.
//!
//! Masking (unless `--no-mask`): the child's stdout and stderr, when they are
//! not a terminal, go through a pipe and [`secrets_engine::model::mask`] replaces every form of
//! every value by `<redacted:NAME>` before they are passed on, one read at a
//! time. A stream that is a terminal stays the child's own (line editing,
//! colours, `isatty` checks keep working) and is not masked; a note says so.

use std::{
    ffi::OsString,
    os::unix::{
        ffi::OsStrExt,
        fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    },
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::atomic::{AtomicI32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{flags::RunArgs, output};
use secrets_engine::{
    model::manifest::Manifest,
    model::mask::{self, Masker, Needles},
    plan::resolve,
};

/// How long a child may take to exit after a forwarded SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(10);

pub fn run(root: &Path, a: RunArgs) -> Result<()> {
    // First, so an interrupt while the folder is filled still removes it.
    install_handlers();
    let manifest = Manifest::load(root)?;
    let env = manifest.env(&a.env)?;
    let r = resolve::resolve(root, &manifest, env, resolve::Options::read_only())?;
    for w in &r.warnings {
        output::warn(w);
    }
    let Some((program, args)) = a.command.split_first() else {
        bail!("no command given: put it after --, e.g. `cargo xtask run develop -- env`");
    };
    let mut c = Command::new(program);
    c.args(args);
    let dir = if a.plain_env {
        output::warn(&format!(
            "--plain-env: the {} values of {} are plain environment variables of the command and of everything it starts (visible in /proc/PID/environ to the same user, and in crash reports); prefer the files",
            r.desired.len(),
            env.name
        ));
        for d in &r.desired {
            let key = d.spec.env_key();
            c.env_remove(format!("{key}_FILE"));
            // The one place values enter a child's environment: the operator
            // asked for exactly that with --plain-env.
            let value = std::ffi::OsStr::from_bytes(d.value.expose());
            c.env(&key, value);
        }
        None
    } else {
        let dir = SecretsDir::create(&env.name)?;
        for d in &r.desired {
            let path = dir.write(&d.spec.name, d.value.expose())?;
            c.env_remove(d.spec.env_key());
            c.env(format!("{}_FILE", d.spec.env_key()), &path);
        }
        c.env("SECRETS_DIR", &dir.0);
        Some(dir)
    };
    let needles = match a.no_mask {
        true => None,
        false => Some(masking(&mut c, &r)),
    };
    let code = match SIGNAL.load(Ordering::SeqCst) {
        // Interrupted before the command started: it never runs.
        0 => exit_code(supervise(&mut c, program, needles.as_ref())?),
        sig => 128 + sig,
    };
    drop(dir);
    std::process::exit(code);
}

/// The values to mask, and pipes for the child's stdout and stderr where
/// they are not a terminal. Says which values are too short to mask and
/// which stream is left unmasked on a terminal.
fn masking(c: &mut Command, r: &resolve::Resolved) -> Needles {
    use std::io::IsTerminal;
    let (needles, short) = Needles::new(
        r.desired
            .iter()
            .map(|d| (d.spec.env_key(), d.value.expose())),
    );
    if !short.is_empty() {
        output::warn(&format!(
            "{} shorter than {} bytes, not masked in the command's output: {}",
            if short.len() == 1 {
                "a value is"
            } else {
                "values are"
            },
            mask::MIN_MASKED,
            short.join(", ")
        ));
    }
    let mut on_terminal = Vec::new();
    if std::io::stdout().is_terminal() {
        on_terminal.push("stdout");
    } else {
        c.stdout(Stdio::piped());
    }
    if std::io::stderr().is_terminal() {
        on_terminal.push("stderr");
    } else {
        c.stderr(Stdio::piped());
    }
    if !on_terminal.is_empty() && !needles.is_empty() {
        eprintln!(
            "note: the command writes to the terminal directly ({}); what it prints there is not masked (pipe it, e.g. `| cat`, to mask it)",
            on_terminal.join(", ")
        );
    }
    needles
}

/// Copies a child's pipe to `dst`, masked, one read at a time. A partial
/// match held back is let go after [`mask::FLUSH_AFTER`] without more
/// output. When `dst` fails (a closed pipe downstream), the pipe is closed,
/// so the child gets SIGPIPE as it would in a shell pipeline.
fn pump(
    mut src: impl std::io::Read + std::os::fd::AsRawFd,
    mut dst: impl std::io::Write,
    needles: &Needles,
) {
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
/// with `needles`, copies its piped output masked until the pipes close.
fn supervise(c: &mut Command, program: &OsString, needles: Option<&Needles>) -> Result<ExitStatus> {
    let mut child = c.spawn().with_context(|| {
        format!(
            "cannot start {}; check the command's name and that it is on PATH",
            Path::new(program).display()
        )
    })?;
    let (out, err) = (child.stdout.take(), child.stderr.take());
    std::thread::scope(|s| {
        if let (Some(n), Some(p)) = (needles, out) {
            s.spawn(move || pump(p, std::io::stdout(), n));
        }
        if let (Some(n), Some(p)) = (needles, err) {
            s.spawn(move || pump(p, std::io::stderr(), n));
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
fn exit_code(s: ExitStatus) -> i32 {
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
fn install_handlers() {
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

/// The private folder of one run, removed on drop.
struct SecretsDir(PathBuf);

const PREFIX: &str = "xtask-run-";

impl SecretsDir {
    /// `$XDG_RUNTIME_DIR` (a per-user tmpfs, never on disk) when set, else the
    /// temporary folder. Folders of runs whose tool is gone are removed first.
    fn create(env: &str) -> Result<SecretsDir> {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        sweep(&base);
        let dir = base.join(format!(
            "{PREFIX}{env}-{}-{:x}",
            std::process::id(),
            secrets_engine::model::secret::random_u64()
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| secrets_engine::disk::fsutil::io_error(e, "create", &dir))?;
        let made = SecretsDir(dir);
        std::fs::set_permissions(&made.0, std::fs::Permissions::from_mode(0o700))?;
        Ok(made)
    }

    fn write(&self, name: &str, value: &[u8]) -> Result<PathBuf> {
        use std::io::Write;
        let p = self.0.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
            .map_err(|e| secrets_engine::disk::fsutil::io_error(e, "create", &p))?;
        f.write_all(value)
            .map_err(|e| secrets_engine::disk::fsutil::io_error(e, "write", &p))?;
        Ok(p)
    }
}

impl Drop for SecretsDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            output::warn(&format!(
                "could not remove {} ({e}); remove it by hand: it holds secret values",
                self.0.display()
            ));
        }
    }
}

/// Removes `xtask-run-<env>-<pid>-<hex>` folders of this user whose pid is no
/// longer running (a tool killed with SIGKILL).
fn sweep(base: &Path) {
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
            output::warn(&format!(
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
