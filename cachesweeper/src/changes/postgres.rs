//! PostgreSQL as the source of invalidations (feature `postgres`, on tokio-postgres).
//!
//! Statement-level triggers on each tracked table log every changed record (and the parents it
//! touches, from the old and the new rows) into `cachesweeper_changes`, in the writing
//! transaction: a change and the record of it commit or roll back together, and a statement
//! that changes 10,000 rows logs them with one `INSERT … SELECT` from its transition tables.
//! Each logged row carries its transaction's id (`pg_current_xact_id()`), and the trigger
//! sends a `NOTIFY`, which PostgreSQL delivers when the transaction commits. Then:
//! - the writing process applies its own commits before its write returns:
//!   [`ChangeLog::commit`] (a tokio-postgres transaction), or [`ChangeLog::catch_up`] after a
//!   commit made with any other client;
//! - every process's follower applies what anyone committed (another service, `psql`, a
//!   migration) when the notification arrives, and every poll interval in case one was lost
//!   (a notification sent while the follower was reconnecting);
//! - how far the log is applied is kept in `cachesweeper_applied`, so that a process opening
//!   the log applies what a process that died after its commit had not, and rows applied and
//!   older than the retention are pruned.
//!
//! Two-phase commit: PostgreSQL refuses to `PREPARE TRANSACTION` a transaction that sent a
//! notification, so one that will be prepared says first `SET LOCAL cachesweeper.notify = off`;
//! its changes are logged all the same, and applied after `COMMIT PREPARED` by the next
//! [`ChangeLog::catch_up`] or the follower's next poll.
//!
//! What the triggers cannot see: writes made with `session_replication_role = replica` (a
//! logical replication subscriber's apply worker, `pg_restore --disable-triggers`) or with the
//! triggers disabled, and writes to a partition or an inheritance child straight rather than
//! through the tracked table (statement triggers fire on the table a statement names). The
//! log's progress (`cachesweeper_applied`) is shared by every log of the database, as if they
//! applied to one cache: a log opened on a cache that outlived its processes and that the
//! others do not apply to starts where they left off, missing what it did not see.
//!
//! Why snapshots rather than the log's ids: ids are taken when a row is inserted, and a
//! transaction that took a lower id can commit later than one that took a higher, so a cursor
//! by id would step over rows that are not yet visible and never come back for them. The
//! follower instead remembers the snapshot it last read in: a row is new exactly when its
//! transaction is visible now and was not in that snapshot (it began at or after the
//! snapshot's `xmax`, or was in progress then: in its `xip`), and visibility never goes back, so each committed row is read once, whatever order
//! transactions commit in, and a rolled-back one is never read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use tokio::sync::{Mutex, Notify};
use tokio_postgres::{AsyncMessage, Client, NoTls};

use super::{
    LOG_TABLE_MISSING, PROGRESS_EVERY, Purging, RAISE_BATCH, Record, Table, Tracked, apply, report,
    untracked,
};
use crate::{Error, Result, Sweeper};

/// The channel the triggers notify and the followers listen on.
const CHANNEL: &str = "cachesweeper_changes";

/// The setting that, `off`, keeps the triggers from notifying in the transaction that sets it:
/// PostgreSQL refuses to `PREPARE TRANSACTION` one that sent a notification.
const NOTIFY_SETTING: &str = "cachesweeper.notify";

