//! The two git questions asked of a secrets file: is it tracked, is it ignored.

use std::path::Path;

use anyhow::Result;
use xshell::{Shell, cmd};

/// Whether git tracks `path`: `None` when git is not installed, so nobody can
/// tell. Outside a git work tree nothing is tracked.
pub fn is_tracked(root: &Path, path: &Path) -> Result<Option<bool>> {
    if which::which("git").is_err() {
        return Ok(None);
    }
    let sh = Shell::new()?;
    sh.change_dir(root);
    let out = cmd!(sh, "git ls-files --error-unmatch -- {path}")
        .quiet()
        .ignore_status()
        .ignore_stderr()
        .output()?;
    Ok(Some(out.status.success()))
}

/// True when `.gitignore` covers `path` (or when there is no git work tree to commit it to).
pub fn is_ignored(root: &Path, path: &Path) -> bool {
    let Ok(sh) = Shell::new() else { return true };
    sh.change_dir(root);
    let in_repo = cmd!(sh, "git rev-parse --is-inside-work-tree")
        .quiet()
        .ignore_stderr()
        .read()
        .is_ok_and(|s| s == "true");
    if !in_repo {
        return true;
    }
    cmd!(sh, "git check-ignore -q -- {path}")
        .quiet()
        .ignore_status()
        .ignore_stderr()
        .output()
        .is_ok_and(|o| o.status.success())
}
