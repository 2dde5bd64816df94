//! The forms a secret value takes in text: itself, with the other line
//! endings, percent-encoded (in URLs, either case of hex) and base64 (both
//! alphabets, at every alignment inside longer base64 text). `scan` looks for
//! them in what git holds; `run` masks them in a child's output.

use base64::Engine;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use zeroize::Zeroizing;

const URL_PART: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The forms a value takes in files: itself, percent-encoded (in URLs), and
/// base64 in both alphabets at each of the three alignments a value can have
/// inside longer base64 text (only the characters that depend on the value
/// alone, so they match wherever it sits).
pub fn forms(value: &[u8]) -> Vec<(&'static str, Zeroizing<Vec<u8>>)> {
    let mut out = vec![("plain", Zeroizing::new(value.to_vec()))];
    // A multi-line value (a PEM) committed from the other kind of machine:
    // its lines end in CRLF there, or in LF where it was written with CRLF.
    if value.contains(&b'\n') {
        let lf: Vec<u8> = value
            .iter()
            .enumerate()
            .filter(|&(i, &b)| !(b == b'\r' && value.get(i + 1) == Some(&b'\n')))
            .map(|(_, &b)| b)
            .collect();
        let mut crlf = Vec::with_capacity(lf.len() + lf.len() / 32);
        for &b in &lf {
            if b == b'\n' {
                crlf.push(b'\r');
            }
            crlf.push(b);
        }
        for other in [lf, crlf] {
            if other != value {
                out.push(("line endings changed", Zeroizing::new(other)));
            }
        }
    }
    if let Ok(s) = std::str::from_utf8(value) {
        let enc = Zeroizing::new(utf8_percent_encode(s, URL_PART).to_string());
        if enc.as_bytes() != value {
            // RFC 3986 hex digits are case-insensitive: `%2F` and `%2f` alike.
            let lower = Zeroizing::new(lower_hex_escapes(enc.as_bytes()));
            out.push(("percent-encoded", Zeroizing::new(enc.as_bytes().to_vec())));
            if *lower != enc.as_bytes() {
                out.push(("percent-encoded", lower));
            }
        }
    }
    let engines = [
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    for (i, engine) in engines.iter().enumerate() {
        for shift in 0..3usize {
            let mut padded = Zeroizing::new(vec![0u8; shift]);
            padded.extend_from_slice(value);
            let enc = Zeroizing::new(engine.encode(&*padded));
            // Characters made only of the value's bits: skip the ones that
            // mix in the bytes before it, stop before the ones after it.
            let start = [0, 2, 3][shift];
            let end = padded.len() * 8 / 6;
            let part = enc.as_bytes()[start..end].to_vec();
            if i == 1 && out.iter().any(|(_, b)| **b == part) {
                continue;
            }
            out.push(("base64", Zeroizing::new(part)));
        }
    }
    out
}

/// `%2F` → `%2f`: the two hex digits after each `%` in lower case.
fn lower_hex_escapes(enc: &[u8]) -> Vec<u8> {
    let mut out = enc.to_vec();
    for i in 0..out.len() {
        if out[i] == b'%' {
            for j in i + 1..(i + 3).min(out.len()) {
                out[j] = out[j].to_ascii_lowercase();
            }
        }
    }
    out
}
