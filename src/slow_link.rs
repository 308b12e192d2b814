//! A slow network between one process and a cache server: a loopback proxy that delays what
//! the client sends (answers come back at once), so that a request can arrive after others
//! sent later by other processes; and that can lose what the client sends (one-way packet
//! loss), so that a request never arrives at all.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A proxy on a free port of 127.0.0.1 to `upstream` (a port of 127.0.0.1) that delays every
/// byte a client sends by `delay`, in order. It lives as long as the test process: its
/// threads block on sockets that end when the client or the server closes them.
#[derive(Debug, Clone)]
pub struct SlowLink {
    port: u16,
    cut: Arc<AtomicBool>,
}

impl SlowLink {
    /// Starts the proxy.
    pub fn start(upstream: u16, delay: Duration) -> SlowLink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = listener.local_addr().expect("a bound address").port();
        let cut = Arc::new(AtomicBool::new(false));
        let link_cut = Arc::clone(&cut);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                forward(client, server, delay, Arc::clone(&link_cut));
            }
        });
        SlowLink { port, cut }
    }

    /// Loses everything clients send from now on (`true`), until called with `false`.
    pub fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
    }

    /// `memcache://127.0.0.1:PORT`.
    pub fn memcached_url(&self) -> String {
        format!("memcache://127.0.0.1:{}", self.port)
    }
}

/// Copies `server`'s answers to `client` at once, and `client`'s requests to `server` each
/// `delay` after they were read, except those read while the link is `cut`.
fn forward(mut client: TcpStream, mut server: TcpStream, delay: Duration, cut: Arc<AtomicBool>) {
    let (Ok(mut answers), Ok(mut to_client)) = (server.try_clone(), client.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut answers, &mut to_client);
        let _ = to_client.shutdown(std::net::Shutdown::Both);
    });
    let (send, due) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        for (at, bytes) in due {
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            if server.write_all(&bytes).is_err() {
                break;
            }
        }
        let _ = server.shutdown(std::net::Shutdown::Both);
    });
    std::thread::spawn(move || {
        let mut chunk = [0u8; 16 * 1024];
        while let Ok(n @ 1..) = client.read(&mut chunk) {
            if cut.load(Ordering::SeqCst) {
                continue;
            }
            if send
                .send((Instant::now() + delay, chunk[..n].to_vec()))
                .is_err()
            {
                return;
            }
        }
    });
}
