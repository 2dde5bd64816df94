//! AWS Secrets Manager through the `aws` CLI. One AWS secret per manifest
//! secret, named `<prefix>/<secret>` (prefix default `<project>/<env>`). AWS
//! keeps the versions itself: a new value is `put-secret-value`, which moves
//! `AWSCURRENT` to it and leaves the old value as `AWSPREVIOUS`. The plan's
//! version is a counter kept in the `xtask.version` tag, so `list-secrets`
//! shows it, and every secret carries the tags `xtask.tool`, `xtask.project`,
//! `xtask.environment`, `xtask.secret`, the keyed fingerprint
//! (`xtask.fingerprint`) and `xtask.rotated-at` (tags are not secret; the
//! fingerprint is an HMAC with the env file's key).
//!
//! Values reach the CLI only on stdin: `--secret-string file:///dev/stdin`, or
//! `--secret-binary fileb:///dev/stdin` for values that are not UTF-8 or hold a
//! carriage return (the CLI reads `file://` in text mode, which would turn
//! CRLF into LF). The CLI runs with `PYTHONUTF8=1` so the text is read as
//! UTF-8 whatever the locale. Listing is one `list-secrets` call (the CLI pages
//! by itself) filtered by the project's tags; it never reads values.
//!
//! A write sends a client request token derived from the fingerprint and the
//! new version, so a run that stopped between `put-secret-value` and
//! `tag-resource` repeats the same request on a re-run and AWS ignores it:
//! `AWSPREVIOUS` still holds the value before the change.
//!
//! Settings, `[environments.<env>.aws]` over `[aws]`: `prefix`, `region`,
//! `profile`, `endpoint_url` (else `AWS_REGION`/`AWS_DEFAULT_REGION`,
//! `AWS_PROFILE`, `AWS_ENDPOINT_URL`), `recovery_days` (7 to 30, default 30:
//! `remove-secrets` schedules deletion with that recovery window; `aws
//! secretsmanager restore-secret --secret-id NAME` undoes it meanwhile).
//! `AWS_CLI` names the aws program (tests count calls through a wrapper).
//!
//! Deleting without recovery is not reachable from the manifest on purpose: a
//! `--force` flag of `remove-secrets` sets [`FORCE_KEY`] in the environment's
//! `aws` settings table for that one run (as `--namespace` does for k8s), and
//! `AwsStore::delete` then passes `--force-delete-without-recovery`.
//!
//! IAM permissions the tool needs: `secretsmanager:ListSecrets`,
//! `CreateSecret`, `PutSecretValue`, `TagResource`, `DeleteSecret`, and for
//! `delivery = "fetch"` deploys `BatchGetSecretValue` and `GetSecretValue`,
//! on `arn:aws:secretsmanager:*:*:secret:<prefix>/*` (`ListSecrets` and
//! `BatchGetSecretValue` on `*`). `delivery`, `service_credentials_file` and
//! `service_endpoint_url` are read here and acted on by `deploy` (see
//! [`super::Delivery`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Mutex,
    time::{Duration, SystemTime},
};

use anyhow::{Result, anyhow, bail};
use serde_json::{Value, json};

use super::{Access, Delivery, Item, Probe, Scope, SecretStore};
use crate::{
    model::manifest::BackendKind,
    model::secret::SecretValue,
    model::time,
    plan::{Action, Naming, Step, Stored},
    tools::runner::{self, Tool},
};

/// Secrets Manager's limit on a secret value.
pub const MAX_SECRET_BYTES: usize = 65_536;
/// Secrets Manager's limit on a secret name.
pub const MAX_NAME_LEN: usize = 512;
/// How many aws calls run at once (each costs about 0.6 s).
const PARALLEL: usize = 8;
/// The settings key `remove-secrets --force` sets for one run: delete with no
/// recovery window. Not meant for the manifest.
pub const FORCE_KEY: &str = "force_delete_without_recovery";
/// `batch-get-secret-value` takes at most 20 names per call.
pub const BATCH: usize = 20;
/// What the operator runs when a secret is scheduled for deletion.
const RESTORE: &str = "aws secretsmanager restore-secret --secret-id";

/// `[environments.<env>.aws]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Names start with it (`<project>/<env>` by default), no leading or trailing `/`.
    pub prefix: String,
    /// `region`, else `$AWS_REGION` or `$AWS_DEFAULT_REGION`.
    pub region: Option<String>,
    /// `profile`, else `$AWS_PROFILE`.
    pub profile: Option<String>,
    /// `endpoint_url`, else `$AWS_ENDPOINT_URL` (a stand-in such as moto).
    pub endpoint_url: Option<String>,
    /// Days a deleted secret can be restored, 7 to 30 (default 30).
    pub recovery_days: usize,
    /// [`FORCE_KEY`]: delete at once, without a recovery window.
    pub force_delete: bool,
    /// `delivery = "reader"`, with `service_credentials_file` and
    /// `service_endpoint_url` (what the services use, if not `endpoint_url`).
    pub reader: bool,
    /// The services' own credentials file, for `delivery = "reader"`.
    pub service_credentials_file: Option<String>,
    /// The endpoint the services use, for `delivery = "reader"`.
    pub service_endpoint_url: Option<String>,
}

