//! The envelope around every stored fragment.
//!
//! A stored fragment is a 4-byte magic, the time it expires (milliseconds since the epoch, so
//! that a copy kept in another process's L1 expires with it), the versions of the records
//! rendered inside it (its *dependencies*, checked on every hit, see
//! [`Scope::render`](crate::Scope::render)), then its UTF-8 bytes, all lengths
//! little-endian. A reader that finds anything else (a value some other program wrote under our
//! key, a truncated value, bytes that are not UTF-8) treats it as a miss, and the fresh render
//! overwrites it. The envelope also keeps every stored value non-empty, which memcached's meta
//! protocol reserves for lease placeholders.
//!
//! A fragment with [holes](crate::Holes) has another magic, and after its dependencies the
//! holes: each one's offset in the HTML, name and arguments. A fragment without holes is
//! written as it was before holes existed.

use std::sync::Arc;

use crate::holes::{Hole, Placed};

const MAGIC: &[u8; 4] = b"cs\x02f";
/// The magic of a fragment with holes.
const MAGIC_HOLES: &[u8; 4] = b"cs\x02h";

/// A record rendered inside a fragment: its version counter's key and the value it had.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Dep {
    pub(crate) counter_key: Arc<str>,
    pub(crate) version: u64,
}

/// A fragment with what must hold for it to be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) html: String,
    /// Milliseconds since the epoch.
    pub(crate) expires_ms: u64,
    pub(crate) deps: Arc<[Dep]>,
    /// Where its holes go in `html`, in order.
    pub(crate) holes: Arc<[Placed]>,
}

/// A fragment's HTML as a lookup hands it over, and whether it came from the cache: rendered
/// here, or shared with the cache that holds it (written out from there, not copied first).
#[derive(Debug)]
pub(crate) enum Html {
    /// Rendered by this lookup and not kept anywhere.
    Owned(String),
    /// Found in the cache (or handed over by the render of this process that just rendered it).
    Hit(Arc<Stored>),
    /// Rendered by this lookup (or earlier in the same page render), and kept.
    Rendered(Arc<Stored>),
}

impl Html {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Html::Owned(html) => html,
            Html::Hit(stored) | Html::Rendered(stored) => &stored.html,
        }
    }

    pub(crate) fn is_hit(&self) -> bool {
        matches!(self, Html::Hit(_))
    }

    pub(crate) fn into_string(self) -> String {
        match self {
            Html::Owned(html) => html,
            Html::Hit(stored) | Html::Rendered(stored) => {
                Arc::try_unwrap(stored).map_or_else(|shared| shared.html.clone(), |s| s.html)
            }
        }
    }
}

impl From<String> for Html {
    fn from(html: String) -> Html {
        Html::Owned(html)
    }
}

/// Wraps a rendered fragment for storage.
pub(crate) fn encode(stored: &Stored) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(stored));
    out.extend_from_slice(if stored.holes.is_empty() {
        MAGIC
    } else {
        MAGIC_HOLES
    });
    out.extend_from_slice(&stored.expires_ms.to_le_bytes());
    out.extend_from_slice(&len32(stored.deps.len()));
    for dep in stored.deps.iter() {
        let len = u16::try_from(dep.counter_key.len()).unwrap_or(0);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&dep.counter_key.as_bytes()[..usize::from(len)]);
        out.extend_from_slice(&dep.version.to_le_bytes());
    }
    if !stored.holes.is_empty() {
        out.extend_from_slice(&len32(stored.holes.len()));
        for placed in stored.holes.iter() {
            out.extend_from_slice(&len32(placed.offset));
            put_str(&mut out, placed.hole.name());
            out.extend_from_slice(&len32(placed.hole.args().len()));
            for arg in placed.hole.args() {
                put_str(&mut out, arg);
            }
        }
    }
    out.extend_from_slice(&len32(stored.html.len()));
    out.extend_from_slice(stored.html.as_bytes());
    out
}

/// A length as it is written: 4 bytes, little-endian (a fragment is far below 4 GiB: the
/// backends refuse values over a few MiB).
fn len32(len: usize) -> [u8; 4] {
    u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes()
}

/// A string, after its length.
fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&len32(s.len()));
    out.extend_from_slice(s.as_bytes());
}

/// Reads a string written by [`put_str`] off the front of `rest`.
fn take_str(rest: &mut &[u8]) -> Option<String> {
    let len = u32::from_le_bytes(take_le(rest)?) as usize;
    Some(std::str::from_utf8(take(rest, len)?).ok()?.to_owned())
}

/// Reads `n` bytes off the front of `rest`.
fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, tail) = rest.split_at_checked(n)?;
    *rest = tail;
    Some(head)
}

/// Reads `N` bytes off the front of `rest`, for a number's `from_le_bytes`.
fn take_le<const N: usize>(rest: &mut &[u8]) -> Option<[u8; N]> {
    take(rest, N)?.try_into().ok()
}