/// The log, and a snapshot in which every visible logged row has been applied (by some
/// process: the cache is shared).
const LOG_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cachesweeper_changes (
    id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    xid   xid8 NOT NULL DEFAULT pg_current_xact_id(),
    model text NOT NULL,
    key   text NOT NULL,
    at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS cachesweeper_changes_xid ON cachesweeper_changes (xid);
CREATE TABLE IF NOT EXISTS cachesweeper_applied (
    id       int PRIMARY KEY CHECK (id = 1),
    snapshot pg_snapshot NOT NULL
);
INSERT INTO cachesweeper_applied (id, snapshot) VALUES (1, pg_current_snapshot())
    ON CONFLICT (id) DO NOTHING;
";

/// The rows committed since snapshot `$1` (visible now, not then: their transactions were at
/// or after its `xmax`, or in progress then, in its `xip`; each part an index scan, so a long
/// transaction holding `xmin` back does not make every read scan the rows since), and, in the
/// last column of a row of its own, the snapshot this statement reads in: one statement, so
/// both are the same snapshot.
const READ_NEW: &str = "
SELECT model, key, NULL FROM cachesweeper_changes
 WHERE xid >= pg_snapshot_xmax($1::text::pg_snapshot)
UNION ALL
SELECT model, key, NULL FROM cachesweeper_changes
 WHERE xid = ANY (ARRAY(SELECT pg_snapshot_xip($1::text::pg_snapshot)))
UNION ALL
SELECT NULL, NULL, pg_current_snapshot()::text";

/// How long connecting to the database may take before it counts as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest the follower waits between attempts while the database is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The change log of one PostgreSQL database: it installs or checks the triggers, applies this
/// process's commits before they return, and follows everyone else's.
///
/// ```no_run
/// # use cachesweeper::{Sweeper, Sweepable, changes::postgres::ChangeLog};
/// #[derive(Sweepable)]
/// #[sweeper(table = "articles")]
/// struct Article { id: i64 }
///
/// #[derive(Sweepable)]
/// #[sweeper(table = "comments")]
/// struct Comment { id: i64, #[sweeper(touches = Article)] article_id: i64 }
///
/// # async fn run(client: &mut tokio_postgres::Client) -> cachesweeper::Result<()> {
/// let sweeper = Sweeper::embedded();
/// // Tracks every model that declares its table: Article and Comment.
/// let log = ChangeLog::builder("host=localhost user=blog dbname=blog")
///     .install(&sweeper) // or .open(&sweeper), after a migration ran ChangeLogBuilder::migration
///     .await?;
/// let tx = client.transaction().await.expect("begin");
/// tx.execute("UPDATE comments SET likes = likes + 1 WHERE id = $1", &[&1_i64])
///     .await
///     .expect("update");
/// log.commit(tx).await?; // committed, and the comment and its article invalidated
/// # Ok(()) }
/// ```
///
/// The follower runs on the tokio runtime the log was opened on, until the log is dropped.
pub struct ChangeLog {
    shared: Arc<Shared>,
    follower: tokio::task::JoinHandle<()>,
}

/// Settings of a [`ChangeLog`]: the database, the tracked models and the follower's pace.
#[derive(Debug, Clone)]
pub struct ChangeLogBuilder {
    config: std::result::Result<tokio_postgres::Config, String>,
    database: String,
    /// Tracked besides the registered models of `database`: generic models.
    tables: Vec<Table>,
    poll: Duration,
    retention: Duration,
}

impl ChangeLog {
    /// A change log of the PostgreSQL database that `config` names: a libpq connection
    /// string, `host=… user=… dbname=…` or `postgresql://user@host/dbname` (without TLS: the
    /// log's connection is plain TCP or a Unix socket).
    pub fn builder(config: &str) -> ChangeLogBuilder {
        ChangeLogBuilder {
            config: config
                .parse::<tokio_postgres::Config>()
                .map_err(|error| format!("not a PostgreSQL connection string: {error}")),
            database: String::new(),
            tables: Vec::new(),
            poll: Duration::from_millis(500),
            retention: Duration::from_secs(600),
        }
    }

    /// Commits `transaction`, then applies what it changed (and anything else committed
    /// since the log last read) before returning: a response to the write already reflects
    /// it. Fails only if the commit fails; a failure to apply after it is logged, and the
    /// follower applies the changes when it can (a cache that failed retries them, and until
    /// then nothing is served under those records' versions).
    pub async fn commit(&self, transaction: tokio_postgres::Transaction<'_>) -> Result<()> {
        transaction.commit().await.map_err(database_error)?;
        if let Err(error) = self.catch_up().await {
            tracing::warn!(error = %crate::error::Chain(&error), "cachesweeper: applying this commit's changes failed; the follower will");
        }
        Ok(())
    }

    /// Applies everything committed and not yet applied, now, and returns how many log rows
    /// that was: call it after a commit made with any client (sqlx, diesel, a pool) so that
    /// the write's response reflects it. Concurrent calls share one read of the log.
    pub async fn catch_up(&self) -> Result<usize> {
        self.shared.catch_up_and_record(Purging::Awaited).await
    }

    /// How many log rows this process has applied since the log was opened.
    pub fn applied(&self) -> u64 {
        self.shared.applied.load(Ordering::Relaxed)
    }
}

impl Drop for ChangeLog {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

impl std::fmt::Debug for ChangeLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeLog")
            .field("applied", &self.applied())
            .finish_non_exhaustive()
    }
}

