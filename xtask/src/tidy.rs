//! Source checks that run with `cargo test`: commands are argument vectors, values
//! travel on stdin, env files never load into the process environment, every
//! module says why it exists, and the README documents every command.

use std::path::{Path, PathBuf};

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
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    out.retain(|(p, _)| !p.ends_with("tidy.rs"));
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
