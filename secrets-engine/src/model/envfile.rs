//! Per-environment secret files in dotenv format.
//!
//! Values are parsed with `dotenvy::from_path_iter`, which never touches the
//! process environment, and kept as [`SecretValue`]s. dotenvy does not report
//! line numbers, so a light scan of the raw text maps keys to lines for messages.
//! Writing back keeps every existing line and replaces the file atomically.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

use crate::{disk::fsutil, model::secret::SecretValue};

/// One environment's env file as read: its values by key, where each sits,
/// and what a reader of the file should be warned about.
pub struct EnvFile {
    /// The file's path on disk.
    pub path: PathBuf,
    /// Display path, relative to the repository root where possible.
    pub shown: String,
    /// Whether the file was there ([`EnvFile::empty`] makes one that is not).
    pub exists: bool,
    /// The values by key; for a duplicated key, its last assignment.
    pub entries: BTreeMap<String, Entry>,
    /// Keys that appear more than once, with their lines.
    pub duplicates: Vec<(String, Vec<usize>)>,
    /// Keys whose raw value has a `$` outside single quotes (dotenv substitutes it).
    pub substituted: Vec<(String, usize)>,
    /// The file's text: it holds every value, so it is wiped on drop and kept out of `Debug`.
    raw: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for EnvFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvFile")
            .field("shown", &self.shown)
            .field("exists", &self.exists)
            .field("entries", &self.entries)
            .field("duplicates", &self.duplicates)
            .finish_non_exhaustive()
    }
}

/// One key's value in an env file.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The value as dotenv reads it (quotes removed, `$` substituted).
    pub value: SecretValue,
    /// Its 1-based line in the file, 0 when unknown.
    pub line: usize,
}

impl EnvFile {
    /// An env file that does not exist yet: every key is missing.
    pub fn empty(path: PathBuf, shown: String) -> EnvFile {
        EnvFile {
            path,
            shown,
            exists: false,
            entries: BTreeMap::new(),
            duplicates: Vec::new(),
            substituted: Vec::new(),
            raw: zeroize::Zeroizing::new(String::new()),
        }
    }

    /// Reads and parses the file at `path`; `shown` is its name in messages.
    /// An error means it is missing, unreadable, not UTF-8 or not dotenv.
    pub fn load(path: &Path, shown: String) -> Result<EnvFile> {
        let bytes = zeroize::Zeroizing::new(std::fs::read(path).with_context(|| {
            format!("cannot read {shown}; check that it exists and is readable by you")
        })?);
        let raw = zeroize::Zeroizing::new(decode(&shown, &path.display().to_string(), &bytes)?);
        let lines = key_lines(&raw);
        let iter = dotenvy::from_path_iter(path).with_context(|| format!("cannot open {shown}"))?;
        let mut entries = BTreeMap::new();
        let mut seen: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for item in iter {
            let (key, value) = match item {
                Ok(kv) => kv,
                Err(e) => return Err(parse_error(&shown, raw.as_str(), e)),
            };
            let occurrences = lines.get(&key).cloned().unwrap_or_default();
            let n = seen.entry(key.clone()).or_default();
            let line = occurrences.get(n.len()).copied().unwrap_or(0);
            n.push(line);
            entries.insert(
                key,
                Entry {
                    value: SecretValue::from_string(value),
                    line,
                },
            );
        }
        let duplicates = seen.into_iter().filter(|(_, l)| l.len() > 1).collect();
        let substituted = dollar_lines(&raw);
        Ok(EnvFile {
            path: path.to_path_buf(),
            shown,
            exists: true,
            entries,
            duplicates,
            substituted,
            raw,
        })
    }

    /// The file's text exactly as read (it holds values: never print it).
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// True when the file exists and holds no byte at all.
    pub fn is_blank(&self) -> bool {
        self.exists && self.raw.is_empty()
    }

