//! The `aws` provider: AWS Secrets Manager `GetSecretValue`, signed with
//! Signature Version 4 by AWS's own `aws-sigv4` crate (see [`sign`]).

use std::path::PathBuf;
use std::time::SystemTime;

use aws_credential_types::Credentials as AwsCredentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use base64::Engine as _;
use zeroize::{Zeroize, Zeroizing};

use crate::remote;
use crate::{Error, Reader, Secret, Source, Wiped, finish};

const SERVICE: &str = "secretsmanager";

struct Config {
    region: String,
    /// Scheme, authority and base path, e.g. `https://secretsmanager.eu-west-1.amazonaws.com`.
    endpoint: String,
    id: String,
}

struct Credentials {
    access_key: String,
    secret_key: Zeroizing<String>,
    session_token: Option<Zeroizing<String>>,
}

fn setting(reader: &Reader, var: &str) -> Option<String> {
    reader
        .var(var)
        .map(|v| v.to_string_lossy().trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// `None` when `SECRETS_AWS_PREFIX` is unset: AWS is then skipped unless
/// `SECRETS_ORDER` names it (`explicit`), which is an error.
fn config(reader: &Reader, name: &str, explicit: bool) -> Result<Option<Config>, Error> {
    let Some(prefix) = setting(reader, "SECRETS_AWS_PREFIX") else {
        return if explicit {
            Err(Error::InvalidVar {
                var: "SECRETS_AWS_PREFIX".to_owned(),
                reason: "must be set when $SECRETS_ORDER names aws",
            })
        } else {
            Ok(None)
        };
    };
    let Some(region) =
        setting(reader, "AWS_REGION").or_else(|| setting(reader, "AWS_DEFAULT_REGION"))
    else {
        return Err(Error::InvalidVar {
            var: "AWS_REGION".to_owned(),
            reason: "(or $AWS_DEFAULT_REGION) must be set when $SECRETS_AWS_PREFIX is",
        });
    };
    let (var, endpoint) = match setting(reader, "AWS_ENDPOINT_URL_SECRETS_MANAGER") {
        Some(e) => ("AWS_ENDPOINT_URL_SECRETS_MANAGER", e),
        None => match setting(reader, "AWS_ENDPOINT_URL") {
            Some(e) => ("AWS_ENDPOINT_URL", e),
            None => ("", format!("https://{SERVICE}.{region}.amazonaws.com")),
        },
    };
    let endpoint = endpoint.trim_end_matches('/').to_owned();
    if remote::split_url(&endpoint).is_none() {
        return Err(Error::InvalidVar {
            var: var.to_owned(),
            reason: "is not an http:// or https:// URL",
        });
    }
    let id = format!("{}/{name}", prefix.trim_end_matches('/'));
    Ok(Some(Config {
        region,
        endpoint,
        id,
    }))
}

/// `$AWS_ACCESS_KEY_ID`, `$AWS_SECRET_ACCESS_KEY` and `$AWS_SESSION_TOKEN`;
/// else the profile `$AWS_PROFILE` (default `default`) of the shared
/// credentials file (`$AWS_SHARED_CREDENTIALS_FILE`, default
/// `~/.aws/credentials`).
fn credentials(reader: &Reader, fail: &dyn Fn(String) -> Error) -> Result<Credentials, Error> {
    let key_id = setting(reader, "AWS_ACCESS_KEY_ID");
    let secret = reader
        .var("AWS_SECRET_ACCESS_KEY")
        .map(|v| Zeroizing::new(v.to_string_lossy().into_owned()));
    match (key_id, secret) {
        (Some(access_key), Some(secret_key)) => {
            return Ok(Credentials {
                access_key,
                secret_key,
                session_token: reader
                    .var("AWS_SESSION_TOKEN")
                    .map(|v| Zeroizing::new(v.to_string_lossy().into_owned())),
            });
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(fail(
                "set both $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY, or neither".to_owned(),
            ));
        }
        (None, None) => {}
    }
    let path = match reader.var("AWS_SHARED_CREDENTIALS_FILE") {
        Some(p) => PathBuf::from(p),
        None => match reader.var("HOME") {
            Some(home) => PathBuf::from(home).join(".aws/credentials"),
            None => return Err(fail(NO_CREDENTIALS.to_owned())),
        },
    };
    let profile = setting(reader, "AWS_PROFILE").unwrap_or_else(|| "default".to_owned());
    let text = match crate::read_file(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(fail(NO_CREDENTIALS.to_owned()));
        }
        Err(e) => {
            return Err(fail(format!(
                "cannot read the credentials file {}: {e}",
                path.display()
            )));
        }
    };
    let text = String::from_utf8_lossy(&text.0);
    let found = profile_keys(&text, &profile);
    // `from_utf8_lossy` borrows when the file is UTF-8, so the wiped buffer
    // holds the only copy; an owned (lossy) copy is wiped here.
    if let std::borrow::Cow::Owned(mut s) = text {
        s.zeroize();
    }
    match found {
        (Some(access_key), Some(secret_key), session_token) => Ok(Credentials {
            access_key: access_key.to_string(),
            secret_key,
            session_token,
        }),
        _ => Err(fail(format!(
            "profile [{profile}] of {} has no aws_access_key_id and aws_secret_access_key",
            path.display()
        ))),
    }
}

const NO_CREDENTIALS: &str = "no credentials: set $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY \
     (and $AWS_SESSION_TOKEN) or $AWS_SHARED_CREDENTIALS_FILE";

type ProfileKeys = (
    Option<String>,
    Option<Zeroizing<String>>,
    Option<Zeroizing<String>>,
);

/// The keys of `[profile]` in an INI-style credentials file.
fn profile_keys(text: &str, profile: &str) -> ProfileKeys {
    let mut section = None;
    let mut out: ProfileKeys = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.trim());
            continue;
        }
        if section != Some(profile) {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        match k.trim() {
            "aws_access_key_id" => out.0 = Some(v.to_owned()),
            "aws_secret_access_key" => out.1 = Some(Zeroizing::new(v.to_owned())),
            "aws_session_token" => out.2 = Some(Zeroizing::new(v.to_owned())),
            _ => {}
        }
    }
    out
}