/// Reads the settings table; `var` looks up the process environment (a
/// parameter so tests stay pure).
pub fn settings(
    project: &str,
    env: &crate::model::manifest::Environment,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings> {
    let mut t = env.settings_for(BackendKind::Aws);
    let from_env = |names: &[&str]| names.iter().find_map(|n| var(n).filter(|v| !v.is_empty()));
    let s = Settings {
        prefix: t
            .opt_str("prefix")?
            .unwrap_or_else(|| format!("{project}/{}", env.name)),
        region: t
            .opt_str("region")?
            .or_else(|| from_env(&["AWS_REGION", "AWS_DEFAULT_REGION"])),
        profile: t.opt_str("profile")?.or_else(|| from_env(&["AWS_PROFILE"])),
        endpoint_url: t
            .opt_str("endpoint_url")?
            .or_else(|| from_env(&["AWS_ENDPOINT_URL"])),
        recovery_days: t.opt_usize("recovery_days")?.unwrap_or(30),
        force_delete: t.opt_bool(FORCE_KEY)?.unwrap_or(false),
        reader: super::delivery_mode(&mut t, &format!("[environments.{}.aws]", env.name))?,
        service_credentials_file: t.opt_str("service_credentials_file")?,
        service_endpoint_url: t.opt_str("service_endpoint_url")?,
    };
    t.finish()?;
    let at = format!("[environments.{}.aws]", env.name);
    if !(7..=30).contains(&s.recovery_days) {
        bail!(
            "in {at}: `recovery_days` must be from 7 to 30 (Secrets Manager's recovery window); got {}",
            s.recovery_days
        );
    }
    let p = s.prefix.trim_matches('/');
    if p.is_empty() || p != s.prefix {
        bail!(
            "in {at}: `prefix` {:?} must not be empty nor start or end with `/`; e.g. prefix = \"{project}/{}\"",
            s.prefix,
            env.name
        );
    }
    check_name(&s.prefix, &env.name)?;
    Ok(s)
}

/// Secrets Manager's rule for names: 1 to 512 of ASCII letters, digits and
/// `/_+=.@-`.
pub fn check_name(name: &str, env: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"/_+=.@-".contains(&c));
    if !ok {
        bail!(
            "{name:?} is not a valid AWS Secrets Manager name (letters, digits and `/_+=.@-`); change `prefix` in [environments.{env}.aws] or rename the secret in deploy/secrets.toml"
        );
    }
    if name.len() > MAX_NAME_LEN {
        bail!(
            "the AWS secret name {name} is {} characters; Secrets Manager allows {MAX_NAME_LEN}. Shorten `prefix` or the secret's name",
            name.len()
        );
    }
    Ok(())
}

/// Whether a value must go as `--secret-binary`: not UTF-8, or holding a CR
/// that the CLI's text-mode read of `file://` would drop.
pub fn needs_binary(value: &[u8]) -> bool {
    std::str::from_utf8(value).is_err() || value.contains(&b'\r')
}

/// An idempotency token for one write: 32 to 64 characters, the same for the
/// same content and version, so a repeated request is ignored by AWS.
pub fn request_token(fingerprint: &str, version: u32) -> String {
    format!("xtask-{fingerprint:0>16}-v{version:010}")
}

/// `[{"Key": k, "Value": v}, ...]` for `--tags` (JSON, so no value needs quoting).
pub fn tags_json(tags: &[(String, String)]) -> String {
    Value::Array(
        tags.iter()
            .map(|(k, v)| json!({"Key": k, "Value": v}))
            .collect(),
    )
    .to_string()
}

/// The tags written with a value: the shared labels, the fingerprint and the
/// rotation time.
pub fn tags(
    project: &str,
    env: &str,
    step: &Step,
    fingerprint: &str,
    rotated_at: &str,
) -> Vec<(String, String)> {
    let mut t = super::labels(project, env, &step.secret, step.version);
    t.push(("xtask.fingerprint".into(), fingerprint.into()));
    t.push(("xtask.rotated-at".into(), rotated_at.into()));
    t
}

/// One secret as `list-secrets` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The current value as any store lists it.
    pub stored: Stored,
    /// `AWSPREVIOUS` exists: the value before the last change is still there.
    pub has_previous: bool,
    /// Scheduled for deletion (restorable until the window ends).
    pub deleted: bool,
}

