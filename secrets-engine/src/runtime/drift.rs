//! Runtime drift: which services, tasks, pods or containers still run a
//! superseded version of a secret, from the runtime's own view
//! ([`super::Runtime::running_versions`]) against the store's listing.
//!
//! Pure: the runtimes report what runs and what it mounts ([`Running`]); this
//! module decides, per secret, who is behind the current version. A service
//! in the secret's `kept_by` keeps its own copy by design (it mounts the
//! version it started with, `<name>_kept` on Swarm), so it is reported as
//! kept, never as drift.

use std::collections::BTreeMap;

use crate::plan::{self, Stored};

/// One thing that runs and the secrets it mounts, as the runtime reports it:
/// a Swarm service's spec or task, a Kubernetes workload's template, a
/// ReplicaSet with pods or a pod, a Compose container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    /// The runtime's name for it: `service/raqeem-production_backend`,
    /// `task/raqeem-production_backend.1`, `pod/backend-5d9c7-x2x`,
    /// `container/raqeem-develop-backend-1`.
    pub who: String,
    /// The service it belongs to, as the manifest's `services` and `kept_by`
    /// name it (`backend`).
    pub service: String,
    /// What it mounts.
    pub mounts: Vec<Mounted>,
}

/// One secret a runner mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mounted {
    /// The store's identity of the version it mounts (a Swarm secret's or a
    /// Kubernetes Secret's name).
    Id(String),
    /// A secret file by the manifest's name (Compose bind-mounts it): `stale`
    /// when the file changed after the container was created, so the
    /// container still reads the old inode.
    File {
        /// The manifest's name of the secret.
        secret: String,
        /// The file changed after the container was created.
        stale: bool,
    },
}

/// One runner that is behind (or, for kept secrets, keeps an older version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behind {
    /// The runner (as [`Running::who`]).
    pub who: String,
    /// Its service (as [`Running::service`]).
    pub service: String,
    /// The version it mounts; `None` for an older file content (Compose).
    pub version: Option<u32>,
}

/// Where the runtime stands for one secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretRuntime {
    /// The store's current version (`None` in unversioned stores).
    pub current: Option<u32>,
    /// How many runners mount it at all (any version).
    pub runners: usize,
    /// Runners on a superseded version: drift.
    pub behind: Vec<Behind>,
    /// `kept_by` services on an older version: by design, not drift.
    pub kept: Vec<Behind>,
    /// The version each service runs (the oldest of its runners), where the
    /// store is versioned: service → version.
    pub in_use: BTreeMap<String, u32>,
}

impl SecretRuntime {
    /// Whether a runner is on a superseded version.
    pub fn drift(&self) -> bool {
        !self.behind.is_empty()
    }

    /// The short cell for tables: `current`, `drift (backend@v2)`,
    /// `current; kept (postgres@v2)`, `-` when nothing runs it.
    pub fn cell(&self) -> String {
        if self.runners == 0 {
            return "-".into();
        }
        let services = |list: &[Behind]| {
            let mut s: Vec<String> = list
                .iter()
                .map(|b| format!("{}@{}", b.service, version_word(b.version)))
                .collect();
            s.sort();
            s.dedup();
            s.join(",")
        };
        let mut out = match self.behind.is_empty() {
            true => "current".to_string(),
            false => format!("drift ({})", services(&self.behind)),
        };
        if !self.kept.is_empty() {
            out.push_str(&format!("; kept ({})", services(&self.kept)));
        }
        out
    }

    /// The finding's message: who runs what against the current version.
    pub fn message(&self, env: &str) -> Option<String> {
        if self.behind.is_empty() {
            return None;
        }
        let mut by_version: BTreeMap<Option<u32>, Vec<&str>> = BTreeMap::new();
        for b in &self.behind {
            by_version.entry(b.version).or_default().push(&b.who);
        }
        let parts: Vec<String> = by_version
            .iter()
            .map(|(v, who)| match v {
                Some(v) => format!("{} run v{v}", who.join(", ")),
                None => format!(
                    "{} started before the secret file last changed and still read the old content",
                    who.join(", ")
                ),
            })
            .collect();
        let current = match self.current {
            Some(v) => format!(", the current version is v{v}"),
            None => String::new(),
        };
        Some(format!(
            "{}{current}; run `cargo xtask deploy {env}`",
            parts.join("; ")
        ))
    }
}

pub(crate) fn version_word(v: Option<u32>) -> String {
    match v {
        Some(v) => format!("v{v}"),
        None => "old-file".into(),
    }
}

