//! Starts real Redis servers for tests and benchmarks: a standalone [`RedisProcess`], and a
//! [`RedisCluster`] of three masters.
//!
//! The `redis-server` and `redis-cli` binaries are found on `PATH` (or named by the
//! `REDIS_SERVER` and `REDIS_CLI` environment variables; Valkey's `valkey-server` and
//! `valkey-cli` work too; the cluster needs version 7, for `--cluster-port`). Each server runs on a free port of 127.0.0.1 with persistence off
//! (`--save '' --appendonly no`), in a directory of its own that goes with it, and is killed
//! when dropped. Outside CI a missing binary makes `start` return `None` so that a test can say
//! it skipped; under CI (`CI` set) it panics.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{free_port, missing};

/// What a server writes, in its directory.
const LOG_FILE: &str = "redis.log";

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
    tls: bool,
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

    /// Starts Redis serving TLS only, on a free port, with a certificate for 127.0.0.1 signed
    /// by a CA made for it ([`ca_file`](Self::ca_file)); `openssl` makes both. `None` as for
    /// [`start`](Self::start).
    pub fn start_tls() -> Option<RedisProcess> {
        let port = free_port();
        let dir = Self::dir_for(port);
        if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| make_certificates(&dir)) {
            return missing("openssl", e);
        }
        let file = |name: &str| dir.join(name).display().to_string();
        let args = [
            "--tls-port".to_owned(),
            port.to_string(),
            "--tls-cert-file".to_owned(),
            file("server.pem"),
            "--tls-key-file".to_owned(),
            file("server.key"),
            "--tls-ca-cert-file".to_owned(),
            file("ca.pem"),
            "--tls-auth-clients".to_owned(),
            "no".to_owned(),
        ];
        Self::spawn_as(0, port, &args, true).map_or_else(|e| missing(&server_binary(), e), Some)
    }

    fn dir_for(port: u16) -> PathBuf {
        std::env::temp_dir().join(format!("cachesweeper-redis-{}-{port}", std::process::id()))
    }

    fn spawn(port: u16, extra_args: &[String]) -> std::io::Result<RedisProcess> {
        Self::spawn_as(port, port, extra_args, false)
    }

    /// Runs redis-server with `--port port` (0: no plain TCP) and waits until `answer_port`
    /// answers (through `redis-cli --tls` when `tls`).
    fn spawn_as(
        port: u16,
        answer_port: u16,
        extra_args: &[String],
        tls: bool,
    ) -> std::io::Result<RedisProcess> {
        let dir = Self::dir_for(answer_port);
        std::fs::create_dir_all(&dir)?;
        // Appended to, so that a restart keeps what the first process said.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(LOG_FILE))?;
        let child = Command::new(server_binary())
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--protected-mode", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(&dir)
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut process = RedisProcess {
            child,
            port: answer_port,
            dir,
            extra_args: extra_args.to_vec(),
            tls,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !process.answers() {
            if let Ok(Some(status)) = process.child.try_wait() {
                return Err(std::io::Error::other(format!(
                    "redis-server exited: {status}; it said: {}",
                    process.log_tail()
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

    /// The last lines the server logged: why it would not start.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join(LOG_FILE)).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    fn answers(&self) -> bool {
        if !self.tls {
            return ask(self.port, "PING").as_deref() == Some("+PONG");
        }
        Command::new(cli_binary())
            .args(["--tls", "--cacert"])
            .arg(self.ca_file())
            .args(["-p", &self.port.to_string(), "PING"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "PONG")
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`, or `rediss://127.0.0.1:PORT` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The CA certificate (PEM) that signed a TLS server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Sends one command (inline form, arguments without spaces) and returns the reply: a
    /// status line (`+OK`), an error line (`-ERR …`), an integer (`:1`) or a bulk string's text.
    pub fn command(&self, command: &str) -> Option<String> {
        ask(self.port, command)
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

    /// Kills the server and starts a new, empty one on the same port (a cluster node comes
    /// back with its `nodes.conf`, so in its cluster).
    pub fn restart(&mut self) {
        self.kill();
        let plain_port = if self.tls { 0 } else { self.port };
        let fresh = Self::spawn_as(plain_port, self.port, &self.extra_args, self.tls)
            .expect("redis did not restart");
        let old = std::mem::replace(self, fresh);
        // The new process uses the same directory: keep it.
        std::mem::forget(old);
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Makes `ca.pem` and `server.pem`/`server.key` (for IP 127.0.0.1, signed by the CA) in `dir`.
fn make_certificates(dir: &std::path::Path) -> std::io::Result<()> {
    let openssl = |args: &[&str]| -> std::io::Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    };
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )?;
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=cachesweeper test CA",
    ])?;
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ])?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ])
}

/// A Redis Cluster of three masters (and, with [`start_with_replicas`](Self::start_with_replicas),
/// replicas of each) on free ports, created with `redis-cli --cluster create`, ready
/// (`cluster_state:ok` on every node, replicas in sync) when returned.
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
        Self::start_with_replicas(0)
    }

    /// [`start`](Self::start) with `replicas` replicas of each master: `3 × (1 + replicas)`
    /// nodes.
    pub fn start_with_replicas(replicas: usize) -> Option<RedisCluster> {
        let mut nodes = Vec::new();
        for _ in 0..3 * (1 + replicas) {
            let port = free_port();
            // Named, because the default (the port plus 10,000) may be another server's port,
            // or past 65,535, and Redis then refuses to start.
            let bus_port = free_port().to_string();
            let config = format!("nodes-{port}.conf");
            let args = [
                "--cluster-port",
                &bus_port,
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
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
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
        // Every replica attached and in sync, and listed as one by `CLUSTER SLOTS`' source.
        let deadline = Instant::now() + Duration::from_secs(20);
        let in_sync = |cluster: &RedisCluster| {
            let synced = cluster
                .nodes
                .iter()
                .filter(|node| {
                    node.command("INFO replication").is_some_and(|info| {
                        info.contains("role:slave") && info.contains("master_link_status:up")
                    })
                })
                .count();
            let listed = cluster
                .topology()
                .iter()
                .filter(|(_, _, flags, _)| flags.contains("slave"))
                .count();
            synced == 3 * replicas && listed == 3 * replicas
        };
        while !in_sync(&cluster) {
            assert!(Instant::now() < deadline, "the replicas did not sync");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(cluster)
    }

    /// `CLUSTER NODES` as one node sees it: `(id, port, flags, master id)` per node.
    fn topology(&self) -> Vec<(String, u16, String, String)> {
        let live = self
            .nodes
            .iter()
            .find_map(|node| {
                node.command("CLUSTER NODES")
                    .filter(|t| !t.starts_with('-'))
            })
            .expect("a live node");
        live.lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let port = fields.get(1)?.split(['@', ':']).nth(1)?.parse().ok()?;
                Some((
                    fields.first()?.to_string(),
                    port,
                    fields.get(2)?.to_string(),
                    fields.get(3)?.to_string(),
                ))
            })
            .collect()
    }

    /// The index among [`nodes`](Self::nodes) of the master that serves `key`, and of one of
    /// its replicas.
    pub fn master_and_replica(&self, key: &str) -> (usize, usize) {
        let reply = self.nodes[0]
            .command(&format!("CLUSTER KEYSLOT {key}"))
            .expect("CLUSTER KEYSLOT");
        let slot: u16 = reply.trim_start_matches(':').parse().expect("a slot");
        let text = self.nodes[0]
            .command("CLUSTER NODES")
            .expect("CLUSTER NODES");
        let master_id = text
            .lines()
            .find(|line| {
                line.split_whitespace().skip(8).any(|range| {
                    let mut ends = range.split('-').filter_map(|n| n.parse::<u16>().ok());
                    match (ends.next(), ends.next()) {
                        (Some(a), Some(b)) => (a..=b).contains(&slot),
                        (Some(a), None) => a == slot,
                        _ => false,
                    }
                })
            })
            .and_then(|line| line.split_whitespace().next())
            .expect("a master for the slot")
            .to_owned();
        let topology = self.topology();
        let index_of = |port: u16| {
            self.nodes
                .iter()
                .position(|n| n.port() == port)
                .expect("a node of ours")
        };
        let master = topology
            .iter()
            .find(|(id, ..)| *id == master_id)
            .map(|(_, port, ..)| index_of(*port))
            .expect("the master's port");
        let replica = topology
            .iter()
            .find(|(.., of)| *of == master_id)
            .map(|(_, port, ..)| index_of(*port))
            .expect("a replica of the master");
        (master, replica)
    }

    /// Makes node `replica` the master of its master's slots at once (`CLUSTER FAILOVER
    /// TAKEOVER`: no agreement with the master, which may be dead), and waits until the live
    /// nodes serve every slot again.
    pub fn promote(&self, replica: usize) {
        let answer = self.nodes[replica].command("CLUSTER FAILOVER TAKEOVER");
        assert_eq!(answer.as_deref(), Some("+OK"), "CLUSTER FAILOVER TAKEOVER");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let promoted = self.nodes[replica]
                .command("INFO replication")
                .is_some_and(|info| info.contains("role:master"));
            let served = self
                .nodes
                .iter()
                .filter(|n| n.command("PING").is_some())
                .all(|node| {
                    node.command("CLUSTER INFO")
                        .is_some_and(|info| info.contains("cluster_state:ok"))
                });
            if promoted && served {
                return;
            }
            assert!(Instant::now() < deadline, "the replica was not promoted");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The seed URLs of the nodes that answer.
    pub fn live_urls(&self) -> String {
        self.nodes
            .iter()
            .filter(|n| n.command("PING").is_some())
            .map(RedisProcess::url)
            .collect::<Vec<_>>()
            .join(",")
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