impl ChangeLogBuilder {
    /// The log tracks every model of this database (`#[sweeper(database = "...")]`; by
    /// default `""`, the database of every model that names none).
    pub fn database(mut self, database: impl Into<String>) -> Self {
        self.database = database.into();
        self
    }

    /// Tracks model `T` too: for a generic model, which the derive cannot register, one
    /// instantiation at a time. Every other model of the log's database that declares its
    /// table is tracked already.
    pub fn track<T: Tracked>(mut self) -> Self {
        self.tables.push(T::TABLE);
        self
    }

    /// How often the follower reads the log when no notification woke it (default 500 ms):
    /// the bound on a foreign write's lag should a notification be lost. Notifications wake
    /// it at once otherwise.
    pub fn poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// How long applied log rows are kept (default 10 minutes) for processes that fell
    /// behind.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    fn tables(&self) -> Result<Vec<Table>> {
        super::tables(&self.database, &self.tables)
    }

    /// The SQL that installs the log and the triggers, for a migration tool: what
    /// [`install`](Self::install) runs. [`open`](Self::open) checks that it has been run.
    /// It needs PostgreSQL 13 or later.
    pub fn migration(&self) -> Result<String> {
        let mut sql = LOG_SCHEMA.to_owned();
        for table in &self.tables()? {
            sql.push_str(&Triggers::of(table).install());
        }
        Ok(sql)
    }

    /// Installs (or brings up to date) the log and the triggers, in one transaction, then
    /// [`open`](Self::open)s the log. A table whose function and triggers are already as they
    /// should be is left alone (creating a trigger locks its table against writes). Processes
    /// installing at once take turns.
    pub async fn install(self, sweeper: &Sweeper) -> Result<ChangeLog> {
        let tables = self.tables()?;
        let (config, wake) = (self.config()?, Arc::new(Notify::new()));
        // The log's own connection: installed through it, then read through it.
        let mut client = connect_listening(&config, &wake).await?;
        let tx = client.transaction().await.map_err(database_error)?;
        tx.batch_execute(&format!(
            "SELECT pg_advisory_xact_lock(hashtext('cachesweeper install')); {LOG_SCHEMA}"
        ))
        .await
        .map_err(database_error)?;
        for table in &tables {
            let triggers = Triggers::of(table);
            if triggers.problem(&tx).await?.is_some() && table_exists(&tx, table.name).await? {
                tx.batch_execute(&triggers.install())
                    .await
                    .map_err(database_error)?;
            }
        }
        tx.commit().await.map_err(database_error)?;
        self.open_on(sweeper, config, client, wake).await
    }

    /// Opens the log on the current tokio runtime: checks that every tracked table has its
    /// triggers (an [`Error::Untracked`] naming the first that does not), applies what was
    /// committed and not yet applied by any process (one that died after its commit, say),
    /// and starts the follower.
    pub async fn open(self, sweeper: &Sweeper) -> Result<ChangeLog> {
        let (config, wake) = (self.config()?, Arc::new(Notify::new()));
        let client = connect_listening(&config, &wake).await?;
        self.open_on(sweeper, config, client, wake).await
    }

    /// [`open`](Self::open) on `client`, a connection from [`connect_listening`] whose
    /// notifications wake `wake`.
    async fn open_on(
        self,
        sweeper: &Sweeper,
        config: tokio_postgres::Config,
        client: Client,
        wake: Arc<Notify>,
    ) -> Result<ChangeLog> {
        check(&client, &self.tables()?).await?;
        let read_new = client.prepare(READ_NEW).await.map_err(database_error)?;
        let snapshot: String = client
            .query_one(
                "SELECT snapshot::text FROM cachesweeper_applied WHERE id = 1",
                &[],
            )
            .await
            .map_err(database_error)?
            .get(0);
        let shared = Arc::new(Shared {
            sweeper: sweeper.clone(),
            config,
            retention: self.retention,
            wake: Arc::clone(&wake),
            reader: Mutex::new(Reader {
                client: Some((client, read_new)),
                snapshot,
                progress: Progress::default(),
            }),
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            applied: AtomicU64::new(0),
        });
        // What was committed and not applied before (a process that died after its commit):
        // a cache that cannot take it now does not keep the application from starting; the
        // keys are retried, and meanwhile not served from here.
        if let Err(error) = shared.catch_up_and_record(Purging::Awaited).await {
            report(&error);
        }
        let follower = tokio::spawn(follow(Arc::downgrade(&shared), wake, self.poll));
        Ok(ChangeLog { shared, follower })
    }

    fn config(&self) -> Result<tokio_postgres::Config> {
        let mut config = self.config.clone().map_err(Error::Config)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        Ok(config)
    }
}

