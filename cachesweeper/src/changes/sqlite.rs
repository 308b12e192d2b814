//! SQLite as the source of invalidations (feature `sqlite`, on rusqlite).
//!
//! Triggers on each tracked table log every changed record (and the parents it touches, from
//! the old and the new row) into `cachesweeper_changes`, in the writing transaction: a change
//! and the record of it commit or roll back together. Then:
//! - a [`Connection`] of this process applies the log after each of its commits, before the
//!   commit call returns (SQLite's WAL hook, which runs once the commit is durable and the write
//!   lock released), so a response to a write already reflects it;
//! - a follower thread applies what other connections and processes committed (`sqlite3` in a
//!   shell, another service, a migration), every poll interval;
//! - progress is kept in `cachesweeper_applied`, so changes committed by a process that died
//!   before applying them are applied when any process next opens the log, and rows applied
//!   and older than the retention are pruned.

use std::ffi::{c_char, c_int, c_void};
use std::ops::{Deref, DerefMut};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{OptionalExtension, ffi};

use super::{Table, Tracked, apply};
use crate::{Error, Result, Sweeper, lock};

/// The log, and how far it has been applied (by any process: the cache is shared).
const LOG_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cachesweeper_changes (
    id    INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    key   TEXT NOT NULL,
    at    INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER))
);
CREATE TABLE IF NOT EXISTS cachesweeper_applied (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    through INTEGER NOT NULL
);
INSERT OR IGNORE INTO cachesweeper_applied (id, through) VALUES (1, 0);
";

/// How many log rows one read takes.
const READ_BATCH: i64 = 10_000;

/// How long a connection of the log waits for another's lock before `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// SQLite's default automatic checkpoint (pages of WAL), which a WAL hook of our own replaces
/// and so must do itself.
const AUTOCHECKPOINT_PAGES: c_int = 1_000;

/// How often the follower records its progress and prunes.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// The change log of one SQLite database file: it installs or checks the triggers, applies this
/// process's commits before they return, and follows everyone else's.
///
/// ```no_run
/// # use cachesweeper::{Sweeper, Sweepable, changes::sqlite::ChangeLog};
/// #[derive(Sweepable)]
/// #[sweeper(table = "articles")]
/// struct Article { id: i64 }
///
/// #[derive(Sweepable)]
/// #[sweeper(table = "comments")]
/// struct Comment { id: i64, #[sweeper(touches = Article)] article_id: i64 }
///
/// # fn main() -> cachesweeper::Result<()> {
/// let sweeper = Sweeper::embedded();
/// let log = ChangeLog::builder("blog.sqlite")
///     .track::<Article>()
///     .track::<Comment>()
///     .install(&sweeper)?; // or .open(&sweeper) where a migration installed the triggers
/// let conn = log.connect()?; // a rusqlite::Connection that applies its own commits
/// conn.execute("UPDATE comments SET body = 'edited' WHERE id = 1", [])
///     .map_err(cachesweeper::changes::sqlite::database_error)?;
/// // The comment and its article are invalidated: the next page shows the edit.
/// # Ok(()) }
/// ```
pub struct ChangeLog {
    shared: Arc<Shared>,
    follower: Option<Follower>,
}

/// Settings of a [`ChangeLog`]: the database, the tracked models and the follower's pace.
#[derive(Debug, Clone)]
pub struct ChangeLogBuilder {
    path: PathBuf,
    tables: Vec<Table>,
    poll: Duration,
    retention: Duration,
}

impl ChangeLog {
    /// A change log of the SQLite database file at `path` (it must be a file: the log needs
    /// WAL mode, which in-memory databases do not have).
    pub fn builder(path: impl AsRef<Path>) -> ChangeLogBuilder {
        ChangeLogBuilder {
            path: path.as_ref().to_owned(),
            tables: Vec::new(),
            poll: Duration::from_millis(10),
            retention: Duration::from_secs(600),
        }
    }

