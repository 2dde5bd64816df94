//! Kubernetes Secrets, one immutable Secret per secret version
//! (`<project>-<env>-<name>-v<N>`, one key named like the secret). Versioned
//! and immutable for the same reason as Swarm's: a workload's pod template names
//! the version it reads, so a rotation is a template change that Kubernetes
//! rolls out, and a failed rollout leaves the old pods on the old Secret.
//!
//! Secrets are built here (pure) and applied on stdin with server-side apply,
//! never client-side apply, which would copy each value into the
//! `last-applied-configuration` annotation. Labels name the project,
//! environment, secret and version; annotations carry the keyed fingerprint and
//! the rotation time (`creationTimestamp` says nothing about the value's age).

use anyhow::{Result, bail};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::{Item, Scope, SecretStore};
use crate::{
    model::manifest::BackendKind,
    model::secret::SecretValue,
    model::time,
    plan::{Naming, Step, Stored},
    tools::kube::{self, Kubectl},
};

/// The API server refuses Secrets larger than 1 MiB.
pub const MAX_SECRET_BYTES: usize = 1024 * 1024;

pub(crate) struct K8sStore {
    kubectl: Kubectl,
    project: String,
    env: String,
}

/// `<project>-<env>-<name>-v<N>`, with `_` as `-` (object names are DNS names).
pub fn object_name(project: &str, env: &str, secret: &str, version: u32) -> String {
    format!("{project}-{env}-{}-v{version}", secret.replace('_', "-"))
}

/// Kubernetes' rule for data keys: `[-._a-zA-Z0-9]+`, at most 253, not `.` or `..`.
pub fn check_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && key
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'));
    if !ok {
        bail!(
            "{key:?} is not a valid Kubernetes Secret key (at most 253 of letters, digits, `-`, `_`, `.`; not `.` or `..`); rename the secret in deploy/secrets.toml"
        );
    }
    Ok(())
}

/// Standard base64 with padding, for a Secret's `data` (no crate for 20 lines).
pub fn base64(bytes: &[u8]) -> Zeroizing<String> {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Zeroizing::new(String::with_capacity(bytes.len().div_ceil(3) * 4));
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `text` with `value` and its base64 form replaced by `<redacted>`.
pub fn scrub(text: &str, value: &[u8]) -> String {
    let mut out = text.to_string();
    let b64 = base64(value);
    for form in [String::from_utf8_lossy(value).into_owned(), b64.to_string()] {
        if form.len() >= 4 {
            out = out.replace(&form, "<redacted>");
        }
    }
    out
}

/// The Secret for one planned version. `rotated_at` is RFC 3339.
pub fn secret_object(
    project: &str,
    env: &str,
    step: &Step,
    fingerprint: &str,
    value: Option<&[u8]>,
    rotated_at: &str,
) -> Value {
    let labels: serde_json::Map<String, Value> =
        super::labels(project, env, &step.secret, step.version)
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
    let data = match value {
        Some(v) => Value::String(base64(v).to_string()),
        None => Value::String("<redacted>".into()),
    };
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": step.id,
            "labels": labels,
            "annotations": {
                "xtask.fingerprint": fingerprint,
                "xtask.rotated-at": rotated_at,
            },
        },
        "type": "Opaque",
        "immutable": true,
        "data": { step.secret.clone(): data },
    })
}

/// Parses the output of `LIST_JSONPATH`:
/// `name|env|secret|version|fingerprint|rotated-at|created` lines.
pub fn parse_listing(text: &str, env: &str) -> Vec<Stored> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.trim().split('|').collect();
            let [name, e, secret, version, fp, rotated, created] = f[..] else {
                return None;
            };
            if e != env || secret.is_empty() {
                return None;
            }
            Some(Stored {
                id: name.to_string(),
                secret: secret.to_string(),
                version: Some(version.parse().ok()?),
                fingerprint: fp.to_string(),
                created: time::parse_rfc3339(rotated).or_else(|| time::parse_rfc3339(created)),
                fix: None,
                kept: None,
            })
        })
        .collect()
}

/// Metadata only: the values never leave the cluster when listing.
const LIST_JSONPATH: &str = r#"jsonpath={range .items[*]}{.metadata.name}{"|"}{.metadata.labels.xtask\.environment}{"|"}{.metadata.labels.xtask\.secret}{"|"}{.metadata.labels.xtask\.version}{"|"}{.metadata.annotations.xtask\.fingerprint}{"|"}{.metadata.annotations.xtask\.rotated-at}{"|"}{.metadata.creationTimestamp}{"\n"}{end}"#;

impl K8sStore {
    pub(crate) fn new(s: &Scope) -> Result<K8sStore> {
        let settings = kube::settings(&s.manifest.project, s.env)?;
        Ok(K8sStore {
            kubectl: Kubectl::new(&settings)?,
            project: s.manifest.project.clone(),
            env: s.env.name.clone(),
        })
    }

    /// The Secrets a plan would apply, values redacted: what `--dry-run` shows.
    pub fn redacted(&self, steps: &[Step]) -> String {
        let now = time::rfc3339(std::time::SystemTime::now());
        let items: Vec<Value> = steps
            .iter()
            .filter(|s| s.action.writes())
            .map(|s| secret_object(&self.project, &self.env, s, "<fingerprint>", None, &now))
            .collect();
        serde_json::to_string_pretty(&items).unwrap_or_default()
    }
}

impl Naming for K8sStore {
    fn versioned(&self) -> bool {
        true
    }

