//! `doctor`'s checks: the seeds' "Troubleshooting" commands (`ls -la
//! secrets/`, `docker secret ls`, `vault status`, `vault token lookup`,
//! `docker exec ... cat /run/secrets/...`) done by the engine, each
//! [`Check`] answering `ok` or a finding with its fix. [`diagnose`] runs them
//! all; the caller renders them and sets the exit code.
//!
//! Gathering (files, the store, CLIs, `docker exec` / `kubectl exec`, in
//! [`gather`]) is kept apart from judging: the `evaluate_*` functions are
//! pure, from facts to [`Check`]s, and unit-tested below. No value, and no
//! hash of a value, is ever in a check: a container's files are hashed
//! inside it (`sha256sum PATHS`, one exec per container, paths only on its
//! argv) and compared here with the SHA-256 of the expected value, computed
//! in memory ([`Digest`]).

pub mod gather;

use std::{collections::BTreeMap, path::PathBuf};

use sha2::Digest as _;

use crate::{
    model::manifest::BackendKind,
    model::secret::SecretValue,
    plan::{Action, Step},
    session::Session,
    store::Probe,
};

/// How many execs (and `kubectl auth can-i` calls) run at once.
const PARALLEL: usize = 4;
/// A Vault token that expires sooner than this is a finding.
pub const TOKEN_MIN_SECS: u64 = 24 * 3600;

/// How one check went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Checked, and as it should be.
    Ok,
    /// Checked, and wrong: the check names its fix.
    Finding,
    /// Could not be checked (what it needs is missing or failed).
    NotChecked,
}

impl Status {
    /// The word the list and `--json` show.
    pub fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Finding => "finding",
            Status::NotChecked => "not-checked",
        }
    }
}

/// One answer: what was checked, how it went, and for a finding what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked (`values`, `store`, `file secrets/develop.env`, ...).
    pub name: String,
    /// How it went.
    pub status: Status,
    /// What was found.
    pub message: String,
    /// For a finding: what to do.
    pub fix: Option<String>,
}

fn ok(name: impl Into<String>, message: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        status: Status::Ok,
        message: message.into(),
        fix: None,
    }
}

fn finding(name: impl Into<String>, message: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        status: Status::Finding,
        message: message.into(),
        fix: Some(fix.into()),
    }
}

fn not_checked(name: impl Into<String>, message: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        status: Status::NotChecked,
        message: message.into(),
        fix: None,
    }
}

/// The SHA-256 of a value: compared, never shown (its `Debug` is redacted).
#[derive(Clone, PartialEq, Eq)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The SHA-256 of `v`, computed in memory.
    pub fn of(v: &SecretValue) -> Digest {
        Digest(sha2::Sha256::digest(v.expose()).into())
    }

    /// From `sha256sum`'s 64 hex digits.
    pub fn from_hex(hex: &str) -> Option<Digest> {
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Digest(out))
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Digest(<redacted>)")
    }
}

// ---------------------------------------------------------------- files

/// What was found about one secrets file on this machine.
#[derive(Debug, Clone)]
pub struct FileFacts {
    /// As messages name it (relative to the root where it is inside).
    pub shown: String,
    /// `env file`, or `file secret SSL_CERTIFICATE`.
    pub role: String,
    /// Where it is.
    pub path: PathBuf,
    /// The tool's own refusals for it (a symbolic link, group or others may
    /// read it: `fsutil`), as their messages.
    pub refused: Vec<String>,
    /// Its owner's uid, or why it could not be looked at.
    pub owner: std::result::Result<u32, String>,
    /// The operator's uid.
    pub me: u32,
    /// Why it cannot be read, if it cannot.
    pub unreadable: Option<String>,
    /// `git ls-files`: `None` when git is not installed.
    pub tracked: Option<bool>,
    /// Whether it sits under `secrets/` (or where the manifest's `env_file` says).
    pub in_place: bool,
    /// Where it belongs, for the fix when it is not there.
    pub belongs: String,
}

