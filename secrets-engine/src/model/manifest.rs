//! The project manifest (`deploy/secrets.toml`): environments, their backends and
//! policies, and the secrets with their kinds and consumers.
//!
//! Parsing is pure (text in, [`Manifest`] out) so every rule is unit-tested, and
//! every error names the file, the table and what to write instead.

use std::{collections::BTreeMap, fmt, path::PathBuf};

use anyhow::{Context, Result, bail};
use toml::{Table, Value};

/// Where the manifest sits, relative to the repository root.
pub const MANIFEST_PATH: &str = "deploy/secrets.toml";
/// The rotation policy when the manifest names none (the guides' 90 days).
pub const DEFAULT_ROTATE_EVERY_DAYS: u32 = 90;

/// A store or runtime the manifest can name in `backend`, `store` or `runtime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BackendKind {
    /// Docker Compose: values in files under the secrets folder, mounted by compose.
    Compose,
    /// Docker Swarm: values as versioned swarm secrets, read by stack services.
    Swarm,
    /// Kubernetes: values as versioned Secret objects, mounted by pods.
    K8s,
    /// OpenBao or Vault KV v2: a store only; another backend runs the services.
    Vault,
    /// AWS Secrets Manager: a store only; another backend runs the services.
    Aws,
}

impl BackendKind {
    /// Every kind, compose first.
    pub(crate) const ALL: [BackendKind; 5] = [
        Self::Compose,
        Self::Swarm,
        Self::K8s,
        Self::Vault,
        Self::Aws,
    ];

    /// The manifest's spelling (`compose`, `swarm`, `k8s`, `vault`, `aws`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Compose => "compose",
            Self::Swarm => "swarm",
            Self::K8s => "k8s",
            Self::Vault => "vault",
            Self::Aws => "aws",
        }
    }

    /// The kind spelled `s` as in the manifest, `None` for an unknown name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == s)
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What sort of value a secret holds: decides how it is checked and generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A random password; strength rules apply.
    Password,
    /// A random key or token (signing keys, API keys); strength rules apply.
    Key,
    /// A user name: not random, no strength rules, may have a default.
    Username,
    /// Built from other secrets through a template, e.g. a database URL.
    Derived,
    /// The env file names a file (a TLS certificate or key) whose bytes are the secret.
    File,
}

impl Kind {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "password" => Self::Password,
            "key" => Self::Key,
            "username" => Self::Username,
            "derived" => Self::Derived,
            "file" => Self::File,
            _ => return None,
        })
    }

    /// The manifest's spelling (`password`, `key`, `username`, `derived`, `file`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Password => "password",
            Self::Key => "key",
            Self::Username => "username",
            Self::Derived => "derived",
            Self::File => "file",
        }
    }

    /// Strength, placeholder and reuse checks apply to these kinds.
    pub fn is_random(self) -> bool {
        matches!(self, Self::Password | Self::Key)
    }
}

/// How a derived secret's template substitutes its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Percent-encode every substituted part (for URLs).
    Url,
    /// Substitute the parts as they are.
    None,
}

impl BackendKind {
    /// Stores that are also runtimes: `backend = "swarm"` names both.
    pub fn is_runtime(self) -> bool {
        matches!(self, Self::Compose | Self::Swarm | Self::K8s)
    }
}

/// One `[environments.<name>]` table: where its values are stored, what runs
/// its services, and its policies.
#[derive(Debug, Clone)]
pub struct Environment {
    /// The environment's name (`develop`, `production`).
    pub name: String,
    /// Where the values are kept.
    pub store: BackendKind,
    /// What runs the services that read them (compose, swarm or k8s).
    pub runtime: BackendKind,
    /// The shortest value a password or key may have here, in characters.
    pub min_length: usize,
    /// Generate missing values without `--generate-missing` (develop's default).
    pub generate: bool,
    /// Values here must never appear in another environment.
    pub production: bool,
    /// Explicit env file, relative to the repository root.
    pub env_file: Option<PathBuf>,
    /// `rotate_every_days`: the rotation policy of its password and key
    /// secrets (default [`DEFAULT_ROTATE_EVERY_DAYS`]; 0 = none).
    pub rotate_every_days: Option<u32>,
    /// Each store's and runtime's own table (`[environments.<env>.k8s]`), over
    /// the project-wide one (`[k8s]`). Only that module reads it.
    pub settings: BTreeMap<String, Table>,
    /// age recipients of `backup-secrets` (`backup_recipients`, per environment
    /// over the project-wide list): public keys, so they may sit in the manifest.
    pub backup_recipients: Vec<String>,
}

