//! One request's handle: the only way to render through the cache.

use std::sync::Arc;

use crate::http_cache::Audience;
use crate::keys::KeyParts;
use crate::stats::{Stats, StatsSnapshot};
use crate::sweeper::Mode;
use crate::value::Html;
use crate::{Conditional, Sweepable, Sweeper, TemplateDigest, clock, io, session};

/// One request's view of a [`Sweeper`], taken with [`Sweeper::scope`] **before** the request
/// reads its data, and the one way to render through the cache. It notes when the request
/// began to read, for the store rule of [Never stale](crate#never-stale).
///
/// ```
/// use askama::Template;
/// use cachesweeper::{Sweepable, Sweeper};
///
/// #[derive(Sweepable)]
/// struct Comment { id: i64, body: String }
///
/// #[derive(Template, cachesweeper::TemplateDigest)]
/// #[template(ext = "html", source = "{% for c in comments %}\
///     {% filter cachesweeper::filters::cachesweeper(c, 60, \"comment\") %}<p>{{ c.body }}</p>{% endfilter %}\
///     {% endfor %}")]
/// struct Page { comments: Vec<Comment> }
///
/// let sweeper = Sweeper::embedded();
/// let request = sweeper.scope(); // first, then load the rows:
/// let page = Page { comments: (0..100).map(|id| Comment { id, body: "hi".into() }).collect() };
/// request.render(&page)?;
///
/// let request = sweeper.scope();
/// assert_eq!(request.render(&page)?.matches("<p>hi</p>").count(), 100);
/// let warm = request.stats();
/// assert_eq!((warm.hits, warm.round_trips), (100, 2)); // one batch of versions, one of fragments
///
/// // Askama's own `render()` has no sweeper: it fails, and says how to render instead.
/// assert!(page.render().unwrap_err().to_string().contains("sweeper.scope().render(&page)"));
/// # Ok::<(), askama::Error>(())
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct Scope {
    /// The sweeper's handle with this scope's counters and start time.
    handle: Sweeper,
    /// The request's `If-None-Match`, as the axum extractor found it (see `Scope::respond`).
    pub(crate) if_none_match: Option<std::sync::Arc<str>>,
    /// Whose request it is: whether a shared cache may keep its page.
    audience: Audience,
}

impl Sweeper {
    /// A scope for one request: take it **before** reading the request's data, and render
    /// through it (see [`Scope`]).
    pub fn scope(&self) -> Scope {
        Scope {
            handle: Sweeper {
                inner: Arc::clone(&self.inner),
                scope: Some(Arc::new(Stats::default())),
                session: None,
                digest: "",
                began: Some(clock::now()),
                mode: self.mode,
                holes: None,
            },
            if_none_match: None,
            audience: Audience::Viewer,
        }
    }
}

impl Scope {
    /// This scope, for a request of `audience`: [`Audience::Anyone`] lets a shared HTTP cache
    /// keep its pages (see [`crate::http_cache`]). The axum extractor sets it from the
    /// request's headers; a request is one [`Viewer`](Audience::Viewer)'s by default.
    pub fn for_audience(mut self, audience: Audience) -> Scope {
        self.audience = audience;
        self
    }

    /// Whose request this scope's is.
    pub fn audience(&self) -> Audience {
        self.audience
    }

    /// Renders a page in a [constant number of round
    /// trips](crate#a-page-in-a-constant-number-of-round-trips), every fragment key carrying the
    /// page's [`TemplateDigest`] (unless the block says `digest=false`) and its block's template.
    ///
    /// The template is rendered more than once (cheap passes that skip fragment bodies, then
    /// the real one), so its non-fragment parts should not have side effects. A body that
    /// missed is rendered once, and once more for each level of blocks nested in it that the
    /// render had to fetch (the blocks inside it are each rendered at most once); a block with
    /// a zero time to live is rendered on each pass.
    pub fn render<T>(&self, page: &T) -> askama::Result<String>
    where
        T: askama::Template + TemplateDigest + ?Sized,
    {
        io::block_on(session::render(
            &io::Blocking,
            &self.handle,
            page,
            self.handle.stamp(),
        ))
    }

