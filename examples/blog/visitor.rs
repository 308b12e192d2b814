//! Who is looking: a visitor who opened the sign-in page has a signed cookie (`blog_visitor`)
//! naming a random id and, once signed in, a name; anyone else has none, and reads the pages
//! everyone reads (which an HTTP cache in front may keep). No passwords: signing in is saying
//! a name, which is enough to show what a cache must never mix up between viewers ("Signed in
//! as …", edit links on your own comments, a CSRF token in every form).
//!
//! The cookie is `id.name.signature`, the signature an HMAC-SHA256 of `blog_visitor.id.name`
//! under the blog's secret; the CSRF token is an HMAC of `csrf.id` (each tagged with what it
//! is, so that neither can stand for the other) (a signed double submit: nothing is kept
//! on the server, and several blog processes given one `--session-secret` accept each other's
//! visitors). Signing in or out draws a new id, so a token from before does not outlive it.

use std::hash::BuildHasher;

use axum::extract::{Request, State};
use axum::http::header::COOKIE;
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The cookie's name.
pub const COOKIE_NAME: &str = "blog_visitor";

/// How many hex digits a visitor's id has.
const ID_LEN: usize = 32;

/// The longest name one may sign in with.
pub const MAX_NAME_CHARS: usize = 40;

/// The blog's secret, which signs cookies and tokens.
#[derive(Clone)]
pub struct Keys {
    secret: Vec<u8>,
}

/// One visitor, from a cookie whose signature checked, or new (without one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visitor {
    /// 32 hex digits, drawn at random when the visitor arrived or last signed in or out.
    id: String,
    /// The name they signed in with, if they did.
    pub name: Option<String>,
    /// Whether the request carried this visitor's cookie. A visitor without one is given one
    /// only by the sign-in page, so that the pages everyone reads set no cookie and hold no
    /// token: an HTTP cache in front may keep them.
    pub has_cookie: bool,
}

impl Keys {
    /// Keys from `secret`, or, without one, from a secret drawn for this process (its
    /// visitors are signed out when it restarts).
    pub fn new(secret: Option<&str>) -> Keys {
        Keys {
            secret: match secret {
                Some(secret) => secret.as_bytes().to_vec(),
                None => random_hex(64).into_bytes(),
            },
        }
    }

    fn mac(&self, parts: &[&str]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key");
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                mac.update(b".");
            }
            mac.update(part.as_bytes());
        }
        mac
    }

    fn sign(&self, parts: &[&str]) -> String {
        hex(&self.mac(parts).finalize().into_bytes())
    }

    /// Whether `signature` (hex) is the HMAC of `parts`, compared in constant time.
    fn verify(&self, parts: &[&str], signature: &str) -> bool {
        unhex(signature).is_some_and(|bytes| self.mac(parts).verify_slice(&bytes).is_ok())
    }

    /// A new visitor, signed in as `name` or not.
    pub fn visitor(&self, name: Option<String>) -> Visitor {
        Visitor {
            id: random_hex(ID_LEN),
            name,
            has_cookie: false,
        }
    }

    /// The visitor whose valid cookie is among `headers`, if any.
    pub fn visitor_of(&self, headers: &HeaderMap) -> Option<Visitor> {
        headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().strip_prefix(COOKIE_NAME)?.strip_prefix('='))
            .find_map(|value| {
                let mut parts = value.splitn(3, '.');
                let (id, name, signature) = (parts.next()?, parts.next()?, parts.next()?);
                let well_formed = id.len() == ID_LEN
                    && id.bytes().all(|b| b.is_ascii_hexdigit())
                    && (name.is_empty() || valid_name(name));
                (well_formed && self.verify(&[COOKIE_NAME, id, name], signature)).then(|| Visitor {
                    id: id.to_owned(),
                    name: (!name.is_empty()).then(|| name.to_owned()),
                    has_cookie: true,
                })
            })
    }

    /// The `Set-Cookie` value that gives the browser `visitor`.
    pub fn cookie(&self, visitor: &Visitor) -> HeaderValue {
        let name = visitor.name.as_deref().unwrap_or("");
        let signature = self.sign(&[COOKIE_NAME, &visitor.id, name]);
        HeaderValue::from_str(&format!(
            "{COOKIE_NAME}={}.{name}.{signature}; Path=/; HttpOnly; SameSite=Lax",
            visitor.id
        ))
        .expect("hex digits and a name of ASCII letters, digits, '-' and '_'")
    }

    /// The CSRF token of `visitor`'s forms.
    pub fn csrf(&self, visitor: &Visitor) -> String {
        self.sign(&["csrf", &visitor.id])
    }

    /// Whether `token` is `visitor`'s CSRF token.
    pub fn csrf_ok(&self, visitor: &Visitor, token: &str) -> bool {
        self.verify(&["csrf", &visitor.id], token)
    }
}

impl Visitor {
    /// This visitor, as they are once the cookie the response sets them has come back.
    pub fn with_cookie(self) -> Visitor {
        Visitor {
            has_cookie: true,
            ..self
        }
    }
}

/// A name one may sign in with: 1 to 40 ASCII letters, digits, `-` or `_` (it goes into the
/// cookie as it is).
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_CHARS).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The middleware that gives every request its [`Visitor`] (an extension): the cookie's, or
/// a new anonymous one without a cookie (which only the sign-in page gives).
pub async fn layer(State(keys): State<Keys>, mut request: Request, next: Next) -> Response {
    let visitor = keys
        .visitor_of(request.headers())
        .unwrap_or_else(|| keys.visitor(None));
    request.extensions_mut().insert(visitor);
    next.run(request).await
}

/// `len` random hex digits. From std's randomly keyed SipHash (keyed from the operating
/// system), as the library's hole markers are: enough for a demo's ids, with no crate for it.
fn random_hex(len: usize) -> String {
    let mut out = String::with_capacity(len + 16);
    let state = std::collections::hash_map::RandomState::new();
    let mut i = 0u64;
    while out.len() < len {
        out.push_str(&format!("{:016x}", state.hash_one(i)));
        i += 1;
    }
    out.truncate(len);
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}
