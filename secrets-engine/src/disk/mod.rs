//! What the engine keeps on disk: atomic, private file writes ([`fsutil`]),
//! the per-environment lock, the audit log and encrypted backup archives.

pub mod archive;
pub mod audit;
pub mod backup;
pub mod fsutil;
pub mod lock;
