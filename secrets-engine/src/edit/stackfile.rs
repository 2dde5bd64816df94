//! Reading the compose files (`docker-compose.prod.yml`, `docker-compose.swarm.yml`)
//! for what they say about secrets, and checking that against the manifest.
//! Pure: text in, findings out.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, bail};
use serde_norway::Value;

/// One top-level `secrets:` definition of a compose file.
#[derive(Debug, Default, Clone)]
pub struct SecretDef {
    /// `file:`: the file compose mounts, as written.
    pub file: Option<String>,
    /// `name:`: the Docker name it stands for, as written.
    pub name: Option<String>,
    /// `external:`: the secret is made outside the file (by the store).
    pub external: bool,
}

/// What a compose or stack file says about secrets.
#[derive(Debug, Default, Clone)]
pub struct StackFile {
    /// Top-level `secrets:` by key.
    pub secrets: BTreeMap<String, SecretDef>,
    /// Each service's secret sources (short or long syntax).
    pub services: BTreeMap<String, Vec<String>>,
    /// Service → source → `target` where the long syntax gives one (the
    /// file is then `/run/secrets/<target>`, or the target itself when absolute).
    pub targets: BTreeMap<String, BTreeMap<String, String>>,
}

/// Reads a compose file's secrets and each service's; an error means the
/// text is not YAML or not a compose file.
pub fn parse(text: &str) -> Result<StackFile> {
    let doc: Value =
        serde_norway::from_str(text).map_err(|e| anyhow::anyhow!("not valid YAML ({e}); fix the file (for example `docker compose -f FILE config` points at the line)"))?;
    if !doc.is_mapping() {
        bail!(
            "not a compose file: its top level must be a mapping with `services:` (and `secrets:`); check that this is the right file"
        );
    }
    let mut out = StackFile::default();
    if let Some(secrets) = doc.get("secrets").and_then(Value::as_mapping) {
        for (k, v) in secrets {
            let Some(k) = k.as_str() else {
                bail!("a key under secrets: is not a string")
            };
            let s = |f: &str| v.get(f).and_then(Value::as_str).map(str::to_string);
            let external = v
                .get("external")
                .is_some_and(|e| e.as_bool().unwrap_or(true));
            out.secrets.insert(
                k.to_string(),
                SecretDef {
                    file: s("file"),
                    name: s("name"),
                    external,
                },
            );
        }
    }
    if let Some(services) = doc.get("services").and_then(Value::as_mapping) {
        for (k, v) in services {
            let Some(k) = k.as_str() else {
                bail!("a key under services: is not a string")
            };
            let mut refs = Vec::new();
            for item in v
                .get("secrets")
                .and_then(Value::as_sequence)
                .map(Vec::as_slice)
                .unwrap_or(&[])
            {
                match item {
                    Value::String(s) => refs.push(s.clone()),
                    other => match other.get("source").and_then(Value::as_str) {
                        Some(s) => {
                            refs.push(s.to_string());
                            if let Some(t) = other.get("target").and_then(Value::as_str) {
                                out.targets
                                    .entry(k.to_string())
                                    .or_default()
                                    .insert(s.to_string(), t.to_string());
                            }
                        }
                        None => bail!("service {k}: a secrets entry has no `source`"),
                    },
                }
            }
            out.services.insert(k.to_string(), refs);
        }
    }
    Ok(out)
}

impl StackFile {
    /// Where `service`'s container finds `secret`: `/run/secrets/<target>`
    /// (an absolute target as it is), else `/run/secrets/<secret>`.
    pub fn mount_path(&self, service: &str, secret: &str) -> String {
        match self.targets.get(service).and_then(|t| t.get(secret)) {
            Some(t) if t.starts_with('/') => t.clone(),
            Some(t) => format!("/run/secrets/{t}"),
            None => format!("/run/secrets/{secret}"),
        }
    }

    /// Services that use a secret the file's top-level `secrets:` does not define.
    pub fn undefined(&self, file: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (svc, refs) in &self.services {
            for r in refs {
                if !self.secrets.contains_key(r) {
                    out.push(format!("{file}: service {svc} uses secret {r}, which the file's top-level secrets: does not define"));
                }
            }
        }
        out
    }
}

