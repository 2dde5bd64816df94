//! Docker Swarm secrets. Swarm secrets are immutable, hence versioned names
//! (`<project>_<env>_<name>_v<N>`): a new value is a new version, and the stack
//! file maps each versioned name to a stable `target` inside the containers.
//! Values go on stdin (`docker secret create NAME -`), eight at a time.

use std::{collections::BTreeMap, time::SystemTime};

use anyhow::{Result, bail};

use super::{Item, Scope, SecretStore};
use crate::{
    model::manifest::BackendKind,
    model::secret::SecretValue,
    model::time,
    plan::{Naming, Step, Stored},
    tools::docker::Docker,
    tools::runner,
};

/// Docker refuses secrets larger than this (swarmkit's `MaxSecretSize`).
pub const MAX_SECRET_BYTES: usize = 500 * 1024;
/// Docker's limit on object names.
pub const MAX_NAME_LEN: usize = 64;
/// How many `docker secret create` calls run at once.
const PARALLEL: usize = 8;

pub(crate) struct SwarmStore {
    docker: Docker,
    project: String,
    env: String,
    /// The manifest's secrets for this environment, to recognise the old scripts' names.
    secrets: Vec<String>,
    /// Unadopted `<project>_<env>_<name>` secrets seen by the last listing.
    legacy: std::sync::Mutex<Vec<String>>,
}

/// `<project>_<env>_<name>_v<N>`.
pub fn docker_name(project: &str, env: &str, secret: &str, version: u32) -> String {
    format!("{project}_{env}_{secret}_v{version}")
}

/// Docker's rule for secret names: `^[a-zA-Z0-9]+(?:[a-zA-Z0-9-_.]*[a-zA-Z0-9])?$`, at most 64 characters.
pub fn check_docker_name(name: &str) -> Result<()> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if !ok {
        bail!(
            "{name:?} is not a valid Docker secret name (letters, digits, `-`, `_`, `.`; starting and ending with a letter or digit); rename the project, environment or secret in deploy/secrets.toml"
        );
    }
    if name.len() > MAX_NAME_LEN {
        bail!(
            "the Docker secret name {name} is {} characters; Docker allows {MAX_NAME_LEN}. Shorten the project, environment or secret name in deploy/secrets.toml",
            name.len()
        );
    }
    Ok(())
}

/// Docker refuses empty secrets and secrets of 500 KiB or more.
pub fn check_size(secret: &str, origin: &str, len: usize) -> Result<()> {
    if len == 0 {
        bail!("{origin}: {secret} is empty; Docker secrets need at least one byte");
    }
    if len > MAX_SECRET_BYTES {
        bail!(
            "{origin}: {secret} is {len} bytes; Docker secrets must be at most {MAX_SECRET_BYTES} bytes (500 KiB); store a smaller value"
        );
    }
    Ok(())
}

/// Parses the output of `LS_FORMAT`: `name|project|env|secret|version|fingerprint`
/// lines, keeping this project's and environment's. Version 0 is a secret the
/// old scripts created under its unversioned name, adopted by `adopt-secrets`.
pub fn parse_listing(text: &str, project: &str, env: &str) -> Vec<Stored> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.trim().split('|').collect();
            let [name, p, e, secret, version, fp] = f[..] else {
                return None;
            };
            if p != project || e != env || secret.is_empty() {
                return None;
            }
            Some(Stored {
                id: name.to_string(),
                secret: secret.to_string(),
                version: Some(version.parse().ok()?),
                fingerprint: fp.to_string(),
                created: None,
                fix: None,
                kept: None,
            })
        })
        .collect()
}

/// The old scripts' unversioned `<project>_<env>_<name>` secrets in a
/// listing that carry no labels of this tool (not adopted yet).
pub fn unadopted(text: &str, project: &str, env: &str, secrets: &[String]) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.trim().split('|').collect();
            let name = *f.first()?;
            let labelled = f.iter().skip(1).any(|x| !x.is_empty());
            let secret = name.strip_prefix(&format!("{project}_{env}_"))?;
            (!labelled && secrets.iter().any(|s| s == secret)).then(|| name.to_string())
        })
        .collect()
}

/// One `docker secret ls` call gives names and labels together. It filters by
/// name (`<project>_<env>_`), so the old scripts' unlabelled secrets come in
/// the same call; docker may match the filter anywhere in a name, so the
/// labels and the exact prefix are checked here.
const LS_FORMAT: &str = "{{.Name}}|{{.Label \"xtask.project\"}}|{{.Label \"xtask.environment\"}}|{{.Label \"xtask.secret\"}}|{{.Label \"xtask.version\"}}|{{.Label \"xtask.fingerprint\"}}";

impl SwarmStore {
    pub(crate) fn new(s: &Scope) -> Result<SwarmStore> {
        let mut t = s.env.settings_for(BackendKind::Swarm);
        // The stack file belongs to the runtime, which reads it from the same table.
        let _ = t.opt_str("stack_file")?;
        let _ = t.opt_str_list("stack_overrides")?;
        t.finish()?;
        Ok(SwarmStore {
            docker: Docker::new()?,
            project: s.manifest.project.clone(),
            env: s.env.name.clone(),
            secrets: s
                .manifest
                .secrets_for(&s.env.name)
                .iter()
                .map(|x| x.name.clone())
                .collect(),
            legacy: Default::default(),
        })
    }

    fn read(&self, args: &[&str]) -> Result<String> {
        self.docker
            .read(args, "")
            .map_err(|e| self.docker.swarm_diagnose(e))
    }
}

