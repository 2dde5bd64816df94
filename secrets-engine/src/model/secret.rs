//! Secret values in memory: a type whose `Debug` never shows the value, which is
//! wiped on drop, and the random generator for new values.

use std::fmt;

use anyhow::{Result, bail};
use hmac::{KeyInit, Mac};
use rand::TryRng;
use zeroize::Zeroizing;

/// A secret's bytes. There is deliberately no `Display` and `Debug` prints
/// `<redacted>`: the only way to the bytes is [`SecretValue::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    /// Takes ownership of `bytes` as a secret.
    pub fn new(bytes: Vec<u8>) -> SecretValue {
        SecretValue(Zeroizing::new(bytes))
    }

    /// Takes ownership of text as a secret.
    pub fn from_string(s: String) -> SecretValue {
        SecretValue::new(s.into_bytes())
    }

    /// The bytes: the one way to the value. Never print, log or pass them on argv.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The value as text, for templates. File secrets may be binary.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// Whether the value has no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares without an early exit, so timing does not tell where two values differ.
    pub fn ct_eq(&self, other: &SecretValue) -> bool {
        let (a, b) = (self.expose(), other.expose());
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// A keyed fingerprint (HMAC-SHA-256, first 16 hex digits). Keyed so that a
    /// label holding it cannot be used to test guesses offline without the key.
    pub fn fingerprint(&self, key: &SecretValue) -> String {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.expose())
            .expect("HMAC takes keys of any length");
        mac.update(self.expose());
        let tag = mac.finalize().into_bytes();
        tag[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

/// URL-safe alphabet: 64 symbols, so one random byte masked to six bits picks a
/// symbol with no bias.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

pub(crate) const MIN_GENERATED: usize = 16;
pub(crate) const MAX_GENERATED: usize = 4096;

/// Fills `buf` from the operating system's generator (`getrandom`).
pub fn os_random(buf: &mut [u8]) -> Result<()> {
    rand::rngs::SysRng
        .try_fill_bytes(buf)
        .map_err(|e| anyhow::anyhow!("the operating system's random generator failed: {e}"))
}

/// A random number for unique temporary names.
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    os_random(&mut b).expect("the operating system's random generator failed");
    u64::from_le_bytes(b)
}

/// A random value straight from the operating system's generator.
pub fn generate(length: usize) -> Result<SecretValue> {
    if !(MIN_GENERATED..=MAX_GENERATED).contains(&length) {
        bail!(
            "a generated value must be {MIN_GENERATED} to {MAX_GENERATED} characters long; got {length}"
        );
    }
    let mut raw = Zeroizing::new(vec![0u8; length]);
    os_random(&mut raw)?;
    loop {
        let v: Vec<u8> = raw.iter().map(|b| ALPHABET[(b & 63) as usize]).collect();
        let value = SecretValue::new(v);
        // A generated value must pass the same rules as a typed one; retrying
        // on the rare all-one-class draw, or one that happens to spell a
        // placeholder word ("todo" turns up in about one value in 30,000),
        // keeps that promise.
        if crate::model::validate::strength_problem(value.expose()).is_none()
            && !crate::model::validate::is_placeholder(value.expose())
        {
            return Ok(value);
        }
        os_random(&mut raw)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_values_are_url_safe_and_distinct() {
        let a = generate(32).unwrap();
        let b = generate(32).unwrap();
        assert_eq!(a.expose().len(), 32);
        assert!(a.expose().iter().all(|c| ALPHABET.contains(c)));
        assert!(!a.ct_eq(&b));
        assert!(generate(8).is_err());
    }

    #[test]
    fn generator_uses_whole_alphabet() {
        let v = generate(4096).unwrap();
        for c in ALPHABET {
            assert!(v.expose().contains(c), "symbol {} never drawn", *c as char);
        }
    }

    #[test]
    fn debug_is_redacted() {
        let v = SecretValue::from_string("hunter2-very-secret".into());
        assert_eq!(format!("{v:?}"), "SecretValue(<redacted>)");
        assert!(!format!("{:?}", Some(&v)).contains("hunter2"));
    }

    #[test]
    fn fingerprint_is_keyed() {
        let v = SecretValue::from_string("value".into());
        let k1 = SecretValue::from_string("k1".into());
        let k2 = SecretValue::from_string("k2".into());
        assert_eq!(v.fingerprint(&k1), v.fingerprint(&k1));
        assert_ne!(v.fingerprint(&k1), v.fingerprint(&k2));
        assert_eq!(v.fingerprint(&k1).len(), 16);
        // RFC 4231 test case 2: HMAC-SHA-256(key "Jefe", "what do ya want for nothing?").
        let data = SecretValue::from_string("what do ya want for nothing?".into());
        assert_eq!(
            data.fingerprint(&SecretValue::from_string("Jefe".into())),
            "5bdcc146bf60754e"
        );
    }
}
