//! One runner for every CLI the tool drives (docker, docker-compose, kubectl,
//! and the vault/bao and aws CLIs): found with `which` (or an override
//! variable, so tests can count calls through a wrapper), run with argument
//! vectors, values on stdin only, a timeout, and errors that name the next step.
//!
//! It is also the only module that builds a [`std::process::Command`]: a
//! child whose streams its caller drives (git's `cat-file --batch` pipe, age,
//! the rotate hooks, the child of `run`) is started through a [`Spawn`], so
//! every process of the tool starts here (the `one process spawner` tidy rule).

use std::{
    ffi::{OsStr, OsString},
    io::{Read, Write},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// How long one CLI call may take before it is killed, unless the caller says
/// otherwise. `XTASK_CLI_TIMEOUT` (seconds) overrides it.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// One external program and how to call it.
#[derive(Debug, Clone)]
pub struct Tool {
    /// The name shown in messages: `docker`, `kubectl`.
    pub name: &'static str,
    /// The program run: a path or a name looked up on PATH.
    pub bin: OsString,
    /// How long one call may take before it is killed.
    pub timeout: Duration,
    /// What a call that never answers means, for the timeout's message.
    pub silent: std::borrow::Cow<'static, str>,
    /// Why the program could not be found, for a tool looked up with
    /// [`Tool::find_later`]: the first call fails with it. So a command runs
    /// every check that needs no CLI before it says the CLI is missing.
    missing: Option<String>,
}

/// What a finished call gave back.
pub struct Output {
    /// How it exited.
    pub status: ExitStatus,
    /// What it printed, as text (invalid UTF-8 replaced).
    pub stdout: String,
    /// What it printed on stderr, as text.
    pub stderr: String,
}

impl Tool {
    /// Finds `name`: `$<var>` when set and not empty, else `name` on PATH.
    /// `install` tells the operator how to get it.
    pub fn find(name: &'static str, var: &str, install: &str) -> Result<Tool> {
        let t = Tool::find_later(name, var, install);
        match &t.missing {
            Some(why) => bail!("{why}"),
            None => Ok(t),
        }
    }

    /// [`Tool::find`], with a missing program reported by the first call
    /// instead of now.
    pub fn find_later(name: &'static str, var: &str, install: &str) -> Tool {
        match Tool::lookup(name, var, install) {
            Ok(bin) => Tool::at(name, bin),
            Err(e) => Tool {
                missing: Some(format!("{e:#}")),
                ..Tool::at(name, name)
            },
        }
    }

    fn lookup(name: &'static str, var: &str, install: &str) -> Result<OsString> {
        let bin = match std::env::var_os(var).filter(|v| !v.is_empty()) {
            Some(b) => {
                let p = std::path::Path::new(&b);
                let found = if p.components().count() > 1 {
                    p.is_file()
                } else {
                    which::which(p).is_ok()
                };
                if !found {
                    bail!(
                        "{var} is set to {}, which does not exist or cannot be run; point {var} at the {name} program, or unset it to use {name} from PATH",
                        p.display()
                    );
                }
                b
            }
            None => which::which(name)
                .map(|p| p.into_os_string())
                .map_err(|_| {
                    anyhow::anyhow!(
                        "{name} is not installed (not found on PATH); {install}, or set {var} to its path"
                    )
                })?,
        };
        Ok(bin)
    }

    /// Fails with the lookup's message when the program was not found.
    fn present(&self) -> Result<()> {
        match &self.missing {
            Some(why) => bail!("{why}"),
            None => Ok(()),
        }
    }

    /// The program `bin`, called `name` in messages, with the default timeout
    /// (`$XTASK_CLI_TIMEOUT` seconds, else 120).
    pub fn at(name: &'static str, bin: impl Into<OsString>) -> Tool {
        let timeout = std::env::var("XTASK_CLI_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TIMEOUT);
        Tool {
            name,
            bin: bin.into(),
            timeout,
            silent: "check that the server it talks to answers".into(),
            missing: None,
        }
    }

    /// Runs quietly and returns stdout, or an error carrying the CLI's own
    /// message and `next_step`.
    pub fn read(&self, args: &[&str], next_step: &str) -> Result<String> {
        self.checked(args, None, next_step)
    }

    /// Like [`Tool::read`], with `input` on stdin: the only way values reach a CLI.
    pub fn run_with_stdin(&self, args: &[&str], input: &[u8], next_step: &str) -> Result<String> {
        self.checked(args, Some(input), next_step)
    }

    /// Like [`Tool::read`], in `dir` with `envs` set (names and paths, never values).
    pub fn read_in(&self, dir: &Path, envs: &[(&str, &str)], args: &[&str]) -> Result<String> {
        self.finish_checked(self.output_in(Some(dir), envs, args, None)?, args, "")
    }

    fn checked(&self, args: &[&str], input: Option<&[u8]>, next_step: &str) -> Result<String> {
        self.finish_checked(self.output(args, input)?, args, next_step)
    }

    fn finish_checked(&self, out: Output, args: &[&str], next_step: &str) -> Result<String> {
        if !out.status.success() {
            bail!(
                "`{} {}` failed: {}{}",
                self.name,
                args.join(" "),
                out.stderr.trim(),
                suffix(next_step)
            );
        }
        Ok(out.stdout)
    }

    /// Runs and returns status and both streams, whatever the exit status.
    pub fn output(&self, args: &[&str], input: Option<&[u8]>) -> Result<Output> {
        self.output_in(None, &[], args, input)
    }

    /// [`Tool::output`] in `dir` with `envs` set (names and paths, never values).
    pub fn output_in(
        &self,
        dir: Option<&Path>,
        envs: &[(&str, &str)],
        args: &[&str],
        input: Option<&[u8]>,
    ) -> Result<Output> {
        self.present()?;
        let mut c = Command::new(&self.bin);
        if let Some(d) = dir {
            c.current_dir(d);
        }
        for (k, v) in envs {
            c.env(k, v);
        }
        c.args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.finish(c, args, input, true)
    }

    /// Runs in `dir` with `envs` set (names and paths, never values), its
    /// output streamed to the terminal. For long steps such as `stack deploy`.
    pub fn stream(
        &self,
        dir: &Path,
        envs: &[(&str, &str)],
        args: &[&str],
        timeout: Duration,
    ) -> Result<()> {
        self.present()?;
        let mut c = Command::new(&self.bin);
        c.args(args).current_dir(dir).stdin(Stdio::null());
        for (k, v) in envs {
            c.env(k, v);
        }
        let tool = Tool {
            timeout,
            ..self.clone()
        };
        let out = tool.finish(c, args, None, false)?;
        if !out.status.success() {
            bail!(
                "`{} {}` failed ({}); its output is above",
                self.name,
                args.join(" "),
                out.status
            );
        }
        Ok(())
    }

    fn finish(
        &self,
        mut c: Command,
        args: &[&str],
        input: Option<&[u8]>,
        capture: bool,
    ) -> Result<Output> {
        let shown = || format!("{} {}", self.name, args.join(" "));
        let mut child = c
            .spawn()
            .with_context(|| format!("cannot start `{}`", shown()))?;
        if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
            // A CLI that exits early closes its stdin; its exit status tells why.
            let _ = stdin.write_all(input);
        }
        let stdout = capture.then(|| drain(child.stdout.take()));
        let stderr = capture.then(|| drain(child.stderr.take()));
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if start.elapsed() > self.timeout {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "`{}` did not finish within {}s and was stopped: {} (XTASK_CLI_TIMEOUT sets the limit)",
                    shown(),
                    self.timeout.as_secs(),
                    self.silent
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let text = |h: Option<Reader>| h.map(|h| h.text()).unwrap_or_default();
        Ok(Output {
            status,
            stdout: text(stdout),
            stderr: text(stderr),
        })
    }
}

impl Tool {
    /// A child of this tool with `args`, whose streams the caller drives
    /// (a pipe kept open while it runs); no timeout applies.
    pub fn spawn<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<Spawn> {
        self.present()?;
        Ok(Spawn::new(&self.bin).args(args))
    }
}

/// A process to start, built from an argument vector: program, arguments,
/// folder, environment (names and paths; values only through
/// [`Spawn::plain_env`]) and where its three streams go. Streams default to
/// the tool's own (inherited).
pub struct Spawn(Command);

impl Spawn {
    /// Runs `program` (a path, or a name looked up on PATH).
    pub fn new(program: impl AsRef<OsStr>) -> Spawn {
        Spawn(Command::new(program))
    }

    /// Adds arguments, each its own element of argv.
    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Spawn {
        self.0.args(args);
        self
    }

    /// Runs in `dir`.
    pub fn dir(mut self, dir: &Path) -> Spawn {
        self.0.current_dir(dir);
        self
    }

    /// Sets a variable to a name or a path (never a secret value).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Spawn {
        self.0.env(key, value);
        self
    }

    /// Sets each `(name, value)` of `vars` (names, versions, paths).
    pub fn envs<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Spawn {
        self.0.envs(vars);
        self
    }

    /// Removes a variable the child would inherit.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Spawn {
        self.0.env_remove(key);
        self
    }

    /// Sets a variable to a secret value: the one way a value enters a
    /// child's environment, for `run --plain-env`, where the operator asked
    /// for exactly that.
    pub fn plain_env(mut self, key: impl AsRef<OsStr>, value: &[u8]) -> Spawn {
        use std::os::unix::ffi::OsStrExt;
        self.0.env(key, OsStr::from_bytes(value));
        self
    }

    /// Where stdin, stdout and stderr come from and go to.
    pub fn streams(mut self, stdin: Stdio, stdout: Stdio, stderr: Stdio) -> Spawn {
        self.0.stdin(stdin).stdout(stdout).stderr(stderr);
        self
    }

    /// Where stdout goes (the others unchanged).
    pub fn stdout(mut self, s: Stdio) -> Spawn {
        self.0.stdout(s);
        self
    }

    /// Where stderr goes (the others unchanged).
    pub fn stderr(mut self, s: Stdio) -> Spawn {
        self.0.stderr(s);
        self
    }

    /// Starts it; the caller drives its streams and waits for it.
    pub fn start(mut self) -> std::io::Result<Child> {
        self.0.spawn()
    }

    /// Runs it to its end with stdin closed, capturing stdout and stderr.
    pub fn output(mut self) -> std::io::Result<std::process::Output> {
        self.0.stdin(Stdio::null()).output()
    }
}

