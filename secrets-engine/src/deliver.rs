//! How `deploy` (and a rotation's redeploy) gets a store's values to the
//! services, by the store's [`Delivery`]: the runtime's own store is pointed
//! at as it is; Vault and AWS either hand their values to the runtime's own
//! store once (`fetch`) or give the services a credential to read them at
//! run time (`reader`). The runtime's own store (compose files, Swarm or
//! Kubernetes secrets) is reused as the delivery store, so its naming,
//! labels and checks apply unchanged.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};

use crate::{
    model::secret::SecretValue,
    plan::resolve::Resolved,
    plan::{self, Action, Step},
    runtime::{DeployOptions, ReaderDeploy, Runtime},
    store::{self, Access, Delivery, Item, SecretStore},
};
use crate::{
    session::{Planned, Session},
    sink::Sink,
};

/// Deploys with the current values, refusing when the store is not in line
/// with the env file (`planned` is the store's setup plan).
pub fn deploy(s: &Session, r: &Resolved, planned: &Planned, opts: &DeployOptions) -> Result<()> {
    let current = s.current_or_refuse(planned)?;
    match s.store.delivery()? {
        Delivery::Runtime => s.runtime()?.deploy(&current, opts),
        Delivery::Fetch => fetch(s, r, planned, opts),
        Delivery::Reader(access) => reader(s, r, &access, opts),
    }
}

/// The runtime's own store, which holds the runtime's copies.
fn delivery_store(s: &Session) -> Result<Box<dyn SecretStore>> {
    let mut env = s.env.clone();
    env.store = env.runtime;
    store::open(&crate::Scope {
        root: &s.root,
        manifest: &s.manifest,
        env: &env,
        sink: &s.sink,
    })
}

/// The delivery store's plan for `wanted` (name, fingerprint), without the
/// copies it holds that are not wanted.
fn delivery_plan(
    s: &Session,
    d: &dyn SecretStore,
    key: &SecretValue,
    wanted: &[(String, String)],
) -> Result<Vec<Step>> {
    let listed = d.list(key)?;
    Ok(plan::setup(d, &s.env.name, wanted, &listed)
        .into_iter()
        .filter(|st| st.action != Action::Extra)
        .collect())
}

fn ids(steps: &[Step]) -> BTreeMap<String, String> {
    steps
        .iter()
        .map(|st| (st.secret.clone(), st.id.clone()))
        .collect()
}

/// `delivery = "fetch"`: plans the runtime's copies from the env file's
/// fingerprints (equal to the store's, or [`Session::current_or_refuse`]
/// refused), reads from the store only the values whose copy must change,
/// checks each against the plan's fingerprint, writes the copies, deploys,
/// and removes copies two versions old that nothing uses.
fn fetch(s: &Session, r: &Resolved, planned: &Planned, opts: &DeployOptions) -> Result<()> {
    let d = delivery_store(s)?;
    let key = s.compare_key(r)?;
    for x in &r.desired {
        d.check(&x.spec.name, &x.origin, x.value.expose())?;
    }
    let wanted: Vec<(String, String)> = r
        .desired
        .iter()
        .map(|x| (x.spec.name.clone(), x.value.fingerprint(&key)))
        .collect();
    let steps = delivery_plan(s, d.as_ref(), &key, &wanted)?;
    s.sink.plan(
        &format!(
            "copies in the {} runtime, read from the {} store:",
            s.env.runtime,
            s.store.kind()
        ),
        &steps,
    );
    let runtime = s.runtime()?;
    let writes: Vec<&Step> = steps.iter().filter(|st| st.action.writes()).collect();
    if opts.dry_run {
        s.sink.line(&format!(
            "dry run: would read {} value(s) from {} and write them to the {} runtime",
            writes.len(),
            s.store.kind(),
            s.env.runtime
        ));
        return runtime.deploy(&ids(&steps), opts);
    }
    runtime.prepare(&ids(&steps), opts)?;
    let values = read_checked(s, planned, &writes, &wanted, &key)?;
    let items: Vec<Item> = writes
        .iter()
        .zip(&values)
        .map(|(st, v)| Item {
            step: st,
            value: v,
            fingerprint: v.fingerprint(&key),
        })
        .collect();
    d.write(&items)?;
    runtime.deploy(&ids(&steps), opts)?;
    let names: Vec<String> = writes.iter().map(|st| st.secret.clone()).collect();
    prune(&*s.sink, d.as_ref(), runtime.as_ref(), &key, &names)
}

/// The values of `writes` read from the store (in that order), each checked
/// against the fingerprint the plan wanted.
fn read_checked(
    s: &Session,
    planned: &Planned,
    writes: &[&Step],
    wanted: &[(String, String)],
    key: &SecretValue,
) -> Result<Vec<SecretValue>> {
    let from: Vec<&plan::Stored> = writes
        .iter()
        .map(|st| {
            plan::newest(&planned.listed, &st.secret)
                .context("the plan names a secret the store did not list")
        })
        .collect::<Result<_>>()?;
    let mut values = s.store.fetch(&from)?;
    let kind = s.store.kind();
    writes
        .iter()
        .map(|st| {
            let i = values
                .iter()
                .position(|(n, _)| n == &st.secret)
                .with_context(|| format!("the {kind} store gave no value for {}", st.secret))?;
            let (_, v) = values.swap_remove(i);
            let fp = v.fingerprint(key);
            if !wanted.iter().any(|(n, w)| n == &st.secret && *w == fp) {
                bail!(
                    "{} changed in the {kind} store since this deploy planned it; re-run",
                    st.secret
                );
            }
            Ok(v)
        })
        .collect()
}

