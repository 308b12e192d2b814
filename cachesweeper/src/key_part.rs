//! Values with a stable key form: primary keys and the extra key parts of a fragment.

use std::borrow::Cow;

/// A value with a stable textual form that can identify a record or a fragment in a cache key.
///
/// Implemented for strings, integers, `bool`, `char` and chrono's dates and times, and through
/// references. Floats, collections and arbitrary `Display` types are deliberately left out: their
/// text is not a stable identity (`0.1 + 0.2`, `HashMap` order), so a key built from them would
/// miss, or worse, collide.
///
/// Implement it for your own identifier types (a UUID, a slug newtype) by returning their
/// canonical text.
///
/// ```
/// use std::borrow::Cow;
/// use cachesweeper::KeyPart;
///
/// struct Slug(String);
///
/// impl KeyPart for Slug {
///     fn key_form(&self) -> Cow<'_, str> {
///         Cow::Borrowed(&self.0)
///     }
/// }
/// assert_eq!(Slug("hello-world".into()).key_form(), "hello-world");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no stable key form, so it cannot be part of a cache key",
    label = "not usable in a cache key",
    note = "key parts must be strings, integers, bool, char, chrono dates, or a type that implements `cachesweeper::KeyPart`",
    note = "floats and collections are left out on purpose: their text is not a stable identity"
)]
pub trait KeyPart {
    /// The canonical text of this value, as it goes into a key.
    fn key_form(&self) -> Cow<'_, str>;
}

impl<T: KeyPart + ?Sized> KeyPart for &T {
    fn key_form(&self) -> Cow<'_, str> {
        (**self).key_form()
    }
}

impl KeyPart for str {
    fn key_form(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}

impl KeyPart for String {
    fn key_form(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}

impl KeyPart for Cow<'_, str> {
    fn key_form(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}

// Integers are the usual record keys, read on every hit: itoa, not the formatting machinery.
macro_rules! key_part_via_itoa {
    ($($ty:ty),* $(,)?) => {$(
        impl KeyPart for $ty {
            fn key_form(&self) -> Cow<'_, str> {
                Cow::Owned(itoa::Buffer::new().format(*self).to_owned())
            }
        }
    )*};
}

key_part_via_itoa!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize
);

macro_rules! key_part_via_to_string {
    ($($ty:ty),* $(,)?) => {$(
        impl KeyPart for $ty {
            fn key_form(&self) -> Cow<'_, str> {
                Cow::Owned(self.to_string())
            }
        }
    )*};
}

key_part_via_to_string!(bool, char, chrono::NaiveDate, chrono::NaiveTime,);

impl KeyPart for chrono::NaiveDateTime {
    fn key_form(&self) -> Cow<'_, str> {
        Cow::Owned(self.and_utc().key_form().into_owned())
    }
}

impl<Tz: chrono::TimeZone> KeyPart for chrono::DateTime<Tz> {
    fn key_form(&self) -> Cow<'_, str> {
        // The instant, not the wall time: the same moment in two zones is one key.
        Cow::Owned(
            self.to_utc()
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_forms_are_canonical() {
        assert_eq!(42_i64.key_form(), "42");
        assert_eq!("a b".key_form(), "a b");
        assert_eq!((&&String::from("x")).key_form(), "x");
        let utc = chrono::DateTime::parse_from_rfc3339("2024-01-02T03:04:05+02:00").unwrap();
        assert_eq!(utc.key_form(), "2024-01-02T01:04:05Z");
    }
}
