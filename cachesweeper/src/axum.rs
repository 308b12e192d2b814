//! [`Scope`] as an axum extractor (feature `axum`).

use axum_core::extract::{FromRef, FromRequestParts};

use crate::{Scope, Sweeper};

/// A handler that takes a [`Scope`] gets one taken when its request arrived: axum runs the
/// extractors before the handler's body, so the scope predates every read the handler makes,
/// which is what the store rule needs (see [`Sweeper::invalidate`]). The [`Sweeper`] comes
/// from the router's state (`Sweeper: FromRef<S>`: the state itself, or a field of it with
/// `#[derive(FromRef)]` or a hand-written `impl FromRef<AppState> for Sweeper`).
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
        _: &mut http::request::Parts,
        state: &S,
    ) -> Result<Scope, Self::Rejection> {
        Ok(Sweeper::from_ref(state).scope())
    }
}
