//! The HTTP side: routes, handlers, and the one path every page takes to be rendered, timed by
//! the cache, and answered.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use askama::Template;
use axum::Router;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Extension, Form, FromRef, Path, Query, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use cachesweeper::{Lazy, Scope, StatsSnapshot, Sweeper, TemplateDigest};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};

use crate::db::{self, OwnChange, Vote};
use crate::models::Comment;
use crate::views::{ArticlePage, EditPage, ErrorPage, IndexPage, SignInPage, SlowRender, Visit};
use crate::visitor::{self, Keys, Visitor};

/// The per-request cache figures header: `hits=H misses=M`.
pub const CACHE_HEADER: &str = "x-fragment-cache";

/// The longest comment body accepted, in characters.
const MAX_BODY_CHARS: usize = 10_000;

/// What every handler shares.
#[derive(Clone)]
pub struct App {
    /// The database's connection pool, whose connections apply their own commits to the cache.
    db: db::Db,
    /// The sweeper; each request renders through a `Scope` of it (the handlers' extractor),
    /// taken when the request arrived, which also counts that request's hits and misses.
    sweeper: Sweeper,
    /// The metrics recorder's handle, which renders `GET /metrics`.
    metrics: PrometheusHandle,
    /// Render with the blocking API on tokio's blocking pool, as the blog did before the async
    /// API existed (`--blocking-api`): the baseline of the throughput benchmark.
    blocking_api: bool,
    /// What signs the visitors' cookies and CSRF tokens.
    keys: Keys,
    /// Pages this process answered (200 or 304): behind an HTTP cache, what it did not answer.
    pages: Arc<AtomicU64>,
    /// How long an article page's render waits after reading its versions (`--slow-render-ms`).
    slow_render: Duration,
}

/// What the `Scope` extractor takes its scope from.
impl FromRef<App> for Sweeper {
    fn from_ref(app: &App) -> Sweeper {
        app.sweeper.clone()
    }
}

impl App {
    pub fn new(
        db: db::Db,
        sweeper: Sweeper,
        metrics: PrometheusHandle,
        blocking_api: bool,
        keys: Keys,
        slow_render: Duration,
    ) -> App {
        App {
            db,
            sweeper,
            metrics,
            blocking_api,
            keys,
            pages: Arc::default(),
            slow_render,
        }
    }

    /// What a page shows `visitor` of themselves, on the page at `here`. A visitor without a
    /// cookie has no token (nothing to check it against) and sees no form that needs one, so
    /// their page is everyone's: an HTTP cache in front may keep it.
    fn visit(&self, visitor: &Visitor, here: &Uri) -> Visit {
        Visit {
            name: visitor.name.clone(),
            csrf: if visitor.has_cookie {
                self.keys.csrf(visitor)
            } else {
                String::new()
            },
            here: here.path().to_owned(),
        }
    }

    /// Refuses a form whose token is not `visitor`'s: another site's page posting here, or a
    /// form from before the visitor signed in or out.
    fn check_csrf(&self, visitor: &Visitor, token: &str) -> Result<(), Failure> {
        if self.keys.csrf_ok(visitor, token) {
            Ok(())
        } else {
            Err(Failure::Forbidden(
                "This form's security token is missing or is not yours. Reload the page and \
                 try again."
                    .to_owned(),
            ))
        }
    }

    /// The comments of an article as data a template loads when it reads it ([`Lazy`]):
    /// inside the render, on the thread rendering, which it tells the runtime it blocks
    /// (`block_in_place`).
    fn lazy_comments(&self, article_id: i64) -> Lazy<'static, Vec<Comment>> {
        let db = self.db.clone();
        Lazy::new(move || {
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(db.comments_of(article_id))
            })
        })
    }
}

