//! `remove-secrets` planned: what the store holds for the environment,
//! narrowed to the secrets named, refusing what a running service still
//! uses (naming it). The pure choice is [`crate::plan::remove`]; this module
//! asks the store and the runtime for what it needs. Removing is
//! [`Session::delete_audited`].

use anyhow::Result;

use crate::{
    model::manifest::{BackendKind, Environment},
    model::secret::SecretValue,
    plan::{self, Step},
    session::Session,
};

/// The command the lock and the audit log name.
pub const COMMAND: &str = "remove-secrets";

/// `--force`: an AWS store deletes at once, without its recovery window.
/// Other stores are unaffected.
pub fn force(env: &mut Environment) {
    env.settings
        .entry(BackendKind::Aws.name().into())
        .or_default()
        .insert(
            crate::store::aws::FORCE_KEY.into(),
            toml::Value::Boolean(true),
        );
}

/// The store's secrets to remove: every one of the environment, or those
/// `named` (by name or env-file key, `JWT_SECRET` names `jwt_secret`);
/// refuses one a running service still uses.
pub fn plan(s: &Session, named: &[String]) -> Result<Vec<Step>> {
    // Removal compares nothing, so any key lists the store.
    let listed = s.store.list(&SecretValue::new(b"list".to_vec()))?;
    let (users, hint) = if listed.is_empty() {
        (None, String::new())
    } else {
        let rt = s.runtime()?;
        (rt.users()?, rt.stop_hint())
    };
    let known: Vec<&str> = s
        .manifest
        .secrets_for(&s.env.name)
        .iter()
        .map(|x| x.name.as_str())
        .collect();
    let named: Vec<String> = named
        .iter()
        .map(|n| {
            s.manifest
                .secret_named(n)
                .map(|sp| sp.name.clone())
                .unwrap_or_else(|_| n.clone())
        })
        .collect();
    plan::remove(
        &listed,
        &named,
        &known,
        &users.unwrap_or_default(),
        &s.env.name,
        &hint,
    )
}