/// The log's reading connection (see [`connect_listening`]) and its prepared [`READ_NEW`].
async fn connect_reader(
    config: &tokio_postgres::Config,
    wake: &Arc<Notify>,
) -> Result<(Client, tokio_postgres::Statement)> {
    let client = connect_listening(config, wake).await?;
    let read_new = client.prepare(READ_NEW).await.map_err(database_error)?;
    Ok((client, read_new))
}

/// Connects, driving the connection on a task that wakes the follower on each notification,
/// and listens on [`CHANNEL`].
async fn connect_listening(config: &tokio_postgres::Config, wake: &Arc<Notify>) -> Result<Client> {
    let (client, mut connection) = config.connect(NoTls).await.map_err(database_error)?;
    let wake = Arc::clone(wake);
    tokio::spawn(async move {
        // Ends when the client is dropped or the connection fails; the next read connects
        // again.
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(_)) => wake.notify_one(),
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(%error, "cachesweeper: the change log's connection failed");
                    break;
                }
            }
        }
        // Whoever reads next finds the connection closed and connects again.
        wake.notify_one();
    });
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(database_error)?
        .get(0);
    if version < 130_000 {
        return Err(Error::Config(format!(
            "the change log needs PostgreSQL 13 or later (pg_current_xact_id, pg_snapshot); the server is version {version}"
        )));
    }
    // A statement_timeout set for the database or the role would cancel a read that streams a
    // large backlog into a slow cache, every time, so that its later rows are never reached.
    client
        .batch_execute(&format!("SET statement_timeout = 0; LISTEN {CHANNEL}"))
        .await
        .map_err(database_error)?;
    Ok(client)
}

/// Whether the log's tables and every tracked table's function and triggers are as this build
/// would install them.
async fn check(client: &Client, tables: &[Table]) -> Result<()> {
    for log_table in ["cachesweeper_changes", "cachesweeper_applied"] {
        if !table_exists(client, log_table).await? {
            return Err(untracked(log_table, LOG_TABLE_MISSING));
        }
    }
    for table in tables {
        if !table_exists(client, table.name).await? {
            return Err(untracked(table.name, "no such table"));
        }
        let columns: Vec<String> = client
            .query(
                "SELECT attname::text FROM pg_attribute
                  WHERE attrelid = to_regclass(quote_ident($1)) AND attnum > 0 AND NOT attisdropped",
                &[&table.name],
            )
            .await
            .map_err(database_error)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        for (_, column) in table.records() {
            if !columns.iter().any(|have| have == column) {
                return Err(untracked(
                    table.name,
                    &format!(
                        "it has no column `{column}`, which the model's key or a `touches` field names"
                    ),
                ));
            }
        }
        if let Some(problem) = Triggers::of(table).problem(client).await? {
            return Err(untracked(table.name, &problem));
        }
    }
    Ok(())
}

/// What the follower, the commit helpers and the log share.
struct Shared {
    sweeper: Sweeper,
    config: tokio_postgres::Config,
    retention: Duration,
    /// Woken by each notification (and when the connection ends).
    wake: Arc<Notify>,
    /// One connection reads the log, for this process's commits and the follower alike.
    reader: Mutex<Reader>,
    /// Reads of the log begun, and the last begun that completed: a caller that finds one
    /// completed that began after it was called has its commit applied already.
    started: AtomicU64,
    finished: AtomicU64,
    applied: AtomicU64,
}

struct Reader {
    /// The log's connection and its prepared [`READ_NEW`] (one round trip a read, planned
    /// once); `None` after the connection failed: the next read connects again, and rewinds
    /// the snapshot (see [`rewound`]).
    client: Option<(Client, tokio_postgres::Statement)>,
    /// A snapshot in which every visible log row has been applied by this process: raised, or,
    /// where the raise failed, handed to the sweeper's retry thread.
    snapshot: String,
    progress: Progress,
}

/// How far the log is applied as last written to `cachesweeper_applied`, and what was written
/// when, for the retention's time: rows of transactions before the `xmin` of a snapshot
/// recorded longer ago than the retention are pruned.
#[derive(Default)]
struct Progress {
    recorded: Option<String>,
    recorded_at: Option<Instant>,
    history: std::collections::VecDeque<(Instant, u64)>,
}

