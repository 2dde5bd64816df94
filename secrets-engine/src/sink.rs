//! How the engine tells the operator what happens while a run goes on,
//! without touching the terminal: it sends [`Event`]s to a [`Sink`], and the
//! caller (the `xtask` binary, another project's xtask, a test) decides how
//! they look. Results that a command returns (plans, reports) are values,
//! not events.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::plan::Step;

/// Something the operator should see now.
#[derive(Debug)]
pub enum Event<'a> {
    /// A line: what was done, or in a dry run what would be done.
    Line(&'a str),
    /// Something to know that does not stop the run.
    Warning(&'a str),
    /// A line a child process (a rotate hook) wrote on its standard error,
    /// shown as it is, where the operator expects errors.
    Diagnostic(&'a str),
    /// A plan under a title, one step per line.
    Plan {
        /// What the plan is for, e.g. `raqeem secrets for develop (compose backend):`.
        title: &'a str,
        /// The steps, in order.
        steps: &'a [Step],
    },
    /// A wait is still going on: `what` is awaited, `now` is its state.
    Waiting {
        /// What is awaited (a stack, a project, a deployment).
        what: &'a str,
        /// What is still missing, e.g. `backend 1/2`.
        now: &'a str,
        /// Time since the wait began.
        elapsed: Duration,
    },
    /// A wait ended: converged, with the line that says so.
    Converged(&'a str),
    /// A wait ended without converging; an error follows.
    Abandoned,
}

/// Where events go. Shared by the parts of one run, across threads.
pub trait Sink: Send + Sync {
    /// Receives one event.
    fn event(&self, e: Event<'_>);
}

/// A sink shared by a session, its store and its runtime.
pub type Shared = Arc<dyn Sink>;

impl dyn Sink + '_ {
    /// Sends [`Event::Line`].
    pub fn line(&self, text: &str) {
        self.event(Event::Line(text));
    }

    /// Sends [`Event::Warning`].
    pub fn warn(&self, text: &str) {
        self.event(Event::Warning(text));
    }

    /// Sends [`Event::Plan`].
    pub fn plan(&self, title: &str, steps: &[Step]) {
        self.event(Event::Plan { title, steps });
    }
}

/// A sink that drops every event.
pub struct Silent;

impl Sink for Silent {
    fn event(&self, _: Event<'_>) {}
}

/// A sink that keeps each event as a line of text, for tests and for callers
/// that show the events later.
#[derive(Default)]
pub struct Collect(Mutex<Vec<String>>);

impl Collect {
    /// The events so far, one line each (a plan gives its title, then one
    /// line per step: `  action secret id`).
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Sink for Collect {
    fn event(&self, e: Event<'_>) {
        let mut out = match self.0.lock() {
            Ok(o) => o,
            Err(p) => p.into_inner(),
        };
        match e {
            Event::Line(t) => out.push(t.to_string()),
            Event::Warning(t) => out.push(format!("warning: {t}")),
            Event::Diagnostic(t) => out.push(t.to_string()),
            Event::Plan { title, steps } => {
                out.push(title.to_string());
                for s in steps {
                    out.push(format!("  {} {} {}", s.action.word(), s.secret, s.id));
                }
            }
            Event::Waiting { what, now, .. } => out.push(format!("waiting for {what}: {now}")),
            Event::Converged(t) => out.push(t.to_string()),
            Event::Abandoned => {}
        }
    }
}
