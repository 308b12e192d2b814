//! Connections, and a batch sent as one pipeline per server.
//!
//! Standalone: one `ConnectionManager` (a multiplexed connection that reconnects by itself).
//! Cluster: the `cluster-async` client, which redirects a pipeline as a whole (`MOVED`), so a
//! pipeline must only hold keys of one node: the split follows a slot map of our own, read with
//! `CLUSTER SLOTS` when the connection is made and again when an exchange fails (a failover, a
//! resharding).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, RedisError, Value};

use super::super::batch;
use super::super::breaker::Breaker;
use super::super::remote::Remote;
use super::ops::Lua;
use crate::{Error, Result, lock};

/// What one key asks of the server.
pub(super) enum Kind {
    /// Its value: merged with the batch's other reads into `MGET`s.
    Get,
    /// A command of its own, sent as it is.
    Cmd(Cmd),
    /// A script on this one key (`EVALSHA`, then `EVAL` if the server does not have it yet).
    Script {
        script: &'static Lua,
        args: Vec<Vec<u8>>,
    },
}

/// One key's part of a batch.
pub(super) struct Request {
    /// The key as stored in Redis.
    pub(super) key: String,
    pub(super) kind: Kind,
}

/// What the server answered for one request (an error reply included), or why it did not.
pub(super) type Reply = Result<Value>;

/// Redis Cluster's hash slots.
const SLOTS: usize = 16_384;

/// How often at most the slot map is read again after failures.
const REFRESH_AT_MOST_EVERY: Duration = Duration::from_secs(1);

/// How old the slot map may get without a failure: it also says how many replicas each master
/// has, which raises wait for, and a replica added to a master must be waited for soon.
const SLOT_MAP_MAX_AGE: Duration = Duration::from_secs(10);

pub(super) struct Connections {
    name: String,
    limits: Remote,
    round_trips: AtomicU64,
    breakers: Mutex<HashMap<String, Arc<Breaker>>>,
    /// Servers known to hold our scripts: the first pipeline with scripts to a server (and the
    /// first after a failed exchange, which a restart causes) loads them in the same round
    /// trip, so that `EVALSHA` does not come back `NOSCRIPT` and cost another.
    scripts_loaded: Mutex<Vec<(String, &'static Lua)>>,
    mode: Mode,
    /// A cluster's connection: made at first use (start-up never waits on the cache), and
    /// again if that failed.
    cluster: tokio::sync::Mutex<Option<ClusterConnection>>,
    /// A cluster's slot map.
    slots: RwLock<Option<Arc<SlotMap>>>,
    /// When the slot map was last read, and whether an exchange has failed since.
    refresh: Mutex<(Instant, bool)>,
}

/// A standalone server, its `ConnectionManager` made on the I/O thread's runtime; or a cluster,
/// reached through the client's seed nodes at first use.
pub(super) enum Mode {
    Standalone(ConnectionManager),
    Cluster(Box<ClusterClient>),
}

/// Which master owns each slot.
#[derive(Debug)]
struct SlotMap {
    /// `host:port` of each master, for breakers and errors.
    nodes: Vec<String>,
    /// How many replicas each master has (listed by `CLUSTER SLOTS`, or attached to it when
    /// the map was read, whichever is more): what a raise waits for (see
    /// [`Connections::run`]).
    replicas: Vec<usize>,
    /// An index into `nodes` per slot; `u16::MAX` where no node serves it.
    owner: Vec<u16>,
}

impl Connections {
    pub(super) fn new(name: String, limits: Remote, mode: Mode) -> Self {
        Connections {
            name,
            limits,
            round_trips: AtomicU64::new(0),
            breakers: Mutex::default(),
            scripts_loaded: Mutex::default(),
            mode,
            cluster: tokio::sync::Mutex::default(),
            slots: RwLock::default(),
            refresh: Mutex::new((Instant::now(), true)),
        }
    }

    /// The server URL, or the cluster's seed nodes.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// Pipelines sent so far (to any server).
    pub(super) fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    fn breaker(&self, server: &str) -> Arc<Breaker> {
        let mut breakers = lock(&self.breakers);
        Arc::clone(
            breakers
                .entry(server.to_owned())
                .or_insert_with(|| Arc::new(self.limits.breaker())),
        )
    }

