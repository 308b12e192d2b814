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
use std::ops::Deref;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rusqlite::types::ValueRef;
use rusqlite::{OptionalExtension, ffi};

use super::{
    LOG_TABLE_MISSING, PROGRESS_EVERY, Purging, Record, Table, Tracked, apply, report, untracked,
};
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

/// How long recording the progress waits for the write lock: briefly, so that a busy writer
/// elsewhere never holds up the follower's applying (it is tried again at the next interval).
const PROGRESS_BUSY_TIMEOUT: Duration = Duration::from_millis(20);

/// SQLite's default automatic checkpoint (pages of WAL), which a WAL hook of our own replaces
/// and so must do itself.
const AUTOCHECKPOINT_PAGES: c_int = 1_000;

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
/// // Tracks every model that declares its table: Article and Comment.
/// let log = ChangeLog::builder("blog.sqlite").install(&sweeper)?; // or .open(&sweeper)
/// let conn = log.connect()?; // a rusqlite::Connection that applies its own commits
/// conn.execute("UPDATE comments SET body = 'edited' WHERE id = 1", [])
///     .map_err(cachesweeper::changes::sqlite::database_error)?;
/// // The comment and its article are invalidated: the next page shows the edit.
/// # Ok(()) }
/// ```
///
/// The follower runs as long as the log or any of its connections does.
pub struct ChangeLog {
    shared: Arc<Shared>,
}

/// Settings of a [`ChangeLog`]: the database, the tracked models and the follower's pace.
#[derive(Debug, Clone)]
pub struct ChangeLogBuilder {
    path: PathBuf,
    database: String,
    /// Tracked besides the registered models of `database`: generic models.
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
            database: String::new(),
            tables: Vec::new(),
            poll: Duration::from_millis(10),
            retention: Duration::from_secs(600),
        }
    }

    /// A new connection to the database whose commits are applied to the cache before the
    /// commit returns (the transaction's, or an autocommit statement's that runs to its end).
    /// It dereferences to `rusqlite::Connection`, and has the `&mut self` methods
    /// (`transaction`, `savepoint`) itself. It runs with `PRAGMA recursive_triggers = ON`, so
    /// that a row `REPLACE` deletes is logged too.
    pub fn connect(&self) -> Result<Connection> {
        let conn = open_wal(&self.shared.path)?;
        conn.execute_batch("PRAGMA recursive_triggers = ON")
            .map_err(database_error)?;
        let hook = Box::new(Hook {
            shared: Arc::clone(&self.shared),
            replaced: AtomicBool::new(false),
        });
        let conn = Connection { conn, hook };
        conn.register_hook();
        Ok(conn)
    }

    /// Applies what has been committed and not yet applied by this process, now (the follower
    /// does it every poll interval); returns how many log rows it applied.
    pub fn catch_up(&self) -> Result<usize> {
        self.shared.catch_up_and_record(Purging::Awaited)
    }

    /// How many log rows this process has applied since the log was opened.
    pub fn applied(&self) -> u64 {
        self.shared.applied.load(Ordering::Relaxed)
    }
}

impl ChangeLogBuilder {
    /// The log tracks every model of this database (`#[sweeper(database = "...")]`; by
    /// default `""`, the database of every model that names none): an application with two
    /// databases gives the models of one of them a name, and its log this name.
    pub fn database(mut self, database: impl Into<String>) -> Self {
        self.database = database.into();
        self
    }

    /// Tracks model `T` too. Every model of the log's database that declares its table is
    /// tracked already (`#[derive(Sweepable)]` registers it): this is for a generic model,
    /// which the derive cannot register, one instantiation at a time.
    pub fn track<T: Tracked>(mut self) -> Self {
        self.tables.push(T::TABLE);
        self
    }