/// A time as the CLI prints it: epoch seconds (v1) or ISO 8601 (v2).
fn when(v: &Value) -> Option<SystemTime> {
    match v {
        Value::Number(n) => {
            let secs = n.as_f64()?;
            (secs >= 0.0).then(|| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs))
        }
        Value::String(s) => time::parse_rfc3339(s),
        _ => None,
    }
}

/// Parses `list-secrets` JSON: this environment's secrets under `prefix`,
/// others (another environment, prefix or tool) left out.
pub fn parse_listing(text: &str, project: &str, env: &str, prefix: &str) -> Result<Vec<Listed>> {
    let doc: Value = serde_json::from_str(text)
        .map_err(|e| anyhow!("cannot read the output of `aws secretsmanager list-secrets`: {e}"))?;
    let mut out = Vec::new();
    for s in doc["SecretList"].as_array().into_iter().flatten() {
        let tags: BTreeMap<&str, &str> = s["Tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| Some((t["Key"].as_str()?, t["Value"].as_str()?)))
            .collect();
        let Some(name) = s["Name"].as_str() else {
            continue;
        };
        let secret = tags.get("xtask.secret").copied().unwrap_or_default();
        if tags.get("xtask.project") != Some(&project)
            || tags.get("xtask.environment") != Some(&env)
            || secret.is_empty()
            || name != format!("{prefix}/{secret}")
        {
            continue;
        }
        let has_previous = s["SecretVersionsToStages"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.values())
            .filter_map(Value::as_array)
            .flatten()
            .any(|st| st == "AWSPREVIOUS");
        let created = tags
            .get("xtask.rotated-at")
            .and_then(|t| time::parse_rfc3339(t))
            .or_else(|| when(&s["LastChangedDate"]))
            .or_else(|| when(&s["CreatedDate"]));
        out.push(Listed {
            stored: Stored {
                id: name.to_string(),
                secret: secret.to_string(),
                version: tags.get("xtask.version").and_then(|v| v.parse().ok()),
                fingerprint: tags
                    .get("xtask.fingerprint")
                    .copied()
                    .unwrap_or_default()
                    .to_string(),
                created,
                fix: None,
                kept: Some(
                    if has_previous {
                        "AWSCURRENT, and AWSPREVIOUS for rollback"
                    } else {
                        "AWSCURRENT only"
                    }
                    .to_string(),
                ),
            },
            has_previous,
            deleted: !s["DeletedDate"].is_null(),
        });
    }
    Ok(out)
}

/// Secret names with their values.
pub type Named = Vec<(String, SecretValue)>;

/// Parses `batch-get-secret-value` JSON: name and value of each secret
/// found, and the names AWS reported errors for (with AWS's message).
pub fn parse_batch(text: &str) -> Result<(Named, Vec<String>)> {
    use base64::Engine as _;
    let mut doc: Value = serde_json::from_str(text).map_err(|e| {
        anyhow!("cannot read the output of `aws secretsmanager batch-get-secret-value`: {e}")
    })?;
    let mut found = Vec::new();
    for v in doc["SecretValues"].as_array_mut().into_iter().flatten() {
        let name = v["Name"].as_str().unwrap_or_default().to_string();
        let value = match (v["SecretString"].take(), v["SecretBinary"].take()) {
            (Value::String(s), _) => SecretValue::from_string(s),
            (_, Value::String(b)) => {
                let b = zeroize::Zeroizing::new(b);
                SecretValue::new(
                    base64::engine::general_purpose::STANDARD
                        .decode(b.as_bytes())
                        .map_err(|_| anyhow!("{name}: SecretBinary is not base64"))?,
                )
            }
            _ => bail!("{name}: the answer holds neither SecretString nor SecretBinary"),
        };
        found.push((name, value));
    }
    let errors = doc["Errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            format!(
                "{}: {} {}",
                e["SecretId"].as_str().unwrap_or("?"),
                e["ErrorCode"].as_str().unwrap_or(""),
                e["Message"].as_str().unwrap_or("")
            )
        })
        .collect();
    Ok((found, errors))
}

