//! Purging tags from the HTTP caches in front: the one place that speaks to them.
//!
//! One thread per sweeper sends every purge, so that blocking and async invalidations share
//! it and wait for it alike ([`Purger::purge`] is a future either can await). Purges that
//! queue while it sends are sent together, one request per cache. Each is sent again after
//! [`HttpCaches::settle`], and is done then (see [`crate::http_cache`]: for a page that was
//! on its way to a cache during the first). A cache that fails (down,
//! paused, refusing) keeps its tags here and is retried with backoff until it takes them: a
//! purge is never forgotten while the process lives, and an invalidation waits on a failing
//! cache at most once per outage ([`HttpCaches::timeout`]), not once per write.
//!
//! The request is hand-written HTTP/1.1 on a std socket: one request line and three headers,
//! and the status line of the answer. An HTTP client crate would bring a runtime's worth of
//! dependencies to every application for it.

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
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

/// The purges of one sweeper.
#[derive(Debug)]
pub(crate) struct Purger {
    jobs: Mutex<mpsc::Sender<Job>>,
    /// Whether some cache has tags it has not taken yet.
    pending: Arc<AtomicBool>,
}

struct Job {
    tags: Vec<String>,
    done: Option<Arc<Done>>,
}

impl Purger {
    /// Starts the purging thread for `caches`.
    pub(crate) fn start(caches: &HttpCaches) -> Purger {
        let (jobs, queue) = mpsc::channel();
        let pending = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            caches: caches
                .purge_to
                .iter()
                .map(|address| Cache {
                    address: address.clone(),
                    tags: BTreeSet::new(),
                    retry: None,
                })
                .collect(),
            purge_header: caches.purge_header.clone(),
            timeout: caches.timeout,
            settle: caches.settle,
            second: VecDeque::new(),
            pending: Arc::clone(&pending),
        };
        let spawned = std::thread::Builder::new()
            .name("cachesweeper-purge".into())
            .spawn(move || worker.run(&queue));
        if let Err(error) = spawned {
            tracing::error!(%error, "cachesweeper: cannot start the purge thread; no HTTP cache is purged");
        }
        Purger {
            jobs: Mutex::new(jobs),
            pending,
        }
    }

    /// Purges `tags` from every cache, twice: done when each cache took them the second time
    /// or failed (and keeps them to retry).
    pub(crate) fn purge(&self, tags: Vec<String>) -> impl Future<Output = ()> + Send + use<> {
        let done = Arc::new(Done::default());
        self.send(Job {
            tags,
            done: Some(Arc::clone(&done)),
        });
        Wait(done)
    }

    /// Purges `tags` from every cache, without waiting (an invalidation retried in the
    /// background).
    pub(crate) fn purge_later(&self, tags: Vec<String>) {
        self.send(Job { tags, done: None });
    }

    fn send(&self, job: Job) {
        if job.tags.is_empty() {
            if let Some(done) = &job.done {
                done.finish();
            }
            return;
        }
        self.pending.store(true, Ordering::Release);
        if let Err(mpsc::SendError(job)) = lock(&self.jobs).send(job) {
            // The thread could not start: nothing to wait for.
            if let Some(done) = job.done {
                done.finish();
            }
        }
    }

    /// Whether some purge has not reached every cache yet.
    pub(crate) fn pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }
}

/// One HTTP cache, as the thread sees it.
struct Cache {
    address: String,
    /// Tags it has not taken yet.
    tags: BTreeSet<String>,
    /// After a failure: when to try again, and how long the wait after that is.
    retry: Option<(Instant, Duration)>,
}

struct Worker {
    caches: Vec<Cache>,
    purge_header: String,
    timeout: Duration,
    settle: Duration,
    /// Purges sent once, to send again when their time comes, in that order (one delay for
    /// all), with who waits for them.
    second: VecDeque<(Instant, BTreeSet<String>, Vec<Arc<Done>>)>,
    pending: Arc<AtomicBool>,
}