    /// The entry for `key`, `None` when it is absent or empty.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key).filter(|e| !e.value.is_empty())
    }

    /// `file:line` for a key, for messages.
    pub fn at(&self, key: &str) -> String {
        match self.entries.get(key) {
            Some(e) if e.line > 0 => format!("{}:{}", self.shown, e.line),
            _ => self.shown.clone(),
        }
    }

    /// The text with `updates` applied: an existing `KEY=` line (empty value) is
    /// replaced in place, other keys are appended. Values must be dotenv-safe
    /// (generated values are URL-safe, so they need no quoting).
    pub fn render_with(
        &self,
        updates: &[(String, SecretValue)],
        header: &str,
    ) -> Result<zeroize::Zeroizing<String>> {
        let mut out =
            zeroize::Zeroizing::new(String::with_capacity(self.raw.len() + 64 * updates.len()));
        if self.raw.is_empty() {
            out.push_str(header);
        }
        let mut pending: Vec<&(String, SecretValue)> = updates.iter().collect();
        // Whole assignments are replaced, continuation lines of a quoted
        // multi-line value included; every other byte stays as it was.
        let mut at = 0;
        for sp in spans(&self.raw) {
            let Some(pos) = pending.iter().position(|(uk, _)| *uk == sp.key) else {
                continue;
            };
            out.push_str(&self.raw[at..sp.bytes.start]);
            let (k, v) = pending.remove(pos);
            push_assignment(&mut out, k, v)?;
            out.push('\n');
            at = sp.bytes.end;
        }
        out.push_str(&self.raw[at..]);
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        for (k, v) in pending {
            push_assignment(&mut out, k, v)?;
            out.push('\n');
        }
        Ok(out)
    }

    /// Writes the updates back atomically with mode 0600, then reloads.
    pub fn write_updates(&mut self, updates: &[(String, SecretValue)], header: &str) -> Result<()> {
        let text = self.render_with(updates, header)?;
        fsutil::write_atomic(&self.path, text.as_bytes(), 0o600, None)
            .with_context(|| format!("cannot write {}", self.shown))?;
        *self = EnvFile::load(&self.path, self.shown.clone())?;
        Ok(())
    }
}

fn push_assignment(out: &mut String, key: &str, value: &SecretValue) -> Result<()> {
    let Some(text) = value.expose_str() else {
        bail!("{key}: only text values can be written to an env file")
    };
    let plain = text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.@:/+=%,".contains(&b));
    out.push_str(key);
    out.push('=');
    if plain {
        out.push_str(text);
    } else if !text.contains(['\'', '\\', '\n', '\r']) {
        // Single quotes keep everything literal, `$` included.
        out.push('\'');
        out.push_str(text);
        out.push('\'');
    } else if !text.contains(['\n', '\r']) {
        // dotenv reads a backslash before a single quote as an escape even in
        // single quotes, so such values go in double quotes, escaped.
        out.push('"');
        for c in text.chars() {
            if matches!(c, '\\' | '"' | '$') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    } else {
        // A multi-line value (a PEM): double quotes keep line breaks, carriage
        // returns included, literally; only `\\`, `"` and `$` need escapes.
        out.push('"');
        for c in text.chars() {
            if matches!(c, '\\' | '"' | '$') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    Ok(())
}

/// Where one assignment sits in the raw text: its key, its first and last
/// line (1-based; more than one for a quoted multi-line value) and its bytes,
/// line endings included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// The assignment's key.
    pub key: String,
    /// Its first line, 1-based.
    pub first_line: usize,
    /// Its last line, 1-based (the first, unless a quoted value spans lines).
    pub last_line: usize,
    /// Its byte range in the raw text, line ending included.
    pub bytes: std::ops::Range<usize>,
}

/// Every assignment's [`Span`], in file order. Continuation lines of a quoted
/// multi-line value belong to the assignment that opened the quote.
pub fn spans(raw: &str) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::new();
    let mut open: Option<char> = None;
    let mut offset = 0;
    for (i, full) in raw.split_inclusive('\n').enumerate() {
        let start = offset;
        offset += full.len();
        let line = full.trim_end_matches('\n').trim_end_matches('\r');
        if let Some(q) = open {
            if let Some(last) = out.last_mut() {
                last.last_line = i + 1;
                last.bytes.end = offset;
            }
            if count_unescaped(line, q) % 2 == 1 {
                open = None;
            }
            continue;
        }
        if let Some(k) = line_key(line) {
            out.push(Span {
                key: k.to_string(),
                first_line: i + 1,
                last_line: i + 1,
                bytes: start..offset,
            });
            let value = line.split_once('=').map(|x| x.1.trim_start()).unwrap_or("");
            if let Some(q) = value.chars().next().filter(|c| *c == '"' || *c == '\'')
                && count_unescaped(&value[1..], q).is_multiple_of(2)
            {
                open = Some(q);
            }
        }
    }
    out
}

/// The key a line assigns, if it is an assignment line.
fn line_key(line: &str) -> Option<&str> {
    let t = line.trim_start();
    if t.starts_with('#') {
        return None;
    }
    let t = t.strip_prefix("export ").map(str::trim_start).unwrap_or(t);
    let (k, _) = t.split_once('=')?;
    let k = k.trim_end();
    let valid = !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
    valid.then_some(k)
}

/// Line numbers (1-based) at which each key is assigned.
fn key_lines(raw: &str) -> BTreeMap<String, Vec<usize>> {
    let mut out: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for sp in spans(raw) {
        out.entry(sp.key).or_default().push(sp.first_line);
    }
    out
}

fn count_unescaped(s: &str, q: char) -> usize {
    let mut n = 0;
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            escaped = false;
        } else if c == '\\' && q == '"' {
            escaped = true;
        } else if c == q {
            n += 1;
        }
    }
    n
}

