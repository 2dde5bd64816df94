//! SIGTERM/SIGINT handling without extra crates: the handler only sets a flag,
//! which the (non-blocking) accept loop polls. Without a handler a probe running
//! as PID 1 in a container would ignore SIGTERM.

use std::sync::atomic::AtomicBool;

/// Set once SIGTERM or SIGINT has arrived.
pub static STOP: AtomicBool = AtomicBool::new(false);

#[cfg(unix)]
pub fn install() {
    use std::sync::atomic::Ordering;

    unsafe extern "C" {
        fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    }

    extern "C" fn on_signal(_: i32) {
        STOP.store(true, Ordering::SeqCst);
    }

    const SIGINT: i32 = 2;
    const SIGTERM: i32 = 15;
    // SAFETY: `signal` is the C library's; the handler only stores to an
    // atomic, which is async-signal-safe.
    unsafe {
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
    }
}

#[cfg(not(unix))]
pub fn install() {}
