//! [`Scope`] as an axum extractor, and [`Scope::respond`]: a page with its conditional GET
//! done (feature `axum`).

use axum_core::body::Body;
use axum_core::extract::{FromRef, FromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::http_cache::Audience;
use crate::{Conditional, Scope, Sweeper, TemplateDigest};

/// A handler that takes a [`Scope`] gets one taken when its request arrived: axum runs the
/// extractors before the handler's body, so the scope predates every read the handler makes,
/// which is what the store rule needs (see [`Sweeper::invalidate`]). The [`Sweeper`] comes
/// from the router's state (`Sweeper: FromRef<S>`: the state itself, or a field of it with
/// `#[derive(FromRef)]` or a hand-written `impl FromRef<AppState> for Sweeper`).
///
/// It reads the request's `If-None-Match` (for [`Scope::respond`]), and its
/// [`Audience`]: [`Anyone`](Audience::Anyone) for a request without a `Cookie` or an
/// `Authorization` header (as Varnish's built-in rules decide what they may look up), else
/// [`Viewer`](Audience::Viewer). Whatever else a page shows (a header, the client's address)
/// the handler says with [`Scope::for_audience`].
///
/// ```
/// use askama::Template;
/// use axum::{Router, extract::State, response::Html, routing::get};
/// use cachesweeper::{Scope, Sweepable, Sweeper};
///
/// #[derive(Sweepable)]
/// struct Post { id: i64, title: String }
///
/// #[derive(Template, cachesweeper::TemplateDigest)]
/// #[template(ext = "html", source = "{% filter cachesweeper::filters::cachesweeper(post, 60, \"title\") %}<h1>{{ post.title }}</h1>{% endfilter %}")]
/// struct PostPage { post: Post }
///
/// async fn post(scope: Scope) -> Html<String> {
///     // The scope was taken before this reads the post.
///     let post = Post { id: 1, title: "Hello".into() };
///     Html(scope.render_async(&PostPage { post }).await.unwrap_or_default())
/// }
///
/// async fn like(State(sweeper): State<Sweeper>) {
///     // ... commit the write, then:
///     let _ = sweeper.invalidate_async(&Post { id: 1, title: String::new() }).await;
/// }
///
/// let app: Router = Router::new()
///     .route("/posts/1", get(post))
///     .route("/posts/1/like", axum::routing::post(like))
///     .with_state(Sweeper::embedded());
/// ```
impl<S> FromRequestParts<S> for Scope
where
    Sweeper: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &S,
    ) -> Result<Scope, Self::Rejection> {
        let credentials = parts.headers.contains_key(header::COOKIE)
            || parts.headers.contains_key(header::AUTHORIZATION);
        let mut scope = Sweeper::from_ref(state)
            .scope()
            .for_audience(if credentials {
                Audience::Viewer
            } else {
                Audience::Anyone
            });
        scope.if_none_match = parts
            .headers
            .get(header::IF_NONE_MATCH)
            .and_then(|value| value.to_str().ok())
            .map(Into::into);
        Ok(scope)
    }
}

/// The `Cache-Control` of one viewer's page
/// ([`Caching::Private`](crate::http_cache::Caching::Private)): a browser may keep it but asks
/// again each time (`no-cache`, answered 304 when nothing changed), and no shared cache may
/// keep it (`private`: it may show who is looking). For the application's own responses that
/// are one viewer's.
pub const CACHE_CONTROL: &str = crate::http_cache::PRIVATE;

impl Scope {
    /// The request's `If-None-Match`, as the extractor read it: for a page rendered with
    /// [`Scope::render_conditional`] rather than [`respond`](Self::respond).
    pub fn if_none_match(&self) -> Option<&str> {
        self.if_none_match.as_deref()
    }