impl Shared {
    /// Reads and applies every row committed since the last read (see the module's docs for
    /// why by snapshot), raising their counters in batches as they stream in, and returns how
    /// many. A batch whose raise fails is applied all the same: its keys are the sweeper's to
    /// retry, and the progress recorded for other processes stays behind them. The first
    /// error is returned once every row has been applied; a database error leaves the
    /// snapshot where it was, so the rows are read again.
    async fn catch_up(&self, purging: Purging) -> Result<usize> {
        let called = self.started.load(Ordering::SeqCst);
        let mut reader = self.reader.lock().await;
        if self.finished.load(Ordering::SeqCst) > called {
            // Another caller applied this one's changes, and queued their purges: wait for
            // those.
            let purge = self.sweeper.purge(&[]);
            drop(reader);
            purging.finish(purge).await;
            return Ok(0);
        }
        let read = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        let connected = reader
            .client
            .as_ref()
            .is_some_and(|(client, _)| !client.is_closed());
        let mut raised = Vec::new();
        let mut result = reader.read(self, &mut raised).await;
        // A connection that died since the last read (its backend terminated, a restart the
        // client has not noticed yet) fails the first statement sent on it: read once more on
        // a new one, so that the caller's commit is still applied before it returns. A failure
        // to connect is not retried: the database is down.
        if connected && matches!(result, Err(Error::Database { .. })) {
            result = reader.read(self, &mut raised).await;
        }
        if result.is_ok() {
            self.finished.store(read, Ordering::SeqCst);
        }
        // Queued under the lock, awaited after it: a purge waits the settle time, and every
        // commit waits on the lock.
        let purge = self.sweeper.purge(&raised);
        drop(reader);
        purging.finish(purge).await;
        result
    }

    /// [`catch_up`](Self::catch_up), then records the progress: a bulk change's at once,
    /// others' when due.
    async fn catch_up_and_record(&self, purging: Purging) -> Result<usize> {
        let applied = self.catch_up(purging).await;
        self.record_progress(Record::after(&applied)).await;
        applied
    }

    /// Records how far the log is applied, and prunes: not while a raise is still being
    /// retried, since a process that opened the log after this one died would start after
    /// rows whose invalidation never landed. A failure is logged and tried again later.
    async fn record_progress(&self, when: Record) {
        if self.sweeper.invalidations_pending() {
            return;
        }
        let mut reader = match when {
            Record::Now => self.reader.lock().await,
            // Another task holding the reader will record it.
            Record::WhenDue => match self.reader.try_lock() {
                Ok(reader) => reader,
                Err(_) => return,
            },
        };
        let reader = &mut *reader;
        let progress = &mut reader.progress;
        if progress.recorded.as_ref() == Some(&reader.snapshot)
            || matches!(when, Record::WhenDue)
                && progress
                    .recorded_at
                    .is_some_and(|at| at.elapsed() < PROGRESS_EVERY)
        {
            return;
        }
        let Some((client, _)) = reader.client.as_ref() else {
            return;
        };
        let mut prune_before = None;
        while let Some(&(at, xmin)) = progress.history.front()
            && at.elapsed() >= self.retention
        {
            prune_before = Some(xmin);
            progress.history.pop_front();
        }
        let snapshot = reader.snapshot.clone();
        let recorded = async {
            client
                .execute(
                    "UPDATE cachesweeper_applied SET snapshot = $1::text::pg_snapshot
                      WHERE id = 1
                        AND pg_snapshot_xmin(snapshot) <= pg_snapshot_xmin($1::text::pg_snapshot)",
                    &[&snapshot],
                )
                .await?;
            if let Some(xmin) = prune_before {
                client
                    .execute(
                        "DELETE FROM cachesweeper_changes WHERE xid < $1::text::xid8",
                        &[&xmin.to_string()],
                    )
                    .await?;
            }
            Ok::<_, tokio_postgres::Error>(())
        };
        match recorded.await {
            Ok(()) => {
                let now = Instant::now();
                if let Some(xmin) = snapshot_xmin(&snapshot) {
                    progress.history.push_back((now, xmin));
                }
                progress.recorded = Some(snapshot);
                progress.recorded_at = Some(now);
            }
            Err(error) => {
                tracing::debug!(%error, "cachesweeper: recording the change log's progress failed");
            }
        }
    }
}