/// Pure: per secret of the listing, who runs a superseded version. `kept_by`
/// maps a secret to the services that keep their own copy. Mounts of
/// identities the store does not list (another environment's, a deleted
/// version) are not this environment's and are ignored.
pub fn compare(
    listed: &[Stored],
    kept_by: &BTreeMap<String, Vec<String>>,
    running: &[Running],
) -> BTreeMap<String, SecretRuntime> {
    let mut out: BTreeMap<String, SecretRuntime> = BTreeMap::new();
    for l in listed {
        out.entry(l.secret.clone()).or_default().current =
            plan::newest(listed, &l.secret).and_then(|n| n.version);
    }
    for r in running {
        for m in &r.mounts {
            let (secret, version, behind) = match m {
                Mounted::Id(id) => {
                    let Some(l) = listed.iter().find(|l| &l.id == id) else {
                        continue;
                    };
                    let newest = plan::newest(listed, &l.secret).map(|n| n.id.as_str());
                    (l.secret.as_str(), l.version, newest != Some(id.as_str()))
                }
                Mounted::File { secret, stale } => (secret.as_str(), None, *stale),
            };
            let entry = out.entry(secret.to_string()).or_default();
            entry.runners += 1;
            if let Some(v) = version {
                let e = entry.in_use.entry(r.service.clone()).or_insert(v);
                *e = (*e).min(v);
            }
            if !behind {
                continue;
            }
            let b = Behind {
                who: r.who.clone(),
                service: r.service.clone(),
                version,
            };
            let kept = kept_by.get(secret).is_some_and(|k| k.contains(&r.service));
            let list = if kept {
                &mut entry.kept
            } else {
                &mut entry.behind
            };
            if !list.contains(&b) {
                list.push(b);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(secret: &str, v: u32) -> Stored {
        Stored {
            id: format!("p_e_{secret}_v{v}"),
            secret: secret.into(),
            version: Some(v),
            fingerprint: String::new(),
            created: None,
            fix: None,
            kept: None,
        }
    }

    fn run(who: &str, service: &str, ids: &[&str]) -> Running {
        Running {
            who: who.into(),
            service: service.into(),
            mounts: ids.iter().map(|i| Mounted::Id(i.to_string())).collect(),
        }
    }

    #[test]
    fn superseded_versions_are_drift_and_kept_services_are_not() {
        let listed = [
            stored("jwt", 2),
            stored("jwt", 3),
            stored("pw", 1),
            stored("pw", 2),
        ];
        let kept: BTreeMap<String, Vec<String>> =
            [("pw".to_string(), vec!["postgres".to_string()])].into();
        let running = [
            run(
                "service/st_backend",
                "backend",
                &["p_e_jwt_v3", "p_e_pw_v2"],
            ),
            run("task/st_backend.1", "backend", &["p_e_jwt_v3", "p_e_pw_v2"]),
            run("task/st_backend.2", "backend", &["p_e_jwt_v2", "p_e_pw_v2"]),
            run("task/st_postgres.1", "postgres", &["p_e_pw_v1"]),
            // Another environment's secret: not ours.
            run("task/other.1", "other", &["q_e_jwt_v1"]),
        ];
        let r = compare(&listed, &kept, &running);
        let jwt = &r["jwt"];
        assert!(jwt.drift());
        assert_eq!(jwt.current, Some(3));
        assert_eq!(
            jwt.behind,
            [Behind {
                who: "task/st_backend.2".into(),
                service: "backend".into(),
                version: Some(2)
            }]
        );
        assert_eq!(jwt.in_use["backend"], 2, "the oldest runner counts");
        assert_eq!(jwt.cell(), "drift (backend@v2)");
        assert_eq!(
            jwt.message("production").unwrap(),
            "task/st_backend.2 run v2, the current version is v3; run `cargo xtask deploy production`"
        );
        let pw = &r["pw"];
        assert!(!pw.drift(), "postgres keeps its own copy: {pw:?}");
        assert_eq!(pw.kept.len(), 1);
        assert_eq!(pw.cell(), "current; kept (postgres@v1)");
        assert_eq!(pw.message("production"), None);
        assert_eq!(pw.in_use["postgres"], 1);
        assert!(!r.contains_key("q_e_jwt_v1"));
    }

    #[test]
    fn nothing_running_is_no_drift_and_shows_a_dash() {
        let r = compare(&[stored("a", 1)], &BTreeMap::new(), &[]);
        assert_eq!((r["a"].drift(), r["a"].cell()), (false, "-".to_string()));
    }

    #[test]
    fn compose_files_changed_after_the_container_started_are_drift() {
        let running = [
            Running {
                who: "container/p-develop-backend-1".into(),
                service: "backend".into(),
                mounts: vec![
                    Mounted::File {
                        secret: "jwt".into(),
                        stale: true,
                    },
                    Mounted::File {
                        secret: "pw".into(),
                        stale: true,
                    },
                ],
            },
            Running {
                who: "container/p-develop-postgres-1".into(),
                service: "postgres".into(),
                mounts: vec![Mounted::File {
                    secret: "pw".into(),
                    stale: true,
                }],
            },
        ];
        let kept: BTreeMap<String, Vec<String>> =
            [("pw".to_string(), vec!["postgres".to_string()])].into();
        let mut listed = vec![stored("jwt", 1), stored("pw", 1)];
        for l in &mut listed {
            l.version = None;
        }
        let r = compare(&listed, &kept, &running);
        assert_eq!(r["jwt"].cell(), "drift (backend@old-file)");
        assert_eq!(
            r["jwt"].message("develop").unwrap(),
            "container/p-develop-backend-1 started before the secret file last changed and still read the old content; run `cargo xtask deploy develop`"
        );
        assert_eq!(
            r["pw"].cell(),
            "drift (backend@old-file); kept (postgres@old-file)"
        );
        assert!(r["pw"].in_use.is_empty());
    }
}
