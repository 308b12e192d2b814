//! Purging tags from the HTTP caches in front: the one place that speaks to them.
//!
//! Each cache has a thread of its own, so that one that hangs holds up no other. A purge is
//! queued for every cache at once ([`Purger::purge`], which returns a future that a blocking
//! and an async invalidation await alike); what queues while a cache's thread sends is sent
//! together, in one request. Each purge is sent a second time [`HttpCaches::settle`] later,
//! and its future is done then (see [`crate::http_cache`]: for a page that was on its way to
//! the cache during the first). A cache that fails keeps its tags here and is retried with
//! backoff until it takes them: a purge is never forgotten while the process lives, and while
//! a cache is failing no invalidation waits on it.
//!
//! The request is hand-written HTTP/1.1 on a std socket: one request line and a few headers,
//! and the status line of the answer. An HTTP client crate would bring a runtime's worth of
//! dependencies to every application for it.

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::pin::Pin;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::http_cache::HttpCaches;
use crate::lock;

/// The first wait before a failed cache is tried again, doubled up to [`MAX_WAIT`].
const FIRST_WAIT: Duration = Duration::from_millis(50);
const MAX_WAIT: Duration = Duration::from_secs(1);

/// How many bytes of tags one request carries at most (Varnish refuses a header line longer
/// than 8 KiB by default).
const MAX_TAG_BYTES: usize = 4000;

/// The purges of one sweeper: a queue per cache, each with its thread.
#[derive(Debug)]
pub(crate) struct Purger {
    caches: Vec<Arc<Queue>>,
}

impl Purger {
    /// Starts a thread for each of `caches`.
    pub(crate) fn start(caches: &HttpCaches) -> Purger {
        let caches = caches
            .purge_to
            .iter()
            .map(|address| {
                let queue = Arc::new(Queue {
                    address: address.clone(),
                    purge_header: caches.purge_header.clone(),
                    timeout: caches.timeout,
                    settle: caches.settle,
                    state: Mutex::default(),
                    wake: Condvar::new(),
                    lookup: PendingLookup::default(),
                });
                let thread = Arc::clone(&queue);
                let spawned = std::thread::Builder::new()
                    .name("cachesweeper-purge".into())
                    .spawn(move || thread.run());
                if let Err(error) = spawned {
                    tracing::error!(%error, cache = %address, "cachesweeper: cannot start a purge thread; this cache is never purged");
                    queue.state().closed = true;
                }
                queue
            })
            .collect();
        Purger { caches }
    }

    /// Queues `tags` to be purged from every cache, now, and returns what waits for it: done
    /// once each cache took them a second time, or failed (and keeps them to retry). With no
    /// tags it waits for every purge queued before it (a commit whose changes another caller
    /// applied and queued).
    pub(crate) fn purge(&self, tags: Vec<String>) -> Wait {
        let done = Arc::new(Done::new(self.caches.len()));
        for queue in &self.caches {
            queue.add(&tags, &done);
        }
        Wait(done)
    }

    /// Whether some purge has not reached every cache yet.
    pub(crate) fn pending(&self) -> bool {
        self.caches.iter().any(|queue| !queue.state().is_empty())
    }
}

impl Drop for Purger {
    fn drop(&mut self) {
        for queue in &self.caches {
            queue.state().closed = true;
            queue.wake.notify_one();
        }
    }
}

/// One cache, its purges and its thread.
#[derive(Debug)]
struct Queue {
    address: String,
    purge_header: String,
    timeout: Duration,
    settle: Duration,
    state: Mutex<State>,
    wake: Condvar,
    lookup: PendingLookup,
}

#[derive(Debug, Default)]
struct State {
    /// Tags to send now, and who waits for their second sending.
    first: BTreeSet<String>,
    first_waiting: Vec<Arc<Done>>,
    /// Tags sent once, to send again when their time comes (in that order: one delay), with
    /// who waits for them.
    second: VecDeque<(Instant, BTreeSet<String>, Vec<Arc<Done>>)>,
    /// After a failure: the tags the cache has not taken, when to try again, and how long the
    /// wait after that is. Nobody waits on a failing cache.
    failing: Option<Failing>,
    /// The sending under way, if any (its tags are in none of the above meanwhile), and who
    /// came to wait for it since (an empty purge, for everything queued before it).
    sending: Option<Sending>,
    sending_waiting: Vec<Arc<Done>>,
    /// Every handle is gone: stop once nothing is left.
    closed: bool,
}

