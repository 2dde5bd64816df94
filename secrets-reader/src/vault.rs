//! The `vault` provider: Vault (or OpenBao) KV version 2 over HTTP(S).

use std::path::PathBuf;

use percent_encoding::utf8_percent_encode;

use crate::remote;
use crate::{Error, Reader, Secret, Source, UNRESERVED, Wiped, finish, read_file};

/// Where one secret lives in Vault, read from the reader's environment.
struct Config {
    addr: String,
    namespace: Option<String>,
    /// `<mount>/data/<prefix>/<name>`, the API path after `/v1/`.
    path: String,
}

fn setting(reader: &Reader, var: &str) -> Option<String> {
    reader
        .var(var)
        .map(|v| v.to_string_lossy().trim().trim_matches('/').to_owned())
        .filter(|v| !v.is_empty())
}

/// `None` when `SECRETS_VAULT_PREFIX` is unset: Vault is then skipped unless
/// `SECRETS_ORDER` names it (`explicit`), which is an error.
fn config(reader: &Reader, name: &str, explicit: bool) -> Result<Option<Config>, Error> {
    let Some(prefix) = setting(reader, "SECRETS_VAULT_PREFIX") else {
        return if explicit {
            Err(Error::InvalidVar {
                var: "SECRETS_VAULT_PREFIX".to_owned(),
                reason: "must be set when $SECRETS_ORDER names vault",
            })
        } else {
            Ok(None)
        };
    };
    let Some(addr) = reader.var("VAULT_ADDR") else {
        return Err(Error::InvalidVar {
            var: "VAULT_ADDR".to_owned(),
            reason: "must be set when $SECRETS_VAULT_PREFIX is",
        });
    };
    let addr = addr
        .to_string_lossy()
        .trim()
        .trim_end_matches('/')
        .to_owned();
    if remote::split_url(&addr).is_none() {
        return Err(Error::InvalidVar {
            var: "VAULT_ADDR".to_owned(),
            reason: "is not an http:// or https:// URL",
        });
    }
    let mount = setting(reader, "SECRETS_VAULT_MOUNT").unwrap_or_else(|| "secret".to_owned());
    let path = format!("{mount}/data/{prefix}/{name}");
    Ok(Some(Config {
        addr,
        namespace: setting(reader, "VAULT_NAMESPACE"),
        path,
    }))
}

/// `$VAULT_TOKEN`, or the file `$VAULT_TOKEN_FILE` names (read on every
/// fetch, so a renewed token file is picked up).
fn token(reader: &Reader, source: &Source) -> Result<Wiped, Error> {
    let direct = reader
        .var("VAULT_TOKEN")
        .map(|v| Wiped(v.into_encoded_bytes()));
    let file = reader.var("VAULT_TOKEN_FILE").map(PathBuf::from);
    let mut token = match (direct, file) {
        (Some(_), Some(_)) => {
            return Err(Error::InvalidVar {
                var: "VAULT_TOKEN_FILE".to_owned(),
                reason: "and $VAULT_TOKEN are both set; set only one",
            });
        }
        (Some(t), None) => t,
        (None, Some(path)) => read_file(&path).map_err(|error| Error::Io {
            name: "vault token".to_owned(),
            source: Source::FileEnv {
                var: "VAULT_TOKEN_FILE".to_owned(),
                path,
            },
            error,
        })?,
        (None, None) => {
            return Err(Error::Provider {
                name: String::new(),
                source: source.clone(),
                reason: "no token: set $VAULT_TOKEN or $VAULT_TOKEN_FILE".to_owned(),
            });
        }
    };
    token.trim_newlines();
    Ok(token)
}

/// Looks `name` up in Vault: `Ok(None)` when Vault is not configured (and
/// not named in `SECRETS_ORDER`) or holds no such entry.
pub(crate) fn get(
    reader: &Reader,
    name: &str,
    explicit: bool,
    looked: &mut Vec<String>,
) -> Result<Option<Secret>, Error> {
    let Some(cfg) = config(reader, name, explicit)? else {
        return Ok(None);
    };
    let source = Source::Vault {
        addr: cfg.addr.clone(),
        path: cfg.path.clone(),
    };
    looked.push(source.to_string());
    let key = format!("vault {} {:?} {}", cfg.addr, cfg.namespace, cfg.path);
    remote::cached_or_fetch(reader, key, || fetch(reader, name, &cfg, source))
}

fn fetch(
    reader: &Reader,
    name: &str,
    cfg: &Config,
    source: Source,
) -> Result<Option<Secret>, Error> {
    let fail = |reason: String| Error::Provider {
        name: name.to_owned(),
        source: source.clone(),
        reason,
    };
    let token = token(reader, &source).map_err(|e| match e {
        Error::Provider { source, reason, .. } => Error::Provider {
            name: name.to_owned(),
            source,
            reason,
        },
        e => e,
    })?;
    let token_str = std::str::from_utf8(&token.0)
        .map_err(|_| fail("the Vault token is not valid UTF-8".to_owned()))?;
    let encoded: Vec<String> = cfg
        .path
        .split('/')
        .map(|s| utf8_percent_encode(s, UNRESERVED).to_string())
        .collect();
    let url = format!("{}/v1/{}", cfg.addr, encoded.join("/"));
    let mut request = reader
        .remote
        .agent()
        .get(&url)
        .header("X-Vault-Token", token_str)
        .header("X-Vault-Request", "true");
    if let Some(ns) = &cfg.namespace {
        request = request.header("X-Vault-Namespace", ns);
    }
    let mut response = request
        .call()
        .map_err(|e| fail(format!("request failed: {e}")))?;
    let status = response.status().as_u16();
    let body = remote::read_body(response.body_mut())
        .map_err(|e| fail(format!("HTTP {status}, reading the body failed: {e}")))?;
    let json = remote::parse(&body);
    if status == 404 {
        // No such entry, or its current version is deleted or destroyed.
        return Ok(None);
    }
    if status != 200 {
        let errors = json
            .as_ref()
            .and_then(|j| j.0.get("errors"))
            .and_then(|e| e.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        let errors = remote::scrub(&errors, &[&token.0]);
        return Err(fail(if errors.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {errors}")
        }));
    }
    let Some(json) = json else {
        return Err(fail("the response is not JSON".to_owned()));
    };
    let Some(entry) = json.0.pointer("/data/data").and_then(|d| d.as_object()) else {
        // Deleted versions answer 404; anything else without data is odd.
        return Err(fail(
            "the response has no data.data (is the mount KV version 2?)".to_owned(),
        ));
    };
    match entry.get(name) {
        Some(serde_json::Value::String(value)) => {
            finish(name, remote::wiped_copy(value.as_bytes()), source).map(Some)
        }
        Some(_) => Err(fail(format!("the entry's key {name:?} is not a string"))),
        None => Err(fail(format!(
            "the entry has no key {name:?} (keys: {})",
            entry.keys().cloned().collect::<Vec<_>>().join(", ")
        ))),
    }
}