    /// [`render`](Self::render) for async handlers (feature `tokio`), with the page borrowed:
    /// the passes run on the caller's task and the cache is awaited between them ([Async
    /// handlers never wait on the cache](crate#async-handlers-never-wait-on-the-cache)).
    ///
    /// Unlike [`render`](Self::render), a fragment the final pass meets that the earlier passes
    /// did not (a template whose output changes between passes) is rendered and not stored.
    ///
    /// ```no_run
    /// # use askama::Template;
    /// # #[derive(cachesweeper::Sweepable)] struct Article { id: i64 }
    /// # #[derive(Template, cachesweeper::TemplateDigest)] #[template(source = "", ext = "html")]
    /// # struct ArticlePage<'a> { article: &'a Article }
    /// # fn load(id: i64) -> Article { Article { id } }
    /// async fn handler(sweeper: cachesweeper::Sweeper, id: i64) -> String {
    ///     let request = sweeper.scope();
    ///     let article = load(id);
    ///     let page = ArticlePage { article: &article };
    ///     request.render_async(&page).await.unwrap_or_default()
    /// }
    /// ```
    #[cfg(feature = "tokio")]
    pub async fn render_async<T>(&self, page: &T) -> askama::Result<String>
    where
        T: askama::Template + TemplateDigest + Sync + ?Sized,
    {
        session::render(&io::Async, &self.handle, page, self.handle.stamp()).await
    }

    /// [`render`](Self::render) for a conditional GET: the page with its validator (an
    /// `ETag`), or, when `if_none_match` (the request's `If-None-Match` header) names the
    /// page's current validator, [`Conditional::NotModified`] without rendering any fragment.
    ///
    /// The validator covers everything the page shows: its templates, what it writes outside
    /// its blocks (taken from the first, cheap pass), every fragment's key (which names its
    /// record's version), the versions of the records inside each, and its holes as filled
    /// for this request. It changes as soon as any of them does, and never otherwise. A
    /// revalidation costs the first pass and the page's first batch of versions: one round
    /// trip on memcached with the L1, as a warm page does, and no body rendered.
    ///
    /// ```
    /// use askama::Template;
    /// use cachesweeper::{Conditional, Sweepable, Sweeper};
    ///
    /// #[derive(Sweepable)]
    /// struct Post { id: i64, title: String }
    ///
    /// #[derive(Template, cachesweeper::TemplateDigest)]
    /// #[template(ext = "html", source = "{% filter cachesweeper::filters::cachesweeper(post, 60, \"post\") %}<h1>{{ post.title }}</h1>{% endfilter %}")]
    /// struct PostPage<'a> { post: &'a Post }
    ///
    /// let sweeper = Sweeper::embedded();
    /// let mut post = Post { id: 1, title: "Hello".into() };
    /// let Conditional::Page { etag: Some(etag), .. } =
    ///     sweeper.scope().render_conditional(&PostPage { post: &post }, None)?
    /// else { unreachable!() };
    /// // The browser asks again with the validator it has: nothing changed.
    /// let again = sweeper.scope().render_conditional(&PostPage { post: &post }, Some(&etag))?;
    /// assert!(matches!(again, Conditional::NotModified { etag: ref same, .. } if *same == etag));
    ///
    /// post.title = "Hello again".into();
    /// sweeper.invalidate(&post).unwrap();
    /// let changed = sweeper.scope().render_conditional(&PostPage { post: &post }, Some(&etag))?;
    /// assert!(matches!(changed, Conditional::Page { etag: Some(new), .. } if new != etag));
    /// # Ok::<(), askama::Error>(())
    /// ```
    pub fn render_conditional<T>(
        &self,
        page: &T,
        if_none_match: Option<&str>,
    ) -> askama::Result<Conditional>
    where
        T: askama::Template + TemplateDigest + ?Sized,
    {
        io::block_on(session::render_conditional(
            &io::Blocking,
            &self.handle,
            page,
            self.handle.stamp(),
            Some(if_none_match),
            self.audience,
        ))
    }

    /// [`render_conditional`](Self::render_conditional) for async handlers (feature `tokio`),
    /// as [`render_async`](Self::render_async) is to [`render`](Self::render).
    #[cfg(feature = "tokio")]
    pub async fn render_conditional_async<T>(
        &self,
        page: &T,
        if_none_match: Option<&str>,
    ) -> askama::Result<Conditional>
    where
        T: askama::Template + TemplateDigest + Sync + ?Sized,
    {
        session::render_conditional(
            &io::Async,
            &self.handle,
            page,
            self.handle.stamp(),
            Some(if_none_match),
            self.audience,
        )
        .await
    }

