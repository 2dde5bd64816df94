//! `generate-secret [--length N]`: one random URL-safe value on stdout, the
//! replacement for `openssl rand -base64 32 | tr -d "=+/" | cut -c1-32`.

use std::io::Write;

use anyhow::Result;

pub fn run(length: usize) -> Result<()> {
    let v = secrets_engine::model::secret::generate(length)?;
    let mut out = std::io::stdout().lock();
    out.write_all(v.expose())?;
    out.write_all(b"\n")?;
    Ok(())
}
