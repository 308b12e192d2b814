//! What the server harnesses share: free ports, signals, and starting a binary that may be
//! missing (a skip outside CI, a panic under it).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// Sends `SIG<name>` to `pid`.
pub(crate) fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill(1) runs");
    assert!(status.success(), "kill -{name} failed");
}

/// Kills `child` (its data is lost) and waits for it to exit. A paused child is let go
/// first, though SIGKILL would end it anyway; one already reaped is not signalled, since its
/// pid may belong to another process by now.
pub(crate) fn kill(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = Command::new("kill")
            .args(["-CONT", &child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// Stops `pid` (`SIGSTOP`) and waits until every thread of it has stopped: a signal is
/// delivered asynchronously, and a request sent right after it could still be answered.
pub(crate) fn pause(pid: u32) {
    signal(pid, "STOP");
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
