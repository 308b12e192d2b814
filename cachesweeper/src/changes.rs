//! The database as the source of invalidations: what a tracked model's table is, and how the
//! changes its triggers log are applied to the cache.
//!
//! A model derived with `#[sweeper(table = "...")]` is [`Tracked`]: the derive knows its table,
//! its key column and the columns that hold the keys of the parents it touches. From that, a
//! database's change log ([`sqlite::ChangeLog`] with feature `sqlite`) installs triggers that
//! write every changed record's key, and its parents' keys from the old and the new row, into a
//! log table inside the writing transaction; this module turns the rows of that log into one
//! batched raise of their counters.

#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
use crate::{Result, Sweeper};

/// A model whose records live in a database table, so that the database can say when one
/// changed: `#[derive(Sweepable)]` with `#[sweeper(table = "comments")]` implements it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not say which table its records live in",
    label = "the change log needs a tracked model here",
    note = "add `#[sweeper(table = \"...\")]` to `{Self}`'s `#[derive(Sweepable)]`"
)]
pub trait Tracked: crate::Sweepable {
    /// The table, its key column and its parents' columns.
    const TABLE: Table;
}

/// A tracked model's table, as the derive describes it.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    /// Which database it is in (`#[sweeper(database = "...")]`; `""` by default): a change log
    /// tracks every model of its database.
    pub database: &'static str,
    /// The table's name (`#[sweeper(table = "...")]`).
    pub name: &'static str,
    /// The column that holds a record's key: the key field's name. Its text form must be the
    /// key's [`KeyPart`](crate::KeyPart) form, as it is for integers and text.
    pub key_column: &'static str,
    /// The model's name in keys ([`Sweepable::sweeper_model`](crate::Sweepable::sweeper_model)).
    pub model: fn() -> &'static str,
    /// The parents a record touches (`#[sweeper(touches = T)]`), each by the column that holds
    /// its key.
    pub parents: &'static [Parent],
}

/// A model that declares its table, registered by `#[derive(Sweepable)]` (for a struct without
/// type parameters) so that a change log tracks it without being told.
#[doc(hidden)]
#[derive(Debug)]
pub struct Registered(pub Table);

inventory::collect!(Registered);

/// The tables a change log of `database` tracks: those of its registered models and of
/// `tracked` (generic models), each once, by name, in name order. Two models that declare the
/// same table with different keys or parents are an error: their triggers would replace each
/// other's.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn tables(database: &str, tracked: &[Table]) -> Result<Vec<Table>> {
    let registered = inventory::iter::<Registered>
        .into_iter()
        .map(|registered| registered.0)
        .filter(|table| table.database == database);
    let mut tables: Vec<Table> = Vec::new();
    for table in registered.chain(tracked.iter().copied()) {
        match tables.iter().find(|have| have.name == table.name) {
            None => tables.push(table),
            Some(have) if have.records() == table.records() => {}
            Some(have) => {
                return Err(crate::Error::Config(format!(
                    "table `{}` is declared by two models, `{}` and `{}`, with different keys or parents: declare it on one (or give the other `#[sweeper(database = \"...\")]`)",
                    table.name,
                    (have.model)(),
                    (table.model)()
                )));
            }
        }
    }
    tables.sort_by_key(|table| table.name);
    Ok(tables)
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl Table {
    /// What a change to one row invalidates: the record (its model, its key column), then each
    /// parent it touches (the parent's model, the column holding its key).
    pub(crate) fn records(&self) -> Vec<(&'static str, &'static str)> {
        std::iter::once(((self.model)(), self.key_column))
            .chain(
                self.parents
                    .iter()
                    .map(|parent| ((parent.model)(), parent.column)),
            )
            .collect()
    }
}