/// Pure: one check per file, every problem of a file in one finding.
pub fn evaluate_files(files: &[FileFacts]) -> Vec<Check> {
    files
        .iter()
        .map(|f| {
            let name = format!("file {}", f.shown);
            if let Some(why) = &f.unreadable {
                return finding(
                    name,
                    format!(
                        "the {} cannot be read ({why}): nothing in it was checked",
                        f.role
                    ),
                    format!(
                        "make it readable for you (`ls -la {}` shows owner and mode)",
                        f.path.display()
                    ),
                );
            }
            let mut problems = f.refused.clone();
            let mut fixes = Vec::new();
            if !f.refused.is_empty() {
                fixes.push(format!("chmod 600 {}", f.path.display()));
            }
            match &f.owner {
                Ok(uid) if *uid != f.me => {
                    problems.push(format!(
                        "it belongs to uid {uid}, not to you (uid {})",
                        f.me
                    ));
                    fixes.push(format!("chown {} {}", f.me, f.path.display()));
                }
                Ok(_) => {}
                Err(e) => problems.push(format!("its owner could not be read ({e})")),
            }
            match f.tracked {
                Some(true) => {
                    problems.push(
                        "git tracks it, so its values are in the repository's history".into(),
                    );
                    fixes.push(format!(
                        "git rm --cached {}, add it to .gitignore, and rotate every value in it",
                        f.shown
                    ));
                }
                None => {
                    problems.push(
                        "git is not installed, so nobody can tell whether git tracks it".into(),
                    );
                    fixes.push("install git (Debian: `apt-get install git`)".into());
                }
                Some(false) => {}
            }
            if !f.in_place {
                problems.push(format!("it is not where the tool keeps it ({})", f.belongs));
                fixes.push(format!(
                    "move it to {} (and name the new place in the env file)",
                    f.belongs
                ));
            }
            if problems.is_empty() {
                ok(
                    name,
                    format!(
                        "the {}: mode 0600 or stricter, yours, in {}, not tracked by git",
                        f.role, f.belongs
                    ),
                )
            } else {
                finding(
                    name,
                    format!("the {}: {}", f.role, problems.join("; ")),
                    fixes.join("; then "),
                )
            }
        })
        .collect()
}

// ---------------------------------------------------------------- store

/// Pure: the store's answer to setup's plan, one check for the store and
/// one per secret.
pub fn evaluate_store(
    env: &str,
    store: &str,
    plan: &std::result::Result<Vec<Step>, String>,
) -> Vec<Check> {
    let steps = match plan {
        Ok(s) => s,
        Err(e) => {
            return vec![finding(
                "store",
                format!(
                    "the {store} store could not be read, so no secret in it was checked: {}",
                    e
                ),
                "do what the message says, then run `cargo xtask doctor` again",
            )];
        }
    };
    let mut out = vec![ok("store", format!("the {store} store answers"))];
    let setup = format!("run `cargo xtask setup-secrets {env}`");
    for s in steps {
        let name = format!("store {}", s.secret);
        out.push(match s.action {
            Action::Create => finding(
                name,
                format!("not in the {store} store (expected {})", s.id),
                setup.clone(),
            ),
            Action::Update => finding(
                name,
                format!(
                    "the {store} store holds another value than the env file{}",
                    if s.detail.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", s.detail)
                    }
                ),
                format!(
                    "{setup} (or `cargo xtask rotate-secrets {env} --secret {}`)",
                    s.secret
                ),
            ),
            Action::Unchanged => ok(name, format!("current in the {store} store ({})", s.id)),
            Action::Extra | Action::Remove => continue,
        });
    }
    out
}

// ---------------------------------------------------------------- access

/// Pure: the store's and the cluster's answers about access. `kind` names
/// where the fix is made; `now` is not needed: lifetimes come as seconds left.
pub fn evaluate_probes(env: &str, kind: BackendKind, probes: &[Probe]) -> Vec<Check> {
    let mut out = Vec::new();
    for p in probes {
        let c = match p {
            Probe::Sealed { server, sealed } => match sealed {
                Ok(false) => ok(
                    "access vault status",
                    format!("the Vault server at {server} answers and is unsealed"),
                ),
                Ok(true) => finding(
                    "access vault status",
                    format!(
                        "the Vault server at {server} is sealed: nothing can be read or written"
                    ),
                    "unseal it with the unseal keys (`bao operator unseal`, or `vault operator unseal`, once per key share), then run doctor again",
                ),
                Err(e) => finding(
                    "access vault status",
                    format!("the Vault server at {server} could not be asked: {e}"),
                    "start it or point VAULT_ADDR (or `address` in the manifest) at it",
                ),
            },
            Probe::Lifetime(l) => match l {
                Ok(None) => ok("access token", "the Vault token never expires"),
                Ok(Some(s)) if *s < TOKEN_MIN_SECS => finding(
                    "access token",
                    format!("the Vault token expires in {}", span(*s)),
                    "renew it (`bao token renew`) or log in again (`bao login`) before it expires",
                ),
                Ok(Some(s)) => ok(
                    "access token",
                    format!("the Vault token is valid for {}", span(*s)),
                ),
                Err(e) => finding(
                    "access token",
                    format!("the Vault token could not be looked up: {e}"),
                    "set VAULT_TOKEN (or BAO_TOKEN), or log in (`bao login`)",
                ),
            },
            Probe::Allowed { what, needs, has } => {
                let name = format!("access {what}");
                match has {
                    Err(e) => finding(
                        name,
                        format!("could not be asked: {}", e),
                        "do what the message says, then run doctor again",
                    ),
                    Ok(has) => {
                        let root = has.iter().any(|h| h == "root" || h == "*");
                        let missing: Vec<&String> =
                            needs.iter().filter(|n| !root && !has.contains(n)).collect();
                        if missing.is_empty() {
                            ok(name, format!("allowed: {}", needs.join(", ")))
                        } else {
                            let list = missing
                                .iter()
                                .map(|m| m.as_str())
                                .collect::<Vec<_>>()
                                .join(", ");
                            finding(
                                name,
                                format!("not allowed: {list}"),
                                access_fix(env, kind, &list),
                            )
                        }
                    }
                }
            }
            Probe::Identity { who, region } => {
                let id = match who {
                    Ok(arn) => ok("access identity", format!("the AWS credentials are {arn}")),
                    Err(e) => finding(
                        "access identity",
                        format!("`aws sts get-caller-identity` failed: {}", e),
                        aws_identity_fix(env, aws_identity_cause(e, region.is_some())),
                    ),
                };
                out.push(id);
                match region {
                    Some(r) => ok("access region", format!("region {r}")),
                    None => finding(
                        "access region",
                        "no AWS region is set",
                        format!("set `region` in [environments.{env}.aws], or AWS_REGION"),
                    ),
                }
            }
            Probe::NotProbed { what, why } => not_checked(format!("access {what}"), why.clone()),
        };
        out.push(c);
    }
    out
}