    /// The tables the log tracks (see [`super::tables`]).
    fn tables(&self) -> Result<Vec<Table>> {
        super::tables(&self.database, &self.tables)
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
    pub fn migration(&self) -> Result<String> {
        let mut sql = LOG_SCHEMA.to_owned();
        for table in &self.tables()? {
            for event in Event::ALL {
                sql.push_str(&format!(
                    "DROP TRIGGER IF EXISTS \"{}\";\n",
                    quoted(&event.trigger(table))
                ));
                sql.push_str(&event.create_trigger(table));
                sql.push_str(";\n");
            }
        }
        Ok(sql)
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
        for table in &self.tables()? {
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
            progress: Mutex::new(Progress {
                conn: None,
                recorded: through,
                recorded_at: None,
                history: std::collections::VecDeque::new(),
            }),
            applied: AtomicU64::new(0),
            stop: Arc::new(AtomicBool::new(false)),
            follower: std::sync::OnceLock::new(),
        });
        // What was committed and not applied before (a process that died after its commit):
        // a cache that cannot take it now does not keep the application from starting; the
        // keys are retried, and meanwhile not served from here.
        if let Err(error) = shared.catch_up(Purging::Awaited) {
            report(&error);
        }
        shared.record_progress(Record::Now);
        let thread = {
            let (weak, stop, poll) = (Arc::downgrade(&shared), Arc::clone(&shared.stop), self.poll);
            std::thread::Builder::new()
                .name("cachesweeper-sqlite-follower".into())
                .spawn(move || follow(&weak, &stop, poll))
                .map_err(|error| Error::Config(format!("cannot start the follower: {error}")))?
        };
        let _ = shared.follower.set(thread.thread().clone());
        Ok(ChangeLog { shared })
    }

    /// Whether the log and every tracked table's triggers are installed as this build would
    /// install them.
    fn check(&self, conn: &rusqlite::Connection) -> Result<()> {
        for log_table in ["cachesweeper_changes", "cachesweeper_applied"] {
            if !table_exists(conn, log_table)? {
                return Err(untracked(log_table, LOG_TABLE_MISSING));
            }
        }
        for table in &self.tables()? {
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
///
/// It dereferences to `rusqlite::Connection`, but not mutably: a `&mut` to the inner
/// connection could swap the hooked handle out of this one. `transaction`,
/// `transaction_with_behavior` and `savepoint` are here instead.
pub struct Connection {
    conn: rusqlite::Connection,
    hook: Box<Hook>,
}

impl Connection {
    /// `rusqlite::Connection::transaction`.
    pub fn transaction(&mut self) -> rusqlite::Result<rusqlite::Transaction<'_>> {
        self.restore_hook();
        self.conn.transaction()
    }

    /// `rusqlite::Connection::transaction_with_behavior`.
    pub fn transaction_with_behavior(
        &mut self,
        behavior: rusqlite::TransactionBehavior,
    ) -> rusqlite::Result<rusqlite::Transaction<'_>> {
        self.restore_hook();
        self.conn.transaction_with_behavior(behavior)
    }

    /// `rusqlite::Connection::savepoint`.
    pub fn savepoint(&mut self) -> rusqlite::Result<rusqlite::Savepoint<'_>> {
        self.restore_hook();
        self.conn.savepoint()
    }

    /// Registers the hook that applies this connection's commits; returns the hook data it
    /// replaced.
    fn register_hook(&self) -> *mut c_void {
        let ours = (&raw const *self.hook).cast_mut().cast::<c_void>();
        // SAFETY: `conn.handle()` is this connection's open handle (no `&mut` to `conn` is
        // ever handed out, so it cannot be swapped for another); the hook's data is the boxed
        // `Hook`, which lives until `Drop` has unregistered it.
        unsafe { ffi::sqlite3_wal_hook(self.conn.handle(), Some(committed), ours) }
    }

