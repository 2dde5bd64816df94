//! Masking secret values in a stream of output, as `run` does with its
//! child's stdout and stderr: every form of every value ([`crate::model::forms`]:
//! plain, other line endings, percent-encoded, base64 in both alphabets,
//! padded or not) becomes `<redacted:NAME>`.
//!
//! Pure and streaming: [`Masker::push`] takes what the child wrote and gives
//! back what may be written now. A value split across two writes is caught
//! because the end of a chunk that could still grow into a value (a proper
//! prefix of some form) is held back, at most the longest form less one byte;
//! [`Masker::flush`] lets it go (the caller does so after [`FLUSH_AFTER`]
//! without more output, and at the end). Everything else passes at once, so
//! lines are not delayed.

use std::time::Duration;

use base64::Engine;
use zeroize::Zeroizing;

/// Values shorter than this are not masked: a short value (a port, `admin`)
/// turns up by chance in ordinary output, which masking would mangle.
pub const MIN_MASKED: usize = 6;

/// How long a held-back partial match waits for the rest of a value.
pub const FLUSH_AFTER: Duration = Duration::from_millis(100);

/// Every form of every value, grouped by their first two bytes (every form
/// has at least [`MIN_MASKED`]), and by the first alone for the last byte of
/// a chunk.
pub struct Needles {
    /// (form, replacement), the forms wiped on drop.
    list: Vec<(Zeroizing<Vec<u8>>, Vec<u8>)>,
    by_first: Vec<Vec<usize>>,
    by_two: Vec<Vec<usize>>,
}

impl Needles {
    /// From (name, value) pairs. Returns the needles and the names of the
    /// values too short to mask (see [`MIN_MASKED`]).
    pub fn new<'a>(values: impl IntoIterator<Item = (String, &'a [u8])>) -> (Needles, Vec<String>) {
        let mut list: Vec<(Zeroizing<Vec<u8>>, Vec<u8>)> = Vec::new();
        let mut short = Vec::new();
        for (name, value) in values {
            if value.len() < MIN_MASKED {
                short.push(name);
                continue;
            }
            let replacement = format!("<redacted:{name}>").into_bytes();
            for bytes in mask_forms(value) {
                if !list.iter().any(|(b, _)| **b == *bytes) {
                    list.push((bytes, replacement.clone()));
                }
            }
        }
        let mut by_first = vec![Vec::new(); 256];
        let mut by_two = vec![Vec::new(); 1 << 16];
        for (i, (b, _)) in list.iter().enumerate() {
            by_first[b[0] as usize].push(i);
            by_two[pair(b[0], b[1])].push(i);
        }
        (
            Needles {
                list,
                by_first,
                by_two,
            },
            short,
        )
    }

    /// Whether there is nothing to mask (no value long enough to look for).
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The most a [`Masker`] holds back: the longest form less one byte.
    #[cfg(test)]
    pub fn max_held(&self) -> usize {
        let longest = self.list.iter().map(|(b, _)| b.len()).max().unwrap_or(0);
        longest.saturating_sub(1)
    }
}

fn pair(a: u8, b: u8) -> usize {
    (a as usize) << 8 | b as usize
}

/// [`crate::model::forms::forms`] (which finds a value inside longer base64 text by
/// the characters that depend on it alone), plus the whole base64 of the
/// value on its own, padded and not, so that its last characters and padding
/// go too.
fn mask_forms(value: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let mut out: Vec<Zeroizing<Vec<u8>>> = crate::model::forms::forms(value)
        .into_iter()
        .map(|(_, b)| b)
        .filter(|b| b.len() >= 2)
        .collect();
    for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
        out.push(Zeroizing::new(engine.encode(value).into_bytes()));
    }
    out
}

/// One stream's state: the bytes held back at the end of the last chunk.
pub struct Masker<'a> {
    needles: &'a Needles,
    held: Zeroizing<Vec<u8>>,
}

impl<'a> Masker<'a> {
    /// A stream that masks `needles`, holding nothing back yet.
    pub fn new(needles: &'a Needles) -> Masker<'a> {
        Masker {
            needles,
            held: Zeroizing::new(Vec::new()),
        }
    }

    /// Whether bytes are held back, waiting for more.
    pub fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Takes a chunk; returns what can be written now, every complete form
    /// replaced, a possible beginning of one at the end held back.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.held.extend_from_slice(chunk);
        self.process(false)
    }

    /// Everything held, as it is (a beginning that never completed).
    pub fn flush(&mut self) -> Vec<u8> {
        self.process(true)
    }

