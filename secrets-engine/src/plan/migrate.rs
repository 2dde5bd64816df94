//! Planning `migrate-env-to-secrets`: which lines of a plain `.env` are
//! secrets the manifest describes, what moves into the target environment's
//! env file, what conflicts with it, and the source text without the moved
//! lines. Pure: parsed files in, a plan out; the command does the writing.

use std::collections::BTreeMap;

use percent_encoding::percent_decode_str;

use crate::{
    model::envfile::{self, EnvFile, Expansion, Span},
    model::manifest::{Encoding, Environment, Kind, Manifest, SecretSpec},
    model::secret::SecretValue,
    model::validate,
    plan::resolve::FINGERPRINT_KEY,
};

/// One line of the plan, as printed (never a value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The env-file key moved.
    pub key: String,
    /// The manifest's secret it becomes.
    pub secret: String,
    /// `file:line` of the value in the source.
    pub from: String,
    /// What happens: "moved", "already in `<target>`", "taken from DATABASE_URL".
    pub how: String,
}

/// The plan of `migrate-env-to-secrets`: what moves from a plain `.env` into
/// the target environment's env file, and what stops it.
#[derive(Debug, Default)]
pub struct Migration {
    /// Keys and values to add to the target env file, in source order.
    pub writes: Vec<(String, SecretValue)>,
    /// One line per key, for the printed plan.
    pub moves: Vec<Move>,
    /// Source lines to remove (moved values and recognised derived URLs).
    pub remove: Vec<Span>,
    /// The manifest's secrets the source held (for the compose changes).
    pub secrets: Vec<String>,
    /// Credential-looking keys the manifest cannot describe: key, `file:line`,
    /// and the manifest entry to add.
    pub unknown: Vec<(String, String, String)>,
    /// Different values in source and target: nothing may be written.
    pub conflicts: Vec<String>,
    /// Inconsistencies within the source: nothing may be written.
    pub problems: Vec<String>,
    /// What the operator should know but need not stop for.
    pub warnings: Vec<String>,
}

impl Migration {
    /// Whether anything would change at all.
    pub fn changes(&self) -> bool {
        !self.writes.is_empty() || !self.remove.is_empty()
    }

    /// Everything that forbids writing, conflicts first.
    pub fn blockers(&self) -> Vec<String> {
        self.conflicts
            .iter()
            .chain(&self.problems)
            .cloned()
            .collect()
    }
}

/// The suffixes that make a key look like a credential.
const SUFFIXES: [&str; 5] = ["_PASSWORD", "_PASS", "_SECRET", "_KEY", "_TOKEN"];

/// Whether a key or its value looks like a credential: a suffix from
/// `SUFFIXES`, or a URL with a password in it.
pub fn looks_like_credential(key: &str, value: &[u8]) -> bool {
    let k = key.to_ascii_uppercase();
    SUFFIXES.iter().any(|s| k.ends_with(s)) || url_has_password(value)
}

/// `scheme://user:password@host...` with a non-empty password.
pub fn url_has_password(value: &[u8]) -> bool {
    let Ok(v) = std::str::from_utf8(value) else {
        return false;
    };
    let Some((_, rest)) = v.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    match authority.rsplit_once('@') {
        Some((userinfo, _)) => userinfo.split_once(':').is_some_and(|(_, p)| !p.is_empty()),
        None => false,
    }
}

/// The `[secrets.<name>]` table to add to deploy/secrets.toml for `key`.
pub fn manifest_entry(key: &str, value: &[u8]) -> String {
    let name = key.to_ascii_lowercase();
    let kind = if url_has_password(value) {
        "kind = \"key\"   # a URL with a password; or kind = \"derived\" with a template of its parts"
    } else if name.ends_with("_password") || name.ends_with("_pass") {
        "kind = \"password\""
    } else {
        "kind = \"key\""
    };
    format!("[secrets.{name}]\n{kind}\nservices = []   # the services that read it")
}

enum Token {
    Lit(String),
    Part(String),
}

/// The template as literals and parts, with `{project}` and `{env}` filled in.
fn tokens(template: &str, project: &str, env: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        lit.push_str(&rest[..i]);
        if rest[i..].starts_with("{{") || rest[i..].starts_with("}}") {
            lit.push_str(&rest[i..i + 1]);
            rest = &rest[i + 2..];
            continue;
        }
        let Some(j) = rest[i..].find('}') else { break };
        match &rest[i + 1..i + j] {
            "project" => lit.push_str(project),
            "env" => lit.push_str(env),
            name => {
                out.push(Token::Lit(std::mem::take(&mut lit)));
                out.push(Token::Part(name.to_string()));
            }
        }
        rest = &rest[i + j + 1..];
    }
    lit.push_str(rest);
    out.push(Token::Lit(lit));
    out
}

