//! `backup-secrets <env> --out FILE`: the environment's env file and the files
//! its file secrets name (TLS certificate and key), with their metadata, in
//! one archive that `age` encrypts on the way out. The plaintext exists only
//! in this process's memory and age's stdin pipe, never in a file or on argv:
//! the seeds' `tar -czf secrets_backup.tar.gz docker/secrets/` kept it in the clear.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use zeroize::Zeroizing;

use crate::{flags::BackupArgs, output};
use secrets_engine::{
    disk::archive::{Archive, Entry, Role},
    disk::fsutil,
    model::manifest::{Environment, Kind, Manifest},
    model::secret::SecretValue,
    model::time,
    plan::resolve,
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
    let (archive, warnings) = collect(root, &manifest, &env)?;
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

/// `--recipient` first, then the manifest's `backup_recipients`, then a
/// passphrase (which age asks for on the terminal).
fn choose_seal(flags: &[String], env: &Environment) -> Seal {
    if !flags.is_empty() {
        Seal::Recipients(flags.to_vec())
    } else if !env.backup_recipients.is_empty() {
        Seal::Recipients(env.backup_recipients.clone())
    } else {
        Seal::Passphrase
    }
}

/// Reads the env file and the files it names into an archive.
fn collect(root: &Path, manifest: &Manifest, env: &Environment) -> Result<(Archive, Vec<String>)> {
    let (path, shown) = resolve::locate(root, env)?;
    fsutil::refuse_symlink(&path, &shown)?;
    if !path.exists() {
        bail!(
            "{shown} does not exist, so there is nothing to back up for {}; run `cargo xtask setup-secrets {}` first",
            env.name,
            env.name
        );
    }
    fsutil::check_private(&path, &shown)?;
    let bytes =
        Zeroizing::new(std::fs::read(&path).with_context(|| format!("cannot read {shown}"))?);
    let mut entries = vec![Entry {
        role: Role::EnvFile,
        path: shown.clone(),
        bytes: bytes.clone(),
    }];
    let mut warnings = Vec::new();
    let values = parse_env(&bytes, &shown)?;
    for (key, target) in file_targets(manifest, env, &path, &values) {
        match target {
            Some(p) => {
                let rel = values
                    .get(&key)
                    .and_then(|v| v.expose_str())
                    .unwrap_or_default();
                let data = std::fs::read(&p).map_err(|e| {
                    anyhow::anyhow!(
                        "{shown}: {key} names {}, which cannot be read ({e}); fix the path or the file, then back up again",
                        secrets_engine::plan::resolve::shown_file(rel, &p)
                    )
                })?;
                entries.push(Entry {
                    role: Role::File(key),
                    path: shown_path(root, &p),
                    bytes: Zeroizing::new(data),
                });
            }
            None => warnings.push(format!(
                "{shown} has no {key}, so its file is not in the backup"
            )),
        }
    }
    let archive = Archive {
        project: manifest.project.clone(),
        environment: env.name.clone(),
        created: time::rfc3339(std::time::SystemTime::now()),
        tool: format!("xtask {}", env!("CARGO_PKG_VERSION")),
        entries,
    };
    Ok((archive, warnings))
}

/// An env file's keys and values, parsed from bytes in memory (dotenv rules,
/// never the process environment).
pub fn parse_env(bytes: &[u8], shown: &str) -> Result<BTreeMap<String, SecretValue>> {
    let mut out = BTreeMap::new();
    for item in dotenvy::from_read_iter(std::io::Cursor::new(bytes)) {
        let (k, v) = item.map_err(|e| {
            // dotenvy's message may quote the line, and with it a value.
            let kind = match e {
                dotenvy::Error::LineParse(_, i) => format!("a line cannot be parsed (at byte {i})"),
                _ => "it cannot be read".to_string(),
            };
            anyhow::anyhow!("{shown}: {kind}; fix the file")
        })?;
        out.insert(k, SecretValue::from_string(v));
    }
    Ok(out)
}

/// Each file secret of `env` with the file its env-file value names, relative
/// to the env file's folder (as setup reads it); `None` when the key is unset.
pub fn file_targets(
    manifest: &Manifest,
    env: &Environment,
    env_path: &Path,
    values: &BTreeMap<String, SecretValue>,
) -> Vec<(String, Option<PathBuf>)> {
    let base = env_path.parent().unwrap_or(Path::new("."));
    manifest
        .secrets_for(&env.name)
        .into_iter()
        .filter(|s| s.kind == Kind::File)
        .map(|s| {
            let key = s.env_key();
            // An inline PEM travels in the env file itself; a value that is
            // no path names no file.
            let p = values
                .get(&key)
                .filter(|v| !secrets_engine::plan::resolve::inline_pem(v.expose()))
                .and_then(|v| v.expose_str())
                .filter(|v| secrets_engine::plan::resolve::plausible_path(v))
                .map(|v| base.join(v));
            (key, p)
        })
        .collect()
}

/// A path relative to the repository root when it is inside it.
pub fn shown_path(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_come_from_flags_then_manifest_then_passphrase() {
        let m = Manifest::parse(
            "project = \"p\"\nbackup_recipients = [\"age1top\"]\n[environments.a]\nbackend = \"compose\"\n[environments.b]\nbackend = \"compose\"\nbackup_recipients = [\"age1b\"]\n[secrets.x]\nkind = \"password\"\n",
        )
        .unwrap();
        let keys = |s: Seal| match s {
            Seal::Recipients(k) => k,
            Seal::Passphrase => vec!["passphrase".into()],
        };
        assert_eq!(keys(choose_seal(&[], m.env("a").unwrap())), ["age1top"]);
        assert_eq!(keys(choose_seal(&[], m.env("b").unwrap())), ["age1b"]);
        assert_eq!(
            keys(choose_seal(&["age1f".into()], m.env("b").unwrap())),
            ["age1f"]
        );
        let none = Manifest::parse(
            "project = \"p\"\n[environments.a]\nbackend = \"compose\"\n[secrets.x]\nkind = \"password\"\n",
        )
        .unwrap();
        assert_eq!(
            keys(choose_seal(&[], none.env("a").unwrap())),
            ["passphrase"]
        );
    }

    #[test]
    fn env_parse_errors_never_quote_values() {
        let e = parse_env(b"A=ok\nB='unterminated s3cr3t-value\n", "x.env").unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("x.env") && !e.contains("s3cr3t"), "{e}");
    }
}