/// The CLI's failure in the operator's terms: what is wrong and what to do.
pub fn diagnose(env: &str, what: &str, id: &str, stderr: &str) -> anyhow::Error {
    let err = stderr.trim();
    let last = err.lines().rev().find(|l| !l.trim().is_empty());
    let first = last.unwrap_or("no output").trim();
    let low = err.to_ascii_lowercase();
    let has = |s: &[&str]| s.iter().any(|x| low.contains(x));
    if has(&["unable to locate credentials", "nocredentialserror"]) {
        return anyhow!(
            "no AWS credentials ({first}); set AWS_PROFILE (or `profile` in [environments.{env}.aws]), or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run `aws configure` / `aws sso login`"
        );
    }
    if has(&["could not be found"]) && has(&["profile"]) {
        return anyhow!(
            "{first}; fix `profile` in [environments.{env}.aws] or AWS_PROFILE, or add the profile with `aws configure --profile NAME`"
        );
    }
    if has(&["you must specify a region", "noregionerror"]) {
        return anyhow!(
            "no AWS region ({first}); set `region` in [environments.{env}.aws], or AWS_REGION"
        );
    }
    // The identity check asks STS, every other call Secrets Manager.
    let service = if what == "get-caller-identity" {
        "AWS STS"
    } else {
        "Secrets Manager"
    };
    if has(&[
        "could not connect to the endpoint",
        "connect timeout",
        "connection refused",
        "endpointconnectionerror",
        "name or service not known",
        "read timeout",
    ]) {
        return anyhow!(
            "the {service} endpoint does not answer ({first}); check `endpoint_url` / `region` in [environments.{env}.aws] (or AWS_ENDPOINT_URL, AWS_REGION) and the network"
        );
    }
    if has(&["expiredtoken", "token has expired", "token is expired"]) {
        return anyhow!(
            "the AWS credentials have expired ({first}); refresh them (`aws sso login`, or new session credentials)"
        );
    }
    if has(&[
        "accessdenied",
        "not authorized",
        "unrecognizedclient",
        "invalidsignature",
        "signaturedoesnotmatch",
        "invalidclienttokenid",
    ]) {
        return anyhow!(
            "AWS refused access ({first}); the identity needs secretsmanager:ListSecrets, CreateSecret, PutSecretValue, TagResource and DeleteSecret (and BatchGetSecretValue, GetSecretValue to deploy with delivery = \"fetch\") on the secrets under this prefix (check `aws sts get-caller-identity` and the IAM policy)"
        );
    }
    if has(&["scheduled for deletion", "marked for deletion"]) {
        return anyhow!(
            "{id} is scheduled for deletion; restore it with `{RESTORE} {id}` and re-run (or wait until the recovery window ends)"
        );
    }
    anyhow!("`aws secretsmanager {what}` failed for {id}: {first}")
}

pub(crate) struct AwsStore {
    sink: crate::sink::Shared,
    tool: Tool,
    project: String,
    env: String,
    settings: Settings,
    /// Names `list` saw scheduled for deletion: writes to them are refused
    /// with the restore command instead of AWS's raw error.
    planned_deletion: Mutex<BTreeSet<String>>,
}

impl AwsStore {
    pub(crate) fn new(s: &Scope) -> Result<AwsStore> {
        let var = |n: &str| std::env::var(n).ok();
        let settings = settings(&s.manifest.project, s.env, &var)?;
        let mut tool = Tool::find_later(
            "aws",
            "AWS_CLI",
            "install the AWS CLI (`pip install awscli`, or AWS CLI v2 from https://aws.amazon.com/cli/)",
        );
        tool.silent = format!("the Secrets Manager endpoint does not answer; check `endpoint_url` / `region` in [environments.{}.aws] (or AWS_ENDPOINT_URL) and the network", s.env.name).into();
        Ok(AwsStore {
            sink: s.sink.clone(),
            tool,
            project: s.manifest.project.clone(),
            env: s.env.name.clone(),
            settings,
            planned_deletion: Mutex::new(BTreeSet::new()),
        })
    }

    /// Every listed secret with the details `Stored` has no room for
    /// (`AWSPREVIOUS`, scheduled deletion). One aws call.
    pub fn list_all(&self) -> Result<Vec<Listed>> {
        let filters = json!([
            {"Key": "tag-key", "Values": ["xtask.project"]},
            {"Key": "tag-value", "Values": [self.project]},
        ])
        .to_string();
        let out = self.call(
            "list-secrets",
            &self.prefix_glob(),
            &[
                "list-secrets",
                "--include-planned-deletion",
                "--filters",
                &filters,
            ],
            None,
        )?;
        let listed = parse_listing(&out, &self.project, &self.env, &self.settings.prefix)?;
        if let Ok(mut d) = self.planned_deletion.lock() {
            *d = listed
                .iter()
                .filter(|l| l.deleted)
                .map(|l| l.stored.id.clone())
                .collect();
        }
        Ok(listed)
    }

    fn prefix_glob(&self) -> String {
        format!("{}/*", self.settings.prefix)
    }

    /// `aws [--region R] [--profile P] [--endpoint-url U] --output json
    /// secretsmanager ARGS`, with `input` on stdin.
    fn call(&self, what: &str, id: &str, args: &[&str], input: Option<&[u8]>) -> Result<String> {
        self.call_in("secretsmanager", what, id, args, input)
    }

