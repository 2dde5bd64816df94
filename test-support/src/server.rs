//! The accept loop shared by `serve` and the stand-in: any number of listening
//! ports, a thread per connection, and a graceful stop on SIGTERM (stop
//! accepting, let requests in flight finish) so rolling updates can be tested
//! for dropped requests.

use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::http::{self, Route};
use crate::signals;

/// How long requests in flight may take to finish after SIGTERM.
const GRACE: Duration = Duration::from_secs(5);

/// Serves every listener until SIGTERM or SIGINT. The listeners must be
/// non-blocking: one thread polls them all.
pub fn run(listeners: Vec<TcpListener>, route: Arc<Route>) {
    signals::install();
    let active = Arc::new(AtomicUsize::new(0));
    while !signals::STOP.load(Ordering::SeqCst) {
        let mut idle = true;
        for listener in &listeners {
            match listener.accept() {
                Ok((stream, _)) => {
                    idle = false;
                    let route = Arc::clone(&route);
                    let active = Arc::clone(&active);
                    active.fetch_add(1, Ordering::SeqCst);
                    thread::spawn(move || {
                        if let Err(e) = http::handle(stream, &*route) {
                            eprintln!("probe: connection: {e}");
                        }
                        active.fetch_sub(1, Ordering::SeqCst);
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => eprintln!("probe: accept: {e}"),
            }
        }
        if idle {
            thread::sleep(Duration::from_millis(10));
        }
    }
    // Stop accepting (new connections are refused), let requests in flight
    // finish for up to GRACE.
    drop(listeners);
    let deadline = Instant::now() + GRACE;
    while active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    eprintln!("probe: stopped");
}
