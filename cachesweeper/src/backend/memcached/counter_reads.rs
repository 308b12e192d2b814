//! The memcached exchange a warm page repeats most: reading its records' version counters,
//! `mg <key> v c T.. O<i>` for each, pipelined in one round trip. A read is a `mg`, not an
//! `ma` that adds nothing, because any `ma` gives the item a new CAS, and an invalidation's
//! compare-and-add would then lose to every read of a hot record. Missing counters are created
//! by the backend in a round of their own.
//!
//! Written by hand, on sockets of its own, because the `memcache` crate's meta client made a
//! warm page's counter reads a third of the page's CPU: it allocates every command's key and
//! each of its flags, and every answer's flags, separately, and its `Operation` trait is sealed,
//! so no cheaper operation can be plugged into it (BENCHMARKS.md, run 10). Here a batch is one
//! request buffer and one answer buffer. Everything else the backend sends still goes through
//! the crate.
//!
//! An answer is taken for the command it answers only if it echoes that command's opaque
//! (`O<i>`), and a connection goes back to the pool only after every answer of its batch was
//! read and matched: a batch cut short (a timeout, a refused command, a garbled answer) drops
//! the connection, so a late answer can never be read as another command's.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;

use super::Transport;
use crate::keys::MAX_KEY_LEN;
use crate::lock;

/// Whether `key` can be sent as it is: no spaces or control characters, and within memcached's
/// limit.
pub(super) fn is_plain(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && key.bytes().all(|b| b > b' ' && b != 0x7f)
}

/// The opaque of the next batch's first command. Each batch takes fresh ones, so an answer
/// can only ever be taken for the command it answers: not for another command of its batch,
/// nor for one of a later batch on the same socket.
static NEXT_OPAQUE: AtomicU64 = AtomicU64::new(0);

/// A batch of counter reads for one server: its request, and the opaque of its first command.
#[derive(Debug)]
pub(super) struct Batch {
    request: Vec<u8>,
    first: u64,
    len: usize,
}

impl Batch {
    /// A batch of `len` reads.
    pub(super) fn new(len: usize) -> Batch {
        Batch {
            request: Vec::with_capacity(len * 56),
            first: NEXT_OPAQUE.fetch_add(len as u64, Ordering::Relaxed),
            len: 0,
        }
    }

    /// Appends the read of one counter: answer its value and CAS, refresh its time to live
    /// (`ttl_secs`; a touch leaves the CAS as it is), and echo the command's opaque.
    pub(super) fn push(&mut self, key: &str, ttl_secs: u32) {
        let mut numbers = itoa::Buffer::new();
        let request = &mut self.request;
        request.extend_from_slice(b"mg ");
        request.extend_from_slice(key.as_bytes());
        request.extend_from_slice(b" v c T");
        request.extend_from_slice(numbers.format(ttl_secs).as_bytes());
        request.extend_from_slice(b" O");
        request.extend_from_slice(
            numbers
                .format(self.first.wrapping_add(self.len as u64))
                .as_bytes(),
        );
        request.extend_from_slice(b"\r\n");
        self.len += 1;
    }

    /// How many reads it holds.
    pub(super) fn len(&self) -> usize {
        self.len
    }
}

/// What the server answered to one counter read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Answer {
    /// The counter's value and its CAS.
    Counter { value: u64, cas: u64 },
    /// No such counter (`EN`).
    Missing,
    /// A refusal: a value that is not a number (something else under the key), or an answer
    /// that no read expects (`CLIENT_ERROR ...`, `SERVER_ERROR ...`, `NS`, ...).
    Refused(String),
}

/// Why a batch got no answers.
#[derive(Debug)]
pub(super) enum Failure {
    /// The server could not be reached, or the connection failed.
    Io(std::io::Error),
    /// No whole answer within the exchange's time.
    Timeout,
    /// The answers did not match the commands: not memcached's meta protocol, or out of step.
    Protocol(String),
}

impl super::Transport for Failure {
    fn is_transport(&self) -> bool {
        !matches!(self, Failure::Protocol(_))
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Io(error) => write!(f, "{error}"),
            Failure::Timeout => f.write_str("no answer in time"),
            Failure::Protocol(why) => write!(f, "unexpected answer: {why}"),
        }
    }
}

impl std::error::Error for Failure {}

fn io_failure(error: std::io::Error) -> Failure {
    match error.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Failure::Timeout,
        _ => Failure::Io(error),
    }
}

