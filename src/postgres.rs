//! Starts real PostgreSQL servers for tests and benchmarks.
//!
//! Each [`PostgresProcess`] runs `initdb` into a new temporary data directory, then the
//! `postgres` server on a free port of 127.0.0.1 with trust authentication for the superuser
//! `postgres`, waits until it accepts connections, and shuts it down (immediately) and removes
//! the directory when dropped. The binaries come from the directory named by the `PG_BIN`
//! environment variable, else from the newest `/usr/lib/postgresql/VERSION/bin` (Debian keeps
//! them off `PATH`), else from `PATH`. Run as root, the server runs as the `postgres` user, since
//! PostgreSQL refuses to run as root.
//!
//! The server is made for speed rather than durability against power loss (`fsync=off`,
//! `full_page_writes=off`, `initdb --no-sync`), but `synchronous_commit` stays on: a committed
//! transaction survives a crash of the server ([`PostgresProcess::crash_restart`]). Its log goes
//! to `postgres.log` in the temporary directory, never to the test's output; a server that does
//! not come up makes the harness panic with it.
//!
//! Outside CI missing binaries make [`PostgresProcess::start`] return `None` so that a test can
//! say it skipped; under CI (`CI` set) it panics.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::process::{Signal, free_port, missing, try_signal};

/// How long the server has to come up (crash recovery included) or to stop.
const DEADLINE: Duration = Duration::from_secs(30);

/// A PostgreSQL server, with a data directory of its own, owned by the current test; shut down
/// and removed on drop.
#[derive(Debug)]
pub struct PostgresProcess {
    child: Child,
    port: u16,
    /// The temporary directory: `data/`, the server's sockets and `postgres.log`.
    dir: PathBuf,
    /// The directory of the binaries, or `None` for `PATH`.
    bin: Option<PathBuf>,
    /// The user and group the server runs as when this process is root.
    user: Option<(u32, u32)>,
}

/// `$PG_BIN`, else the newest `/usr/lib/postgresql/*/bin` with a `postgres` in it, else `None`
/// (the binaries are on `PATH`).
fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let version = |name: &str| -> Option<Vec<u32>> {
        name.split('.').map(|part| part.parse().ok()).collect()
    };
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let version = version(entry.file_name().to_str()?)?;
            let bin = entry.path().join("bin");
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
}

/// `name` in `bin`, or bare (looked up on `PATH`) when `bin` is `None`; `psql` and `pg_isready`
/// fall back to `PATH` when `bin` lacks them.
fn program(bin: Option<&Path>, name: &str) -> PathBuf {
    match bin {
        Some(dir) if name == "initdb" || name == "postgres" || dir.join(name).is_file() => {
            dir.join(name)
        }
        _ => PathBuf::from(name),
    }
}

/// The effective uid of this process.
fn effective_uid() -> u32 {
    // SAFETY: geteuid(2) cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

/// The uid and gid of the `postgres` user, from `/etc/passwd`.
fn postgres_user() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        match fields.as_slice() {
            ["postgres", _, uid, gid, ..] => Some((uid.parse().ok()?, gid.parse().ok()?)),
            _ => None,
        }
    })
}

/// A `key=value` connection-string value, quoted when it has to be.
fn conninfo_value(value: &str) -> String {
    if !value.is_empty() && !value.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\') {
        return value.to_owned();
    }
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The server's log, in its temporary directory.
const LOG: &str = "postgres.log";

fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(LOG)).unwrap_or_else(|e| format!("(no log: {e})"))
}

