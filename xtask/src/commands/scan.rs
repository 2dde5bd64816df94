//! `scan [--history] [--staged] [--install-hook]`: looks for every current
//! secret value of every environment in what git holds, so a value committed
//! by mistake is found before it is pushed (the pre-commit hook) or after
//! (history). Values are read in this process and compared in memory: git is
//! asked only for file names and blob contents, through pipes, so no value
//! ever reaches an argument vector; findings name the place, the environment
//! and the secret, never the value.

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader, Read, Write},
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};
use zeroize::Zeroizing;

use crate::{
    envfile::EnvFile,
    flags::ScanArgs,
    forms::forms,
    manifest::{Kind, Manifest},
    output, resolve,
    runner::Tool,
};

/// Values shorter than this are not searched: a short value (a user name, a
/// port) turns up by chance in ordinary text, and every finding would be
/// noise. The tool's own minimum for passwords and keys is 16.
pub const MIN_SCANNED: usize = 8;

/// One form of one value to look for.
pub struct Needle {
    pub env: String,
    pub key: String,
    pub form: &'static str,
    bytes: Zeroizing<Vec<u8>>,
}

/// One place a needle was found: `file:line` or `commit X file:line`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    pub place: String,
    pub env: String,
    pub key: String,
    pub form: &'static str,
}

pub fn run(root: &Path, a: ScanArgs) -> Result<()> {
    let git = Tool::find("git", "GIT", "install it (Debian: `apt-get install git`)")?;
    if a.install_hook {
        return install_hook(&git, root);
    }
    let manifest = Manifest::load(root)?;
    let (needles, values, skipped, unread) = needles(root, &manifest)?;
    for u in &unread {
        output::warn(u);
    }
    // A value that could not be read was not looked for: never "all clear".
    let could_not_look = |found: usize| {
        anyhow::anyhow!(
            "{} value(s) could not be read, so they were not searched (named above){}; fix what the warnings name and scan again",
            unread.len(),
            if found > 0 {
                format!(", and {found} finding(s) of the others")
            } else {
                String::new()
            }
        )
    };
    if values == 0 {
        if !unread.is_empty() {
            return Err(could_not_look(0));
        }
        println!("scan: no env file holds a value to look for; nothing to do");
        return Ok(());
    }
    let matcher = Matcher::new(&needles);
    let (findings, what) = if a.staged {
        (staged(&git, root, &matcher)?, "the staged changes")
    } else if a.history {
        let mut f = tracked(&git, root, &matcher)?;
        f.extend(history(&git, root, &matcher)?);
        (f, "the tracked files and every commit")
    } else {
        (tracked(&git, root, &matcher)?, "the tracked files")
    };
    let findings: BTreeSet<Finding> = findings.into_iter().collect();
    let note = match skipped {
        0 => String::new(),
        n => format!("; {n} shorter than {MIN_SCANNED} bytes not searched"),
    };
    if findings.is_empty() {
        println!(
            "scan: no current secret value found in {what} ({values} values in {} forms searched{note})",
            needles.len()
        );
        if !unread.is_empty() {
            return Err(could_not_look(0));
        }
        return Ok(());
    }
    for f in &findings {
        println!("{}: {} {} ({})", f.place, f.env, f.key, f.form);
    }
    if !unread.is_empty() {
        return Err(could_not_look(findings.len()));
    }
    bail!(
        "{} finding(s) of current secret values in {what}: each named secret is exposed. Rotate it (`cargo xtask rotate-secrets ENV --secret NAME`), remove it from the files, and if it was committed, from history too",
        findings.len()
    )
}

