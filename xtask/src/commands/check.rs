//! `check`: the manifest and the compose files must name the same secrets.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::{
    manifest::{BackendKind, Manifest},
    stackfile,
};

pub fn run(root: &Path) -> Result<()> {
    let m = Manifest::load(root)?;
    let problems = problems(root, &m)?;
    if !problems.is_empty() {
        bail!(
            "{} disagreement(s) between deploy/secrets.toml and the compose files:\n  - {}",
            problems.len(),
            problems.join("\n  - ")
        );
    }
    println!(
        "deploy/secrets.toml, {} and {} agree on {} secrets",
        m.compose_file.display(),
        m.stack_file.display(),
        m.secrets.len()
    );
    Ok(())
}

pub fn problems(root: &Path, m: &Manifest) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (file, backend) in [
        (&m.compose_file, BackendKind::Compose),
        (&m.stack_file, BackendKind::Swarm),
    ] {
        let path = root.join(file);
        if !path.exists() {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let stack = stackfile::parse(&text).with_context(|| format!("in {}", file.display()))?;
        out.extend(stackfile::check(
            m,
            backend,
            &file.display().to_string(),
            &stack,
        ));
    }
    Ok(out)
}