/// After a fetch deploy: copies older than the newest two that nothing uses.
fn prune(
    sink: &dyn Sink,
    d: &dyn SecretStore,
    rt: &dyn Runtime,
    key: &SecretValue,
    names: &[String],
) -> Result<()> {
    if names.is_empty() || !d.versioned() {
        return Ok(());
    }
    let Some(users) = rt.users()? else {
        return Ok(());
    };
    let gone = plan::prune(&d.list(key)?, names, 1, &users);
    if !gone.is_empty() {
        d.delete(&gone)?;
        let shown: Vec<&str> = gone.iter().map(|g| g.id.as_str()).collect();
        sink.line(&format!("removed superseded copies: {}", shown.join(", ")));
    }
    Ok(())
}

/// After a reader deploy: copies an earlier fetch deploy left in the runtime
/// that nothing uses any more (where the runtime can tell; Compose cannot,
/// so its files stay until `remove-secrets` with `--backend compose`).
fn remove_copies(
    sink: &dyn Sink,
    d: &dyn SecretStore,
    rt: &dyn Runtime,
    key: &SecretValue,
    names: &[String],
) -> Result<()> {
    let Some(users) = rt.users()? else {
        return Ok(());
    };
    let gone: Vec<Step> = d
        .list(key)?
        .iter()
        .filter(|l| names.contains(&l.secret) && !users.contains_key(&l.id))
        .map(|l| Step {
            secret: l.secret.clone(),
            action: Action::Remove,
            id: l.id.clone(),
            version: l.version,
            detail: "read from the store at run time now".into(),
        })
        .collect();
    if !gone.is_empty() {
        d.delete(&gone)?;
        let shown: Vec<&str> = gone.iter().map(|g| g.id.as_str()).collect();
        sink.line(&format!(
            "removed copies the services no longer use: {}",
            shown.join(", ")
        ));
    }
    Ok(())
}

/// `delivery = "reader"`: delivers the service credential (from the file the
/// manifest names) as a file secret of the runtime, and deploys the services
/// with the store's address and paths instead of the stored secrets.
fn reader(s: &Session, r: &Resolved, access: &Access, opts: &DeployOptions) -> Result<()> {
    if s.manifest
        .secrets
        .iter()
        .any(|x| x.name == access.credential)
    {
        bail!(
            "deploy/secrets.toml defines a secret named {}, which reader delivery uses for the services' credential; rename that secret",
            access.credential
        );
    }
    let cred = read_credential(s, access)?;
    let d = delivery_store(s)?;
    let key = s.compare_key(r)?;
    let shown = access.credential_file.display().to_string();
    d.check(&access.credential, &shown, cred.expose())?;
    let wanted = [(access.credential.clone(), cred.fingerprint(&key))];
    let steps = delivery_plan(s, d.as_ref(), &key, &wanted)?;
    s.sink.plan(
        &format!(
            "the services' {} credential in the {} runtime (from {shown}):",
            s.store.kind(),
            s.env.runtime
        ),
        &steps,
    );
    let mut vars = access.vars.clone();
    vars.push((
        access.credential_var.clone(),
        format!("/run/secrets/{}", access.credential),
    ));
    let mut opts = opts.clone();
    opts.reader = Some(ReaderDeploy {
        secrets: s
            .manifest
            .secrets_for(&s.env.name)
            .iter()
            .map(|x| x.name.clone())
            .collect(),
        vars,
        credential: access.credential.clone(),
    });
    let runtime = s.runtime()?;
    if !opts.dry_run {
        runtime.prepare(&ids(&steps), &opts)?;
        let items: Vec<Item> = steps
            .iter()
            .filter(|st| st.action.writes())
            .map(|st| Item {
                step: st,
                value: &cred,
                fingerprint: cred.fingerprint(&key),
            })
            .collect();
        d.write(&items)?;
    }
    runtime.deploy(&ids(&steps), &opts)?;
    if !opts.dry_run {
        let names = opts
            .reader
            .as_ref()
            .map(|r| r.secrets.clone())
            .unwrap_or_default();
        remove_copies(&*s.sink, d.as_ref(), runtime.as_ref(), &key, &names)?;
    }
    s.sink.line(&format!(
        "services read their secrets from the {} store at run time; a rotated value reaches them within the reader's cache time (SECRETS_CACHE_SECONDS, default 60 s)",
        s.store.kind()
    ));
    Ok(())
}

/// The service credential: a private, non-empty file that is not the
/// operator's own credential.
fn read_credential(s: &Session, access: &Access) -> Result<SecretValue> {
    let shown = access.credential_file.display().to_string();
    let path = s.root.join(&access.credential_file);
    if !path.exists() {
        bail!(
            "{shown} does not exist; {} names it as the file holding the token or credentials the services read with. Create it (mode 0600, outside git) with a credential that may only read this environment's secrets",
            access.credential_key
        );
    }
    crate::disk::fsutil::refuse_symlink(&path, &shown)?;
    crate::disk::fsutil::check_private(&path, &shown)?;
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "cannot read {shown} ({}): it holds the credential the services read with",
            access.credential_key
        )
    })?;
    let v = SecretValue::new(bytes);
    if v.expose().iter().all(u8::is_ascii_whitespace) {
        bail!("{shown} ({}) is empty", access.credential_key);
    }
    if let Some(own) = &access.operator_credential
        && !own.is_empty()
        && v.expose()
            .windows(own.expose().len())
            .any(|w| w == own.expose())
    {
        bail!(
            "{shown} ({}) holds your own {} credential; give the services one of their own that may only read (see docs/vault-and-aws.md, \"Permissions\")",
            access.credential_key,
            s.store.kind()
        );
    }
    Ok(v)
}