pub fn router(app: App) -> Router {
    let keys = app.keys.clone();
    Router::new()
        .route("/", get(index))
        .route("/articles/{id}", get(article))
        .route("/articles/{id}/comments", post(add_comment))
        .route("/articles/{id}/comments/{cid}/like", post(like))
        .route("/articles/{id}/comments/{cid}/dislike", post(dislike))
        .route(
            "/articles/{id}/comments/{cid}/edit",
            get(edit_form).post(edit_comment),
        )
        .route("/articles/{id}/comments/{cid}/delete", post(delete_comment))
        .route("/signin", get(sign_in_page).post(sign_in))
        .route("/signout", post(sign_out))
        .route("/stats", get(stats))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(keys, visitor::layer))
        // A page that sets a cookie is one visitor's, whatever it was rendered as.
        .layer(cachesweeper::axum::CookieGuard)
        .with_state(app)
}

/// What a handler produces.
enum Reply {
    /// A page's response, with its `ETag`, or 304 (see [`html`]).
    Page(Response),
    /// An error page.
    Html(StatusCode, String),
    /// 303 See Other, after a POST: the browser GETs the page again, so reloading it does not
    /// vote twice. With the visitor's new cookie after signing in or out.
    SeeOther(String, Option<HeaderValue>),
}

/// Why a request failed; each becomes an error page.
enum Failure {
    NotFound(String),
    BadRequest(String),
    /// A form without the visitor's CSRF token, or a change to someone else's comment.
    Forbidden(String),
    Internal(String),
}

impl From<db::Error> for Failure {
    fn from(error: db::Error) -> Failure {
        Failure::Internal(format!("database: {error}"))
    }
}

impl From<askama::Error> for Failure {
    fn from(error: askama::Error) -> Failure {
        Failure::Internal(format!("template: {error}"))
    }
}

/// Renders `page` through this request's sweeper scope, with every fragment lookup of the page
/// batched: a constant number of cache round trips however many comments. The template's
/// passes run on this task and the cache is awaited between them (`Scope::respond`): nothing
/// here blocks a worker thread on the network.
///
/// A conditional GET: `Scope::respond` sends the page's validator as its `ETag`, and answers a
/// request whose `If-None-Match` (read by the `Scope` extractor) names the current one with 304,
/// without rendering any fragment.
async fn html<P>(page: P, app: &App, scope: &Scope) -> Result<Reply, Failure>
where
    P: Template + TemplateDigest + Send + Sync + 'static,
{
    app.pages.fetch_add(1, Ordering::Relaxed);
    if !app.blocking_api {
        return Ok(Reply::Page(scope.respond(&page).await));
    }
    let scope = scope.clone();
    let answer =
        tokio::task::spawn_blocking(move || scope.render_conditional(&page, scope.if_none_match()))
            .await
            .map_err(|panic| Failure::Internal(format!("render panicked: {panic}")))??;
    Ok(Reply::Page(answer.into_response()))
}

/// Whether the page was asked for with `?cache_debug=1`: its fragments are marked, and it
/// draws the marks (see `templates/blog/cache-debug.html`).
///
/// Anyone may ask, as a demo should let them. A real application would keep it to its staff:
/// the marks show cache keys, and a debug page stores nothing, so it is rendered every time.
fn cache_debug(uri: &Uri) -> bool {
    uri.query()
        .is_some_and(|query| query.split('&').any(|pair| pair == "cache_debug=1"))
}

