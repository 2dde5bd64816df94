//! Servers a test starts or reaches: an OpenBao dev server, a moto server (both
//! of the test's own, on free loopback ports, killed on drop) and the
//! Kubernetes test cluster.

pub mod cluster;
pub mod moto;
pub mod openbao;

use std::net::TcpListener;

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A port P with P and P+1 free on 127.0.0.1.
pub fn free_port_pair() -> u16 {
    loop {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = a.local_addr().unwrap().port();
        if p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}