#[derive(Debug)]
struct Failing {
    tags: BTreeSet<String>,
    next_try: Instant,
    wait: Duration,
}

impl State {
    fn is_empty(&self) -> bool {
        self.first.is_empty()
            && self.second.is_empty()
            && self.failing.is_none()
            && self.sending.is_none()
    }
}

/// Which sending is under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sending {
    First,
    Second,
    Retry,
}

/// What a cache's thread does next.
enum Step {
    First(BTreeSet<String>, Vec<Arc<Done>>),
    Second(BTreeSet<String>, Vec<Arc<Done>>),
    Retry(BTreeSet<String>),
    Stop,
}

impl Queue {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Queues `tags` for this cache; `done` is counted down once they are taken twice, at once
    /// if the cache is failing (they are kept for it) or if there is nothing to wait for.
    fn add(&self, tags: &[String], done: &Arc<Done>) {
        let mut state = self.state();
        if state.closed {
            // No thread (it could not start): kept, so that `pending` says so, and nobody
            // waits for it.
            state.first.extend(tags.iter().cloned());
            done.finish();
            return;
        }
        if let Some(failing) = &mut state.failing {
            failing.tags.extend(tags.iter().cloned());
            done.finish();
            return;
        }
        if !tags.is_empty() || !state.first.is_empty() {
            state.first.extend(tags.iter().cloned());
            state.first_waiting.push(Arc::clone(done));
        } else {
            // Nothing of its own: it waits for the newest purge queued before it, whose
            // second sending is the last of them.
            let state = &mut *state;
            let newest = match (state.sending, state.second.back_mut()) {
                (Some(Sending::First), _) => &mut state.sending_waiting,
                (_, Some((.., waiting))) => waiting,
                (Some(Sending::Second), None) => &mut state.sending_waiting,
                (Some(Sending::Retry) | None, None) => {
                    done.finish();
                    return;
                }
            };
            newest.push(Arc::clone(done));
        }
        drop(state);
        self.wake.notify_one();
    }

    /// The cache's thread: until every handle is gone and nothing is left to send.
    fn run(&self) {
        loop {
            let step = self.next_step();
            let sent = match &step {
                Step::First(tags, _) | Step::Second(tags, _) | Step::Retry(tags) => self.send(tags),
                Step::Stop => return,
            };
            self.record(step, sent);
        }
    }

    /// Keeps what came of `step`, in one critical section with the end of its sending (so
    /// that nobody comes to wait for a sending that is over).
    fn record(&self, step: Step, sent: std::io::Result<()>) {
        let mut state = self.state();
        state.sending = None;
        // Those who came to wait for this sending while it was under way.
        let mut joined = std::mem::take(&mut state.sending_waiting);
        match (step, sent) {
            (Step::First(tags, mut waiting), Ok(())) => {
                waiting.append(&mut joined);
                state
                    .second
                    .push_back((Instant::now() + self.settle, tags, waiting));
            }
            (Step::Second(_, waiting), Ok(())) => {
                waiting.iter().chain(&joined).for_each(|done| done.finish());
            }
            (Step::First(tags, mut waiting) | Step::Second(tags, mut waiting), Err(error)) => {
                waiting.append(&mut joined);
                self.fail(&mut state, tags, waiting, &error);
            }
            (Step::Retry(tags), Ok(())) => {
                tracing::info!(cache = %self.address, "cachesweeper: HTTP cache purged again after failing");
                // Sent again after the settle time, as any purge; what was added meanwhile is
                // sent now.
                if let Some(failing) = state.failing.take() {
                    state.first.extend(failing.tags);
                }
                state
                    .second
                    .push_back((Instant::now() + self.settle, tags, joined));
            }
            (Step::Retry(tags), Err(_)) => {
                if let Some(failing) = &mut state.failing {
                    failing.tags.extend(tags);
                    failing.wait = (failing.wait * 2).min(MAX_WAIT);
                    failing.next_try = Instant::now() + failing.wait;
                }
                joined.iter().for_each(|done| done.finish());
            }
            (Step::Stop, _) => {}
        }
    }