/// The parts of a derived value, read back through its template (decoded
/// unless the template says `encoding = "none"`); `None` when the value does
/// not have the template's shape.
pub fn parts_of(
    spec: &SecretSpec,
    project: &str,
    env: &str,
    value: &str,
) -> Option<BTreeMap<String, String>> {
    let toks = tokens(spec.template.as_deref()?, project, env);
    let mut out = BTreeMap::new();
    let mut pos = 0;
    for (i, t) in toks.iter().enumerate() {
        match t {
            Token::Lit(l) => {
                if !value[pos..].starts_with(l.as_str()) {
                    return None;
                }
                pos += l.len();
            }
            Token::Part(name) => {
                let end = match toks.get(i + 1) {
                    Some(Token::Lit(next)) if !next.is_empty() => pos + value[pos..].find(next)?,
                    _ => value.len(),
                };
                let raw = &value[pos..end];
                let part = match spec.encoding {
                    Encoding::Url => percent_decode_str(raw).decode_utf8().ok()?.into_owned(),
                    Encoding::None => raw.to_string(),
                };
                if out
                    .insert(name.clone(), part.clone())
                    .is_some_and(|p| p != part)
                {
                    return None;
                }
                pos = end;
            }
        }
    }
    (pos == value.len()).then_some(out)
}

/// Where a key is, for messages.
fn at(file: &EnvFile, line: usize) -> String {
    format!("{}:{line}", file.shown)
}

/// Plans the migration of `source` into `target` (the env file of `env`),
/// with this process's environment standing for the shell that ran compose.
pub fn plan(
    manifest: &Manifest,
    env: &Environment,
    source: &EnvFile,
    target: &EnvFile,
) -> Migration {
    plan_with(manifest, env, source, target, &|k: &str| {
        std::env::var_os(k).is_some()
    })
}

/// What the application read for one assignment of the plain file.
#[derive(Debug)]
enum Read {
    /// No expansion: dotenvy's value is compose's.
    Plain,
    /// Expanded by compose's rules from the file itself, with notes on how.
    Expanded(SecretValue, Vec<String>),
    /// Cannot be known here: why (names and places only, never a value).
    Unknown(String),
}

/// Each assignment's value as compose read it from the plain file for
/// interpolation, in file order: `$$` is a literal `$`; `${VAR}`, `$VAR`
/// and `${VAR:-default}` (and `-`, `:?`, `?`, `:+`, `+`) take `VAR` from a
/// line above. Compose takes `VAR` from its own shell first, so a `VAR` set
/// in this shell, or set neither here nor above (empty, or the shell's, at
/// the time compose ran), cannot be known.
fn compose_reads(
    source: &EnvFile,
    spans: &[Span],
    shell: &dyn Fn(&str) -> bool,
) -> BTreeMap<String, Read> {
    // Key → its line and, when known, the value compose read.
    let mut earlier: BTreeMap<String, (usize, Option<String>)> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for sp in spans {
        let text = envfile::value_text(&source.raw()[sp.bytes.clone()]);
        let read = if envfile::dollars(text).is_empty() {
            Read::Plain
        } else {
            match expand(&source.shown, text, &earlier, shell) {
                Ok((v, notes)) => Read::Expanded(SecretValue::from_string(v), notes),
                Err(why) => Read::Unknown(why),
            }
        };
        let known = match &read {
            Read::Plain => source
                .entries
                .get(&sp.key)
                .and_then(|e| e.value.expose_str())
                .map(str::to_string),
            Read::Expanded(v, _) => v.expose_str().map(str::to_string),
            Read::Unknown(_) => None,
        };
        earlier.insert(sp.key.clone(), (sp.first_line, known));
        out.insert(sp.key.clone(), read);
    }
    out
}