/// What an AWS identity lookup failed on, for the fix that follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsCause {
    /// The endpoint did not answer (refused, timed out, unknown host).
    Endpoint,
    /// No region is set.
    Region,
    /// The credentials are missing, unknown, expired or refused.
    Credentials,
}

/// Pure: the cause of a failed `aws sts get-caller-identity`, from its
/// message (as the store words it) and whether a region is set.
pub fn aws_identity_cause(err: &str, region_set: bool) -> AwsCause {
    let low = err.to_ascii_lowercase();
    let has = |s: &[&str]| s.iter().any(|x| low.contains(x));
    if has(&["no aws region", "must specify a region", "noregionerror"]) {
        return AwsCause::Region;
    }
    if has(&[
        "endpoint does not answer",
        "could not connect",
        "connection refused",
        "connect timeout",
        "endpointconnectionerror",
        "name or service not known",
        "read timeout",
    ]) {
        return AwsCause::Endpoint;
    }
    if !region_set && !has(&["credentials", "profile", "token", "signature", "access"]) {
        return AwsCause::Region;
    }
    AwsCause::Credentials
}

/// Pure: the identity finding's fix for its cause.
pub fn aws_identity_fix(env: &str, cause: AwsCause) -> String {
    match cause {
        AwsCause::Endpoint => format!(
            "point `endpoint_url` in [environments.{env}.aws] (or AWS_ENDPOINT_URL) at an endpoint that answers for Secrets Manager and STS, or unset it to use AWS's own; then check the network (proxy, firewall, DNS)"
        ),
        AwsCause::Region => {
            format!("set `region` in [environments.{env}.aws], or AWS_REGION")
        }
        AwsCause::Credentials => format!(
            "set AWS credentials (AWS_PROFILE, `profile` in [environments.{env}.aws], AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or `aws configure` / `aws sso login`)"
        ),
    }
}

fn access_fix(env: &str, kind: BackendKind, missing: &str) -> String {
    match kind {
        BackendKind::Vault => format!(
            "grant {missing} in the token's policy (deploy/vault-policy.hcl shows all the tool needs), or use a token that has it"
        ),
        BackendKind::K8s => format!(
            "grant {missing} to the kubeconfig's user in the environment's namespace (a Role and RoleBinding; docs/doctor.md lists every verb the tool needs)"
        ),
        BackendKind::Aws => format!(
            "allow {missing} in the credentials' IAM policy (docs/vault-and-aws.md, Permissions) for {env}'s prefix"
        ),
        _ => format!("grant {missing}"),
    }
}