    /// [`AwsStore::call`] for another service of the CLI (`sts`).
    fn call_in(
        &self,
        service: &str,
        what: &str,
        id: &str,
        args: &[&str],
        input: Option<&[u8]>,
    ) -> Result<String> {
        let s = &self.settings;
        let mut all: Vec<&str> = Vec::with_capacity(args.len() + 10);
        for (flag, v) in [
            ("--region", &s.region),
            ("--profile", &s.profile),
            ("--endpoint-url", &s.endpoint_url),
        ] {
            if let Some(v) = v {
                all.extend([flag, v.as_str()]);
            }
        }
        all.extend(["--output", "json", service]);
        all.extend_from_slice(args);
        let out = self
            .tool
            .output_in(None, &[("PYTHONUTF8", "1")], &all, input)?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        if what == "create-secret" && out.stderr.contains("ResourceExistsException") {
            bail!(
                "a secret named {id} already exists but is not tagged as {}'s {} secret (or is scheduled for deletion: `{RESTORE} {id}`); remove or rename it, or set another `prefix` in [environments.{}.aws]",
                self.project,
                self.env,
                self.env
            );
        }
        Err(diagnose(&self.env, what, id, &out.stderr))
    }

    fn write_one(&self, it: &Item, rotated_at: &str) -> Result<()> {
        let id = it.step.id.as_str();
        let value = it.value.expose();
        let (flag, src) = if needs_binary(value) {
            ("--secret-binary", "fileb:///dev/stdin")
        } else {
            ("--secret-string", "file:///dev/stdin")
        };
        let version = it.step.version.unwrap_or(1);
        let token = request_token(&it.fingerprint, version);
        let tags = tags(
            &self.project,
            &self.env,
            it.step,
            &it.fingerprint,
            rotated_at,
        );
        match it.step.action {
            Action::Create => {
                let tags = tags_json(&tags);
                self.call(
                    "create-secret",
                    id,
                    &[
                        "create-secret",
                        "--name",
                        id,
                        "--description",
                        "managed by cargo xtask (deploy/secrets.toml)",
                        "--client-request-token",
                        &token,
                        "--tags",
                        &tags,
                        flag,
                        src,
                    ],
                    Some(value),
                )?;
            }
            Action::Update => {
                self.call(
                    "put-secret-value",
                    id,
                    &[
                        "put-secret-value",
                        "--secret-id",
                        id,
                        "--client-request-token",
                        &token,
                        flag,
                        src,
                    ],
                    Some(value),
                )?;
                // Only what changes: version, fingerprint, rotation time.
                let changed: Vec<(String, String)> = tags
                    .into_iter()
                    .filter(|(k, _)| {
                        matches!(
                            k.as_str(),
                            "xtask.version" | "xtask.fingerprint" | "xtask.rotated-at"
                        )
                    })
                    .collect();
                let changed = tags_json(&changed);
                self.call(
                    "tag-resource",
                    id,
                    &["tag-resource", "--secret-id", id, "--tags", &changed],
                    None,
                )?;
            }
            other => bail!("the plan asks the aws store to {} {id}", other.word()),
        }
        Ok(())
    }
}

impl Naming for AwsStore {
    fn versioned(&self) -> bool {
        true
    }

    /// The secret's name; AWS keeps the versions under it.
    fn identity(&self, secret: &str, _version: u32) -> String {
        format!("{}/{secret}", self.settings.prefix)
    }
}

impl SecretStore for AwsStore {
    fn kind(&self) -> BackendKind {
        BackendKind::Aws
    }

    fn keeps_fingerprints(&self) -> bool {
        true
    }

    fn check(&self, secret: &str, origin: &str, value: &[u8]) -> Result<()> {
        check_name(&self.identity(secret, 1), &self.env)?;
        if value.is_empty() {
            bail!("{origin}: {secret} is empty; AWS Secrets Manager needs at least one byte");
        }
        if value.len() > MAX_SECRET_BYTES {
            bail!(
                "{origin}: {secret} is {} bytes; AWS Secrets Manager holds at most {MAX_SECRET_BYTES} bytes (64 KiB); store a smaller value",
                value.len()
            );
        }
        Ok(())
    }

    fn list(&self, _key: &SecretValue) -> Result<Vec<Stored>> {
        Ok(self
            .list_all()?
            .into_iter()
            .filter(|l| !l.deleted)
            .map(|l| l.stored)
            .collect())
    }

