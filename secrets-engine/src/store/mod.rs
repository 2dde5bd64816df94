//! Secret stores: where the values are kept (compose files, Swarm secrets,
//! Kubernetes Secrets, Vault, AWS Secrets Manager). One small interface;
//! commands plan with [`crate::plan`] and never match on the kind. A store
//! also says how the runtime's services get its values ([`Delivery`]).

pub mod aws;
pub mod compose;
pub mod k8s;
pub mod swarm;
pub mod vault;

use std::{collections::BTreeMap, path::PathBuf, time::SystemTime};

use anyhow::{Result, bail};

use crate::{
    Scope,
    model::manifest::BackendKind,
    model::secret::SecretValue,
    plan::{Naming, Step, Stored},
};

/// One value to write, as the plan named it.
pub struct Item<'a> {
    /// The plan's step: secret, identity, version.
    pub step: &'a Step,
    /// The value to store.
    pub value: &'a SecretValue,
    /// The keyed fingerprint stored beside the value (labels, annotations).
    pub fingerprint: String,
}

/// A store of one environment's secret values, opened by [`open`].
pub trait SecretStore: Naming + Send + Sync {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;
    /// Whether fingerprints are stored outside the env file (labels,
    /// annotations), and so need the env file's persistent key.
    fn keeps_fingerprints(&self) -> bool;
    /// The store's own rules for a name and a value (identity syntax, size),
    /// checked for every secret before anything changes.
    fn check(&self, secret: &str, origin: &str, value: &[u8]) -> Result<()>;
    /// Every stored version of this environment's secrets, fingerprinted with `key`.
    fn list(&self, key: &SecretValue) -> Result<Vec<Stored>>;
    /// Whether the listing's `created` is when the value was set (labels,
    /// annotations, metadata). Compose files' modification time is not: a
    /// mode fix or a copy changes it, so `status` asks the audit log first.
    fn dates_values(&self) -> bool {
        true
    }
    /// Creation times for `ids` when the listing has none (`list-secrets` and `status` ask).
    fn created(&self, _ids: &[&str]) -> BTreeMap<String, SystemTime> {
        BTreeMap::new()
    }
    /// Writes the planned values (new versions, or in place), values on stdin.
    fn write(&self, items: &[Item]) -> Result<()>;
    /// Deletes these identities.
    fn delete(&self, steps: &[Step]) -> Result<()>;
    /// What the last listing noticed that the operator should act on (the old
    /// scripts' unadopted secrets), printed as warnings.
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
    /// What `--dry-run` shows beyond the plan (values redacted), if anything.
    fn preview(&self, _steps: &[Step]) -> Option<String> {
        None
    }
    /// How the runtime's services get the values (see [`Delivery`]).
    fn delivery(&self) -> Result<Delivery> {
        Ok(Delivery::Runtime)
    }
    /// Reads the values of these listed versions, for `delivery = "fetch"`:
    /// secret name and value, in memory only.
    fn fetch(&self, listed: &[&Stored]) -> Result<Vec<(String, SecretValue)>> {
        let _ = listed;
        bail!(
            "the {} store lives inside its runtime; deploy never reads its values",
            self.kind()
        )
    }
    /// For `doctor`: what the store's server and the operator's credentials
    /// say about access to `secrets`, asked without changing or reading any
    /// value. Facts only; `commands::doctor` judges them. The stores that
    /// live in their runtime have nothing to ask beyond their listing (the
    /// Kubernetes verbs are asked by `doctor` for store and runtime at once).
    fn probe(&self, secrets: &[String]) -> Vec<Probe> {
        let _ = secrets;
        Vec::new()
    }
}

