//! Strength and sanity rules for secret values. Pure: each rule takes bytes and
//! a policy and returns what is wrong in words, never echoing the value.

use crate::model::manifest::{Environment, Kind, SecretSpec};

/// Docker refuses secrets of 500 KiB or more; the same bound keeps every
/// backend's limits (Kubernetes 1 MiB, AWS 64 KiB is checked by its backend).
pub const MAX_SECRET_BYTES: usize = 500 * 1024 - 1;

/// Values printed as examples in the seeds' guides and common stand-ins.
const KNOWN_PLACEHOLDERS: &[&str] = &[
    "xK9mP2nQ7vL4zR8wE5tY1cA6sD3fG0hJ",
    "aB4cD8eF2gH6iJ0kL5mN9oP3qR7sT1uV",
    "mypassword",
    "password",
    "secret",
];

const PLACEHOLDER_WORDS: &[&str] = &[
    "changeme",
    "change_me",
    "change-me",
    "replace_me",
    "replace-me",
    "placeholder",
    "example",
    "your_",
    "your-",
    "todo",
    "xxxxxx",
];

/// The minimum length that applies to `spec` in `env`.
pub fn min_length(spec: &SecretSpec, env: &Environment) -> usize {
    spec.min_length.unwrap_or(env.min_length)
}