/// The value of `text` (a value's text in `file`) with each expansion done
/// by compose's rules from `earlier`; `Err` says why it cannot be known.
fn expand(
    file: &str,
    text: &str,
    earlier: &BTreeMap<String, (usize, Option<String>)>,
    shell: &dyn Fn(&str) -> bool,
) -> Result<(String, Vec<String>), String> {
    let mut notes = Vec::new();
    let mut rewritten = String::with_capacity(text.len());
    let mut pos = 0;
    for d in envfile::dollars(text) {
        let with = match &d.what {
            Expansion::Dollar => "$".to_string(),
            Expansion::Invalid => {
                return Err(
                    "it holds a `$` that compose cannot read (compose writes a literal `$` as `$$`)"
                        .into(),
                );
            }
            Expansion::Var { name, op } => {
                let word = op.as_ref().map(|(o, w)| (o.as_str(), w.as_str()));
                if word.is_some_and(|(_, w)| w.contains('$')) {
                    return Err(format!(
                        "the default or alternative of ${{{name}}} holds another `$`"
                    ));
                }
                if shell(name) {
                    return Err(format!(
                        "it refers to ${{{name}}}, which is set in this shell's environment; compose takes a variable from the shell that runs it before the file, so the value depends on that shell"
                    ));
                }
                match (earlier.get(name), word) {
                    (Some((line, Some(v))), _) => {
                        notes.push(format!("${{{name}}} from {file}:{line}"));
                        match word {
                            Some((":-", w)) if v.is_empty() => w.to_string(),
                            Some((":+", w)) if !v.is_empty() => w.to_string(),
                            Some((":+", _)) => String::new(),
                            Some(("+", w)) => w.to_string(),
                            Some((":?", _)) if v.is_empty() => {
                                return Err(format!(
                                    "it requires ${{{name}}} (`:?`), which {file}:{line} leaves empty, so compose refused to start"
                                ));
                            }
                            _ => v.clone(),
                        }
                    }
                    (Some((line, None)), _) => {
                        return Err(format!(
                            "it refers to ${{{name}}} ({file}:{line}), whose own value cannot be known"
                        ));
                    }
                    (None, Some((":-" | "-", w))) => {
                        notes.push(format!(
                            "the default of ${{{name}}}, which {file} does not set above"
                        ));
                        w.to_string()
                    }
                    (None, _) => {
                        return Err(format!(
                            "it refers to ${{{name}}}, which {file} does not set above it; compose put nothing there (or the value of the shell it ran from)"
                        ));
                    }
                }
            }
        };
        rewritten.push_str(&text[pos..d.range.start]);
        for c in with.chars() {
            match (d.quoted, c) {
                (true, '\\' | '"' | '$') | (false, '\\' | '\'' | '"' | '$' | ' ') => {
                    rewritten.push('\\');
                    rewritten.push(c);
                }
                (false, '\n') => rewritten.push_str("\\n"),
                (false, '\t' | '\r') => {
                    return Err("an expansion gives a tab or carriage return outside quotes".into());
                }
                _ => rewritten.push(c),
            }
        }
        pos = d.range.end;
    }
    rewritten.push_str(&text[pos..]);
    // dotenvy reads the quotes and escapes; no `$` is left to expand.
    let line = zeroize::Zeroizing::new(format!("K={rewritten}"));
    match dotenvy::from_read_iter(line.as_bytes()).next() {
        Some(Ok((_, v))) => Ok((v, notes)),
        _ => Err("it cannot be read once expanded".into()),
    }
}