    /// One fragment of `record` identified by `parts`, outside any template: from the cache
    /// if it holds one for the record's current version, else from `render`, stored for
    /// `ttl`. Each call costs a version lookup (for counter-versioned records, with those of
    /// the records it contained last time) and a fragment lookup. A cache error is a miss
    /// ([When the cache fails](crate#when-the-cache-fails-the-page-does-not)); only `render`'s
    /// own error is returned, and nothing is stored then.
    ///
    /// ```
    /// use cachesweeper::{KeyParts, Sweepable, Sweeper};
    ///
    /// #[derive(Sweepable)]
    /// struct Comment { id: i64, body: String }
    ///
    /// let sweeper = Sweeper::embedded();
    /// let comment = Comment { id: 1, body: "hi".into() };
    /// let parts = KeyParts::new().part("comment.html");
    /// let render = || Ok::<_, std::fmt::Error>(format!("<p>{}</p>", comment.body));
    ///
    /// assert_eq!(sweeper.scope().fragment(&comment, 500, &parts, render)?, "<p>hi</p>"); // miss
    /// assert_eq!(sweeper.scope().fragment(&comment, 500, &parts, render)?, "<p>hi</p>"); // hit
    /// sweeper.invalidate(&comment).unwrap();
    /// assert_eq!(sweeper.scope().fragment(&comment, 500, &parts, render)?, "<p>hi</p>"); // miss
    /// assert_eq!((sweeper.stats().hits, sweeper.stats().misses), (1, 2));
    /// # Ok::<(), std::fmt::Error>(())
    /// ```
    pub fn fragment<R, E>(
        &self,
        record: &R,
        ttl: impl crate::Ttl,
        parts: &KeyParts,
        render: impl FnOnce() -> Result<String, E>,
    ) -> Result<String, E>
    where
        R: Sweepable + ?Sized,
    {
        crate::in_render::fragment(&self.handle, record, ttl, parts, render).map(Html::into_string)
    }

    /// The same scope, marking each fragment it serves, for a development page that shows
    /// what the cache did: the fragment's HTML comes between two HTML comments,
    /// `<!--cachesweeper hit name="comment" record="app::Comment/42" key="cs|f|..."-->` (or
    /// `miss`) and `<!--/cachesweeper-->`, which change neither the page's layout nor its
    /// text. A fragment inside one that hit is inside its HTML and has no marks of its own.
    /// A debug scope stores nothing (an outer fragment would hold the marks of those inside it).
    ///
    /// ```
    /// # use askama::Template;
    /// # #[derive(cachesweeper::Sweepable)] struct Post { id: i64 }
    /// #[derive(Template, cachesweeper::TemplateDigest)]
    /// #[template(ext = "html", source = "{% filter cachesweeper::filters::cachesweeper(post, 60, \"body\") %}<p>x</p>{% endfilter %}")]
    /// struct Page { post: Post }
    ///
    /// let sweeper = cachesweeper::Sweeper::embedded();
    /// let page = Page { post: Post { id: 1 } };
    /// sweeper.scope().render(&page)?; // stored
    /// let html = sweeper.scope().debug().render(&page)?;
    /// assert!(html.starts_with(r#"<!--cachesweeper hit name="body" record="#));
    /// assert!(html.ends_with("<p>x</p><!--/cachesweeper-->"));
    /// # Ok::<(), askama::Error>(())
    /// ```
    pub fn debug(&self) -> Scope {
        self.with_mode(Mode::Debug)
    }

    /// This scope, rendering every block without the cache: nothing is looked up and nothing
    /// stored (each block counts a miss). For a request that must not see or leave cached
    /// HTML: a preview of a draft, an administrator's page with controls in it. A single
    /// block can be rendered so too, in the template: `cache=false` as a named argument
    /// (`cachesweeper(post, 300, "body", cache=!preview)`).
    ///
    /// ```
    /// # use askama::Template;
    /// # #[derive(cachesweeper::Sweepable)] struct Post { id: i64 }
    /// #[derive(Template, cachesweeper::TemplateDigest)]
    /// #[template(ext = "html", source = "{% filter cachesweeper::filters::cachesweeper(post, 60, \"body\") %}<p>x</p>{% endfilter %}")]
    /// struct Page { post: Post }
    ///
    /// let sweeper = cachesweeper::Sweeper::embedded();
    /// let page = Page { post: Post { id: 1 } };
    /// let preview = sweeper.scope().uncached();
    /// assert_eq!(preview.render(&page)?, "<p>x</p>");
    /// assert_eq!((preview.stats().hits, preview.stats().misses), (0, 1));
    /// let next = sweeper.scope();
    /// next.render(&page)?;
    /// assert_eq!(next.stats().hits, 0, "the preview stored nothing");
    /// # Ok::<(), askama::Error>(())
    /// ```
    pub fn uncached(&self) -> Scope {
        self.with_mode(Mode::Uncached)
    }

    fn with_mode(&self, mode: Mode) -> Scope {
        Scope {
            handle: Sweeper {
                mode,
                ..self.handle.clone()
            },
            if_none_match: self.if_none_match.clone(),
            audience: self.audience,
        }
    }

    /// What was done through this scope (and its clones) so far.
    pub fn stats(&self) -> StatsSnapshot {
        self.handle.stats()
    }
}
