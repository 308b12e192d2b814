//! The envelope around every stored fragment.
//!
//! A fragment is stored as a 4-byte magic, its length as a little-endian `u32`, then its UTF-8
//! bytes. A reader that finds anything else (a value some other program wrote under our key, a
//! truncated value, bytes that are not UTF-8) treats it as a miss, and the fresh render overwrites
//! it. The envelope also keeps every stored value non-empty, which memcached's meta protocol
//! reserves for lease placeholders.

const MAGIC: &[u8; 4] = b"cs\x01f";
const HEADER_LEN: usize = MAGIC.len() + 4;

/// Wraps a rendered fragment for storage.
pub(crate) fn encode(fragment: &str) -> Vec<u8> {
    let len = u32::try_from(fragment.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(HEADER_LEN + fragment.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(fragment.as_bytes());
    out
}

/// The fragment in a stored value, or `None` if the value is not one we wrote whole.
pub(crate) fn decode(stored: Vec<u8>) -> Option<String> {
    let header = stored.get(..HEADER_LEN)?;
    if &header[..4] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(header[4..].try_into().ok()?) as usize;
    if stored.len() - HEADER_LEN != len {
        return None;
    }
    let mut bytes = stored;
    bytes.drain(..HEADER_LEN);
    String::from_utf8(bytes).ok()
}

/// The stored size of a fragment of `len` bytes.
pub(crate) fn encoded_len(len: usize) -> usize {
    HEADER_LEN + len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        assert_eq!(decode(encode("<p>hé</p>")).as_deref(), Some("<p>hé</p>"));
        assert_eq!(decode(encode("")).as_deref(), Some(""));
        let mut truncated = encode("hello");
        truncated.pop();
        assert_eq!(decode(truncated), None);
        assert_eq!(decode(b"hello world".to_vec()), None);
        let mut not_utf8 = encode("ab");
        let n = not_utf8.len();
        not_utf8[n - 1] = 0xff;
        assert_eq!(decode(not_utf8), None);
    }
}