    /// Sends every request, one pipeline per server, and answers in the order of `requests`.
    ///
    /// `replicated`, for writes that must survive a failover (raises): on a cluster, each
    /// pipeline ends with `WAIT` for every replica its master has, and a pipeline whose writes
    /// were not acknowledged by all of them in time answers an error for each of its keys.
    /// Redis replicates asynchronously: without this, a raise the master acknowledged and its
    /// replica never received is lost when the replica is promoted, and the old fragments are
    /// found again. (A standalone server has no failover here: nothing to wait for.)
    pub(super) async fn run(&self, requests: Vec<Request>, replicated: bool) -> Vec<Reply> {
        if requests.is_empty() {
            return Vec::new();
        }
        let client = match &self.mode {
            Mode::Standalone(_) => {
                return self
                    .exchange(Target::Standalone, self.name.clone(), 0, requests)
                    .await;
            }
            Mode::Cluster(client) => client,
        };
        let (connection, map) = match self.cluster_ready(client).await {
            Ok(ready) => ready,
            Err(error) => return batch::all_err(requests.len(), error),
        };
        // Every node's pipeline at once: the batch takes one round trip of the slowest.
        batch::scatter(
            requests,
            |request| map.owner[usize::from(slot(request.key.as_bytes()))],
            |node, group| {
                let (connection, map) = (connection.clone(), &map);
                async move {
                    if node == u16::MAX {
                        let no_node = |request: &Request| {
                            Err(Error::backend_message(
                                &self.name,
                                format_args!("no node serves the slot of {:?}", request.key),
                            ))
                        };
                        return group.iter().map(no_node).collect();
                    }
                    let node = usize::from(node);
                    let target = Target::Node(connection, slot(group[0].key.as_bytes()));
                    let replicas = if replicated { map.replicas[node] } else { 0 };
                    self.exchange(target, map.nodes[node].clone(), replicas, group)
                        .await
                }
            },
        )
        .await
    }

    /// The cluster connection (made now if there is none) and the slot map (read now if it is
    /// missing or an exchange failed since it was read).
    async fn cluster_ready(
        &self,
        client: &ClusterClient,
    ) -> Result<(ClusterConnection, Arc<SlotMap>)> {
        let connection = {
            let mut slot = self.cluster.lock().await;
            match &*slot {
                Some(connection) => connection.clone(),
                None => {
                    let deadline = self.limits.connect_timeout + self.limits.io_timeout;
                    let make = async {
                        tokio::time::timeout(deadline, client.get_async_connection())
                            .await
                            .map_err(|elapsed| Error::unavailable(&self.name, elapsed))
                            .and_then(|made| made.map_err(|e| Error::unavailable(&self.name, e)))
                    };
                    let connection = self
                        .breaker(&self.name)
                        .call(&self.name, make, Result::is_err)
                        .await??;
                    *slot = Some(connection.clone());
                    connection
                }
            }
        };
        let current = self
            .slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let due = {
            let mut refresh = lock(&self.refresh);
            let age = refresh.0.elapsed();
            let due = current.is_none()
                || (refresh.1 && age >= REFRESH_AT_MOST_EVERY)
                || age >= SLOT_MAP_MAX_AGE;
            if due {
                *refresh = (Instant::now(), false);
            }
            due
        };
        if !due && let Some(map) = current {
            return Ok((connection, map));
        }
        match self.read_slot_map(&connection).await {
            Ok(map) => {
                let map = Arc::new(map);
                *self.slots.write().unwrap_or_else(PoisonError::into_inner) =
                    Some(Arc::clone(&map));
                Ok((connection, map))
            }
            // The old map is better than none: its live nodes still answer.
            Err(error) => match current {
                Some(map) => Ok((connection, map)),
                None => Err(error),
            },
        }
    }

