//! The pure planning of a rotation: which chosen secrets rotate and how
//! (a value from the env file, a generated one, or skipped with the reason),
//! the derived secrets that follow their parts, the alternating user pairs,
//! the new versions the store gets and what pruning removes afterwards.
//! [`crate::rotate`] carries the plan out.

use anyhow::{Result, bail};

use crate::{
    model::manifest::{Kind, SecretSpec},
    plan::{self, Action, Naming, Step, Stored},
};

/// What happens to one chosen secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// The env file already holds a value the store does not: use it.
    FromEnvFile,
    /// Generate a new value and write it to the env file.
    Generate,
    /// Not rotated, with the reason (only with `--all`).
    Skip(String),
}

/// Pure: what to do with one secret given its kind and whether the store
/// already holds the env file's value. `explicit` is true for `--secret NAME`.
pub fn choose(spec: &SecretSpec, store_action: Option<Action>, explicit: bool) -> Result<Choice> {
    if matches!(store_action, Some(Action::Create | Action::Update)) && spec.kind != Kind::Derived {
        return kept_needs_hook(spec).map(|_| Choice::FromEnvFile);
    }
    let why = match spec.kind {
        Kind::Password | Kind::Key if spec.generate => {
            return kept_needs_hook(spec).map(|_| Choice::Generate);
        }
        Kind::Password | Kind::Key => format!(
            "{} has generate = false; put a new value in the env file",
            spec.name
        ),
        Kind::Derived => format!(
            "{} is built from {}; rotate those and it is rebuilt",
            spec.name,
            spec.template_parts()
                .into_iter()
                .filter(|p| p != "env" && p != "project")
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Kind::Username | Kind::File => format!(
            "{} is a {} secret, which cannot be generated; put the new value in the env file, then run rotate-secrets again",
            spec.name,
            spec.kind.name()
        ),
    };
    if explicit {
        bail!("cannot rotate {why}")
    } else {
        Ok(Choice::Skip(why))
    }
}

/// Pure: a secret whose consumers keep their own copy rotates only through a
/// hook that changes that copy; a new version alone would lock clients out.
pub fn kept_needs_hook(spec: &SecretSpec) -> Result<()> {
    if spec.kept_by.is_empty() || !spec.rotate_hook.is_empty() {
        return Ok(());
    }
    let who = spec.kept_by.join(", ");
    bail!(
        "cannot rotate {name}: {who} keep(s) their own copy of it (read only when they initialise), so a new version would not change the credential {who} check(s), and every task given the new value would be refused. Add a rotate_hook to [secrets.{name}] in deploy/secrets.toml that changes it in {who} (deploy/hooks/ has examples), or remove kept_by if {who} read(s) it at every start",
        name = spec.name
    )
}

/// Pure: the other role of an alternating pair: `<user>` and `<user>_b`.
pub fn other_user(user: &str) -> String {
    match user.strip_suffix("_b") {
        Some(base) if !base.is_empty() => base.to_string(),
        _ => format!("{user}_b"),
    }
}

/// Pure: the chosen secrets plus every derived secret built from them, in
/// manifest order (parts before what is built from them).
pub fn with_derived(specs: &[&SecretSpec], chosen: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for spec in specs {
        let from_chosen = spec.template_parts().iter().any(|p| out.contains(p));
        if chosen.contains(&spec.name) || (spec.kind == Kind::Derived && from_chosen) {
            out.push(spec.name.clone());
        }
    }
    out
}

/// Pure: what the rotation writes. Secrets in `rotating` get a new version (or
/// are replaced in place); the store's plan already says so where the env file
/// holds a new value, and a generated value will be new anyway.
pub fn rotation_plan(naming: &dyn Naming, before: &[Step], rotating: &[String]) -> Vec<Step> {
    rotating
        .iter()
        .filter_map(|name| {
            let b = before.iter().find(|s| &s.secret == name)?;
            if b.action.writes() {
                return Some(b.clone());
            }
            let (id, version) = match b.version {
                Some(v) if naming.versioned() => (naming.identity(name, v + 1), Some(v + 1)),
                _ => (b.id.clone(), b.version),
            };
            let detail = match b.version {
                Some(v) => format!("new value, replaces v{v}"),
                None => "new value".to_string(),
            };
            Some(Step {
                secret: name.clone(),
                action: Action::Update,
                id,
                version,
                detail,
            })
        })
        .collect()
}

/// Pure: the versions a rotation's pruning removes once the redeploy has
/// moved every service to the new versions (a version something still uses
/// then is kept, which the real run says).
pub fn expected_prune(listed: &[Stored], plan: &[Step], keep: usize) -> Vec<Step> {
    let mut after = listed.to_vec();
    for st in plan {
        if listed.iter().any(|l| l.id == st.id) {
            continue;
        }
        after.push(Stored {
            id: st.id.clone(),
            secret: st.secret.clone(),
            version: st.version,
            fingerprint: String::new(),
            created: None,
            fix: None,
            kept: None,
        });
    }
    let names: Vec<String> = plan.iter().map(|st| st.secret.clone()).collect();
    plan::prune(&after, &names, keep, &Default::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::manifest::Manifest;

    const M: &str = r#"
project = "demo"
[environments.staging]
backend = "swarm"
[secrets.user]
kind = "username"
[secrets.pw]
kind = "password"
[secrets.url]
kind = "derived"
template = "x://{user}:{pw}@h"
"#;

    #[test]
    fn choices_follow_kind_and_store() {
        let m = Manifest::parse(M).unwrap();
        let s = |n: &str| m.secrets.iter().find(|x| x.name == n).unwrap();
        assert_eq!(
            choose(s("pw"), Some(Action::Unchanged), true).unwrap(),
            Choice::Generate
        );
        assert_eq!(
            choose(s("pw"), Some(Action::Update), true).unwrap(),
            Choice::FromEnvFile
        );
        assert_eq!(
            choose(s("user"), Some(Action::Update), true).unwrap(),
            Choice::FromEnvFile
        );
        let e = format!(
            "{:#}",
            choose(s("user"), Some(Action::Unchanged), true).unwrap_err()
        );
        assert!(
            e.contains(
                "username secret, which cannot be generated; put the new value in the env file"
            ),
            "{e}"
        );
        assert!(matches!(
            choose(s("user"), Some(Action::Unchanged), false).unwrap(),
            Choice::Skip(_)
        ));
        let e = format!(
            "{:#}",
            choose(s("url"), Some(Action::Update), true).unwrap_err()
        );
        assert!(e.contains("built from user, pw"), "{e}");
    }

    #[test]
    fn derived_secrets_follow_their_parts_and_nothing_else() {
        let m = Manifest::parse(M).unwrap();
        let specs = m.secrets_for("staging");
        assert_eq!(with_derived(&specs, &["pw".into()]), ["pw", "url"]);
        assert_eq!(with_derived(&specs, &["user".into()]), ["user", "url"]);
        assert!(with_derived(&specs, &[]).is_empty());
    }

    const KEPT: &str = r#"
project = "demo"
[environments.staging]
backend = "swarm"
[secrets.user]
kind = "username"
services = ["db", "api"]
kept_by = ["db"]
[secrets.pw]
kind = "password"
services = ["db", "api"]
kept_by = ["db"]
alternate_user = "user"
[secrets.hooked]
kind = "password"
services = ["db"]
kept_by = ["db"]
rotate_hook = ["deploy/hooks/x"]
"#;

    #[test]
    fn a_kept_secret_without_a_hook_is_refused_with_the_fix() {
        let m = Manifest::parse(KEPT).unwrap();
        let s = |n: &str| m.secrets.iter().find(|x| x.name == n).unwrap();
        for (action, explicit) in [
            (Some(Action::Unchanged), true),
            (Some(Action::Unchanged), false),
            (Some(Action::Update), true),
        ] {
            let e = format!("{:#}", choose(s("pw"), action, explicit).unwrap_err());
            assert!(
                e.starts_with("cannot rotate pw: db keep(s) their own copy"),
                "{e}"
            );
            assert!(
                e.contains("Add a rotate_hook to [secrets.pw] in deploy/secrets.toml"),
                "{e}"
            );
        }
        assert_eq!(
            choose(s("hooked"), Some(Action::Unchanged), true).unwrap(),
            Choice::Generate
        );
        // A kept username that is not being changed is only skipped.
        assert!(matches!(
            choose(s("user"), Some(Action::Unchanged), false).unwrap(),
            Choice::Skip(_)
        ));
    }

    #[test]
    fn alternating_users_take_turns() {
        assert_eq!(other_user("raqeem_production"), "raqeem_production_b");
        assert_eq!(other_user("raqeem_production_b"), "raqeem_production");
        assert_eq!(other_user(&other_user("a")), "a");
        assert_eq!(other_user("_b"), "_b_b");
    }

    #[test]
    fn manifest_links_are_checked() {
        let bad = KEPT.replace(
            "kept_by = [\"db\"]\nalternate_user",
            "kept_by = [\"cache\"]\nalternate_user",
        );
        let e = format!("{:#}", Manifest::parse(&bad).unwrap_err());
        assert!(
            e.contains("kept_by names \"cache\", which is not in its services"),
            "{e}"
        );
        let bad = KEPT.replace("alternate_user = \"user\"", "alternate_user = \"hooked\"");
        let e = format!("{:#}", Manifest::parse(&bad).unwrap_err());
        assert!(
            e.contains("alternate_user must name a username secret"),
            "{e}"
        );
    }

    struct V;
    impl Naming for V {
        fn versioned(&self) -> bool {
            true
        }
        fn identity(&self, s: &str, v: u32) -> String {
            format!("{s}_v{v}")
        }
    }

    #[test]
    fn dry_run_names_what_pruning_will_remove() {
        let l = |v: u32| Stored {
            id: format!("pw_v{v}"),
            secret: "pw".into(),
            version: Some(v),
            fingerprint: String::new(),
            created: None,
            fix: None,
            kept: None,
        };
        let step = Step {
            secret: "pw".into(),
            action: Action::Update,
            id: "pw_v4".into(),
            version: Some(4),
            detail: String::new(),
        };
        let ids = |k| {
            expected_prune(&[l(1), l(2), l(3)], std::slice::from_ref(&step), k)
                .into_iter()
                .map(|s| s.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(1), ["pw_v2", "pw_v1"]);
        assert_eq!(ids(3), Vec::<String>::new());
    }

    #[test]
    fn rotation_plans_name_the_next_version() {
        let step = |s: &str, a: Action, v: u32| Step {
            secret: s.into(),
            action: a,
            id: format!("{s}_v{v}"),
            version: Some(v),
            detail: String::new(),
        };
        let before = [
            step("pw", Action::Unchanged, 3),
            step("url", Action::Unchanged, 1),
            step("key", Action::Update, 2),
            step("other", Action::Update, 5),
        ];
        let p = rotation_plan(&V, &before, &["pw".into(), "key".into()]);
        let got: Vec<(&str, &str)> = p
            .iter()
            .map(|s| (s.secret.as_str(), s.id.as_str()))
            .collect();
        assert_eq!(got, [("pw", "pw_v4"), ("key", "key_v2")]);
        assert_eq!(p[0].detail, "new value, replaces v3");
    }
}
