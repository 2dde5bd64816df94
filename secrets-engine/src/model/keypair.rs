//! Whether a TLS private key belongs to its certificate, before either is
//! stored: nginx would refuse a mismatched pair and every new task would fail.
//! `openssl` compares the public keys; both PEMs reach it on stdin.

use anyhow::{Context, Result, bail};

use crate::{model::secret::SecretValue, tools::runner::Tool};

/// The public key (PEM) in a certificate or a private key, through openssl.
fn public_key(openssl: &Tool, args: &[&str], pem: &SecretValue, what: &str) -> Result<String> {
    let out = openssl.output(args, Some(pem.expose()))?;
    if !out.status.success() || !out.stdout.contains("PUBLIC KEY") {
        // openssl's message may quote the input: it is not shown.
        bail!("{what} is not a PEM openssl can read; check the file the env file names");
    }
    Ok(out.stdout)
}

/// Fails unless `key` is the private key of `cert`. `names` are the two
/// secrets' names, for the message.
pub fn check(cert: &SecretValue, key: &SecretValue, names: (&str, &str)) -> Result<()> {
    let openssl = Tool::find("openssl", "OPENSSL", "install it (apt-get install openssl)")
        .context("checking that the TLS key matches its certificate")?;
    let from_cert = public_key(&openssl, &["x509", "-noout", "-pubkey"], cert, names.0)?;
    let from_key = public_key(&openssl, &["pkey", "-pubout"], key, names.1)?;
    if from_cert.trim() != from_key.trim() {
        bail!(
            "{} is not the private key of {} (their public keys differ), so nginx could not serve them; put a matching pair in the env file (rotate both together when the key changes); nothing was changed",
            names.1,
            names.0
        );
    }
    Ok(())
}