/// Looks `name` up in Secrets Manager as `<prefix>/<name>`: `Ok(None)` when
/// AWS is not configured (and not named in `SECRETS_ORDER`) or has no such
/// secret.
pub(crate) fn get(
    reader: &Reader,
    name: &str,
    explicit: bool,
    looked: &mut Vec<String>,
) -> Result<Option<Secret>, Error> {
    let Some(cfg) = config(reader, name, explicit)? else {
        return Ok(None);
    };
    let source = Source::Aws {
        region: cfg.region.clone(),
        id: cfg.id.clone(),
    };
    looked.push(source.to_string());
    let key = format!("aws {} {} {}", cfg.endpoint, cfg.region, cfg.id);
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
    let creds = credentials(reader, &fail)?;
    let (_, authority, _) =
        remote::split_url(&cfg.endpoint).ok_or_else(|| fail("bad endpoint".to_owned()))?;
    let body = serde_json::json!({ "SecretId": cfg.id }).to_string();
    let headers = [
        ("content-type", "application/x-amz-json-1.1"),
        ("host", authority),
        ("x-amz-target", "secretsmanager.GetSecretValue"),
    ];
    let signed = sign(
        &creds,
        &cfg.region,
        SERVICE,
        SystemTime::now(),
        &format!("{}/", cfg.endpoint),
        &headers,
        body.as_bytes(),
    )
    .map_err(|e| fail(format!("signing the request failed: {e}")))?;
    let mut request = reader.remote.agent().post(format!("{}/", cfg.endpoint));
    for (k, v) in headers {
        request = request.header(k, v);
    }
    for (k, v) in &signed {
        request = request.header(k.as_str(), v.as_str());
    }
    let mut response = request
        .send(body.as_bytes())
        .map_err(|e| fail(format!("request failed: {e}")))?;
    let status = response.status().as_u16();
    let body = remote::read_body(response.body_mut())
        .map_err(|e| fail(format!("HTTP {status}, reading the body failed: {e}")))?;
    let json = remote::parse(&body);
    if status != 200 {
        let field = |k: &str| {
            json.as_ref()
                .and_then(|j| j.0.get(k))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let kind = field("__type").unwrap_or_default();
        let kind = kind.rsplit('#').next().unwrap_or_default().to_owned();
        if kind == "ResourceNotFoundException" {
            return Ok(None);
        }
        let message = field("message").or_else(|| field("Message"));
        let hide: Vec<&[u8]> = [
            Some(creds.secret_key.as_bytes()),
            creds.session_token.as_ref().map(|t| t.as_bytes()),
        ]
        .into_iter()
        .flatten()
        .collect();
        let text = match message {
            Some(m) => format!("{kind}: {m}"),
            None => kind,
        };
        let text = remote::scrub(&text, &hide);
        return Err(fail(if text.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {text}")
        }));
    }
    let Some(json) = json else {
        return Err(fail("the response is not JSON".to_owned()));
    };
    if let Some(text) = json.0.get("SecretString").and_then(|v| v.as_str()) {
        return finish(name, remote::wiped_copy(text.as_bytes()), source).map(Some);
    }
    if let Some(b64) = json.0.get("SecretBinary").and_then(|v| v.as_str()) {
        let engine = &base64::engine::general_purpose::STANDARD;
        let mut out = Wiped(vec![0; b64.len() / 4 * 3 + 3]);
        let n = engine
            .decode_slice(b64, &mut out.0)
            .map_err(|_| fail("SecretBinary is not valid base64".to_owned()))?;
        out.0.truncate(n);
        return finish(name, out, source).map(Some);
    }
    Err(fail(
        "the response has neither SecretString nor SecretBinary".to_owned(),
    ))
}