    /// `sts get-caller-identity` and the region, then `ListSecrets` with the
    /// name-prefix filter (one result). The other actions cannot be asked
    /// without changing the store or reading a value: named, not probed.
    fn probe(&self, _secrets: &[String]) -> Vec<Probe> {
        let who = self
            .call_in(
                "sts",
                "get-caller-identity",
                "-",
                &["get-caller-identity"],
                None,
            )
            .map_err(|e| format!("{e:#}"))
            .and_then(|t| {
                serde_json::from_str::<Value>(&t)
                    .ok()
                    .and_then(|v| v["Arn"].as_str().map(str::to_string))
                    .ok_or_else(|| "`aws sts get-caller-identity` gave no Arn".to_string())
            });
        let region = self.settings.region.clone();
        let prefix = format!("{}/", self.settings.prefix);
        let filters = json!([{"Key": "name", "Values": [prefix]}]).to_string();
        let listed = self.call(
            "list-secrets",
            &self.prefix_glob(),
            &["list-secrets", "--max-results", "1", "--filters", &filters],
            None,
        );
        let has = match listed {
            Ok(_) => Ok(vec!["secretsmanager:ListSecrets".to_string()]),
            Err(e) => {
                let e = format!("{e:#}");
                if e.contains("AccessDenied") || e.contains("not authorized") {
                    Ok(Vec::new())
                } else {
                    Err(e)
                }
            }
        };
        vec![
            Probe::Identity { who, region },
            Probe::Allowed {
                what: format!("ListSecrets (names {}*)", prefix),
                needs: vec!["secretsmanager:ListSecrets".into()],
                has,
            },
            Probe::NotProbed {
                what: "secretsmanager:CreateSecret, PutSecretValue, TagResource, DeleteSecret"
                    .into(),
                why: "AWS has no dry run for them: asking would change the store".into(),
            },
            Probe::NotProbed {
                what: "secretsmanager:BatchGetSecretValue, GetSecretValue".into(),
                why: "asking would read values (deploy with delivery = \"fetch\" uses them)".into(),
            },
        ]
    }

    fn delivery(&self) -> Result<Delivery> {
        let s = &self.settings;
        if !s.reader {
            return Ok(Delivery::Fetch);
        }
        let at = format!("[environments.{}.aws]", self.env);
        let Some(file) = &s.service_credentials_file else {
            bail!(
                "in {at}: delivery = \"reader\" needs `service_credentials_file`, an AWS shared-credentials file (mode 0600, outside git) with a [default] profile for an identity that may only read these secrets (secretsmanager:GetSecretValue on {}/*)",
                s.prefix
            );
        };
        let Some(region) = &s.region else {
            bail!("in {at}: delivery = \"reader\" needs a region for the services: set `region`");
        };
        let mut vars = vec![
            ("SECRETS_AWS_PREFIX".to_string(), s.prefix.clone()),
            ("AWS_REGION".to_string(), region.clone()),
            ("SECRETS_ORDER".to_string(), "aws".to_string()),
        ];
        if let Some(e) = s.service_endpoint_url.as_ref().or(s.endpoint_url.as_ref()) {
            vars.push(("AWS_ENDPOINT_URL_SECRETS_MANAGER".to_string(), e.clone()));
        }
        Ok(Delivery::Reader(Access {
            vars,
            credential: "aws_credentials".into(),
            credential_var: "AWS_SHARED_CREDENTIALS_FILE".into(),
            credential_file: file.into(),
            credential_key: format!("service_credentials_file in {at}"),
            operator_credential: std::env::var("AWS_SECRET_ACCESS_KEY")
                .ok()
                .filter(|v| !v.is_empty())
                .map(|v| SecretValue::new(v.into_bytes())),
        }))
    }