impl Environment {
    /// `swarm`, or `vault store, swarm runtime` when they differ: for messages.
    pub fn backend_label(&self) -> String {
        if self.store == self.runtime {
            self.store.name().to_string()
        } else {
            format!("{} store, {} runtime", self.store, self.runtime)
        }
    }

    /// Applies `--backend NAME`: a runtime kind names both, a store-only kind
    /// replaces the store and keeps the runtime.
    pub fn override_backend(&mut self, kind: BackendKind) {
        self.store = kind;
        if kind.is_runtime() {
            self.runtime = kind;
        }
    }

    /// The settings table of one store or runtime kind (empty when none).
    pub fn settings_for(&self, kind: BackendKind) -> Settings {
        Settings::new(
            self.settings.get(kind.name()).cloned().unwrap_or_default(),
            format!("[environments.{}.{}]", self.name, kind.name()),
        )
    }
}

/// One `[secrets.<name>]` table: what the secret is and who reads it.
#[derive(Debug, Clone)]
pub struct SecretSpec {
    /// The secret's name in lower case (`postgres_password`).
    pub name: String,
    /// What sort of value it holds.
    pub kind: Kind,
    /// What the secret is for, for the operator (may be empty).
    pub description: String,
    /// Overrides the environment's minimum length.
    pub min_length: Option<usize>,
    /// Length of generated values (defaults to the minimum, at least 32).
    pub length: Option<usize>,
    /// The services that read the secret.
    pub services: Vec<String>,
    /// Derived: the template, with `{secret}`, `{env}` and `{project}` placeholders.
    pub template: Option<String>,
    /// Derived: how the template substitutes its parts.
    pub encoding: Encoding,
    /// Username: the value used when generating (`{env}`, `{project}` expand).
    pub default: Option<String>,
    /// Environments the secret exists in; empty means all.
    pub environments: Vec<String>,
    /// Whether a missing value may be generated.
    pub generate: bool,
    /// File: require PEM content.
    pub pem: bool,
    /// `owner = "UID:GID"`: who owns the file a compose store writes for it.
    pub owner: Option<(u32, u32)>,
    /// Rotation hook: an argument vector run with the new value on stdin.
    pub rotate_hook: Vec<String>,
    /// `rotate_every_days` on the secret: over the environment's (0 = none).
    pub rotate_every_days: Option<u32>,
    /// Run like `rotate_hook`, once the rollout has converged (for example to
    /// drop the old password that no task uses any more).
    pub rotated_hook: Vec<String>,
    /// Services that keep their own copy of the credential (a database reads
    /// its password only when it initialises): a new version changes nothing
    /// there, so rotating needs a `rotate_hook`, and the swarm runtime keeps
    /// these services on the version they started with (`<name>_kept`).
    pub kept_by: Vec<String>,
    /// A username secret that alternates between two login roles (`<user>`
    /// and `<user>_b`) each time this password rotates.
    pub alternate_user: Option<String>,
    /// File: the certificate secret whose private key this is; the pair must
    /// match before anything is stored.
    pub key_of: Option<String>,
}

impl SecretSpec {
    /// Whether the secret exists in the environment named `env`.
    pub fn applies_to(&self, env: &str) -> bool {
        self.environments.is_empty() || self.environments.iter().any(|e| e == env)
    }

    /// The key in env files: the name in upper case (`postgres_password` -> `POSTGRES_PASSWORD`).
    pub fn env_key(&self) -> String {
        self.name.to_ascii_uppercase()
    }

    /// Days between rotations in `env`, `None` when no policy applies: the
    /// secret's own `rotate_every_days`, else (passwords and keys only; user
    /// names, files and derived values change when their owner says) the
    /// environment's, else 90. Zero means none.
    pub fn rotate_every_days(&self, env: &Environment) -> Option<u32> {
        let days = match self.rotate_every_days {
            Some(d) => Some(d),
            None if self.kind.is_random() => {
                Some(env.rotate_every_days.unwrap_or(DEFAULT_ROTATE_EVERY_DAYS))
            }
            None => None,
        };
        days.filter(|d| *d > 0)
    }