/// The headers SigV4 adds to a `POST` of `body` to `url` carrying `headers`
/// (`x-amz-date`, `authorization` and, with a session token,
/// `x-amz-security-token`), computed by AWS's `aws-sigv4` crate. All of
/// `headers` are signed.
fn sign(
    creds: &Credentials,
    region: &str,
    service: &str,
    time: SystemTime,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Vec<(String, Zeroizing<String>)>, String> {
    let identity = AwsCredentials::new(
        creds.access_key.clone(),
        creds.secret_key.to_string(),
        creds.session_token.as_ref().map(|t| t.to_string()),
        None,
        "secrets-reader",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let request = SignableRequest::new(
        "POST",
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = aws_sigv4::http_request::sign(request, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_owned(), Zeroizing::new(v.to_owned())))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// `post-vanilla` and `post-x-www-form-urlencoded`-style header signing
    /// from AWS's SigV4 test suite, through the same call `fetch` makes.
    #[test]
    fn sigv4_test_suite() {
        let creds = Credentials {
            access_key: "AKIDEXAMPLE".to_owned(),
            secret_key: Zeroizing::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_owned()),
            session_token: None,
        };
        let t = UNIX_EPOCH + Duration::from_secs(1_440_938_160); // 2015-08-30 12:36:00
        let headers = [("host", "example.amazonaws.com")];
        let sign_as = |c: &Credentials| {
            let url = "https://example.amazonaws.com/";
            sign(c, "us-east-1", "service", t, url, &headers, b"").unwrap()
        };
        let signed = sign_as(&creds);
        let get = |name: &str| {
            signed
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str().to_owned())
        };
        assert_eq!(get("x-amz-date").as_deref(), Some("20150830T123600Z"));
        assert_eq!(
            get("authorization").as_deref(),
            Some(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                 SignedHeaders=host;x-amz-date, \
                 Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
            )
        );
        assert_eq!(get("x-amz-security-token"), None);
        let with_token = Credentials {
            session_token: Some(Zeroizing::new("TOKEN".to_owned())),
            ..creds
        };
        let signed = sign_as(&with_token);
        assert!(
            signed
                .iter()
                .any(|(k, v)| k == "x-amz-security-token" && v.as_str() == "TOKEN")
        );
    }

    #[test]
    fn credentials_file_profiles() {
        let text = "[default]\naws_access_key_id = A1\naws_secret_access_key=S1\n\n\
                    # comment\n[other]\naws_access_key_id=A2\naws_secret_access_key = S2\n\
                    aws_session_token = T2\n";
        let (a, s, t) = profile_keys(text, "default");
        assert_eq!(
            (a.as_deref(), s.as_deref().map(String::as_str)),
            (Some("A1"), Some("S1"))
        );
        assert!(t.is_none());
        let (a, s, t) = profile_keys(text, "other");
        assert_eq!(a.as_deref(), Some("A2"));
        assert_eq!(s.as_deref().map(String::as_str), Some("S2"));
        assert_eq!(t.as_deref().map(String::as_str), Some("T2"));
        assert!(profile_keys(text, "missing").0.is_none());
    }
}
