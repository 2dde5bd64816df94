//! Fingerprints as the reader prints them, from `sha256sum`.

use std::process::Command;

/// First 12 hex digits of SHA-256, as the reader's `fingerprint()` prints them.
pub fn sha12(bytes: &[u8]) -> String {
    sha256_hex(bytes)[..12].to_string()
}

/// The SHA-256 of `bytes` in hex, from `sha256sum`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(bytes)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
}
