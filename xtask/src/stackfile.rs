//! Reading the compose files (`docker-compose.prod.yml`, `docker-compose.swarm.yml`)
//! for what they say about secrets, and checking that against the manifest.
//! Pure: text in, findings out.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, bail};
use serde_norway::Value;

use crate::manifest::{BackendKind, Manifest};

#[derive(Debug, Default, Clone)]
pub struct SecretDef {
    pub file: Option<String>,
    pub name: Option<String>,
    pub external: bool,
}

#[derive(Debug, Default, Clone)]
pub struct StackFile {
    /// Top-level `secrets:` by key.
    pub secrets: BTreeMap<String, SecretDef>,
    /// Each service's secret sources (short or long syntax).
    pub services: BTreeMap<String, Vec<String>>,
}

pub fn parse(text: &str) -> Result<StackFile> {
    let doc: Value =
        serde_norway::from_str(text).map_err(|e| anyhow::anyhow!("not valid YAML: {e}"))?;
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
                        Some(s) => refs.push(s.to_string()),
                        None => bail!("service {k}: a secrets entry has no `source`"),
                    },
                }
            }
            out.services.insert(k.to_string(), refs);
        }
    }
    Ok(out)
}

/// Disagreements between a compose file and the manifest. `backend` says which
/// environments the file serves, so secrets that exist only elsewhere are not demanded.
pub fn check(
    manifest: &Manifest,
    backend: BackendKind,
    file: &str,
    stack: &StackFile,
) -> Vec<String> {
    let mut out = Vec::new();
    let envs: Vec<&str> = manifest
        .environments
        .values()
        .filter(|e| e.backend == backend)
        .map(|e| e.name.as_str())
        .collect();
    let relevant: Vec<_> = manifest
        .secrets
        .iter()
        .filter(|s| envs.is_empty() || envs.iter().any(|e| s.applies_to(e)))
        .collect();
    for name in stack.secrets.keys() {
        if manifest.secrets.iter().all(|s| &s.name != name) {
            out.push(format!("{file}: secret {name} is not in deploy/secrets.toml; add a [secrets.{name}] table or remove it"));
        }
    }
    for (name, def) in &stack.secrets {
        match backend {
            BackendKind::Swarm => {
                let var = format!("XTASK_SECRET_{}", name.to_ascii_uppercase());
                if !def.external || !def.name.as_deref().is_some_and(|n| n.contains(&var)) {
                    out.push(format!(
                        "{file}: secret {name} must be `external: true` with `name: ${{{var}:?set by cargo xtask deploy}}`, so deploy can point it at the current version"
                    ));
                }
            }
            _ => {
                if !def
                    .file
                    .as_deref()
                    .is_some_and(|f| f.ends_with(&format!("/{name}")))
                {
                    out.push(format!(
                        "{file}: secret {name} must be `file: ${{XTASK_SECRETS_DIR:-./secrets/develop}}/{name}`, the file setup-secrets writes"
                    ));
                }
            }
        }
    }
    for (svc, refs) in &stack.services {
        for r in refs {
            if !stack.secrets.contains_key(r) {
                out.push(format!("{file}: service {svc} uses secret {r}, which the file's top-level secrets: does not define"));
            }
        }
    }
    for spec in &relevant {
        let users: Vec<&String> = spec
            .services
            .iter()
            .filter(|s| stack.services.contains_key(*s))
            .collect();
        if !users.is_empty() && !stack.secrets.contains_key(&spec.name) {
            out.push(format!("{file}: secret {} is missing from the top-level secrets: (deploy/secrets.toml gives it to {})", spec.name, spec.services.join(", ")));
        }
        for svc in users {
            if !stack.services[svc].contains(&spec.name) {
                out.push(format!("{file}: service {svc} does not mount {}, but deploy/secrets.toml lists {svc} among its services", spec.name));
            }
        }
    }
    for (svc, refs) in &stack.services {
        for r in refs {
            if let Some(spec) = manifest.secrets.iter().find(|s| &s.name == r)
                && !spec.services.contains(svc)
            {
                out.push(format!("{file}: service {svc} mounts {r}, but deploy/secrets.toml does not list {svc} in its services"));
            }
        }
    }
    let unique: BTreeSet<String> = out.into_iter().collect();
    unique.into_iter().collect()
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

    const M: &str = r#"
project = "demo"
[environments.production]
backend = "swarm"
[environments.develop]
backend = "compose"
[secrets.db_password]
kind = "password"
services = ["api", "db"]
[secrets.tls_key]
kind = "file"
services = ["proxy"]
environments = ["production"]
"#;

    #[test]
    fn parses_short_and_long_syntax() {
        let s = parse(
            "services:\n  api:\n    secrets: [db_password]\n  db:\n    secrets:\n      - source: db_password\n        target: pw\nsecrets:\n  db_password:\n    external: true\n    name: ${X:-demo_v1}\n",
        )
        .unwrap();
        assert_eq!(s.services["api"], ["db_password"]);
        assert_eq!(s.services["db"], ["db_password"]);
        assert!(s.secrets["db_password"].external);
        assert_eq!(
            s.secrets["db_password"].name.as_deref(),
            Some("${X:-demo_v1}")
        );
    }

    #[test]
    fn finds_every_disagreement() {
        let m = Manifest::parse(M).unwrap();
        let s = parse("services:\n  api:\n    secrets: [db_password, stray]\n  db:\n    image: x\nsecrets:\n  db_password:\n    file: ./x\n").unwrap();
        let p = check(&m, BackendKind::Compose, "f.yml", &s);
        assert!(
            p.iter()
                .any(|x| x.contains("service api uses secret stray, which")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|x| x.contains("service db does not mount db_password")),
            "{p:?}"
        );
        // tls_key exists only in production (swarm): the compose file need not have it.
        assert!(!p.iter().any(|x| x.contains("tls_key")), "{p:?}");
        let ok = parse("services:\n  api:\n    secrets: [db_password]\n  db:\n    secrets: [db_password]\nsecrets:\n  db_password:\n    file: ./s/db_password\n").unwrap();
        assert!(check(&m, BackendKind::Compose, "f.yml", &ok).is_empty());
        let p = check(&m, BackendKind::Swarm, "s.yml", &ok);
        assert!(
            p.iter()
                .any(|x| x
                    .contains("must be `external: true` with `name: ${XTASK_SECRET_DB_PASSWORD")),
            "{p:?}"
        );
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
    }
}
