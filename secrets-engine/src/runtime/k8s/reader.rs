//! `delivery = "reader"` on the k8s runtime: the manifests as deploy applies
//! them when services read Vault or AWS at run time. Pure text in, text out,
//! before interpolation, so the credential's Secret is named like any other
//! (`${XTASK_SECRET_<CREDENTIAL>}`, the current version).
//!
//! In every workload whose pods use one of the manifest's secrets:
//! - each Secret volume or projected source of those secrets gives way to the
//!   credential (key and file named like it), once per volume, keeping the
//!   volume's name, mount path and mode;
//! - `env.valueFrom.secretKeyRef` and `envFrom.secretRef` entries of those
//!   secrets go (a variable holding a value is what reader delivery avoids);
//!   a container that read secrets only that way mounts the credential at
//!   [`OWN_MOUNT`];
//! - each such container gets the reader's variables (address, mount or
//!   prefix, `SECRETS_ORDER`, and the credential file's path as mounted in
//!   that container). No variable holds a value.
//!
//! Everything else, Secrets of other tools included, is left as it was.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::super::ReaderDeploy;

/// Where a container that had no secret volume mounts the credential.
pub const OWN_MOUNT: &str = "/run/xtask-credential";
const OWN_VOLUME: &str = "xtask-reader-credential";

/// Pure: `text` (one manifest file, several YAML documents) for reader
/// delivery. `shown` names the file in errors.
pub fn render(text: &str, shown: &str, r: &ReaderDeploy) -> Result<String> {
    use serde::Deserialize;
    let mut out = String::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let v = serde_norway::Value::deserialize(doc)
            .map_err(|e| anyhow::anyhow!("{shown}: not valid YAML: {e}"))?;
        if v.is_null() {
            continue;
        }
        let mut v: Value = serde_json::to_value(&v).with_context(|| {
            format!("{shown}: document {} is YAML that JSON cannot hold", i + 1)
        })?;
        octal_modes(&mut v);
        let kind = v["kind"].as_str().unwrap_or_default().to_string();
        let id = format!(
            "{shown}: {} {}",
            kind.to_ascii_lowercase(),
            v.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
        );
        if super::WORKLOAD_KINDS.contains(&kind.as_str())
            && let Some(spec) = v.pointer_mut("/spec/template/spec")
        {
            edit_pod(spec, r, &id)?;
        }
        let yaml = serde_norway::to_string(&v)
            .map_err(|e| anyhow::anyhow!("{shown}: cannot write the manifest back: {e}"))?;
        out.push_str("---\n");
        out.push_str(&yaml);
    }
    Ok(out)
}

/// File modes written the YAML 1.1 way (`0440`), as kubectl reads them: a
/// YAML 1.2 parser keeps them as strings, which would be written back quoted.
fn octal_modes(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                let octal = x.as_str().filter(|t| {
                    t.len() > 1
                        && t.starts_with('0')
                        && t.bytes().all(|b| (b'0'..=b'7').contains(&b))
                });
                match octal.map(|t| u32::from_str_radix(t, 8)) {
                    Some(Ok(n)) if k == "defaultMode" || k == "mode" => *x = json!(n),
                    _ => octal_modes(x),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(octal_modes),
        _ => {}
    }
}

/// Whether a Secret name (as written, before interpolation) is one of the
/// manifest's secrets.
fn is_stored(name: Option<&str>, r: &ReaderDeploy) -> bool {
    name.and_then(super::secret_of_reference)
        .is_some_and(|s| r.secrets.contains(&s))
}

fn credential_ref(r: &ReaderDeploy) -> Value {
    json!({
        "name": format!("${{XTASK_SECRET_{}:?set by cargo xtask deploy}}", r.credential.to_ascii_uppercase()),
        "items": [{"key": r.credential, "path": r.credential}],
    })
}

/// One pod spec: volumes, then each container.
fn edit_pod(spec: &mut Value, r: &ReaderDeploy, id: &str) -> Result<()> {
    let volumes = edit_volumes(spec, r);
    let mut own_volume = false;
    for list in ["initContainers", "containers"] {
        let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in cs {
            let by_env = drop_env_refs(c, r);
            let mounted = credential_mount(c, &volumes, r, id)?;
            let path = match mounted {
                Some(p) => p,
                None if by_env => {
                    own_volume = true;
                    push(
                        c,
                        "volumeMounts",
                        json!({"name": OWN_VOLUME, "mountPath": OWN_MOUNT, "readOnly": true}),
                    );
                    format!("{OWN_MOUNT}/{}", r.credential)
                }
                None => continue,
            };
            set_env(c, r, &path);
        }
    }
    if own_volume {
        let mut secret = credential_ref(r);
        secret["secretName"] = secret["name"].take();
        secret.as_object_mut().map(|o| o.remove("name"));
        secret["defaultMode"] = json!(0o440);
        push(
            spec,
            "volumes",
            json!({"name": OWN_VOLUME, "secret": secret}),
        );
    }
    Ok(())
}