/// Every value of every environment whose env file exists here, in each form.
/// Returns the needles, the number of values, the number skipped as short,
/// and what could not be read (each a message naming the key and place).
fn needles(root: &Path, manifest: &Manifest) -> Result<(Vec<Needle>, usize, usize, Vec<String>)> {
    let mut out = Vec::new();
    let (mut values, mut skipped) = (0, 0);
    let mut unread = Vec::new();
    for env in manifest.environments.values() {
        let (path, shown) = resolve::locate(root, env)?;
        if !path.is_file() {
            continue;
        }
        let file = EnvFile::load(&path, shown.clone())?;
        let base = path.parent().unwrap_or(root);
        let mut add = |key: String, value: &[u8]| {
            if value.len() < MIN_SCANNED {
                skipped += 1;
                return;
            }
            values += 1;
            for (form, bytes) in forms(value) {
                out.push(Needle {
                    env: env.name.clone(),
                    key: key.clone(),
                    form,
                    bytes,
                });
            }
        };
        if let Some(e) = file.get(resolve::FINGERPRINT_KEY) {
            add(resolve::FINGERPRINT_KEY.into(), e.value.expose());
        }
        for spec in manifest.secrets_for(&env.name) {
            let key = spec.env_key();
            let Some(e) = file.get(&key) else { continue };
            match spec.kind {
                // User names are not secret, and derived values are built
                // from parts that are searched themselves.
                Kind::Username | Kind::Derived => {}
                // An inline PEM is the value itself.
                Kind::File if resolve::inline_pem(e.value.expose()) => add(key, e.value.expose()),
                Kind::File => {
                    let rel = e.value.expose_str().filter(|v| resolve::plausible_path(v));
                    let Some(rel) = rel else {
                        unread.push(format!(
                            "{}: {key} is neither a path nor a whole PEM block (the value is not shown); it is not searched",
                            file.at(&key)
                        ));
                        continue;
                    };
                    let p = base.join(rel);
                    match std::fs::read(&p) {
                        Ok(bytes) => add(key, &Zeroizing::new(bytes)),
                        Err(err) => unread.push(format!(
                            "{}: {key} names {}, which cannot be read ({err}); it is not searched",
                            file.at(&key),
                            resolve::shown_file(rel, &p)
                        )),
                    }
                }
                _ => add(key, e.value.expose()),
            }
        }
    }
    Ok((out, values, skipped, unread))
}

/// Finds needles in text: needles are grouped by their first byte, so the
/// text is walked once and only candidates are compared.
pub struct Matcher<'a> {
    by_first: Vec<Vec<&'a Needle>>,
}

impl<'a> Matcher<'a> {
    pub fn new(needles: &'a [Needle]) -> Matcher<'a> {
        let mut by_first: Vec<Vec<&Needle>> = vec![Vec::new(); 256];
        for n in needles.iter().filter(|n| !n.bytes.is_empty()) {
            by_first[n.bytes[0] as usize].push(n);
        }
        Matcher { by_first }
    }

    /// Each needle found in `text`, with the 1-based line of its first match.
    pub fn find(&self, text: &[u8]) -> Vec<(usize, &'a Needle)> {
        let mut out: Vec<(usize, &Needle)> = Vec::new();
        let mut line = 1;
        for (i, &b) in text.iter().enumerate() {
            for n in &self.by_first[b as usize] {
                let hit = text[i..].starts_with(&n.bytes);
                if hit && !out.iter().any(|(_, m)| std::ptr::eq(*m, *n)) {
                    out.push((line, n));
                }
            }
            if b == b'\n' {
                line += 1;
            }
        }
        out
    }
}

fn record(out: &mut Vec<Finding>, place: impl Fn(usize) -> String, hits: Vec<(usize, &Needle)>) {
    for (line, n) in hits {
        out.push(Finding {
            place: place(line),
            env: n.env.clone(),
            key: n.key.clone(),
            form: n.form,
        });
    }
}

/// The working-tree content of every tracked file.
fn tracked(git: &Tool, root: &Path, m: &Matcher) -> Result<Vec<Finding>> {
    let list = git.read(
        &["ls-files", "-z"],
        "run the scan inside the git repository",
    )?;
    let mut out = Vec::new();
    for rel in list.split('\0').filter(|p| !p.is_empty()) {
        let p = root.join(rel);
        // A tracked link holds only its target's name (git stores no more);
        // following it could read files outside the repository.
        if !std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()) {
            continue;
        }
        let bytes =
            Zeroizing::new(std::fs::read(&p).with_context(|| format!("cannot read {rel}"))?);
        record(&mut out, |l| format!("{rel}:{l}"), m.find(&bytes));
    }
    Ok(out)
}

