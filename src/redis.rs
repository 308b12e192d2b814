//! Starts real Redis servers for tests and benchmarks: a standalone [`RedisProcess`], and a
//! [`RedisCluster`] of three masters.
//!
//! The `redis-server` and `redis-cli` binaries are found on `PATH` (or named by the
//! `REDIS_SERVER` and `REDIS_CLI` environment variables; Valkey's `valkey-server` and
//! `valkey-cli` work too). Each server runs on a free port of 127.0.0.1 with persistence off
//! (`--save '' --appendonly no`), in a directory of its own that goes with it, and is killed
//! when dropped. Outside CI a missing binary makes `start` return `None` so that a test can say
//! it skipped; under CI (`CI` set) it panics.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{free_port, missing};

fn server_binary() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

fn cli_binary() -> String {
    std::env::var("REDIS_CLI").unwrap_or_else(|_| "redis-cli".to_owned())
}

/// Sends one inline command and reads one reply: a status or error line, or a bulk string.
fn ask(port: u16, command: &str) -> Option<String> {
    let mut stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(100))
            .ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    match line.strip_prefix('$') {
        Some(len) => {
            let len: usize = len.trim().parse().ok()?;
            let mut body = vec![0; len + 2];
            reader.read_exact(&mut body).ok()?;
            body.truncate(len);
            String::from_utf8(body).ok()
        }
        None => Some(line.trim_end().to_owned()),
    }
}

/// A Redis server owned by the current test; killed on drop.
#[derive(Debug)]
pub struct RedisProcess {
    child: Child,
    port: u16,
    dir: PathBuf,
    extra_args: Vec<String>,
}

impl RedisProcess {
    /// Starts Redis on a free port, or returns `None` when no binary is installed and this is
    /// not CI. Panics under CI, or if the binary exists but the server does not come up.
    pub fn start() -> Option<RedisProcess> {
        Self::start_with(&[])
    }

    /// Like [`start`](Self::start), with extra arguments (`["--maxmemory", "10mb"]`).
    pub fn start_with(extra_args: &[&str]) -> Option<RedisProcess> {
        Self::start_at(free_port(), extra_args)
    }

    /// Like [`start`](Self::start), on the given port of 127.0.0.1: for a client configured
    /// with that address before anything listened there. Panics if the port is taken.
    pub fn start_on(port: u16) -> Option<RedisProcess> {
        Self::start_at(port, &[])
    }

    fn start_at(port: u16, extra_args: &[&str]) -> Option<RedisProcess> {
        let extra_args: Vec<String> = extra_args.iter().map(|s| (*s).to_owned()).collect();
        Self::spawn(port, &extra_args).map_or_else(|e| missing(&server_binary(), e), Some)
    }

    fn spawn(port: u16, extra_args: &[String]) -> std::io::Result<RedisProcess> {
        let dir =
            std::env::temp_dir().join(format!("cachesweeper-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let child = Command::new(server_binary())
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--protected-mode", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(&dir)
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut process = RedisProcess {
            child,
            port,
            dir,
            extra_args: extra_args.to_vec(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while ask(port, "PING").as_deref() != Some("+PONG") {
            if let Ok(Some(status)) = process.child.try_wait() {
                return Err(std::io::Error::other(format!(
                    "redis-server exited: {status}"
                )));
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(
                    "redis-server did not answer within 10 s",
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

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Sends one command (inline form, arguments without spaces) and returns the reply: a
    /// status line (`+OK`), an error line (`-ERR …`), an integer (`:1`) or a bulk string's text.
    pub fn command(&self, command: &str) -> Option<String> {
        ask(self.port, command)
    }

    /// Kills the server (its data is lost) and waits for it to exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Freezes the server (`SIGSTOP`): it keeps its data and its connections, and answers
    /// nothing until [`resume`](Self::resume); clients time out.
    pub fn pause(&self) {
        crate::process::pause(self.child.id());
    }

    /// Lets a [`pause`](Self::pause)d server run again; it answers what it was sent meanwhile.
    pub fn resume(&self) {
        crate::process::signal(self.child.id(), "CONT");
    }

    /// Kills the server and starts a new, empty one on the same port (a cluster node comes
    /// back with its `nodes.conf`, so in its cluster).
    pub fn restart(&mut self) {
        self.kill();
        let fresh = Self::spawn(self.port, &self.extra_args).expect("redis did not restart");
        let old = std::mem::replace(self, fresh);
        // The new process uses the same directory: keep it.
        std::mem::forget(old);
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of three masters (no replicas) on free ports, created with
/// `redis-cli --cluster create`, ready (`cluster_state:ok` on every node) when returned.
///
/// Nodes time out after 1 s (`cluster-node-timeout`) and the others keep serving their slots
/// when one is down (`cluster-require-full-coverage no`), so a test can kill a master and see
/// the rest go on.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisProcess>,
}

impl RedisCluster {
    /// Starts and creates the cluster, or `None` when Redis is not installed and this is not
    /// CI. Panics under CI, or if the cluster does not come up.
    pub fn start() -> Option<RedisCluster> {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let config = format!("nodes-{port}.conf");
            let args = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &config,
                "--cluster-node-timeout",
                "1000",
                "--cluster-require-full-coverage",
                "no",
            ];
            nodes.push(RedisProcess::start_at(port, &args)?);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let created = Command::new(cli_binary())
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output();
        let created = match created {
            Ok(output) => output,
            Err(e) => return missing(&cli_binary(), e),
        };
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&created.stdout),
            String::from_utf8_lossy(&created.stderr)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_until_ok(Duration::from_secs(20));
        Some(cluster)
    }

    /// Waits until every live node says `cluster_state:ok` and knows every slot's owner.
    fn wait_until_ok(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let ok = self.nodes.iter().all(|node| {
                node.command("CLUSTER INFO").is_some_and(|info| {
                    info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
                })
            });
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not reach cluster_state:ok within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The seed URLs, comma-separated: `redis://127.0.0.1:P1,redis://127.0.0.1:P2,…`.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(RedisProcess::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The nodes, to kill or pause one.
    pub fn nodes_mut(&mut self) -> &mut [RedisProcess] {
        &mut self.nodes
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisProcess] {
        &self.nodes
    }
}