    /// A new connection to the database whose commits are applied to the cache before the
    /// commit returns (the statement's, in autocommit mode; the transaction's otherwise). It
    /// dereferences to `rusqlite::Connection`. Do not replace its WAL hook (`wal_hook`,
    /// `PRAGMA wal_autocheckpoint`): that hook is what applies the commits (and checkpoints).
    pub fn connect(&self) -> Result<Connection> {
        let conn = open_wal(&self.shared.path)?;
        let hook = Box::new(Hook {
            shared: Arc::clone(&self.shared),
        });
        // SAFETY: `conn.handle()` is this connection's open handle; the hook's data is the boxed
        // `Hook`, which `Connection` keeps until its `Drop` has unregistered the hook.
        unsafe {
            ffi::sqlite3_wal_hook(
                conn.handle(),
                Some(committed),
                (&raw const *hook).cast_mut().cast::<c_void>(),
            );
        }
        Ok(Connection { conn, hook })
    }

    /// Applies what has been committed and not yet applied by this process, now (the follower
    /// does it every poll interval); returns how many log rows it applied.
    pub fn catch_up(&self) -> Result<usize> {
        self.shared.catch_up()
    }

    /// How many log rows this process has applied since the log was opened.
    pub fn applied(&self) -> u64 {
        self.shared.applied.load(Ordering::Relaxed)
    }
}

impl Drop for ChangeLog {
    fn drop(&mut self) {
        if let Some(follower) = self.follower.take() {
            follower.stop.store(true, Ordering::Relaxed);
            follower.thread.thread().unpark();
            let _ = follower.thread.join();
        }
    }
}

impl ChangeLogBuilder {
    /// Tracks model `T`: changes to its table (`#[sweeper(table = "...")]`) invalidate the
    /// changed record and the parents it touches, in the old row and in the new.
    pub fn track<T: Tracked>(mut self) -> Self {
        self.tables.push(T::TABLE);
        self
    }

    /// How often the follower looks for changes committed elsewhere (default 10 ms): the lag
    /// of a foreign write is about this plus one raise.
    pub fn poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// How long applied log rows are kept (default 10 minutes) for processes that apply them
    /// into a cache of their own and fell behind.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// The SQL that installs the log and the triggers, for a migration tool: what
    /// [`install`](Self::install) runs. [`open`](Self::open) checks that it has been run.
    pub fn migration(&self) -> String {
        let mut sql = LOG_SCHEMA.to_owned();
        for table in &self.tables {
            for event in Event::ALL {
                sql.push_str(&format!(
                    "DROP TRIGGER IF EXISTS \"{}\";\n",
                    quoted(&event.trigger(table))
                ));
                sql.push_str(&event.create_trigger(table));
                sql.push_str(";\n");
            }
        }
        sql
    }

    /// Installs (or brings up to date) the log and the triggers, in one transaction, then
    /// [`open`](Self::open)s the log. A trigger already as it should be is left alone: a
    /// schema change would make every other connection to the file prepare its statements
    /// again.
    pub fn install(self, sweeper: &Sweeper) -> Result<ChangeLog> {
        let mut conn = open_wal(&self.path)?;
        // IMMEDIATE: two processes installing at once take turns, the second finding the
        // first's triggers.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(database_error)?;
        tx.execute_batch(LOG_SCHEMA).map_err(database_error)?;
        for table in &self.tables {
            for event in Event::ALL {
                let name = event.trigger(table);
                let wanted = event.create_trigger(table);
                if trigger_sql(&tx, &name)?.as_deref() != Some(wanted.as_str()) {
                    tx.execute_batch(&format!(
                        "DROP TRIGGER IF EXISTS \"{}\"; {wanted};",
                        quoted(&name)
                    ))
                    .map_err(database_error)?;
                }
            }
        }
        tx.commit().map_err(database_error)?;
        self.open(sweeper)
    }