    /// Waits for the next thing to do: a retry of a failing cache, a second sending that is
    /// due (before new purges: a steady stream of them must not hold up every wait), or the
    /// first sending of what is queued.
    fn next_step(&self) -> Step {
        let mut state = self.state();
        loop {
            let now = Instant::now();
            if let Some(failing) = &mut state.failing
                && failing.next_try <= now
            {
                // Taken out: a purge of the same tag added meanwhile is sent after this one.
                let tags = std::mem::take(&mut failing.tags);
                state.sending = Some(Sending::Retry);
                return Step::Retry(tags);
            }
            if state.second.front().is_some_and(|second| second.0 <= now) {
                let (_, tags, waiting) = state.second.pop_front().expect("a front");
                if let Some(failing) = &mut state.failing {
                    failing.tags.extend(tags);
                    waiting.iter().for_each(|done| done.finish());
                    continue;
                }
                state.sending = Some(Sending::Second);
                return Step::Second(tags, waiting);
            }
            if state.failing.is_none() && !state.first.is_empty() {
                let tags = std::mem::take(&mut state.first);
                let waiting = std::mem::take(&mut state.first_waiting);
                state.sending = Some(Sending::First);
                return Step::First(tags, waiting);
            }
            if state.closed && state.is_empty() {
                return Step::Stop;
            }
            let next = state
                .failing
                .as_ref()
                .map(|f| f.next_try)
                .into_iter()
                .chain(state.second.front().map(|s| s.0))
                .min();
            state = match next {
                Some(at) => {
                    let wait = at.saturating_duration_since(now);
                    self.wake
                        .wait_timeout(state, wait)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0
                }
                None => self
                    .wake
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            };
        }
    }

    /// The cache did not take `tags`: keep them (with anything queued for it) to retry, and
    /// let nobody wait on it meanwhile.
    fn fail(
        &self,
        state: &mut State,
        mut tags: BTreeSet<String>,
        waiting: Vec<Arc<Done>>,
        error: &std::io::Error,
    ) {
        if state.failing.is_none() {
            tracing::warn!(cache = %self.address, %error, tags = tags.len(), "cachesweeper: HTTP cache purge failed; retrying in the background");
        }
        tags.append(&mut state.first);
        let queued = std::mem::take(&mut state.first_waiting);
        let failing = state.failing.get_or_insert(Failing {
            tags: BTreeSet::new(),
            next_try: Instant::now() + FIRST_WAIT,
            wait: FIRST_WAIT,
        });
        failing.tags.append(&mut tags);
        waiting.iter().chain(&queued).for_each(|done| done.finish());
    }

    /// Sends `tags` to the cache in as few `PURGE` requests as fit [`MAX_TAG_BYTES`] each: all
    /// of them taken (a 2xx answer to each), or the first failure.
    fn send(&self, tags: &BTreeSet<String>) -> std::io::Result<()> {
        let mut batch = String::new();
        for tag in tags {
            if !batch.is_empty() && batch.len() + tag.len() >= MAX_TAG_BYTES {
                self.send_one(&batch)?;
                batch.clear();
            }
            if !batch.is_empty() {
                batch.push(' ');
            }
            batch.push_str(tag);
        }
        self.send_one(&batch)
    }

    /// One `PURGE`, to the first of the cache's addresses that takes a connection, within the
    /// timeout all told.
    fn send_one(&self, tags: &str) -> std::io::Result<()> {
        let deadline = Instant::now() + self.timeout;
        let left = || {
            deadline
                .checked_duration_since(Instant::now())
                .filter(|left| !left.is_zero())
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::TimedOut))
        };
        let addresses = self.lookup.resolve(&self.address, left()?, system_lookup)?;
        let mut last_error =
            std::io::Error::new(std::io::ErrorKind::NotFound, "the address names no host");
        let mut stream = None;
        for address in addresses {
            match TcpStream::connect_timeout(&address, left()?) {
                Ok(connected) => {
                    stream = Some(connected);
                    break;
                }
                Err(error) => last_error = error,
            }
        }
        let mut stream = stream.ok_or(last_error)?;
        stream.set_write_timeout(Some(left()?))?;
        write!(
            stream,
            "PURGE / HTTP/1.1\r\nHost: {}\r\n{}: {tags}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.address, self.purge_header
        )?;
        stream.set_read_timeout(Some(left()?))?;
        let mut status = String::new();
        // The status line only, and not a byte more than one needs.
        BufReader::new(stream.take(256)).read_line(&mut status)?;
        // `HTTP/1.1 200 Purged 3`, or `HTTP/1.1 200` with no reason.
        let code = status.split_whitespace().nth(1).unwrap_or("");
        if code.len() == 3 && code.starts_with('2') {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "the cache answered {:?}",
                status.trim_end()
            )))
        }
    }
}