/// Waits until the server accepts connections; `Err` with its log if it exits first or does not
/// within [`DEADLINE`].
fn wait_until_ready(
    child: &mut Child,
    bin: Option<&Path>,
    dir: &Path,
    port: u16,
) -> Result<(), String> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let ready = Command::new(program(bin, "pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-t", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("could not run pg_isready: {e}"));
        if ready.success() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "postgres exited ({status}); its log:\n{}",
                read_log(dir)
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "postgres did not accept connections within {} s; its log:\n{}",
                DEADLINE.as_secs(),
                read_log(dir)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl PostgresProcess {
    /// Starts a fresh server: `initdb` into a new temporary data directory, then `postgres` on
    /// a free port of 127.0.0.1; returns once it accepts connections. `None` when the binaries
    /// are missing and this is not CI. Panics under CI, or if the server does not come up
    /// within 30 s (with the server's log).
    pub fn start() -> Option<PostgresProcess> {
        let bin = bin_dir();
        let user = if effective_uid() == 0 {
            // PostgreSQL refuses to run as root. Its Debian package makes this user: without
            // it, it is most likely not installed.
            let Some(user) = postgres_user() else {
                let error = std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "running as root, and no `postgres` user in /etc/passwd to run it as",
                );
                return missing("PostgreSQL", error);
            };
            Some(user)
        } else {
            None
        };
        let dir = Self::make_dir(user);
        if let Err(e) = Self::initdb(bin.as_deref(), user, &dir) {
            let _ = std::fs::remove_dir_all(&dir);
            return missing(&program(bin.as_deref(), "initdb").display().to_string(), e);
        }
        // Another process may take the free port before the server binds it: try a new one.
        for attempt in 1.. {
            let port = free_port();
            let mut child = match Self::spawn(bin.as_deref(), user, &dir, port) {
                Ok(child) => child,
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    return missing(
                        &program(bin.as_deref(), "postgres").display().to_string(),
                        e,
                    );
                }
            };
            match wait_until_ready(&mut child, bin.as_deref(), &dir, port) {
                Ok(()) => {
                    return Some(PostgresProcess {
                        child,
                        port,
                        dir,
                        bin,
                        user,
                    });
                }
                Err(log) => {
                    crate::process::kill(&mut child);
                    if attempt < 3 && log.contains("could not bind") {
                        let _ = std::fs::remove_file(dir.join(LOG));
                        continue;
                    }
                    let _ = std::fs::remove_dir_all(&dir);
                    panic!("PostgreSQL did not start: {log}");
                }
            }
        }
        unreachable!()
    }

    /// A new directory in the temp directory (`/tmp` as root, so the `postgres` user can reach
    /// it), mode 0700, owned by `user` when given.
    fn make_dir(user: Option<(u32, u32)>) -> PathBuf {
        use std::os::unix::fs::{DirBuilderExt, chown};
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let parent = match user {
            Some(_) => PathBuf::from("/tmp"),
            None => std::env::temp_dir(),
        };
        let dir = parent.join(format!(
            "cachesweeper-postgres-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .unwrap_or_else(|e| panic!("could not create {}: {e}", dir.display()));
        if let Some((uid, gid)) = user {
            chown(&dir, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("could not chown {}: {e}", dir.display()));
        }
        dir
    }

    /// A command that runs as `user` when given, in `dir`.
    fn command_as(program: PathBuf, user: Option<(u32, u32)>, dir: &Path) -> Command {
        let mut command = Command::new(program);
        if let Some((uid, gid)) = user {
            command.uid(uid).gid(gid);
        }
        command.current_dir(dir).stdin(Stdio::null());
        command
    }

    fn initdb(bin: Option<&Path>, user: Option<(u32, u32)>, dir: &Path) -> std::io::Result<()> {
        let out = Self::command_as(program(bin, "initdb"), user, dir)
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync")
            .output()?;
        if out.status.success() {
            Ok(())
        } else {
            panic!(
                "initdb failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        }
    }

    /// Runs the postmaster itself (no wrapper, so that its pid is the child's), logging to
    /// `postgres.log`.
    fn spawn(
        bin: Option<&Path>,
        user: Option<(u32, u32)>,
        dir: &Path,
        port: u16,
    ) -> std::io::Result<Child> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(LOG))?;
        Self::command_as(program(bin, "postgres"), user, dir)
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-p", &port.to_string()])
            .arg("-k")
            .arg(dir)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "logging_collector=off"])
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=200", "-c", "shared_buffers=32MB"])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
    }

    fn log(&self) -> String {
        read_log(&self.dir)
    }

    /// The port it listens on (127.0.0.1); the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The pid of the postmaster (a new one after a restart).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A connection string for `database` in libpq's `key=value` form, which tokio-postgres
    /// takes too: `host=127.0.0.1 port=PORT user=postgres dbname=DATABASE` (no password:
    /// the server trusts local connections).
    pub fn url(&self, database: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={}",
            self.port,
            conninfo_value(database)
        )
    }

    /// Creates the database `name` (`CREATE DATABASE`, the name quoted as an identifier).
    /// Panics if it fails, e.g. when it exists.
    pub fn create_database(&self, name: &str) {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        self.psql("postgres", &format!("CREATE DATABASE {quoted}"));
    }

    /// Runs `sql` (one statement or several, each in a transaction of its own unless it says
    /// otherwise; psql's meta-commands too) on `database` through the real `psql`, as user
    /// `postgres`, and returns what it prints: rows unaligned, one a line, columns separated
    /// by `|`, no headers or command tags, trimmed. Panics with psql's stderr if a statement
    /// fails (the rest are not run).
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let mut child = self
            .psql_command(database)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("could not run psql: {e}"));
        let mut stdin = child.stdin.take().expect("piped stdin");
        // Written from another thread: psql may fill its stdout before it has read all of it.
        let (written, out) = std::thread::scope(|scope| {
            let writer = scope.spawn(move || stdin.write_all(sql.as_bytes()));
            let out = child.wait_with_output().expect("psql runs");
            (writer.join().expect("writer thread"), out)
        });
        if !out.status.success() {
            panic!(
                "psql failed ({}) on {database}:\n{}\nSQL:\n{sql}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        written.unwrap_or_else(|e| panic!("could not write SQL to psql: {e}"));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A `psql` command connected to `database` (`-X -q -At -v ON_ERROR_STOP=1`, host
    /// 127.0.0.1, the port, user `postgres`) and nothing else: add `-c SQL` or a piped stdin,
    /// for a test that runs it itself, e.g. to kill it in the middle of a transaction.
    pub fn psql_command(&self, database: &str) -> Command {
        let mut command = Command::new(program(self.bin.as_deref(), "psql"));
        command
            .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", database]);
        command
    }

    /// Stops the server with a fast shutdown (`SIGINT`: clients are disconnected, open
    /// transactions roll back, a checkpoint is written), waits for the postmaster to exit, and
    /// starts it again on the same port and data directory; returns once it accepts
    /// connections. Panics if it does not stop or come back within 30 s.
    pub fn restart(&mut self) {
        self.stop(Signal::Int);
        self.start_again();
    }

    /// Like [`restart`](Self::restart), but a crash: an immediate shutdown (`SIGQUIT`: no
    /// checkpoint), so that the server starts with crash recovery from its WAL. Committed
    /// transactions survive it.
    pub fn crash_restart(&mut self) {
        self.stop(Signal::Quit);
        self.start_again();
    }

    /// Sends `signal` to the postmaster and waits for it to exit.
    fn stop(&mut self, signal: Signal) {
        if matches!(self.child.try_wait(), Ok(None)) {
            crate::process::signal(self.child.id(), signal);
        }
        if !self.wait_for_exit(DEADLINE) {
            crate::process::kill(&mut self.child);
            panic!(
                "postgres did not stop on {signal} within {} s; its log:\n{}",
                DEADLINE.as_secs(),
                self.log()
            );
        }
    }

    /// Whether the postmaster exited (and was reaped) within `timeout`.
    fn wait_for_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return true,
                Ok(None) if Instant::now() > deadline => return false,
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    fn start_again(&mut self) {
        self.child = Self::spawn(self.bin.as_deref(), self.user, &self.dir, self.port)
            .unwrap_or_else(|e| panic!("could not start postgres again: {e}"));
        if let Err(log) =
            wait_until_ready(&mut self.child, self.bin.as_deref(), &self.dir, self.port)
        {
            panic!(
                "PostgreSQL did not start again on port {}:\n{log}",
                self.port
            );
        }
    }
}

impl Drop for PostgresProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = try_signal(self.child.id(), Signal::Quit);
            if !self.wait_for_exit(Duration::from_secs(10)) {
                crate::process::kill(&mut self.child);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