    async fn read_slot_map(&self, connection: &ClusterConnection) -> Result<SlotMap> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let mut connection = connection.clone();
        let reply = tokio::time::timeout(
            self.limits.io_timeout,
            connection.route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            ),
        )
        .await
        .map_err(|elapsed| Error::unavailable(&self.name, elapsed))?
        .map_err(|e| Error::unavailable(&self.name, e))?;
        let mut map = SlotMap::parse(reply).ok_or_else(|| {
            Error::backend_message(&self.name, "CLUSTER SLOTS answered in an unknown form")
        })?;
        // The replicas each master has connected now: what a raise can be acknowledged by.
        // (`CLUSTER SLOTS` lists a replica only once every node's view of it has settled.)
        let asks: Vec<_> = (0..map.nodes.len())
            .filter_map(|node| {
                let slot = map.owner.iter().position(|&o| usize::from(o) == node)?;
                let mut connection = connection.clone();
                let ask = redis::cmd("INFO").arg("replication").clone();
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::new(u16::try_from(slot).ok()?, SlotAddr::Master),
                ));
                let timeout = self.limits.io_timeout;
                Some(tokio::spawn(async move {
                    let info = tokio::time::timeout(timeout, connection.route_command(ask, route));
                    (node, info.await)
                }))
            })
            .collect::<Vec<_>>();
        self.round_trips
            .fetch_add(asks.len() as u64, Ordering::Relaxed);
        for ask in asks {
            if let Ok((node, Ok(Ok(Value::BulkString(info))))) = ask.await {
                // Every replica the master has attached (`slave0:ip=…,state=…`), as well as every
                // one `CLUSTER SLOTS` lists: one that is disconnected, lagging or still syncing
                // can still be promoted, so it is waited for (the raise fails meanwhile, and is
                // retried); one the cluster has marked failed is not listed.
                let attached = String::from_utf8_lossy(&info)
                    .lines()
                    .filter(|line| line.starts_with("slave") && line.contains("state="))
                    .count();
                map.replicas[node] = map.replicas[node].max(attached);
            }
        }
        Ok(map)
    }

    /// After an exchange failed, the slot map is read again (at most once a second): a
    /// failover or a resharding may have moved the slots.
    fn suspect_slot_map(&self) {
        lock(&self.refresh).1 = true;
    }

    /// One server's part of a batch: one pipeline (and one more to load scripts the server
    /// does not have yet, after a restart), ending with `WAIT` for `replicas` replicas if there
    /// are any.
    async fn exchange(
        &self,
        target: Target,
        server: String,
        replicas: usize,
        requests: Vec<Request>,
    ) -> Vec<Reply> {
        let breaker = self.breaker(&server);
        let count = requests.len();
        let loaded: Vec<&'static Lua> = lock(&self.scripts_loaded)
            .iter()
            .filter(|(on, _)| *on == server)
            .map(|(_, script)| *script)
            .collect();
        let Plan {
            mut pipeline,
            loads,
            answers,
            scripts,
        } = plan(&target, requests, &loaded);
        // Half the exchange's time for the replicas: a slow replica fails the raise, not the
        // exchange (which would count against the master's breaker).
        let wait = (replicas > 0).then(|| {
            let ms = u64::try_from(self.limits.io_timeout.as_millis() / 2).unwrap_or(u64::MAX);
            redis::cmd("WAIT").arg(replicas).arg(ms.max(1)).clone()
        });
        if let Some(wait) = &wait {
            pipeline.add_command(wait.clone());
        }
        let replies = loads.len() + answers.len() + usize::from(wait.is_some());
        let sent = breaker.call(
            &server,
            self.send(&target, pipeline, replies),
            Result::is_err,
        );
        let mut values = match sent.await {
            Err(skipped) => return batch::all_err(count, skipped),
            Ok(Ok(values)) => values,
            Ok(Err(error)) => {
                self.suspect_slot_map();
                lock(&self.scripts_loaded).retain(|(on, _)| *on != server);
                return batch::all_err(count, Error::unavailable(&server, error));
            }
        };
        let mut acknowledged = wait.as_ref().and_then(|_| values.pop());
        if !loads.is_empty() {
            values.drain(..loads.len());
            let mut known = lock(&self.scripts_loaded);
            known.extend(loads.into_iter().map(|script| (server.clone(), script)));
        }
        // Scripts the server did not know (it restarted, or is new): once more with the body.
        let unknown: Vec<_> = scripts
            .iter()
            .filter(
                |(at, ..)| matches!(&values[*at], Value::ServerError(e) if e.code() == "NOSCRIPT"),
            )
            .collect();
        if !unknown.is_empty() {
            let mut retry = Pipeline::with_capacity(unknown.len() + 1);
            for (_, script, key, args) in &unknown {
                retry.add_command(call("EVAL", script.source, key, args));
            }
            if let Some(wait) = &wait {
                retry.add_command(wait.clone());
            }
            let sent = unknown.len() + usize::from(wait.is_some());
            match self.send(&target, retry, sent).await {
                Ok(mut again) => {
                    if wait.is_some() {
                        acknowledged = again.pop();
                    }
                    for ((at, ..), value) in unknown.into_iter().zip(again) {
                        values[*at] = value;
                    }
                }
                Err(error) => {
                    return batch::all_err(count, Error::unavailable(&server, error));
                }
            }
        }
        if wait.is_some() {
            let acks = match acknowledged {
                Some(Value::Int(acks)) => usize::try_from(acks).unwrap_or(0),
                _ => 0,
            };
            if acks < replicas {
                // A replica gone or lagging: the cluster may mark it failed, and the map (which
                // says how many to wait for) is read again.
                self.suspect_slot_map();
                let error = Error::backend_message(
                    &server,
                    format_args!(
                        "written, but acknowledged by {acks} of its {replicas} replicas in time: \
                         it might not survive a failover"
                    ),
                );
                return batch::all_err(count, error);
            }
        }
        let mut out: Vec<(usize, Reply)> = Vec::with_capacity(count);
        for (answer, value) in answers.into_iter().zip(values) {
            match answer {
                Answer::One(i) => out.push((i, Ok(value))),
                Answer::Many(many) => match value {
                    Value::Array(items) if items.len() == many.len() => {
                        out.extend(many.into_iter().zip(items.into_iter().map(Ok)));
                    }
                    // An error reply (or a malformed one) answers for every key of the MGET.
                    other => out.extend(many.into_iter().map(|i| (i, Ok(other.clone())))),
                },
            }
        }
        batch::in_order(count, out, || {
            Err(Error::backend_message(&server, "no reply in the pipeline"))
        })
    }

    /// Sends one pipeline and returns its `count` replies, within the exchange's deadline.
    async fn send(
        &self,
        target: &Target,
        pipeline: Pipeline,
        count: usize,
    ) -> std::result::Result<Vec<Value>, RedisError> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let sent = async {
            match (target, &self.mode) {
                (Target::Standalone, Mode::Standalone(manager)) => {
                    let mut manager = manager.clone();
                    match manager.send_packed_commands(&pipeline, 0, count).await {
                        // A connection found dead (the server restarted) fails at once, and
                        // the manager starts a new one: this waits for it, within the same
                        // deadline, so that a probe after the retry window can succeed. A
                        // pipeline cut off midway is sent again: what the sweeper sends is safe
                        // to repeat (reads, stores, leases, releases; a raise adds at most one
                        // more), though an `incr_each` by a delta may count twice.
                        Err(error) if error.is_unrecoverable_error() || error.is_io_error() => {
                            manager.send_packed_commands(&pipeline, 0, count).await
                        }
                        answered => answered,
                    }
                }
                (Target::Node(connection, slot), _) => {
                    connection
                        .clone()
                        .route_pipeline(
                            pipeline,
                            0,
                            count,
                            SingleNodeRoutingInfo::SpecificNode(Route::new(
                                *slot,
                                SlotAddr::Master,
                            )),
                        )
                        .await
                }
                (Target::Standalone, Mode::Cluster(_)) => unreachable!("a cluster routes by node"),
            }
        };
        let values = tokio::time::timeout(self.limits.io_timeout, sent)
            .await
            .map_err(|_| RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))??;
        if values.len() == count {
            Ok(values)
        } else {
            Err(RedisError::from(std::io::Error::other(format!(
                "{} replies to a pipeline of {count}",
                values.len()
            ))))
        }
    }
}

