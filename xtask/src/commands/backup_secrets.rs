//! `backup-secrets <env> --out FILE`: the environment's env file and the files
//! its file secrets name (TLS certificate and key), with their metadata, in
//! one archive that `age` encrypts on the way out. The plaintext exists only
//! in this process's memory and age's stdin pipe, never in a file or on argv:
//! the seeds' `tar -czf secrets_backup.tar.gz docker/secrets/` kept it in the clear.

use std::path::Path;

use anyhow::{Result, bail};

use crate::{flags::BackupArgs, output};
use secrets_engine::{
    disk::archive::Role,
    disk::backup::{choose_seal, collect},
    disk::fsutil,
    model::manifest::Manifest,
    tools::age::{self, Seal},
};

pub fn run(root: &Path, a: BackupArgs) -> Result<()> {
    let manifest = Manifest::load(root)?;
    let env = manifest.env(&a.env)?.clone();
    let seal = choose_seal(&a.recipients, &env);
    if matches!(seal, Seal::Passphrase) && !age::has_terminal() {
        bail!(
            "no backup recipients: pass --recipient KEY (an age public key; `age-keygen -y KEYFILE` prints it) or set backup_recipients in deploy/secrets.toml; a passphrase can only be typed on a terminal"
        );
    }
    let age = age::find()?;
    let out = root.join(&a.out);
    if out.exists() {
        bail!(
            "{} exists; pick a new name for the backup (an old backup is never overwritten)",
            a.out.display()
        );
    }
    let (archive, warnings) = collect(
        root,
        &manifest,
        &env,
        &format!("xtask {}", env!("CARGO_PKG_VERSION")),
    )?;
    for w in &warnings {
        output::warn(w);
    }
    let plain = archive.encode()?;
    let sealed = age::encrypt(&age, &plain, &seal)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| fsutil::io_error(e, "create", dir))?;
    }
    fsutil::write_atomic(&out, &sealed, 0o600, None)?;
    let to = match &seal {
        Seal::Recipients(k) => format!(
            "{} recipient{}",
            k.len(),
            if k.len() == 1 { "" } else { "s" }
        ),
        Seal::Passphrase => "a passphrase".into(),
    };
    println!(
        "backed up {} {} to {} (age, encrypted to {to}, mode 0600):",
        manifest.project,
        env.name,
        a.out.display()
    );
    for e in &archive.entries {
        let what = match &e.role {
            Role::EnvFile => "env file".to_string(),
            Role::File(k) => format!("{k} file"),
        };
        println!("  {what:<24} {} ({} bytes)", e.path, e.bytes.len());
    }
    Ok(())
}