/// The staged version of every added, copied, modified or renamed file.
fn staged(git: &Tool, root: &Path, m: &Matcher) -> Result<Vec<Finding>> {
    let raw = git.read(
        &[
            "diff",
            "--cached",
            "--raw",
            "-z",
            "--no-abbrev",
            "--diff-filter=ACMRT",
        ],
        "run the scan inside the git repository",
    )?;
    let mut blobs: Vec<(String, String)> = Vec::new();
    let mut it = raw.split('\0').filter(|s| !s.is_empty());
    while let Some(meta) = it.next() {
        let fields: Vec<&str> = meta.trim_start_matches(':').split(' ').collect();
        let (Some(sha), Some(status)) = (fields.get(3), fields.get(4)) else {
            bail!("unexpected `git diff --cached --raw` output");
        };
        if status.starts_with('R') || status.starts_with('C') {
            it.next();
        }
        let path = it.next().context("`git diff --raw` gave no path")?;
        blobs.push((sha.to_string(), path.to_string()));
    }
    let mut out = Vec::new();
    cat_blobs(git, root, &blobs, |(_, path), bytes| {
        record(&mut out, |l| format!("{path}:{l} (staged)"), m.find(bytes));
    })?;
    Ok(out)
}

/// Every blob of every commit reachable from any ref, each read once, and
/// for each finding the commit that first added that blob.
fn history(git: &Tool, root: &Path, m: &Matcher) -> Result<Vec<Finding>> {
    let list = git.read(
        &[
            "rev-list",
            "--all",
            "--objects",
            "--filter=object:type=blob",
        ],
        "run the scan inside a git repository with at least one commit",
    )?;
    let blobs: Vec<(String, String)> = list
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(sha, path)| (sha.to_string(), path.to_string()))
        .collect();
    let mut hits: Vec<(String, String, usize, &Needle)> = Vec::new();
    cat_blobs(git, root, &blobs, |(sha, path), bytes| {
        for (line, n) in m.find(bytes) {
            hits.push((sha.clone(), path.clone(), line, n));
        }
    })?;
    let mut out = Vec::new();
    for (sha, path, line, n) in hits {
        let commits = git.read(
            &[
                "log",
                "--all",
                "--reverse",
                "--format=%h",
                "--find-object",
                &sha,
            ],
            "",
        )?;
        let first = commits.lines().next().unwrap_or("?");
        out.push(Finding {
            place: format!("commit {first} {path}:{line}"),
            env: n.env.clone(),
            key: n.key.clone(),
            form: n.form,
        });
    }
    Ok(out)
}