    /// Secrets a derived template refers to, in order of appearance.
    pub fn template_parts(&self) -> Vec<String> {
        self.template
            .as_deref()
            .map(template_refs)
            .unwrap_or_default()
    }
}

/// The parsed `deploy/secrets.toml`.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The project's name: a prefix of store object names.
    pub project: String,
    /// The environments by name.
    pub environments: BTreeMap<String, Environment>,
    /// In manifest order: derived secrets come after their parts once sorted by [`Manifest::parse`].
    pub secrets: Vec<SecretSpec>,
}

impl Manifest {
    /// Reads and parses `root/deploy/secrets.toml`; the error names the file.
    pub fn load(root: &std::path::Path) -> Result<Manifest> {
        let path = root.join(MANIFEST_PATH);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!("cannot read the manifest {}; it describes the project's environments and secrets (see docs/configuration.md)", path.display())
        })?;
        Manifest::parse(&text).with_context(|| format!("in {MANIFEST_PATH}"))
    }

    /// The environment `name`; the error lists the defined ones.
    pub fn env(&self, name: &str) -> Result<&Environment> {
        match self.environments.get(name) {
            Some(e) => Ok(e),
            None => bail!(
                "unknown environment {name:?}{}; {MANIFEST_PATH} defines: {}. Add an [environments.{name}] table to define it",
                did_you_mean(name, self.environments.keys().map(String::as_str)),
                self.environments
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// The secret `name`; the error lists the defined ones.
    pub fn secret(&self, name: &str) -> Result<&SecretSpec> {
        match self.secrets.iter().find(|s| s.name == name) {
            Some(s) => Ok(s),
            None => bail!(
                "unknown secret {name:?}{}; {MANIFEST_PATH} defines: {}",
                did_you_mean(name, self.secrets.iter().map(|s| s.name.as_str())),
                self.secrets
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// A secret as an operator names it on the command line: its name, or
    /// its env-file key as `scan` and the env file spell it (`JWT_SECRET`).
    pub fn secret_named(&self, arg: &str) -> Result<&SecretSpec> {
        match self
            .secrets
            .iter()
            .find(|s| s.name == arg || s.env_key() == arg)
        {
            Some(s) => Ok(s),
            None => self.secret(arg),
        }
    }

    /// The secrets that exist in `env`, parts before the values derived from them.
    pub fn secrets_for(&self, env: &str) -> Vec<&SecretSpec> {
        self.secrets.iter().filter(|s| s.applies_to(env)).collect()
    }

    /// Parses and checks manifest text; derived secrets come after their parts.
    pub fn parse(text: &str) -> Result<Manifest> {
        let table: Table = text
            .parse()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("{e}"))?;
        let mut r = Reader::new(table, "the top level".into());
        let project = r.req_str("project")?;
        check_name(&project, "project").context("at the top level")?;
        let top = top_settings(&mut r)?;
        let top_recipients = r.opt_str_list("backup_recipients")?;

        let mut environments = BTreeMap::new();
        for (name, v) in r.req_tables("environments")? {
            check_name(&name, "environment")
                .with_context(|| format!("in [environments.{name}]"))?;
            let mut e = Reader::new(v, format!("[environments.{name}]"));
            let (store, runtime) = store_and_runtime(&mut e)?;
            let mut settings = top.clone();
            // The old place of the compose files' owner: `owner` on the environment.
            if let Some(o) = e.take("owner") {
                settings
                    .entry("compose".into())
                    .or_default()
                    .insert("owner".into(), o);
            }
            for kind in BackendKind::ALL {
                match e.take(kind.name()) {
                    None => {}
                    Some(Value::Table(t)) => {
                        settings.entry(kind.name().into()).or_default().extend(t)
                    }
                    Some(_) => return Err(e.type_err(kind.name(), "a table")),
                }
            }
            let default_min = if name == "develop" { 16 } else { 32 };
            let recipients = e.opt_str_list("backup_recipients")?;
            let env = Environment {
                backup_recipients: if recipients.is_empty() {
                    top_recipients.clone()
                } else {
                    recipients
                },
                min_length: e.opt_usize("min_length")?.unwrap_or(default_min),
                generate: e.opt_bool("generate")?.unwrap_or(name == "develop"),
                production: e.opt_bool("production")?.unwrap_or(name == "production"),
                env_file: e.opt_str("env_file")?.map(PathBuf::from),
                rotate_every_days: e.opt_days("rotate_every_days")?,
                store,
                runtime,
                settings,
                name: name.clone(),
            };
            e.finish()?;
            environments.insert(name, env);
        }
        if environments.is_empty() {
            bail!("no environments: add at least one [environments.NAME] table with a backend");
        }

        let mut secrets = Vec::new();
        for (name, v) in r.req_tables_ordered("secrets")? {
            let where_ = format!("[secrets.{name}]");
            check_secret_name(&name).with_context(|| format!("in {where_}"))?;
            let mut s = Reader::new(v, where_.clone());
            let kind_name = s.req_str("kind")?;
            let Some(kind) = Kind::parse(&kind_name) else {
                bail!(
                    "in {where_}: unknown kind {kind_name:?}; use one of: password, key, username, derived, file"
                );
            };
            let template = s.opt_str("template")?;
            match (kind, &template) {
                (Kind::Derived, None) => bail!(
                    "in {where_}: a derived secret needs a template, e.g. template = \"postgresql://{{postgres_user}}:{{postgres_password}}@postgres:5432/app\""
                ),
                (k, Some(_)) if k != Kind::Derived => {
                    bail!("in {where_}: only kind = \"derived\" takes a template")
                }
                _ => {}
            }
            let encoding = match s.opt_str("encoding")?.as_deref() {
                None | Some("url") => Encoding::Url,
                Some("none") => Encoding::None,
                Some(o) => bail!("in {where_}: unknown encoding {o:?}; use \"url\" or \"none\""),
            };
            let environments_list = s.opt_str_list("environments")?;
            for e in &environments_list {
                if !environments.contains_key(e) {
                    bail!(
                        "in {where_}: environments names {e:?}, which has no [environments.{e}] table"
                    );
                }
            }
            let spec = SecretSpec {
                kind,
                description: s.opt_str("description")?.unwrap_or_default(),
                min_length: s.opt_usize("min_length")?,
                length: s.opt_usize("length")?,
                services: s.opt_str_list("services")?,
                template,
                encoding,
                default: s.opt_str("default")?,
                environments: environments_list,
                generate: s
                    .opt_bool("generate")?
                    .unwrap_or(matches!(kind, Kind::Password | Kind::Key | Kind::Username)),
                pem: s.opt_bool("pem")?.unwrap_or(false),
                owner: s.opt_owner("owner")?,
                rotate_hook: s.opt_str_list("rotate_hook")?,
                rotate_every_days: s.opt_days("rotate_every_days")?,
                rotated_hook: s.opt_str_list("rotated_hook")?,
                kept_by: s.opt_str_list("kept_by")?,
                alternate_user: s.opt_str("alternate_user")?,
                key_of: s.opt_str("key_of")?,
                name: name.clone(),
            };
            for (field, list) in [
                ("services", &spec.services),
                ("kept_by", &spec.kept_by),
                ("environments", &spec.environments),
            ] {
                if let Some(d) = list
                    .iter()
                    .enumerate()
                    .find(|(i, x)| list[..*i].contains(x))
                    .map(|(_, x)| x)
                {
                    bail!("in {where_}: {field} lists {d:?} twice; list each once");
                }
            }
            if let Some(k) = spec.kept_by.iter().find(|k| !spec.services.contains(k)) {
                bail!(
                    "in {where_}: kept_by names {k:?}, which is not in its services; add it to services or remove it from kept_by"
                );
            }
            if spec.generate && matches!(kind, Kind::File | Kind::Derived) {
                bail!(
                    "in {where_}: a {} secret cannot be generated; remove `generate`",
                    kind.name()
                );
            }
            if let Some(l) = spec.length
                && l < spec.min_length.unwrap_or(0)
            {
                bail!("in {where_}: length {l} is below min_length");
            }
            s.finish()?;
            secrets.push(spec);
        }
        r.finish()?;
        check_links(&secrets)?;
        let secrets = order_by_dependencies(secrets)?;
        Ok(Manifest {
            project,
            environments,
            secrets,
        })
    }
}

/// `alternate_user` names a username secret and `key_of` a file secret.
fn check_links(secrets: &[SecretSpec]) -> Result<()> {
    let kind_of = |n: &str| secrets.iter().find(|s| s.name == n).map(|s| s.kind);
    for s in secrets {
        if let Some(u) = &s.alternate_user
            && (s.kind != Kind::Password || kind_of(u) != Some(Kind::Username))
        {
            bail!(
                "in [secrets.{}]: alternate_user must name a username secret and sit on a password secret; {u:?} is not one",
                s.name
            );
        }
        if let Some(c) = &s.key_of
            && (s.kind != Kind::File || kind_of(c) != Some(Kind::File))
        {
            bail!(
                "in [secrets.{}]: key_of must name the certificate's file secret and sit on a file secret; {c:?} is not one",
                s.name
            );
        }
    }
    Ok(())
}

/// The project-wide `[compose]`, `[swarm]`, `[k8s]`, `[vault]` and `[aws]`
/// tables, and the old top-level `compose_file` and `stack_file` keys.
fn top_settings(r: &mut Reader) -> Result<BTreeMap<String, Table>> {
    let mut out: BTreeMap<String, Table> = BTreeMap::new();
    for kind in BackendKind::ALL {
        match r.take(kind.name()) {
            None => {}
            Some(Value::Table(t)) => {
                out.insert(kind.name().into(), t);
            }
            Some(_) => return Err(r.type_err(kind.name(), "a table")),
        }
    }
    for (old, kind, key) in [
        ("compose_file", "compose", "file"),
        ("stack_file", "swarm", "stack_file"),
    ] {
        if let Some(v) = r.opt_str(old)? {
            out.entry(kind.into())
                .or_default()
                .insert(key.into(), Value::String(v));
        }
    }
    Ok(out)
}

/// `backend = "swarm"` names both; `store` and `runtime` name them apart.
fn store_and_runtime(e: &mut Reader) -> Result<(BackendKind, BackendKind)> {
    let mut kind = |key: &str| -> Result<Option<BackendKind>> {
        match e.opt_str(key)? {
            None => Ok(None),
            Some(n) => match BackendKind::parse(&n) {
                Some(k) => Ok(Some(k)),
                None => bail!(
                    "in {}: unknown {key} {n:?}; use one of: compose, swarm, k8s, vault, aws",
                    e.at
                ),
            },
        }
    };
    let backend = kind("backend")?;
    let store = kind("store")?;
    let runtime = kind("runtime")?;
    let (store, runtime) = match (backend, store, runtime) {
        (Some(b), None, None) if b.is_runtime() => (b, b),
        (Some(b), None, None) => bail!(
            "in {}: {b} only stores secrets; name what runs the services too: `store = \"{b}\"` and `runtime = \"swarm\"` (or compose, k8s)",
            e.at
        ),
        (None, Some(s), Some(r)) => (s, r),
        (None, Some(s), None) if s.is_runtime() => (s, s),
        (None, None, Some(r)) => (r, r),
        (None, Some(s), None) => bail!(
            "in {}: add `runtime = \"swarm\"` (or compose, k8s): {s} only stores secrets",
            e.at
        ),
        (Some(_), _, _) => bail!(
            "in {}: set either `backend` or `store` and `runtime`, not both",
            e.at
        ),
        (None, None, None) => bail!(
            "in {}: `backend` is missing; e.g. backend = \"swarm\" (or store = \"vault\" with runtime = \"swarm\")",
            e.at
        ),
    };
    if !runtime.is_runtime() {
        bail!(
            "in {}: {runtime} is not a runtime; use compose, swarm or k8s",
            e.at
        );
    }
    if store.is_runtime() && store != runtime {
        bail!(
            "in {}: the {store} store only works with the {store} runtime (its secrets live inside it); got runtime {runtime}",
            e.at
        );
    }
    Ok((store, runtime))
}

/// Placeholder names in a template: `{name}`; `{{` and `}}` are literal braces.
pub fn template_refs(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        if rest[i..].starts_with("{{") {
            rest = &rest[i + 2..];
            continue;
        }
        let Some(j) = rest[i..].find('}') else { break };
        let name = &rest[i + 1..i + j];
        if !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
        rest = &rest[i + j + 1..];
    }
    out
}

/// Puts every derived secret after the secrets it is built from, and rejects
/// unknown parts and cycles.
fn order_by_dependencies(secrets: Vec<SecretSpec>) -> Result<Vec<SecretSpec>> {
    for s in &secrets {
        for part in s.template_parts() {
            if part == "env" || part == "project" {
                continue;
            }
            let Some(p) = secrets.iter().find(|p| p.name == part) else {
                bail!(
                    "in [secrets.{}]: the template refers to {{{part}}}, which is not a secret in the manifest (nor {{env}} or {{project}}); fix the spelling, or add a [secrets.{part}] table",
                    s.name
                );
            };
            if p.kind == Kind::File {
                bail!(
                    "in [secrets.{}]: the template refers to the file secret {part:?}; templates take text secrets",
                    s.name
                );
            }
            for e in &s.environments {
                if !p.applies_to(e) {
                    bail!(
                        "in [secrets.{}]: it exists in {e:?} but its part {part:?} does not",
                        s.name
                    );
                }
            }
        }
    }
    let mut ordered: Vec<SecretSpec> = Vec::with_capacity(secrets.len());
    let mut pending = secrets;
    while !pending.is_empty() {
        let before = pending.len();
        let mut i = 0;
        while i < pending.len() {
            let ready = pending[i]
                .template_parts()
                .iter()
                .all(|p| p == "env" || p == "project" || ordered.iter().any(|o| &o.name == p));
            if ready {
                ordered.push(pending.remove(i));
            } else {
                i += 1;
            }
        }
        if pending.len() == before {
            let names: Vec<_> = pending.iter().map(|s| s.name.as_str()).collect();
            bail!(
                "derived secrets refer to each other in a cycle: {}; build each derived secret from plain secrets (password, key, username) so its parts come first",
                names.join(", ")
            );
        }
    }
    Ok(ordered)
}

fn check_name(name: &str, what: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if !ok {
        bail!(
            "{what} name {name:?} must be 1-32 characters of a-z, 0-9 and '-', not starting with '-'"
        );
    }
    Ok(())
}

fn check_secret_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !ok {
        bail!(
            "secret name {name:?} must be 1-40 characters of a-z, 0-9 and '_', starting with a letter"
        );
    }
    Ok(())
}

/// A store's or runtime's own settings table, read by that module alone.
pub type Settings = Reader;

/// Typed access to one TOML table that reports unknown keys and wrong types with
/// the table's name.
pub struct Reader {
    table: Table,
    at: String,
}

impl Reader {
    /// Reads `table`; errors name it as `at` (e.g. `[environments.develop]`).
    pub(crate) fn new(table: Table, at: String) -> Reader {
        Reader { table, at }
    }

    fn take(&mut self, key: &str) -> Option<Value> {
        self.table.remove(key)
    }

    fn type_err(&self, key: &str, want: &str) -> anyhow::Error {
        anyhow::anyhow!("in {}: `{key}` must be {want}", self.at)
    }

    /// Takes the string `key`, `None` when absent; an error if it is not a string.
    pub fn opt_str(&mut self, key: &str) -> Result<Option<String>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.type_err(key, "a string")),
        }
    }

    /// Takes the string `key`; an error if it is absent or not a string.
    pub(crate) fn req_str(&mut self, key: &str) -> Result<String> {
        match self.opt_str(key)? {
            Some(s) => Ok(s),
            None => bail!("in {}: `{key}` is missing", self.at),
        }
    }

    /// Takes the boolean `key`, `None` when absent.
    pub(crate) fn opt_bool(&mut self, key: &str) -> Result<Option<bool>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Boolean(b)) => Ok(Some(b)),
            Some(_) => Err(self.type_err(key, "true or false")),
        }
    }

    /// Takes the whole number `key` (1 to 1000000), `None` when absent.
    pub(crate) fn opt_usize(&mut self, key: &str) -> Result<Option<usize>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Integer(i)) if (1..=1_000_000).contains(&i) => Ok(Some(i as usize)),
            Some(_) => Err(self.type_err(key, "a whole number from 1 to 1000000")),
        }
    }

    /// A number of days, 0 (no policy) to 3650.
    pub fn opt_days(&mut self, key: &str) -> Result<Option<u32>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Integer(i)) if (0..=3650).contains(&i) => Ok(Some(i as u32)),
            Some(_) => Err(self.type_err(
                key,
                "a whole number of days from 0 (no rotation policy) to 3650, e.g. rotate_every_days = 90",
            )),
        }
    }

    /// Takes the list of strings `key`, empty when absent.
    pub(crate) fn opt_str_list(&mut self, key: &str) -> Result<Vec<String>> {
        match self.take(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(self.type_err(key, "a list of strings")),
                })
                .collect(),
            Some(_) => Err(self.type_err(key, "a list of strings")),
        }
    }

    /// Takes `key` as `"UID:GID"` in numbers, `None` when absent.
    pub(crate) fn opt_owner(&mut self, key: &str) -> Result<Option<(u32, u32)>> {
        let Some(s) = self.opt_str(key)? else {
            return Ok(None);
        };
        let parsed = s
            .split_once(':')
            .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)));
        match parsed {
            Some(o) => Ok(Some(o)),
            None => bail!(
                "in {}: `{key}` must be \"UID:GID\" in numbers, e.g. \"999:999\"; got {s:?}",
                self.at
            ),
        }
    }

    fn req_tables(&mut self, key: &str) -> Result<BTreeMap<String, Table>> {
        Ok(self.req_tables_ordered(key)?.into_iter().collect())
    }

    /// Sub-tables in file order (`preserve_order`), so output follows the manifest.
    fn req_tables_ordered(&mut self, key: &str) -> Result<Vec<(String, Table)>> {
        match self.take(key) {
            None => bail!("in {}: [{key}.NAME] tables are missing", self.at),
            Some(Value::Table(t)) => t
                .into_iter()
                .map(|(k, v)| match v {
                    Value::Table(t) => Ok((k, t)),
                    _ => bail!("in {}: `{key}.{k}` must be a table ([{key}.{k}])", self.at),
                })
                .collect(),
            Some(_) => Err(self.type_err(key, "a table")),
        }
    }

    /// Ends the reading: an error names the first key nobody took (a typo).
    pub(crate) fn finish(self) -> Result<()> {
        if let Some(k) = self.table.keys().next() {
            bail!(
                "in {}: unknown key `{k}`; check its spelling against the manifest reference in docs/configuration.md",
                self.at
            );
        }
        Ok(())
    }
}

