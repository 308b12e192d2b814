//! The backend's operations, each written once as an `async fn` over owned keys, run as a task
//! on the I/O thread by blocking and async callers alike; and the Lua scripts they use.
//!
//! Counters are decimal strings in Redis (what `INCR` makes). Lua's numbers are doubles, exact
//! only to 2^53, and a counter holds nanoseconds since the epoch (about 2^60), so the scripts
//! never do arithmetic in Lua: `INCR`/`INCRBY` add in Redis, values come back with `GET` as
//! strings, and the floor of a raise is compared as a decimal string.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::Value;

use super::conn::{Connections, Kind, Reply, Request};
use crate::backend::Leased;
use crate::{Error, Result};

/// [`COUNTER_TTL`](crate::backend::COUNTER_TTL) as Redis takes it: set when a counter is
/// created or written, and refreshed by reads (see [`REFRESH_EVERY`]).
pub(super) const COUNTER_TTL_SECS: u64 = crate::backend::COUNTER_TTL.as_secs();

/// Batches of counter reads so far, in this process.
static READS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// One batch of counter reads in this many also refreshes the time to live of what it reads, in
/// the same pipelines: a hot record read for 30 days and never raised would expire (and cost a
/// render that cannot store), and refreshing on every read would make every version read a
/// write, replicated and logged.
const REFRESH_EVERY: u64 = 64;

/// A Lua script, sent by its SHA-1 (`EVALSHA`) and by its body when the server lacks it.
pub(crate) struct Lua {
    pub(super) source: &'static str,
    hash: OnceLock<String>,
}

impl Lua {
    const fn new(source: &'static str) -> Lua {
        Lua {
            source,
            hash: OnceLock::new(),
        }
    }

    pub(super) fn hash(&self) -> &str {
        self.hash
            .get_or_init(|| redis::Script::new(self.source).get_hash().to_owned())
    }
}

/// Adds `delta`, or creates the counter at `initial` without adding: memcached's `ma` with
/// `N` and `J`, atomic because a script runs alone. ARGV: delta, initial, ttl in seconds.
static INCR: Lua = Lua::new(
    r"if redis.call('SET', KEYS[1], ARGV[2], 'NX', 'EX', ARGV[3]) then return ARGV[2] end
redis.call('INCRBY', KEYS[1], ARGV[1])
if ARGV[1] ~= '0' then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return redis.call('GET', KEYS[1])",
);

