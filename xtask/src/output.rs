//! Terminal output: plans, tables and warnings, and [`Terminal`], the sink
//! that renders the engine's events. Colour only on a terminal and never
//! when `NO_COLOR` is set.

use std::{
    io::{IsTerminal, Write},
    sync::{Arc, Mutex},
};

use secrets_engine::sink::{Event, Shared, Sink};

use crate::progress::Progress;

use secrets_engine::plan::{Action, Step};

pub fn color() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

pub fn paint(code: &str, s: &str) -> String {
    if color() {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

pub fn warn(msg: &str) {
    let tag = if std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal() {
        "\x1b[33mwarning\x1b[0m"
    } else {
        "warning"
    };
    eprintln!("{tag}: {msg}");
}

/// Prints a plan as aligned lines:
/// `  update    postgres_password  raqeem_production_postgres_password_v2 (content changed, replaces v1)`.
pub fn print_plan<S: std::borrow::Borrow<Step>>(title: &str, steps: &[S]) {
    println!("{title}");
    let width = steps
        .iter()
        .map(|s| s.borrow().secret.len())
        .max()
        .unwrap_or(0);
    for s in steps {
        let s = s.borrow();
        let word = format!("{:<9}", s.action.word());
        let word = match s.action {
            Action::Create => paint("32", &word),
            Action::Update => paint("33", &word),
            Action::Extra => paint("35", &word),
            Action::Remove => paint("31", &word),
            Action::Unchanged => paint("2", &word),
        };
        let detail = if s.detail.is_empty() {
            s.id.clone()
        } else {
            format!("{} ({})", s.id, s.detail)
        };
        println!("  {word} {:<width$}  {detail}", s.secret);
    }
}

/// Renders the engine's events on standard output (warnings on standard
/// error), long waits as [`Progress`] lines.
pub struct Terminal {
    progress: Mutex<Option<Progress>>,
}

/// The sink for one run of a command.
pub fn terminal() -> Shared {
    Arc::new(Terminal {
        progress: Mutex::new(None),
    })
}

fn show(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
}

impl Sink for Terminal {
    fn event(&self, e: Event<'_>) {
        let mut progress = match self.progress.lock() {
            Ok(p) => p,
            Err(p) => p.into_inner(),
        };
        match e {
            Event::Line(t) => println!("{t}"),
            Event::Warning(t) => warn(t),
            Event::Diagnostic(t) => eprintln!("{t}"),
            Event::Plan { title, steps } => print_plan(title, steps),
            Event::Waiting { what, now, elapsed } => {
                let p = progress.get_or_insert_with(Progress::stdout);
                if let Some(text) = p.waiting(what, now, elapsed) {
                    show(&text);
                }
            }
            Event::Converged(line) => {
                let p = progress.take().unwrap_or_else(Progress::stdout);
                show(&p.done(line));
            }
            Event::Abandoned => {
                if let Some(p) = progress.take() {
                    show(p.abandon());
                }
            }
        }
    }
}

/// The RUNNING cell: `current`, `drift (...)` in red, `kept (...)`, `-`
/// when nothing runs it, `?` when the runtime could not be asked.
pub fn running_cell(r: Option<&secrets_engine::runtime::drift::SecretRuntime>) -> String {
    match r {
        None => paint("31", "?"),
        Some(r) if r.drift() => paint("31", &r.cell()),
        Some(r) => r.cell(),
    }
}

/// The `runtime` object of `--json` (status and list-secrets), null when
/// the runtime could not be asked.
pub fn runtime_json(
    r: Option<&secrets_engine::runtime::drift::SecretRuntime>,
) -> serde_json::Value {
    let Some(r) = r else {
        return serde_json::Value::Null;
    };
    let list = |l: &[secrets_engine::runtime::drift::Behind]| -> Vec<serde_json::Value> {
        l.iter()
            .map(|b| serde_json::json!({"who": b.who, "service": b.service, "version": b.version}))
            .collect()
    };
    serde_json::json!({
        "state": match (r.runners, r.drift()) {
            (0, _) => "not-running",
            (_, true) => "drift",
            (_, false) => "converged",
        },
        "current_version": r.current,
        "in_use": r.in_use,
        "behind": list(&r.behind),
        "kept": list(&r.kept),
    })
}

/// The line `check` (and migrate after its compose edit) prints when the
/// manifest and the deploy files agree.
pub fn print_agreement(
    c: &secrets_engine::check::Checked,
    m: &secrets_engine::model::manifest::Manifest,
) {
    println!(
        "deploy/secrets.toml and {} agree on {} secrets",
        c.files.join(", "),
        m.secrets.len()
    );
}

/// The width of `s` on a terminal: characters, colour codes not counted.
fn visible_len(s: &str) -> usize {
    let mut n = 0;
    let mut in_escape = false;
    for c in s.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, _) => n += 1,
        }
    }
    n
}

/// Prints rows as a table with a header, columns padded to their widest cell
/// (cells may be [`paint`]ed).
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(visible_len(c));
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            s.push_str(c);
            if i + 1 < cells.len() {
                s.push_str(&" ".repeat(widths[i] - visible_len(c) + 2));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn colour_codes_take_no_width() {
        assert_eq!(super::visible_len("\x1b[31moverdue 3d\x1b[0m"), 10);
        assert_eq!(super::visible_len("plain"), 5);
    }
}
