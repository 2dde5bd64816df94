//! A data-driven corpus of bad inputs: every case in `tests/data/bad-inputs/`
//! runs the real binary in a fresh temporary copy of the repository and must
//! fail plainly: a non-zero exit (1, or 2 for an argument error where the case
//! allows it), an error that names the problem, where, and the fix (the
//! case's `expect:` substrings), no secret value the case wrote in stdout or
//! stderr, and nothing changed on disk (path, type, mode, bytes, symlink
//! target of every file under the copy but `.git`, and under the case's own
//! scratch folder).
//!
//! Adding a case is adding a file `NAME.case` (or a line to a `.cases` file).
//! The format is in `tests/data/bad-inputs/README.md`. All failing cases are
//! reported together at the end, each with its exit code and output.

use crate::support;
use support::ci;

use std::{
    collections::{BTreeMap, VecDeque},
    io::Read,
    os::unix::{
        fs::{MetadataExt, PermissionsExt},
        process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use support::TempRepo;

/// How long one run of the binary may take before the harness stops it.
const CASE_DEADLINE: Duration = Duration::from_secs(40);

/// The lock file a run takes on `secrets/.<env>.lock` (flock: the kernel
/// releases it, the file stays by design) is the one artefact a failed run
/// may leave, besides `failed` lines in the audit log; it holds no secret.
/// Everything else must be untouched.
fn is_lock_file(rel: &str) -> bool {
    rel.strip_prefix("secrets/.")
        .is_some_and(|r| r.ends_with(".lock") && !r.contains('/'))
}

/// The audit log: a run that attempted a change and failed appends `failed`
/// lines for what it attempted (and nothing else, and never a value).
const AUDIT_LOG: &str = "deploy/audit-log.tsv";

fn audit_appends_only_failures(
    case: &Case,
    before: Option<Node>,
    after: Option<Node>,
) -> Option<String> {
    let text = |n: &Option<Node>| match n {
        Some(Node::File(_, b)) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    };
    let (old, new) = (text(&before), text(&after));
    if old == new {
        return None;
    }
    if !matches!(after, Some(Node::File(0o600, _))) {
        return Some(format!("{AUDIT_LOG} is not a 0600 file after the run"));
    }
    let Some(added) = new.strip_prefix(old.as_str()) else {
        return Some(format!("{AUDIT_LOG} was rewritten, not appended to"));
    };
    let bad: Vec<&str> = added
        .lines()
        .filter(|l| !l.starts_with("time\t") && !l.ends_with("\tfailed"))
        .collect();
    if !bad.is_empty() {
        return Some(format!(
            "{AUDIT_LOG} gained lines other than failures: {bad:?}"
        ));
    }
    let leaked = secret_values(case)
        .into_iter()
        .filter(|v| added.contains(v.as_str()))
        .count();
    (leaked > 0).then(|| format!("{leaked} secret value(s) in {AUDIT_LOG}"))
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/bad-inputs")
}

// ---------------------------------------------------------------------------
// The case format

#[derive(Debug, Clone)]
enum Step {
    File {
        path: String,
        mode: u32,
        bytes: Vec<u8>,
    },
    Dir {
        path: String,
        mode: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
    Remove(String),
    Edit {
        path: String,
        old: Vec<u8>,
        new: Vec<u8>,
    },
    Chmod {
        path: String,
        mode: u32,
    },
    GitAdd(String),
    Grow {
        path: String,
        count: usize,
        bytes: Vec<u8>,
    },
    Pre(Vec<String>),
}

#[derive(Debug, Clone, Default)]
struct Case {
    name: String,
    source: String,
    args: Vec<String>,
    exits: Vec<i32>,
    needs: Vec<String>,
    steps: Vec<Step>,
    env: Vec<(String, Option<String>)>,
    path_without: Vec<String>,
    readonly: Vec<String>,
    expect: Vec<String>,
    /// Values planted elsewhere than an env file (an argument, the manifest,
    /// a file named by an edit) that must not appear in the output either.
    canaries: Vec<String>,
}

/// `\n`, `\r`, `\t`, `\0`, `\\`, `\"`, `\xHH` in a case's text.
fn unescape(s: &str, at: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let c = *b
            .get(i + 1)
            .unwrap_or_else(|| panic!("{at}: a trailing backslash"));
        i += 2;
        match c {
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'0' => out.push(0),
            b'\\' => out.push(b'\\'),
            b'"' => out.push(b'"'),
            b'x' => {
                let hex = s
                    .get(i..i + 2)
                    .unwrap_or_else(|| panic!("{at}: \\x needs two hex digits"));
                out.push(
                    u8::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("{at}: bad \\x{hex}")),
                );
                i += 2;
            }
            other => panic!("{at}: unknown escape \\{}", other as char),
        }
    }
    out
}

fn text(bytes: Vec<u8>, at: &str) -> String {
    String::from_utf8(bytes).unwrap_or_else(|_| panic!("{at}: this field must be UTF-8"))
}

/// `"a" "b c" "d\"e"`: the quoted, escaped substrings of an `expect:` line.
fn quoted_list(s: &str, at: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let body = rest
            .strip_prefix('"')
            .unwrap_or_else(|| panic!("{at}: expected a quoted string at {rest:?}"));
        let mut end = None;
        let mut escaped = false;
        for (i, c) in body.char_indices() {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                end = Some(i);
                break;
            }
        }
        let end = end.unwrap_or_else(|| panic!("{at}: unterminated quote"));
        out.push(text(unescape(&body[..end], at), at));
        rest = body[end + 1..].trim_start();
    }
    out
}

