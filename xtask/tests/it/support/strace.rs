//! A command run under strace, for the tests that read every argv (and, with
//! `verbose`, every environment) a flow's processes were started with.

use std::{path::Path, process::Command};

/// `inner` (program, arguments, environment, folder) run under
/// `strace -f -e trace=execve -s 65536`, the trace written to `log`. With
/// `verbose`, children's environments are recorded in full too.
pub fn under_strace(inner: &Command, verbose: bool, log: &Path) -> Command {
    let mut c = Command::new("strace");
    c.arg("-f");
    if verbose {
        c.arg("-v");
    }
    c.args(["-e", "trace=execve", "-s", "65536", "-o"])
        .arg(log)
        .arg(inner.get_program())
        .args(inner.get_args());
    if let Some(d) = inner.get_current_dir() {
        c.current_dir(d);
    }
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
}