/// How a host name is looked up: [`system_lookup`], or a stand-in in tests.
type Lookup = fn(&str) -> std::io::Result<Vec<SocketAddr>>;

/// The system resolver's answer for `host:port`.
fn system_lookup(name: &str) -> std::io::Result<Vec<SocketAddr>> {
    Ok(name.to_socket_addrs()?.collect())
}

/// The name lookup of a cache's address that is under way, if any.
#[derive(Debug, Default)]
struct PendingLookup(Mutex<Option<Receiver<std::io::Result<Vec<SocketAddr>>>>>);

impl PendingLookup {
    /// The addresses of a cache given as `IP:port` (at once) or `host:port`, looked up by
    /// `lookup` within `within`. A lookup blocks and has no timeout of its own (a resolver that
    /// does not answer holds it for seconds), so it runs on a thread of its own. One that is
    /// not done in time is waited for again by the next call rather than started anew: at most
    /// one thread per cache waits on a resolver that does not answer.
    fn resolve(
        &self,
        address: &str,
        within: Duration,
        lookup: Lookup,
    ) -> std::io::Result<Vec<SocketAddr>> {
        if let Ok(address) = address.parse() {
            return Ok(vec![address]);
        }
        let mut pending = lock(&self.0);
        let answer = match pending.take() {
            Some(answer) => answer,
            None => {
                let (answered, answer) = std::sync::mpsc::channel();
                let name = address.to_owned();
                std::thread::Builder::new()
                    .name("cachesweeper-resolve".into())
                    .spawn(move || {
                        let _ = answered.send(lookup(&name));
                    })?;
                answer
            }
        };
        match answer.recv_timeout(within) {
            Ok(addresses) => addresses,
            Err(RecvTimeoutError::Timeout) => {
                *pending = Some(answer);
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no address for {address} within {within:?}"),
                ))
            }
            Err(RecvTimeoutError::Disconnected) => Err(std::io::Error::other(format!(
                "the lookup of {address} ended without an answer"
            ))),
        }
    }
}

/// Whether a purge is done at every cache, and who waits for it: a one-shot that a blocking
/// caller (through `io::block_on`) and an async one await alike.
#[derive(Debug)]
struct Done(Mutex<(usize, Option<Waker>)>);

impl Done {
    /// Done once [`finish`](Self::finish)ed `caches` times.
    fn new(caches: usize) -> Done {
        Done(Mutex::new((caches, None)))
    }