    /// Registers the hook again, before each use, and says once if something had replaced it
    /// (`PRAGMA wal_autocheckpoint` or `wal_hook` on this connection: the commits since were
    /// applied by the follower, within its lag, not before they returned).
    fn restore_hook(&self) {
        let ours = (&raw const *self.hook).cast_mut().cast::<c_void>();
        if self.register_hook() != ours && !self.hook.replaced.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "cachesweeper: this connection's WAL hook was replaced (PRAGMA wal_autocheckpoint or wal_hook); restored: the commits in between were applied by the follower"
            );
        }
    }
}

impl Deref for Connection {
    type Target = rusqlite::Connection;

    fn deref(&self) -> &rusqlite::Connection {
        self.restore_hook();
        &self.conn
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // SAFETY: the handle is still open (`conn` is dropped after this); from now on SQLite
        // no longer calls into `hook`, which is freed after it.
        unsafe {
            ffi::sqlite3_wal_hook(self.conn.handle(), None, std::ptr::null_mut());
        }
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
    /// Whether a replaced hook has been reported for this connection.
    replaced: AtomicBool,
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
    let applied = std::panic::catch_unwind(AssertUnwindSafe(|| {
        hook.shared.catch_up_and_record(Purging::Awaited)
    }));
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
    progress: Mutex<Progress>,
    applied: AtomicU64,
    /// Tells the follower thread to end; set when the last log or connection is gone.
    stop: Arc<AtomicBool>,
    follower: std::sync::OnceLock<std::thread::Thread>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.record_progress(Record::Now);
        self.stop.store(true, Ordering::Relaxed);
        if let Some(follower) = self.follower.get() {
            follower.unpark();
        }
    }
}

struct Reader {
    conn: rusqlite::Connection,
    /// The last log row applied: raised, or, where the raise failed, handed to the sweeper's
    /// retry thread (until which this process serves nothing under that record's version).
    through: i64,
}

impl Shared {
    /// Applies every log row after the last one applied, in batches, and returns how many.
    /// A batch whose raise fails is applied all the same: its keys are the sweeper's to retry
    /// (and until then not served from this process), and the progress recorded for other
    /// processes stays behind them (see [`record_progress`](Self::record_progress)). The first
    /// error is returned once every row has been applied.
    fn catch_up(&self, purging: Purging) -> Result<usize> {
        let (applied, purge) = self.apply_new();
        crate::io::block_on(purging.finish(purge));
        applied
    }

    /// [`catch_up`](Self::catch_up) under the log's lock, with the purge of what it raised
    /// queued before the lock goes.
    fn apply_new(&self) -> (Result<usize>, crate::purge::Wait) {
        let mut raised = Vec::new();
        let mut reader = lock(&self.reader);
        let applied = self.apply_locked(&mut reader, &mut raised);
        let purge = self.sweeper.purge(&raised);
        drop(reader);
        (applied, purge)
    }

    fn apply_locked(&self, reader: &mut Reader, raised: &mut Vec<String>) -> Result<usize> {
        let (mut total, mut first_error) = (0, None);
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
                rows.into_iter().filter_map(|(_, change)| change).collect();
            if let Err(error) = crate::io::block_on(apply(&self.sweeper, &changes, raised)) {
                first_error.get_or_insert(error);
            }
            reader.through = last;
            self.applied.fetch_add(count as u64, Ordering::Relaxed);
            total += count;
            if (count as i64) < READ_BATCH {
                break;
            }
        }
        first_error.map_or(Ok(total), Err)
    }

    /// [`catch_up`](Self::catch_up), then records the progress: a bulk change's at once,
    /// others' when due.
    fn catch_up_and_record(&self, purging: Purging) -> Result<usize> {
        let applied = self.catch_up(purging);
        self.record_progress(Record::after(&applied));
        applied
    }

    /// The last log row applied.
    fn through(&self) -> i64 {
        lock(&self.reader).through
    }

    /// Records how far the log is applied (see [`Progress::record`]): not while a raise is
    /// still being retried, since a process that opened the log after this one died would
    /// start after rows whose invalidation never landed.
    fn record_progress(&self, when: Record) {
        if self.sweeper.invalidations_pending() {
            return;
        }
        let through = self.through();
        match when {
            Record::Now => lock(&self.progress).record(self, through),
            // Another thread recording it already will do.
            Record::WhenDue => {
                if let Ok(mut progress) = self.progress.try_lock()
                    && progress
                        .recorded_at
                        .is_none_or(|at| at.elapsed() >= PROGRESS_EVERY)
                {
                    progress.record(self, through);
                }
            }
        }
    }
}

