//! From an environment's env file to the full set of values to store: find the
//! file, refuse unsafe ones, fill what may be generated, rebuild derived values,
//! validate everything and report every problem at once.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::{
    disk::fsutil,
    model::envfile::EnvFile,
    model::manifest::{Encoding, Environment, Kind, Manifest, SecretSpec},
    model::secret::{self, SecretValue},
    model::validate,
    tools::git,
};

/// The env-file entry that holds the key for content fingerprints. It travels
/// with the secrets, so everyone who holds them computes the same fingerprints.
pub const FINGERPRINT_KEY: &str = "XTASK_FINGERPRINT_KEY";

/// Unreserved characters (RFC 3986) stay; everything else in a part is encoded.
const URL_PART: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// One secret of the environment with the value it must have.
#[derive(Debug, Clone)]
pub struct Desired {
    /// The secret as the manifest describes it.
    pub spec: SecretSpec,
    /// Its value: from the env file, generated, or built from a template.
    pub value: SecretValue,
    /// Where the value came from, for messages: `file:line`, a path, or "built from …".
    pub origin: String,
}

/// An environment's secrets read from its env file and checked: what
/// [`resolve`] returns, and what a plan is made from.
#[derive(Debug)]
pub struct Resolved {
    /// The environment resolved.
    pub env: Environment,
    /// Its env file as read.
    pub file: EnvFile,
    /// Every secret of the environment with its value, parts before the
    /// values derived from them.
    pub desired: Vec<Desired>,
    /// What the operator should know but need not stop for, to print.
    pub warnings: Vec<String>,
    /// Keys generated in this run.
    pub generated: Vec<String>,
    /// The generated values, not yet in the env file: [`Resolved::write_generated`]
    /// puts them there once everything has been checked and the store answered.
    pending: Vec<(String, SecretValue)>,
    /// File secrets given inline as PEM: the files to write before
    /// `pending` names them in the env file.
    pending_files: Vec<(PathBuf, SecretValue)>,
    /// Keys whose inline PEM moves into its own file in this run.
    pub moved: Vec<String>,
    /// The env file's [`FINGERPRINT_KEY`], when it has one (or one was generated).
    pub fingerprint_key: Option<SecretValue>,
    /// Of [`Options::replacing`]: the secrets whose env-file value is too
    /// weak to keep, so it must be generated anew.
    pub replace: Vec<String>,
}

impl Resolved {
    /// Writes the generated values to the env file (atomically, 0600).
    pub fn write_generated(&mut self, project: &str) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if let Some(dir) = self.file.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // The PEM files first: the env file names them only once they exist,
        // so an interrupted run leaves the inline value, and a re-run moves it.
        for (path, value) in &self.pending_files {
            if let Some(dir) = path.parent() {
                fsutil::private_dir(dir, 0o700)?;
            }
            fsutil::write_atomic(path, value.expose(), 0o600, None)?;
        }
        let header = format!(
            "# Secrets for {} ({project}). Never commit this file. Managed by `cargo xtask setup-secrets {}`.\n",
            self.env.name, self.env.name
        );
        self.file.write_updates(&self.pending, &header)?;
        self.pending.clear();
        Ok(())
    }

    /// The secret `name` with its value, `None` when it is not in this environment.
    pub fn get(&self, name: &str) -> Option<&Desired> {
        self.desired.iter().find(|d| d.spec.name == name)
    }

    /// The key that fingerprints this environment's values; an error, saying
    /// how to add one, when the env file has none.
    pub fn fingerprint_key(&self) -> Result<&SecretValue> {
        match &self.fingerprint_key {
            Some(k) => Ok(k),
            None => bail!(
                "{} has no {FINGERPRINT_KEY}; the {} backend labels secrets with keyed fingerprints. Run `cargo xtask setup-secrets {} --generate-missing` once to add one{}",
                self.file.shown,
                self.env.store,
                self.env.name,
                if self.env.store == crate::model::manifest::BackendKind::Swarm {
                    format!(
                        " (if the old scripts created this environment's secrets, run `cargo xtask adopt-secrets {}` instead: it adds the key and takes them over)",
                        self.env.name
                    )
                } else {
                    String::new()
                }
            ),
        }
    }
}

