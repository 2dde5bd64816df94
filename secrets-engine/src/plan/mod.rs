//! Plans as plain data. A step names the secret, what happens to it and the
//! store's own identity for it (a path, a versioned Docker or Kubernetes name).
//! Commands build a plan here, print it, and hand exactly it to the store, so
//! `--dry-run` prints what the real run carries out. Everything here is pure.

pub mod diff;
pub mod metrics;
pub mod migrate;
pub mod resolve;
pub mod rotate;
pub mod status;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::SystemTime,
};

use anyhow::{Result, bail};

/// What a plan step does to one stored value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Store a value that is not there yet.
    Create,
    /// Replace a stored value (a new version where the store is versioned).
    Update,
    /// The stored value already matches: nothing to do.
    Unchanged,
    /// Delete the stored value.
    Remove,
    /// Present in the store but not in the manifest: reported, never touched by setup.
    Extra,
}

impl Action {
    /// The word plans print for it (`create`, `update`, ...).
    pub fn word(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Unchanged => "unchanged",
            Action::Remove => "remove",
            Action::Extra => "extra",
        }
    }

    /// Whether applying the step writes a value.
    pub fn writes(self) -> bool {
        matches!(self, Action::Create | Action::Update)
    }
}

/// One line of a plan. `detail` never holds a value: a reason, a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The manifest's name of the secret.
    pub secret: String,
    /// What happens to it.
    pub action: Action,
    /// The store's identity of what the step creates, keeps or removes.
    pub id: String,
    /// The version the step makes or keeps, in a versioned store.
    pub version: Option<u32>,
    /// Why, for the printed plan (a reason, a version; never a value).
    pub detail: String,
}

/// One stored value (one version of a secret) as a store lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The store's identity of the value (a path, a versioned name).
    pub id: String,
    /// The manifest's name of the secret.
    pub secret: String,
    /// Its version, in a versioned store.
    pub version: Option<u32>,
    /// Keyed fingerprint of the content (HMAC-SHA-256 with the env file's key).
    pub fingerprint: String,
    /// When the value was stored, where the store says.
    pub created: Option<SystemTime>,
    /// Something other than the content that setup must put right (a file's mode).
    pub fix: Option<String>,
    /// What the store keeps besides this version, for `list-secrets` (Vault's
    /// kept versions, AWS's stages); `None` where there is nothing to say.
    pub kept: Option<String>,
}

/// How a store names things: versioned stores give each value a new identity,
/// the others replace the value in place.
pub trait Naming {
    /// Whether each new value gets its own identity (a versioned name) instead
    /// of replacing the old one in place.
    fn versioned(&self) -> bool;
    /// The store's identity of `secret` at `version` (the version is ignored
    /// where the store is not versioned).
    fn identity(&self, secret: &str, version: u32) -> String;
}

/// The newest stored version of `secret`.
pub fn newest<'a>(listed: &'a [Stored], secret: &str) -> Option<&'a Stored> {
    listed
        .iter()
        .filter(|l| l.secret == secret)
        .max_by_key(|l| l.version)
}

/// Setup's plan: for each wanted `(secret, fingerprint)`, create it when
/// nothing is stored, write a new version (or replace it in place) when the
/// newest holds other content, else nothing. Stored secrets that are not wanted
/// are reported as extra.
pub fn setup(
    naming: &dyn Naming,
    env: &str,
    wanted: &[(String, String)],
    listed: &[Stored],
) -> Vec<Step> {
    let mut out = Vec::new();
    for (secret, fp) in wanted {
        let step = |action, id: String, version, detail: String| Step {
            secret: secret.clone(),
            action,
            id,
            version,
            detail,
        };
        out.push(match newest(listed, secret) {
            None => {
                let v = naming.versioned().then_some(1);
                step(Action::Create, naming.identity(secret, 1), v, String::new())
            }
            // Adopted from the old scripts under its unversioned name: moves
            // to the versioned scheme whatever it holds.
            Some(l) if naming.versioned() && l.version == Some(0) => step(
                Action::Update,
                naming.identity(secret, 1),
                Some(1),
                format!("adopted {}, moves to the versioned scheme", l.id),
            ),
            Some(l) if &l.fingerprint == fp && l.fix.is_none() => {
                step(Action::Unchanged, l.id.clone(), l.version, String::new())
            }
            Some(l) if naming.versioned() => {
                let v = l.version.unwrap_or(0) + 1;
                let detail = format!("content changed, replaces v{}", v - 1);
                step(Action::Update, naming.identity(secret, v), Some(v), detail)
            }
            Some(l) => {
                let mut why = Vec::new();
                if &l.fingerprint != fp {
                    why.push("content changed".to_string());
                }
                why.extend(l.fix.clone());
                step(Action::Update, l.id.clone(), None, why.join(", "))
            }
        });
    }
    let extra: BTreeSet<&str> = listed
        .iter()
        .map(|l| l.secret.as_str())
        .filter(|s| !wanted.iter().any(|(w, _)| w == s))
        .collect();
    for s in extra {
        let l = newest(listed, s).expect("listed");
        out.push(Step {
            secret: s.to_string(),
            action: Action::Extra,
            id: l.id.clone(),
            version: l.version,
            detail: format!("not in the manifest for {env}; remove it with remove-secrets"),
        });
    }
    out
}