/// Where `answers` whole answers end in `buf`, once they are all there; an error if what is
/// there is not a sequence of answers.
fn end_of_answers(buf: &[u8], answers: usize) -> Result<Option<usize>, Failure> {
    let mut at = 0;
    for _ in 0..answers {
        let Some(eol) = find_crlf(&buf[at..]) else {
            return Ok(None);
        };
        let header = &buf[at..at + eol];
        at += eol + 2;
        if let Some(rest) = header.strip_prefix(b"VA ") {
            let len = rest
                .split(|&b| b == b' ')
                .next()
                .and_then(parse_u64)
                .and_then(|len| usize::try_from(len).ok())
                .ok_or_else(|| protocol(header))?;
            let end = at + len + 2;
            if buf.len() < end {
                return Ok(None);
            }
            if &buf[end - 2..end] != b"\r\n" {
                return Err(protocol(header));
            }
            at = end;
        }
    }
    Ok(Some(at))
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        if d.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        } else {
            None
        }
    })
}

fn protocol(header: &[u8]) -> Failure {
    Failure::Protocol(String::from_utf8_lossy(&header[..header.len().min(120)]).into_owned())
}

/// The answers in `buf` (which [`end_of_answers`] found whole) to `batch`, in order; an
/// error if one does not echo its command's opaque. Clears `clean` if one came without it.
fn parse_answers(buf: &[u8], batch: &Batch, clean: &mut bool) -> Result<Vec<Answer>, Failure> {
    let answers = batch.len;
    let mut out = Vec::with_capacity(answers);
    let mut at = 0;
    for i in 0..answers {
        let opaque = batch.first.wrapping_add(i as u64);
        let eol = find_crlf(&buf[at..]).ok_or_else(|| protocol(&buf[at..]))?;
        let header = &buf[at..at + eol];
        at += eol + 2;
        if header.starts_with(b"CLIENT_ERROR") || header.starts_with(b"SERVER_ERROR") {
            // Answered without the opaque: taken as its command's refusal (a refusal shows no
            // content, and the next answer's opaque still checks the step), but the socket is
            // not used again, in case the server took the command for more or less than one.
            out.push(Answer::Refused(
                String::from_utf8_lossy(header).into_owned(),
            ));
            *clean = false;
            continue;
        }
        let mut tokens = header.split(|&b| b == b' ');
        let code = tokens.next().unwrap_or_default();
        let mut value = None;
        if code == b"VA" {
            let len = tokens
                .next()
                .and_then(parse_u64)
                .ok_or_else(|| protocol(header))?;
            let len = usize::try_from(len).map_err(|_| protocol(header))?;
            value = Some(parse_u64(&buf[at..at + len]));
            at += len + 2;
        }
        let (mut cas, mut echoed) = (0, None);
        for flag in tokens {
            match flag.split_first() {
                Some((b'c', digits)) => cas = parse_u64(digits).ok_or_else(|| protocol(header))?,
                Some((b'O', digits)) => echoed = parse_u64(digits),
                _ => {}
            }
        }
        if echoed != Some(opaque) {
            return Err(protocol(header));
        }
        out.push(match (code, value) {
            (b"VA", Some(Some(value))) => Answer::Counter { value, cas },
            (b"VA", Some(None)) => Answer::Refused("the value is not a number".into()),
            (b"EN", _) => Answer::Missing,
            (b"NS" | b"NF" | b"EX" | b"HD", _) => {
                Answer::Refused(String::from_utf8_lossy(code).into_owned())
            }
            _ => return Err(protocol(header)),
        });
    }
    Ok(out)
}

/// The sockets of one server for counter reads, kept idle up to a limit.
#[derive(Debug)]
pub(super) struct Sockets {
    pub(super) addr: String,
    pub(super) connect_timeout: Duration,
    pub(super) io_timeout: Duration,
    pub(super) max_idle: usize,
    idle: Mutex<Vec<TcpStream>>,
}