/// What a command lets [`resolve`] do: generate, write, accept.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// `--generate-missing`.
    pub generate: bool,
    /// Never generate: for commands that only look (list, verify, deploy).
    pub read_only: bool,
    /// Secrets about to be replaced by generated values (`rotate-secrets`):
    /// a weak value of theirs is a warning and lands in
    /// [`Resolved::replace`] instead of failing the run.
    pub replacing: Vec<String>,
    /// Outside production, a weak password or key is a warning naming the
    /// rotation that replaces it, not an error: the setup that follows
    /// `migrate-env-to-secrets` (the value had to leave the plain file).
    pub accept_weak: bool,
}

impl Options {
    /// Never generate or write: for commands that only look.
    pub fn read_only() -> Options {
        Options {
            read_only: true,
            ..Options::default()
        }
    }
}

/// Where an environment's env file is: the manifest's `env_file`, else
/// `secrets/<env>.env`, else the seeds' `secrets-<env>.env`. Both of the latter
/// existing is an error rather than a silent choice.
pub fn locate(root: &Path, env: &Environment) -> Result<(PathBuf, String)> {
    if let Some(p) = &env.env_file {
        return Ok((root.join(p), p.display().to_string()));
    }
    let new = format!("secrets/{}.env", env.name);
    let old = format!("secrets-{}.env", env.name);
    match (root.join(&new).exists(), root.join(&old).exists()) {
        (true, true) => bail!(
            "both {new} and {old} exist for {}; keep one (move the other away) so there is one source of truth",
            env.name
        ),
        (false, true) => Ok((root.join(&old), old)),
        _ => Ok((root.join(&new), new)),
    }
}

/// Reads `env`'s env file under `root`, checks every value against the
/// manifest, and generates the missing ones when `opts` allow (kept in memory
/// until [`Resolved::write_generated`]). An error lists every problem found.
pub fn resolve(
    root: &Path,
    manifest: &Manifest,
    env: &Environment,
    opts: Options,
) -> Result<Resolved> {
    let mut warnings = Vec::new();
    let file = load(root, env, &mut warnings)?;
    let case_problems = unknown_keys(&file, manifest, env, &mut warnings);
    let may_generate = !opts.read_only && (env.generate || opts.generate);
    let may_write = !opts.read_only;
    let mut c = collect(
        root,
        manifest,
        env,
        &file,
        (may_generate, may_write),
        &mut warnings,
    )?;
    c.problems.extend(case_problems);
    if file.is_blank() && env.production {
        c.problems.insert(0, format!(
            "{} exists but is empty (0 bytes); production values are never regenerated into an empty file: restore it from your backup (or, for a new environment, delete it and run with --generate-missing)",
            file.shown
        ));
    } else if file.is_blank() && may_generate {
        warnings.push(format!(
            "{} exists but is empty (0 bytes): every value is generated anew; if it held values, restore it from your backup first",
            file.shown
        ));
    }
    if !c.missing.is_empty() {
        c.problems
            .insert(0, missing_message(&file.shown, &env.name, &c.missing));
    }
    let mut replace = Vec::new();
    for d in &c.desired {
        let problems = validate::problems(&d.spec, env, d.value.expose());
        let replaceable = matches!(d.spec.kind, Kind::Password | Kind::Key)
            && d.spec.generate
            && opts.replacing.contains(&d.spec.name);
        if replaceable && !problems.is_empty() {
            warnings.push(format!(
                "{}: {} {}; it is replaced by a generated value",
                d.origin,
                d.spec.env_key(),
                problems.join("; ")
            ));
            replace.push(d.spec.name.clone());
            continue;
        }
        let tolerated = opts.accept_weak
            && !env.production
            && matches!(d.spec.kind, Kind::Password | Kind::Key)
            && validate::only_weak(&d.spec, env, d.value.expose());
        if tolerated && !problems.is_empty() {
            warnings.push(format!(
                "{}: {} {}; accepted for now, `cargo xtask rotate-secrets {} --secret {}` replaces it with a strong value",
                d.origin,
                d.spec.env_key(),
                problems.join("; "),
                env.name,
                d.spec.name
            ));
            continue;
        }
        for p in problems {
            c.problems
                .push(format!("{}: {} {p}", d.origin, d.spec.env_key()));
        }
    }
    c.problems
        .extend(reuse_problems(root, manifest, env, &c.desired));
    if !c.problems.is_empty() {
        // The warnings may explain the problems (a misspelt key, an empty file).
        let notes: String = warnings
            .iter()
            .map(|w| format!("\n  - warning: {w}"))
            .collect();
        bail!(
            "{} problem{} with the secrets of {}:\n  - {}{notes}",
            c.problems.len(),
            if c.problems.len() == 1 { "" } else { "s" },
            env.name,
            c.problems.join("\n  - ")
        );
    }
    let mut fingerprint_key = file.get(FINGERPRINT_KEY).map(|e| e.value.clone());
    if fingerprint_key.is_none() && may_generate {
        let k = secret::generate(64)?;
        c.updates.push((FINGERPRINT_KEY.to_string(), k.clone()));
        fingerprint_key = Some(k);
    }
    let moved: Vec<String> = c
        .updates
        .iter()
        .filter(|(k, _)| {
            manifest
                .secrets_for(&env.name)
                .iter()
                .any(|sp| sp.kind == Kind::File && &sp.env_key() == k)
        })
        .map(|(k, _)| k.clone())
        .collect();
    Ok(Resolved {
        env: env.clone(),
        file,
        desired: c.desired,
        warnings,
        generated: c
            .updates
            .iter()
            .map(|(k, _)| k.clone())
            .filter(|k| !moved.contains(k))
            .collect(),
        moved,
        pending: c.updates,
        pending_files: c.files,
        fingerprint_key,
        replace,
    })
}

