//! Setup as one engine call, [`Session::setup`]: validate the env file,
//! generate what may be generated, and bring the store in line with it.
//! `setup-secrets` runs it, and so does `migrate-env-to-secrets` once the
//! values are migrated: one code path, what happens sent to the session's
//! sink.
//!
//! Order: everything that can be checked offline, then the store is listed
//! (so it must answer), and only then is anything written: generated values
//! to the env file first (the source of truth), then the store.

use std::time::Duration;

use anyhow::Result;

use crate::{
    disk::audit::Change,
    plan::{Action, resolve::Options},
    session::Session,
};

/// The command setup's lock and audit entries name.
pub const COMMAND: &str = "setup-secrets";

/// How one setup runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetupOptions {
    /// Generate the values the env file lacks and the manifest lets be generated.
    pub generate_missing: bool,
    /// Show what would change; take no lock and change nothing.
    pub dry_run: bool,
    /// Accept values below the policy (see [`Options::accept_weak`]): for
    /// values migrated from a plain env file, which are rotated afterwards.
    pub accept_weak: bool,
    /// How long to wait for another run on the environment.
    pub lock_timeout: Duration,
}

/// What a setup did (or in a dry run would do) to the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetupCounts {
    /// Secrets created.
    pub created: usize,
    /// Secrets updated.
    pub updated: usize,
    /// Secrets already up to date.
    pub unchanged: usize,
}

impl Session {
    /// The secret an env-file key holds (`JWT_SECRET` → `jwt_secret`); other
    /// keys (the fingerprint key) as they are.
    fn secret_of(&self, key: &str) -> String {
        let lower = key.to_ascii_lowercase();
        match self.manifest.secret(&lower) {
            Ok(_) => lower,
            Err(_) => key.to_string(),
        }
    }

    /// Brings the store in line with the env file (see the module's order),
    /// reporting each step through the sink.
    pub fn setup(&self, o: SetupOptions) -> Result<SetupCounts> {
        let _lock = match o.dry_run {
            false => Some(self.lock(&format!("{COMMAND} {}", self.env.name), o.lock_timeout)?),
            true => None,
        };
        let mut r = self.resolve(Options {
            generate: o.generate_missing,
            read_only: false,
            accept_weak: o.accept_weak,
            ..Options::default()
        })?;
        let plan = self.plan(&r)?;
        if !r.moved.is_empty() {
            if !o.dry_run && r.generated.is_empty() {
                r.write_generated(&self.manifest.project)?;
            }
            let one = r.moved.len() == 1;
            self.sink.line(&format!(
                "{} {} in {} to {} file{} of {} own: {}",
                if o.dry_run { "would move" } else { "moved" },
                if one { "an inline PEM" } else { "inline PEMs" },
                r.file.shown,
                if one { "a" } else { "" },
                if one { "" } else { "s" },
                if one { "its" } else { "their" },
                r.moved.join(", ")
            ));
        }
        if !r.generated.is_empty() {
            let verb = if o.dry_run {
                "would generate"
            } else {
                "generated"
            };
            if !o.dry_run {
                let changes: Vec<Change> = r
                    .generated
                    .iter()
                    .map(|k| Change::new(&self.secret_of(k), "generate", None))
                    .collect();
                self.audited(COMMAND, &changes, || {
                    r.write_generated(&self.manifest.project)
                })?;
            }
            self.sink.line(&format!(
                "{verb} {} in {}: {}",
                r.generated.len(),
                r.file.shown,
                r.generated.join(", ")
            ));
        }
        self.sink.plan(&self.heading(), &plan.steps);
        let counts = SetupCounts {
            created: plan.count(Action::Create),
            updated: plan.count(Action::Update),
            unchanged: plan.count(Action::Unchanged),
        };
        let SetupCounts {
            created: create,
            updated: update,
            unchanged: same,
        } = counts;
        if o.dry_run {
            if let Some(preview) = self.store.preview(&plan.steps) {
                self.sink
                    .line(&format!("would apply (values redacted):\n{preview}"));
            }
            self.sink.line(&format!(
                "dry run: {create} to create, {update} to update, {same} unchanged; nothing was changed"
            ));
            return Ok(counts);
        }
        if create + update == 0 {
            self.sink
                .line(&format!("nothing to do: all {same} secrets are up to date"));
            return Ok(counts);
        }
        let writes = plan.writes();
        self.apply_audited(COMMAND, &r, &writes)?;
        self.sink.line(&format!(
            "done: {create} created, {update} updated, {same} unchanged"
        ));
        Ok(counts)
    }
}