/// `3d 4h`, `5h 12m`, `40m`.
fn span(s: u64) -> String {
    let (d, h, m) = (s / 86400, s % 86400 / 3600, s % 3600 / 60);
    match (d, h) {
        (0, 0) => format!("{m}m"),
        (0, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

// ---------------------------------------------------------------- containers

/// One secret a container should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The secret.
    pub secret: String,
    /// Where the container sees it; `None`: its spec does not mount it.
    pub path: Option<String>,
    /// The service keeps its own copy (`kept_by`): not compared.
    pub kept: bool,
}

/// What `sha256sum PATHS` gave inside a container.
#[derive(Clone)]
pub struct ExecResult {
    /// The exit code; `None` when the command was killed.
    pub code: Option<i32>,
    /// Hashes, and nothing else: never shown, nor in `Debug`.
    pub stdout: String,
    /// What the command said on standard error.
    pub stderr: String,
}

impl std::fmt::Debug for ExecResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecResult")
            .field("code", &self.code)
            .field("stdout", &"<redacted>")
            .field("stderr", &self.stderr)
            .finish()
    }
}

/// One running container (a compose container, a swarm task's, a pod's).
#[derive(Debug, Clone)]
pub struct ContainerFacts {
    /// `container xt-develop-backend-1`, `pod backend-5d9.../backend`.
    pub name: String,
    /// The service it runs.
    pub service: String,
    /// The secrets it should have, and where.
    pub expected: Vec<Expected>,
    /// `Err`: the exec itself could not run (not the command's own failure).
    pub exec: std::result::Result<ExecResult, String>,
}

/// What the runtime showed of the environment's running services.
#[derive(Debug, Clone, Default)]
pub struct RuntimeFacts {
    /// `compose`, `swarm`, `k8s`: for fixes.
    pub runtime: String,
    /// Where the stack is (`project xt-develop`, `namespace x`), for messages.
    pub place: String,
    /// The containers this node can look into.
    pub containers: Vec<ContainerFacts>,
    /// Tasks on other swarm nodes, which this node cannot exec into.
    pub elsewhere: Vec<String>,
    /// Why the runtime could not be asked, if it could not.
    pub error: Option<String>,
    /// Why nothing inside was looked at on purpose (reader delivery).
    pub skipped: Option<String>,
}

/// Pure: `sha256sum`'s answer per path: the digest, or why it gave none.
pub fn parse_sums(
    r: &ExecResult,
    paths: &[&str],
) -> BTreeMap<String, std::result::Result<Digest, String>> {
    let mut out = BTreeMap::new();
    for line in r.stdout.lines() {
        // `HASH  PATH` (text mode) or `HASH *PATH` (binary mode).
        let Some((hash, rest)) = line.split_once(' ') else {
            continue;
        };
        let path = rest
            .strip_prefix(' ')
            .or_else(|| rest.strip_prefix('*'))
            .unwrap_or(rest);
        if let Some(d) = Digest::from_hex(hash.trim_start_matches('\\')) {
            out.insert(path.to_string(), Ok(d));
        }
    }
    for p in paths {
        if out.contains_key(*p) {
            continue;
        }
        // GNU: `sha256sum: PATH: REASON`; busybox: `sha256sum: can't open 'PATH': REASON`.
        let why = r
            .stderr
            .lines()
            .filter(|l| l.contains(&format!("{p}:")) || l.contains(&format!("'{p}'")))
            .map(|l| l.rsplit(": ").next().unwrap_or(l).trim().to_string())
            .next();
        if let Some(w) = why {
            out.insert(p.to_string(), Err(w));
        }
    }
    out
}

/// Pure: whether the exec failed because the image has no `sha256sum`.
/// Docker 20.10 writes the runtime's "executable file not found" to stdout,
/// so stdout counts too when it holds no hash line.
pub fn no_sha256sum(r: &ExecResult) -> bool {
    let hashed = r.stdout.lines().any(|l| {
        l.split_once(' ')
            .is_some_and(|(h, _)| Digest::from_hex(h.trim_start_matches('\\')).is_some())
    });
    let e = format!("{}\n{}", r.stdout, r.stderr).to_ascii_lowercase();
    !hashed
        && (matches!(r.code, Some(126 | 127))
            || e.contains("executable file not found")
            || e.contains("exit code 126")
            || e.contains("exit code 127")
            || (e.contains("sha256sum") && e.contains("not found")))
}