impl Reader {
    /// One read of the log: see [`Shared::catch_up`].
    async fn read(&mut self, shared: &Shared, raised: &mut Vec<String>) -> Result<usize> {
        if self
            .client
            .as_ref()
            .is_none_or(|(client, _)| client.is_closed())
        {
            self.client = None;
            // The log was opened on a connection: this is a reconnection.
            let (client, read_new) = connect_reader(&shared.config, &shared.wake).await?;
            self.snapshot = rewound(&client, &self.snapshot).await?;
            self.client = Some((client, read_new));
        }
        let (client, read_new) = self.client.as_ref().expect("connected above");
        let read = async {
            let rows = client
                .query_raw(read_new, [&self.snapshot])
                .await
                .map_err(database_error)?;
            futures_util::pin_mut!(rows);
            let (mut total, mut snapshot, mut first_error) = (0, None, None);
            let mut batch: Vec<(String, String)> = Vec::new();
            while let Some(row) = rows.try_next().await.map_err(database_error)? {
                match (
                    row.get::<_, Option<String>>(0),
                    row.get::<_, Option<String>>(1),
                ) {
                    (Some(model), Some(key)) => {
                        batch.push((model, key));
                        total += 1;
                    }
                    _ => snapshot = row.get::<_, Option<String>>(2),
                }
                if batch.len() == RAISE_BATCH {
                    if let Err(error) = apply(&shared.sweeper, &batch, raised).await {
                        first_error.get_or_insert(error);
                    }
                    batch.clear();
                }
            }
            if let Err(error) = apply(&shared.sweeper, &batch, raised).await {
                first_error.get_or_insert(error);
            }
            let snapshot = snapshot.ok_or_else(|| {
                Error::Config("the change log's read returned no snapshot".to_owned())
            })?;
            Ok((total, snapshot, first_error))
        };
        match read.await {
            Ok((total, snapshot, first_error)) => {
                self.snapshot = snapshot;
                shared.applied.fetch_add(total as u64, Ordering::Relaxed);
                first_error.map_or(Ok(total), Err)
            }
            Err(error) => {
                // Connect again next time: after a failed read the connection may be half
                // way through a result.
                self.client = None;
                Err(error)
            }
        }
    }
}

/// The snapshot to read from after connecting again: one in which nothing from the lower
/// `xmin` of `snapshot` (this process's) and of the snapshot recorded in
/// `cachesweeper_applied` on is visible, so that the rows since are read (again).
///
/// Why: the server may have crashed and restarted while the connection was down, and after a
/// crash PostgreSQL hands out again the transaction ids whose end never reached the disk (a
/// rolled-back transaction's, one that only took an id): an id finished in `snapshot` may now
/// be a new transaction's, whose committed rows `snapshot` would count as seen. The recorded
/// snapshot is safe from that: it was written by a commit, which flushes the log of every
/// transaction that had ended when it was taken, so its ids below its `xmin` are never handed
/// out again; nor are this process's below the lower of the two. Reading the rows since again
/// costs one more miss each for their records, once per reconnection.
async fn rewound(client: &Client, snapshot: &str) -> Result<String> {
    let recorded: String = client
        .query_one(
            "SELECT snapshot::text FROM cachesweeper_applied WHERE id = 1",
            &[],
        )
        .await
        .map_err(database_error)?
        .get(0);
    let xmin = [snapshot_xmin(snapshot), snapshot_xmin(&recorded)]
        .into_iter()
        .flatten()
        .min()
        .ok_or_else(|| Error::Config(format!("not a snapshot: {recorded}")))?;
    Ok(format!("{xmin}:{xmin}:"))
}

/// Reads the log when a notification wakes it, and every `poll` otherwise (a notification
/// can be lost while the connection is down); while the database is unreachable, at most
/// every [`MAX_BACKOFF`]. Records the progress when due in between. Ends when the log is
/// dropped.
async fn follow(shared: Weak<Shared>, wake: Arc<Notify>, poll: Duration) {
    let mut backoff = Duration::ZERO;
    let mut read_at = Instant::now();
    loop {
        let notified = tokio::select! {
            () = wake.notified() => true,
            () = tokio::time::sleep(poll.min(PROGRESS_EVERY)) => false,
        };
        if !backoff.is_zero() {
            tokio::time::sleep(backoff).await;
        }
        let Some(shared) = shared.upgrade() else {
            break;
        };
        if !notified && backoff.is_zero() && read_at.elapsed() < poll {
            shared.record_progress(Record::WhenDue).await;
            continue;
        }
        read_at = Instant::now();
        match shared.catch_up_and_record(Purging::Queued).await {
            Ok(_) => backoff = Duration::ZERO,
            Err(error) => {
                report(&error);
                if matches!(error, Error::Database { .. }) {
                    backoff = (backoff * 2).clamp(Duration::from_millis(50), MAX_BACKOFF);
                }
            }
        }
    }
}