/// Runs a handler's work and answers with its result, the request's cache figures in the
/// `X-Fragment-Cache` header and in the log. The request's scope was taken when it arrived
/// (the handler's extractor), before the work reads anything from the database; with `debug`
/// it marks every fragment it serves (`Scope::debug`), and stores none.
async fn respond<F, W>(
    app: App,
    scope: Scope,
    (request, visit): (String, Visit),
    debug: bool,
    work: W,
) -> Response
where
    W: FnOnce(App, Scope) -> F,
    F: Future<Output = Result<Reply, Failure>>,
{
    let scope = if debug { scope.debug() } else { scope };
    let reply = match work(app.clone(), scope.clone()).await {
        Ok(reply) => Ok(reply),
        Err(failure) => error_page(failure, &scope, visit, debug).await,
    };
    let cache = scope.stats();
    let figures = cache_figures(&cache);
    let mut response = match reply {
        Ok(Reply::Page(response)) => response,
        Ok(Reply::Html(status, body)) => (
            status,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, cachesweeper::axum::CACHE_CONTROL),
            ],
            body,
        )
            .into_response(),
        Ok(Reply::SeeOther(location, cookie)) => {
            let mut response = axum::response::Redirect::to(&location).into_response();
            if let Some(cookie) = cookie {
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            response
        }
        // Even the error page failed to render: plain text.
        Err(message) => (StatusCode::INTERNAL_SERVER_ERROR, message).into_response(),
    };
    let lookups = cache.hits + cache.misses;
    // Rails prints `[h / n cache hits]` after each request; this is the same, plus round trips.
    tracing::info!(
        "{request} {} {figures} [{} / {lookups} cache hits] round_trips={}",
        response.status().as_u16(),
        cache.hits,
        cache.round_trips,
    );
    response.headers_mut().insert(
        CACHE_HEADER,
        HeaderValue::from_str(&figures).expect("digits and ASCII letters"),
    );
    response
}

/// The header's value and the log's figures: `hits=H misses=M`.
fn cache_figures(stats: &StatsSnapshot) -> String {
    format!("hits={} misses={}", stats.hits, stats.misses)
}

/// The error page for `failure`, or, if even that cannot be rendered, the reason as text.
async fn error_page(
    failure: Failure,
    scope: &Scope,
    visit: Visit,
    cache_debug: bool,
) -> Result<Reply, String> {
    let (status, message) = match failure {
        Failure::NotFound(message) => (StatusCode::NOT_FOUND, message),
        Failure::BadRequest(message) => (StatusCode::BAD_REQUEST, message),
        Failure::Forbidden(message) => (StatusCode::FORBIDDEN, message),
        Failure::Internal(message) => {
            tracing::error!(%message, "request failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong on our side.".to_owned(),
            )
        }
    };
    let page = ErrorPage {
        visit,
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        message,
        cache_debug,
    };
    scope
        .render_async(&page)
        .await
        .map(|body| Reply::Html(status, body))
        .map_err(|error| format!("{status}: {error}"))
}

/// A path segment as a record id; anything else names no record.
fn id(segment: &str, what: &str) -> Result<i64, Failure> {
    segment
        .parse()
        .map_err(|_| Failure::NotFound(format!("There is no {what} {segment:?}.")))
}

async fn index(
    State(app): State<App>,
    scope: Scope,
    Extension(visitor): Extension<Visitor>,
    uri: Uri,
) -> Response {
    let cache_debug = cache_debug(&uri);
    let visit = app.visit(&visitor, &uri);
    let request = (format!("GET {uri}"), visit.clone());
    respond(app, scope, request, cache_debug, async |app, scope| {
        let articles = app.db.article_summaries().await?;
        let page = IndexPage {
            visit,
            articles,
            cache_debug,
        };
        html(page, &app, &scope).await
    })
    .await
}

async fn article(
    State(app): State<App>,
    scope: Scope,
    Extension(visitor): Extension<Visitor>,
    Path(article_id): Path<String>,
    uri: Uri,
) -> Response {
    let cache_debug = cache_debug(&uri);
    let visit = app.visit(&visitor, &uri);
    let request = (format!("GET {uri}"), visit.clone());
    respond(app, scope, request, cache_debug, async move |app, scope| {
        let id = id(&article_id, "article")?;
        let article = app
            .db
            .article(id)
            .await?
            .ok_or_else(|| Failure::NotFound(format!("There is no article {id}.")))?;
        // Run inside the render, only if the comment list misses (and at most once).
        let comments = app.lazy_comments(id);
        let page = ArticlePage {
            visit,
            article,
            comments,
            cache_debug,
            slow: SlowRender::new(app.slow_render),
        };
        html(page, &app, &scope).await
    })
    .await
}

