//! Reading what the reports are made of: each environment's store listing
//! (with creation times), its env file's fingerprints, what its runtime runs,
//! and the audit log. Every failure to read becomes a note, a warning through
//! the sink or a finding of the report, never an abort of the whole report.
//! The reports themselves are planned in [`crate::plan::status`] and
//! [`crate::plan::diff`]; this is the part that asks stores and runtimes.

use std::{collections::BTreeMap, path::Path, time::Duration};

use anyhow::Result;

use crate::{
    disk::audit::{self, Entry},
    model::envfile::EnvFile,
    model::manifest::{Environment, Kind, Manifest, SecretSpec},
    model::secret::{self, SecretValue},
    plan::resolve::{self, Reuse},
    plan::status::{EnvView, SecretRow, Wanted, secret_rows},
    runtime::drift::{self, SecretRuntime},
    session::{Session, Target},
    sink::Shared,
};

/// What `list-secrets` shows of one environment: its rows and, when the
/// runtime could be asked, who runs which version of each secret.
pub struct Listing {
    /// One row per manifest secret of the environment, then the extras.
    pub rows: Vec<SecretRow>,
    /// Secret → who runs which version; `None` when the runtime could not be asked.
    pub running: Option<BTreeMap<String, SecretRuntime>>,
}

impl Listing {
    /// Who runs which version of `name`: `None` when the runtime could not
    /// be asked (shown `?`, never "current").
    pub fn runtime_of(&self, name: &str) -> Option<SecretRuntime> {
        self.running
            .as_ref()
            .map(|r| r.get(name).cloned().unwrap_or_default())
    }
}

/// `list-secrets`' reading of the session's environment: the store's listing
/// against the env file, ages from the store or the audit log, the services
/// that use each secret and the versions they run. What cannot be read is a
/// warning through the session's sink.
pub fn listing(s: &Session) -> Result<Listing> {
    let r = match s.resolve_read_only() {
        Ok(r) => Some(r),
        Err(err) => {
            s.sink
                .warn(&format!("not comparing with the env file: {err:#}"));
            None
        }
    };
    // Without the env file's fingerprint key (an old scripts' env file) the
    // listing still shows what is stored, and the hints.
    let (r, key) = match r.map(|r| s.compare_key(&r).map(|k| (r, k))) {
        Some(Ok((r, k))) => (Some(r), k),
        Some(Err(err)) => {
            s.sink
                .warn(&format!("not comparing with the env file: {err:#}"));
            (None, secret::generate(64)?)
        }
        None => (None, secret::generate(64)?),
    };
    let mut listed = s.store.list(&key)?;
    s.print_notes();
    let missing: Vec<&str> = listed
        .iter()
        .filter(|l| l.created.is_none())
        .map(|l| l.id.as_str())
        .collect();
    let created = s.store.created(&missing);
    for l in &mut listed {
        l.created = l.created.or_else(|| created.get(&l.id).copied());
    }
    if !s.store.dates_values() {
        // The audit log knows when a value was set; a file's time may not.
        let log = audit::read(&s.root)
            .map(|(log, _)| log)
            .unwrap_or_else(|e| {
                s.sink
                    .warn(&format!("{e:#}; ages are the files' own times"));
                Vec::new()
            });
        for l in &mut listed {
            let kind = s.store.kind();
            if let Some(t) = audit::last_set(&log, &s.env.name, &l.secret, kind.name()) {
                l.created = Some(t);
            }
        }
    }
    let wanted: Option<Vec<(String, String)>> = r.as_ref().map(|r| {
        r.desired
            .iter()
            .map(|d| (d.spec.name.clone(), d.value.fingerprint(&key)))
            .collect()
    });
    let runtime = s.runtime();
    let users = match runtime
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .and_then(|rt| rt.users())
    {
        Ok(u) => u,
        Err(err) => {
            s.sink.warn(&format!(
                "cannot tell which services use the secrets: {err:#}"
            ));
            None
        }
    };
    // Which version each service, task, pod or container runs; a runtime
    // that cannot be asked shows `?`, never "current".
    let kept_by: std::collections::BTreeMap<String, Vec<String>> = s
        .manifest
        .secrets
        .iter()
        .map(|x| (x.name.clone(), x.kept_by.clone()))
        .collect();
    let running = match runtime.and_then(|rt| rt.running_versions()) {
        Ok(r) => Some(drift::compare(&listed, &kept_by, &r)),
        Err(err) => {
            s.sink.warn(&format!(
                "could not ask the {} runtime which secret versions run: {err:#}",
                s.env.runtime.name()
            ));
            None
        }
    };
    let names: Vec<(String, Vec<String>)> = s
        .manifest
        .secrets_for(&s.env.name)
        .iter()
        .map(|x| (x.name.clone(), x.services.clone()))
        .collect();
    let rows = secret_rows(&names, &listed, wanted.as_deref(), users.as_ref());
    Ok(Listing { rows, running })
}