/// Like [`interpolate`], but a `${VAR:?message}` or `${VAR?message}` whose
/// variable is unset is an error naming it, as Compose does.
pub fn interpolate_checked(text: &str, vars: &BTreeMap<String, String>) -> Result<String> {
    let mut missing = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        let body = &rest[i + 2..];
        let Some(end) = body.find('}') else { break };
        let expr = &body[..end];
        let len = expr
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count();
        let (name, op) = expr.split_at(len);
        let set = vars
            .get(name)
            .is_some_and(|v| !v.is_empty() || !op.starts_with(':'));
        if (op.starts_with(":?") || op.starts_with('?')) && !set && !rest[..i].ends_with('$') {
            missing.insert(name.to_string());
        }
        rest = &body[end + 1..];
    }
    if !missing.is_empty() {
        bail!(
            "required variables are not set: {}",
            missing.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(interpolate(text, vars))
}

/// What the reader delivery changes in a compose-format file: the stored
/// secrets it stops mounting, the variables each reading service gets, and
/// the credential's file secret with its top-level definition.
pub(crate) struct ReaderEdit<'a> {
    /// The stored secrets the services stop mounting.
    pub secrets: &'a [String],
    /// The variables each reading service gets (name, value).
    pub vars: &'a [(String, String)],
    /// The credential's file secret name.
    pub credential: &'a str,
    /// The credential's top-level `secrets:` definition.
    pub definition: Value,
}

/// Pure: the file for `delivery = "reader"`. Every service that mounts one
/// of `secrets` mounts the credential instead and gets `vars` (values with
/// `$` escaped, so Compose does not interpolate them); `secrets` leave the
/// top-level `secrets:` and the credential joins it. The rest is unchanged.
pub(crate) fn for_reader(text: &str, edit: &ReaderEdit) -> Result<String> {
    let mut doc: Value =
        serde_norway::from_str(text).map_err(|e| anyhow::anyhow!("not valid YAML ({e})"))?;
    let stored = |v: &Value| {
        let name = v
            .as_str()
            .or_else(|| v.get("source").and_then(Value::as_str));
        name.is_some_and(|n| edit.secrets.iter().any(|s| s == n))
    };
    if let Some(services) = doc.get_mut("services").and_then(Value::as_mapping_mut) {
        for (_, svc) in services.iter_mut() {
            let Some(list) = svc.get_mut("secrets").and_then(Value::as_sequence_mut) else {
                continue;
            };
            if !list.iter().any(stored) {
                continue;
            }
            list.retain(|v| !stored(v));
            list.push(Value::String(edit.credential.to_string()));
            set_environment(svc, edit.vars);
        }
    }
    if let Some(top) = doc.get_mut("secrets").and_then(Value::as_mapping_mut) {
        top.retain(|k, _| {
            !k.as_str()
                .is_some_and(|k| edit.secrets.iter().any(|s| s == k))
        });
        top.insert(
            Value::String(edit.credential.to_string()),
            edit.definition.clone(),
        );
    }
    serde_norway::to_string(&doc).map_err(|e| anyhow::anyhow!("cannot write the file back: {e}"))
}

/// Sets `vars` in a service's `environment:` (a mapping or a `K=V` list).
fn set_environment(svc: &mut Value, vars: &[(String, String)]) {
    let Some(m) = svc.as_mapping_mut() else {
        return;
    };
    let key = Value::String("environment".into());
    let mut env = serde_norway::Mapping::new();
    match m.get(&key) {
        Some(Value::Mapping(old)) => env = old.clone(),
        Some(Value::Sequence(old)) => {
            for item in old.iter().filter_map(Value::as_str) {
                let (k, v) = item.split_once('=').unwrap_or((item, ""));
                env.insert(Value::String(k.into()), Value::String(v.into()));
            }
        }
        _ => {}
    }
    for (k, v) in vars {
        env.insert(
            Value::String(k.clone()),
            Value::String(v.replace('$', "$$")),
        );
    }
    m.insert(key, Value::Mapping(env));
}