fn mode_of(s: &str, at: &str) -> u32 {
    u32::from_str_radix(s, 8).unwrap_or_else(|_| panic!("{at}: bad octal mode {s:?}"))
}

/// `PATH MODE REST`: a path, an octal mode, and the remainder (maybe empty).
fn path_mode_rest<'a>(v: &'a str, at: &str) -> (String, u32, &'a str) {
    let mut it = v.splitn(3, ' ');
    let path = it.next().filter(|p| !p.is_empty());
    let mode = it.next();
    match (path, mode) {
        (Some(p), Some(m)) => (p.to_string(), mode_of(m, at), it.next().unwrap_or("")),
        _ => panic!("{at}: expected PATH MODE ..."),
    }
}

/// Parses the directive lines of one case (`use:` lines pull in a fixture).
fn parse_lines(case: &mut Case, lines: &[(usize, String)], file: &str, depth: usize) {
    assert!(depth < 4, "{file}: `use:` nests too deep");
    for (no, line) in lines {
        let at = format!("{file}:{no}");
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let (key, v) = line
            .split_once(':')
            .map(|(k, v)| (k.trim(), v.strip_prefix(' ').unwrap_or(v)))
            .unwrap_or_else(|| panic!("{at}: expected `directive: value`"));
        match key {
            "run" => case.args = v.split_whitespace().map(String::from).collect(),
            "pre" => case
                .steps
                .push(Step::Pre(v.split_whitespace().map(String::from).collect())),
            "exit" => {
                case.exits = v
                    .split('|')
                    .map(|c| {
                        c.trim()
                            .parse()
                            .unwrap_or_else(|_| panic!("{at}: bad exit"))
                    })
                    .collect()
            }
            "needs" => case.needs.extend(v.split_whitespace().map(String::from)),
            "file" => {
                let (path, mode, rest) = path_mode_rest(v, &at);
                case.steps.push(Step::File {
                    path,
                    mode,
                    bytes: unescape(rest, &at),
                });
            }
            "dir" => {
                let (path, mode, _) = path_mode_rest(v, &at);
                case.steps.push(Step::Dir { path, mode });
            }
            "chmod" => {
                let (path, mode, _) = path_mode_rest(v, &at);
                case.steps.push(Step::Chmod { path, mode });
            }
            "symlink" => {
                let (path, target) = v
                    .split_once(" -> ")
                    .unwrap_or_else(|| panic!("{at}: expected PATH -> TARGET"));
                case.steps.push(Step::Symlink {
                    path: path.trim().into(),
                    target: target.trim().into(),
                });
            }
            "rm" => case.steps.push(Step::Remove(v.trim().into())),
            "grow" => {
                let mut it = v.splitn(3, ' ');
                let (Some(path), Some(count), Some(rest)) = (it.next(), it.next(), it.next())
                else {
                    panic!("{at}: expected grow: PATH COUNT TEXT")
                };
                case.steps.push(Step::Grow {
                    path: path.into(),
                    count: count.parse().unwrap_or_else(|_| panic!("{at}: bad count")),
                    bytes: unescape(rest, &at),
                });
            }
            "git-add" => case.steps.push(Step::GitAdd(v.trim().into())),
            "edit" => {
                let (path, rest) = v
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("{at}: expected PATH OLD ==> NEW"));
                let (old, new) = rest
                    .split_once(" ==>")
                    .unwrap_or_else(|| panic!("{at}: expected PATH OLD ==> NEW"));
                let new = new.strip_prefix(' ').unwrap_or(new);
                case.steps.push(Step::Edit {
                    path: path.into(),
                    old: unescape(old, &at),
                    new: unescape(new, &at),
                });
            }
            "env" => {
                let (k, val) = v
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{at}: expected env: KEY=VALUE"));
                case.env
                    .push((k.trim().into(), Some(text(unescape(val, &at), &at))));
            }
            "unset" => case.env.push((v.trim().into(), None)),
            "canary" => case.canaries.push(text(unescape(v.trim(), &at), &at)),
            "path-without" => case
                .path_without
                .extend(v.split_whitespace().map(String::from)),
            "readonly" => case.readonly.push(v.trim().into()),
            "expect" => {
                assert!(case.expect.is_empty(), "{at}: one expect: line per case");
                case.expect = quoted_list(v, &at);
            }
            "use" => {
                let name = v.trim();
                let path = data_dir().join("fixtures").join(format!("{name}.inc"));
                let body = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{at}: fixture {name}: {e}"));
                let lines: Vec<(usize, String)> = body
                    .lines()
                    .enumerate()
                    .map(|(i, l)| (i + 1, l.to_string()))
                    .collect();
                parse_lines(case, &lines, &format!("fixtures/{name}.inc"), depth + 1);
            }
            other => panic!("{at}: unknown directive {other:?}"),
        }
    }
}