/// Reads blobs through one `git cat-file --batch` pipe: ids on its stdin,
/// contents from its stdout, never a value on argv or in a file.
fn cat_blobs<T>(
    git: &Tool,
    root: &Path,
    blobs: &[(String, T)],
    mut each: impl FnMut(&(String, T), &[u8]),
) -> Result<()> {
    if blobs.is_empty() {
        return Ok(());
    }
    let mut child = Command::new(&git.bin)
        .args(["cat-file", "--batch"])
        .current_dir(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start `git cat-file --batch`")?;
    let mut stdin = child.stdin.take().context("git's stdin")?;
    let ids: String = blobs.iter().map(|(s, _)| format!("{s}\n")).collect();
    let writer = std::thread::spawn(move || stdin.write_all(ids.as_bytes()));
    let mut r = BufReader::new(child.stdout.take().context("git's stdout")?);
    for b in blobs {
        let mut header = String::new();
        r.read_line(&mut header)?;
        let mut f = header.split_whitespace();
        let (_, kind, size) = (f.next(), f.next(), f.next());
        let Some(size) = size.and_then(|s| s.parse::<usize>().ok()) else {
            bail!(
                "`git cat-file --batch` gave no content for {} ({})",
                b.0,
                header.trim()
            );
        };
        let mut body = Zeroizing::new(vec![0u8; size + 1]);
        r.read_exact(&mut body)?;
        if kind == Some("blob") {
            each(b, &body[..size]);
        }
    }
    let _ = writer.join();
    child.wait()?;
    Ok(())
}

const HOOK: &str = "#!/bin/sh\n# Installed by `cargo xtask scan --install-hook`: refuses a commit whose\n# staged changes hold a current secret value (never printed).\nexec cargo xtask scan --staged\n";

/// Writes the pre-commit hook; an existing different hook is left alone.
fn install_hook(git: &Tool, root: &Path) -> Result<()> {
    let rel = git.read(
        &["rev-parse", "--git-path", "hooks/pre-commit"],
        "run it inside the git repository",
    )?;
    let path = root.join(rel.trim());
    match std::fs::read_to_string(&path) {
        Ok(t) if t == HOOK => {
            println!(
                "the pre-commit hook is already installed at {}",
                path.display()
            );
            return Ok(());
        }
        Ok(_) => bail!(
            "{} already exists and is a different hook; it was left as it is. Add the line `cargo xtask scan --staged` to it, or move it away and run `cargo xtask scan --install-hook` again",
            path.display()
        ),
        Err(_) => {}
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::fsutil::write_atomic(&path, HOOK.as_bytes(), 0o755, None)?;
    println!(
        "installed the pre-commit hook at {}: each commit runs `cargo xtask scan --staged`",
        path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use base64::Engine;

    use super::*;

    fn needle(v: &[u8]) -> Vec<Needle> {
        forms(v)
            .into_iter()
            .map(|(form, bytes)| Needle {
                env: "e".into(),
                key: "K".into(),
                form,
                bytes,
            })
            .collect()
    }

    #[test]
    fn base64_is_found_at_every_alignment_inside_longer_text() {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE};
        let v = b"s3cr3t/value+with?odd>bytes~~";
        let ns = needle(v);
        let m = Matcher::new(&ns);
        for prefix in 0..6 {
            let mut data = b"prefix-bytes".to_vec()[..prefix].to_vec();
            data.extend_from_slice(v);
            data.extend_from_slice(b" and more after it");
            for e in [STANDARD, URL_SAFE] {
                let text = format!("data: {}\n", e.encode(&data));
                let hits = m.find(text.as_bytes());
                assert!(
                    hits.iter().any(|(_, n)| n.form == "base64"),
                    "prefix {prefix}: {text}"
                );
            }
        }
        let hits = m.find(b"line1\nurl=postgres://u:s3cr3t%2Fvalue%2Bwith%3Fodd%3Ebytes~~@h\n");
        assert_eq!(hits.len(), 1);
        assert_eq!((hits[0].0, hits[0].1.form), (2, "percent-encoded"));
        let hits = m.find(b"a\nb\nc s3cr3t/value+with?odd>bytes~~\n");
        assert_eq!((hits[0].0, hits[0].1.form), (3, "plain"));
        assert!(m.find(b"s3cr3t/value+with?odd>bytes~").is_empty());
        // Lower-case hex escapes are the same URL.
        let hits = m.find(b"url=postgres://u:s3cr3t%2fvalue%2bwith%3fodd%3ebytes~~@h\n");
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].1.form, "percent-encoded");
    }

    #[test]
    fn a_multi_line_value_is_found_under_either_line_ending() {
        let pem = b"-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49\n-----END PRIVATE KEY-----\n";
        let ns = needle(pem);
        let m = Matcher::new(&ns);
        let crlf = b"x\r\n-----BEGIN PRIVATE KEY-----\r\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49\r\n-----END PRIVATE KEY-----\r\n";
        let hits = m.find(crlf);
        assert_eq!(hits.len(), 1, "CRLF copy not found");
        assert_eq!((hits[0].0, hits[0].1.form), (2, "line endings changed"));
        // And a value written with CRLF is found where it was committed with LF.
        let ns = needle(&crlf[3..]);
        let m = Matcher::new(&ns);
        let mut lf = b"a\n".to_vec();
        lf.extend_from_slice(pem);
        assert_eq!(m.find(&lf).len(), 1, "LF copy not found");
    }
}
