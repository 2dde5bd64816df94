//! The model: the manifest (`deploy/secrets.toml`), secret values that never
//! show themselves, the checks a value must pass, env files, and time. Pure:
//! nothing here starts a process or changes a store, except [`keypair`],
//! which asks openssl whether a TLS key matches its certificate.

pub mod envfile;
pub mod forms;
pub mod keypair;
pub mod manifest;
pub mod mask;
pub mod secret;
pub mod time;
pub mod validate;