fn finish(mut case: Case) -> Case {
    let at = &case.source;
    assert!(!case.args.is_empty(), "{at}: a case needs a run: line");
    assert!(
        !case.expect.is_empty(),
        "{at}: a case needs an expect: line"
    );
    if case.exits.is_empty() {
        case.exits = vec![1];
    }
    case
}

/// Every case: one per `NAME.case` file, and one per line of the `.cases`
/// files, where a line is `NAME | directive: value | directive: value ...`.
fn load_cases() -> Vec<Case> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir())
        .expect("tests/data/bad-inputs exists")
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for f in files {
        let fname = f.file_name().unwrap().to_string_lossy().into_owned();
        if let Some(name) = fname.strip_suffix(".case") {
            let body = std::fs::read_to_string(&f).unwrap();
            let lines: Vec<(usize, String)> = body
                .lines()
                .enumerate()
                .map(|(i, l)| (i + 1, l.to_string()))
                .collect();
            let mut c = Case {
                name: name.into(),
                source: fname.clone(),
                ..Case::default()
            };
            parse_lines(&mut c, &lines, &fname, 0);
            cases.push(finish(c));
        } else if fname.ends_with(".cases") {
            let body = std::fs::read_to_string(&f).unwrap();
            for (i, line) in body.lines().enumerate() {
                if line.trim().is_empty() || line.trim_start().starts_with('#') {
                    continue;
                }
                let mut parts = line.split(" | ");
                let name = parts.next().unwrap().trim().to_string();
                let lines: Vec<(usize, String)> =
                    parts.map(|p| (i + 1, p.trim().to_string())).collect();
                let source = format!("{fname}:{}", i + 1);
                let mut c = Case {
                    name,
                    source: source.clone(),
                    ..Case::default()
                };
                parse_lines(&mut c, &lines, &fname, 0);
                cases.push(finish(c));
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for c in &cases {
        assert!(
            seen.insert(c.name.clone()),
            "two cases are named {}",
            c.name
        );
    }
    cases
}

// ---------------------------------------------------------------------------
// Running one case

struct Places {
    repo: TempRepo,
    tmp: PathBuf,
}

impl Places {
    fn expand(&self, s: &str) -> String {
        let mut s = s
            .replace("{tmp}", &self.tmp.display().to_string())
            .replace("{repo}", &self.repo.root.display().to_string());
        if s.contains("{tls-") {
            let (cert, key, other) = support::tls_pair();
            s = s
                .replace("{tls-cert}", cert)
                .replace("{tls-key}", key)
                .replace("{tls-other-key}", other);
        }
        s
    }

    fn at(&self, p: &str) -> PathBuf {
        match p.strip_prefix("{tmp}/") {
            Some(rest) => self.tmp.join(rest),
            None => self.repo.root.join(p),
        }
    }
}

impl Drop for Places {
    fn drop(&mut self) {
        // Make everything removable again (a case may have taken write access).
        let _ = Command::new("chmod")
            .args(["-R", "u+rwX"])
            .arg(&self.tmp)
            .arg(&self.repo.root)
            .status();
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

fn apply(places: &Places, step: &Step, case: &str) -> Result<(), String> {
    match step {
        Step::File { path, mode, bytes } => {
            let p = places.at(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            let bytes = match std::str::from_utf8(bytes) {
                Ok(t) => places.expand(t).into_bytes(),
                Err(_) => bytes.clone(),
            };
            std::fs::write(&p, bytes).unwrap();
            set_mode(&p, *mode);
        }
        Step::Dir { path, mode } => {
            let p = places.at(path);
            std::fs::create_dir_all(&p).unwrap();
            set_mode(&p, *mode);
        }
        Step::Symlink { path, target } => {
            let p = places.at(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(places.expand(target), &p).unwrap();
        }
        Step::Remove(path) => {
            let p = places.at(path);
            if p.is_dir() && !p.is_symlink() {
                std::fs::remove_dir_all(&p).unwrap();
            } else {
                std::fs::remove_file(&p).unwrap();
            }
        }
        Step::Edit { path, old, new } => {
            let p = places.at(path);
            let text = std::fs::read(&p).unwrap();
            let Some(pos) = text.windows(old.len()).position(|w| w == old.as_slice()) else {
                return Err(format!(
                    "{case}: fixture problem: {path} does not contain {:?}",
                    String::from_utf8_lossy(old)
                ));
            };
            let mut out = text[..pos].to_vec();
            match std::str::from_utf8(new) {
                Ok(t) => out.extend_from_slice(places.expand(t).as_bytes()),
                Err(_) => out.extend_from_slice(new),
            }
            out.extend_from_slice(&text[pos + old.len()..]);
            std::fs::write(&p, out).unwrap();
        }
        Step::Chmod { path, mode } => set_mode(&places.at(path), *mode),
        Step::Grow { path, count, bytes } => {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(places.at(path))
                .unwrap_or_else(|e| panic!("{case}: grow {path}: {e}"));
            f.write_all(&bytes.repeat(*count)).unwrap();
        }
        Step::GitAdd(path) => {
            places.repo.git(&["add", "-f", path]);
        }
        Step::Pre(args) => {
            let out = places
                .repo
                .xtask(&args.iter().map(String::as_str).collect::<Vec<_>>())
                .stdin(Stdio::null())
                .output()
                .unwrap();
            if !out.status.success() {
                return Err(format!(
                    "{case}: fixture problem: pre-step `{}` failed:\n{}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
    }
    Ok(())
}

/// One file's state: type, mode, and bytes or link target.
#[derive(PartialEq, Eq, Debug)]
enum Node {
    File(u32, Vec<u8>),
    Dir(u32),
    Link(PathBuf),
    Other(u32),
}

fn snapshot_into(out: &mut BTreeMap<String, Node>, base: &Path, prefix: &str, skip: &[&str]) {
    let mut stack = vec![base.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            if skip.contains(&rel.as_str()) || (prefix.is_empty() && is_lock_file(&rel)) {
                continue;
            }
            let md = std::fs::symlink_metadata(&p).unwrap();
            let mode = md.mode() & 0o7777;
            let node = if md.file_type().is_symlink() {
                Node::Link(std::fs::read_link(&p).unwrap())
            } else if md.is_dir() {
                stack.push(p.clone());
                Node::Dir(mode)
            } else if md.is_file() {
                Node::File(mode, std::fs::read(&p).unwrap_or_default())
            } else {
                Node::Other(mode)
            };
            out.insert(format!("{prefix}{rel}"), node);
        }
    }
}

fn snapshot(places: &Places) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    snapshot_into(&mut out, &places.repo.root, "", &[".git"]);
    snapshot_into(&mut out, &places.tmp, "{tmp}/", &["bin"]);
    out
}

fn describe_changes(before: &BTreeMap<String, Node>, after: &BTreeMap<String, Node>) -> String {
    let mut out = Vec::new();
    for (k, v) in before {
        match after.get(k) {
            None => out.push(format!("removed {k}")),
            Some(w) if w != v => {
                let what = match (v, w) {
                    (Node::File(m1, _), Node::File(m2, _)) if m1 != m2 => {
                        format!("mode {m1:o} -> {m2:o}")
                    }
                    (Node::File(..), Node::File(..)) => "content".into(),
                    (Node::Dir(m1), Node::Dir(m2)) => format!("mode {m1:o} -> {m2:o}"),
                    _ => "type or target".into(),
                };
                out.push(format!("changed {k} ({what})"))
            }
            _ => {}
        }
    }
    for k in after.keys() {
        if !before.contains_key(k) {
            out.push(format!("added {k}"));
        }
    }
    out.join(", ")
}

/// Values of 8 characters or more in the env files a case writes: none of
/// them may appear in the output.
fn secret_values(case: &Case) -> Vec<String> {
    let mut out = case.canaries.clone();
    // The private keys of the made TLS pair: no line of theirs may be shown.
    if format!("{:?}", case.steps).contains("{tls-") {
        let (_, key, other) = support::tls_pair();
        out.extend(
            [key, other]
                .iter()
                .flat_map(|k| k.lines())
                .filter(|l| !l.starts_with("-----") && l.len() >= 8)
                .map(String::from),
        );
    }
    for s in &case.steps {
        let Step::File { path, bytes, .. } = s else {
            continue;
        };
        if !path.ends_with(".env") {
            continue;
        }
        let text = String::from_utf8_lossy(bytes);
        for line in text.lines() {
            let Some((_, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches(|c| c == '\'' || c == '"');
            let mut candidates = vec![v.to_string()];
            candidates.extend(
                v.split(|c: char| c.is_control() || c == '\u{fffd}' || c == ' ')
                    .map(String::from),
            );
            for c in candidates {
                // Paths of file secrets are names, not values.
                if c.chars().count() >= 8 && !c.ends_with(".crt") && !c.ends_with(".key") {
                    out.push(c);
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// A folder holding links to every program on PATH except `without`.
fn path_without(places: &Places, without: &[String]) -> String {
    let bin = places.tmp.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let path = std::env::var("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let n = name.to_string_lossy();
            if without.iter().any(|w| *w == n) || bin.join(&name).exists() {
                continue;
            }
            let _ = std::os::unix::fs::symlink(e.path(), bin.join(&name));
        }
    }
    bin.display().to_string()
}

/// True when this process may make a read-only bind mount in a private mount
/// namespace (root with CAP_SYS_ADMIN); checked once.
fn can_unshare_mounts() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "true"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
    note: Option<String>,
}

/// Runs `cmd` in its own process group with a deadline; a run that outlives it,
/// or leaves a child holding its output, is stopped (the group, by its id).
fn run_bounded(mut cmd: Command) -> Outcome {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().expect("the xtask binary starts");
    let pgid = child.id();
    let (tx, rx) = mpsc::channel();
    let mut pipes: Vec<Box<dyn Read + Send>> = vec![
        Box::new(child.stdout.take().unwrap()),
        Box::new(child.stderr.take().unwrap()),
    ];
    for (i, mut p) in pipes.drain(..).enumerate() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = p.read_to_end(&mut buf);
            let _ = tx.send((i, buf));
        });
    }
    drop(tx);
    let kill_group = || {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status();
    };
    let start = Instant::now();
    let mut note = None;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > CASE_DEADLINE {
            kill_group();
            note = Some(format!(
                "still running after {}s; stopped by the harness",
                CASE_DEADLINE.as_secs()
            ));
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut streams = [Vec::new(), Vec::new()];
    for _ in 0..2 {
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok((i, buf)) => streams[i] = buf,
            Err(_) => {
                kill_group();
                note.get_or_insert_with(|| {
                    "exited but left a child process holding its output; stopped by the harness"
                        .into()
                });
                if let Ok((i, buf)) = rx.recv_timeout(Duration::from_secs(5)) {
                    streams[i] = buf;
                }
            }
        }
    }
    Outcome {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&streams[0]).into_owned(),
        stderr: String::from_utf8_lossy(&streams[1]).into_owned(),
        note,
    }
}

/// Runs one case; `Err` holds the report of what went wrong.
fn run_case(case: &Case) -> Result<(), String> {
    let repo = TempRepo::new();
    let tmp = std::env::temp_dir().join(format!("xtask-bad-{}-{}", case.name, support::unique()));
    std::fs::create_dir_all(&tmp).unwrap();
    let places = Places { repo, tmp };
    for step in &case.steps {
        apply(&places, step, &case.name)?;
    }

    let args: Vec<String> = case.args.iter().map(|a| places.expand(a)).collect();
    let bin = env!("CARGO_BIN_EXE_xtask");
    let mut cmd = if case.readonly.is_empty() || !is_root() {
        for r in &case.readonly {
            // Not root: taking write access away is enough.
            let _ = Command::new("chmod")
                .args(["-R", "a-w"])
                .arg(places.at(r))
                .status();
        }
        let mut c = places
            .repo
            .xtask(&args.iter().map(String::as_str).collect::<Vec<_>>());
        c.env_remove("KUBECTL");
        c
    } else {
        // Root ignores modes: bind-mount the folders read-only in a private
        // mount namespace that ends with the run.
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(
                r#"set -e; n=$1; shift; i=0
while [ "$i" -lt "$n" ]; do mount --bind "$1" "$1"; mount -o remount,bind,ro "$1" "$1"; shift; i=$((i+1)); done
exec "$@""#,
            )
            .arg("sh")
            .arg(case.readonly.len().to_string());
        for r in &case.readonly {
            c.arg(places.at(r));
        }
        c.arg(bin)
            .args(&args)
            .current_dir(&places.repo.root)
            .env("CARGO_MANIFEST_DIR", places.repo.root.join("xtask"))
            .env("NO_COLOR", "1")
            .env_remove("DOCKER")
            .env_remove("KUBECTL");
        c
    };
    if !case.path_without.is_empty() {
        cmd.env("PATH", path_without(&places, &case.path_without));
    }
    for (k, v) in &case.env {
        match v {
            Some(v) => cmd.env(k, places.expand(v)),
            None => cmd.env_remove(k),
        };
    }

    let mut before = snapshot(&places);
    let out = run_bounded(cmd);
    let mut after = snapshot(&places);

    let mut wrong = Vec::new();
    wrong.extend(audit_appends_only_failures(
        case,
        before.remove(AUDIT_LOG),
        after.remove(AUDIT_LOG),
    ));
    if let Some(n) = &out.note {
        wrong.push(n.clone());
    }
    if !case.exits.contains(&out.code) {
        wrong.push(format!(
            "exit code {} (want {})",
            out.code,
            case.exits
                .iter()
                .map(i32::to_string)
                .collect::<Vec<_>>()
                .join(" or ")
        ));
    }
    let missing: Vec<String> = case
        .expect
        .iter()
        .map(|e| places.expand(e))
        .filter(|e| !out.stderr.contains(e.as_str()))
        .collect();
    if !missing.is_empty() {
        wrong.push(format!("stderr lacks {missing:?}"));
    }
    let leaked = secret_values(case)
        .into_iter()
        .filter(|v| out.stdout.contains(v.as_str()) || out.stderr.contains(v.as_str()))
        .count();
    if leaked > 0 {
        wrong.push(format!("{leaked} secret value(s) printed"));
    }
    if before != after {
        wrong.push(format!(
            "changed the disk: {}",
            describe_changes(&before, &after)
        ));
    }
    if wrong.is_empty() {
        return Ok(());
    }
    let redact = |s: &str| {
        let mut s = s.to_string();
        for v in secret_values(case) {
            s = s.replace(&v, "<VALUE>");
        }
        s.replace(&places.tmp.display().to_string(), "{tmp}")
            .replace(&places.repo.root.display().to_string(), "{repo}")
    };
    Err(format!(
        "--- {} ({}): `cargo xtask {}`\n    {}\n    exit {}; stderr:\n{}{}",
        case.name,
        case.source,
        case.args.join(" "),
        wrong.join("\n    "),
        out.code,
        indent(&redact(&out.stderr)),
        if out.stdout.trim().is_empty() {
            String::new()
        } else {
            format!("    stdout:\n{}", indent(&redact(&out.stdout)))
        }
    ))
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("      | {l}\n")).collect()
}

/// Whether every need of a case is met; prints a loud skip when not.
fn needs_met(case: &Case) -> bool {
    for n in &case.needs {
        let what = format!("bad-input case {}", case.name);
        let ok = match n.as_str() {
            "docker" => support::docker_or_skip(&what),
            "swarm" => support::swarm_or_skip(&what),
            // CLIs a case drives: missing, the case is skipped loudly (a
            // machine with only Rust), and fails under CI, which installs them.
            cli @ ("kubectl" | "bao" | "aws" | "age" | "openssl") => {
                let found = which_on_path(cli);
                if !found && ci() {
                    panic!("{what}: CI is set but {cli} is not installed; .ci/run must install it");
                }
                if !found {
                    support::skip_note(format_args!(
                        "\n*** SKIPPED {what}: {cli} is not installed ***\n"
                    ));
                }
                found
            }
            "readonly-mounts" => {
                let ok = !is_root() || can_unshare_mounts();
                if !ok {
                    if ci() {
                        panic!(
                            "{what}: CI is set but read-only bind mounts are not allowed here (unshare --mount)"
                        );
                    }
                    support::skip_note(format_args!(
                        "\n*** SKIPPED {what}: running as root without the right to make a read-only mount (unshare --mount) ***\n"
                    ));
                }
                ok
            }
            other => panic!("{}: unknown need {other:?}", case.source),
        };
        if !ok {
            return false;
        }
    }
    true
}

fn which_on_path(prog: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|d| d.join(prog).is_file())
}

#[test]
fn every_bad_input_is_refused_plainly_and_changes_nothing() {
    let cases = load_cases();
    assert!(
        cases.len() >= 60,
        "the corpus has only {} cases",
        cases.len()
    );
    // Filter by name for a quick look at a few: BAD_INPUT_ONLY=env-bom,env-nul
    let only: Option<Vec<String>> = std::env::var("BAD_INPUT_ONLY")
        .ok()
        .map(|v| v.split(',').map(String::from).collect());
    let runnable: VecDeque<Case> = cases
        .into_iter()
        .filter(|c| only.as_ref().is_none_or(|o| o.contains(&c.name)))
        .filter(needs_met)
        .collect();
    let total = runnable.len();
    let queue = Arc::new(Mutex::new(runnable));
    let failures = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 8);
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let queue = Arc::clone(&queue);
            let failures = Arc::clone(&failures);
            std::thread::spawn(move || {
                loop {
                    let Some(case) = queue.lock().unwrap().pop_front() else {
                        break;
                    };
                    let name = case.name.clone();
                    let result = std::panic::catch_unwind(|| run_case(&case)).unwrap_or_else(|p| {
                        let msg = p
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        Err(format!("--- {name}: the harness panicked: {msg}"))
                    });
                    if let Err(report) = result {
                        failures.lock().unwrap().push((name, report));
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let mut failures = std::mem::take(&mut *failures.lock().unwrap());
    failures.sort();
    // Shown in cargo test's normal output too (past libtest's capture).
    support::skip_note(format_args!(
        "bad-input corpus: {total} cases run, {} failed",
        failures.len()
    ));
    assert!(
        failures.is_empty(),
        "{} of {total} bad-input cases failed: {}\n\n{}",
        failures.len(),
        failures
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        failures
            .iter()
            .map(|(_, r)| r.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The harness itself: a run that succeeds and writes files is reported with
/// its exit code, the missing message and every file it changed, and the
/// values of a case's env files are what the leak check looks for.
#[test]
fn the_harness_reports_a_run_that_succeeds_and_writes() {
    let case = finish(Case {
        name: "harness-self-test".into(),
        source: "bad_input.rs".into(),
        args: vec!["setup-secrets".into(), "develop".into()],
        steps: vec![Step::File {
            path: "secrets/develop.env".into(),
            mode: 0o600,
            bytes: b"POSTGRES_USER=app\nREDIS_PASSWORD='yC7WXnJhF4W3 Qwa68WU4Y2S1hCy7'\n".to_vec(),
        }],
        expect: vec!["a phrase no run prints".into()],
        ..Case::default()
    });
    assert_eq!(
        secret_values(&case),
        [
            "Qwa68WU4Y2S1hCy7",
            "yC7WXnJhF4W3",
            "yC7WXnJhF4W3 Qwa68WU4Y2S1hCy7"
        ]
    );
    let report = run_case(&case).expect_err("a successful run must be reported");
    for want in [
        "exit code 0 (want 1)",
        "stderr lacks [\"a phrase no run prints\"]",
        "changed the disk:",
        "changed secrets/develop.env (content)",
        "added secrets/develop/jwt_secret",
    ] {
        assert!(report.contains(want), "{want:?} not in:\n{report}");
    }
}
