//! What the server harnesses share: free ports, signals, and starting a binary that may be
//! missing (a skip outside CI, a panic under it).

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::process::Child;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A loopback port nothing listens on right now, and that this process was never given
/// before. The kernel may hand out a port again as soon as it is free, and a port given out
/// is free until its server binds it: two servers started together (a node and its cluster
/// bus, Varnish's listener and its admin port) could be given the same one.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(PoisonError::into_inner);
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("no free loopback port");
        if given.insert(port) {
            return port;
        }
    }
    panic!("no loopback port left that this process was not given before")
}

/// A signal the harness sends to a server it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Freezes it.
    Stop,
    /// Lets a frozen one run again.
    Cont,
    /// PostgreSQL's fast shutdown.
    Int,
    /// PostgreSQL's immediate shutdown (a crash, as far as its data knows).
    Quit,
    /// Varnish's shutdown (its manager stops its cache process first).
    Term,
    /// Ends it, data and all.
    Kill,
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SIG{}", format!("{self:?}").to_uppercase())
    }
}

impl Signal {
    fn number(self) -> libc::c_int {
        match self {
            Signal::Stop => libc::SIGSTOP,
            Signal::Cont => libc::SIGCONT,
            Signal::Int => libc::SIGINT,
            Signal::Quit => libc::SIGQUIT,
            Signal::Term => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
        }
    }
}

/// Sends `signal` to `pid`. Through libc rather than kill(1), which slim Debian images lack
/// (procps).
pub(crate) fn try_signal(pid: u32, signal: Signal) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(std::io::Error::other)?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(pid, signal.number()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Sends `signal` to `pid`; panics if it cannot.
pub(crate) fn signal(pid: u32, signal: Signal) {
    try_signal(pid, signal).unwrap_or_else(|e| panic!("could not send {signal} to {pid}: {e}"));
}

/// Kills `child` (its data is lost) and waits for it to exit. A paused child is let go
/// first, though SIGKILL would end it anyway; one already reaped is not signalled, since its
/// pid may belong to another process by now.
pub(crate) fn kill(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = try_signal(child.id(), Signal::Cont);
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// Stops `pid` (`SIGSTOP`) and waits until every thread of it has stopped: a signal is
/// delivered asynchronously, and a request sent right after it could still be answered.
pub(crate) fn pause(pid: u32) {
    signal(pid, Signal::Stop);
    let deadline = Instant::now() + Duration::from_secs(5);
    let thread_stopped = |stat: &str| {
        std::fs::read_to_string(stat).ok().and_then(|stat| {
            let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
            Some(state == "T")
        })
    };
    let stopped = || {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return true; // no /proc to read: trust the signal
        };
        tasks
            .flatten()
            .all(|task| thread_stopped(&format!("{}/stat", task.path().display())).unwrap_or(true))
    };
    while !stopped() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `None` (with a note) when `binary` is not installed and this is not CI; otherwise panics
/// with `error`. Tests that need a server skip outside CI and never under it.
pub(crate) fn missing<T>(binary: &str, error: std::io::Error) -> Option<T> {
    if error.kind() == std::io::ErrorKind::NotFound && std::env::var_os("CI").is_none() {
        eprintln!(
            "{binary} not found ({error}); skipping. Run scripts/test.sh, which installs it."
        );
        None
    } else {
        panic!("could not start {binary}: {error}")
    }
}