/// A parent a tracked record touches: the column that holds its key, and its model.
#[derive(Debug, Clone, Copy)]
pub struct Parent {
    /// The column (the `touches` field's name).
    pub column: &'static str,
    /// The parent's model name in keys.
    pub model: fn() -> &'static str,
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
/// How many counters one raise of applied changes carries: a statement that changed 10,000
/// rows is a few batches, each a bounded request to the cache.
const RAISE_BATCH: usize = 1_000;

/// Raises the counters of the records `changes` names (model name, key), each once, in
/// batches of [`RAISE_BATCH`], adding their keys to `raised` for the caller to purge from the
/// HTTP caches: queued under its lock, awaited after (a purge waits [`HttpCaches::settle`],
/// which every commit waiting on the log's lock would wait again). A batch that fails goes to
/// the sweeper's retry thread like any failed invalidation, and the first error is returned
/// once every batch has been sent.
///
/// [`HttpCaches::settle`]: crate::http_cache::HttpCaches::settle
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) async fn apply(
    sweeper: &Sweeper,
    changes: &[(String, String)],
    raised: &mut Vec<String>,
) -> Result<()> {
    let mut seen = foldhash::HashSet::default();
    let keys: Vec<String> = changes
        .iter()
        .filter(|change| seen.insert(*change))
        .map(|(model, key)| sweeper.record_counter_key(model, key))
        .collect();
    let mut first_error = None;
    for batch in keys.chunks(RAISE_BATCH) {
        let (done, result) = sweeper.raise_unpurged(batch.to_vec()).await;
        raised.extend(done);
        if let Err(error) = result {
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Whether a catch-up waits for the purges of what it applied from the HTTP caches: queued
/// under the log's lock either way (so that a commit whose changes another caller applied
/// waits for that caller's purges: see [`crate::purge::Purger::purge`]), awaited after it.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[derive(Debug, Clone, Copy)]
pub(crate) enum Purging {
    /// A commit's own: the write's response must not go before the caches are purged.
    Awaited,
    /// The follower's: nobody waits on it, and its next read must not wait the settle time.
    Queued,
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl Purging {
    /// Waits for `purge` if this is a commit's.
    pub(crate) async fn finish(self, purge: crate::purge::Wait) {
        if let Purging::Awaited = self {
            purge.await;
        }
    }
}

/// How often at most a log records how far it is applied (and prunes) after ordinary changes:
/// the first change after a quiet spell is recorded as it is applied, the next ones at most
/// this late. A process killed before its last record applies the changes since again when it
/// restarts, which costs their fragments one more miss each.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// A catch-up that applied at least this many rows records its progress at once: a bulk change
/// (a seed, a migration, a 10,000-row `UPDATE`) is never applied again after a restart, which
/// would make every fragment it touched miss a second time.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
const RECORD_AT_ONCE: usize = 100;

/// When a log records its progress.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[derive(Debug, Clone, Copy)]
enum Record {
    Now,
    /// Unless it was recorded less than [`PROGRESS_EVERY`] ago.
    WhenDue,
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl Record {
    /// After a catch-up that `applied` rows: a bulk change's at once, others' when due.
    fn after(applied: &Result<usize>) -> Record {
        match applied {
            Ok(n) if *n >= RECORD_AT_ONCE => Record::Now,
            _ => Record::WhenDue,
        }
    }
}

/// What `open` says when the log's own tables are not there.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
const LOG_TABLE_MISSING: &str = "the change log's table is missing: install the log (ChangeLogBuilder::install, or the SQL of ChangeLogBuilder::migration)";

/// Logs an error of applying the log: a database's as a warning; a cache's is the sweeper's
/// (counted, logged at most once a second, and retried).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn report(error: &crate::Error) {
    match error {
        crate::Error::Database { .. } => {
            tracing::warn!(error = %crate::error::Chain(error), "cachesweeper: reading the change log failed");
        }
        _ => {
            tracing::debug!(%error, "cachesweeper: applying the change log: the cache failed; retrying")
        }
    }
}

/// The error for a tracked table that is not set up for the log.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn untracked(table: &str, problem: &str) -> crate::Error {
    crate::Error::Untracked {
        table: table.to_owned(),
        problem: problem.to_owned(),
    }
}
