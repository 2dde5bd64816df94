//! Another project's xtask using the engine: deploy an environment with its
//! current secrets, rendering the engine's events its own way. Built by
//! `cargo test` (so it stays true); run it in a repository of the tool:
//! `cargo run -p secrets-engine --example other_xtask -- staging`.

use std::{path::Path, sync::Arc, time::Duration};

use secrets_engine::{
    runtime::DeployOptions,
    session::{Session, Target},
    sink::{Event, Shared, Sink},
};

/// Shows lines and warnings, prefixed; ignores the rest.
struct Log;

impl Sink for Log {
    fn event(&self, e: Event<'_>) {
        match e {
            Event::Line(l) => eprintln!("secrets: {l}"),
            Event::Warning(w) => eprintln!("secrets: warning: {w}"),
            Event::Converged(l) => eprintln!("secrets: {l}"),
            _ => {}
        }
    }
}

fn deploy(root: &Path, env: &str) -> anyhow::Result<()> {
    let target = Target {
        env: env.into(),
        backend: None,
        namespace: None,
        lock_timeout: Duration::from_secs(300),
    };
    let sink: Shared = Arc::new(Log);
    let s = Session::open(root, &target, sink)?;
    let _lock = s.lock("other-xtask deploy", target.lock_timeout)?;
    let r = s.resolve_read_only()?;
    let planned = s.plan(&r)?;
    let opts = DeployOptions {
        timeout: Duration::from_secs(300),
        ..DeployOptions::default()
    };
    secrets_engine::deliver::deploy(&s, &r, &planned, &opts)
}

fn main() -> anyhow::Result<()> {
    let env = std::env::args().nth(1).unwrap_or_else(|| "develop".into());
    deploy(&std::env::current_dir()?, &env)
}
