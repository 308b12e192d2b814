//! Starts real memcached processes for tests and benchmarks.
//!
//! Each [`MemcachedProcess`] runs the `memcached` binary found on `PATH` (or named by the
//! `MEMCACHED` environment variable) on a free port of 127.0.0.1, waits until it answers, and
//! kills it when dropped. Outside CI a missing binary makes [`MemcachedProcess::start`] return
//! `None` so a test can say it skipped; under CI (`CI` set) it panics, because memcached tests
//! must never skip there.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{free_port, missing};

/// A memcached server owned by the current test; killed on drop.
#[derive(Debug)]
pub struct MemcachedProcess {
    child: Child,
    port: u16,
    extra_args: Vec<String>,
}

fn binary() -> String {
    std::env::var("MEMCACHED").unwrap_or_else(|_| "memcached".to_owned())
}

fn answers(port: u16) -> bool {
    let Ok(mut stream) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(100))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"version\r\n").is_err() {
        return false;
    }
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("VERSION")
}

impl MemcachedProcess {
    /// Starts memcached on a free port, or returns `None` when no binary is installed and this
    /// is not CI. Panics under CI, or if the binary exists but the server does not come up.
    pub fn start() -> Option<MemcachedProcess> {
        Self::start_with(&[])
    }

    /// Like [`start`](Self::start), with extra command-line arguments (e.g. `["-I", "2m"]`).
    pub fn start_with(extra_args: &[&str]) -> Option<MemcachedProcess> {
        Self::start_at(free_port(), extra_args)
    }

    /// Like [`start`](Self::start), on the given port of 127.0.0.1 rather than a free one:
    /// for a client configured with that address before anything listened there. Panics if
    /// the port is taken.
    pub fn start_on(port: u16) -> Option<MemcachedProcess> {
        Self::start_at(port, &[])
    }

    fn start_at(port: u16, extra_args: &[&str]) -> Option<MemcachedProcess> {
        let extra_args: Vec<String> = extra_args.iter().map(|s| (*s).to_owned()).collect();
        Self::spawn(port, &extra_args).map_or_else(|e| missing(&binary(), e), Some)
    }

    fn spawn(port: u16, extra_args: &[String]) -> std::io::Result<MemcachedProcess> {
        let child = Command::new(binary())
            .args([
                "-l",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "0",
                "-m",
                "64",
            ])
            // memcached refuses to run as root unless told which user to be; ignored otherwise.
            .args(["-u", "root"])
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut process = MemcachedProcess {
            child,
            port,
            extra_args: extra_args.to_vec(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !answers(port) {
            if let Ok(Some(status)) = process.child.try_wait() {
                return Err(std::io::Error::other(format!("memcached exited: {status}")));
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(
                    "memcached did not answer within 10 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(process)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `memcache://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("memcache://127.0.0.1:{}", self.port)
    }

    /// A figure of the server's `stats` (e.g. `evictions`), if it answers.
    pub fn stat(&self, name: &str) -> Option<u64> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream.write_all(b"stats\r\n").ok()?;
        let wanted = format!("STAT {name} ");
        for line in BufReader::new(stream).lines() {
            let line = line.ok()?;
            if line == "END" {
                return None;
            }
            if let Some(value) = line.strip_prefix(&wanted) {
                return value.trim().parse().ok();
            }
        }
        None
    }

    /// Deletes `key` on the server, as an eviction would; whether it held one.
    pub fn delete(&self, key: &str) -> bool {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("memcached answers");
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        stream
            .write_all(format!("delete {key}\r\n").as_bytes())
            .unwrap();
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).unwrap();
        match answer.trim_end() {
            "DELETED" => true,
            "NOT_FOUND" => false,
            other => panic!("delete {key}: {other}"),
        }
    }

    /// Kills the server (its data is lost) and waits for it to exit.
    pub fn kill(&mut self) {
        crate::process::kill(&mut self.child);
    }

    /// Freezes the server (`SIGSTOP`): it keeps its data and its connections, and answers
    /// nothing until [`resume`](Self::resume); clients time out.
    pub fn pause(&self) {
        crate::process::pause(self.child.id());
    }

    /// Lets a [`pause`](Self::pause)d server run again; it answers what it was sent meanwhile.
    pub fn resume(&self) {
        crate::process::signal(self.child.id(), crate::process::Signal::Cont);
    }

    /// Kills the server and starts a new, empty one on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let fresh = Self::spawn(self.port, &self.extra_args).expect("memcached did not restart");
        *self = fresh;
    }
}

impl Drop for MemcachedProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