/// Plans the migration, with `shell` telling which variables the shell that
/// runs compose sets (they take precedence over the plain file).
pub fn plan_with(
    manifest: &Manifest,
    env: &Environment,
    source: &EnvFile,
    target: &EnvFile,
    shell: &dyn Fn(&str) -> bool,
) -> Migration {
    let mut m = Migration::default();
    for (k, lines) in &source.duplicates {
        let l: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        m.problems.push(format!(
            "{}: {k} is set more than once (lines {}); keep one line",
            source.shown,
            l.join(", ")
        ));
    }
    let specs = manifest.secrets_for(&env.name);
    let spans = envfile::spans(source.raw());
    let reads = compose_reads(source, &spans, shell);
    // Part keys taken from a derived URL: key → (value, the URL's place).
    let mut from_url: Vec<(String, String, SecretValue, String)> = Vec::new();
    for sp in &spans {
        let Some(e) = source.entries.get(&sp.key) else {
            continue;
        };
        let place = at(source, sp.first_line);
        let spec = specs.iter().find(|s| s.env_key() == sp.key);
        // The value the application read: compose's reading of the file.
        let mut e = e.clone();
        if spec.is_some() {
            match reads.get(&sp.key) {
                Some(Read::Expanded(v, notes)) => {
                    m.warnings.push(format!(
                        "{place}: {} is expanded as compose read it ({}), assuming the shell that ran compose did not set those variables; check the value moved",
                        sp.key,
                        notes.join(", ")
                    ));
                    e.value = v.clone();
                }
                Some(Read::Unknown(why)) => {
                    m.problems.push(format!(
                        "{place}: {}: {why}; what the application read cannot be known, so nothing is moved: write the value it should get in single quotes ({}='...', where `$` is literal) and run again",
                        sp.key, sp.key
                    ));
                    continue;
                }
                _ => {}
            }
            if shell(&sp.key) {
                m.warnings.push(format!(
                    "{place}: {} is also set in this shell's environment, and compose takes the shell's value before {}'s: if compose ran from such a shell, the application read that one; the value moved is the file's",
                    sp.key, source.shown
                ));
            }
        }
        if e.value.is_empty() {
            if spec.is_some() || looks_like_credential(&sp.key, b"") {
                m.warnings.push(format!(
                    "{place}: {} is empty: nothing to move, left in place",
                    sp.key
                ));
            }
            continue;
        }
        match spec {
            Some(spec) if spec.kind == Kind::Derived => derived(
                &mut m,
                manifest,
                env,
                source,
                spec,
                sp,
                &e.value,
                &mut from_url,
            ),
            Some(spec) => {
                if spec.kind == Kind::File {
                    m.warnings.push(format!(
                        "{place}: {} names a file; the path is read relative to {}'s folder from now on",
                        sp.key, target.shown
                    ));
                }
                add(
                    &mut m,
                    env,
                    target,
                    spec,
                    sp.key.clone(),
                    e.value.clone(),
                    place,
                    "moved",
                );
                m.remove.push(sp.clone());
            }
            None if sp.key == FINGERPRINT_KEY => {}
            None => {
                if let Some(s) = manifest.secrets.iter().find(|s| s.env_key() == sp.key) {
                    m.warnings.push(format!(
                        "{place}: {} is the secret {} of deploy/secrets.toml, which is not used in {}; left in place",
                        sp.key, s.name, env.name
                    ));
                } else if looks_like_credential(&sp.key, e.value.expose()) {
                    m.unknown.push((
                        sp.key.clone(),
                        place,
                        manifest_entry(&sp.key, e.value.expose()),
                    ));
                }
            }
        }
    }
    for (key, secret, value, place) in from_url {
        if let Some(spec) = specs.iter().find(|s| s.name == secret) {
            add(
                &mut m,
                env,
                target,
                spec,
                key,
                value,
                place,
                "taken from the URL",
            );
        }
    }
    m.warnings.extend(dangling(source, &spans, &m.remove));
    m
}

/// Lines that stay in the source but expand a moved key (`$KEY`, `${KEY}`,
/// `${KEY:-x}`; not in single quotes nor escaped): dotenv and compose would
/// give them another value once it is gone.
fn dangling(source: &EnvFile, spans: &[Span], removed: &[Span]) -> Vec<String> {
    let mut out = Vec::new();
    for sp in spans.iter().filter(|s| !removed.contains(s)) {
        let text = envfile::value_text(&source.raw()[sp.bytes.clone()]);
        let names: Vec<String> = envfile::dollars(text)
            .into_iter()
            .filter_map(|d| match d.what {
                Expansion::Var { name, .. } => Some(name),
                _ => None,
            })
            .collect();
        for r in removed {
            let k = &r.key;
            if names.contains(k) {
                out.push(format!(
                    "{}:{}: {} refers to ${k}, which moves out of this file; dotenv will expand it to nothing here: write the value in, or read it from the secret",
                    source.shown, sp.first_line, sp.key
                ));
            }
        }
    }
    out
}

