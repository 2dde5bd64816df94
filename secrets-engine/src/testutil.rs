//! Helpers for unit tests: a temporary directory removed on drop, and the
//! `demo` manifest that the resolve and migrate tests share.

use std::path::{Path, PathBuf};

pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "xtask-unit-{}-{:x}",
            std::process::id(),
            crate::model::secret::random_u64()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The secrets the planning tests share: a user, a password and the
/// database URL derived from both.
const DB_SECRETS: &str = r#"[secrets.postgres_user]
kind = "username"
[secrets.postgres_password]
kind = "password"
[secrets.database_url]
kind = "derived"
template = "postgresql://{postgres_user}:{postgres_password}@postgres:5432/{project}_{env}"
"#;

/// Project `demo` with `environments` (TOML tables), the database secrets
/// and then `extra`.
pub fn demo_manifest(environments: &str, extra: &str) -> crate::model::manifest::Manifest {
    let text = format!("project = \"demo\"\n{environments}{DB_SECRETS}{extra}");
    crate::model::manifest::Manifest::parse(&text).unwrap()
}