/// A form that carries nothing but its CSRF token. A missing token is an empty one (refused
/// with 403, not 400).
#[derive(Deserialize)]
struct TokenOnly {
    #[serde(default)]
    csrf: String,
}

/// The token of a form that may have failed to parse (then none: 403).
fn token<T>(form: &Result<Form<T>, FormRejection>, csrf: impl Fn(&T) -> &str) -> &str {
    form.as_ref().map_or("", |Form(form)| csrf(form))
}

/// A POST's request line and the visit it renders an error page for.
fn posted(app: &App, visitor: &Visitor, uri: &Uri) -> (String, Visit) {
    (format!("POST {uri}"), app.visit(visitor, uri))
}

async fn like(
    State(app): State<App>,
    scope: Scope,
    Extension(visitor): Extension<Visitor>,
    Path(ids): Path<(String, String)>,
    uri: Uri,
    form: Result<Form<TokenOnly>, FormRejection>,
) -> Response {
    let token = token(&form, |f| &f.csrf).to_owned();
    vote(app, scope, (visitor, uri, token), ids, Vote::Like).await
}

async fn dislike(
    State(app): State<App>,
    scope: Scope,
    Extension(visitor): Extension<Visitor>,
    Path(ids): Path<(String, String)>,
    uri: Uri,
    form: Result<Form<TokenOnly>, FormRejection>,
) -> Response {
    let token = token(&form, |f| &f.csrf).to_owned();
    vote(app, scope, (visitor, uri, token), ids, Vote::Dislike).await
}

/// Records a vote, from any visitor whose form carries their token. Its commit invalidates
/// the comment before `db::vote` returns (the change log's trigger names the comment and,
/// through `touches = Article`, its article), so the comment's fragment and every fragment of
/// the article around it are re-rendered, and nothing else.
async fn vote(
    app: App,
    scope: Scope,
    (visitor, uri, token): (Visitor, Uri, String),
    (article_id, comment_id): (String, String),
    vote: Vote,
) -> Response {
    let request = posted(&app, &visitor, &uri);
    respond(app, scope, request, false, async move |app, _| {
        if !visitor.has_cookie {
            // A vote from a page everyone shares, which has no token to carry: sign in first
            // (back to the article, by its number: the path segment is anyone's text).
            let article_id = id(&article_id, "article")?;
            return Ok(Reply::SeeOther(
                format!("/signin?next=/articles/{article_id}"),
                None,
            ));
        }
        app.check_csrf(&visitor, &token)?;
        let no_such_comment = Failure::NotFound(format!(
            "There is no comment {comment_id} on article {article_id}."
        ));
        let article_id = id(&article_id, "article")?;
        let Ok(comment_id) = id(&comment_id, "comment") else {
            return Err(no_such_comment);
        };
        let comment = app
            .db
            .vote(article_id, comment_id, vote)
            .await?
            .ok_or(no_such_comment)?;
        // Committed and invalidated: a render that starts from here sees the new versions. If
        // the cache is unreachable the vote still counts; the sweeper retries the invalidation
        // in the background, and pages keep rendering (uncached while it is down).
        let comment_id = comment.id;
        Ok(Reply::SeeOther(
            format!("/articles/{article_id}#comment-{comment_id}"),
            None,
        ))
    })
    .await
}

/// The add-comment and edit forms. A missing body counts as empty, so it gets the same 400
/// message; a missing token, 403.
#[derive(Deserialize)]
struct CommentForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    body: String,
}

/// A form field trimmed, if it is neither empty nor longer than `max` characters.
fn field<'a>(value: &'a str, name: &str, max: usize) -> Result<&'a str, Failure> {
    let value = value.trim();
    if value.is_empty() {
        Err(Failure::BadRequest(format!(
            "The {name} must not be empty."
        )))
    } else if value.chars().count() > max {
        Err(Failure::BadRequest(format!(
            "The {name} must be at most {max} characters long."
        )))
    } else {
        Ok(value)
    }
}