/// Pure: one check per secret of each container, against the expected
/// digests (secret name → SHA-256 of the value the env file gives).
pub fn evaluate_containers(
    env: &str,
    facts: &RuntimeFacts,
    want: &BTreeMap<String, Digest>,
) -> Vec<Check> {
    let rt = facts.runtime.as_str();
    if let Some(why) = &facts.skipped {
        return vec![not_checked(format!("{rt} containers"), why.clone())];
    }
    if let Some(e) = &facts.error {
        return vec![finding(
            format!("{rt} containers"),
            format!("the {rt} runtime could not be asked which containers run: {e}"),
            "do what the message says, then run doctor again",
        )];
    }
    let mut out = Vec::new();
    if facts.containers.is_empty() && facts.elsewhere.is_empty() {
        out.push(not_checked(
            format!("{rt} containers"),
            format!(
                "nothing of {} runs, so nothing was looked at inside (`cargo xtask deploy {env}` starts it)",
                facts.place
            ),
        ));
    }
    let deploy = format!(
        "run `cargo xtask deploy {env}` (after `cargo xtask setup-secrets {env}` if the store is out of date too)"
    );
    for c in &facts.containers {
        let paths: Vec<&str> = c
            .expected
            .iter()
            .filter_map(|e| e.path.as_deref())
            .collect();
        let sums = match &c.exec {
            Err(e) => {
                out.push(finding(
                    c.name.clone(),
                    format!("could not look inside: {e}"),
                    "check that it still runs, then run doctor again",
                ));
                continue;
            }
            Ok(r) if !paths.is_empty() && no_sha256sum(r) => {
                out.push(finding(
                    c.name.clone(),
                    "could not look inside: the image has no `sha256sum` (a FROM scratch image?), so its secrets were not checked",
                    "add busybox or coreutils to the image, or check the files from a debugging container that shares its mounts",
                ));
                continue;
            }
            Ok(r) => parse_sums(r, &paths),
        };
        for e in &c.expected {
            let name = format!("{} {}", c.name, e.secret);
            let Some(path) = &e.path else {
                out.push(finding(
                    name,
                    format!("service {} should have {} (deploy/secrets.toml), but its spec does not mount it", c.service, e.secret),
                    "mount it in the service's deploy file (`cargo xtask check` names the difference), then deploy",
                ));
                continue;
            };
            out.push(match sums.get(path) {
                None => finding(
                    name,
                    format!("could not look at {path}: sha256sum said nothing about it"),
                    format!("look by hand: `ls -la {}` inside the container", parent(path)),
                ),
                Some(Err(why)) if why.to_ascii_lowercase().contains("no such file") => finding(
                    name,
                    format!("{path} is not there"),
                    format!("mount {} in service {} (`cargo xtask check`), then {deploy}", e.secret, c.service),
                ),
                Some(Err(why)) if why.to_ascii_lowercase().contains("permission denied") => finding(
                    name,
                    format!("{path} is there but the container's user cannot read it"),
                    unreadable_fix(env, rt),
                ),
                Some(Err(why)) => finding(
                    name,
                    format!("{path} cannot be read: {why}"),
                    format!("look by hand: `ls -la {}` inside the container", parent(path)),
                ),
                Some(Ok(_)) if e.kept => not_checked(
                    name,
                    format!("{path} is there and readable; kept (not compared): {} keeps its own copy and mounts the version it started with", c.service),
                ),
                Some(Ok(got)) => match want.get(&e.secret) {
                    Some(w) if w == got => ok(name, format!("{path} holds the current value")),
                    Some(_) => finding(
                        name,
                        format!("{path} holds another value than the env file (an older version)"),
                        deploy.clone(),
                    ),
                    None => not_checked(name, format!("{path} is there and readable; its value was not resolved, so not compared")),
                },
            });
        }
    }
    for t in &facts.elsewhere {
        out.push(not_checked(t.clone(), "runs on another swarm node: `docker exec` reaches this node's containers only; run doctor on that node's manager, or check it there"));
    }
    out
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/')
        .map(|(d, _)| if d.is_empty() { "/" } else { d })
        .unwrap_or(path)
}

fn unreadable_fix(env: &str, rt: &str) -> String {
    match rt {
        "compose" => format!(
            "Compose mounts the host file with its owner and mode (0600): set `owner = \"UID:GID\"` (the image's user) in [environments.{env}.compose], then `cargo xtask setup-secrets {env}` and deploy"
        ),
        "swarm" => "give the secret `uid`, `gid` (the image's user) or `mode: 0444` in the service's long-syntax secrets entry of the stack file, then deploy".into(),
        _ => "set the volume's `defaultMode` (e.g. 0440) and the pod's `securityContext.fsGroup` to a group of the container's user, then deploy".into(),
    }
}