/// One answer a store gave `doctor` (see [`SecretStore::probe`]). Never a
/// value, a token or a hash of either. `Err` holds why it could not be asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Whether the server at this address is sealed (Vault).
    Sealed {
        /// The server's address.
        server: String,
        /// Whether it is sealed.
        sealed: std::result::Result<bool, String>,
    },
    /// The credential's remaining lifetime in seconds; `None`: it never expires.
    Lifetime(std::result::Result<Option<u64>, String>),
    /// What the credential may do on `what` (a path, an action): `has` is what
    /// the server granted of `needs` (`root` grants everything).
    Allowed {
        /// The path or action asked about.
        what: String,
        /// The capabilities the engine needs there.
        needs: Vec<String>,
        /// The capabilities the server granted.
        has: std::result::Result<Vec<String>, String>,
    },
    /// Who the credentials are (an ARN), and the region they are used in.
    Identity {
        /// The caller's identity (an ARN).
        who: std::result::Result<String, String>,
        /// The region the store is used in, when one is set.
        region: Option<String>,
    },
    /// What is not asked, and why (it would change or read a value).
    NotProbed {
        /// What was not asked.
        what: String,
        /// Why not.
        why: String,
    },
}

/// How the services a runtime runs get a store's values.
#[derive(Debug)]
pub enum Delivery {
    /// The store is the runtime's own (compose files, Swarm, Kubernetes):
    /// deploy points the services at the current versions.
    Runtime,
    /// `delivery = "fetch"`: deploy reads the current values from the store
    /// once and hands them to the runtime as its own file secrets.
    Fetch,
    /// `delivery = "reader"`: services read the store at run time through
    /// the secrets reader; deploy gives them its address and a credential.
    Reader(Access),
}

/// What a service needs to read a store at run time (`delivery = "reader"`).
#[derive(Debug)]
pub struct Access {
    /// Variables each reading service gets: address, mount, prefix, order.
    /// Never a value or a credential.
    pub vars: Vec<(String, String)>,
    /// The credential's file secret in the runtime (`vault_token`), mounted at
    /// `/run/secrets/<credential>`.
    pub credential: String,
    /// The variable that points the reader at that file (`VAULT_TOKEN_FILE`).
    pub credential_var: String,
    /// The file the credential is read from, relative to the root, and the
    /// manifest key that names it (for messages).
    pub credential_file: PathBuf,
    /// The manifest key that names [`Access::credential_file`].
    pub credential_key: String,
    /// The operator's own credential, which must never be handed to services.
    pub operator_credential: Option<SecretValue>,
}

/// The delivery keys of a Vault or AWS table, shared by both.
pub const DELIVERY_FETCH: &str = "fetch";
pub(crate) const DELIVERY_READER: &str = "reader";

/// Reads `delivery` (default `fetch`) from a store's table.
pub fn delivery_mode(t: &mut crate::model::manifest::Settings, at: &str) -> Result<bool> {
    match t.opt_str("delivery")?.as_deref() {
        None | Some(DELIVERY_FETCH) => Ok(false),
        Some(DELIVERY_READER) => Ok(true),
        Some(o) => bail!(
            "in {at}: `delivery` must be \"fetch\" (deploy copies the values into the runtime) or \"reader\" (services read the store at run time); got {o:?}"
        ),
    }
}

/// Opens the environment's store (`s.env.store`); an error means its
/// settings are wrong or its tool or server is missing.
pub fn open(s: &Scope) -> Result<Box<dyn SecretStore>> {
    match s.env.store {
        BackendKind::Compose => Ok(Box::new(compose::FileStore::new(s)?)),
        BackendKind::Swarm => Ok(Box::new(swarm::SwarmStore::new(s)?)),
        BackendKind::K8s => Ok(Box::new(k8s::K8sStore::new(s)?)),
        BackendKind::Vault => Ok(Box::new(vault::VaultStore::new(s)?)),
        BackendKind::Aws => Ok(Box::new(aws::AwsStore::new(s)?)),
    }
}

/// The labels every stored secret carries, for stores that label.
pub fn labels(
    project: &str,
    env: &str,
    secret: &str,
    version: Option<u32>,
) -> Vec<(String, String)> {
    let mut out = vec![
        ("xtask.tool".to_string(), TOOL.to_string()),
        ("xtask.project".to_string(), project.to_string()),
        ("xtask.environment".to_string(), env.to_string()),
        ("xtask.secret".to_string(), secret.to_string()),
    ];
    if let Some(v) = version {
        out.push(("xtask.version".to_string(), v.to_string()));
    }
    out
}

/// The `xtask.tool` label's value: marks what this tool stored.
pub const TOOL: &str = "cargo-xtask";