/// Applies what others committed, every `poll`, and records its progress every
/// [`PROGRESS_EVERY`], until the log and its connections are gone.
fn follow(shared: &Weak<Shared>, stop: &AtomicBool, poll: Duration) {
    let mut caught_up_at = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::park_timeout(poll.min(PROGRESS_EVERY));
        let Some(shared) = shared.upgrade() else {
            break;
        };
        if caught_up_at.elapsed() >= poll {
            caught_up_at = Instant::now();
            if let Err(error) = shared.catch_up_and_record(Purging::Queued) {
                report(&error);
            }
        } else {
            shared.record_progress(Record::WhenDue);
        }
    }
}

/// How far the log is applied, as last written to `cachesweeper_applied`, and the connection it
/// is written with: not the reader's, so that waiting for the database's write lock never
/// holds up the hooks that apply commits.
struct Progress {
    conn: Option<rusqlite::Connection>,
    recorded: i64,
    /// When it was last written; `None` before the first time.
    recorded_at: Option<Instant>,
    /// What was recorded when, for the retention's time: the rows up to a record older than the
    /// retention are pruned with a delete of a range of keys, without reading the rest.
    history: std::collections::VecDeque<(Instant, i64)>,
}

impl Progress {
    /// Records that the log is applied `through` a row, for a process that opens it next, and
    /// prunes the rows applied longer ago than the retention. A failure is logged and tried
    /// again later: it costs a restarted process some changes applied twice.
    fn record(&mut self, shared: &Shared, through: i64) {
        if through <= self.recorded {
            return;
        }
        let mut prune_through = None;
        while let Some(&(at, recorded)) = self.history.front()
            && at.elapsed() >= shared.retention
        {
            prune_through = Some(recorded);
            self.history.pop_front();
        }
        let result = self.conn(&shared.path).and_then(|conn| {
            conn.execute(
                "UPDATE cachesweeper_applied SET through = max(through, ?1) WHERE id = 1",
                [through],
            )
            .and_then(|_| match prune_through {
                Some(prune_through) => conn.execute(
                    "DELETE FROM cachesweeper_changes WHERE id <= ?1",
                    [prune_through],
                ),
                None => Ok(0),
            })
            .map_err(database_error)
        });
        match result {
            Ok(_) => {
                self.recorded = through;
                let now = Instant::now();
                self.recorded_at = Some(now);
                self.history.push_back((now, through));
            }
            // Busy (a writer elsewhere), or failing: tried again at the next interval.
            Err(error) => {
                tracing::debug!(%error, "cachesweeper: recording the change log's progress failed")
            }
        }
    }

    fn conn(&mut self, path: &Path) -> Result<&rusqlite::Connection> {
        if self.conn.is_none() {
            let conn = open_wal(path)?;
            conn.busy_timeout(PROGRESS_BUSY_TIMEOUT)
                .map_err(database_error)?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_ref().expect("just opened"))
    }
}

/// The log rows after `through`, at most [`READ_BATCH`], in order: (id, (model, key)), or
/// (id, `None`) for a row that names no record (a `NULL` or undecodable value, logged), which
/// must not stop the log.
#[allow(clippy::type_complexity)]
fn read_after(
    conn: &rusqlite::Connection,
    through: i64,
) -> Result<Vec<(i64, Option<(String, String)>)>> {
    conn.prepare_cached(
        "SELECT id, model, key FROM cachesweeper_changes WHERE id > ?1 ORDER BY id LIMIT ?2",
    )
    .and_then(|mut statement| {
        statement
            .query_map([through, READ_BATCH], |row| {
                let id: i64 = row.get(0)?;
                let change = match (text(row.get_ref(1)?), text(row.get_ref(2)?)) {
                    (Some(model), Some(key)) => Some((model, key)),
                    _ => {
                        tracing::error!(
                            id,
                            "cachesweeper: a change log row names no record; skipped"
                        );
                        None
                    }
                };
                Ok((id, change))
            })?
            .collect()
    })
    .map_err(database_error)
}