impl Sockets {
    pub(super) fn new(
        addr: String,
        connect_timeout: Duration,
        io_timeout: Duration,
        max_idle: usize,
    ) -> Sockets {
        Sockets {
            addr,
            connect_timeout,
            io_timeout,
            max_idle,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Drops the idle sockets (the server failed: the next batch connects again, resolving the
    /// address again).
    pub(super) fn clear(&self) {
        lock(&self.idle).clear();
    }

    /// Sends `batch` and reads its answers, within the exchange's time. An idle socket that
    /// fails (the server closed it while it sat in the pool) is replaced by a new one, once: a
    /// read is safe to send again.
    pub(super) async fn exchange(&self, batch: &Batch) -> Result<Vec<Answer>, Failure> {
        let idle = {
            let mut idle = lock(&self.idle);
            // A socket with something to read while idle was closed by the server (or is out
            // of step): not worth a write.
            std::iter::from_fn(|| idle.pop()).find(|stream| {
                matches!(stream.try_read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            })
        };
        let (mut stream, pooled) = match idle {
            Some(stream) => (stream, true),
            None => (self.connect().await?, false),
        };
        let exchange = async {
            match exchange_on(&mut stream, batch).await {
                // The socket failed, not the server's answer.
                Err(failure) if pooled && failure.is_transport() => {
                    stream = self.connect().await?;
                    exchange_on(&mut stream, batch).await
                }
                answered => answered,
            }
            .map(|done| (stream, done))
        };
        let (stream, (parsed, whole)) = tokio::time::timeout(self.io_timeout, exchange)
            .await
            .map_err(|_| Failure::Timeout)??;
        if whole {
            let mut idle = lock(&self.idle);
            if idle.len() < self.max_idle {
                idle.push(stream);
            }
        }
        Ok(parsed)
    }

    async fn connect(&self) -> Result<TcpStream, Failure> {
        let connect = TcpStream::connect(self.addr.as_str());
        let stream = tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| Failure::Timeout)?
            .map_err(io_failure)?;
        stream.set_nodelay(true).map_err(Failure::Io)?;
        Ok(stream)
    }
}

/// One batch on `stream`: the answers, and whether the socket may be used again (nothing was
/// left unread); the caller bounds its time.
async fn exchange_on(
    stream: &mut TcpStream,
    batch: &Batch,
) -> Result<(Vec<Answer>, bool), Failure> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (request, answers) = (&batch.request, batch.len);
    let mut written = 0;
    while written < request.len() {
        match stream.write(&request[written..]).await {
            Ok(0) => return Err(Failure::Io(std::io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_failure(e)),
        }
    }
    let mut buf = Vec::with_capacity(answers * 48);
    let end = loop {
        match end_of_answers(&buf, answers) {
            Ok(Some(end)) => break end,
            Ok(None) => {}
            Err(failure) => return Err(failure),
        }
        buf.reserve(4096);
        match stream.read_buf(&mut buf).await {
            Ok(0) => {
                return Err(Failure::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(_) => {}
            Err(e) => return Err(io_failure(e)),
        }
    };
    let mut clean = end == buf.len();
    let parsed = parse_answers(&buf[..end], batch, &mut clean)?;
    Ok((parsed, clean))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream as StdStream;

    use super::*;

    /// Runs `work` on a runtime of its own, as the I/O thread would.
    fn on_runtime<T>(work: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(work)
    }

    /// A batch whose commands' opaques start at `first`, holding `len` reads.
    fn batch_at(first: u64, len: usize) -> Batch {
        Batch {
            request: Vec::new(),
            first,
            len,
        }
    }

    #[test]
    fn a_read_is_one_line_with_its_opaque() {
        let mut batch = batch_at(7, 0);
        batch.push("ns|v|m|1", 60);
        batch.push("ns|v|m|2", 60);
        assert_eq!(
            batch.request,
            b"mg ns|v|m|1 v c T60 O7\r\nmg ns|v|m|2 v c T60 O8\r\n"
        );
        assert_eq!(batch.len(), 2);
    }

    #[test]
    fn batches_never_share_an_opaque() {
        let (a, b) = (Batch::new(3), Batch::new(2));
        assert!(a.first + 3 <= b.first || b.first + 2 <= a.first);
    }

    #[test]
    fn answers_are_read_only_when_whole_and_in_step() {
        let whole = b"VA 4 c9 O0\r\n1700\r\nEN O1\r\nVA 3 c2 O2\r\nabc\r\n\
            SERVER_ERROR out of memory\r\nNS O4\r\n";
        for cut in 0..whole.len() {
            assert_eq!(
                end_of_answers(&whole[..cut], 5).unwrap(),
                None,
                "cut at {cut}"
            );
        }
        assert_eq!(end_of_answers(whole, 5).unwrap(), Some(whole.len()));
        let mut clean = true;
        assert_eq!(
            parse_answers(whole, &batch_at(0, 5), &mut clean).unwrap(),
            vec![
                Answer::Counter {
                    value: 1700,
                    cas: 9
                },
                Answer::Missing,
                Answer::Refused("the value is not a number".into()),
                Answer::Refused("SERVER_ERROR out of memory".into()),
                Answer::Refused("NS".into()),
            ]
        );
        assert!(
            !clean,
            "a socket that answered without an opaque is not used again"
        );
        // An answer that echoes another command's opaque (of its batch or of an earlier one) is
        // out of step: nothing is taken.
        assert!(parse_answers(b"VA 1 c1 O1\r\n5\r\n", &batch_at(0, 1), &mut true).is_err());
        assert!(parse_answers(b"VA 1 c1 O0\r\n5\r\n", &batch_at(2, 1), &mut true).is_err());
        assert!(parse_answers(b"VA 1 c1\r\n5\r\n", &batch_at(0, 1), &mut true).is_err());
        assert!(end_of_answers(b"VA x\r\n", 1).is_err());
        assert!(parse_answers(b"EN O1\r\n", &batch_at(0, 1), &mut true).is_err());
    }

    /// A server that answers a connection's first batch, then sends one answer more that no
    /// command asked for (a late duplicate), and answers the next connection's batch; returns
    /// its address.
    fn duplicate_then_prompt_server() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let answer = |conn: &mut StdStream| {
                let mut seen = Vec::new();
                let mut chunk = [0u8; 512];
                while seen.windows(2).filter(|w| w == b"\r\n").count() < 2 {
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&chunk[..n]),
                    }
                }
                let o: Vec<String> = String::from_utf8_lossy(&seen)
                    .split_whitespace()
                    .filter_map(|token| token.strip_prefix('O').map(str::to_owned))
                    .collect();
                let reply = format!("VA 2 c3 O{}\r\n10\r\nVA 2 c4 O{}\r\n20\r\n", o[0], o[1]);
                let _ = conn.write_all(reply.as_bytes());
            };
            let (mut first, _) = listener.accept().unwrap();
            answer(&mut first);
            std::thread::sleep(Duration::from_millis(50));
            let _ = first.write_all(b"VA 2 c4 O1\r\n20\r\n");
            let (mut second, _) = listener.accept().unwrap();
            answer(&mut second);
            std::thread::sleep(Duration::from_millis(500));
        });
        addr
    }

