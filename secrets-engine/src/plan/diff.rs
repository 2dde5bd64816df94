//! Pure: what differs between two environments, planned from what
//! [`crate::inspect`] read: their settings (store, runtime, delivery,
//! policy), each secret's presence in the manifest, the env files and the
//! stores, its policy, its [`status`](crate::plan::status) row side by side,
//! and the reuse rule's findings ([`resolve::reuses`]). Never a value, nor a
//! fingerprint of one.

use crate::{
    model::manifest::{BackendKind, Environment, Kind, Manifest, SecretSpec},
    model::validate,
    plan::resolve::Reuse,
    plan::status::{EnvView, Finding, Row},
};

#[cfg(doc)]
use crate::plan::resolve;

/// One setting or policy field that may differ: its name and both values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The setting or policy field (`store`, `min_length`, ...).
    pub name: &'static str,
    /// Its value in the first environment, then in the second.
    pub values: [String; 2],
}

impl Field {
    /// Whether the two values differ.
    pub fn differs(&self) -> bool {
        self.values[0] != self.values[1]
    }
}

/// One secret as one environment has it.
#[derive(Debug, Clone)]
pub struct Side {
    /// Whether the manifest gives the secret to the environment.
    pub in_manifest: bool,
    /// Whether the env file holds its key; `None` when the env file could not
    /// be read, or the secret is not kept there (derived).
    pub in_env_file: Option<bool>,
    /// Whether the store holds it; `None` when the store could not be read.
    pub in_store: Option<bool>,
    /// `status`'s row: state, version, age, due, last rotation.
    pub row: Option<Row>,
    /// The policy fields, when the manifest gives the secret to the environment.
    pub policy: Vec<(&'static str, String)>,
}

/// One secret in both environments.
#[derive(Debug, Clone)]
pub struct SecretDiff {
    /// The secret's name.
    pub name: String,
    /// How the first and the second environment have it.
    pub sides: [Side; 2],
    /// What differs: presence and policy, `(field, a, b)`.
    pub differences: Vec<Field>,
    /// Whether the reuse rule found the same value in both.
    pub reused: bool,
}

/// What `diff` reports: settings side by side, each secret, and the findings.
pub struct Diff {
    /// The environment-wide settings of both, in a fixed order.
    pub settings: Vec<Field>,
    /// Manifest order, then what a store holds that the manifest does not name.
    pub secrets: Vec<SecretDiff>,
    /// Missing keys or secrets, reused production values, what could not be read.
    pub findings: Vec<Finding>,
}

/// How the runtime's services get the values: the store's `delivery` for
/// Vault and AWS (default `fetch`), else the runtime's own store.
fn delivery(env: &Environment) -> String {
    match env.store {
        BackendKind::Vault | BackendKind::Aws => env
            .settings
            .get(env.store.name())
            .and_then(|t| t.get("delivery"))
            .and_then(|v| v.as_str())
            .unwrap_or(crate::store::DELIVERY_FETCH)
            .to_string(),
        _ => "runtime".into(),
    }
}

fn yes(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

fn field(name: &'static str, a: String, b: String) -> Field {
    Field {
        name,
        values: [a, b],
    }
}

/// The environment-wide settings of both, in a fixed order.
pub fn settings(envs: [&Environment; 2], views: &[EnvView; 2]) -> Vec<Field> {
    let each = |f: &dyn Fn(usize) -> String| [f(0), f(1)];
    let rows: Vec<(&'static str, [String; 2])> = vec![
        ("store", each(&|i| envs[i].store.name().into())),
        ("runtime", each(&|i| envs[i].runtime.name().into())),
        ("delivery", each(&|i| delivery(envs[i]))),
        ("production", each(&|i| yes(envs[i].production))),
        ("min_length", each(&|i| envs[i].min_length.to_string())),
        ("generate", each(&|i| yes(envs[i].generate))),
        (
            "rotate_every_days",
            each(&|i| match envs[i].rotate_every_days {
                Some(0) => "none".into(),
                Some(d) => d.to_string(),
                None => format!(
                    "{} (default)",
                    crate::model::manifest::DEFAULT_ROTATE_EVERY_DAYS
                ),
            }),
        ),
        ("env_file", each(&|i| views[i].env_file.clone())),
    ];
    rows.into_iter()
        .map(|(name, values)| Field { name, values })
        .collect()
}

/// A secret's policy in one environment, as the tool applies it.
pub fn policy(spec: &SecretSpec, env: &Environment) -> Vec<(&'static str, String)> {
    let random = spec.kind.is_random();
    let min = validate::min_length(spec, env);
    let dash = || "-".to_string();
    let one = |name, v: String| (name, v);
    vec![
        one("kind", spec.kind.name().into()),
        one("min_length", if random { min.to_string() } else { dash() }),
        one(
            "length",
            match random {
                true => spec.length.unwrap_or(min.max(32)).to_string(),
                false => dash(),
            },
        ),
        one(
            "generate",
            match (spec.generate, env.generate) {
                (false, _) => "never".into(),
                (true, true) => "auto".into(),
                (true, false) => "on-request".into(),
            },
        ),
        one(
            "rotate_every_days",
            spec.rotate_every_days(env)
                .map(|d| d.to_string())
                .unwrap_or_else(|| "none".into()),
        ),
        one("kept_by", spec.kept_by.join(",")),
        one("rotate_hook", spec.rotate_hook.join(" ")),
        one("rotated_hook", spec.rotated_hook.join(" ")),
        one("services", spec.services.join(",")),
    ]
}

/// Pure: differences and findings from what was read. `rows` are
/// `status::report`'s for both environments; `reuses` the reuse rule's
/// findings between them; `reuse_applies` whether either is production.
pub fn compare(
    manifest: &Manifest,
    envs: [&Environment; 2],
    views: &[EnvView; 2],
    rows: &[Row],
    reuses: &[Reuse],
) -> Diff {
    let names = [envs[0].name.as_str(), envs[1].name.as_str()];
    let reuse_applies = envs[0].production || envs[1].production;
    let mut findings = Vec::new();
    for (i, v) in views.iter().enumerate() {
        let finding = |kind, message: String| Finding {
            kind,
            environment: v.name.clone(),
            secret: None,
            message,
        };
        if let Some(why) = &v.unreachable {
            findings.push(finding(
                "unreachable",
                format!(
                    "the {} store could not be read ({why}); which secrets it holds, their versions and ages were not compared with {}",
                    v.store,
                    names[1 - i]
                ),
            ));
        }
        if v.env_keys.is_none() {
            let what = match &v.env_unreadable {
                Some(why) => format!("{} could not be read ({why})", v.env_file),
                None => format!("{} does not exist here", v.env_file),
            };
            let reuse = match reuse_applies {
                true => ", nor its values with the other's (the reuse check)",
                false => "",
            };
            findings.push(finding(
                "unreadable",
                format!(
                    "{what}: its keys were not compared with {}'s{reuse}; put the file here (or fix it) and run diff again",
                    names[1 - i]
                ),
            ));
        }
    }

    // Manifest order, then what a store holds that the manifest does not name.
    let mut all: Vec<String> = manifest
        .secrets
        .iter()
        .filter(|s| s.applies_to(names[0]) || s.applies_to(names[1]))
        .map(|s| s.name.clone())
        .collect();
    for l in views.iter().flat_map(|v| &v.listed) {
        if !all.contains(&l.secret) {
            all.push(l.secret.clone());
        }
    }
    let mut secrets = Vec::new();
    for name in all {
        let spec = manifest.secrets.iter().find(|s| s.name == name);
        let side = |i: usize| {
            let v = &views[i];
            let in_manifest = spec.is_some_and(|s| s.applies_to(names[i]));
            let kept_in_file = spec.is_some_and(|s| s.kind != Kind::Derived);
            Side {
                in_manifest,
                in_env_file: match (&v.env_keys, kept_in_file) {
                    (Some(k), true) => Some(k.contains(&name)),
                    _ => None,
                },
                in_store: v
                    .unreachable
                    .is_none()
                    .then(|| v.listed.iter().any(|l| l.secret == name)),
                row: rows
                    .iter()
                    .find(|r| r.environment == names[i] && r.secret == name)
                    .cloned(),
                policy: match (spec, in_manifest) {
                    (Some(s), true) => policy(s, envs[i]),
                    _ => Vec::new(),
                },
            }
        };
        let sides = [side(0), side(1)];
        let presence = |f: fn(&Side) -> Option<bool>| {
            let word = |s: &Side| match f(s) {
                Some(true) => "yes".to_string(),
                Some(false) => "no".to_string(),
                None => "?".to_string(),
            };
            [word(&sides[0]), word(&sides[1])]
        };
        let mut differences: Vec<Field> = [
            ("manifest", presence(|s| Some(s.in_manifest))),
            ("env_file", presence(|s| s.in_env_file)),
            ("store", presence(|s| s.in_store)),
        ]
        .into_iter()
        .map(|(n, values)| Field { name: n, values })
        .filter(|f| f.differs() && !f.values.contains(&"?".to_string()))
        .collect();
        if sides[0].in_manifest && sides[1].in_manifest {
            for ((name, a), (_, b)) in sides[0].policy.iter().zip(&sides[1].policy) {
                if a != b {
                    differences.push(field(name, a.clone(), b.clone()));
                }
            }
        }
        let both = sides[0].in_manifest && sides[1].in_manifest;
        for i in 0..2 {
            let (here, there) = (&sides[i], &sides[1 - i]);
            let finding = |message: String| Finding {
                kind: "missing",
                environment: names[i].to_string(),
                secret: Some(name.clone()),
                message,
            };
            if both && here.in_store == Some(false) && there.in_store == Some(true) {
                findings.push(finding(format!(
                    "not in the {} store (present in {}'s {} store); run `cargo xtask setup-secrets {}`",
                    views[i].store,
                    names[1 - i],
                    views[1 - i].store,
                    names[i]
                )));
            }
            if both && here.in_env_file == Some(false) && there.in_env_file == Some(true) {
                findings.push(finding(format!(
                    "{} has no {} key (present in {}); add it, or run `cargo xtask setup-secrets {} --generate-missing`",
                    views[i].env_file,
                    name.to_ascii_uppercase(),
                    views[1 - i].env_file,
                    names[i]
                )));
            }
        }
        let reused: Vec<&Reuse> = reuses.iter().filter(|r| r.secret == name).collect();
        for r in &reused {
            findings.push(Finding {
                kind: "reused",
                environment: r.renew_in.clone(),
                secret: Some(name.clone()),
                message: format!(
                    "{} holds the same value in {} and {} ({}); {} values must not be reused, generate a new one for {}",
                    r.key, names[0], names[1], r.other_at, r.production, r.renew_in
                ),
            });
        }
        secrets.push(SecretDiff {
            name,
            sides,
            differences,
            reused: !reused.is_empty(),
        });
    }
    Diff {
        settings: settings(envs, views),
        secrets,
        findings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Stored;

    const MANIFEST: &str = r#"
project = "demo"
[environments.production]
backend = "swarm"
min_length = 32
[environments.develop]
backend = "compose"
min_length = 16
[secrets.db_password]
kind = "password"
services = ["api", "postgres"]
kept_by = ["postgres"]
[secrets.api_key]
kind = "key"
[secrets.prod_only]
kind = "key"
environments = ["production"]
[secrets.url]
kind = "derived"
template = "x://{db_password}"
"#;

    fn stored(secret: &str) -> Stored {
        Stored {
            id: format!("{secret}_v1"),
            secret: secret.into(),
            version: Some(1),
            fingerprint: "f".into(),
            created: None,
            fix: None,
            kept: None,
        }
    }

    fn view(name: &str, store: &str, keys: Option<&[&str]>, listed: &[&str]) -> EnvView {
        EnvView {
            name: name.into(),
            store: store.into(),
            runtime: store.into(),
            env_file: format!("secrets/{name}.env"),
            env_keys: keys.map(|k| k.iter().map(|s| s.to_string()).collect()),
            listed: listed.iter().map(|s| stored(s)).collect(),
            ..Default::default()
        }
    }

    fn lines(d: &Diff) -> Vec<String> {
        d.findings.iter().map(Finding::line).collect()
    }

    #[test]
    fn missing_keys_policy_and_reuse_are_found_and_settings_compared() {
        let m = Manifest::parse(MANIFEST).unwrap();
        let envs = [m.env("production").unwrap(), m.env("develop").unwrap()];
        let views = [
            view(
                "production",
                "swarm",
                Some(&["db_password", "api_key", "prod_only"]),
                &["db_password", "api_key", "prod_only", "url"],
            ),
            view(
                "develop",
                "compose",
                Some(&["db_password"]),
                &["db_password", "url", "old"],
            ),
        ];
        let reuse = Reuse {
            secret: "db_password".into(),
            key: "DB_PASSWORD".into(),
            other: "develop".into(),
            other_at: "secrets/develop.env:1".into(),
            production: "production".into(),
            renew_in: "develop".into(),
        };
        let d = compare(&m, envs, &views, &[], &[reuse]);
        assert_eq!(
            lines(&d),
            [
                "reused: develop db_password: DB_PASSWORD holds the same value in production and develop (secrets/develop.env:1); production values must not be reused, generate a new one for develop",
                "missing: develop api_key: not in the compose store (present in production's swarm store); run `cargo xtask setup-secrets develop`",
                "missing: develop api_key: secrets/develop.env has no API_KEY key (present in secrets/production.env); add it, or run `cargo xtask setup-secrets develop --generate-missing`",
            ]
        );
        let get = |n: &str| d.secrets.iter().find(|s| s.name == n).unwrap();
        let diffs = |n: &str| -> Vec<(&str, [String; 2])> {
            get(n)
                .differences
                .iter()
                .map(|f| (f.name, f.values.clone()))
                .collect()
        };
        assert!(get("db_password").reused);
        let generate = ("generate", ["on-request".to_string(), "auto".to_string()]);
        assert_eq!(
            diffs("db_password"),
            [
                ("min_length", ["32".to_string(), "16".to_string()]),
                generate.clone()
            ]
        );
        assert_eq!(
            diffs("api_key"),
            [
                ("env_file", ["yes".to_string(), "no".to_string()]),
                ("store", ["yes".to_string(), "no".to_string()]),
                ("min_length", ["32".to_string(), "16".to_string()]),
                generate,
            ]
        );
        // Only production's by the manifest: a difference, not a finding.
        assert_eq!(
            diffs("prod_only"),
            [
                ("manifest", ["yes".to_string(), "no".to_string()]),
                ("env_file", ["yes".to_string(), "no".to_string()]),
                ("store", ["yes".to_string(), "no".to_string()]),
            ]
        );
        // Derived values are not kept in env files: only the stores count.
        assert!(diffs("url").is_empty(), "{:?}", diffs("url"));
        // What a store holds that the manifest does not name is listed.
        assert_eq!(
            diffs("old"),
            [("store", ["no".to_string(), "yes".to_string()])]
        );
        let s: Vec<&str> = d
            .settings
            .iter()
            .filter(|f| f.differs())
            .map(|f| f.name)
            .collect();
        assert_eq!(
            s,
            [
                "store",
                "runtime",
                "production",
                "min_length",
                "generate",
                "env_file"
            ]
        );
    }

    #[test]
    fn what_could_not_be_read_is_a_finding_never_the_same() {
        let m = Manifest::parse(MANIFEST).unwrap();
        let envs = [m.env("production").unwrap(), m.env("develop").unwrap()];
        let mut prod = view("production", "swarm", None, &[]);
        prod.unreachable = Some("docker: not found".into());
        let dev = view(
            "develop",
            "compose",
            Some(&["db_password", "api_key"]),
            &["db_password", "api_key"],
        );
        let d = compare(&m, envs, &[prod, dev], &[], &[]);
        assert_eq!(
            lines(&d),
            [
                "unreachable: production: the swarm store could not be read (docker: not found); which secrets it holds, their versions and ages were not compared with develop",
                "unreadable: production: secrets/production.env does not exist here: its keys were not compared with develop's, nor its values with the other's (the reuse check); put the file here (or fix it) and run diff again",
            ]
        );
        // Nothing is claimed missing or equal on the side that was not read.
        let api = d.secrets.iter().find(|s| s.name == "api_key").unwrap();
        let names: Vec<&str> = api.differences.iter().map(|f| f.name).collect();
        assert_eq!(
            names,
            ["min_length", "generate"],
            "only the policy, which the manifest tells"
        );
        assert_eq!(
            (api.sides[0].in_store, api.sides[0].in_env_file),
            (None, None)
        );
        // Shown `?` by diff: the environment's, but no row was read.
        assert!(api.sides[0].in_manifest && api.sides[0].row.is_none());
    }
}