/// A logged value's text: what a key column holds, as its `KeyPart` form is for integers and
/// text (a blob as lowercase hex, a real as Rust prints it); `None` for `NULL`.
fn text(value: ValueRef<'_>) -> Option<String> {
    match value {
        ValueRef::Null => None,
        ValueRef::Integer(n) => Some(n.to_string()),
        ValueRef::Real(x) => Some(x.to_string()),
        ValueRef::Text(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        ValueRef::Blob(bytes) => Some(bytes.iter().map(|b| format!("{b:02x}")).collect()),
    }
}

/// The statements a trigger is installed for.
#[derive(Debug, Clone, Copy)]
enum Event {
    Insert,
    Update,
    Delete,
    /// Before an insert: the row it replaces, if one has its key (`INSERT OR REPLACE`,
    /// `REPLACE INTO` delete that row without a delete trigger unless `recursive_triggers` is
    /// on, which a foreign writer's connection may not have).
    Replace,
}

impl Event {
    const ALL: [Event; 4] = [Event::Insert, Event::Update, Event::Delete, Event::Replace];

    fn trigger(self, table: &Table) -> String {
        let event = match self {
            Event::Insert => "insert",
            Event::Update => "update",
            Event::Delete => "delete",
            Event::Replace => "replace",
        };
        format!("cachesweeper_{}_{event}", table.name)
    }

    /// The trigger: the record and each parent it touches, from the rows the statement leaves
    /// (the new row, the old, or both for an update: a comment moved to another article
    /// invalidates both), each once, skipping absent parents.
    fn create_trigger(self, table: &Table) -> String {
        let records = table.records();
        let name = quoted(&self.trigger(table));
        let table_name = quoted(table.name);
        let model = |model: &str| format!("'{}'", model.replace('\'', "''"));
        let (timing, rows): (&str, &[&str]) = match self {
            Event::Insert => ("AFTER INSERT", &["NEW"]),
            Event::Update => ("AFTER UPDATE", &["OLD", "NEW"]),
            Event::Delete => ("AFTER DELETE", &["OLD"]),
            Event::Replace => {
                let key = quoted(table.key_column);
                let selects: Vec<String> = records
                    .iter()
                    .map(|(name, column)| {
                        format!(
                            "SELECT {}, \"{column}\" FROM \"{table_name}\" WHERE \"{key}\" = NEW.\"{key}\" AND \"{column}\" IS NOT NULL",
                            model(name),
                            column = quoted(column),
                        )
                    })
                    .collect();
                return format!(
                    "CREATE TRIGGER \"{name}\" BEFORE INSERT ON \"{table_name}\" BEGIN INSERT INTO cachesweeper_changes (model, key) {}; END",
                    selects.join(" UNION ")
                );
            }
        };
        let mut selects = Vec::new();
        for (name, column) in &records {
            for row in rows {
                selects.push(format!(
                    "SELECT {}, {row}.\"{column}\" WHERE {row}.\"{column}\" IS NOT NULL",
                    model(name),
                    column = quoted(column),
                ));
            }
        }
        format!(
            "CREATE TRIGGER \"{name}\" {timing} ON \"{table_name}\" BEGIN INSERT INTO cachesweeper_changes (model, key) {}; END",
            selects.join(" UNION "),
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

/// A rusqlite error as the crate's [`Error::Database`].
pub fn database_error(error: rusqlite::Error) -> Error {
    Error::Database {
        source: Arc::new(error),
    }
}