/// One value for the target: written, already there, or a conflict.
#[allow(clippy::too_many_arguments)]
fn add(
    m: &mut Migration,
    env: &Environment,
    target: &EnvFile,
    spec: &SecretSpec,
    key: String,
    value: SecretValue,
    from: String,
    how: &str,
) {
    let how = match target.get(&key) {
        Some(t) if t.value.ct_eq(&value) => format!("already in {}", target.shown),
        Some(t) => {
            m.conflicts.push(format!(
                "{key}: {from} and {}:{} hold different values; keep the right one (edit or delete the other line) and run again",
                target.shown, t.line
            ));
            return;
        }
        None => {
            for p in validate::problems(spec, env, value.expose()) {
                let weak = validate::only_weak(spec, env, value.expose());
                let fix = match (spec.kind, spec.generate) {
                    (Kind::Password | Kind::Key, true) if weak && !env.production => format!(
                        "it is migrated anyway (to get it out of the plain file) and goes live with a warning; `cargo xtask rotate-secrets {} --secret {}` replaces it with a strong one",
                        env.name, spec.name
                    ),
                    (Kind::Password | Kind::Key, true) if weak => format!(
                        "it is migrated anyway (to get it out of the plain file), but production refuses it live; `cargo xtask rotate-secrets {} --secret {}` replaces it with a strong one",
                        env.name, spec.name
                    ),
                    _ => format!(
                        "it is migrated anyway (to get it out of the plain file), but setup refuses it: write a good value in {}, then run `cargo xtask setup-secrets {}`",
                        target.shown, env.name
                    ),
                };
                m.warnings.push(format!("{from}: {key} {p}; {fix}"));
            }
            m.writes.push((key.clone(), value));
            how.to_string()
        }
    };
    if !m.secrets.contains(&spec.name) {
        m.secrets.push(spec.name.clone());
    }
    m.moves.push(Move {
        key,
        secret: spec.name.clone(),
        from,
        how,
    });
}