/// A tracked table's trigger function and its four triggers: after insert, update and delete
/// (each with its transition tables), and before truncate (the rows it is about to remove).
struct Triggers<'a> {
    table: &'a Table,
}

/// The triggers' events: (name suffix, timing and transition tables).
const EVENTS: [(&str, &str); 4] = [
    (
        "insert",
        "AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_rows",
    ),
    (
        "update",
        "AFTER UPDATE ON {table} REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
    ),
    (
        "delete",
        "AFTER DELETE ON {table} REFERENCING OLD TABLE AS old_rows",
    ),
    ("truncate", "BEFORE TRUNCATE ON {table}"),
];

impl<'a> Triggers<'a> {
    fn of(table: &'a Table) -> Self {
        Triggers { table }
    }

    fn function(&self) -> String {
        object_name("cachesweeper_log_", self.table.name, "")
    }

    fn trigger(&self, event: &str) -> String {
        object_name("cachesweeper_", self.table.name, &format!("_{event}"))
    }

    /// The function's body: one `INSERT … SELECT` of the record and each parent it touches
    /// from the rows the statement leaves (old and new for an update: a comment moved to
    /// another article invalidates both), each once, skipping absent parents; then a
    /// notification, delivered at commit, if it logged anything.
    fn body(&self) -> String {
        let select = |rows: &[&str]| {
            let mut selects = Vec::new();
            for (model, column) in self.table.records() {
                for from in rows {
                    selects.push(format!(
                        "SELECT {}, {}::text FROM {from}",
                        literal(model),
                        identifier(column)
                    ));
                }
            }
            format!(
                "INSERT INTO cachesweeper_changes (model, key) SELECT DISTINCT model, key FROM ({}) AS changed (model, key) WHERE key IS NOT NULL;",
                selects.join(" UNION ALL ")
            )
        };
        format!(
            "
BEGIN
    IF TG_OP = 'INSERT' THEN
        {}
    ELSIF TG_OP = 'UPDATE' THEN
        {}
    ELSIF TG_OP = 'DELETE' THEN
        {}
    ELSE
        {}
    END IF;
    IF FOUND AND current_setting('{NOTIFY_SETTING}', true) IS DISTINCT FROM 'off' THEN
        PERFORM pg_notify('{CHANNEL}', '');
    END IF;
    RETURN NULL;
END
",
            select(&["new_rows"]),
            select(&["old_rows", "new_rows"]),
            select(&["old_rows"]),
            select(&[&identifier(self.table.name)]),
        )
    }

    /// The SQL that creates (or replaces) the function and the triggers. The function runs
    /// with the installer's search_path, where the log and the table are (its body names them
    /// unqualified): a trigger runs in the writer's session, whose search_path may not name
    /// them (`SET search_path = ''` in a SECURITY DEFINER function, a migration tool's), or
    /// may name another schema's table of the same name first.
    fn install(&self) -> String {
        let table = identifier(self.table.name);
        let function = identifier(&self.function());
        let mut sql = format!(
            "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $cachesweeper${}$cachesweeper$;\n",
            self.body()
        );
        for (event, timing) in EVENTS {
            let trigger = identifier(&self.trigger(event));
            sql.push_str(&format!(
                "DROP TRIGGER IF EXISTS {trigger} ON {table};\nCREATE TRIGGER {trigger} {} FOR EACH STATEMENT EXECUTE FUNCTION {function}();\n",
                timing.replace("{table}", &table)
            ));
        }
        sql
    }