/// Assignments whose value would be expanded when read: a `$` that starts
/// an expansion for dotenv (or compose), outside single quotes and not
/// escaped as `\$` (which dotenvy reads as a literal `$` in double quotes
/// and unquoted values, and which is how this tool writes a `$`).
fn dollar_lines(raw: &str) -> Vec<(String, usize)> {
    spans(raw)
        .into_iter()
        .filter(|sp| !dollars(value_text(&raw[sp.bytes.clone()])).is_empty())
        .map(|sp| (sp.key, sp.first_line))
        .collect()
}

/// The value's text of an assignment's span: everything after the first `=`,
/// leading blanks removed (quotes, escapes and a trailing comment kept).
pub(crate) fn value_text(span: &str) -> &str {
    span.split_once('=')
        .map(|x| x.1)
        .unwrap_or("")
        .trim_start_matches([' ', '\t'])
}

/// What a `$` in a value stands for, by compose's interpolation rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expansion {
    /// `$$`: a literal `$` for compose (dotenvy reads it otherwise).
    Dollar,
    /// `$NAME` or `${NAME}`, or `${NAME<op><word>}` with `op` one of
    /// `:-` `-` `:?` `?` `:+` `+`.
    Var {
        /// The variable's name.
        name: String,
        /// The operator and its word, when there is one.
        op: Option<(String, String)>,
    },
    /// A `$` compose cannot read (`$` before anything but a name, `$` or `{`,
    /// or an unterminated `${`).
    Invalid,
}

/// One `$` that expands, its byte range in the value's text and whether it
/// sits inside double quotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dollar {
    /// Its byte range in the value's text.
    pub range: std::ops::Range<usize>,
    /// Whether it sits inside double quotes.
    pub quoted: bool,
    /// What it stands for.
    pub what: Expansion,
}

/// Every `$` of a value's text ([`value_text`]) that dotenv or compose would
/// expand, reading quotes and escapes as dotenvy does: nothing in single
/// quotes, nothing escaped by a backslash, and an unquoted value ends at a
/// blank (what follows is a comment).
pub(crate) fn dollars(text: &str) -> Vec<Dollar> {
    let mut out = Vec::new();
    let (mut strong, mut weak, mut escaped) = (false, false, false);
    let mut it = text.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        if escaped {
            escaped = false;
        } else if strong {
            strong = c != '\'';
        } else if c == '$' {
            let rest = &text[i + 1..];
            let (len, what) = if rest.starts_with('$') {
                (2, Expansion::Dollar)
            } else if let Some(body) = rest.strip_prefix('{') {
                match body.find('}') {
                    Some(end) => {
                        let inner = &body[..end];
                        let n = name_len(inner);
                        let what = if n == 0 {
                            Expansion::Invalid
                        } else {
                            let (name, tail) = inner.split_at(n);
                            let op = [":-", ":?", ":+", "-", "?", "+"]
                                .into_iter()
                                .find(|o| tail.starts_with(o));
                            match (op, tail.is_empty()) {
                                (_, true) => Expansion::Var {
                                    name: name.into(),
                                    op: None,
                                },
                                (Some(o), _) => Expansion::Var {
                                    name: name.into(),
                                    op: Some((o.into(), tail[o.len()..].into())),
                                },
                                (None, _) => Expansion::Invalid,
                            }
                        };
                        (end + 3, what)
                    }
                    None => (text.len() - i, Expansion::Invalid),
                }
            } else {
                match name_len(rest) {
                    0 => (1, Expansion::Invalid),
                    n => (
                        n + 1,
                        Expansion::Var {
                            name: rest[..n].into(),
                            op: None,
                        },
                    ),
                }
            };
            out.push(Dollar {
                range: i..i + len,
                quoted: weak,
                what,
            });
            while it.peek().is_some_and(|(j, _)| *j < i + len) {
                it.next();
            }
        } else if weak {
            match c {
                '"' => weak = false,
                '\\' => escaped = true,
                _ => {}
            }
        } else {
            match c {
                '\'' => strong = true,
                '"' => weak = true,
                '\\' => escaped = true,
                ' ' | '\t' | '\r' | '\n' => break,
                _ => {}
            }
        }
    }
    out
}