/// Every check of the session's environment, in order: its files, its
/// values, its store (listing and rights), Kubernetes rights where it runs
/// there, and what each container or pod mounts against the env file.
pub fn diagnose(s: &Session) -> Vec<Check> {
    let env = s.env.name.clone();
    let mut checks = Vec::new();
    checks.extend(evaluate_files(&gather::files(s)));
    let resolved = s.resolve_read_only();
    let names: Vec<String> = s
        .manifest
        .secrets_for(&env)
        .iter()
        .map(|sp| sp.name.clone())
        .collect();
    let want: BTreeMap<String, Digest> = match &resolved {
        Ok(r) => r
            .desired
            .iter()
            .map(|d| (d.spec.name.clone(), Digest::of(&d.value)))
            .collect(),
        Err(_) => BTreeMap::new(),
    };
    match &resolved {
        Ok(r) => {
            checks.push(ok(
                "values",
                format!("{}: every value is there and valid", r.file.shown),
            ));
            let plan = s.plan(r).map(|p| p.steps).map_err(|e| format!("{e:#}"));
            checks.extend(evaluate_store(&env, s.store.kind().name(), &plan));
        }
        Err(err) => {
            checks.push(finding(
                "values",
                format!("the env file's values could not be read: {err:#}"),
                "fix what the message names; until then the store and the containers cannot be compared",
            ));
            checks.push(not_checked(
                "store",
                "needs the env file's values (see `values`)",
            ));
        }
    }
    checks.extend(evaluate_probes(
        &env,
        s.store.kind(),
        &s.store.probe(&names),
    ));
    if s.env.runtime == BackendKind::K8s || s.store.kind() == BackendKind::K8s {
        checks.extend(evaluate_probes(
            &env,
            BackendKind::K8s,
            &gather::k8s_can_i(s),
        ));
    }
    let facts = gather::runtime(s);
    let mut cont = evaluate_containers(&env, &facts, &want);
    if resolved.is_err() {
        // Nothing could be compared: the same cause, not another finding.
        for c in &mut cont {
            if c.status == Status::Ok {
                c.status = Status::NotChecked;
                c.message
                    .push_str(" (not compared: the values could not be read)");
            }
        }
    }
    checks.extend(cont);
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sv(s: &str) -> SecretValue {
        SecretValue::from_string(s.into())
    }

    fn hex(d: &Digest) -> String {
        d.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn digests_read_sha256sum_and_never_show() {
        let d = Digest::of(&sv("abc"));
        assert_eq!(
            hex(&d),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Digest::from_hex(&hex(&d)), Some(d.clone()));
        assert_eq!(Digest::from_hex("zz"), None);
        assert_eq!(format!("{d:?}"), "Digest(<redacted>)");
        let r = ExecResult {
            code: Some(0),
            stdout: hex(&d),
            stderr: String::new(),
        };
        assert!(!format!("{r:?}").contains(&hex(&d)));
    }

    fn facts(mode_ok: bool, owner: u32, tracked: Option<bool>, in_place: bool) -> FileFacts {
        FileFacts {
            shown: "secrets/develop.env".into(),
            role: "env file".into(),
            path: "/r/secrets/develop.env".into(),
            refused: if mode_ok {
                vec![]
            } else {
                vec!["secrets/develop.env is readable by group or others (mode 644); run `chmod 600 /r/secrets/develop.env` and try again".into()]
            },
            owner: Ok(owner),
            me: 1000,
            unreadable: None,
            tracked,
            in_place,
            belongs: "secrets/develop.env".into(),
        }
    }

    #[test]
    fn files_each_problem_with_its_fix() {
        let c = evaluate_files(&[facts(true, 1000, Some(false), true)]);
        assert_eq!(c[0].status, Status::Ok, "{c:?}");
        let c = &evaluate_files(&[facts(false, 0, Some(true), false)])[0];
        assert_eq!(c.status, Status::Finding);
        assert!(
            c.message.contains("mode 644")
                && c.message.contains("uid 0")
                && c.message.contains("git tracks it"),
            "{c:?}"
        );
        let fix = c.fix.as_deref().unwrap();
        assert!(
            fix.contains("chmod 600")
                && fix.contains("chown 1000")
                && fix.contains("git rm --cached")
                && fix.contains("move it"),
            "{fix}"
        );
        let c = &evaluate_files(&[facts(true, 1000, None, true)])[0];
        assert_eq!(c.status, Status::Finding, "no git: could not look");
        let mut f = facts(true, 1000, Some(false), true);
        f.unreadable = Some("Permission denied".into());
        assert_eq!(evaluate_files(&[f])[0].status, Status::Finding);
    }

    fn step(secret: &str, action: Action) -> Step {
        Step {
            secret: secret.into(),
            action,
            id: format!("secrets/develop/{secret}"),
            version: None,
            detail: String::new(),
        }
    }

    #[test]
    fn store_missing_and_stale_name_setup() {
        let c = evaluate_store(
            "develop",
            "compose",
            &Ok(vec![
                step("a", Action::Unchanged),
                step("b", Action::Create),
                step("c", Action::Update),
                step("d", Action::Extra),
            ]),
        );
        assert_eq!(c.len(), 4, "{c:?}");
        assert_eq!(c[0].status, Status::Ok);
        assert_eq!(c[1].status, Status::Ok);
        assert!(
            c[2].status == Status::Finding
                && c[2]
                    .fix
                    .as_deref()
                    .unwrap()
                    .contains("cargo xtask setup-secrets develop")
        );
        assert!(c[3].status == Status::Finding && c[3].message.contains("another value"));
        let c = evaluate_store("develop", "swarm", &Err("no daemon".into()));
        assert!(
            c.len() == 1 && c[0].status == Status::Finding && c[0].message.contains("no daemon")
        );
    }

    #[test]
    fn probes_sealed_expiring_and_missing_rights() {
        let p = vec![
            Probe::Sealed {
                server: "http://v".into(),
                sealed: Ok(true),
            },
            Probe::Lifetime(Ok(Some(3600))),
            Probe::Lifetime(Ok(Some(30 * 86400))),
            Probe::Lifetime(Ok(None)),
            Probe::Allowed {
                what: "secret/data/p/a".into(),
                needs: vec!["create".into(), "read".into()],
                has: Ok(vec!["read".into()]),
            },
            Probe::Allowed {
                what: "secret/metadata/p".into(),
                needs: vec!["list".into()],
                has: Ok(vec!["root".into()]),
            },
            Probe::Identity {
                who: Ok("arn:aws:iam::1:user/x".into()),
                region: None,
            },
            Probe::NotProbed {
                what: "x".into(),
                why: "would change".into(),
            },
        ];
        let c = evaluate_probes("develop", BackendKind::Vault, &p);
        let st: Vec<Status> = c.iter().map(|c| c.status).collect();
        use Status::{Finding, NotChecked};
        const OK: Status = Status::Ok;
        assert_eq!(
            st,
            [
                Finding, Finding, OK, OK, Finding, OK, OK, Finding, NotChecked
            ],
            "{c:?}"
        );
        assert!(
            c[0].message.contains("sealed")
                && c[0].fix.as_deref().unwrap().contains("operator unseal")
        );
        assert!(c[1].message.contains("1h 0m"));
        assert!(
            c[4].message.contains("not allowed: create")
                && c[4].fix.as_deref().unwrap().contains("vault-policy.hcl")
        );
    }

    #[test]
    fn aws_identity_fix_follows_the_cause() {
        use AwsCause::*;
        let cases = [
            // store/aws.rs's words for each cause, then the CLI's own.
            (
                "the AWS STS endpoint does not answer (Could not connect to the endpoint URL: \"http://127.0.0.1:1/\"); check `endpoint_url` / `region` in [environments.develop.aws] (or AWS_ENDPOINT_URL, AWS_REGION) and the network",
                true,
                Endpoint,
            ),
            (
                "Could not connect to the endpoint URL: \"http://127.0.0.1:9/\"",
                true,
                Endpoint,
            ),
            ("[Errno 111] Connection refused", false, Endpoint),
            (
                "no AWS region (You must specify a region.); set `region` in [environments.<env>.aws], or AWS_REGION",
                false,
                Region,
            ),
            ("You must specify a region.", true, Region),
            ("`aws sts get-caller-identity` gave no Arn", false, Region),
            (
                "no AWS credentials (Unable to locate credentials); set AWS_PROFILE",
                true,
                Credentials,
            ),
            (
                "no AWS credentials (Unable to locate credentials); set AWS_PROFILE",
                false,
                Credentials,
            ),
            (
                "AWS refused access (An error occurred (InvalidClientTokenId))",
                true,
                Credentials,
            ),
            (
                "the AWS credentials have expired (ExpiredToken)",
                true,
                Credentials,
            ),
        ];
        for (err, region, want) in cases {
            assert_eq!(aws_identity_cause(err, region), want, "{err}");
        }
        let fix = |c| aws_identity_fix("staging", c);
        assert!(fix(Endpoint).contains("`endpoint_url` in [environments.staging.aws]"));
        assert!(fix(Endpoint).contains("AWS_ENDPOINT_URL") && fix(Endpoint).contains("network"));
        assert!(!fix(Endpoint).contains("credentials"));
        assert!(fix(Region).contains("`region` in [environments.staging.aws]"));
        assert!(fix(Region).contains("AWS_REGION") && !fix(Region).contains("credentials"));
        assert!(
            fix(Credentials).contains("AWS credentials") && !fix(Credentials).contains("region")
        );
        // Through the probe: the finding's fix names the real environment.
        let c = evaluate_probes(
            "staging",
            BackendKind::Aws,
            &[Probe::Identity {
                who: Err(cases[0].0.into()),
                region: Some("eu-west-1".into()),
            }],
        );
        assert_eq!(c[0].status, Status::Finding);
        assert!(c[0].message.contains("the AWS STS endpoint"), "{c:?}");
        assert!(!c[0].message.contains("<env>"), "{c:?}");
        let f = c[0].fix.as_deref().unwrap();
        assert!(
            f.contains("endpoint_url") && f.contains("[environments.staging.aws]"),
            "{c:?}"
        );
        assert_eq!(c[1].status, Status::Ok);
    }

    fn exec(stdout: String, stderr: &str, code: i32) -> std::result::Result<ExecResult, String> {
        Ok(ExecResult {
            code: Some(code),
            stdout,
            stderr: stderr.into(),
        })
    }

    fn exp(secret: &str, kept: bool) -> Expected {
        Expected {
            secret: secret.into(),
            path: Some(format!("/run/secrets/{secret}")),
            kept,
        }
    }

    #[test]
    fn containers_current_old_missing_unreadable_kept_and_blind() {
        let cur = Digest::of(&sv("current-value"));
        let old = Digest::of(&sv("old-value"));
        let want: BTreeMap<String, Digest> = [
            ("a", &cur),
            ("b", &cur),
            ("c", &cur),
            ("d", &cur),
            ("e", &cur),
        ]
        .into_iter()
        .map(|(k, d)| (k.to_string(), d.clone()))
        .collect();
        let stdout = format!(
            "{}  /run/secrets/a\n{}  /run/secrets/b\n{}  /run/secrets/e\n",
            hex(&cur),
            hex(&old),
            hex(&old)
        );
        let stderr = "sha256sum: /run/secrets/c: No such file or directory\nsha256sum: can't open '/run/secrets/d': Permission denied\n";
        let mut f = RuntimeFacts {
            runtime: "compose".into(),
            place: "compose project p".into(),
            ..Default::default()
        };
        f.containers.push(ContainerFacts {
            name: "container p-backend-1".into(),
            service: "backend".into(),
            expected: vec![
                exp("a", false),
                exp("b", false),
                exp("c", false),
                exp("d", false),
                exp("e", true),
                Expected {
                    secret: "f".into(),
                    path: None,
                    kept: false,
                },
            ],
            exec: exec(stdout.clone(), stderr, 1),
        });
        f.containers.push(ContainerFacts {
            name: "container p-scratch-1".into(),
            service: "scratch".into(),
            expected: vec![exp("a", false)],
            // Docker 20.10 prints this on stdout.
            exec: exec("OCI runtime exec failed: exec failed: unable to start container process: exec: \"sha256sum\": executable file not found in $PATH: unknown".into(), "", 126),
        });
        f.elsewhere.push("task s_web.2 (node w1)".into());
        let c = evaluate_containers("develop", &f, &want);
        let st: Vec<(String, Status)> = c.iter().map(|c| (c.name.clone(), c.status)).collect();
        use Status::{Finding, NotChecked};
        const OK: Status = Status::Ok;
        assert_eq!(
            st,
            [
                ("container p-backend-1 a".into(), OK),
                ("container p-backend-1 b".into(), Finding),
                ("container p-backend-1 c".into(), Finding),
                ("container p-backend-1 d".into(), Finding),
                ("container p-backend-1 e".into(), NotChecked),
                ("container p-backend-1 f".into(), Finding),
                ("container p-scratch-1".into(), Finding),
                ("task s_web.2 (node w1)".into(), NotChecked),
            ],
            "{c:?}"
        );
        assert!(
            c[1].message.contains("another value")
                && c[1]
                    .fix
                    .as_deref()
                    .unwrap()
                    .contains("cargo xtask deploy develop")
        );
        assert!(c[2].message.contains("is not there"));
        assert!(
            c[3].message.contains("cannot read") && c[3].fix.as_deref().unwrap().contains("owner")
        );
        assert!(c[4].message.contains("kept (not compared)"));
        assert!(c[6].message.contains("no `sha256sum`"));
        // Never a digest in any message or fix.
        for ch in &c {
            for d in [&cur, &old] {
                assert!(
                    !ch.message.contains(&hex(d))
                        && !ch.fix.clone().unwrap_or_default().contains(&hex(d))
                );
            }
        }
        let none = RuntimeFacts {
            runtime: "swarm".into(),
            place: "stack s".into(),
            ..Default::default()
        };
        assert_eq!(evaluate_containers("e", &none, &want)[0].status, NotChecked);
        let err = RuntimeFacts {
            runtime: "k8s".into(),
            error: Some("cluster down".into()),
            ..Default::default()
        };
        assert_eq!(evaluate_containers("e", &err, &want)[0].status, Finding);
    }
}