/// A whole PEM block given as a file secret's value instead of a path.
pub fn inline_pem(v: &[u8]) -> bool {
    let t = v.trim_ascii();
    t.starts_with(b"-----BEGIN ")
        && t.windows(9).any(|w| w == b"-----END ")
        && t.ends_with(b"-----")
}

/// Where an inline PEM goes, relative to the env file's folder (`secrets/`):
/// `<env>/pem/<secret>.pem`, a folder the compose store's listing skips.
fn inline_file(env: &str, secret: &str) -> String {
    format!("{env}/pem/{secret}.pem")
}

/// A value that can be a path at all: one line, not absurdly long.
pub fn plausible_path(v: &str) -> bool {
    !v.is_empty() && v.len() <= 4096 && !v.contains(['\n', '\r', '\0'])
}

/// How a message names the file a file secret's value points at: the path
/// when it is safe to print (`shows_as_path`), else just "a file".
pub fn shown_file(rel: &str, p: &Path) -> String {
    if shows_as_path(rel) {
        format!("the file {}", p.display())
    } else {
        "a file".to_string()
    }
}

/// A path safe to print: it ends like a certificate or key file and has no
/// spaces, so it is no password typed in the wrong field.
fn shows_as_path(v: &str) -> bool {
    let lower = v.to_ascii_lowercase();
    v.len() <= 256
        && !v.contains(char::is_whitespace)
        && [".pem", ".crt", ".cer", ".cert", ".key", ".der", ".p8"]
            .iter()
            .any(|ext| lower.ends_with(ext))
}

/// Each private key (`key_of`) against its certificate, when both have values:
/// a mismatched pair is refused before anything is stored (nginx would refuse
/// to start with it).
pub fn check_pairs(manifest: &Manifest, env: &Environment, desired: &[Desired]) -> Result<()> {
    for key in manifest.secrets_for(&env.name) {
        let Some(cert) = &key.key_of else { continue };
        let find = |n: &str| desired.iter().find(|d| d.spec.name == n);
        if let (Some(c), Some(k)) = (find(cert), find(&key.name)) {
            crate::model::keypair::check(&c.value, &k.value, (cert, &key.name))
                .with_context(|| format!("checking {} against {cert}", k.origin))?;
        }
    }
    Ok(())
}

/// An environment's env file alone, with the same refusals as [`resolve`]
/// (tracked by git, readable by others, symbolic links, duplicate keys) and
/// its warnings, for commands that read or merge it without resolving.
pub fn load_env_file(root: &Path, env: &Environment) -> Result<(EnvFile, Vec<String>)> {
    let mut warnings = Vec::new();
    let file = load(root, env, &mut warnings)?;
    Ok((file, warnings))
}