    #[test]
    fn an_idle_socket_with_a_late_answer_in_it_is_not_used_again() {
        let sockets = Sockets::new(
            duplicate_then_prompt_server(),
            Duration::from_millis(500),
            Duration::from_millis(500),
            4,
        );
        on_runtime(async {
            assert_eq!(sockets.exchange(&two_reads()).await.unwrap(), NEXT_BATCH);
            tokio::time::sleep(Duration::from_millis(150)).await;
            assert_eq!(sockets.exchange(&two_reads()).await.unwrap(), NEXT_BATCH);
        });
    }

    /// A server that answers a connection's first batch only after the client gave up, and
    /// the next connection's at once; returns its address.
    fn late_then_prompt_server() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            // The opaques of a batch's two commands.
            let read_batch = |conn: &mut StdStream| -> Vec<String> {
                let mut seen = Vec::new();
                let mut chunk = [0u8; 512];
                while seen.windows(2).filter(|w| w == b"\r\n").count() < 2 {
                    let n = conn.read(&mut chunk).unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    seen.extend_from_slice(&chunk[..n]);
                }
                String::from_utf8_lossy(&seen)
                    .split_whitespace()
                    .filter_map(|token| token.strip_prefix('O').map(str::to_owned))
                    .collect()
            };
            let (mut first, _) = listener.accept().unwrap();
            let o = read_batch(&mut first);
            std::thread::sleep(Duration::from_millis(300));
            let late = format!("VA 1 c1 O{}\r\n1\r\nVA 1 c2 O{}\r\n2\r\n", o[0], o[1]);
            let _ = first.write_all(late.as_bytes());
            let (mut second, _) = listener.accept().unwrap();
            let o = read_batch(&mut second);
            let prompt = format!("VA 2 c3 O{}\r\n10\r\nVA 2 c4 O{}\r\n20\r\n", o[0], o[1]);
            second.write_all(prompt.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(500));
        });
        addr
    }

    fn two_reads() -> Batch {
        let mut batch = Batch::new(2);
        batch.push("a", 60);
        batch.push("b", 60);
        batch
    }

    const NEXT_BATCH: [Answer; 2] = [
        Answer::Counter { value: 10, cas: 3 },
        Answer::Counter { value: 20, cas: 4 },
    ];

    #[test]
    fn a_batch_that_timed_out_leaves_no_answer_for_the_next() {
        let sockets = Sockets::new(
            late_then_prompt_server(),
            Duration::from_millis(500),
            Duration::from_millis(100),
            4,
        );
        on_runtime(async {
            assert!(matches!(
                sockets.exchange(&two_reads()).await,
                Err(Failure::Timeout)
            ));
            tokio::time::sleep(Duration::from_millis(400)).await;
            assert_eq!(sockets.exchange(&two_reads()).await.unwrap(), NEXT_BATCH);
        });
    }

    #[test]
    fn only_plain_keys_go_this_way() {
        assert!(is_plain("ns|v|blog.Comment|42"));
        assert!(!is_plain("with space"));
        assert!(!is_plain("tab\there"));
        assert!(!is_plain(""));
        assert!(!is_plain(&"k".repeat(251)));
    }
}