/// The signed-in name of the visitor, who must be signed in to write comments.
fn signed_in(visitor: &Visitor) -> Result<String, Failure> {
    visitor
        .name
        .clone()
        .ok_or_else(|| Failure::Forbidden("Sign in to write comments.".to_owned()))
}

async fn add_comment(
    State(app): State<App>,
    scope: Scope,
    Extension(visitor): Extension<Visitor>,
    Path(article_id): Path<String>,
    uri: Uri,
    form: Result<Form<CommentForm>, FormRejection>,
) -> Response {
    let request = posted(&app, &visitor, &uri);
    respond(app, scope, request, false, async move |app, _| {
        app.check_csrf(&visitor, token(&form, |f| &f.csrf))?;
        let author = signed_in(&visitor)?;
        let id = id(&article_id, "article")?;
        let article = app
            .db
            .article(id)
            .await?
            .ok_or_else(|| Failure::NotFound(format!("There is no article {id}.")))?;
        let Form(form) = form.map_err(|rejection| Failure::BadRequest(rejection.body_text()))?;
        let body = field(&form.body, "comment", MAX_BODY_CHARS)?;
        // Its commit invalidates the new comment's article (`touches`): the list fragment and
        // the article's other fragments miss once, and show it.
        let comment = app
            .db
            .add_comment(article.id, author, body.to_owned(), chrono::Utc::now())
            .await?;
        Ok(Reply::SeeOther(
            format!("/articles/{id}#comment-{}", comment.id),
            None,
        ))
    })
    .await
}

/// The ids of a comment's path, or 404.
fn comment_ids((article_id, comment_id): &(String, String)) -> Result<(i64, i64), Failure> {
    Ok((id(article_id, "article")?, id(comment_id, "comment")?))
}

/// Neither the visitor's comment nor anyone's: the same answer, so that it tells nothing.
fn not_yours(article_id: i64, comment_id: i64) -> Failure {
    Failure::Forbidden(format!(
        "Comment {comment_id} on article {article_id} is not yours to change."
    ))
}

/// `GET .../edit`: the author's form; anyone else gets 403.
async fn edit_form(
    State(app): State<App>,
    scope: Scope,
    Extension(visitor): Extension<Visitor>,
    Path(ids): Path<(String, String)>,
    uri: Uri,
) -> Response {
    let visit = app.visit(&visitor, &uri);
    let request = (format!("GET {uri}"), visit.clone());
    respond(app, scope, request, false, async move |app, scope| {
        let (article_id, comment_id) = comment_ids(&ids)?;
        let author = signed_in(&visitor)?;
        let comment = app
            .db
            .comments_of(article_id)
            .await?
            .into_iter()
            .find(|c| c.id == comment_id && c.author == author)
            .ok_or_else(|| not_yours(article_id, comment_id))?;
        let page = EditPage {
            visit,
            comment,
            cache_debug: false,
        };
        html(page, &app, &scope).await
    })
    .await
}

async fn edit_comment(
    State(app): State<App>,
    scope: Scope,
    Extension(visitor): Extension<Visitor>,
    Path(ids): Path<(String, String)>,
    uri: Uri,
    form: Result<Form<CommentForm>, FormRejection>,
) -> Response {
    change_own(app, scope, (visitor, uri), ids, form, Own::Edit).await
}

/// The delete button's form carries a token only (a missing body is an empty one).
async fn delete_comment(
    State(app): State<App>,
    scope: Scope,
    Extension(visitor): Extension<Visitor>,
    Path(ids): Path<(String, String)>,
    uri: Uri,
    form: Result<Form<CommentForm>, FormRejection>,
) -> Response {
    change_own(app, scope, (visitor, uri), ids, form, Own::Delete).await
}

/// What an author does to their comment.
#[derive(Clone, Copy)]
enum Own {
    Edit,
    Delete,
}