/// Store identity → the services (workloads) that use it.
pub type Users = BTreeMap<String, Vec<String>>;

/// After a rotation: versions of `secrets` older than the newest `keep + 1`
/// that nothing uses. An adopted unversioned secret (version 0) is retired as
/// soon as a newer version exists and nothing uses it, whatever `keep` says.
pub fn prune(listed: &[Stored], secrets: &[String], keep: usize, users: &Users) -> Vec<Step> {
    let mut out = Vec::new();
    for s in secrets {
        let mut versions: Vec<&Stored> = listed.iter().filter(|l| &l.secret == s).collect();
        versions.sort_by_key(|l| std::cmp::Reverse(l.version));
        let old = versions
            .into_iter()
            .enumerate()
            .filter(|(i, l)| *i > keep || (*i > 0 && l.version == Some(0)))
            .map(|(_, l)| l);
        for l in old {
            if !users.contains_key(&l.id) {
                out.push(remove_step(l, "superseded".into()));
            }
        }
    }
    out
}

fn remove_step(l: &Stored, detail: String) -> Step {
    Step {
        secret: l.secret.clone(),
        action: Action::Remove,
        id: l.id.clone(),
        version: l.version,
        detail,
    }
}

/// `remove-secrets`: every stored version of the chosen secrets (all when
/// `names` is empty). Refuses, naming the services, when any is in use.
/// `known` are the manifest's names, for the unknown-name error.
pub fn remove(
    listed: &[Stored],
    names: &[String],
    known: &[&str],
    users: &Users,
    where_: &str,
    stop_hint: &str,
) -> Result<Vec<Step>> {
    for n in names {
        if !listed.iter().any(|l| &l.secret == n) && !known.contains(&n.as_str()) {
            let mut all: BTreeSet<&str> = known.iter().copied().collect();
            all.extend(listed.iter().map(|l| l.secret.as_str()));
            bail!(
                "{n} is neither a secret of {where_} nor stored there; known: {}",
                all.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
    }
    let chosen: Vec<&Stored> = listed
        .iter()
        .filter(|l| names.is_empty() || names.contains(&l.secret))
        .collect();
    let busy: Vec<String> = chosen
        .iter()
        .filter_map(|l| {
            users
                .get(&l.id)
                .map(|u| format!("{} is used by {}", l.id, u.join(", ")))
        })
        .collect();
    if !busy.is_empty() {
        bail!(
            "refusing to remove secrets that services still use:\n  - {}\nstop them first (`{stop_hint}`) or deploy without them",
            busy.join("\n  - ")
        );
    }
    let mut steps: Vec<Step> = chosen
        .into_iter()
        .map(|l| remove_step(l, String::new()))
        .collect();
    steps.sort_by(|a, b| (&a.secret, &a.id).cmp(&(&b.secret, &b.id)));
    Ok(steps)
}

/// Secret name → the identity of its newest stored version: what a deploy
/// points the services at.
pub fn current(listed: &[Stored]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for l in listed {
        if let Some(n) = newest(listed, &l.secret) {
            out.insert(l.secret.clone(), n.id.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Versioned;
    impl Naming for Versioned {
        fn versioned(&self) -> bool {
            true
        }
        fn identity(&self, secret: &str, version: u32) -> String {
            format!("p_e_{secret}_v{version}")
        }
    }
    struct InPlace;
    impl Naming for InPlace {
        fn versioned(&self) -> bool {
            false
        }
        fn identity(&self, secret: &str, _: u32) -> String {
            format!("dir/{secret}")
        }
    }

    fn l(secret: &str, v: u32, fp: &str) -> Stored {
        Stored {
            id: Versioned.identity(secret, v),
            secret: secret.into(),
            version: Some(v),
            fingerprint: fp.into(),
            created: None,
            fix: None,
            kept: None,
        }
    }

    fn w(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn plans_new_changed_unchanged_and_extra() {
        let listed = [
            l("a", 1, "f1"),
            l("a", 2, "f2"),
            l("b", 1, "x"),
            l("old", 3, "z"),
        ];
        let plan = setup(
            &Versioned,
            "e",
            &w(&[("a", "f2"), ("b", "y"), ("c", "q")]),
            &listed,
        );
        let got: Vec<(&str, Action, Option<u32>, &str)> = plan
            .iter()
            .map(|p| (p.secret.as_str(), p.action, p.version, p.id.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("a", Action::Unchanged, Some(2), "p_e_a_v2"),
                ("b", Action::Update, Some(2), "p_e_b_v2"),
                ("c", Action::Create, Some(1), "p_e_c_v1"),
                ("old", Action::Extra, Some(3), "p_e_old_v3"),
            ]
        );
        assert_eq!(plan[1].detail, "content changed, replaces v1");
    }

    #[test]
    fn a_changed_value_never_reuses_a_name() {
        let listed = [l("a", 1, "f1"), l("a", 2, "f2")];
        let plan = setup(&Versioned, "e", &w(&[("a", "f1")]), &listed);
        assert_eq!((plan[0].action, plan[0].version), (Action::Update, Some(3)));
    }

    #[test]
    fn in_place_stores_update_the_same_identity_with_reasons() {
        let mut s = Stored {
            id: "dir/a".into(),
            secret: "a".into(),
            version: None,
            fingerprint: "f".into(),
            created: None,
            fix: Some("mode 644 -> 600".into()),
            kept: None,
        };
        let plan = setup(
            &InPlace,
            "e",
            &w(&[("a", "g"), ("b", "h")]),
            std::slice::from_ref(&s),
        );
        assert_eq!(
            (plan[0].action, plan[0].id.as_str()),
            (Action::Update, "dir/a")
        );
        assert_eq!(plan[0].detail, "content changed, mode 644 -> 600");
        assert_eq!(
            (plan[1].action, plan[1].id.as_str()),
            (Action::Create, "dir/b")
        );
        s.fix = None;
        let plan = setup(&InPlace, "e", &w(&[("a", "f")]), &[s]);
        assert_eq!(plan[0].action, Action::Unchanged);
    }

    #[test]
    fn prune_keeps_newest_and_previous_and_used() {
        let listed = [
            l("a", 1, ""),
            l("a", 2, ""),
            l("a", 3, ""),
            l("a", 4, ""),
            l("b", 1, ""),
        ];
        let used: Users = [("p_e_a_v1".to_string(), vec!["web".to_string()])].into();
        let ids = |s: Vec<Step>| s.into_iter().map(|s| s.id).collect::<Vec<_>>();
        assert_eq!(
            ids(prune(&listed, &["a".into(), "b".into()], 1, &used)),
            ["p_e_a_v2"]
        );
        assert_eq!(
            ids(prune(&listed, &["a".into()], 0, &Users::new())),
            ["p_e_a_v3", "p_e_a_v2", "p_e_a_v1"]
        );
    }

    #[test]
    fn adopted_secrets_move_to_v1_and_retire_once_unused() {
        let mut v0 = l("a", 0, "f");
        v0.id = "p_e_a".into();
        let plan = setup(
            &Versioned,
            "e",
            &w(&[("a", "f")]),
            std::slice::from_ref(&v0),
        );
        assert_eq!(
            (plan[0].action, plan[0].id.as_str(), plan[0].version),
            (Action::Update, "p_e_a_v1", Some(1))
        );
        assert!(
            plan[0].detail.contains("adopted p_e_a"),
            "{}",
            plan[0].detail
        );
        let listed = [v0.clone(), l("a", 1, "f")];
        let ids = |s: Vec<Step>| s.into_iter().map(|s| s.id).collect::<Vec<_>>();
        assert_eq!(
            ids(prune(&listed, &["a".into()], 1, &Users::new())),
            ["p_e_a"]
        );
        let used: Users = [("p_e_a".to_string(), vec!["web".to_string()])].into();
        assert!(prune(&listed, &["a".into()], 1, &used).is_empty());
        assert!(prune(&[v0], &["a".into()], 1, &Users::new()).is_empty());
    }

    #[test]
    fn removal_refuses_what_is_in_use_and_unknown_names() {
        let listed = [l("a", 1, ""), l("a", 2, ""), l("b", 1, "")];
        let used: Users = [("p_e_a_v2".to_string(), vec!["web".to_string()])].into();
        let e = remove(&listed, &[], &["a", "b"], &used, "e", "stop").unwrap_err();
        assert!(format!("{e}").contains("p_e_a_v2 is used by web"), "{e}");
        let steps = remove(&listed, &["b".into()], &["a", "b"], &used, "e", "stop").unwrap();
        assert_eq!(steps.len(), 1);
        assert_eq!(
            (steps[0].action, steps[0].id.as_str()),
            (Action::Remove, "p_e_b_v1")
        );
        let e = remove(&listed, &["zz".into()], &["a", "b"], &used, "e", "stop").unwrap_err();
        assert!(format!("{e}").contains("zz is neither"), "{e}");
    }

    #[test]
    fn current_points_at_the_newest_version() {
        let listed = [l("a", 2, ""), l("a", 10, ""), l("b", 1, "")];
        let c = current(&listed);
        assert_eq!(c["a"], "p_e_a_v10");
        assert_eq!(c["b"], "p_e_b_v1");
    }
}