/// Sets the counter to the even number at or above max(value + 1, floor), creating a missing
/// one at `floor | 1` (see `Backend::raise_each`). ARGV: floor (even), floor | 1, ttl. A counter
/// found odd is confirmed past the server's clock too, which is after its creation (the
/// server's clock is then one of the clocks that must agree within
/// `SweeperBuilder::clock_skew`).
static RAISE: Lua = Lua::new(
    r"local floor = ARGV[1]
if redis.call('SET', KEYS[1], ARGV[2], 'NX', 'EX', ARGV[3]) then return ARGV[2] end
local found = redis.call('GET', KEYS[1])
if string.find('13579', string.sub(found, -1), 1, true) then
  local t = redis.call('TIME')
  local now = t[1] .. string.rep('0', 6 - #t[2]) .. t[2] .. '000'
  if #now > #floor or (#now == #floor and now > floor) then floor = now end
end
redis.call('INCR', KEYS[1])
local value = redis.call('GET', KEYS[1])
if #value < #floor or (#value == #floor and value < floor) then
  redis.call('SET', KEYS[1], floor, 'EX', ARGV[3])
  return floor
end
if string.find('13579', string.sub(value, -1), 1, true) then
  redis.call('INCR', KEYS[1])
  value = redis.call('GET', KEYS[1])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return value",
);

/// Takes the lease on a missing fragment: the value if there is one (a fragment, or another
/// caller's placeholder), else nil after leaving this caller's placeholder for `ms`.
/// ARGV: placeholder, ms.
static LEASE: Lua = Lua::new(
    r"local value = redis.call('GET', KEYS[1])
if value then return value end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false",
);

/// Deletes the key only while it holds this caller's placeholder: never a stored fragment,
/// never another caller's lease. ARGV: placeholder.
static RELEASE: Lua = Lua::new(
    r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0",
);

/// What a lease placeholder starts with. A stored fragment starts with the envelope's magic
/// (`cs\x02f`), so the two never meet; a reader that finds a placeholder has no value.
pub(super) const PLACEHOLDER_PREFIX: &[u8] = b"cs\x00lease:";

fn is_placeholder(value: &[u8]) -> bool {
    value.starts_with(PLACEHOLDER_PREFIX)
}

/// A batch of one kind of request on each key.
fn requests(keys: Vec<String>, kind: impl Fn() -> Kind) -> Vec<Request> {
    keys.into_iter()
        .map(|key| Request { key, kind: kind() })
        .collect()
}

fn script(script: &'static Lua, args: Vec<Vec<u8>>) -> impl Fn() -> Kind + use<> {
    move || Kind::Script {
        script,
        args: args.clone(),
    }
}

/// Numbers as a script's arguments: decimal strings.
fn decimal(numbers: &[u64]) -> Vec<Vec<u8>> {
    numbers.iter().map(|n| n.to_string().into_bytes()).collect()
}

/// An error reply, as the crate's error.
fn refused(conns: &Connections, reply: &Value) -> Error {
    match reply {
        Value::ServerError(error) => Error::backend(conns.name(), error.clone()),
        other => Error::backend_message(conns.name(), format_args!("unexpected reply {other:?}")),
    }
}

/// A counter's value; a value that is not one (or a script's complaint about it) is
/// [`Error::NotACounter`].
fn counter(conns: &Connections, key: &str, reply: Reply) -> Result<Option<u64>> {
    let not_a_counter = || Error::NotACounter {
        key: key.to_owned(),
    };
    match reply? {
        Value::Nil => Ok(None),
        Value::Int(n) => u64::try_from(n).map(Some).map_err(|_| not_a_counter()),
        Value::BulkString(digits) => std::str::from_utf8(&digits)
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(not_a_counter),
        Value::ServerError(error)
            if error
                .details()
                .is_some_and(|d| d.contains("not an integer")) =>
        {
            Err(not_a_counter())
        }
        other => Err(refused(conns, &other)),
    }
}

/// A counter a script answered: never nil (`nil` says why it is an error).
fn scripted(conns: &Connections, key: &str, reply: Reply, nil: &str) -> Result<u64> {
    counter(conns, key, reply)?.ok_or_else(|| Error::backend_message(conns.name(), nil))
}

/// Reads first, with the batch's other reads (`MGET`): a warm page's fragments cost no write.
/// Only the keys that missed take a lease, in a second exchange.
pub(super) async fn get_leased(
    conns: Arc<Connections>,
    keys: Vec<String>,
    lease: Duration,
    placeholder: Arc<[u8]>,
) -> Vec<Result<Leased>> {
    let leased = |reply: Reply| match reply? {
        Value::Nil => Ok(Leased::Won),
        // Ours: a lease this process took, asked again (or a retried script's own).
        Value::BulkString(bytes) if *bytes == *placeholder => Ok(Leased::Won),
        Value::BulkString(bytes) if is_placeholder(&bytes) => Ok(Leased::Busy),
        Value::BulkString(bytes) => Ok(Leased::Hit(bytes)),
        other => Err(refused(&conns, &other)),
    };
    let replies = conns.run(requests(keys.clone(), || Kind::Get), false).await;
    let missing: Vec<usize> = (0..replies.len())
        .filter(|&i| matches!(replies[i], Ok(Value::Nil)))
        .collect();
    let mut out: Vec<Result<Leased>> = replies.into_iter().map(leased).collect();
    if missing.is_empty() {
        return out;
    }
    let ms = u64::try_from(lease.as_millis())
        .unwrap_or(u64::MAX)
        .max(1000);
    let take = script(
        &LEASE,
        vec![placeholder.to_vec(), ms.to_string().into_bytes()],
    );
    let batch = missing.iter().map(|&i| keys[i].clone()).collect();
    let replies = conns.run(requests(batch, take), false).await;
    for (i, reply) in missing.into_iter().zip(replies) {
        out[i] = leased(reply);
    }
    out
}

/// Ok if every reply is `ok`; else the first error, or the first other reply as one.
fn all_ok(conns: &Connections, replies: Vec<Reply>, ok: impl Fn(&Value) -> bool) -> Result<()> {
    for reply in replies {
        let reply = reply?;
        if !ok(&reply) {
            return Err(refused(conns, &reply));
        }
    }
    Ok(())
}

/// Stores prepared `SET`s; the first failure is the batch's.
pub(super) async fn set_many(conns: Arc<Connections>, sets: Vec<Request>) -> Result<()> {
    let replies = conns.run(sets, false).await;
    all_ok(&conns, replies, |reply| match reply {
        Value::SimpleString(ok) => ok == "OK",
        reply => matches!(reply, Value::Okay),
    })
}

/// With `delta` 0 (every page's version read) a plain read first: only counters that are
/// missing are created, in a second exchange.
pub(super) async fn incr_each(
    conns: Arc<Connections>,
    keys: Vec<String>,
    names: Vec<String>,
    delta: u64,
    initial: u64,
) -> Vec<Result<u64>> {
    let bump = script(&INCR, decimal(&[delta, initial, COUNTER_TTL_SECS]));
    let mut out: Vec<Result<u64>> = Vec::with_capacity(keys.len());
    let mut missing = Vec::new();
    if delta == 0 {
        let mut reads = requests(keys.clone(), || Kind::Get);
        if READS
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .is_multiple_of(REFRESH_EVERY)
        {
            reads.extend(keys.iter().map(|key| Request {
                key: key.clone(),
                kind: Kind::Cmd(redis::cmd("EXPIRE").arg(key).arg(COUNTER_TTL_SECS).clone()),
            }));
        }
        let mut replies = conns.run(reads, false).await;
        replies.truncate(keys.len());
        for (i, reply) in replies.into_iter().enumerate() {
            let found = counter(&conns, &names[i], reply);
            if matches!(found, Ok(None)) {
                missing.push(i);
            }
            out.push(found.map(|n| n.unwrap_or(initial)));
        }
    } else {
        out.extend((0..keys.len()).map(|_| Ok(initial)));
        missing.extend(0..keys.len());
    }
    if missing.is_empty() {
        return out;
    }
    let batch = missing.iter().map(|&i| keys[i].clone()).collect();
    let replies = conns.run(requests(batch, bump), false).await;
    for (i, reply) in missing.into_iter().zip(replies) {
        out[i] = scripted(&conns, &names[i], reply, "a counter script answered nil");
    }
    out
}

pub(super) async fn raise_each(
    conns: Arc<Connections>,
    keys: Vec<String>,
    names: Vec<String>,
    floor: u64,
) -> Vec<Result<u64>> {
    let floor = crate::versions::confirmed(floor);
    let raise = script(&RAISE, decimal(&[floor, floor | 1, COUNTER_TTL_SECS]));
    let replies = conns.run(requests(keys, raise), true).await;
    let replies = replies.into_iter().zip(&names);
    replies
        .map(|(reply, name)| scripted(&conns, name, reply, "a raise script answered nil"))
        .collect()
}

pub(super) async fn release_leases(
    conns: Arc<Connections>,
    keys: Vec<String>,
    placeholder: Arc<[u8]>,
) -> Result<()> {
    let release = script(&RELEASE, vec![placeholder.to_vec()]);
    let replies = conns.run(requests(keys, release), false).await;
    all_ok(&conns, replies, |reply| matches!(reply, Value::Int(_)))
}