/// Replaces the manifest's secrets in the volumes by the credential; returns
/// the names of the volumes that now hold it.
fn edit_volumes(spec: &mut Value, r: &ReaderDeploy) -> Vec<String> {
    let mut out = Vec::new();
    for vol in spec
        .get_mut("volumes")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        let name = vol["name"].as_str().unwrap_or_default().to_string();
        if let Some(s) = vol.get_mut("secret")
            && is_stored(s["secretName"].as_str(), r)
        {
            let mode = s.get("defaultMode").cloned();
            let mut new = credential_ref(r);
            new["secretName"] = new["name"].take();
            new.as_object_mut().map(|o| o.remove("name"));
            if let Some(m) = mode {
                new["defaultMode"] = m;
            }
            *s = new;
            out.push(name);
            continue;
        }
        let Some(sources) = vol
            .pointer_mut("/projected/sources")
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        let before = sources.len();
        sources.retain(|src| !is_stored(src.pointer("/secret/name").and_then(Value::as_str), r));
        if sources.len() < before {
            sources.push(json!({"secret": credential_ref(r)}));
            out.push(name);
        }
    }
    out
}

/// Drops a container's variables that come from the manifest's secrets;
/// true when there were any.
fn drop_env_refs(c: &mut Value, r: &ReaderDeploy) -> bool {
    let mut dropped = false;
    for (key, ptr) in [
        ("env", "/valueFrom/secretKeyRef/name"),
        ("envFrom", "/secretRef/name"),
    ] {
        if let Some(list) = c.get_mut(key).and_then(Value::as_array_mut) {
            let before = list.len();
            list.retain(|e| !is_stored(e.pointer(ptr).and_then(Value::as_str), r));
            dropped |= list.len() < before;
        }
    }
    dropped
}

/// Where this container sees the credential file, if it mounts a volume
/// that holds it.
fn credential_mount(
    c: &Value,
    volumes: &[String],
    r: &ReaderDeploy,
    id: &str,
) -> Result<Option<String>> {
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        if !volumes.iter().any(|v| m["name"] == v.as_str()) {
            continue;
        }
        if m.get("subPath").is_some() || m.get("subPathExpr").is_some() {
            bail!(
                "{id}: container {} mounts the secret volume {} with a subPath, so the credential file ({}) would not be in it; mount the whole volume for delivery = \"reader\"",
                c["name"].as_str().unwrap_or_default(),
                m["name"].as_str().unwrap_or_default(),
                r.credential
            );
        }
        let dir = m["mountPath"]
            .as_str()
            .unwrap_or_default()
            .trim_end_matches('/');
        return Ok(Some(format!("{dir}/{}", r.credential)));
    }
    Ok(None)
}

/// Sets the reader's variables (replacing any of the same name); `$` is
/// doubled so interpolation leaves it as written.
fn set_env(c: &mut Value, r: &ReaderDeploy, path: &str) {
    let mounted = format!("/run/secrets/{}", r.credential);
    if c.get("env").and_then(Value::as_array).is_none() {
        c["env"] = json!([]);
    }
    let env = c["env"].as_array_mut().expect("just made an array");
    for (k, v) in &r.vars {
        // The credential's variable names the file where this container sees it.
        let v = if *v == mounted { path } else { v.as_str() };
        env.retain(|e| e["name"] != k.as_str());
        env.push(json!({"name": k, "value": v.replace('$', "$$")}));
    }
}

