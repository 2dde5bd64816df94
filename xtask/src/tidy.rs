//! Source checks that run with `cargo test`: commands are argument vectors, values
//! travel on stdin, env files never load into the process environment, every
//! module says why it exists, and the README documents every command. They
//! read the binary's sources and the engine's: the engine never prints,
//! processes start only in `tools/runner.rs`, and no command imports another.

use std::path::{Path, PathBuf};

/// Every source file of the binary and of the engine, but this one and bench.rs.
fn sources() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                out.push((p, text));
            }
        }
    }
    let mut out = Vec::new();
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    walk(&here.join("src"), &mut out);
    walk(&here.join("../secrets-engine/src"), &mut out);
    // bench.rs drives the built binary and test servers, not the tool's work.
    out.retain(|(p, _)| !p.ends_with("tidy.rs") && !p.ends_with("bench.rs"));
    assert!(out.len() > 10, "tidy found too few sources");
    out
}

/// Code without `//` comments and without the `#[cfg(test)] mod tests` tail.
fn code(text: &str) -> String {
    let body = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    body.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Each rule: (name, checker). A checker returns the problems in one file's code.
type Rule = (&'static str, fn(&str) -> Vec<String>);

const RULES: &[Rule] = &[
    ("no shell strings", shell_strings),
    ("no command built with format!", format_commands),
    ("values only on stdin", values_to_children),
    ("docker secret create reads stdin", secret_create_stdin),
    ("env files stay out of the process environment", env_loading),
];

/// Rules that hold only in some files: (name, applies to this path, checker).
type PathRule = (&'static str, fn(&Path) -> bool, fn(&str) -> Vec<String>);

const PATH_RULES: &[PathRule] = &[
    ("the engine never prints", engine_code, prints),
    ("one process spawner", not_the_runner, spawns),
    ("no command imports another", is_command, imports_a_command),
];

fn in_engine(p: &Path) -> bool {
    p.components().any(|c| c.as_os_str() == "secrets-engine")
}

/// The engine's code that ships: not proptests.rs or testutil.rs, which
/// lib.rs declares under `#[cfg(test)]` (a test may print what failed).
fn engine_code(p: &Path) -> bool {
    in_engine(p) && !p.ends_with("src/proptests.rs") && !p.ends_with("src/testutil.rs")
}

fn not_the_runner(p: &Path) -> bool {
    !(in_engine(p) && p.ends_with("tools/runner.rs"))
}

fn is_command(p: &Path) -> bool {
    p.parent().is_some_and(|d| d.ends_with("commands")) && !p.ends_with("mod.rs")
}

/// The engine tells the operator through its sink or returns values: it
/// never writes to the terminal itself.
fn prints(c: &str) -> Vec<String> {
    [
        "println!",
        "print!",
        "eprintln!",
        "eprint!",
        "dbg!",
        "std::io::stdout",
        "std::io::stderr",
        "io::stdout()",
        "io::stderr()",
    ]
    .iter()
    .filter(|bad| c.contains(*bad))
    .map(|bad| format!("uses {bad}; send a sink event or return a value instead"))
    .collect()
}

/// Processes start only in `tools/runner.rs` (its `Tool` and `Spawn`), so
/// argument vectors, stdin for values and timeouts hold everywhere. clap's
/// `Command::new` (flags.rs) builds a parser, not a process: the rule looks
/// for std's process `Command` and xshell, not for the bare name.
fn spawns(c: &str) -> Vec<String> {
    let mut out: Vec<String> = ["process::Command", "xshell", "cmd!(", "Shell::new"]
        .iter()
        .filter(|bad| c.contains(*bad))
        .map(|bad| format!("uses {bad}"))
        .collect();
    // `use std::process::{Child, Command, Stdio}` and the like.
    let grouped = c.match_indices("process::{").any(|(i, _)| {
        let group = &c[i..];
        group[..group.find('}').unwrap_or(group.len())].contains("Command")
    });
    if grouped {
        out.push("imports std::process::Command".to_string());
    }
    out.into_iter()
        .map(|bad| {
            format!("{bad}; start processes through secrets_engine::tools::runner (Tool, Spawn)")
        })
        .collect()
}

/// A command module uses the engine, flags and output, never another
/// command: what two commands share belongs in the engine.
fn imports_a_command(c: &str) -> Vec<String> {
    c.match_indices("super::")
        .filter(|(i, _)| !c[i + 7..].starts_with('*'))
        .map(|(i, _)| {
            let what: String = c[i..]
                .chars()
                .take_while(|ch| ch.is_alphanumeric() || *ch == '_' || *ch == ':')
                .collect();
            format!("uses {what}; move what both commands need into the engine")
        })
        .collect()
}

fn shell_strings(c: &str) -> Vec<String> {
    [
        "\"sh\", \"-c\"",
        "\"bash\", \"-c\"",
        "sh -c",
        "Command::new(\"sh\")",
        "Command::new(\"bash\")",
    ]
    .iter()
    .filter(|bad| c.contains(*bad))
    .map(|bad| format!("uses {bad}; build an argument vector instead"))
    .collect()
}

fn format_commands(c: &str) -> Vec<String> {
    c.lines()
        .enumerate()
        .filter(|(_, l)| {
            (l.contains("cmd!(") || l.contains("Command::new(")) && l.contains("format!")
        })
        .map(|(i, _)| {
            format!(
                "line {}: a command is built with format!; pass each value as its own argument",
                i + 1
            )
        })
        .collect()
}

fn values_to_children(c: &str) -> Vec<String> {
    c.lines()
        .enumerate()
        .filter(|(_, l)| {
            let exposes = l.contains("expose()") || l.contains("expose_str()");
            exposes
                && (l.contains(".arg(")
                    || l.contains(".args(")
                    || l.contains(".env(")
                    || l.contains("cmd!(")
                    || l.contains("args.push("))
        })
        .map(|(i, _)| {
            format!(
                "line {}: a secret value is passed to a child process other than on stdin",
                i + 1
            )
        })
        .collect()
}

/// Every `"secret", "create"` argument list must end in `"-"` (read stdin)
/// before the command runs.
fn secret_create_stdin(c: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = c;
    while let Some(i) = rest.find("\"create\"") {
        let before = &rest[i.saturating_sub(40)..i];
        let after = &rest[i..];
        let upto = after
            .find("run_with_stdin")
            .or_else(|| after.find(".run("))
            .or_else(|| after.find(".output("))
            .unwrap_or(after.len().min(600));
        if before.contains("\"secret\"") && !after[..upto].contains("\"-\"") {
            out.push("`docker secret create` must read the value from stdin (`-`)".to_string());
        }
        rest = &rest[i + 8..];
    }
    out
}

fn env_loading(c: &str) -> Vec<String> {
    [
        "dotenvy::dotenv",
        "dotenvy::from_path(",
        "dotenvy::from_filename(",
        "set_var(",
    ]
    .iter()
    .filter(|bad| c.contains(*bad))
    .map(|bad| format!("uses {bad}; read env files with dotenvy::from_path_iter"))
    .collect()
}

#[test]
fn sources_follow_the_rules() {
    let mut problems = Vec::new();
    for (p, text) in sources() {
        let c = code(&text);
        for (rule, check) in RULES {
            for problem in check(&c) {
                problems.push(format!("{} ({rule}): {problem}", p.display()));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The rules of [`PATH_RULES`] but the last, each on the files it applies to.
#[test]
fn the_engine_is_quiet_and_runner_spawns() {
    path_rules(&PATH_RULES[..2]);
}

#[test]
fn no_command_imports_another() {
    path_rules(&PATH_RULES[2..]);
}

fn path_rules(rules: &[PathRule]) {
    let mut problems = Vec::new();
    for (p, text) in sources() {
        let c = code(&text);
        for (rule, applies, check) in rules {
            if !applies(&p) {
                continue;
            }
            for problem in check(&c) {
                problems.push(format!("{} ({rule}): {problem}", p.display()));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Each rule must catch its bad example, or it proves nothing.
#[test]
fn every_rule_catches_its_bad_example() {
    let bad = [
        "let c = Command::new(\"sh\").args([\"-c\", script]);",
        "let c = Command::new(format!(\"{}/docker\", dir));",
        "cmd.arg(value.expose_str().unwrap());",
        "let args = vec![\"secret\", \"create\", name];\ndocker.run_with_stdin(&args, v, \"\");",
        "dotenvy::from_path(\"x.env\").unwrap();",
    ];
    for ((rule, check), example) in RULES.iter().zip(bad) {
        assert!(
            !check(example).is_empty(),
            "rule {rule:?} does not catch {example:?}"
        );
    }
    let bad = [
        "fn f(s: &str) { println!(\"{s}\"); }",
        "let out = std::process::Command::new(\"git\").output();",
        "use super::status::Report;",
    ];
    for ((rule, _, check), example) in PATH_RULES.iter().zip(bad) {
        assert!(
            !check(example).is_empty(),
            "rule {rule:?} does not catch {example:?}"
        );
    }
    assert!(spawns("let cli = clap::Command::new(\"xtask\");").is_empty());
    assert!(spawns("use std::process::{ExitStatus, Stdio};").is_empty());
    assert!(!spawns("use std::{io, process::{Stdio, Command}};").is_empty());
    assert!(imports_a_command("use super::*;").is_empty());
    let eng = Path::new("/w/secrets-engine/src/tools/runner.rs");
    assert!(!not_the_runner(eng) && in_engine(eng));
    assert!(is_command(Path::new("/w/xtask/src/commands/scan.rs")));
    assert!(!is_command(Path::new("/w/xtask/src/commands/mod.rs")));
    assert!(
        secret_create_stdin(
            "let a = vec![\"secret\", \"create\", n, \"-\"];\nd.run_with_stdin(&a, v, \"\");"
        )
        .is_empty()
    );
}

#[test]
fn every_module_says_why_it_exists() {
    for (p, text) in sources() {
        assert!(
            text.starts_with("//!"),
            "{}: start the module with a //! line that says why it exists",
            p.display()
        );
    }
}

#[test]
fn readme_documents_every_command_and_flag() {
    // The README and the reference pages it links in docs/.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut pages: Vec<_> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    pages.sort();
    for p in pages {
        readme.push_str(&std::fs::read_to_string(p).unwrap());
    }
    let cli = crate::flags::command();
    for sub in cli.get_subcommands() {
        let name = sub.get_name();
        assert!(
            readme.contains(&format!("cargo xtask {name}")),
            "README.md does not document `cargo xtask {name}`"
        );
        for arg in sub.get_arguments() {
            if let Some(long) = arg.get_long() {
                assert!(
                    readme.contains(&format!("--{long}")),
                    "README.md does not document `{name} --{long}`"
                );
            }
        }
    }
    for word in readme.split("cargo xtask ").skip(1) {
        let cmd: String = word
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '-')
            .collect();
        if cmd.is_empty() {
            continue;
        }
        assert!(
            cli.find_subcommand(&cmd).is_some(),
            "README.md mentions `cargo xtask {cmd}`, which does not exist"
        );
    }
}