    /// Renders `page` for an axum handler, with the conditional GET done: `200` with the page,
    /// its `ETag` (the page's validator, see [`Scope::render_conditional`]) and the headers of
    /// its [`Caching`](crate::http_cache::Caching) (`Cache-Control`, and for a page a shared
    /// cache may keep, its tags); or, when the request's `If-None-Match` (read by the
    /// extractor) names the current validator, `304 Not Modified` with no fragment rendered;
    /// or `500` if the page fails to render.
    ///
    /// ```
    /// use askama::Template;
    /// use axum::{Router, response::Response, routing::get};
    /// use cachesweeper::{Scope, Sweepable, Sweeper};
    ///
    /// #[derive(Sweepable)]
    /// struct Post { id: i64, title: String }
    ///
    /// #[derive(Template, cachesweeper::TemplateDigest)]
    /// #[template(ext = "html", source = "{% filter cachesweeper::filters::cachesweeper(post, 60, \"title\") %}<h1>{{ post.title }}</h1>{% endfilter %}")]
    /// struct PostPage { post: Post }
    ///
    /// async fn post(scope: Scope) -> Response {
    ///     let post = Post { id: 1, title: "Hello".into() }; // read after the scope was taken
    ///     scope.respond(&PostPage { post }).await
    /// }
    ///
    /// let app: Router = Router::new().route("/posts/1", get(post)).with_state(Sweeper::embedded());
    /// ```
    pub async fn respond<T>(&self, page: &T) -> Response
    where
        T: askama::Template + TemplateDigest + Sync + ?Sized,
    {
        match self
            .render_conditional_async(page, self.if_none_match.as_deref())
            .await
        {
            Ok(answer) => answer.into_response(),
            Err(error) => {
                tracing::error!(%error, "cachesweeper: the page failed to render");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the page failed to render",
                )
                    .into_response()
            }
        }
    }
}

/// A page's conditional render as a response: `200` with the page (`Content-Type:
/// text/html`), its `ETag` when it has one and `Cache-Control: private, no-cache`; or `304`
/// with the `ETag`. For a page rendered some other way than [`Scope::respond`] (with the
/// blocking [`Scope::render_conditional`] on a blocking thread, say).
impl IntoResponse for Conditional {
    fn into_response(self) -> Response {
        let (mut response, etag, caching) = match self {
            Conditional::NotModified { etag, caching } => {
                let mut response = Response::new(Body::empty());
                *response.status_mut() = StatusCode::NOT_MODIFIED;
                (response, Some(etag), caching)
            }
            Conditional::Page {
                html,
                etag,
                caching,
            } => {
                let mut response = Response::new(Body::from(html));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                (response, etag, caching)
            }
        };
        let headers = response.headers_mut();
        for (name, value) in caching.headers() {
            match HeaderValue::from_str(&value) {
                Ok(value) => {
                    headers.append(name, value);
                }
                // Tags are hex digits, the rest is ours: never, but a page must not go out
                // shared without what makes it so.
                Err(_) => {
                    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                    break;
                }
            }
        }
        if let Some(etag) = etag.and_then(|etag| HeaderValue::from_str(&etag).ok()) {
            headers.insert(header::ETAG, etag);
        }
        response
    }
}

/// A layer for the router that makes sure a response that sets a cookie is never kept by a
/// shared cache: it is one viewer's, whatever the page rendered for it said (a handler that
/// answers with [`Scope::respond`] and then signs the visitor in, say). Such a response loses
/// its tags and `cachesweeper-store-by`, and becomes `Cache-Control: private, no-cache`.
/// Varnish's built-in rules keep no response that sets a cookie either; a CDN may.
///
/// ```
/// use axum::Router;
/// use cachesweeper::Sweeper;
///
/// let app: Router = Router::new()
///     // .route(...)
///     .layer(cachesweeper::axum::CookieGuard)
///     .with_state(Sweeper::embedded());
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct CookieGuard;

impl<S> tower_layer::Layer<S> for CookieGuard {
    type Service = CookieGuarded<S>;

    fn layer(&self, inner: S) -> CookieGuarded<S> {
        CookieGuarded(inner)
    }
}

/// The service [`CookieGuard`] wraps around the router's.
#[derive(Debug, Clone)]
pub struct CookieGuarded<S>(S);

impl<S, B> tower_service::Service<http::Request<B>> for CookieGuarded<S>
where
    S: tower_service::Service<http::Request<B>, Response = Response>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response, S::Error>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let response = self.0.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            one_viewers_if_it_sets_a_cookie(&mut response);
            Ok(response)
        })
    }
}

/// A shared page's response that sets a cookie, made one viewer's.
fn one_viewers_if_it_sets_a_cookie(response: &mut Response) {
    let headers = response.headers_mut();
    if !headers.contains_key(header::SET_COOKIE)
        || !headers.contains_key(crate::http_cache::STORE_BY)
    {
        return;
    }
    headers.remove(crate::http_cache::STORE_BY);
    for tags in [
        crate::http_cache::TagHeader::Xkey,
        crate::http_cache::TagHeader::SurrogateKey,
        crate::http_cache::TagHeader::CacheTag,
    ] {
        headers.remove(tags.name());
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
}
