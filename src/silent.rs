//! A cache server that never answers: the fault tests' stand-in for a host that accepts
//! connections and then hangs.

use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A loopback listener that accepts connections and never answers them, for at most
/// `lifetime`: the accepted sockets are held open, never read, until it stops (when dropped,
/// or by itself).
#[derive(Debug)]
pub struct SilentListener {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<usize>>,
}

impl SilentListener {
    /// Listens on a free port of 127.0.0.1 for at most `lifetime`.
    pub fn start(lifetime: Duration) -> SilentListener {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = listener.local_addr().expect("a bound address").port();
        listener
            .set_nonblocking(true)
            .expect("a nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let until = Instant::now() + lifetime;
            let mut held: Vec<TcpStream> = Vec::new();
            while !flag.load(Ordering::Relaxed) && Instant::now() < until {
                match listener.accept() {
                    Ok((stream, _)) => held.push(stream),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            held.len()
        });
        SilentListener {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops it; how many connections it had accepted.
    pub fn stop(&mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map_or(0, |thread| thread.join().expect("the listener thread"))
    }
}

impl Drop for SilentListener {
    fn drop(&mut self) {
        self.stop();
    }
}