/// Edits or deletes the visitor's own comment: their token, signed in, the comment theirs
/// (in the statement itself: `Db::change_own_comment`).
async fn change_own(
    app: App,
    scope: Scope,
    (visitor, uri): (Visitor, Uri),
    ids: (String, String),
    form: Result<Form<CommentForm>, FormRejection>,
    own: Own,
) -> Response {
    let request = posted(&app, &visitor, &uri);
    respond(app, scope, request, false, async move |app, _| {
        app.check_csrf(&visitor, token(&form, |f| &f.csrf))?;
        let author = signed_in(&visitor)?;
        let (article_id, comment_id) = comment_ids(&ids)?;
        let (change, back_to) = match own {
            Own::Edit => {
                let Form(form) =
                    form.map_err(|rejection| Failure::BadRequest(rejection.body_text()))?;
                let body = field(&form.body, "comment", MAX_BODY_CHARS)?.to_owned();
                (OwnChange::Edit(body), format!("#comment-{comment_id}"))
            }
            Own::Delete => (OwnChange::Delete, "#comments".to_owned()),
        };
        app.db
            .change_own_comment(article_id, comment_id, author, change)
            .await?
            .ok_or_else(|| not_yours(article_id, comment_id))?;
        Ok(Reply::SeeOther(
            format!("/articles/{article_id}{back_to}"),
            None,
        ))
    })
    .await
}

/// The sign-in and sign-out forms.
#[derive(Deserialize)]
struct SignForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    /// The page to come back to.
    #[serde(default)]
    next: String,
}

/// A path of this site to come back to: anything else (another site, `//host`) is the index.
fn back_to(next: &str) -> String {
    // Visible ASCII only: a browser drops tabs and newlines, which would make `/\t/host`
    // another site's `//host`.
    if next.starts_with('/')
        && !next.starts_with("//")
        && next.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
    {
        next.to_owned()
    } else {
        "/".to_owned()
    }
}