/// Where a pipeline goes.
enum Target {
    Standalone,
    /// The cluster node that owns this slot (and the pipeline's other keys).
    Node(ClusterConnection, u16),
}

/// Which keys of the batch a pipeline's reply answers: one, or several (an `MGET`).
enum Answer {
    One(usize),
    Many(Vec<usize>),
}

/// One server's pipeline, what each reply answers, and the scripts in it (their position, and
/// what to send again with `EVAL` if the server does not have them).
struct Plan {
    pipeline: Pipeline,
    /// The scripts whose `SCRIPT LOAD` the pipeline starts with.
    loads: Vec<&'static Lua>,
    answers: Vec<Answer>,
    scripts: Vec<(usize, &'static Lua, String, Vec<Vec<u8>>)>,
}

/// `EVALSHA hash 1 key args...` or `EVAL source 1 key args...`.
fn call(verb: &str, script: &str, key: &str, args: &[Vec<u8>]) -> Cmd {
    let mut cmd = redis::cmd(verb);
    cmd.arg(script).arg(1).arg(key);
    for arg in args {
        cmd.arg(arg.as_slice());
    }
    cmd
}

/// `loaded`: the scripts the server is known to hold; the others are loaded first.
fn plan(target: &Target, requests: Vec<Request>, loaded: &[&'static Lua]) -> Plan {
    let mut pipeline = Pipeline::with_capacity(requests.len());
    let mut loads: Vec<&'static Lua> = Vec::new();
    for request in &requests {
        if let Kind::Script { script, .. } = request.kind
            && !loaded
                .iter()
                .chain(&loads)
                .any(|known| std::ptr::eq(*known, script))
        {
            loads.push(script);
        }
    }
    for script in &loads {
        pipeline.add_command(redis::cmd("SCRIPT").arg("LOAD").arg(script.source).clone());
    }
    let mut answers = Vec::with_capacity(requests.len());
    let mut scripts = Vec::new();
    // Reads by slot: an MGET on a cluster must stay within one (standalone: all in one).
    let mut reads: HashMap<u16, (Cmd, Vec<usize>)> = HashMap::new();
    for (i, request) in requests.into_iter().enumerate() {
        match request.kind {
            Kind::Get => {
                let slot = match target {
                    Target::Standalone => 0,
                    Target::Node(..) => slot(request.key.as_bytes()),
                };
                let (mget, many) = reads
                    .entry(slot)
                    .or_insert_with(|| (redis::cmd("MGET"), Vec::new()));
                mget.arg(&request.key);
                many.push(i);
            }
            Kind::Cmd(cmd) => {
                pipeline.add_command(cmd);
                answers.push(Answer::One(i));
            }
            Kind::Script { script, args } => {
                pipeline.add_command(call("EVALSHA", script.hash(), &request.key, &args));
                scripts.push((answers.len(), script, request.key, args));
                answers.push(Answer::One(i));
            }
        }
    }
    for (_, (mget, many)) in reads {
        pipeline.add_command(mget);
        answers.push(Answer::Many(many));
    }
    Plan {
        pipeline,
        loads,
        answers,
        scripts,
    }
}

impl SlotMap {
    /// Reads a `CLUSTER SLOTS` reply: `[[start, end, [host, port, id, ...], replicas...], ...]`.
    fn parse(reply: Value) -> Option<SlotMap> {
        let Value::Array(ranges) = reply else {
            return None;
        };
        let mut nodes: Vec<String> = Vec::new();
        let mut replicas: Vec<usize> = Vec::new();
        let mut owner = vec![u16::MAX; SLOTS];
        for range in ranges {
            let Value::Array(fields) = range else {
                return None;
            };
            let (start, end) = (int(fields.first()?)?, int(fields.get(1)?)?);
            let Value::Array(master) = fields.get(2)? else {
                return None;
            };
            let host = match master.first()? {
                Value::BulkString(host) => String::from_utf8_lossy(host).into_owned(),
                Value::SimpleString(host) => host.clone(),
                _ => return None,
            };
            let node = format!("{host}:{}", int(master.get(1)?)?);
            let index = match nodes.iter().position(|n| *n == node) {
                Some(index) => index,
                None => {
                    nodes.push(node);
                    replicas.push(fields.len().saturating_sub(3));
                    nodes.len() - 1
                }
            };
            let index = u16::try_from(index).ok()?;
            let (start, end) = (usize::try_from(start).ok()?, usize::try_from(end).ok()?);
            if start > end || end >= SLOTS {
                return None;
            }
            owner[start..=end].fill(index);
        }
        Some(SlotMap {
            nodes,
            replicas,
            owner,
        })
    }
}

fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        Value::BulkString(s) => std::str::from_utf8(s).ok()?.parse().ok(),
        _ => None,
    }
}