/// `; did you mean "x"?` when one candidate is within two edits of `name`
/// (ignoring case), else nothing.
pub fn did_you_mean<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    let lower = name.to_ascii_lowercase();
    candidates
        .map(|c| (edit_distance(&lower, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= 2.max(lower.len() / 5))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| format!("; did you mean {c:?}?"))
        .unwrap_or_default()
}

/// Levenshtein distance, over bytes (names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASIC: &str = r#"
project = "demo"
[environments.production]
backend = "swarm"
[environments.develop]
backend = "compose"
[secrets.database_url]
kind = "derived"
template = "postgresql://{postgres_user}:{postgres_password}@db/{env}"
[secrets.postgres_user]
kind = "username"
default = "demo_{env}"
[secrets.postgres_password]
kind = "password"
services = ["db", "api"]
"#;

    #[test]
    fn rotation_policy_per_environment_and_secret() {
        let m = Manifest::parse(&BASIC.replace(
            "backend = \"swarm\"\n",
            "backend = \"swarm\"\nrotate_every_days = 30\n",
        ))
        .unwrap();
        let (prod, dev) = (m.env("production").unwrap(), m.env("develop").unwrap());
        let pw = m.secret("postgres_password").unwrap();
        assert_eq!(pw.rotate_every_days(prod), Some(30));
        assert_eq!(pw.rotate_every_days(dev), Some(90));
        let user = m.secret("postgres_user").unwrap();
        assert_eq!(user.rotate_every_days(prod), None);
        let m = Manifest::parse(&BASIC.replace(
            "kind = \"password\"\n",
            "kind = \"password\"\nrotate_every_days = 0\n",
        ))
        .unwrap();
        assert_eq!(
            m.secret("postgres_password")
                .unwrap()
                .rotate_every_days(prod),
            None
        );
        for bad in ["-1", "4000", "\"90\"", "1.5"] {
            let e = Manifest::parse(&BASIC.replace(
                "kind = \"password\"\n",
                &format!("kind = \"password\"\nrotate_every_days = {bad}\n"),
            ))
            .unwrap_err();
            let e = format!("{e:#}");
            assert!(
                e.contains("[secrets.postgres_password]: `rotate_every_days` must be a whole number of days from 0"),
                "{e}"
            );
        }
    }

    #[test]
    fn parses_and_orders_parts_first() {
        let m = Manifest::parse(BASIC).unwrap();
        assert_eq!(m.project, "demo");
        let names: Vec<_> = m.secrets.iter().map(|s| s.name.as_str()).collect();
        let url = names.iter().position(|n| *n == "database_url").unwrap();
        assert!(names.iter().position(|n| *n == "postgres_user").unwrap() < url);
        assert!(
            names
                .iter()
                .position(|n| *n == "postgres_password")
                .unwrap()
                < url
        );
        assert_eq!(m.env("production").unwrap().min_length, 32);
        assert!(m.env("production").unwrap().production);
        let dev = m.env("develop").unwrap();
        assert_eq!(
            (dev.min_length, dev.generate, dev.production),
            (16, true, false)
        );
        assert_eq!(
            m.secret("postgres_password").unwrap().services,
            ["db", "api"]
        );
    }

    #[test]
    fn errors_name_the_table_and_the_fix() {
        let e = Manifest::parse(&BASIC.replace("kind = \"password\"", "kind = \"pasword\""))
            .unwrap_err();
        assert!(
            format!("{e:#}").contains("[secrets.postgres_password]: unknown kind \"pasword\""),
            "{e:#}"
        );
        let e = Manifest::parse(&BASIC.replace("backend = \"swarm\"", "backend = \"nomad\""))
            .unwrap_err();
        assert!(
            format!("{e:#}").contains("[environments.production]: unknown backend"),
            "{e:#}"
        );
        let e = Manifest::parse(&BASIC.replace("{postgres_user}", "{pg_user}")).unwrap_err();
        assert!(format!("{e:#}").contains("{pg_user}"), "{e:#}");
        let e = Manifest::parse(&format!("{BASIC}\nsevices = 1\n")).unwrap_err();
        assert!(format!("{e:#}").contains("unknown key `sevices`"), "{e:#}");
        let e =
            Manifest::parse(&BASIC.replace("default = \"demo_{env}\"", "default = 3")).unwrap_err();
        assert!(
            format!("{e:#}").contains("`default` must be a string"),
            "{e:#}"
        );
    }

    #[test]
    fn rejects_cycles_and_bad_names() {
        let cyc = r#"
project = "demo"
[environments.develop]
backend = "compose"
[secrets.a]
kind = "derived"
template = "{b}"
[secrets.b]
kind = "derived"
template = "{a}"
"#;
        let e = Manifest::parse(cyc).unwrap_err();
        assert!(format!("{e:#}").contains("cycle"), "{e:#}");
        let bad = BASIC.replace("[secrets.postgres_password]", "[secrets.Postgres-Password]");
        assert!(Manifest::parse(&bad).is_err());
    }

    #[test]
    fn template_refs_skip_escaped_braces() {
        assert_eq!(template_refs("{{x}} {a}:{b}@{a}"), ["a", "b"]);
    }

    #[test]
    fn near_misses_get_a_suggestion() {
        let envs = ["develop", "production", "staging"];
        assert_eq!(
            did_you_mean("prodution", envs.iter().copied()),
            "; did you mean \"production\"?"
        );
        assert_eq!(
            did_you_mean("Staging", envs.iter().copied()),
            "; did you mean \"staging\"?"
        );
        assert_eq!(did_you_mean("qa", envs.iter().copied()), "");
        assert_eq!(edit_distance("jwt_secret", "jwt_secrte"), 2);
    }
}