impl Naming for SwarmStore {
    fn versioned(&self) -> bool {
        true
    }

    fn identity(&self, secret: &str, version: u32) -> String {
        docker_name(&self.project, &self.env, secret, version)
    }
}

impl SecretStore for SwarmStore {
    fn kind(&self) -> BackendKind {
        BackendKind::Swarm
    }

    fn keeps_fingerprints(&self) -> bool {
        true
    }

    fn check(&self, secret: &str, origin: &str, value: &[u8]) -> Result<()> {
        check_size(secret, origin, value.len())?;
        // The longest name this secret will have for a long while.
        check_docker_name(&self.identity(secret, 999))
    }

    fn list(&self, _key: &SecretValue) -> Result<Vec<Stored>> {
        let prefix = format!("name={}_{}_", self.project, self.env);
        let out = self.read(&["secret", "ls", "--filter", &prefix, "--format", LS_FORMAT])?;
        if let Ok(mut l) = self.legacy.lock() {
            *l = unadopted(&out, &self.project, &self.env, &self.secrets);
        }
        Ok(parse_listing(&out, &self.project, &self.env))
    }

    fn notes(&self) -> Vec<String> {
        let legacy = self.legacy.lock().map(|l| l.clone()).unwrap_or_default();
        if legacy.is_empty() {
            return Vec::new();
        }
        vec![format!(
            "{} secret(s) created by the old scripts without a version are not managed yet: {}; adopt them with `cargo xtask adopt-secrets {}` (nothing is recreated and running services are not touched)",
            legacy.len(),
            legacy.join(", "),
            self.env
        )]
    }

    fn created(&self, ids: &[&str]) -> BTreeMap<String, SystemTime> {
        if ids.is_empty() {
            return BTreeMap::new();
        }
        let mut args = vec![
            "secret",
            "inspect",
            "--format",
            "{{.Spec.Name}}|{{.CreatedAt}}",
        ];
        args.extend(ids);
        let text = self.docker.read(&args, "").unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let (n, c) = l.split_once('|')?;
                Some((n.to_string(), time::parse_go_time(c)?))
            })
            .collect()
    }

    fn write(&self, items: &[Item]) -> Result<()> {
        for it in items {
            check_docker_name(&it.step.id)?;
        }
        let errors = runner::parallel(
            items,
            PARALLEL,
            |it| it.step.id.clone(),
            |it| {
                let labels: Vec<String> =
                    super::labels(&self.project, &self.env, &it.step.secret, it.step.version)
                        .into_iter()
                        .chain([("xtask.fingerprint".to_string(), it.fingerprint.clone())])
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                let mut args = vec!["secret", "create"];
                for l in &labels {
                    args.push("--label");
                    args.push(l);
                }
                args.push(&it.step.id);
                args.push("-");
                self.docker.run_with_stdin(&args, it.value.expose(), "")?;
                Ok(())
            },
        );
        if !errors.is_empty() {
            bail!(
                "{} of {} secret(s) could not be created:\n  - {}\nre-run setup-secrets: what was created is kept and not created again",
                errors.len(),
                items.len(),
                errors.join("\n  - ")
            );
        }
        Ok(())
    }

    fn delete(&self, steps: &[Step]) -> Result<()> {
        if steps.is_empty() {
            return Ok(());
        }
        let mut args = vec!["secret", "rm"];
        args.extend(steps.iter().map(|s| s.id.as_str()));
        self.docker
            .read(
                &args,
                "a secret a service uses cannot be removed; check `docker service ls`",
            )
            .map_err(|e| self.docker.swarm_diagnose(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_parses_labels_and_skips_other_envs() {
        let text = "p_e_a_v1|p|e|a|1|f1\np_x_a_v1|p|x|a|1|f1\ngarbage\np_e_b_v2|p|e|b|2|f9\nq_e_b_v1|q|e|b|1|f9\np_e_a|||||\n";
        assert_eq!(
            unadopted(text, "p", "e", &["a".into(), "b".into()]),
            ["p_e_a"]
        );
        assert!(unadopted(text, "p", "e", &["b".into()]).is_empty());
        let got: Vec<(String, String, Option<u32>, String)> = parse_listing(text, "p", "e")
            .into_iter()
            .map(|s| (s.id, s.secret, s.version, s.fingerprint))
            .collect();
        assert_eq!(
            got,
            [
                ("p_e_a_v1".into(), "a".into(), Some(1), "f1".into()),
                ("p_e_b_v2".into(), "b".into(), Some(2), "f9".into())
            ]
        );
    }

    #[test]
    fn names_follow_docker_rules() {
        assert!(check_docker_name("raqeem_production_postgres_password_v1").is_ok());
        assert!(check_docker_name("a").is_ok());
        assert!(check_docker_name("_a").is_err());
        assert!(check_docker_name("a-").is_err());
        assert!(check_docker_name("a b").is_err());
        assert!(check_docker_name("").is_err());
        let long = "a".repeat(65);
        let e = format!("{:#}", check_docker_name(&long).unwrap_err());
        assert!(e.contains("65 characters"), "{e}");
        assert!(check_docker_name(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn sizes_are_checked() {
        assert!(check_size("x", "f:1", 1).is_ok());
        assert!(check_size("x", "f:1", MAX_SECRET_BYTES).is_ok());
        let e = format!(
            "{:#}",
            check_size("x", "f:1", MAX_SECRET_BYTES + 1).unwrap_err()
        );
        assert!(e.contains("f:1: x is 512001 bytes"), "{e}");
        assert!(check_size("x", "f:1", 0).is_err());
    }
}