/// The length of the variable name at the start of `s` (`[A-Za-z_][A-Za-z0-9_]*`).
fn name_len(s: &str) -> usize {
    if !s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        return 0;
    }
    s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len())
}

/// dotenvy's parse error carries the offending line's text, which may hold a
/// value: report only its line number.
fn parse_error(shown: &str, raw: &str, e: dotenvy::Error) -> anyhow::Error {
    match e {
        dotenvy::Error::LineParse(text, col) => {
            let line = raw
                .find(text.as_str())
                .map(|off| raw[..off].matches('\n').count() + 1);
            let at = line
                .map(|l| format!("{shown}:{l}"))
                .unwrap_or_else(|| shown.to_string());
            anyhow::anyhow!(
                "{at}: cannot parse this line (at column {}); write KEY=VALUE, and put values with spaces, '#' or quotes in single quotes",
                col + 1
            )
        }
        dotenvy::Error::Io(io) => anyhow::anyhow!("cannot read {shown}: {io}"),
        _ => anyhow::anyhow!("cannot parse {shown}; check it is KEY=VALUE lines in UTF-8"),
    }
}

/// The file's bytes as text, or an error naming the line and the fix: a
/// byte-order mark (dotenv would read it as part of the first key) or bytes
/// that are not UTF-8 (a binary file, or another encoding).
fn decode(shown: &str, path: &str, bytes: &[u8]) -> Result<String> {
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        bail!(
            "{shown}:1: the file starts with a UTF-8 byte-order mark, which dotenv would read as part of the first key; save it without one (`sed -i '1s/^\\xEF\\xBB\\xBF//' {path}`)"
        );
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s.to_string()),
        Err(e) => {
            let at = e.valid_up_to();
            let line = bytes[..at].iter().filter(|b| **b == b'\n').count() + 1;
            bail!(
                "{shown}:{line}: not UTF-8 text (an invalid byte 0x{:02x}); an env file is UTF-8 text: convert it (`iconv -f LATIN1 -t UTF-8`) or, for binary material, name a file secret's file instead",
                bytes[at]
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<EnvFile> {
        let dir = crate::testutil::TempDir::new();
        let p = dir.path().join("t.env");
        std::fs::write(&p, text).unwrap();
        EnvFile::load(&p, "t.env".into())
    }

    fn val(f: &EnvFile, k: &str) -> String {
        f.get(k).unwrap().value.expose_str().unwrap().to_string()
    }

    #[test]
    fn parses_quotes_comments_export_and_crlf() {
        let f = load_text(
            "# comment\r\nexport A=plain\r\nB='single # not comment'\r\nC=\"double\\nline\"\r\nD=value # trailing comment\r\n\r\nE=\r\n",
        )
        .unwrap();
        assert_eq!(val(&f, "A"), "plain");
        assert_eq!(val(&f, "B"), "single # not comment");
        assert_eq!(val(&f, "C"), "double\nline");
        assert_eq!(val(&f, "D"), "value");
        assert!(f.get("E").is_none(), "empty counts as missing");
        assert_eq!(f.at("B"), "t.env:3");
        assert_eq!(f.at("E"), "t.env:7");
    }

    #[test]
    fn multiline_values_keep_line_numbers_right() {
        let f = load_text("A=\"one\nB=not-a-key\nthree\"\nC=c\n").unwrap();
        assert_eq!(val(&f, "A"), "one\nB=not-a-key\nthree");
        assert_eq!(f.at("C"), "t.env:4");
        assert!(f.get("B").is_none());
    }

    #[test]
    fn parse_errors_give_the_line_not_the_value() {
        let e = load_text("A=ok\nB='unterminated-SECRETVALUE\n").unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("t.env:2"), "{msg}");
        assert!(!msg.contains("SECRETVALUE"), "{msg}");
    }

    #[test]
    fn duplicates_and_dollar_signs_are_reported() {
        let f = load_text("A=1\nB=x$HOME\nA=2\nC='$lit'\n").unwrap();
        assert_eq!(f.duplicates, vec![("A".to_string(), vec![1, 3])]);
        assert_eq!(f.substituted, vec![("B".to_string(), 2)]);
    }

    /// dotenvy reads `\$` as a literal `$` in double quotes and unquoted, and
    /// expands an unescaped `$HOME` from the process environment: the tool's
    /// own quoting (`\$` in double quotes) is literal and draws no warning.
    #[test]
    fn escaped_dollars_are_literal_for_dotenvy_and_not_warned_about() {
        let f =
            load_text("A=\"pa\\$HOME'x\"\nB=pa\\$HOME\nC=\"pa$HOME x\"\nD='pa$HOME'\n").unwrap();
        assert_eq!(val(&f, "A"), "pa$HOME'x");
        assert_eq!(val(&f, "B"), "pa$HOME");
        if std::env::var_os("HOME").is_some() {
            assert_ne!(val(&f, "C"), "pa$HOME x", "dotenvy expands an unescaped $");
        }
        assert_eq!(val(&f, "D"), "pa$HOME");
        assert_eq!(f.substituted, vec![("C".to_string(), 3)]);

        // Values the tool writes come back byte for byte and are not warned about.
        let values = [
            "it's $5\\now",
            "a$b",
            "x\"$y\"",
            "-----BEGIN-----\n$abc\r\n-----END-----",
        ];
        let updates: Vec<(String, SecretValue)> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("K{i}"), SecretValue::from_string(v.to_string())))
            .collect();
        let dir = crate::testutil::TempDir::new();
        let mut w = EnvFile::empty(dir.path().join("w.env"), "w.env".into());
        w.write_updates(&updates, "").unwrap();
        for (i, v) in values.iter().enumerate() {
            assert_eq!(val(&w, &format!("K{i}")), *v);
        }
        assert!(w.substituted.is_empty(), "{:?}", w.substituted);
    }

    #[test]
    fn dollars_are_found_as_compose_reads_them() {
        let kinds =
            |t: &str| -> Vec<Expansion> { dollars(t).into_iter().map(|d| d.what).collect() };
        let var = |n: &str, op: Option<(&str, &str)>| Expansion::Var {
            name: n.into(),
            op: op.map(|(a, b)| (a.into(), b.into())),
        };
        assert_eq!(kinds("a$$b"), [Expansion::Dollar]);
        assert_eq!(
            kinds("x${DB_PASS}y$USER_1.z"),
            [var("DB_PASS", None), var("USER_1", None)]
        );
        assert_eq!(kinds("${A:-d e}"), [var("A", Some((":-", "d e")))]);
        assert_eq!(
            kinds("${A-d}${B:?no}${C+w}"),
            [
                var("A", Some(("-", "d"))),
                var("B", Some((":?", "no"))),
                var("C", Some(("+", "w")))
            ]
        );
        assert_eq!(kinds("a$-b"), [Expansion::Invalid]);
        assert_eq!(kinds("${A"), [Expansion::Invalid]);
        assert_eq!(kinds("'$A'\\$B\"\\$C\""), []);
        assert_eq!(kinds("plain # $COMMENT"), []);
        let d = dollars("\"a $B\"");
        assert!(d[0].quoted && d[0].range == (3..5), "{d:?}");
    }

    #[test]
    fn render_replaces_empty_lines_in_place_and_appends() {
        let f = load_text("# keep\nA=\nB=b\n").unwrap();
        let out = f
            .render_with(
                &[
                    ("A".into(), SecretValue::from_string("new".into())),
                    ("Z".into(), SecretValue::from_string("z z".into())),
                ],
                "",
            )
            .unwrap();
        assert_eq!(out.as_str(), "# keep\nA=new\nB=b\nZ='z z'\n");
    }

    #[test]
    fn render_replaces_a_multi_line_value_whole() {
        let f = load_text("A=a\nK=\"-----BEGIN X-----\nabc\n-----END X-----\"\n# after\nB=b\n")
            .unwrap();
        let out = f
            .render_with(
                &[("K".into(), SecretValue::from_string("x/k.pem".into()))],
                "",
            )
            .unwrap();
        assert_eq!(out.as_str(), "A=a\nK=x/k.pem\n# after\nB=b\n");
    }

    #[test]
    fn written_file_is_0600_and_reloads() {
        use std::os::unix::fs::PermissionsExt;
        let dir = crate::testutil::TempDir::new();
        let p = dir.path().join("new.env");
        let mut f = EnvFile::empty(p.clone(), "new.env".into());
        f.write_updates(
            &[("K".into(), SecretValue::from_string("v".into()))],
            "# header\n",
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "# header\nK=v\n");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(val(&f, "K"), "v");
    }
}
