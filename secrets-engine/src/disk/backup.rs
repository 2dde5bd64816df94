//! What `backup-secrets` and `restore-secrets` share: which files a backup
//! holds (the env file and the files its file secrets name), reading an env
//! file's values from bytes in memory, and gathering them into an
//! [`Archive`]. Encryption is [`crate::tools::age`]'s; writing the archive and
//! putting files back are the commands'.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use zeroize::Zeroizing;

use crate::{
    disk::archive::{Archive, Entry, Role},
    disk::fsutil,
    model::manifest::{Environment, Kind, Manifest},
    model::secret::SecretValue,
    model::time,
    plan::resolve,
    tools::age::Seal,
};

/// `--recipient` first, then the manifest's `backup_recipients`, then a
/// passphrase (which age asks for on the terminal).
pub fn choose_seal(flags: &[String], env: &Environment) -> Seal {
    if !flags.is_empty() {
        Seal::Recipients(flags.to_vec())
    } else if !env.backup_recipients.is_empty() {
        Seal::Recipients(env.backup_recipients.clone())
    } else {
        Seal::Passphrase
    }
}

/// Reads the env file and the files it names into an archive, with a
/// warning for each file secret the env file does not set. `tool` names the
/// program that made the backup (kept in the archive).
pub fn collect(
    root: &Path,
    manifest: &Manifest,
    env: &Environment,
    tool: &str,
) -> Result<(Archive, Vec<String>)> {
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
                        resolve::shown_file(rel, &p)
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
        tool: tool.to_string(),
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
                .filter(|v| !resolve::inline_pem(v.expose()))
                .and_then(|v| v.expose_str())
                .filter(|v| resolve::plausible_path(v))
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