/// The audit log and, when it cannot be read (or has lines that do not
/// parse), why: its ages and last rotations were not looked at.
pub fn read_log(root: &Path) -> (Vec<Entry>, Option<String>) {
    match audit::read(root) {
        Ok(r) => r,
        Err(e) => (Vec::new(), Some(format!("{e:#}"))),
    }
}

/// Reads one environment; every failure becomes a note or `unreachable`.
pub fn gather(root: &Path, manifest: &Manifest, name: &str, sink: &Shared) -> EnvView {
    let env = match manifest.env(name) {
        Ok(e) => e,
        Err(e) => {
            return EnvView {
                name: name.into(),
                unreachable: Some(format!("{e:#}")),
                ..Default::default()
            };
        }
    };
    let (path, shown) = resolve::locate(root, env).unwrap_or_default();
    let mut v = EnvView {
        name: name.into(),
        store: env.store.name().into(),
        runtime: env.runtime.name().into(),
        env_file: shown.clone(),
        secrets: manifest
            .secrets_for(name)
            .into_iter()
            .map(|s| Wanted {
                name: s.name.clone(),
                services: s.services.clone(),
                rotate_every_days: s.rotate_every_days(env),
                in_env_file: s.kind != Kind::Derived,
                kept_by: s.kept_by.clone(),
            })
            .collect(),
        ..Default::default()
    };
    if path.is_file()
        && let Ok(f) = EnvFile::load(&path, shown)
    {
        v.env_keys = Some(
            f.entries
                .iter()
                .filter(|(_, e)| !e.value.is_empty())
                .map(|(k, _)| k.to_ascii_lowercase())
                .collect(),
        );
    }
    if let Err(e) = read_store(root, &path, &mut v, sink) {
        v.unreachable = Some(format!("{e:#}"));
    }
    v
}

/// The store's listing (with creation times), the env file's fingerprints
/// when it validates, and the runtime's users. An error means the store
/// could not be read; a problem with the env file or the runtime is a note.
fn read_store(root: &Path, env_file: &Path, v: &mut EnvView, sink: &Shared) -> Result<()> {
    let args = Target {
        env: v.name.clone(),
        backend: None,
        namespace: None,
        lock_timeout: Duration::ZERO,
    };
    let s = Session::open(root, &args, sink.clone())?;
    v.store_dates_values = s.store.dates_values();
    let compared = match env_file.exists() {
        true => resolve::resolve(root, &s.manifest, &s.env, resolve::Options::read_only())
            .and_then(|r| Ok((s.compare_key(&r)?, r))),
        false => Err(anyhow::anyhow!("{} does not exist here", v.env_file)),
    };
    let (key, resolved) = match compared {
        Ok((k, r)) => (k, Some(r)),
        Err(e) => {
            let why = format!("{e:#}").replace("\n  - ", " ").replace('\n', " ");
            if env_file.exists() {
                v.env_unreadable = Some(why.clone());
            }
            v.notes.push(format!(
                "the store is not compared with the env file: {why}"
            ));
            (secret::generate(64)?, None)
        }
    };
    v.listed = s.store.list(&key)?;
    let undated: Vec<&str> = v
        .listed
        .iter()
        .filter(|l| l.created.is_none())
        .map(|l| l.id.as_str())
        .collect();
    let created = s.store.created(&undated);
    for l in &mut v.listed {
        l.created = l.created.or_else(|| created.get(&l.id).copied());
    }
    v.fingerprints = resolved.map(|r| {
        r.desired
            .iter()
            .map(|d| (d.spec.name.clone(), d.value.fingerprint(&key)))
            .collect()
    });
    let runtime = s.runtime();
    match runtime
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .and_then(|rt| rt.users())
    {
        Ok(u) => v.users = u,
        Err(e) => v
            .notes
            .push(format!("cannot tell which services use the secrets: {e:#}")),
    }
    match runtime.and_then(|rt| rt.running_versions()) {
        Ok(r) => v.running = Some(r),
        Err(e) => {
            v.runtime_unreachable = Some(format!("{e:#}").replace('\n', " "));
        }
    }
    Ok(())
}

/// The reuse rule between `a` and `b` when either is production: `a`'s
/// passwords and keys against `b`'s env file, in memory.
pub fn reuses_between(
    root: &Path,
    manifest: &Manifest,
    a: &Environment,
    b: &Environment,
) -> Vec<Reuse> {
    if !(a.production || b.production) {
        return Vec::new();
    }
    let Ok((path, shown)) = resolve::locate(root, a) else {
        return Vec::new();
    };
    let Ok(file) = EnvFile::load(&path, shown) else {
        return Vec::new();
    };
    let specs = manifest.secrets_for(&a.name);
    let values: Vec<(&SecretSpec, &SecretValue)> = specs
        .iter()
        .filter_map(|s| file.get(&s.env_key()).map(|e| (*s, &e.value)))
        .collect();
    resolve::reuses(root, manifest, a, &values)
        .into_iter()
        .filter(|r| r.other == b.name)
        .collect()
}