/// Compose-style variable interpolation for a preview: `${VAR}`, `${VAR:-default}`,
/// `${VAR-default}`, `${VAR:?message}`, `${VAR?message}`, `$VAR` and `$$`. An unset
/// variable without a default becomes empty (the preview never fails).
pub fn interpolate(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(body) = after.strip_prefix('{')
            && let Some(end) = body.find('}')
        {
            out.push_str(&expand(&body[..end], vars));
            rest = &body[end + 1..];
        } else {
            let len = after
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            if len == 0 {
                out.push('$');
                rest = after;
            } else {
                out.push_str(vars.get(&after[..len]).map(String::as_str).unwrap_or(""));
                rest = &after[len..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// One `${...}` expression: a name, then optionally `:-`, `-`, `:?` or `?` and an argument.
fn expand(expr: &str, vars: &BTreeMap<String, String>) -> String {
    let len = expr
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
        .count();
    let (name, op) = expr.split_at(len);
    let value = vars.get(name).map(String::as_str);
    let set_nonempty = value.is_some_and(|v| !v.is_empty());
    let (colon, op) = match op.strip_prefix(':') {
        Some(o) => (true, o),
        None => (false, op),
    };
    let use_value = if colon { set_nonempty } else { value.is_some() };
    match op.chars().next() {
        Some('-') if !use_value => op[1..].to_string(),
        _ => value.unwrap_or("").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_short_and_long_syntax() {
        let s = parse(
            "services:\n  api:\n    secrets: [db_password]\n  db:\n    secrets:\n      - source: db_password\n        target: pw\nsecrets:\n  db_password:\n    external: true\n    name: ${X:-demo_v1}\n",
        )
        .unwrap();
        assert_eq!(s.services["api"], ["db_password"]);
        assert_eq!(s.services["db"], ["db_password"]);
        assert_eq!(s.mount_path("db", "db_password"), "/run/secrets/pw");
        assert_eq!(
            s.mount_path("api", "db_password"),
            "/run/secrets/db_password"
        );
        assert!(s.secrets["db_password"].external);
        assert_eq!(
            s.secrets["db_password"].name.as_deref(),
            Some("${X:-demo_v1}")
        );
    }

    #[test]
    fn reader_files_mount_the_credential_instead_of_the_secrets() {
        let text = "services:\n  api:\n    image: x\n    environment: [A=1]\n    secrets: [db_password, other]\n  web:\n    image: y\nsecrets:\n  db_password:\n    file: ./s/db_password\n  other:\n    file: ./s/other\n";
        let def: Value = serde_norway::from_str("file: ./s/vault_token").unwrap();
        let out = for_reader(
            text,
            &ReaderEdit {
                secrets: &["db_password".to_string()],
                vars: &[("VAULT_ADDR".into(), "http://h:1/$x".into())],
                credential: "vault_token",
                definition: def,
            },
        )
        .unwrap();
        let s = parse(&out).unwrap();
        assert_eq!(s.services["api"], ["other", "vault_token"]);
        assert!(s.services["web"].is_empty());
        assert_eq!(
            s.secrets.keys().collect::<Vec<_>>(),
            ["other", "vault_token"]
        );
        let doc: Value = serde_norway::from_str(&out).unwrap();
        let env = &doc["services"]["api"]["environment"];
        assert_eq!(env["A"].as_str(), Some("1"));
        assert_eq!(env["VAULT_ADDR"].as_str(), Some("http://h:1/$$x"));
        assert!(doc["services"]["web"].get("environment").is_none());
    }

    #[test]
    fn interpolation() {
        let vars: BTreeMap<String, String> = [
            ("A".to_string(), "a1".to_string()),
            ("E".to_string(), String::new()),
        ]
        .into();
        assert_eq!(
            interpolate("x ${A} ${B:-dflt} ${E:-e} ${E-e} $A $$ $", &vars),
            "x a1 dflt e  a1 $ $"
        );
        assert_eq!(
            interpolate("n: ${A:?set by deploy} m: ${B?required}", &vars),
            "n: a1 m: "
        );
        let e =
            interpolate_checked("n: ${A:?x} m: ${B:?set by deploy} $${C:?y}", &vars).unwrap_err();
        assert_eq!(format!("{e}"), "required variables are not set: B");
        assert_eq!(interpolate_checked("${A:?x}", &vars).unwrap(), "a1");
    }
}