/// The hash slot of a key, as Redis Cluster computes it: CRC16 (XMODEM) of the hash tag (the
/// part between the first `{` and the next `}`, when not empty) or of the whole key.
pub(super) fn slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let close = key[open + 1..].iter().position(|&b| b == b'}')?;
            let tag = &key[open + 1..open + 1 + close];
            (!tag.is_empty()).then_some(tag)
        })
        .unwrap_or(key);
    crc16(hashed) % SLOTS as u16
}

fn crc16(bytes: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_as_redis_computes_them() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
        assert_eq!(slot(b"foo{{bar}}zap"), crc16(b"{bar") % 16384);
    }

    #[test]
    fn a_cluster_slots_reply() {
        let node = |port: i64| {
            Value::Array(vec![
                Value::BulkString(b"127.0.0.1".to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node(7000),
                node(7003),
            ]),
            Value::Array(vec![Value::Int(5461), Value::Int(16383), node(7001)]),
        ]);
        let map = SlotMap::parse(reply).unwrap();
        assert_eq!(map.nodes, ["127.0.0.1:7000", "127.0.0.1:7001"]);
        assert_eq!((map.owner[0], map.owner[5460], map.owner[5461]), (0, 0, 1));
        assert!(SlotMap::parse(Value::Nil).is_none());
    }
}
