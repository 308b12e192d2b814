//! How long a fragment may be served: the second argument of the `cachesweeper` block.

use std::time::Duration;

/// A fragment's time to live: whole seconds as an integer, or a [`Duration`].
///
/// A zero or negative lifetime means "do not store": the fragment is rendered every time. Any
/// longer lifetime is accepted, up to `Duration::MAX`: memcached holds absolute expiry times in
/// 32 bits, so there a fragment meant to live past early 2106 expires then.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a cache lifetime",
    label = "expected whole seconds or a `Duration`",
    note = "pass the time to live in seconds as an integer (`500`), or a `std::time::Duration`",
    note = "it is the filter's second argument, after the record, as in `cachesweeper(comment, 500, \"comment\")`; `()` means it is missing"
)]
pub trait Ttl {
    /// The lifetime, or `None` if the fragment must not be stored.
    fn ttl(&self) -> Option<Duration>;
}

impl<T: Ttl + ?Sized> Ttl for &T {
    fn ttl(&self) -> Option<Duration> {
        (**self).ttl()
    }
}

/// `None` (`cache=false`) is not stored.
impl<T: Ttl> Ttl for Option<T> {
    fn ttl(&self) -> Option<Duration> {
        self.as_ref()?.ttl()
    }
}

impl Ttl for Duration {
    fn ttl(&self) -> Option<Duration> {
        (!self.is_zero()).then_some(*self)
    }
}

macro_rules! ttl_from_seconds {
    ($($ty:ty),*) => {$(
        impl Ttl for $ty {
            #[allow(unused_comparisons)]
            fn ttl(&self) -> Option<Duration> {
                let secs = u64::try_from(*self).ok()?;
                (secs > 0).then(|| Duration::from_secs(secs))
            }
        }
    )*};
}

ttl_from_seconds!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes() {
        assert_eq!(500.ttl(), Some(Duration::from_secs(500)));
        assert_eq!(0.ttl(), None);
        assert_eq!((-5).ttl(), None);
        assert_eq!(
            Duration::from_millis(1500).ttl(),
            Some(Duration::from_millis(1500))
        );
        assert_eq!((&&7u8).ttl(), Some(Duration::from_secs(7)));
    }
}
