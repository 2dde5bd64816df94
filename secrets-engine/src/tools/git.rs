//! The two git questions asked of a secrets file: is it tracked, is it ignored.

use std::path::Path;

use anyhow::Result;

use crate::tools::runner::Spawn;

/// `git ARGS` in `root`, quiet: whether it ran and succeeded, and its stdout.
fn git(root: &Path, args: &[&std::ffi::OsStr]) -> std::io::Result<(bool, String)> {
    let out = Spawn::new("git").args(args).dir(root).output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok((out.status.success(), stdout))
}

/// Whether git tracks `path`: `None` when git is not installed, so nobody can
/// tell. Outside a git work tree nothing is tracked.
pub fn is_tracked(root: &Path, path: &Path) -> Result<Option<bool>> {
    if which::which("git").is_err() {
        return Ok(None);
    }
    let args = ["ls-files", "--error-unmatch", "--"].map(std::ffi::OsStr::new);
    let (ok, _) = git(root, &[&args[..], &[path.as_os_str()]].concat())?;
    Ok(Some(ok))
}

/// True when `.gitignore` covers `path` (or when there is no git work tree to commit it to).
pub fn is_ignored(root: &Path, path: &Path) -> bool {
    let args = ["rev-parse", "--is-inside-work-tree"].map(std::ffi::OsStr::new);
    let in_repo = git(root, &args).is_ok_and(|(ok, out)| ok && out == "true");
    if !in_repo {
        return true;
    }
    let args = ["check-ignore", "-q", "--"].map(std::ffi::OsStr::new);
    git(root, &[&args[..], &[path.as_os_str()]].concat()).is_ok_and(|(ok, _)| ok)
}