impl Worker {
    /// Until every handle is dropped and nothing is left to send.
    fn run(mut self, queue: &mpsc::Receiver<Job>) {
        let mut open = true;
        loop {
            let next = self
                .caches
                .iter()
                .filter_map(|c| c.retry)
                .map(|r| r.0)
                .chain(self.second.front().map(|s| s.0))
                .min();
            let first = match (open, next) {
                (true, None) => match queue.recv() {
                    Ok(job) => Some(job),
                    // Every handle dropped, nothing left to send.
                    Err(_) => return,
                },
                (true, Some(at)) => {
                    match queue.recv_timeout(at.saturating_duration_since(Instant::now())) {
                        Ok(job) => Some(job),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => {
                            open = false;
                            None
                        }
                    }
                }
                (false, Some(at)) => {
                    std::thread::sleep(at.saturating_duration_since(Instant::now()));
                    None
                }
                (false, None) => return,
            };
            // The first sending of what arrived (all that queued, together)...
            let (mut tags, mut waiting) = (BTreeSet::new(), Vec::new());
            for job in first
                .into_iter()
                .chain(std::iter::from_fn(|| queue.try_recv().ok()))
            {
                tags.extend(job.tags);
                waiting.extend(job.done);
            }
            // ...and the second of what is due.
            let now = Instant::now();
            let mut done = Vec::new();
            while self.second.front().is_some_and(|s| s.0 <= now) {
                let (_, again, dones) = self.second.pop_front().expect("a front");
                self.add(&again);
                done.extend(dones);
            }
            self.add(&tags);
            self.send_due();
            if !tags.is_empty() {
                self.second
                    .push_back((Instant::now() + self.settle, tags, waiting));
            }
            let left = !self.second.is_empty() || self.caches.iter().any(|c| !c.tags.is_empty());
            self.pending.store(left, Ordering::Release);
            for done in done {
                done.finish();
            }
        }
    }

    /// Gives every cache `tags` to take.
    fn add(&mut self, tags: &BTreeSet<String>) {
        for cache in &mut self.caches {
            cache.tags.extend(tags.iter().cloned());
        }
    }

    /// Sends each cache its tags, unless it failed and its next try is not due yet.
    fn send_due(&mut self) {
        let now = Instant::now();
        for cache in &mut self.caches {
            if cache.tags.is_empty() || cache.retry.is_some_and(|(at, _)| at > now) {
                continue;
            }
            match purge(
                &cache.address,
                &self.purge_header,
                &cache.tags,
                self.timeout,
            ) {
                Ok(()) => {
                    if cache.retry.is_some() {
                        tracing::info!(cache = %cache.address, "cachesweeper: HTTP cache purged again after failing");
                    }
                    cache.tags.clear();
                    cache.retry = None;
                }
                Err(error) => {
                    let wait = cache
                        .retry
                        .map_or(FIRST_WAIT, |(_, w)| (w * 2).min(MAX_WAIT));
                    if cache.retry.is_none() {
                        tracing::warn!(cache = %cache.address, %error, tags = cache.tags.len(), "cachesweeper: HTTP cache purge failed; retrying in the background");
                    }
                    cache.retry = Some((Instant::now() + wait, wait));
                }
            }
        }
    }
}

/// Sends `tags` to the cache at `address` in as few `PURGE` requests as fit
/// [`MAX_TAG_BYTES`] each: all of them taken (a 2xx answer to each), or the first failure.
fn purge(
    address: &str,
    header: &str,
    tags: &BTreeSet<String>,
    timeout: Duration,
) -> std::io::Result<()> {
    let mut batch = String::new();
    for tag in tags {
        if !batch.is_empty() && batch.len() + tag.len() >= MAX_TAG_BYTES {
            purge_one(address, header, &batch, timeout)?;
            batch.clear();
        }
        if !batch.is_empty() {
            batch.push(' ');
        }
        batch.push_str(tag);
    }
    purge_one(address, header, &batch, timeout)
}

fn purge_one(address: &str, header: &str, tags: &str, timeout: Duration) -> std::io::Result<()> {
    let socket = address.to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "the address names no host")
    })?;
    let mut stream = TcpStream::connect_timeout(&socket, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "PURGE / HTTP/1.1\r\nHost: {address}\r\n{header}: {tags}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut status = String::new();
    BufReader::new(stream).read_line(&mut status)?;
    // `HTTP/1.1 200 Purged 3`
    let code = status.split(' ').nth(1).unwrap_or("");
    if code.starts_with('2') && code.len() == 3 {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "the cache answered {:?}",
            status.trim_end()
        )))
    }
}

/// Whether a job is done, and who waits for it: a one-shot that a blocking caller (through
/// `io::block_on`) and an async one await alike.
#[derive(Default)]
struct Done(Mutex<(bool, Option<Waker>)>);

impl Done {
    fn finish(&self) {
        let waker = {
            let mut state = lock(&self.0);
            state.0 = true;
            state.1.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

struct Wait(Arc<Done>);

impl Future for Wait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = lock(&self.0.0);
        if state.0 {
            return Poll::Ready(());
        }
        state.1 = Some(cx.waker().clone());
        Poll::Pending
    }
}