    fn finish(&self) {
        let waker = {
            let mut state = lock(&self.0);
            state.0 = state.0.saturating_sub(1);
            if state.0 > 0 {
                return;
            }
            state.1.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// What [`Purger::purge`] returns: ready once the purge is done at every cache.
#[derive(Debug)]
pub(crate) struct Wait(Arc<Done>);

impl Wait {
    /// A purge with nothing to wait for.
    pub(crate) fn ready() -> Wait {
        Wait(Arc::new(Done::new(0)))
    }
}

impl Future for Wait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = lock(&self.0.0);
        if state.0 == 0 {
            return Poll::Ready(());
        }
        state.1 = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A cache on loopback that answers each purge `delay` after it arrives, counting them.
    fn slow_cache(delay: Duration) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let answered = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&answered);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut line = String::new();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                std::thread::sleep(delay);
                // Counted before it is answered: the purger knows of no answer not counted.
                count.fetch_add(1, Ordering::SeqCst);
                // No reason phrase: RFC 9112 allows none.
                let _ = stream.write_all(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n");
            }
        });
        (address, answered)
    }

    /// A cache on loopback that fails its first purge (closes without an answer), answers the
    /// next after `delay`, and the rest at once; it keeps the tags of each purge it took, in
    /// order.
    fn flaky_cache(delay: Duration) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let taken = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&taken);
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let (mut line, mut tags) = (String::new(), String::new());
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    if let Some(value) = line.strip_prefix("xkey-purge: ") {
                        tags = value.trim().to_owned();
                    }
                    line.clear();
                }
                match n {
                    0 => continue,
                    1 => std::thread::sleep(delay),
                    _ => {}
                }
                log.lock().unwrap().push(tags);
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            }
        });
        (address, taken)
    }

    #[test]
    fn a_host_name_is_looked_up_within_the_timeout_one_lookup_at_a_time() {
        let found = PendingLookup::default()
            .resolve("localhost:6081", Duration::from_secs(5), system_lookup)
            .unwrap();
        assert!(!found.is_empty());
        assert!(
            found
                .iter()
                .all(|a| a.port() == 6081 && a.ip().is_loopback())
        );
        // An address needs no lookup.
        let direct = PendingLookup::default()
            .resolve("127.0.0.1:6081", Duration::ZERO, |_| unreachable!())
            .unwrap();
        assert_eq!(direct, ["127.0.0.1:6081".parse().unwrap()]);

        // A resolver that does not answer (its server is down) costs the timeout: this one
        // answers only once the test lets it.
        static RESOLVER_DOWN: Mutex<()> = Mutex::new(());
        static LOOKUPS: AtomicUsize = AtomicUsize::new(0);
        fn stuck(_: &str) -> std::io::Result<Vec<SocketAddr>> {
            LOOKUPS.fetch_add(1, Ordering::SeqCst);
            drop(RESOLVER_DOWN.lock());
            Ok(vec!["127.0.0.2:6081".parse().unwrap()])
        }
        let pending = PendingLookup::default();
        let within = Duration::from_millis(50);
        let down = RESOLVER_DOWN.lock().unwrap();
        for _ in 0..3 {
            let error = pending
                .resolve("cache.example:6081", within, stuck)
                .unwrap_err();
            assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        }
        assert_eq!(LOOKUPS.load(Ordering::SeqCst), 1, "one lookup waited on");
        drop(down);
        // The next call takes the answer of the one under way; the one after asks again.
        let answer = pending.resolve("cache.example:6081", Duration::from_secs(5), stuck);
        assert_eq!(answer.unwrap(), ["127.0.0.2:6081".parse().unwrap()]);
        pending
            .resolve("cache.example:6081", Duration::from_secs(5), stuck)
            .unwrap();
        assert_eq!(LOOKUPS.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_purge_made_during_a_retry_is_sent_after_it() {
        let (address, taken) = flaky_cache(Duration::from_millis(200));
        let caches = HttpCaches::purge_to([address]).settle(Duration::from_millis(50));
        let purger = Purger::start(&caches);
        // Fails, and is kept: nobody waits.
        crate::io::block_on(purger.purge(vec!["x".to_owned()]));
        // The retry (50 ms later) takes 200 ms; the same tag is purged again meanwhile.
        std::thread::sleep(Duration::from_millis(120));
        assert!(
            taken.lock().unwrap().is_empty(),
            "the retry was answered already"
        );
        crate::io::block_on(purger.purge(vec!["x".to_owned()]));
        let deadline = Instant::now() + Duration::from_secs(5);
        while purger.pending() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!purger.pending());
        // The retry, then the purge made during it, each sent twice.
        assert_eq!(*taken.lock().unwrap(), ["x", "x", "x", "x"]);
    }

    #[test]
    fn an_empty_purge_waits_for_the_purges_queued_before_it() {
        let (address, answered) = slow_cache(Duration::from_millis(100));
        let caches = HttpCaches::purge_to([address]).settle(Duration::from_millis(100));
        let purger = Purger::start(&caches);
        let first = purger.purge(vec!["a".to_owned()]);
        // Its first sending under way (the cache takes 100 ms to answer).
        std::thread::sleep(Duration::from_millis(30));
        crate::io::block_on(purger.purge(Vec::new()));
        assert_eq!(
            answered.load(Ordering::SeqCst),
            2,
            "back before both sendings of the purge queued before it"
        );
        crate::io::block_on(first);
        assert!(!purger.pending());
        // Nothing queued: back at once, nothing sent.
        crate::io::block_on(purger.purge(Vec::new()));
        assert_eq!(answered.load(Ordering::SeqCst), 2);
    }
}
