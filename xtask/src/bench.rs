//! Benchmarks that print figures against a real engine.

use std::path::Path;

use anyhow::{Result, bail};

pub fn run(_root: &Path, _what: &str, _sizes: &[usize]) -> Result<()> {
    bail!("bench is planned and not built yet")
}
