//! The TypeScript and Python readers (`readers/typescript`, `readers/python`)
//! pass their own suites, which run every conformance case of
//! `readers/conformance/` as `tests/conformance.rs` does here: so the
//! README's single test command covers all three readers.
//!
//! Without node/npm 20+, the TypeScript compiler (`npm ci` in
//! readers/typescript), python3.11+ or mypy, the tests fail under `CI` and
//! are skipped loudly elsewhere (a `SKIPPED` line on the real stderr, past
//! libtest's capture). `.ci/run` installs what they need.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

fn readers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../readers")
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `Ok(())` to go on; `Err(())` when skipped (outside CI). Panics under CI.
fn require(test: &str, missing: Option<String>) -> Result<(), ()> {
    let Some(reason) = missing else {
        return Ok(());
    };
    if ci() {
        panic!("{test}: CI is set but {reason}");
    }
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED {test}: {reason} ***\n");
    Err(())
}

/// The number of conformance cases, counted from the JSON files.
fn case_count() -> usize {
    let dir = readers().join("conformance");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
            n += doc["cases"].as_array().map_or(0, Vec::len);
        }
    }
    n
}

/// Runs `cmd` (at most `limit`), returning its exit success and combined output.
fn run(mut cmd: Command, limit: Duration) -> (bool, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = format!("{}{}", t_out.join().unwrap(), t_err.join().unwrap());
    match status {
        Some(s) => (s.success(), text),
        None => (false, format!("{text}\n(killed after {limit:?})")),
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The `conformance: N cases` line each suite prints.
fn reported_cases(output: &str) -> Option<usize> {
    output.lines().find_map(|l| {
        let rest = l.split("conformance: ").nth(1)?;
        rest.strip_suffix(" cases")?.trim().parse().ok()
    })
}

fn node_major() -> Option<u32> {
    let out = Command::new("node").arg("--version").output().ok()?;
    let v = String::from_utf8_lossy(&out.stdout);
    v.trim()
        .trim_start_matches('v')
        .split('.')
        .next()?
        .parse()
        .ok()
}

#[test]
fn typescript_reader_passes_its_suite_and_every_conformance_case() {
    const TEST: &str = "typescript_reader_passes_its_suite_and_every_conformance_case";
    let dir = readers().join("typescript");
    let missing = if which("node").is_none() || which("npm").is_none() {
        Some("node and npm are not installed (apt-get install nodejs npm; .ci/run does)".to_owned())
    } else if node_major().is_none_or(|m| m < 20) {
        Some("node is older than 20".to_owned())
    } else if !dir.join("node_modules/.bin/tsc").is_file() {
        Some("the TypeScript compiler is not installed: run `npm ci` in readers/typescript (.ci/run does)".to_owned())
    } else {
        None
    };
    if require(TEST, missing).is_err() {
        return;
    }
    let mut cmd = Command::new("npm");
    cmd.args(["test", "--silent"]).current_dir(&dir);
    let (ok, out) = run(cmd, Duration::from_secs(600));
    assert!(
        ok,
        "npm test failed in {}:\n{}",
        dir.display(),
        tail(&out, 80)
    );
    let pass = out.lines().find_map(|l| l.strip_prefix("# pass "));
    let fail = out.lines().find_map(|l| l.strip_prefix("# fail "));
    assert_eq!(fail, Some("0"), "{}", tail(&out, 40));
    assert_eq!(
        reported_cases(&out),
        Some(case_count()),
        "{}",
        tail(&out, 40)
    );
    let _ = writeln!(
        std::io::stderr(),
        "typescript reader: {} tests passed, {} conformance cases",
        pass.unwrap_or("?"),
        case_count()
    );
}

#[test]
fn python_reader_passes_its_suite_and_every_conformance_case() {
    const TEST: &str = "python_reader_passes_its_suite_and_every_conformance_case";
    let dir = readers().join("python");
    let version_ok = Command::new("python3")
        .args(["-c", "import sys; sys.exit(sys.version_info < (3, 11))"])
        .status()
        .is_ok_and(|s| s.success());
    let missing = if which("python3").is_none() {
        Some("python3 is not installed (apt-get install python3)".to_owned())
    } else if !version_ok {
        Some("python3 is older than 3.11".to_owned())
    } else {
        None
    };
    if require(TEST, missing).is_err() {
        return;
    }
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "unittest", "discover", "-s", "tests", "-t", "."])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(&dir);
    let (ok, out) = run(cmd, Duration::from_secs(600));
    assert!(
        ok,
        "python3 -m unittest failed in {}:\n{}",
        dir.display(),
        tail(&out, 80)
    );
    let ran = out.lines().find_map(|l| l.strip_prefix("Ran "));
    assert_eq!(
        reported_cases(&out),
        Some(case_count()),
        "{}",
        tail(&out, 40)
    );
    let _ = writeln!(
        std::io::stderr(),
        "python reader: {}, OK, {} conformance cases",
        ran.unwrap_or("?"),
        case_count()
    );
}

/// `mypy --strict` over the package and its tests: `$MYPY` (what `.ci/run`
/// installs), else `mypy` on PATH.
#[test]
fn python_reader_passes_mypy_strict() {
    const TEST: &str = "python_reader_passes_mypy_strict";
    let mypy = std::env::var_os("MYPY")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| which("mypy"));
    let missing = mypy.is_none().then(|| {
        "mypy is not installed (python3 -m pip install mypy, or set $MYPY; .ci/run does)".to_owned()
    });
    if require(TEST, missing).is_err() {
        return;
    }
    let mut cmd = Command::new(mypy.unwrap());
    cmd.args([
        "--strict",
        "--cache-dir=/dev/null",
        "secrets_reader",
        "tests",
    ])
    .current_dir(readers().join("python"));
    let (ok, out) = run(cmd, Duration::from_secs(600));
    assert!(ok, "mypy --strict failed:\n{}", tail(&out, 60));
}