/// Finds and reads the env file, refusing one that git tracks or others can read.
fn load(root: &Path, env: &Environment, warnings: &mut Vec<String>) -> Result<EnvFile> {
    let (path, shown) = locate(root, env)?;
    if let Some(dir) = path.parent().filter(|d| d.starts_with(root) && *d != root) {
        let rel = dir.strip_prefix(root).unwrap_or(dir).display().to_string();
        fsutil::refuse_symlink(dir, &rel)?;
    }
    fsutil::refuse_symlink(&path, &shown)?;
    let file = if path.exists() {
        match git::is_tracked(root, &path)? {
            Some(true) => bail!(
                "{shown} is tracked by git, so its secrets are in the repository's history; run `git rm --cached {shown}`, add it to .gitignore, and rotate every value in it"
            ),
            None if env.production => bail!(
                "git is not installed, so nobody can tell whether {shown} is tracked by git; {} is a production environment, so the tool refuses: install git (Debian: `apt-get install git`)",
                env.name
            ),
            None => warnings.push(format!(
                "could not check whether {shown} is tracked by git: git is not installed (Debian: `apt-get install git`)"
            )),
            Some(false) => {}
        }
        fsutil::check_private(&path, &shown)?;
        EnvFile::load(&path, shown.clone())?
    } else {
        EnvFile::empty(path.clone(), shown.clone())
    };
    if file.exists && !git::is_ignored(root, &path) {
        warnings.push(format!(
            "{shown} is not covered by .gitignore; add it so it is never committed"
        ));
    }
    if !file.duplicates.is_empty() {
        let d: Vec<_> = file
            .duplicates
            .iter()
            .map(|(k, lines)| {
                format!(
                    "{k} (lines {})",
                    lines
                        .iter()
                        .map(|l| l.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
            .collect();
        bail!(
            "{shown}: keys set more than once: {}; keep one line for each",
            d.join(", ")
        );
    }
    for (k, line) in &file.substituted {
        warnings.push(format!(
            "{shown}:{line}: {k} contains `$`, which dotenv expands as a variable (from this shell's environment or a line above, else to nothing); put the value in single quotes, or write `\\$`, to keep it literal"
        ));
    }

    Ok(file)
}

/// Keys the manifest does not know for this environment: warned about, ignored.
/// A key that is a secret's name in another case is refused (never generated
/// over): "did you mean JWT_SECRET".
fn unknown_keys(
    file: &EnvFile,
    manifest: &Manifest,
    env: &Environment,
    warnings: &mut Vec<String>,
) -> Vec<String> {
    let specs = manifest.secrets_for(&env.name);
    let mut problems = Vec::new();
    for key in file.entries.keys() {
        let known = key == FINGERPRINT_KEY || specs.iter().any(|s| &s.env_key() == key);
        let upper = key.to_ascii_uppercase();
        if !known && specs.iter().any(|s| s.env_key() == upper) {
            problems.push(format!(
                "{}: {key} is not a key; did you mean {upper}? Keys are the secret names in upper case: rename it (a value there is never replaced by a generated one)",
                file.at(key)
            ));
        } else if !known {
            let hint = match manifest.secrets.iter().find(|s| &s.env_key() == key) {
                Some(_) => format!("it is not used in {}", env.name),
                None => "it is not a secret in deploy/secrets.toml".to_string(),
            };
            warnings.push(format!(
                "{}: unknown key {key} ({hint}); it is ignored",
                file.at(key)
            ));
        }
    }
    problems
}

/// The values found, generated or built, and what is missing or wrong.
struct Collected {
    desired: Vec<Desired>,
    updates: Vec<(String, SecretValue)>,
    /// Inline PEM values to write to their own files (path, value).
    files: Vec<(PathBuf, SecretValue)>,
    /// Missing keys, and whether each may be generated.
    missing: Vec<(String, bool)>,
    problems: Vec<String>,
}

fn collect(
    root: &Path,
    manifest: &Manifest,
    env: &Environment,
    file: &EnvFile,
    (may_generate, may_write): (bool, bool),
    warnings: &mut Vec<String>,
) -> Result<Collected> {
    let shown = &file.shown;
    let specs = manifest.secrets_for(&env.name);
    let mut desired: Vec<Desired> = Vec::new();
    let mut updates: Vec<(String, SecretValue)> = Vec::new();
    let mut files: Vec<(PathBuf, SecretValue)> = Vec::new();
    let mut missing: Vec<(String, bool)> = Vec::new();
    let mut problems: Vec<String> = Vec::new();

    for spec in &specs {
        let key = spec.env_key();
        match spec.kind {
            Kind::Derived => {
                // A missing part is already reported; rendering would only repeat it.
                let parts = spec.template_parts();
                if parts.iter().any(|p| {
                    p != "env" && p != "project" && !desired.iter().any(|d| &d.spec.name == p)
                }) {
                    continue;
                }
                let value = render_template(spec, &manifest.project, &env.name, &desired)?;
                if let Some(e) = file.get(&key)
                    && !e.value.ct_eq(&value)
                {
                    warnings.push(format!(
                        "{}: {key} differs from the value built from its parts ({}); the built value is used, remove the line",
                        file.at(&key),
                        spec.template_parts().join(", ")
                    ));
                }
                let origin = format!("built from {}", spec.template_parts().join(", "));
                desired.push(Desired {
                    spec: (*spec).clone(),
                    value,
                    origin,
                });
            }
            Kind::File => match file.get(&key) {
                None => missing.push((key, false)),
                // The PEM itself where a path belongs: the operator meant the
                // value. Setup moves it into a 0600 file and names that file.
                Some(e) if inline_pem(e.value.expose()) => {
                    let rel = inline_file(&env.name, &spec.name);
                    let origin = file.at(&key);
                    warnings.push(format!(
                        "{origin}: {key} holds the PEM itself, not the name of a file; {}",
                        if may_write {
                            format!("it is moved into {rel} (0600) and the line names that file")
                        } else {
                            format!(
                                "`cargo xtask setup-secrets {}` moves it into {rel} (0600) and names that file there",
                                env.name
                            )
                        }
                    ));
                    if may_write {
                        files.push((
                            file.path.parent().unwrap_or(root).join(&rel),
                            e.value.clone(),
                        ));
                        updates.push((key.clone(), SecretValue::from_string(rel)));
                    }
                    desired.push(Desired {
                        spec: (*spec).clone(),
                        value: e.value.clone(),
                        origin,
                    });
                }
                Some(e) => {
                    let base = file.path.parent().unwrap_or(root);
                    let Some(rel) = e.value.expose_str().filter(|v| plausible_path(v)) else {
                        problems.push(format!(
                            "{}: {key} must name a file (a path relative to {}), but its value is not a path and is not a whole PEM block (-----BEGIN ... -----END ...); the value is not shown. Put the PEM in a file and name it, or the whole PEM in double quotes",
                            file.at(&key),
                            base.display()
                        ));
                        continue;
                    };
                    let p = base.join(rel);
                    // A path is shown only when it looks like one: a value
                    // written in the wrong field is never printed.
                    let shown = shown_file(rel, &p);
                    match std::fs::read(&p) {
                        Ok(bytes) => desired.push(Desired {
                            spec: (*spec).clone(),
                            value: SecretValue::new(bytes),
                            origin: if shows_as_path(rel) {
                                p.display().to_string()
                            } else {
                                file.at(&key)
                            },
                        }),
                        Err(err) => problems.push(format!(
                            "{}: {key} names {shown}, which cannot be read ({}); fix the path on that line (relative to {})",
                            file.at(&key),
                            err,
                            base.display()
                        )),
                    }
                }
            },
            _ => match file.get(&key) {
                Some(e) => desired.push(Desired {
                    spec: (*spec).clone(),
                    value: e.value.clone(),
                    origin: file.at(&key),
                }),
                None if may_generate && spec.generate => {
                    let value = generate_for(spec, env, &manifest.project)?;
                    updates.push((key.clone(), value.clone()));
                    desired.push(Desired {
                        spec: (*spec).clone(),
                        value,
                        origin: format!("{shown} (generated)"),
                    });
                }
                None => missing.push((key, spec.generate)),
            },
        }
    }

    Ok(Collected {
        desired,
        updates,
        files,
        missing,
        problems,
    })
}

/// Every missing key at once, with how to fill them.
fn missing_message(shown: &str, env: &str, missing: &[(String, bool)]) -> String {
    let keys: Vec<_> = missing.iter().map(|(k, _)| k.as_str()).collect();
    let can: Vec<_> = missing
        .iter()
        .filter(|(_, g)| *g)
        .map(|(k, _)| k.as_str())
        .collect();
    let mut msg = format!(
        "{shown}: missing {} for {}: {}",
        plural(keys.len(), "key"),
        env,
        keys.join(", ")
    );
    if !can.is_empty() {
        msg.push_str(&format!(
            "; add them, or run `cargo xtask setup-secrets {} --generate-missing` to generate {}",
            env,
            if can.len() == keys.len() {
                "them".to_string()
            } else {
                can.join(", ")
            }
        ));
    } else {
        msg.push_str("; add them (file secrets name a path to the file)");
    }
    msg
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}

/// A new value for `spec` in `env`: a user name from its `default` template,
/// else random characters: `length` of them, or the minimum length but at least 32.
pub fn generate_for(spec: &SecretSpec, env: &Environment, project: &str) -> Result<SecretValue> {
    if spec.kind == Kind::Username {
        let template = spec.default.as_deref().unwrap_or("{project}_{env}");
        let v = template
            .replace("{project}", project)
            .replace("{env}", &env.name)
            .replace('-', "_");
        return Ok(SecretValue::from_string(v));
    }
    let min = validate::min_length(spec, env);
    secret::generate(spec.length.unwrap_or(min.max(32)))
}

/// Renders a derived secret's template. Parts are percent-encoded (unless the
/// manifest says `encoding = "none"`), so `@`, `/` or `:` in a password cannot
/// change the URL's structure.
pub fn render_template(
    spec: &SecretSpec,
    project: &str,
    env: &str,
    parts: &[Desired],
) -> Result<SecretValue> {
    let template = spec.template.as_deref().unwrap_or_default();
    let mut out = zeroize::Zeroizing::new(String::with_capacity(template.len() + 64));
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        if rest[i..].starts_with("{{") || rest[i..].starts_with("}}") {
            out.push_str(&rest[i..i + 1]);
            rest = &rest[i + 2..];
            continue;
        }
        let Some(j) = rest[i..].find('}') else {
            bail!("[secrets.{}]: unclosed {{ in the template", spec.name)
        };
        let name = &rest[i + 1..i + j];
        let raw: &str = match name {
            "env" => env,
            "project" => project,
            _ => {
                let Some(p) = parts.iter().find(|d| d.spec.name == name) else {
                    bail!(
                        "[secrets.{}]: the template part {name:?} has no value",
                        spec.name
                    )
                };
                let Some(s) = p.value.expose_str() else {
                    bail!("{} is not text; templates take text secrets", p.origin)
                };
                s
            }
        };
        match spec.encoding {
            Encoding::Url => out.extend(utf8_percent_encode(raw, URL_PART)),
            Encoding::None => out.push_str(raw),
        }
        rest = &rest[i + j + 1..];
    }
    out.push_str(rest);
    Ok(SecretValue::new(out.as_bytes().to_vec()))
}

/// One value the reuse rule forbids: a password or key of one environment
/// that holds the same value as in another, where one of the two is a
/// production environment. Names and places only, never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reuse {
    /// The secret's name.
    pub secret: String,
    /// The env-file key (`POSTGRES_PASSWORD`).
    pub key: String,
    /// The other environment.
    pub other: String,
    /// Where the other environment's env file holds the value (`file:line`).
    pub other_at: String,
    /// The production environment of the pair.
    pub production: String,
    /// The environment that must get a new value.
    pub renew_in: String,
}

/// A production value must not be used anywhere else. Compares the
/// random-kind `values` of `env` (secret, value) with every other
/// environment's env file (where readable) when either of the two is a
/// production environment, in memory and in constant time.
pub fn reuses(
    root: &Path,
    manifest: &Manifest,
    env: &Environment,
    values: &[(&SecretSpec, &SecretValue)],
) -> Vec<Reuse> {
    let mut out = Vec::new();
    for other in manifest.environments.values() {
        if other.name == env.name || !(other.production || env.production) {
            continue;
        }
        let Ok((path, shown)) = locate(root, other) else {
            continue;
        };
        let Ok(f) = EnvFile::load(&path, shown) else {
            continue;
        };
        for (spec, value) in values.iter().filter(|(s, _)| s.kind.is_random()) {
            if let Some(e) = f.get(&spec.env_key())
                && e.value.ct_eq(value)
            {
                let (prod, renew) = match other.production {
                    true => (other, env),
                    false => (env, other),
                };
                out.push(Reuse {
                    secret: spec.name.clone(),
                    key: spec.env_key(),
                    other: other.name.clone(),
                    other_at: f.at(&spec.env_key()),
                    production: prod.name.clone(),
                    renew_in: renew.name.clone(),
                });
            }
        }
    }
    out
}

/// [`reuses`] of the resolved values, as validation problems.
fn reuse_problems(
    root: &Path,
    manifest: &Manifest,
    env: &Environment,
    desired: &[Desired],
) -> Vec<String> {
    let values: Vec<(&SecretSpec, &SecretValue)> =
        desired.iter().map(|d| (&d.spec, &d.value)).collect();
    reuses(root, manifest, env, &values)
        .into_iter()
        .map(|r| {
            let origin = desired
                .iter()
                .find(|d| d.spec.name == r.secret)
                .map(|d| d.origin.as_str())
                .unwrap_or_default();
            format!(
                "{origin}: {} has the same value as in {} ({}); {} values must not be reused, generate a new one for {}",
                r.key, r.other, r.other_at, r.production, r.renew_in
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENVIRONMENTS: &str = r#"
[environments.production]
backend = "swarm"
[environments.staging]
backend = "swarm"
[environments.develop]
backend = "compose"
"#;
    const TLS_CERT: &str = r#"[secrets.tls_cert]
kind = "file"
pem = true
environments = ["production"]
"#;

    fn setup(files: &[(&str, &str)]) -> (crate::testutil::TempDir, Manifest) {
        use std::os::unix::fs::PermissionsExt;
        let dir = crate::testutil::TempDir::new();
        for (name, text) in files {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        (dir, crate::testutil::demo_manifest(ENVIRONMENTS, TLS_CERT))
    }

    fn run(
        dir: &crate::testutil::TempDir,
        m: &Manifest,
        env: &str,
        generate: bool,
    ) -> Result<Resolved> {
        resolve(
            dir.path(),
            m,
            m.env(env).unwrap(),
            Options {
                generate,
                read_only: false,
                ..Options::default()
            },
        )
        .and_then(|mut r| {
            r.write_generated(&m.project)?;
            Ok(r)
        })
    }

    #[test]
    fn derived_values_percent_encode_their_parts() {
        let (dir, m) = setup(&[(
            "secrets/staging.env",
            "POSTGRES_USER=app\nPOSTGRES_PASSWORD='p@ss/w:rd?#%Zq9-aaaaaaaaaaaaaaaaaaaaaaaa'\n",
        )]);
        let r = run(&dir, &m, "staging", false).unwrap();
        let url = r
            .get("database_url")
            .unwrap()
            .value
            .expose_str()
            .unwrap()
            .to_string();
        assert_eq!(
            url,
            "postgresql://app:p%40ss%2Fw%3Ard%3F%23%25Zq9-aaaaaaaaaaaaaaaaaaaaaaaa@postgres:5432/demo_staging"
        );
    }

    /// A weak password is refused, unless a rotation is about to replace it
    /// (any environment) or a migration put it there (not production).
    #[test]
    fn weak_values_are_refused_replaced_or_tolerated() {
        let file = |pw: &str| format!("POSTGRES_USER=u\nPOSTGRES_PASSWORD={pw}\n");
        let (dir, m) = setup(&[
            ("secrets/develop.env", &file("short1A")),
            ("secrets/staging.env", &file("short2B")),
            ("secrets/production.env", &file("short3C")),
        ]);
        let with = |env: &str, opts: Options| resolve(dir.path(), &m, m.env(env).unwrap(), opts);
        for env in ["develop", "staging"] {
            let e = format!("{:#}", with(env, Options::read_only()).unwrap_err());
            assert!(e.contains("POSTGRES_PASSWORD is 7 characters"), "{e}");
        }
        let replacing = Options {
            replacing: vec!["postgres_password".into()],
            ..Options::read_only()
        };
        for env in ["develop", "staging"] {
            let r = with(env, replacing.clone()).unwrap();
            assert_eq!(r.replace, ["postgres_password"]);
            assert!(
                r.warnings
                    .iter()
                    .any(|w| w.contains("replaced by a generated value"))
            );
        }
        let migrated = Options {
            accept_weak: true,
            ..Options::read_only()
        };
        let r = with("develop", migrated.clone()).unwrap();
        assert!(r.replace.is_empty());
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains("rotate-secrets develop --secret postgres_password")),
            "{:?}",
            r.warnings
        );
        let e = format!("{:#}", with("production", migrated).unwrap_err());
        assert!(e.contains("POSTGRES_PASSWORD is 7 characters"), "{e}");
    }

    #[test]
    fn all_missing_keys_are_listed_at_once() {
        let (dir, m) = setup(&[("secrets/production.env", "# nothing yet\n")]);
        let e = format!("{:#}", run(&dir, &m, "production", false).unwrap_err());
        assert!(
            e.contains("missing keys for production: POSTGRES_USER, POSTGRES_PASSWORD, TLS_CERT"),
            "{e}"
        );
        assert!(e.contains("--generate-missing"), "{e}");
    }

    #[test]
    fn develop_generates_by_default_and_writes_back() {
        let (dir, m) = setup(&[]);
        let r = run(&dir, &m, "develop", false).unwrap();
        assert_eq!(
            r.generated,
            ["POSTGRES_USER", "POSTGRES_PASSWORD", FINGERPRINT_KEY]
        );
        let text = std::fs::read_to_string(dir.path().join("secrets/develop.env")).unwrap();
        assert!(text.contains("POSTGRES_USER=demo_develop\n"), "{text}");
        // A second run reads the same values and generates nothing.
        let again = run(&dir, &m, "develop", false).unwrap();
        assert!(again.generated.is_empty());
        assert!(
            again
                .get("postgres_password")
                .unwrap()
                .value
                .ct_eq(&r.get("postgres_password").unwrap().value)
        );
    }

    #[test]
    fn production_values_cannot_be_reused() {
        let pw = "Zq9xWv8uTs7rQp6oNm5lKj4iHg3fEd2c";
        let (dir, m) = setup(&[
            (
                "secrets/production.env",
                &format!("POSTGRES_USER=a\nPOSTGRES_PASSWORD={pw}\nTLS_CERT=c.pem\n"),
            ),
            ("secrets/c.pem", "-----BEGIN CERTIFICATE-----\n"),
            (
                "secrets/staging.env",
                &format!("POSTGRES_USER=a\nPOSTGRES_PASSWORD={pw}\n"),
            ),
        ]);
        let e = format!("{:#}", run(&dir, &m, "staging", false).unwrap_err());
        assert!(
            e.contains("same value as in production (secrets/production.env:2)"),
            "{e}"
        );
        assert!(!e.contains(pw));
        let e = format!("{:#}", run(&dir, &m, "production", false).unwrap_err());
        assert!(e.contains("same value as in staging"), "{e}");
    }

    #[test]
    fn refuses_world_readable_files_and_both_layouts() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, m) = setup(&[("secrets/staging.env", "POSTGRES_USER=a\n")]);
        let p = dir.path().join("secrets/staging.env");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = format!("{:#}", run(&dir, &m, "staging", false).unwrap_err());
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::write(dir.path().join("secrets-staging.env"), "").unwrap();
        let e = format!("{:#}", run(&dir, &m, "staging", false).unwrap_err());
        assert!(
            e.contains("both secrets/staging.env and secrets-staging.env exist"),
            "{e}"
        );
    }

    #[test]
    fn seed_layout_is_found() {
        let (dir, m) = setup(&[(
            "secrets-staging.env",
            "POSTGRES_USER=a\nPOSTGRES_PASSWORD=Zq9xWv8uTs7rQp6oNm5lKj4iHg3fEd2c\n",
        )]);
        let r = run(&dir, &m, "staging", false).unwrap();
        assert_eq!(r.file.shown, "secrets-staging.env");
        assert_eq!(
            r.get("postgres_password").unwrap().origin,
            "secrets-staging.env:2"
        );
    }

    #[test]
    fn debug_output_never_shows_values() {
        let pw = "Zq9xWv8uTs7rQp6oNm5lKj4iHg3fEd2c";
        let (dir, m) = setup(&[(
            "secrets/staging.env",
            &format!("POSTGRES_USER=someuser\nPOSTGRES_PASSWORD={pw}\n"),
        )]);
        let r = run(&dir, &m, "staging", false).unwrap();
        let dbg = format!("{r:?} {:?}", r.desired);
        assert!(!dbg.contains(pw) && !dbg.contains("someuser"), "{dbg}");
        assert!(
            dbg.contains("secrets/staging.env:2"),
            "Debug should still say where values came from: {dbg}"
        );
    }

    #[test]
    fn weak_values_are_reported_with_location_not_value() {
        let (dir, m) = setup(&[(
            "secrets/staging.env",
            "POSTGRES_USER=a\nPOSTGRES_PASSWORD=short-Secret1\n",
        )]);
        let e = format!("{:#}", run(&dir, &m, "staging", false).unwrap_err());
        assert!(e.contains("secrets/staging.env:2: POSTGRES_PASSWORD is 13 characters; staging needs at least 32"), "{e}");
        assert!(!e.contains("short-Secret1"));
    }
}