fn push(v: &mut Value, key: &str, item: Value) {
    if v.get(key).and_then(Value::as_array).is_none() {
        v[key] = json!([]);
    }
    if let Some(a) = v[key].as_array_mut() {
        a.push(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: api}
spec: {ports: [{port: 80, protocol: TCP}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  template:
    spec:
      containers:
      - name: api
        image: "${API_IMAGE:-api:1}"
        env:
        - {name: SECRETS_DIR, value: /run/secrets}
        - {name: VAULT_ADDR, value: "http://old"}
        volumeMounts: [{name: secrets, mountPath: /etc/app/secrets/, readOnly: true}]
      - name: sidecar
        image: side
        env:
        - name: DB_PASSWORD
          valueFrom: {secretKeyRef: {name: "${XTASK_SECRET_DB_PASSWORD:?set by cargo xtask deploy}", key: db_password}}
        - {name: PLAIN, value: "a$$b"}
        envFrom: [{secretRef: {name: other-tool}}]
      - name: untouched
        image: u
      volumes:
      - name: secrets
        projected:
          defaultMode: 288
          sources:
          - secret: {name: "${XTASK_SECRET_DB_PASSWORD:?set by cargo xtask deploy}", items: [{key: db_password, path: db_password}]}
          - secret: {name: "${XTASK_SECRET_JWT:?set by cargo xtask deploy}", items: [{key: jwt, path: jwt}]}
          - configMap: {name: settings}
      - name: tls
        secret: {secretName: "${XTASK_SECRET_TLS_KEY:?set by cargo xtask deploy}", defaultMode: 0400}
"#;

    fn reader() -> ReaderDeploy {
        ReaderDeploy {
            secrets: vec!["db_password".into(), "jwt".into(), "tls_key".into()],
            vars: vec![
                ("VAULT_ADDR".into(), "http://vault:8200".into()),
                ("SECRETS_VAULT_PREFIX".into(), "p$x/prod".into()),
                ("VAULT_TOKEN_FILE".into(), "/run/secrets/vault_token".into()),
            ],
            credential: "vault_token".into(),
        }
    }

    fn docs(text: &str) -> Vec<Value> {
        use serde::Deserialize;
        serde_norway::Deserializer::from_str(text)
            .map(|d| serde_json::to_value(serde_norway::Value::deserialize(d).unwrap()).unwrap())
            .collect()
    }

    fn env_of(c: &Value) -> Vec<(String, String)> {
        c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let v = e["value"].as_str().unwrap_or("<from>");
                (e["name"].as_str().unwrap().into(), v.into())
            })
            .collect()
    }

    #[test]
    fn stored_secrets_give_way_to_the_credential_and_the_variables() {
        let out = render(FILE, "deploy/k8s/api.yaml", &reader()).unwrap();
        let d = docs(&out);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0], docs(FILE)[0], "the Service is unchanged");
        let spec = &d[1]["spec"]["template"]["spec"];
        let cred = json!({"name": "${XTASK_SECRET_VAULT_TOKEN:?set by cargo xtask deploy}",
            "items": [{"key": "vault_token", "path": "vault_token"}]});
        assert_eq!(
            spec["volumes"][0]["projected"],
            json!({"defaultMode": 288, "sources": [{"configMap": {"name": "settings"}}, {"secret": cred}]})
        );
        assert_eq!(
            spec["volumes"][1]["secret"],
            json!({"secretName": "${XTASK_SECRET_VAULT_TOKEN:?set by cargo xtask deploy}",
                "items": [{"key": "vault_token", "path": "vault_token"}], "defaultMode": 256})
        );
        // The api mounts the projected volume: the credential's path there.
        let api = &spec["containers"][0];
        assert_eq!(
            env_of(api),
            [
                ("SECRETS_DIR".into(), "/run/secrets".into()),
                ("VAULT_ADDR".into(), "http://vault:8200".into()),
                ("SECRETS_VAULT_PREFIX".into(), "p$$x/prod".into()),
                (
                    "VAULT_TOKEN_FILE".into(),
                    "/etc/app/secrets/vault_token".into()
                ),
            ]
        );
        // The sidecar read a value from a variable: gone, and it mounts the
        // credential on its own; a Secret of another tool stays.
        let side = &spec["containers"][1];
        let names: Vec<String> = env_of(side).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            names,
            [
                "PLAIN",
                "VAULT_ADDR",
                "SECRETS_VAULT_PREFIX",
                "VAULT_TOKEN_FILE"
            ]
        );
        assert_eq!(env_of(side)[3].1, format!("{OWN_MOUNT}/vault_token"));
        assert_eq!(
            side["envFrom"],
            json!([{"secretRef": {"name": "other-tool"}}])
        );
        assert_eq!(
            side["volumeMounts"],
            json!([{"name": OWN_VOLUME, "mountPath": OWN_MOUNT, "readOnly": true}])
        );
        assert_eq!(spec["volumes"][2]["name"], OWN_VOLUME);
        assert_eq!(
            spec["containers"][2],
            docs(FILE)[1]["spec"]["template"]["spec"]["containers"][2]
        );
        assert!(!out.contains("XTASK_SECRET_DB_PASSWORD") && !out.contains("XTASK_SECRET_JWT:"));
    }

    #[test]
    fn a_sub_path_mount_of_a_secret_volume_is_refused() {
        let f = FILE.replace(
            "mountPath: /etc/app/secrets/,",
            "mountPath: /etc/app/pw, subPath: db_password,",
        );
        let e = render(&f, "deploy/k8s/api.yaml", &reader())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("deploy/k8s/api.yaml: deployment api: container api mounts the secret volume secrets with a subPath"),
            "{e}"
        );
    }
}