/// `GET /signin`: the sign-in form. It gives a visitor without a cookie one (anonymous, with
/// the token the form carries); the page is theirs, so no cache in front keeps it.
async fn sign_in_page(
    State(app): State<App>,
    scope: Scope,
    Extension(visitor): Extension<Visitor>,
    uri: Uri,
    query: Result<Query<NextQuery>, QueryRejection>,
) -> Response {
    // A query that does not parse comes back to the index, as any unknown `next` does.
    let next = query.map(|Query(query)| query.next).unwrap_or_default();
    let cookie = (!visitor.has_cookie).then(|| app.keys.cookie(&visitor));
    let visitor = visitor.with_cookie();
    let request = (format!("GET {uri}"), app.visit(&visitor, &uri));
    let visit = request.1.clone();
    let mut response = respond(app, scope, request, false, async move |_, scope| {
        let page = SignInPage {
            visit,
            next: back_to(&next),
            cache_debug: false,
        };
        // Not `html`: the page holds this visitor's token.
        let body = scope.render_async(&page).await?;
        Ok(Reply::Html(StatusCode::OK, body))
    })
    .await;
    if let Some(cookie) = cookie {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// The page to come back to after signing in.
#[derive(Deserialize)]
struct NextQuery {
    #[serde(default)]
    next: String,
}

/// `POST /signin`: a name is all it takes. A new id, so the token of the page signed in from
/// is no longer good.
async fn sign_in(
    State(app): State<App>,
    scope: Scope,
    Extension(visitor): Extension<Visitor>,
    uri: Uri,
    form: Result<Form<SignForm>, FormRejection>,
) -> Response {
    sign(app, scope, (visitor, uri), form, Sign::In).await
}

/// `POST /signout`.
async fn sign_out(
    State(app): State<App>,
    scope: Scope,
    Extension(visitor): Extension<Visitor>,
    uri: Uri,
    form: Result<Form<SignForm>, FormRejection>,
) -> Response {
    sign(app, scope, (visitor, uri), form, Sign::Out).await
}

/// Which way a visitor signs.
#[derive(Clone, Copy)]
enum Sign {
    In,
    Out,
}

async fn sign(
    app: App,
    scope: Scope,
    (visitor, uri): (Visitor, Uri),
    form: Result<Form<SignForm>, FormRejection>,
    sign: Sign,
) -> Response {
    let request = posted(&app, &visitor, &uri);
    respond(app, scope, request, false, async move |app, _| {
        app.check_csrf(&visitor, token(&form, |f| &f.csrf))?;
        let Form(form) = form.map_err(|rejection| Failure::BadRequest(rejection.body_text()))?;
        let name = match sign {
            Sign::In => {
                let name = form.name.trim();
                if !visitor::valid_name(name) {
                    return Err(Failure::BadRequest(format!(
                        "A name is 1 to {} letters, digits, '-' or '_'.",
                        visitor::MAX_NAME_CHARS
                    )));
                }
                Some(name.to_owned())
            }
            Sign::Out => None,
        };
        let cookie = app.keys.cookie(&app.keys.visitor(name));
        Ok(Reply::SeeOther(back_to(&form.next), Some(cookie)))
    })
    .await
}

async fn not_found(
    State(app): State<App>,
    scope: Scope,
    Extension(visitor): Extension<Visitor>,
    method: Method,
    uri: Uri,
) -> Response {
    let request = (format!("{method} {uri}"), app.visit(&visitor, &uri));
    respond(app, scope, request, cache_debug(&uri), async move |_, _| {
        Err(Failure::NotFound(format!("There is no page at {uri}.")))
    })
    .await
}

/// `GET /stats`: the sweeper's counters since start, for every request together.
#[derive(Serialize)]
struct Stats {
    backend: String,
    hits: u64,
    misses: u64,
    errors: u64,
    round_trips: u64,
    invalidations: u64,
    bytes_read: u64,
    bytes_written: u64,
    oversized: u64,
    corrupt: u64,
    /// Pages this process answered, 200 or 304 (behind Varnish: those Varnish did not).
    pages: u64,
    /// Fragments rendered but not stored: a record in them changed while they rendered.
    unstored: u64,
    /// Fragments found but not served: a record inside them had changed.
    outdated: u64,
    /// SQL statements run since start (seeding aside): a warm article page runs one.
    db_queries: u64,
    /// Hits and misses by fragment name (a block's third argument), to see which blocks pay
    /// for themselves.
    fragments: Vec<FragmentFigures>,
}

#[derive(Serialize)]
struct FragmentFigures {
    name: String,
    hits: u64,
    misses: u64,
    /// Hits over lookups, from 0 to 1.
    hit_rate: f64,
}

async fn stats(State(app): State<App>) -> impl IntoResponse {
    let s = app.sweeper.stats();
    let no_store = [(header::CACHE_CONTROL, "no-store")];
    (
        no_store,
        Json(Stats {
            backend: app.sweeper.backend().name().to_owned(),
            hits: s.hits,
            misses: s.misses,
            errors: s.errors,
            round_trips: s.round_trips,
            invalidations: s.invalidations,
            bytes_read: s.bytes_read,
            bytes_written: s.bytes_written,
            oversized: s.oversized,
            corrupt: s.corrupt,
            pages: app.pages.load(Ordering::Relaxed),
            unstored: s.unstored,
            outdated: s.outdated,
            db_queries: db::statements(),
            fragments: app
                .sweeper
                .fragment_stats()
                .into_iter()
                .map(|f| FragmentFigures {
                    hit_rate: f.hit_rate(),
                    name: f.name,
                    hits: f.hits,
                    misses: f.misses,
                })
                .collect(),
        }),
    )
}

/// `GET /metrics`: the same counters (and round-trip times) in Prometheus's text format, for
/// a scraper.
async fn metrics(State(app): State<App>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/plain; version=0.0.4"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        app.metrics.render(),
    )
        .into_response()
}