    /// Leftmost-longest replacement over the held bytes. Unless `last`, stops
    /// at the first position where a form could still complete.
    fn process(&mut self, last: bool) -> Vec<u8> {
        let buf = &self.held;
        let mut out = Vec::with_capacity(buf.len());
        let (mut i, mut from) = (0, 0);
        while i < buf.len() {
            let rest = &buf[i..];
            let mut best: Option<usize> = None;
            let mut partial = false;
            let candidates = match rest {
                [a, b, ..] => &self.needles.by_two[pair(*a, *b)],
                _ => &self.needles.by_first[buf[i] as usize],
            };
            for &n in candidates {
                let form = &self.needles.list[n].0;
                if rest.starts_with(form) {
                    if best.is_none_or(|b| self.needles.list[b].0.len() < form.len()) {
                        best = Some(n);
                    }
                } else if !last && rest.len() < form.len() && form.starts_with(rest) {
                    partial = true;
                }
            }
            if partial {
                break;
            }
            match best {
                Some(n) => {
                    out.extend_from_slice(&buf[from..i]);
                    out.extend_from_slice(&self.needles.list[n].1);
                    i += self.needles.list[n].0.len();
                    from = i;
                }
                None => i += 1,
            }
        }
        out.extend_from_slice(&buf[from..i]);
        let rest = Zeroizing::new(buf[i..].to_vec());
        self.held = rest;
        out
    }
}

#[cfg(test)]
mod tests {
    use base64::{
        Engine,
        engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD},
    };

    use super::*;

    const V: &[u8] = b"s3cr3t/value+with?odd>bytes~~";

    fn needles() -> Needles {
        Needles::new([
            ("JWT_SECRET".to_string(), V),
            ("SHORT".to_string(), b"abc".as_slice()),
        ])
        .0
    }

    fn masked(n: &Needles, chunks: &[&[u8]]) -> String {
        let mut m = Masker::new(n);
        let mut out = Vec::new();
        for c in chunks {
            out.extend(m.push(c));
        }
        out.extend(m.flush());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_form_is_replaced_and_short_values_are_named() {
        let (n, short) = Needles::new([
            ("JWT_SECRET".to_string(), V),
            ("SHORT".to_string(), b"abc".as_slice()),
        ]);
        assert_eq!(short, ["SHORT"]);
        let forms = [
            String::from_utf8(V.to_vec()).unwrap(),
            STANDARD.encode(V),
            URL_SAFE.encode(V),
            URL_SAFE_NO_PAD.encode(V),
            "s3cr3t%2Fvalue%2Bwith%3Fodd%3Ebytes~~".to_string(),
            "s3cr3t%2fvalue%2bwith%3fodd%3ebytes~~".to_string(),
        ];
        for f in forms {
            let text = format!("before {f} after abc\n");
            assert_eq!(
                masked(&n, &[text.as_bytes()]),
                "before <redacted:JWT_SECRET> after abc\n",
                "{f}"
            );
        }
        // Inside longer base64 text, at another alignment.
        let mut data = b"x".to_vec();
        data.extend_from_slice(V);
        let text = STANDARD.encode(&data);
        let out = masked(&n, &[text.as_bytes()]);
        assert!(out.contains("<redacted:JWT_SECRET>"), "{out}");
    }

    #[test]
    fn a_value_split_across_writes_is_caught_and_plain_lines_pass_at_once() {
        let n = needles();
        for cut in 1..V.len() {
            let mut first = b"line one\nand ".to_vec();
            first.extend_from_slice(&V[..cut]);
            let mut second = V[cut..].to_vec();
            second.extend_from_slice(b" end\n");
            assert_eq!(
                masked(&n, &[&first, &second]),
                "line one\nand <redacted:JWT_SECRET> end\n"
            );
        }
        let mut m = Masker::new(&n);
        assert_eq!(m.push(b"a whole line\n"), b"a whole line\n");
        assert!(!m.holding());
        // A beginning of a value is held, at most the longest form less one.
        let out = m.push(&V[..10]);
        assert!(out.is_empty() && m.holding());
        assert_eq!(m.flush(), &V[..10], "a beginning that never completed");
        assert!(n.max_held() >= V.len() - 1);
        let mut m = Masker::new(&n);
        let long = V[..V.len() - 1].repeat(3);
        let out = m.push(&long);
        assert!(m.held.len() <= n.max_held());
        assert_eq!(out.len() + m.held.len(), long.len());
    }
}
