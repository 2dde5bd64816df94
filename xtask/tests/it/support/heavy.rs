//! One rotation under load at a time, across the whole test binary: the load
//! tests (`stack`, `k8s_stack`, `compose_stack`) print timing and
//! failed-request figures that mean something only on a machine that runs one
//! such rotation at once (2 cores). They used to be separate test binaries,
//! which cargo runs one after another; in one binary they share this lock.

use std::sync::{Mutex, MutexGuard};

/// Held for the whole of a load test, taken after its gates (a skipped test
/// never waits). A test that panicked while holding it does not poison it.
pub fn heavy_lock() -> MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}