/// Why a random value is too simple, if it is: fewer than two character classes
/// or too few distinct characters for its length.
pub fn strength_problem(v: &[u8]) -> Option<String> {
    let classes = [
        v.iter().any(u8::is_ascii_lowercase),
        v.iter().any(u8::is_ascii_uppercase),
        v.iter().any(u8::is_ascii_digit),
        v.iter().any(|b| !b.is_ascii_alphanumeric()),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    let mut seen = [false; 256];
    v.iter().for_each(|b| seen[*b as usize] = true);
    let distinct = seen.iter().filter(|x| **x).count();
    let want_distinct = (v.len() / 2).min(10);
    if classes < 2 {
        return Some("uses a single character class (for example only lower-case letters)".into());
    }
    if distinct < want_distinct {
        return Some(format!("has only {distinct} distinct characters"));
    }
    None
}

pub(crate) fn is_placeholder(v: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(v) else {
        return false;
    };
    let lower = s.to_ascii_lowercase();
    KNOWN_PLACEHOLDERS.contains(&s) || PLACEHOLDER_WORDS.iter().any(|w| lower.contains(w))
}

/// Everything wrong with one value, as phrases that follow the key's location.
pub fn problems(spec: &SecretSpec, env: &Environment, v: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    if v.len() > MAX_SECRET_BYTES {
        out.push(format!(
            "is {} bytes; secrets must be under 500 KiB",
            v.len()
        ));
    }
    if spec.kind != Kind::File {
        if v.contains(&0) {
            out.push("contains a NUL byte, which no service reads back as written; remove it (only file secrets may hold binary data)".into());
        }
        if v.iter().any(|b| matches!(b, b'\n' | b'\r')) {
            out.push("contains a line break; put the value on one line (only file secrets, such as PEM files, may span lines)".into());
        }
    }
    out.extend(weaknesses(spec, env, v));
    match spec.kind {
        Kind::Username => {
            if v.iter().any(|b| {
                (b.is_ascii_whitespace() || b.is_ascii_control()) && !matches!(b, 0 | b'\n' | b'\r')
            }) {
                out.push("contains white space or control characters".into());
            }
        }
        Kind::File => {
            if spec.pem && !v.starts_with(b"-----BEGIN ") {
                out.push("is not PEM (it should start with -----BEGIN)".into());
            }
        }
        Kind::Password | Kind::Key | Kind::Derived => {}
    }
    out
}

/// The part of [`problems`] that says a value is weak (a placeholder, too
/// short, too simple) rather than malformed: what a rotation cures.
pub fn weaknesses(spec: &SecretSpec, env: &Environment, v: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    // Placeholders are whole values an operator typed: never looked for inside a
    // PEM body, where base64 spells "todo" about once in 500 keys.
    if matches!(spec.kind, Kind::Password | Kind::Key | Kind::Username) && is_placeholder(v) {
        out.push("is a placeholder or an example value; put a real value there".into());
    }
    if matches!(spec.kind, Kind::Password | Kind::Key) {
        let min = min_length(spec, env);
        if v.len() < min {
            out.push(format!(
                "is {} characters; {} needs at least {min}",
                v.len(),
                env.name
            ));
        } else if let Some(p) = strength_problem(v) {
            out.push(format!(
                "is too simple: it {p}; mix letters, digits and symbols, or generate one with `cargo xtask generate-secret`"
            ));
        }
    }
    out
}

/// Whether every problem of `v` is a weakness: the value is well-formed,
/// only not strong enough.
pub fn only_weak(spec: &SecretSpec, env: &Environment, v: &[u8]) -> bool {
    let all = problems(spec, env, v);
    !all.is_empty() && all.len() == weaknesses(spec, env, v).len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::manifest::Manifest;

    #[test]
    fn nul_bytes_and_line_breaks_are_refused_except_in_files() {
        let m = Manifest::parse("project='p'\n[environments.production]\nbackend='swarm'\n[secrets.pw]\nkind='password'\n[secrets.cert]\nkind='file'\npem=true\n").unwrap();
        let env = m.env("production").unwrap();
        let pw = m.secret("pw").unwrap();
        let p = problems(pw, env, b"Zq9xWv8uTs7rQp6o\nNm5lKj4iHg3fEd2c");
        assert!(p.iter().any(|x| x.contains("line break")), "{p:?}");
        let p = problems(pw, env, b"Zq9xWv8uTs7rQp6o\0Nm5lKj4iHg3fEd2c");
        assert!(p.iter().any(|x| x.contains("NUL byte")), "{p:?}");
        let cert = m.secret("cert").unwrap();
        // A PEM body may spell a placeholder word; it is not one.
        let pem = b"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADtodoANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n";
        assert!(problems(cert, env, pem).is_empty());
    }

    fn fixture() -> (SecretSpec, Environment, Environment) {
        let m = Manifest::parse(
            "project='p'\n[environments.production]\nbackend='swarm'\n[environments.develop]\nbackend='compose'\n[secrets.pw]\nkind='password'\n",
        )
        .unwrap();
        (
            m.secret("pw").unwrap().clone(),
            m.env("production").unwrap().clone(),
            m.env("develop").unwrap().clone(),
        )
    }

    #[test]
    fn length_depends_on_environment() {
        let (spec, prod, dev) = fixture();
        let v = b"Ab3dEf6hIj9kLm2o0q"; // 18 characters
        assert!(problems(&spec, &dev, v).is_empty());
        let p = problems(&spec, &prod, v);
        assert_eq!(p, ["is 18 characters; production needs at least 32"]);
    }

    #[test]
    fn simple_values_are_refused() {
        let (spec, prod, _) = fixture();
        assert!(problems(&spec, &prod, &[b'a'; 40])[0].contains("single character class"));
        assert!(
            problems(&spec, &prod, b"abababababababababababababab1212121")[0].contains("distinct")
        );
        assert!(
            problems(&spec, &prod, b"xK9mP2nQ7vL4zR8wE5tY1cA6sD3fG0hJ")[0].contains("placeholder")
        );
        assert!(
            problems(&spec, &prod, b"changeme-changeme-changeme-changeme-1A")[0]
                .contains("placeholder")
        );
    }

    #[test]
    fn problems_never_echo_the_value() {
        let (spec, prod, _) = fixture();
        for v in [&b"Secret-Short1"[..], &[b'q'; 64][..]] {
            for p in problems(&spec, &prod, v) {
                assert!(!p.contains(std::str::from_utf8(v).unwrap()), "{p}");
            }
        }
    }
}
