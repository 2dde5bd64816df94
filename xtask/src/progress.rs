//! Long waits (a deploy converging, a rollout) shown as they go: on a terminal
//! one line, rewritten in place, with what is awaited and the elapsed time;
//! otherwise (CI logs, pipes) a plain line each time what is awaited changes,
//! never a carriage return or an escape code. Rendering is pure; [`Progress`]
//! only decides the text, the caller writes it.

use std::time::Duration;

pub struct Progress {
    tty: bool,
    width: usize,
    last: String,
}

impl Progress {
    /// For standard output: a terminal or not, as it is now.
    pub fn stdout() -> Progress {
        use std::io::IsTerminal;
        let width = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse().ok())
            .filter(|w: &usize| *w >= 20)
            .unwrap_or(80);
        Progress::new(std::io::stdout().is_terminal(), width)
    }

    pub fn new(tty: bool, width: usize) -> Progress {
        Progress {
            tty,
            width,
            last: String::new(),
        }
    }

    /// What to write for a poll that is still waiting on `now`, if anything.
    pub fn waiting(&mut self, what: &str, now: &str, elapsed: Duration) -> Option<String> {
        let secs = elapsed.as_secs();
        if self.tty {
            let line = format!("waiting for {what} ({secs}s): {now}");
            // One screen line, or the carriage return cannot take it back.
            let line: String = line.chars().take(self.width.saturating_sub(1)).collect();
            self.last = now.to_string();
            return Some(format!("\r\x1b[K{line}"));
        }
        if now == self.last {
            return None;
        }
        self.last = now.to_string();
        Some(format!("waiting ({secs}s): {now}\n"))
    }

    /// What to write when the wait ends with `line` (converged).
    pub fn done(&self, line: &str) -> String {
        if self.tty && !self.last.is_empty() {
            format!("\r\x1b[K{line}\n")
        } else {
            format!("{line}\n")
        }
    }

    /// What to write before an error is reported: ends the updating line, so
    /// the last state stays on screen above the error.
    pub fn abandon(&self) -> &'static str {
        if self.tty && !self.last.is_empty() {
            "\n"
        } else {
            ""
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(p: &mut Progress) -> String {
        let mut out = String::new();
        for (i, now) in ["a 0/2", "a 0/2", "a 1/2", "a 1/2"].iter().enumerate() {
            out.extend(p.waiting("stack", now, Duration::from_secs(i as u64)));
        }
        out.push_str(&p.done("converged"));
        out
    }

    #[test]
    fn not_a_terminal_gives_plain_lines_on_change_only() {
        let out = run(&mut Progress::new(false, 80));
        assert_eq!(out, "waiting (0s): a 0/2\nwaiting (2s): a 1/2\nconverged\n");
        assert!(!out.contains('\r') && !out.contains('\x1b'));
    }

    #[test]
    fn a_terminal_gets_one_updating_line_with_the_elapsed_time() {
        let mut p = Progress::new(true, 30);
        let out = run(&mut p);
        assert_eq!(out.matches('\r').count(), 5);
        assert_eq!(out.matches('\n').count(), 1, "{out:?}");
        assert!(
            out.contains("\r\x1b[Kwaiting for stack (3s): a 1/"),
            "{out:?}"
        );
        assert!(out.ends_with("\r\x1b[Kconverged\n"));
        // Truncated to the width, so the line can be taken back.
        let w = p
            .waiting("stack", &"x".repeat(100), Duration::ZERO)
            .unwrap();
        assert_eq!(w.chars().count(), "\r\x1b[K".len() + 29);
        assert_eq!(p.abandon(), "\n");
    }
}