    /// `batch-get-secret-value`, 20 names a call, the calls in parallel.
    fn fetch(&self, listed: &[&Stored]) -> Result<Vec<(String, SecretValue)>> {
        let chunks: Vec<&[&Stored]> = listed.chunks(BATCH).collect();
        let found = Mutex::new(Vec::new());
        let errors = runner::parallel(
            &chunks,
            PARALLEL,
            |c| {
                c.iter()
                    .map(|l| l.id.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            },
            |c| {
                let mut args = vec!["batch-get-secret-value", "--secret-id-list"];
                args.extend(c.iter().map(|l| l.id.as_str()));
                let out = zeroize::Zeroizing::new(self.call(
                    "batch-get-secret-value",
                    &self.prefix_glob(),
                    &args,
                    None,
                )?);
                let (values, errs) = parse_batch(&out)?;
                if !errs.is_empty() {
                    bail!("{}", errs.join("; "));
                }
                let mut f = found.lock().map_err(|_| anyhow!("poisoned"))?;
                for (name, v) in values {
                    let Some(l) = c.iter().find(|l| l.id == name) else {
                        continue;
                    };
                    f.push((l.secret.clone(), v));
                }
                Ok(())
            },
        );
        if !errors.is_empty() {
            bail!(
                "cannot read {} batch(es) of secrets from AWS Secrets Manager (the identity needs secretsmanager:GetSecretValue too):\n  - {}",
                errors.len(),
                errors.join("\n  - ")
            );
        }
        let found = found.into_inner().unwrap_or_default();
        if let Some(l) = listed
            .iter()
            .find(|l| !found.iter().any(|(n, _)| n == &l.secret))
        {
            bail!("AWS Secrets Manager gave no value for {}; re-run", l.id);
        }
        Ok(found)
    }

    fn write(&self, items: &[Item]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        for it in items {
            check_name(&it.step.id, &self.env)?;
        }
        let doomed: Vec<&str> = {
            let d = self
                .planned_deletion
                .lock()
                .map_err(|_| anyhow!("internal: lock poisoned"))?;
            items
                .iter()
                .map(|it| it.step.id.as_str())
                .filter(|id| d.contains(*id))
                .collect()
        };
        if !doomed.is_empty() {
            let cmds: Vec<String> = doomed.iter().map(|id| format!("{RESTORE} {id}")).collect();
            bail!(
                "{} secret(s) of {} are scheduled for deletion in AWS Secrets Manager and cannot be written until restored:\n  {}\nthen re-run setup-secrets",
                doomed.len(),
                self.env,
                cmds.join("\n  ")
            );
        }
        let now = time::rfc3339(SystemTime::now());
        let errors = runner::parallel(
            items,
            PARALLEL,
            |it| it.step.id.clone(),
            |it| self.write_one(it, &now),
        );
        if !errors.is_empty() {
            bail!(
                "{} of {} secret(s) could not be written:\n  - {}\nre-run setup-secrets: what was written is kept and not written again",
                errors.len(),
                items.len(),
                errors.join("\n  - ")
            );
        }
        Ok(())
    }

    fn delete(&self, steps: &[Step]) -> Result<()> {
        // One secret holds every version: delete each name once.
        let ids: BTreeSet<&str> = steps.iter().map(|s| s.id.as_str()).collect();
        let ids: Vec<&str> = ids.into_iter().collect();
        let days = self.settings.recovery_days.to_string();
        let errors = runner::parallel(
            &ids,
            PARALLEL,
            |id| id.to_string(),
            |id| {
                let mut args = vec!["delete-secret", "--secret-id", id];
                if self.settings.force_delete {
                    args.push("--force-delete-without-recovery");
                } else {
                    args.extend(["--recovery-window-in-days", days.as_str()]);
                }
                self.call("delete-secret", id, &args, None).map(|_| ())
            },
        );
        if !errors.is_empty() {
            bail!(
                "{} of {} secret(s) could not be scheduled for deletion:\n  - {}",
                errors.len(),
                ids.len(),
                errors.join("\n  - ")
            );
        }
        if !self.settings.force_delete {
            self.sink.line(&format!(
                "scheduled for deletion with a {days}-day recovery window; until then `{RESTORE} NAME` restores one"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::manifest::Manifest;

    fn env(extra: &str) -> crate::model::manifest::Environment {
        let m = Manifest::parse(&format!(
            "project = \"p\"\n[environments.dev]\nstore = \"aws\"\nruntime = \"compose\"\n{extra}\n[secrets.a]\nkind = \"password\"\n"
        ))
        .unwrap();
        m.env("dev").unwrap().clone()
    }

    #[test]
    fn settings_default_read_the_environment_and_refuse_unknown_keys() {
        let none = |_: &str| None;
        let s = settings("p", &env(""), &none).unwrap();
        assert_eq!(s.prefix, "p/dev");
        assert_eq!((s.region.as_deref(), s.recovery_days), (None, 30));
        let vars = |n: &str| match n {
            "AWS_DEFAULT_REGION" => Some("eu-west-1".to_string()),
            "AWS_ENDPOINT_URL" => Some("http://127.0.0.1:1".to_string()),
            _ => None,
        };
        let s = settings("p", &env(""), &vars).unwrap();
        assert_eq!(s.region.as_deref(), Some("eu-west-1"));
        assert_eq!(s.endpoint_url.as_deref(), Some("http://127.0.0.1:1"));
        let t =
            "[environments.dev.aws]\nprefix = \"x/y\"\nregion = \"us-east-2\"\nrecovery_days = 7";
        let s = settings("p", &env(t), &vars).unwrap();
        assert_eq!(
            (s.prefix.as_str(), s.region.as_deref()),
            ("x/y", Some("us-east-2"))
        );
        let e = settings("p", &env("[environments.dev.aws]\nregoin = \"x\""), &none).unwrap_err();
        assert!(format!("{e}").contains("unknown key `regoin`"), "{e}");
        let e = settings(
            "p",
            &env("[environments.dev.aws]\nrecovery_days = 3"),
            &none,
        )
        .unwrap_err();
        assert!(format!("{e}").contains("from 7 to 30"), "{e}");
        let e = settings("p", &env("[environments.dev.aws]\nprefix = \"/a/\""), &none).unwrap_err();
        assert!(format!("{e}").contains("must not be empty"), "{e}");
    }

    #[test]
    fn names_values_and_tokens() {
        assert!(check_name("raqeem/develop/jwt_secret", "develop").is_ok());
        assert!(check_name("a b", "develop").is_err());
        assert!(check_name(&"a".repeat(513), "develop").is_err());
        assert!(!needs_binary(b"plain"));
        assert!(needs_binary(b"a\r\nb"));
        assert!(needs_binary(&[0xff, 0xfe]));
        let t = request_token("0123456789abcdef", 3);
        assert!((32..=64).contains(&t.len()), "{t}");
        assert_ne!(t, request_token("0123456789abcdef", 4));
        let j = tags_json(&[("k".into(), "v,w=x".into())]);
        assert_eq!(j, r#"[{"Key":"k","Value":"v,w=x"}]"#);
    }

    #[test]
    fn listing_reads_tags_previous_and_deletion_and_skips_others() {
        let text = r#"{"SecretList": [
          {"Name": "p/dev/a", "LastChangedDate": 1795648508.5,
           "Tags": [{"Key":"xtask.project","Value":"p"},{"Key":"xtask.environment","Value":"dev"},
                    {"Key":"xtask.secret","Value":"a"},{"Key":"xtask.version","Value":"2"},
                    {"Key":"xtask.fingerprint","Value":"f2"},{"Key":"xtask.rotated-at","Value":"2026-11-20T00:00:00Z"}],
           "SecretVersionsToStages": {"v1": ["AWSPREVIOUS"], "v2": ["AWSCURRENT"]}},
          {"Name": "p/dev/b", "DeletedDate": 1795648508, "CreatedDate": "2026-11-21T00:00:00Z",
           "Tags": [{"Key":"xtask.project","Value":"p"},{"Key":"xtask.environment","Value":"dev"},
                    {"Key":"xtask.secret","Value":"b"},{"Key":"xtask.version","Value":"1"}]},
          {"Name": "p/prod/a", "Tags": [{"Key":"xtask.project","Value":"p"},{"Key":"xtask.environment","Value":"prod"},{"Key":"xtask.secret","Value":"a"}]},
          {"Name": "other/a", "Tags": [{"Key":"xtask.project","Value":"p"},{"Key":"xtask.environment","Value":"dev"},{"Key":"xtask.secret","Value":"a"}]}
        ]}"#;
        let l = parse_listing(text, "p", "dev", "p/dev").unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(
            (
                l[0].stored.id.as_str(),
                l[0].stored.version,
                l[0].stored.fingerprint.as_str()
            ),
            ("p/dev/a", Some(2), "f2")
        );
        assert_eq!(
            l[0].stored.created,
            time::parse_rfc3339("2026-11-20T00:00:00Z")
        );
        assert!(l[0].has_previous && !l[0].deleted);
        assert!(!l[1].has_previous && l[1].deleted);
        assert_eq!(
            l[1].stored.created,
            time::parse_rfc3339("2026-11-21T00:00:00Z")
        );
        assert!(parse_listing("not json", "p", "dev", "p/dev").is_err());
    }

    #[test]
    fn failures_name_the_next_step() {
        let d = |s: &str| format!("{}", diagnose("dev", "list-secrets", "p/dev/*", s));
        assert!(d("Unable to locate credentials. You can configure").contains("aws configure"));
        assert!(
            d("Could not connect to the endpoint URL: \"http://127.0.0.1:1/\"")
                .contains("the Secrets Manager endpoint does not answer")
        );
        // The identity check's call goes to STS, and says so.
        let sts = diagnose(
            "dev",
            "get-caller-identity",
            "-",
            "Could not connect to the endpoint URL: \"http://127.0.0.1:1/\"",
        );
        assert!(
            format!("{sts}").starts_with("the AWS STS endpoint does not answer"),
            "{sts}"
        );
        assert!(
            d("An error occurred (AccessDeniedException) when calling the ListSecrets operation: no")
                .contains("secretsmanager:ListSecrets")
        );
        assert!(d("You must specify a region.").contains("AWS_REGION"));
        let e = format!(
            "{}",
            diagnose(
                "dev",
                "put-secret-value",
                "p/dev/a",
                "An error occurred (InvalidRequestException): You can't perform this operation on the secret because it was marked for deletion."
            )
        );
        assert!(
            e.contains("aws secretsmanager restore-secret --secret-id p/dev/a"),
            "{e}"
        );
    }
}
