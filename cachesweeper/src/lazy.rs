//! Data a page loads only if a fragment that needs it misses.

use std::error::Error as StdError;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

/// An error a loader returned, shared by every read of the [`Lazy`] that failed.
type LoadError = Arc<dyn StdError + Send + Sync>;

/// The loader, until it has run.
type Loader<'a, T> = Box<dyn FnOnce() -> Result<T, Box<dyn StdError + Send + Sync>> + Send + 'a>;

/// A value a page holds but loads only when a template first reads it, at most once.
///
/// Fragment caching saves the most when a hit skips not only the template work but the query
/// behind it: Django querysets and Rails relations are lazy, so a cached block never runs its
/// query. `Lazy` does that for an Askama page. Put the query in a `Lazy`, read it inside the
/// block with `.get()?`, and a warm page never runs it:
///
/// ```
/// use askama::Template;
/// use cachesweeper::{Lazy, Sweepable, Sweeper};
/// use std::sync::atomic::{AtomicU32, Ordering};
///
/// #[derive(Sweepable)]
/// struct Article { id: i64 }
///
/// #[derive(Template, cachesweeper::TemplateDigest)]
/// #[template(ext = "html", source = "\
///     {% filter cachesweeper::filters::cachesweeper(article, 60, \"comments\") %}\
///     {% let comments = comments.get()? %}{{ comments.len() }} comments:\
///     {% for c in comments %} {{ c }}{% endfor %}\
///     {% endfilter %}")]
/// struct ArticlePage<'a> {
///     article: Article,
///     #[sweeper(belongs_to = article)] // the article's data: its blocks may read it
///     comments: Lazy<'a, Vec<String>>,
/// }
///
/// let queries = AtomicU32::new(0);
/// let page = || ArticlePage {
///     article: Article { id: 1 },
///     comments: Lazy::new(|| {
///         queries.fetch_add(1, Ordering::Relaxed); // SELECT ... FROM comments
///         Ok::<_, std::io::Error>(vec!["first".to_owned(), "second".to_owned()])
///     }),
/// };
/// let sweeper = Sweeper::embedded();
/// assert_eq!(sweeper.scope().render(&page())?, "2 comments: first second");
/// assert_eq!(sweeper.scope().render(&page())?, "2 comments: first second");
/// assert_eq!(queries.load(Ordering::Relaxed), 1); // the warm page ran no query
/// # Ok::<(), askama::Error>(())
/// ```
///
/// - **At most once**: the loader runs on the first read and its value (or its error) is kept
///   for every later read, in the same pass or the next. [`Scope::render`](crate::Scope::render)
///   renders a page in several passes; the passes that only note which fragments the page needs
///   skip the bodies of fragments that are cached or not yet known, so they never run it. A body
///   that missed runs it once, and the final pass reuses the value.
/// - **Errors are the render's**: a loader's error is returned by `get`, and `?` in the
///   template makes it the render's `askama::Error` (its source is the loader's error). Nothing
///   is stored for a fragment whose body failed.
/// - **Where it runs**: on the thread rendering the template, inside the render. A loader that
///   blocks for long (a query over the network) on an async runtime should say so to the
///   runtime (`tokio::task::block_in_place`) or be awaited before the render instead.
pub struct Lazy<'a, T> {
    value: OnceLock<Result<T, LoadError>>,
    load: Mutex<Option<Loader<'a, T>>>,
}

impl<'a, T> Lazy<'a, T> {
    /// A value that `load` produces on the first read.
    pub fn new<E>(load: impl FnOnce() -> Result<T, E> + Send + 'a) -> Lazy<'a, T>
    where
        E: Into<Box<dyn StdError + Send + Sync>>,
    {
        Lazy {
            value: OnceLock::new(),
            load: Mutex::new(Some(Box::new(move || load().map_err(Into::into)))),
        }
    }

    /// A value already at hand (for a page that sometimes has it).
    pub fn loaded(value: T) -> Lazy<'a, T> {
        Lazy {
            value: OnceLock::from(Ok(value)),
            load: Mutex::new(None),
        }
    }

    /// The value, loaded now if this is the first read; or the loader's error.
    pub fn get(&self) -> Result<&T, askama::Error> {
        let value = self.value.get_or_init(|| {
            let load = crate::lock(&self.load).take();
            match load {
                Some(load) => load().map_err(LoadError::from),
                // Only if a loader panicked on an earlier read.
                None => Err(LoadError::from(Box::from(
                    "the loader panicked on an earlier read",
                ))),
            }
        });
        value
            .as_ref()
            .map_err(|error| askama::Error::custom(Failed(Arc::clone(error))))
    }

    /// Whether the loader has run (or there was none).
    pub fn is_loaded(&self) -> bool {
        self.value.get().is_some()
    }
}

impl<T: fmt::Debug> fmt::Debug for Lazy<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.value.get() {
            Some(Ok(value)) => f.debug_tuple("Lazy").field(value).finish(),
            Some(Err(error)) => write!(f, "Lazy(failed: {error})"),
            None => f.write_str("Lazy(not loaded)"),
        }
    }
}

/// A loader's error, as a render's error: the message says where it came from, and `source`
/// is the loader's own error.
#[derive(Debug)]
struct Failed(LoadError);

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "loading a page's lazy data failed: {}", self.0)
    }
}

impl StdError for Failed {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Lazy;

    #[test]
    fn loads_once_and_keeps_its_error() {
        let calls = std::sync::atomic::AtomicU32::new(0);
        let lazy: Lazy<'_, u32> = Lazy::new(|| {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err::<u32, _>("no such table")
        });
        assert!(!lazy.is_loaded());
        let first = lazy.get().unwrap_err().to_string();
        assert!(first.contains("no such table"), "{first}");
        assert!(lazy.get().is_err());
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(*Lazy::loaded(7).get().unwrap(), 7);
    }
}