/// A stream read to its end on its own thread, so a chatty CLI never blocks
/// on a full pipe while we wait for it.
struct Reader(std::thread::JoinHandle<()>, Arc<Mutex<Vec<u8>>>);

impl Reader {
    fn text(self) -> String {
        let _ = self.0.join();
        let bytes = self.1.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

fn drain<R: Read + Send + 'static>(r: Option<R>) -> Reader {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let b = Arc::clone(&buf);
    let h = std::thread::spawn(move || {
        if let Some(mut r) = r {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            if let Ok(mut b) = b.lock() {
                *b = v;
            }
        }
    });
    Reader(h, buf)
}

fn suffix(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!("; {s}")
    }
}

/// Runs `f` on every item with up to `n` at once and collects the failures as
/// `label: error` lines. The one parallel executor of the tool.
pub fn parallel<T: Sync>(
    items: &[T],
    n: usize,
    label: impl Fn(&T) -> String + Sync,
    f: impl Fn(&T) -> Result<()> + Sync,
) -> Vec<String> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let errors = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..n.min(items.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    if let Err(e) = f(item)
                        && let Ok(mut errs) = errors.lock()
                    {
                        errs.push(format!("{}: {e:#}", label(item)));
                    }
                }
            });
        }
    });
    let mut errs = errors.into_inner().unwrap_or_default();
    errs.sort();
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stdout_and_stdin_and_reports_failures() {
        let cat = Tool::at("cat", "cat");
        assert_eq!(cat.run_with_stdin(&[], b"abc", "").unwrap(), "abc");
        let f = Tool::at("false", "false");
        let e = format!("{:#}", f.read(&["x"], "do this").unwrap_err());
        assert!(
            e.contains("`false x` failed") && e.ends_with("; do this"),
            "{e}"
        );
    }

    #[test]
    fn a_call_that_hangs_is_stopped() {
        let mut sleep = Tool::at("sleep", "sleep");
        sleep.timeout = Duration::from_millis(200);
        let e = format!("{:#}", sleep.read(&["5"], "").unwrap_err());
        assert!(e.contains("did not finish within 0s"), "{e}");
    }

    #[test]
    fn a_missing_tool_names_how_to_install_it() {
        let e = Tool::find(
            "no-such-cli-xtask",
            "XTASK_TEST_NO_SUCH",
            "install it (Debian: `apt-get install x`)",
        )
        .unwrap_err();
        assert!(format!("{e}").contains("apt-get install x"), "{e}");
    }

    #[test]
    fn parallel_runs_every_item_and_collects_failures() {
        let seen = Mutex::new(Vec::new());
        let errs = parallel(
            &[1, 2, 3, 4, 5],
            3,
            |i| format!("item {i}"),
            |i| {
                seen.lock().unwrap().push(*i);
                if i % 2 == 0 { bail!("even") } else { Ok(()) }
            },
        );
        assert_eq!(errs, ["item 2: even", "item 4: even"]);
        assert_eq!(seen.into_inner().unwrap().len(), 5);
    }
}