    /// Opens the log: checks that every tracked table has its triggers (an
    /// [`Error::Untracked`] naming the first that does not), applies what was committed and
    /// not yet applied by any process (one that died after its commit, say), and starts the
    /// follower.
    pub fn open(self, sweeper: &Sweeper) -> Result<ChangeLog> {
        let conn = open_wal(&self.path)?;
        self.check(&conn)?;
        let through: i64 = conn
            .query_row(
                "SELECT through FROM cachesweeper_applied WHERE id = 1",
                [],
                |row| row.get(0),
            )
            .map_err(database_error)?;
        let shared = Arc::new(Shared {
            sweeper: sweeper.clone(),
            path: self.path,
            retention: self.retention,
            reader: Mutex::new(Reader { conn, through }),
            applied: AtomicU64::new(0),
        });
        shared.catch_up()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, stop, poll) = (Arc::clone(&shared), Arc::clone(&stop), self.poll);
            std::thread::Builder::new()
                .name("cachesweeper-sqlite-follower".into())
                .spawn(move || follow(&shared, &stop, poll))
                .map_err(|error| Error::Config(format!("cannot start the follower: {error}")))?
        };
        Ok(ChangeLog {
            shared,
            follower: Some(Follower { stop, thread }),
        })
    }

    /// Whether the log and every tracked table's triggers are installed as this build would
    /// install them.
    fn check(&self, conn: &rusqlite::Connection) -> Result<()> {
        for log_table in ["cachesweeper_changes", "cachesweeper_applied"] {
            if !table_exists(conn, log_table)? {
                return Err(untracked(
                    log_table,
                    "the change log's table is missing: install the log (ChangeLogBuilder::install, or the SQL of ChangeLogBuilder::migration)",
                ));
            }
        }
        for table in &self.tables {
            if !table_exists(conn, table.name)? {
                return Err(untracked(table.name, "no such table"));
            }
            let columns: Vec<String> = conn
                .prepare(&format!("PRAGMA table_info(\"{}\")", quoted(table.name)))
                .and_then(|mut statement| {
                    statement
                        .query_map([], |row| row.get::<_, String>(1))?
                        .collect()
                })
                .map_err(database_error)?;
            let wanted = std::iter::once(table.key_column)
                .chain(table.parents.iter().map(|parent| parent.column));
            for column in wanted {
                if !columns.iter().any(|have| have == column) {
                    return Err(untracked(
                        table.name,
                        &format!(
                            "it has no column `{column}`, which the model's key or a `touches` field names"
                        ),
                    ));
                }
            }
            for event in Event::ALL {
                let name = event.trigger(table);
                match trigger_sql(conn, &name)? {
                    None => {
                        return Err(untracked(
                            table.name,
                            &format!(
                                "it has no trigger `{name}`, so its changes would not reach the cache: install it (ChangeLogBuilder::install, or the SQL of ChangeLogBuilder::migration)"
                            ),
                        ));
                    }
                    Some(sql) if sql != event.create_trigger(table) => {
                        return Err(untracked(
                            table.name,
                            &format!(
                                "its trigger `{name}` is not the one this model needs (its model name, key or parents changed): install it again"
                            ),
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }
}

/// A connection to the log's database whose commits are applied before they return: see
/// [`ChangeLog::connect`].
pub struct Connection {
    conn: rusqlite::Connection,
    hook: Box<Hook>,
}

impl Deref for Connection {
    type Target = rusqlite::Connection;

    fn deref(&self) -> &rusqlite::Connection {
        &self.conn
    }
}

impl DerefMut for Connection {
    fn deref_mut(&mut self) -> &mut rusqlite::Connection {
        &mut self.conn
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // SAFETY: the handle is still open (`conn` is dropped after this); from now on SQLite
        // no longer calls into `hook`, which is freed after it.
        unsafe {
            ffi::sqlite3_wal_hook(self.conn.handle(), None, std::ptr::null_mut());
        }
        let _ = &self.hook;
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("path", &self.hook.shared.path)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ChangeLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeLog")
            .field("path", &self.shared.path)
            .field("applied", &self.applied())
            .finish_non_exhaustive()
    }
}

/// What a connection's WAL hook reaches.
struct Hook {
    shared: Arc<Shared>,
}

/// SQLite's WAL hook: called on the committing thread once a commit is durable and its write
/// lock released, before the commit call returns. rusqlite's own `wal_hook` takes a plain `fn`
/// with no way to reach the log, hence the raw registration.
unsafe extern "C" fn committed(
    hook: *mut c_void,
    db: *mut ffi::sqlite3,
    database: *const c_char,
    pages: c_int,
) -> c_int {
    // SAFETY: registered by `ChangeLog::connect` with its boxed `Hook`, which lives until the
    // connection's `Drop` unregisters it.
    let hook = unsafe { &*hook.cast_const().cast::<Hook>() };
    // A failed raise is retried by the sweeper and, until it lands, nothing is served under the
    // record's version; the commit itself stands, so it is not reported as the commit's error.
    let applied = std::panic::catch_unwind(AssertUnwindSafe(|| hook.shared.catch_up()));
    match applied {
        Ok(Err(error)) => {
            tracing::warn!(%error, "cachesweeper: applying this commit's changes failed; retrying")
        }
        Err(_) => tracing::error!("cachesweeper: applying this commit's changes panicked"),
        Ok(Ok(_)) => {}
    }
    if pages >= AUTOCHECKPOINT_PAGES {
        // SAFETY: the handle and database name SQLite passed to this hook.
        unsafe { ffi::sqlite3_wal_checkpoint(db, database) };
    }
    ffi::SQLITE_OK
}

/// What the connections and the follower of one log share.
struct Shared {
    sweeper: Sweeper,
    path: PathBuf,
    retention: Duration,
    /// One connection reads the log, for the hooks and the follower alike, so that the log is
    /// applied in order and each row once.
    reader: Mutex<Reader>,
    applied: AtomicU64,
}

struct Reader {
    conn: rusqlite::Connection,
    /// The last log row applied (each one up to it raised without error).
    through: i64,
}

impl Shared {
    /// Applies every log row after the last one applied, in batches. On an error the position
    /// stays where it was, so those rows are applied again next time (the sweeper also retries
    /// the counters that failed); raising a counter twice costs a few misses, never a stale
    /// page.
    fn catch_up(&self) -> Result<usize> {
        let mut reader = lock(&self.reader);
        let mut total = 0;
        loop {
            let rows = read_after(&reader.conn, reader.through)?;
            let Some(&(last, _)) = rows.last() else {
                break;
            };
            if total == 0 && rows[0].0 > reader.through + 1 && reader.through > 0 {
                // Rows were pruned before this process applied them: it fell further behind
                // than the retention. A shared cache got them from another process; a cache of
                // this process's own did not.
                tracing::error!(
                    from = reader.through + 1,
                    to = rows[0].0 - 1,
                    "cachesweeper: change log rows were pruned before this process applied them"
                );
            }
            let count = rows.len();
            let changes: Vec<(String, String)> =
                rows.into_iter().map(|(_, change)| change).collect();
            apply(&self.sweeper, &changes)?;
            reader.through = last;
            self.applied.fetch_add(count as u64, Ordering::Relaxed);
            total += count;
            if (count as i64) < READ_BATCH {
                break;
            }
        }
        Ok(total)
    }

    /// The last log row applied.
    fn through(&self) -> i64 {
        lock(&self.reader).through
    }
}

/// The follower thread of a log.
struct Follower {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// Applies what others committed, every `poll`, until `stop`; records its progress every
/// [`PROGRESS_EVERY`].
fn follow(shared: &Shared, stop: &AtomicBool, poll: Duration) {
    let mut progress = Progress::new(shared);
    let mut progress_at = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::park_timeout(poll);
        if let Err(error) = shared.catch_up() {
            tracing::warn!(%error, "cachesweeper: applying the change log failed; retrying");
        }
        if progress_at.elapsed() >= PROGRESS_EVERY {
            progress_at = Instant::now();
            progress.record(shared);
        }
    }
    progress.record(shared);
}

/// How far the log is applied, as last written to `cachesweeper_applied`, and the connection it
/// is written with: not the reader's, so that waiting for the database's write lock never
/// holds up the hooks that apply commits.
struct Progress {
    conn: Option<rusqlite::Connection>,
    recorded: i64,
}

impl Progress {
    fn new(shared: &Shared) -> Progress {
        Progress {
            conn: None,
            recorded: shared.through(),
        }
    }

    /// Records how far the log is applied, for a process that opens it next, and prunes the
    /// rows applied longer ago than the retention. A failure is logged and tried again later:
    /// it costs a restarted process some changes applied twice.
    fn record(&mut self, shared: &Shared) {
        let through = shared.through();
        if through == self.recorded {
            return;
        }
        let result = self.conn(&shared.path).and_then(|conn| {
            conn.execute(
                "UPDATE cachesweeper_applied SET through = max(through, ?1) WHERE id = 1",
                [through],
            )
            .and_then(|_| {
                conn.execute(
                    "DELETE FROM cachesweeper_changes
                     WHERE id <= (SELECT through FROM cachesweeper_applied WHERE id = 1)
                       AND at < CAST(strftime('%s', 'now') AS INTEGER) - ?1",
                    [shared.retention.as_secs() as i64],
                )
            })
            .map_err(database_error)
        });
        match result {
            Ok(_) => self.recorded = through,
            Err(error) => {
                tracing::warn!(%error, "cachesweeper: recording the change log's progress failed");
            }
        }
    }

    fn conn(&mut self, path: &Path) -> Result<&rusqlite::Connection> {
        if self.conn.is_none() {
            self.conn = Some(open_wal(path)?);
        }
        Ok(self.conn.as_ref().expect("just opened"))
    }
}

/// The log rows after `through`, at most [`READ_BATCH`], in order: (id, (model, key)).
fn read_after(conn: &rusqlite::Connection, through: i64) -> Result<Vec<(i64, (String, String))>> {
    conn.prepare_cached(
        "SELECT id, model, key FROM cachesweeper_changes WHERE id > ?1 ORDER BY id LIMIT ?2",
    )
    .and_then(|mut statement| {
        statement
            .query_map([through, READ_BATCH], |row| {
                Ok((row.get(0)?, (row.get(1)?, row.get(2)?)))
            })?
            .collect()
    })
    .map_err(database_error)
}

/// The statements a trigger is installed for.
#[derive(Debug, Clone, Copy)]
enum Event {
    Insert,
    Update,
    Delete,
}

impl Event {
    const ALL: [Event; 3] = [Event::Insert, Event::Update, Event::Delete];

    fn trigger(self, table: &Table) -> String {
        let event = match self {
            Event::Insert => "insert",
            Event::Update => "update",
            Event::Delete => "delete",
        };
        format!("cachesweeper_{}_{event}", table.name)
    }

    /// The trigger: the record and each parent it touches, from the rows the statement leaves
    /// (the new row, the old, or both for an update: a comment moved to another article
    /// invalidates both), each once, skipping absent parents.
    fn create_trigger(self, table: &Table) -> String {
        let (event, rows): (&str, &[&str]) = match self {
            Event::Insert => ("INSERT", &["NEW"]),
            Event::Update => ("UPDATE", &["OLD", "NEW"]),
            Event::Delete => ("DELETE", &["OLD"]),
        };
        let records = std::iter::once(((table.model)(), table.key_column)).chain(
            table
                .parents
                .iter()
                .map(|parent| ((parent.model)(), parent.column)),
        );
        let mut selects = Vec::new();
        for (model, column) in records {
            for row in rows {
                selects.push(format!(
                    "SELECT '{}', {row}.\"{column}\" WHERE {row}.\"{column}\" IS NOT NULL",
                    model.replace('\'', "''"),
                    column = quoted(column),
                ));
            }
        }
        format!(
            "CREATE TRIGGER \"{name}\" AFTER {event} ON \"{table}\" BEGIN INSERT INTO cachesweeper_changes (model, key) {selects}; END",
            name = quoted(&self.trigger(table)),
            table = quoted(table.name),
            selects = selects.join(" UNION "),
        )
    }
}

/// An identifier's text inside double quotes.
fn quoted(identifier: &str) -> String {
    identifier.replace('"', "\"\"")
}

/// The SQL of the trigger named `name`, if there is one.
fn trigger_sql(conn: &rusqlite::Connection, name: &str) -> Result<Option<String>> {
    conn.query_row(
        "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?1",
        [name],
        |row| row.get(0),
    )
    .optional()
    .map_err(database_error)
}

fn table_exists(conn: &rusqlite::Connection, name: &str) -> Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
        [name],
        |row| row.get(0),
    )
    .map_err(database_error)
}

/// Opens `path` in WAL mode (the log's hook and its readers' isolation need it).
fn open_wal(path: &Path) -> Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path).map_err(database_error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(database_error)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(database_error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Config(format!(
            "the change log needs a SQLite database file in WAL mode, and {} is in {mode} mode (an in-memory database cannot be)",
            path.display()
        )));
    }
    Ok(conn)
}

fn untracked(table: &str, problem: &str) -> Error {
    Error::Untracked {
        table: table.to_owned(),
        problem: problem.to_owned(),
    }
}

/// A rusqlite error as the crate's [`Error::Database`].
pub fn database_error(error: rusqlite::Error) -> Error {
    Error::Database {
        source: Arc::new(error),
    }
}