/// A derived value (a `DATABASE_URL`): recognised through its template; its
/// parts are taken from it where the source does not hold them, and it must
/// agree with those the source does hold.
#[allow(clippy::too_many_arguments)]
fn derived(
    m: &mut Migration,
    manifest: &Manifest,
    env: &Environment,
    source: &EnvFile,
    spec: &SecretSpec,
    sp: &Span,
    value: &SecretValue,
    from_url: &mut Vec<(String, String, SecretValue, String)>,
) {
    let place = at(source, sp.first_line);
    let template = spec.template.as_deref().unwrap_or_default();
    let parts = value
        .expose_str()
        .and_then(|v| parts_of(spec, &manifest.project, &env.name, v));
    let Some(parts) = parts else {
        m.warnings.push(format!(
            "{place}: {} does not have the shape of [secrets.{}]'s template ({template}), so its parts cannot be taken from it; left in place: fix the template in deploy/secrets.toml or the line, and run again",
            sp.key, spec.name
        ));
        return;
    };
    let mut ok = true;
    for (name, part) in &parts {
        let key = name.to_ascii_uppercase();
        let part = SecretValue::from_string(part.clone());
        match source.get(&key) {
            Some(e) if e.value.ct_eq(&part) => {}
            Some(e) => {
                ok = false;
                m.problems.push(format!(
                    "{place}: {} holds a different {name} than {key} ({}); make them agree, then run again",
                    sp.key,
                    at(source, e.line)
                ));
            }
            None => from_url.push((key, name.clone(), part, place.clone())),
        }
    }
    if ok {
        m.remove.push(sp.clone());
        if !m.secrets.contains(&spec.name) {
            m.secrets.push(spec.name.clone());
        }
        m.moves.push(Move {
            key: sp.key.clone(),
            secret: spec.name.clone(),
            from: place,
            how: format!(
                "recognised: rebuilt from {}",
                parts.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        });
    }
}

/// The source text without the `remove` spans; every other byte stays.
pub fn without(raw: &str, remove: &[Span]) -> String {
    let mut ranges: Vec<std::ops::Range<usize>> = remove.iter().map(|s| s.bytes.clone()).collect();
    ranges.sort_by_key(|r| r.start);
    let mut out = String::with_capacity(raw.len());
    let mut pos = 0;
    for r in ranges {
        if r.start >= pos {
            out.push_str(&raw[pos..r.start]);
            pos = r.end;
        }
    }
    out.push_str(&raw[pos..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Manifest {
        crate::testutil::demo_manifest("[environments.develop]\nbackend = \"compose\"\n", "")
    }

    #[test]
    fn credentials_are_recognised_by_suffix_and_url() {
        assert!(looks_like_credential("SMTP_PASSWORD", b"x"));
        assert!(looks_like_credential("stripe_key", b"x"));
        assert!(looks_like_credential(
            "REDIS_URL",
            b"redis://:pw@redis:6379/0"
        ));
        assert!(looks_like_credential("AMQP", b"amqp://u:p@h/v"));
        assert!(!looks_like_credential("REDIS_URL", b"redis://redis:6379/0"));
        assert!(!looks_like_credential("URL", b"http://user@h/"));
        assert!(!looks_like_credential("PORT", b"5432"));
        let e = manifest_entry("SMTP_PASSWORD", b"x");
        assert!(
            e.starts_with("[secrets.smtp_password]\nkind = \"password\"\n"),
            "{e}"
        );
    }

    #[test]
    fn derived_values_are_read_back_through_their_template() {
        let m = demo();
        let spec = m.secret("database_url").unwrap();
        let p = parts_of(
            spec,
            "demo",
            "develop",
            "postgresql://app:p%40ss%2Fw%3Ard@postgres:5432/demo_develop",
        )
        .unwrap();
        assert_eq!(p["postgres_user"], "app");
        assert_eq!(p["postgres_password"], "p@ss/w:rd");
        assert!(
            parts_of(
                spec,
                "demo",
                "develop",
                "postgresql://a:b@other:5432/demo_develop"
            )
            .is_none()
        );
        assert!(parts_of(spec, "demo", "develop", "postgresql://a:b@postgres:5432/x").is_none());
    }

    fn file(dir: &crate::testutil::TempDir, name: &str, text: &str) -> EnvFile {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        EnvFile::load(&p, name.into()).unwrap()
    }

    #[test]
    fn plans_moves_conflicts_and_url_disagreements() {
        let m = demo();
        let env = m.env("develop").unwrap();
        let dir = crate::testutil::TempDir::new();
        let target = file(&dir, "t.env", "# t\nPOSTGRES_USER=same_user_x\n");
        let src = file(
            &dir,
            "s.env",
            "A=1\nPOSTGRES_USER=same_user_x\nDATABASE_URL=postgresql://same_user_x:Zq9-Pass-Word-4711@postgres:5432/demo_develop\nX=${POSTGRES_USER}\n",
        );
        let p = plan(&m, env, &src, &target);
        assert!(p.blockers().is_empty(), "{:?}", p.blockers());
        let got: Vec<(&str, &str)> = p
            .moves
            .iter()
            .map(|x| (x.key.as_str(), x.how.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("POSTGRES_USER", "already in t.env"),
                (
                    "DATABASE_URL",
                    "recognised: rebuilt from postgres_password, postgres_user"
                ),
                ("POSTGRES_PASSWORD", "taken from the URL"),
            ]
        );
        assert_eq!(p.writes.len(), 1);
        assert_eq!(p.writes[0].1.expose(), b"Zq9-Pass-Word-4711");
        assert_eq!(
            p.remove.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
            ["POSTGRES_USER", "DATABASE_URL"]
        );
        assert!(
            p.warnings
                .iter()
                .any(|w| w.contains("s.env:4: X refers to $POSTGRES_USER")),
            "{:?}",
            p.warnings
        );

        // The URL disagrees with a part the file holds: a problem, nothing moves.
        let src = file(
            &dir,
            "s2.env",
            "POSTGRES_PASSWORD=Zq9-Pass-Word-4711\nDATABASE_URL=postgresql://u:Other-Pass-Word-1234@postgres:5432/demo_develop\n",
        );
        let p = plan(&m, env, &src, &target);
        assert_eq!(p.problems.len(), 1, "{:?}", p.problems);
        assert!(p.problems[0].contains("s2.env:2: DATABASE_URL holds a different postgres_password than POSTGRES_PASSWORD (s2.env:1)"), "{}", p.problems[0]);
        assert!(!p.problems[0].contains("Other-Pass"));

        // A URL of another shape stays, with a warning; a differing value conflicts.
        let src = file(
            &dir,
            "s3.env",
            "DATABASE_URL=postgresql://u:p@elsewhere/db\nPOSTGRES_USER=another_user\n",
        );
        let p = plan(&m, env, &src, &target);
        assert!(
            p.warnings
                .iter()
                .any(|w| w.contains("does not have the shape")),
            "{:?}",
            p.warnings
        );
        assert_eq!(
            p.conflicts,
            [
                "POSTGRES_USER: s3.env:2 and t.env:2 hold different values; keep the right one (edit or delete the other line) and run again"
            ]
        );
    }

    /// The value moved is the one compose read: `$$` a literal `$`, a
    /// variable of a line above expanded (with a warning), a default used
    /// when the file does not set it; a variable set nowhere above, or in
    /// the shell, blocks the move, naming the key, the line and the variable
    /// and never the value.
    #[test]
    fn values_are_read_by_compose_interpolation_rules() {
        let m = crate::testutil::demo_manifest(
            "[environments.develop]\nbackend = \"compose\"\n",
            "[secrets.jwt_secret]\nkind = \"key\"\n[secrets.redis_password]\nkind = \"password\"\n[secrets.api_key]\nkind = \"key\"\n[secrets.smtp_password]\nkind = \"password\"\n",
        );
        let env = m.env("develop").unwrap();
        let dir = crate::testutil::TempDir::new();
        let target = file(&dir, "t.env", "");
        let shell = |k: &str| k == "FROM_SHELL";
        let src = file(
            &dir,
            "s.env",
            "BASE='Zq9-base-part'\nPOSTGRES_PASSWORD=${BASE}-tail-x1\nJWT_SECRET=\"abc$$def-Long-Value-1\"\nREDIS_PASSWORD=pre-${UNSET_HERE}-post-Canary1\nAPI_KEY=${MISSING:-Dflt-Value-77}\nSMTP_PASSWORD=a${FROM_SHELL}b-Canary2\n",
        );
        let p = plan_with(&m, env, &src, &target, &shell);
        let got: BTreeMap<&str, &[u8]> = p
            .writes
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose()))
            .collect();
        assert_eq!(got["POSTGRES_PASSWORD"], b"Zq9-base-part-tail-x1");
        assert_eq!(got["JWT_SECRET"], b"abc$def-Long-Value-1");
        assert_eq!(got["API_KEY"], b"Dflt-Value-77");
        assert!(!got.contains_key("REDIS_PASSWORD") && !got.contains_key("SMTP_PASSWORD"));
        let problems = p.problems.join("\n");
        assert!(
            problems.contains("s.env:4: REDIS_PASSWORD: it refers to ${UNSET_HERE}, which s.env does not set above it")
                && problems.contains("s.env:6: SMTP_PASSWORD: it refers to ${FROM_SHELL}, which is set in this shell's environment"),
            "{problems}"
        );
        let warnings = p.warnings.join("\n");
        assert!(
            warnings.contains(
                "s.env:2: POSTGRES_PASSWORD is expanded as compose read it (${BASE} from s.env:1)"
            ) && warnings.contains(
                "s.env:5: API_KEY is expanded as compose read it (the default of ${MISSING}"
            ),
            "{warnings}"
        );
        for text in [&problems, &warnings] {
            for v in ["Zq9-base", "Canary", "Dflt-Value", "Long-Value"] {
                assert!(!text.contains(v), "a value in: {text}");
            }
        }
        // A key the shell sets too is moved from the file, with a warning.
        let shell = |k: &str| k == "JWT_SECRET";
        let p = plan_with(
            &m,
            env,
            &file(&dir, "s2.env", "JWT_SECRET=Plain-Value-123456\n"),
            &target,
            &shell,
        );
        assert_eq!(p.writes.len(), 1);
        assert!(
            p.warnings[0].contains("s2.env:1: JWT_SECRET is also set in this shell's environment"),
            "{:?}",
            p.warnings
        );
        // Expanded values keep their quoting: a space, a quote and a line break.
        let p = plan_with(
            &m,
            env,
            &file(
                &dir,
                "s3.env",
                "A='x y\"z'\nJWT_SECRET=\"1 ${A}\n2\"\nREDIS_PASSWORD=${A}$$\n",
            ),
            &target,
            &|_: &str| false,
        );
        let got: BTreeMap<&str, &[u8]> = p
            .writes
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose()))
            .collect();
        assert_eq!(got["JWT_SECRET"], b"1 x y\"z\n2");
        assert_eq!(got["REDIS_PASSWORD"], b"x y\"z$");
    }

    #[test]
    fn removal_keeps_every_other_byte() {
        let raw = "# c\r\nA=1\r\nB=\"x\ny\"\r\n\r\nC=3";
        let sp = envfile::spans(raw);
        assert_eq!(sp[1].key, "B");
        assert_eq!((sp[1].first_line, sp[1].last_line), (3, 4));
        assert_eq!(without(raw, &[sp[1].clone()]), "# c\r\nA=1\r\n\r\nC=3");
        assert_eq!(
            without(raw, &[sp[2].clone(), sp[0].clone()]),
            "# c\r\nB=\"x\ny\"\r\n\r\n"
        );
    }
}