/// The fragment in a stored value, or `None` if the value is not one we wrote whole. The HTML
/// keeps the value's allocation.
pub(crate) fn decode(mut stored: Vec<u8>) -> Option<Stored> {
    let mut rest = stored.as_slice();
    let with_holes = match take(&mut rest, 4)? {
        magic if magic == MAGIC => false,
        magic if magic == MAGIC_HOLES => true,
        _ => return None,
    };
    let expires_ms = u64::from_le_bytes(take_le(&mut rest)?);
    let count = u32::from_le_bytes(take_le(&mut rest)?) as usize;
    let mut deps = Vec::with_capacity(count.min(rest.len() / 10));
    for _ in 0..count {
        let len = usize::from(u16::from_le_bytes(take_le(&mut rest)?));
        let key = std::str::from_utf8(take(&mut rest, len)?).ok()?;
        let version = u64::from_le_bytes(take_le(&mut rest)?);
        deps.push(Dep {
            counter_key: key.into(),
            version,
        });
    }
    let mut holes = Vec::new();
    if with_holes {
        let count = u32::from_le_bytes(take_le(&mut rest)?) as usize;
        // A count too large fails at the first hole past the end, like a short value.
        for _ in 0..count {
            let offset = u32::from_le_bytes(take_le(&mut rest)?) as usize;
            let name = take_str(&mut rest)?;
            let args = u32::from_le_bytes(take_le(&mut rest)?) as usize;
            let args = (0..args)
                .map(|_| take_str(&mut rest))
                .collect::<Option<Vec<_>>>()?;
            holes.push(Placed {
                offset,
                hole: Arc::new(Hole::new(name, args)),
            });
        }
    }
    let len = u32::from_le_bytes(take_le(&mut rest)?) as usize;
    if rest.len() != len {
        return None;
    }
    let header = stored.len() - len;
    stored.drain(..header);
    let html = String::from_utf8(stored).ok()?;
    // Each hole in order, inside the HTML, between two characters.
    let mut previous = 0;
    for placed in &holes {
        if placed.offset < previous || !html.is_char_boundary(placed.offset) {
            return None;
        }
        previous = placed.offset;
    }
    Some(Stored {
        html,
        expires_ms,
        deps: deps.into(),
        holes: holes.into(),
    })
}

/// The stored size of a fragment.
pub(crate) fn encoded_len(stored: &Stored) -> usize {
    let holes = if stored.holes.is_empty() {
        0
    } else {
        4 + stored
            .holes
            .iter()
            .map(|p| {
                4 + 4
                    + p.hole.name().len()
                    + 4
                    + p.hole.args().iter().map(|a| 4 + a.len()).sum::<usize>()
            })
            .sum::<usize>()
    };
    let deps: usize = stored.deps.iter().map(|d| 10 + d.counter_key.len()).sum();
    MAGIC.len() + 8 + 4 + deps + holes + 4 + stored.html.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(html: &str, deps: &[(&str, u64)]) -> Stored {
        Stored {
            holes: Arc::new([]),
            html: html.into(),
            expires_ms: 1_700_000_000_000,
            deps: deps
                .iter()
                .map(|&(k, v)| Dep {
                    counter_key: k.into(),
                    version: v,
                })
                .collect(),
        }
    }

    #[test]
    fn round_trip_and_rejects() {
        for value in [
            stored("<p>hé</p>", &[]),
            stored("", &[]),
            stored("<ol></ol>", &[("cs:v:m:1", 7), ("cs:v:m:2", u64::MAX)]),
            with_holes(),
        ] {
            let bytes = encode(&value);
            assert_eq!(bytes.len(), encoded_len(&value));
            assert_eq!(decode(bytes), Some(value));
        }
        let mut truncated = encode(&stored("hello", &[("k", 1)]));
        truncated.pop();
        assert_eq!(decode(truncated), None);
        assert_eq!(decode(b"hello world".to_vec()), None);
        let mut not_utf8 = encode(&stored("ab", &[]));
        let n = not_utf8.len();
        not_utf8[n - 1] = 0xff;
        assert_eq!(decode(not_utf8), None);
        // A hole past the end, or between the bytes of a character.
        for offset in [100, 1] {
            let mut value = with_holes();
            value.html = "é".into();
            value.holes = Arc::new([Placed {
                offset,
                hole: Arc::new(Hole::new("x", vec![])),
            }]);
            assert_eq!(decode(encode(&value)), None);
        }
    }

    fn with_holes() -> Stored {
        let mut value = stored("<p>é</p><p></p>", &[("cs:v:m:1", 7)]);
        value.holes = [
            (5, "like", vec!["1"]),
            (12, "edit", vec!["2", "ann"]),
            (12, "x", vec![]),
        ]
        .into_iter()
        .map(|(offset, name, args)| Placed {
            offset,
            hole: Arc::new(Hole::new(
                name,
                args.into_iter().map(String::from).collect(),
            )),
        })
        .collect();
        value
    }
}