    fn identity(&self, secret: &str, version: u32) -> String {
        object_name(&self.project, &self.env, secret, version)
    }
}

impl SecretStore for K8sStore {
    fn kind(&self) -> BackendKind {
        BackendKind::K8s
    }

    fn keeps_fingerprints(&self) -> bool {
        true
    }

    fn check(&self, secret: &str, origin: &str, value: &[u8]) -> Result<()> {
        check_key(secret)?;
        kube::check_object_name(&self.identity(secret, 999))?;
        if value.len() > MAX_SECRET_BYTES {
            bail!(
                "{origin}: {secret} is {} bytes; Kubernetes Secrets must be at most 1 MiB; store a smaller value",
                value.len()
            );
        }
        Ok(())
    }

    fn list(&self, _key: &SecretValue) -> Result<Vec<Stored>> {
        let sel = format!(
            "xtask.project={},xtask.environment={}",
            self.project, self.env
        );
        let out = self
            .kubectl
            .read(&["get", "secrets", "-l", &sel, "-o", LIST_JSONPATH])?;
        let listed = parse_listing(&out, &self.env);
        if listed.is_empty() {
            // Listing in a namespace that does not exist answers "nothing".
            self.kubectl.namespace_exists()?;
        }
        Ok(listed)
    }

    fn write(&self, items: &[Item]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let now = time::rfc3339(std::time::SystemTime::now());
        let objects: Vec<Value> = items
            .iter()
            .map(|it| {
                secret_object(
                    &self.project,
                    &self.env,
                    it.step,
                    &it.fingerprint,
                    Some(it.value.expose()),
                    &now,
                )
            })
            .collect();
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
        let doc = Zeroizing::new(serde_json::to_vec(&list)?);
        drop(list);
        self.kubectl.apply(&doc).map_err(|e| {
            // The API server may quote the object it refused: never pass a value on.
            let mut text = format!("{e:#}");
            for it in items {
                text = scrub(&text, it.value.expose());
            }
            anyhow::anyhow!(
                "cannot create {} Secret(s) in namespace {}: {text}; re-run setup-secrets: what was created is kept",
                items.len(),
                self.kubectl.namespace
            )
        })?;
        Ok(())
    }

    fn preview(&self, steps: &[Step]) -> Option<String> {
        steps
            .iter()
            .any(|s| s.action.writes())
            .then(|| self.redacted(steps))
    }

    fn delete(&self, steps: &[Step]) -> Result<()> {
        if steps.is_empty() {
            return Ok(());
        }
        let mut args = vec!["delete", "secret", "--ignore-not-found"];
        args.extend(steps.iter().map(|s| s.id.as_str()));
        self.kubectl.read(&args)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Action;

    #[test]
    fn base64_matches_the_standard() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
            ("\u{ff}\u{fe}", "w7/Dvg=="),
        ] {
            assert_eq!(base64(raw.as_bytes()).as_str(), enc, "{raw:?}");
        }
    }

    #[test]
    fn errors_are_scrubbed_of_values() {
        let e = "Secret \"x\" is invalid: data: hunter2-value, aHVudGVyMi12YWx1ZQ==";
        let s = scrub(e, b"hunter2-value");
        assert!(
            !s.contains("hunter2") && !s.contains("aHVudGVyMi12YWx1ZQ=="),
            "{s}"
        );
        assert!(s.contains("<redacted>"));
    }

    #[test]
    fn names_and_keys_follow_kubernetes_rules() {
        assert_eq!(
            object_name("raqeem", "production", "postgres_password", 3),
            "raqeem-production-postgres-password-v3"
        );
        assert!(check_key("postgres_password").is_ok());
        assert!(check_key("..").is_err());
        assert!(check_key("a/b").is_err());
        assert!(check_key(&"a".repeat(254)).is_err());
    }

    #[test]
    fn secrets_are_immutable_labelled_and_never_show_values_in_previews() {
        let step = Step {
            secret: "jwt_secret".into(),
            action: Action::Create,
            id: "p-e-jwt-secret-v1".into(),
            version: Some(1),
            detail: String::new(),
        };
        let o = secret_object(
            "p",
            "e",
            &step,
            "fp1",
            Some(b"hunter2"),
            "2026-11-25T00:00:00Z",
        );
        assert_eq!(o["immutable"], true);
        assert_eq!(o["data"]["jwt_secret"], "aHVudGVyMg==");
        assert_eq!(o["metadata"]["labels"]["xtask.version"], "1");
        assert_eq!(o["metadata"]["labels"]["xtask.tool"], "cargo-xtask");
        assert_eq!(o["metadata"]["annotations"]["xtask.fingerprint"], "fp1");
        assert!(
            o["metadata"]["annotations"]
                .get("kubectl.kubernetes.io/last-applied-configuration")
                .is_none()
        );
        let p = secret_object("p", "e", &step, "fp1", None, "t");
        assert_eq!(p["data"]["jwt_secret"], "<redacted>");
    }

    #[test]
    fn listing_prefers_the_rotation_time() {
        let text =
            "p-e-a-v1|e|a|1|f1|2026-11-20T00:00:00Z|2026-11-25T00:00:00Z\np-x-a-v1|x|a|1|f|||\n";
        let l = parse_listing(text, "e");
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].created, time::parse_rfc3339("2026-11-20T00:00:00Z"));
        assert_eq!((l[0].version, l[0].fingerprint.as_str()), (Some(1), "f1"));
    }
}
