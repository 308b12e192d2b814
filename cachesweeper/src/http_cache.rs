//! The HTTP caches in front of the application (Varnish, a CDN): which responses they may
//! keep, the tags that name the records a kept page shows, and where purges go when one of
//! those records is invalidated.
//!
//! A page a shared cache keeps is out of the application's hands until it is purged, so it
//! may keep a page only when three things hold (see [`Caching`]):
//!
//! - **the page is the same for everyone** who sends its request: the scope's
//!   [`Audience`] is [`Anyone`](Audience::Anyone) (the axum extractor says so of a request
//!   without credentials), and its holes, if it has any, are filled the same for everyone
//!   ([`Holes::shared`](crate::Holes::shared));
//! - **every record on it is tagged**: the page has a validator, so every fragment it shows
//!   is known with its version, and the tags name each one's record and the records inside it;
//! - **no record on it was invalidated after the request began** to read its data, checked
//!   once more after the render: otherwise the page may have been rendered from rows read
//!   before the write, and could reach the cache after the write's purge.
//!
//! Every invalidation then purges its records' tags from every cache in
//! [`HttpCaches::purge_to`] after raising their counters, and returns once they are purged (a
//! counter whose raise failed is purged too, and again once the retry thread raises it). A
//! commit through a [change log](crate::changes) waits the same way, also for changes another
//! caller applied for it; the log's follower, which nobody waits on, only queues its purges. A
//! cache that does not answer is retried in the background until it takes the tags, and no
//! invalidation waits on it meanwhile.
//!
//! **A page on its way.** A page checked just before a write can still be on its way to the
//! cache when that write's purge arrives there, and be kept after it. So each purge is sent
//! twice: at once, and again [`settle`](HttpCaches::settle) later, and the invalidation
//! returns after the second; and a shared page says by when a cache must have stored it
//! (`cachesweeper-store-by`, half the settle time after its check), which the cache's rules
//! enforce (`examples/blog/varnish.vcl`). A page stored in time is stored before the second
//! purge arrives, as long as the cache's clock is within half the settle time of the
//! application's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The `Cache-Control` of one viewer's page.
pub(crate) const PRIVATE: &str = "private, no-cache";

/// The header that says by when a shared cache must have stored a page.
pub const STORE_BY: &str = "cachesweeper-store-by";

/// How many tags (18 bytes and a separator each) go on one line of the tag header.
const TAGS_PER_LINE: usize = 200;

/// How many tags a shared page may have: more would pass a cache's limit on a response's
/// headers (Varnish's is 32 KiB in all), and it is one viewer's (`Private`) instead.
pub(crate) const MAX_TAGS: usize = 1000;

/// Where an application's HTTP caches are, and how their responses are tagged and purged:
/// given to [`SweeperBuilder::http_caches`](crate::SweeperBuilder::http_caches). Without it,
/// no page is ever [`Caching::Shared`].
///
/// ```
/// use std::time::Duration;
/// use cachesweeper::http_cache::{HttpCaches, TagHeader};
///
/// let caches = HttpCaches::purge_to(["127.0.0.1:6081", "127.0.0.1:6082"])
///     .tag_header(TagHeader::Xkey)
///     .shared_max_age(Duration::from_secs(3600));
/// let sweeper = cachesweeper::Sweeper::builder().http_caches(caches).build()?;
/// # Ok::<(), cachesweeper::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct HttpCaches {
    pub(crate) purge_to: Vec<String>,
    pub(crate) tag_header: TagHeader,
    pub(crate) purge_header: String,
    pub(crate) timeout: Duration,
    pub(crate) shared_max_age: Duration,
    pub(crate) settle: Duration,
}

impl HttpCaches {
    /// The caches at these `host:port` addresses (at least one), each sent `PURGE / HTTP/1.1`
    /// with the tags to drop in an `xkey-purge` header (Varnish's vmod xkey; the blog's
    /// `examples/blog/varnish.vcl` shows the VCL). A cache that does not answer within
    /// [`timeout`](Self::timeout) is retried in the background until it does. A CDN whose
    /// purges are an API call (Fastly's surrogate keys, Cloudflare's cache tags) takes them
    /// through a relay at such an address that makes that call.
    pub fn purge_to<A: Into<String>>(addresses: impl IntoIterator<Item = A>) -> HttpCaches {
        HttpCaches {
            purge_to: addresses.into_iter().map(Into::into).collect(),
            tag_header: TagHeader::Xkey,
            purge_header: "xkey-purge".to_owned(),
            timeout: Duration::from_millis(500),
            shared_max_age: Duration::from_secs(24 * 3600),
            settle: Duration::from_millis(50),
        }
    }

    /// The response header that names a shared page's tags (default [`TagHeader::Xkey`]).
    pub fn tag_header(mut self, header: TagHeader) -> Self {
        self.tag_header = header;
        self
    }

    /// The request header of a `PURGE` that names the tags to drop (default `xkey-purge`).
    pub fn purge_header(mut self, name: impl Into<String>) -> Self {
        self.purge_header = name.into();
        self
    }