    /// What is wrong with the installed function and triggers, if anything: missing,
    /// outdated (another model name, key or parents), calling another function, or disabled.
    async fn problem(&self, client: &impl tokio_postgres::GenericClient) -> Result<Option<String>> {
        let install =
            "install it (ChangeLogBuilder::install, or the SQL of ChangeLogBuilder::migration)";
        let function = self.function();
        let found: Option<(String, Vec<String>)> = client
            .query_opt(
                "SELECT prosrc, coalesce(proconfig, '{}') FROM pg_proc
                  WHERE oid = to_regproc(quote_ident($1))",
                &[&function],
            )
            .await
            .map_err(database_error)?
            .map(|row| (row.get(0), row.get(1)));
        match found {
            None => {
                return Ok(Some(format!(
                    "it has no trigger function `{function}`, so its changes would not reach the cache: {install}"
                )));
            }
            Some((body, _)) if body != self.body() => {
                return Ok(Some(format!(
                    "its trigger function `{function}` is not the one this model needs (its model name, key or parents changed): {install}"
                )));
            }
            Some((_, config)) if !config.iter().any(|set| set.starts_with("search_path=")) => {
                return Ok(Some(format!(
                    "its trigger function `{function}` runs with the writer's search_path (installed by an earlier version): {install}"
                )));
            }
            Some(_) => {}
        }
        for (event, _) in EVENTS {
            let trigger = self.trigger(event);
            let found = client
                .query_opt(
                    "SELECT tgenabled::text, tgfoid = to_regproc(quote_ident($3)) FROM pg_trigger
                      WHERE tgrelid = to_regclass(quote_ident($1)) AND tgname = $2",
                    &[&self.table.name, &trigger, &function],
                )
                .await
                .map_err(database_error)?;
            let problem = match found {
                None => format!(
                    "it has no trigger `{trigger}`, so its changes would not reach the cache: {install}"
                ),
                Some(row) if !row.get::<_, bool>(1) => {
                    format!("its trigger `{trigger}` calls another function: {install}")
                }
                // 'O' fires as usual, 'A' always; 'R' only under replication, 'D' never.
                Some(row) if !matches!(row.get::<_, String>(0).as_str(), "O" | "A") => format!(
                    "its trigger `{trigger}` is disabled, so its changes would not reach the cache: ALTER TABLE … ENABLE TRIGGER {trigger}"
                ),
                Some(_) => continue,
            };
            return Ok(Some(problem));
        }
        Ok(None)
    }
}

async fn table_exists(client: &impl tokio_postgres::GenericClient, name: &str) -> Result<bool> {
    Ok(client
        .query_one("SELECT to_regclass(quote_ident($1)) IS NOT NULL", &[&name])
        .await
        .map_err(database_error)?
        .get(0))
}

/// The name of one of a table's objects: `prefix`, the table's name, `suffix`. PostgreSQL
/// cuts names at 63 bytes (and refuses longer ones as parameters), so a table name too long
/// for that is cut short and followed by a hash of the whole: two long names that begin alike
/// still name different functions and triggers.
fn object_name(prefix: &str, table: &str, suffix: &str) -> String {
    const MAX: usize = 63;
    let name = format!("{prefix}{table}{suffix}");
    if name.len() <= MAX {
        return name;
    }
    use sha2::Digest as _;
    let hash = sha2::Sha256::digest(table.as_bytes());
    let hash: String = hash[..4].iter().map(|byte| format!("{byte:02x}")).collect();
    let mut cut = MAX - prefix.len() - suffix.len() - 1 - hash.len();
    while !table.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{prefix}{}_{hash}{suffix}", &table[..cut])
}

/// A snapshot's `xmin` (its text form is `xmin:xmax:xip,…`).
fn snapshot_xmin(snapshot: &str) -> Option<u64> {
    snapshot.split(':').next()?.parse().ok()
}

/// An identifier in double quotes.
fn identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn database_error(error: tokio_postgres::Error) -> Error {
    Error::Database {
        source: Arc::new(error),
    }
}

#[cfg(test)]
mod tests {
    use super::object_name;

    #[test]
    fn object_names_fit_postgresql_and_long_ones_stay_distinct() {
        assert_eq!(
            object_name("cachesweeper_", "comments", "_insert"),
            "cachesweeper_comments_insert"
        );
        let long = |end: &str| format!("{}{end}", "ü".repeat(30));
        let (a, b) = (
            object_name("cachesweeper_", &long("a"), "_truncate"),
            object_name("cachesweeper_", &long("b"), "_truncate"),
        );
        assert!(a.len() <= 63 && b.len() <= 63, "{a} {b}");
        assert_ne!(a, b);
        assert!(
            a.starts_with("cachesweeper_ü") && a.ends_with("_truncate"),
            "{a}"
        );
    }
}
