//! Starts real Varnish caches for tests: an HTTP cache in front of a server the test runs.
//!
//! Each [`VarnishProcess`] runs `varnishd` in the foreground with a working directory of its
//! own, listening on a free port of 127.0.0.1 (its management interface on another), with the
//! VCL given to it. That VCL's backend is the test's server: the harness replaces the port of
//! its `.port = "8000"` (the blog's default, so that the repository's VCL also runs as it is in
//! front of `cargo run --example blog`). Varnish stays on loopback, stores in 64 MiB of memory,
//! and is stopped (its cache process with it) when dropped.
//!
//! The `xkey` module (purging by tag) is Debian's `varnish-modules`. Outside CI a missing
//! `varnishd` makes [`VarnishProcess::start`] return `None`; under CI (`CI` set) it panics.

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::process::{Signal, free_port, missing, pause, signal, try_signal};

/// How long Varnish has to come up (compiling its VCL takes a second or two) or to stop.
const DEADLINE: Duration = Duration::from_secs(30);

/// Where Debian installs `varnishd`, for a `PATH` without `/usr/sbin`.
const SBIN: &str = "/usr/sbin/varnishd";

/// A Varnish cache in front of a test's server, stopped on drop.
#[derive(Debug)]
pub struct VarnishProcess {
    child: Child,
    port: u16,
    /// The working directory (`-n`), with the VCL and the log.
    dir: PathBuf,
}

impl VarnishProcess {
    /// Varnish with the VCL at `vcl`, its backend on `backend_port` of 127.0.0.1, once it
    /// answers; `None` outside CI if `varnishd` is not installed.
    pub fn start(vcl: &Path, backend_port: u16) -> Option<VarnishProcess> {
        let text =
            std::fs::read_to_string(vcl).unwrap_or_else(|e| panic!("read {}: {e}", vcl.display()));
        assert!(
            text.contains(".port = \"8000\""),
            "{}: the harness points the backend's `.port = \"8000\"` at the test's server",
            vcl.display()
        );
        let text = text.replace(".port = \"8000\"", &format!(".port = \"{backend_port}\""));

        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cachesweeper-varnish-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create Varnish's directory");
        let vcl = dir.join("default.vcl");
        std::fs::write(&vcl, text).expect("write the VCL");
        // Varnish compiles the VCL as an unprivileged user, who must be able to read it
        // whatever the umask made of them.
        for (path, mode) in [(&dir, 0o755), (&vcl, 0o644)] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .expect("open Varnish's directory to its compiler");
        }
        let log = std::fs::File::create(dir.join("varnishd.log")).expect("create the log");

        let port = free_port();
        let program = if Path::new(SBIN).is_file() {
            SBIN
        } else {
            "varnishd"
        };
        let child = Command::new(program)
            .args(["-F", "-a"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-T")
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("-n")
            .arg(dir.join("work"))
            .arg("-f")
            .arg(&vcl)
            .args(["-s", "malloc,64m"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log"))
            .stderr(log)
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) => return missing("varnishd", e),
        };
        let mut varnish = VarnishProcess { child, port, dir };
        let deadline = Instant::now() + DEADLINE;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = varnish.child.try_wait() {
                panic!("varnishd exited ({status}):\n{}", varnish.log());
            }
            assert!(
                Instant::now() < deadline,
                "varnishd did not listen within {DEADLINE:?}:\n{}",
                varnish.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(varnish)
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What varnishd wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("varnishd.log")).unwrap_or_default()
    }

    /// The manager's process and its cache process (which holds the listening socket).
    fn processes(&self) -> Vec<u32> {
        let pid = self.child.id();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        std::iter::once(pid)
            .chain(children.split_whitespace().filter_map(|p| p.parse().ok()))
            .collect()
    }

    /// Stops every process of it (`SIGSTOP`): connections are accepted by the kernel and never
    /// answered, as from a cache that hangs.
    pub fn pause(&self) {
        for pid in self.processes() {
            pause(pid);
        }
    }

    /// Lets a paused Varnish go on (`SIGCONT`), its cache as it was.
    pub fn resume(&self) {
        for pid in self.processes() {
            signal(pid, Signal::Cont);
        }
    }
}

impl Drop for VarnishProcess {
    fn drop(&mut self) {
        let processes = self.processes();
        for &pid in &processes {
            let _ = try_signal(pid, Signal::Cont);
        }
        // The manager stops its cache process on SIGTERM; SIGKILL would leave it listening.
        let _ = try_signal(self.child.id(), Signal::Term);
        let deadline = Instant::now() + DEADLINE;
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            // Still running: end both (their pids are still theirs while the manager lives).
            for pid in processes {
                let _ = try_signal(pid, Signal::Kill);
            }
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