    /// How long a purge waits for a cache to answer, its name's lookup included, before it is
    /// left to the background retries (default 500 ms). An invalidation waits this long at
    /// most once per outage: a cache that failed is retried in the background only, until it
    /// answers.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long after the first purge of an invalidation its second is sent, and the
    /// invalidation returns (default 50 ms): what each write costs for the guarantee that no
    /// page on its way to a cache during the first purge is kept after the write (see the
    /// [module docs](self)). A blocking [`Sweeper::invalidate`](crate::Sweeper::invalidate)
    /// blocks its thread that long: from async code, use `invalidate_async`. A shared page must
    /// be stored within half of it after its check, so it also bounds how far apart the
    /// caches' clocks and the application's may be.
    pub fn settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    /// How long a shared cache may keep a page (`s-maxage`, default a day): purges drop it as
    /// soon as a record on it changes, so this only bounds what a lost cache-side purge costs.
    pub fn shared_max_age(mut self, max_age: Duration) -> Self {
        self.shared_max_age = max_age;
        self
    }
}

/// The response header that names a shared page's tags, each HTTP cache's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagHeader {
    /// `xkey: t1 t2` (Varnish's vmod xkey).
    Xkey,
    /// `Surrogate-Key: t1 t2` (Fastly).
    SurrogateKey,
    /// `Cache-Tag: t1,t2` (Cloudflare).
    CacheTag,
}

impl TagHeader {
    /// The header's name, in lower case (as HTTP/2 writes every header name).
    pub fn name(self) -> &'static str {
        match self {
            TagHeader::Xkey => "xkey",
            TagHeader::SurrogateKey => "surrogate-key",
            TagHeader::CacheTag => "cache-tag",
        }
    }

    /// What goes between two tags in the header's value.
    pub(crate) fn separator(self) -> &'static str {
        match self {
            TagHeader::Xkey | TagHeader::SurrogateKey => " ",
            TagHeader::CacheTag => ",",
        }
    }
}

/// Whether a request is one viewer's or anyone's: what decides, with the page's holes,
/// whether a shared cache may keep its page. Set on a [`Scope`](crate::Scope) with
/// [`Scope::for_audience`](crate::Scope::for_audience); the axum extractor sets it from the
/// request's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Audience {
    /// The request is one viewer's (it carries a cookie or credentials): its page may show
    /// who is looking, so only that viewer's browser may keep it. The default.
    #[default]
    Viewer,
    /// Everyone who sends this request gets this page: no cookie, no credentials, nothing
    /// outside the page's fragments depends on who asks.
    Anyone,
}

/// Which caches may keep a rendered page: part of each
/// [`Conditional`](crate::Conditional) answer, with the headers that say so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caching {
    /// Any cache may keep it, for up to `max_age`: it is the same for everyone, and every
    /// record it shows is named in `tags`, which each invalidation purges.
    Shared {
        /// The records' tags.
        tags: Vec<String>,
        /// The header that names them.
        header: TagHeader,
        /// How long a shared cache may keep the page (`s-maxage`).
        max_age: Duration,
        /// The latest time a cache may store it: after that, the second purge of a write
        /// checked after it may have gone by (see the [module docs](self)).
        store_by: SystemTime,
    },
    /// Only the viewer's browser may keep it, revalidating each time with its `ETag`.
    Private,
    /// No cache may keep it: it has no validator (see
    /// [`Conditional::Page`](crate::Conditional::Page)), or a record on it was invalidated
    /// after its request began to read, so it may show the state before that write.
    NoStore,
}

impl Caching {
    /// The response headers that say it, to append (the tag header may take several lines):
    /// `Cache-Control`, and for a shared page its tags,
    /// `cachesweeper-store-by` (seconds since the Unix epoch, in thousandths, as Varnish's
    /// `std.time` reads them) and `Vary: Cookie, Authorization` (a cache that does not pass
    /// requests with credentials by itself then keeps them apart from the shared page).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            // Browsers revalidate every time (max-age=0, with the ETag); shared caches keep it
            // until a purge.
            Caching::Shared {
                tags,
                header,
                max_age,
                store_by,
            } => {
                let store_by = store_by.duration_since(UNIX_EPOCH).unwrap_or_default();
                let mut headers = vec![
                    (
                        "cache-control",
                        format!("public, max-age=0, s-maxage={}", max_age.as_secs()),
                    ),
                    (
                        STORE_BY,
                        format!("{}.{:03}", store_by.as_secs(), store_by.subsec_millis()),
                    ),
                    ("vary", "Cookie, Authorization".to_owned()),
                ];
                // Several lines of the tag header, each well under a cache's limit on one
                // header line (Varnish's is 8 KiB).
                for line in tags.chunks(TAGS_PER_LINE) {
                    headers.push((header.name(), line.join(header.separator())));
                }
                headers
            }
            Caching::Private => vec![("cache-control", PRIVATE.to_owned())],
            Caching::NoStore => vec![("cache-control", "no-store".to_owned())],
        }
    }
}
