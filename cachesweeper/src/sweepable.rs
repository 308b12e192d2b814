//! The trait a model implements (usually through `#[derive(Sweepable)]`), and what it is made of.

use std::borrow::Cow;

use crate::KeyPart;

/// A record whose fragments are cached under its current version.
///
/// Derive it, with these attributes:
///
/// | attribute | where | meaning |
/// |---|---|---|
/// | `#[sweeper(key)]` | field | the record's key (default: the field named `id`) |
/// | `#[sweeper(version)]` | field | the version comes from this field (`DateTime`, `NaiveDateTime`, integer, string): no round trip to learn it |
/// | `#[sweeper(touches = T)]` | field holding a parent's key (or `Option` of it) | invalidating this record also invalidates that parent; repeat for several parents |
/// | `#[sweeper(name = "...")]` | struct | the model name in keys (default: module path and type name) |
/// | `#[sweeper(table = "...")]` | struct | the database table the records live in: the model is [`Tracked`](crate::changes::Tracked), and every change log of its database tracks it, so the database invalidates it (key column: the key field's name; parents' columns: the `touches` fields' names) |
/// | `#[sweeper(database = "...")]` | struct, with `table` | which database that table is in, for an application with several (default: `""`, the change log's default) |
/// | `#[sweeper(counter)]` | struct | keep a counter even with a version field, so children can touch it |
/// | `#[sweeper(crate = path)]` | struct | where the `cachesweeper` crate is, if renamed |
///
/// Mistakes are compile errors that point at the token at fault: no key field, two key
/// fields, an unknown or repeated option, an enum, union or tuple struct, a version field that
/// cannot be a token, a `touches` target that is not Sweepable or cannot be touched.
///
/// A record's *version* is made of a version-field token (if the struct marks one with
/// `#[sweeper(version)]`) and a counter held in the cache backend (unless the version field is
/// all the record needs, see [`Sweepable::COUNTER`]). Invalidating a record bumps its counter and
/// its parents' counters; every fragment key carries the version, so old fragments stop being
/// found and age out by themselves.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a Sweepable record",
    label = "cachesweeper needs a Sweepable record here",
    note = "add `#[derive(cachesweeper::Sweepable)]` to the struct, with a key field (`id` or one marked `#[sweeper(key)]`)",
    note = "in a template, the record is the filter's first argument, as in `cachesweeper(comment, 500, \"comment\")`; `()` means it is missing"
)]
pub trait Sweepable {
    /// The model's declared name, e.g. `blog::models::Comment` (`#[sweeper(name = "...")]`, or
    /// the module path and type name). Keys use [`sweeper_model`](Self::sweeper_model).
    const MODEL: &'static str;

    /// The model's name in keys: [`MODEL`](Self::MODEL), followed for a generic model by its
    /// type arguments (`blog::Row<blog::Post>`), so that two instantiations of one generic
    /// struct never share a version or a fragment.
    fn sweeper_model() -> &'static str {
        Self::MODEL
    }

    /// Whether the version includes a counter held in the backend.
    ///
    /// True for records without a version field, and for records with one that are also
    /// touched by children (`#[sweeper(counter)]`). False when the version field alone says
    /// whether the record changed: such records cost no round trip to learn their version.
    const COUNTER: bool;

    /// The record's primary key, in its key form.
    fn sweeper_key(&self) -> Cow<'_, str>;

    /// The token of the record's `#[sweeper(version)]` field, if it has one.
    fn sweeper_version_field(&self) -> Option<String>;

    /// The parents this record touches when it is invalidated (`#[sweeper(touches = T)]`).
    fn sweeper_parents(&self, parents: &mut Vec<ModelRef>);
}

impl<T: Sweepable + ?Sized> Sweepable for &T {
    const MODEL: &'static str = T::MODEL;
    const COUNTER: bool = T::COUNTER;

    fn sweeper_model() -> &'static str {
        T::sweeper_model()
    }

    fn sweeper_key(&self) -> Cow<'_, str> {
        (**self).sweeper_key()
    }

    fn sweeper_version_field(&self) -> Option<String> {
        (**self).sweeper_version_field()
    }

    fn sweeper_parents(&self, parents: &mut Vec<ModelRef>) {
        (**self).sweeper_parents(parents)
    }
}

/// A Sweepable record whose version includes a counter, so that children can touch it.
///
/// `#[derive(Sweepable)]` implements it for every record with a counter. A record whose version
/// comes only from a field cannot be touched: nothing a child does can change that field.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be touched by a child record",
    label = "this `touches` target is not Sweepable with a version counter",
    note = "derive `Sweepable` on `{Self}`; if it has a `#[sweeper(version)]` field, also add `#[sweeper(counter)]` to it so that children can bump its version"
)]
pub trait Touchable: Sweepable {}

impl<T: Touchable + ?Sized> Touchable for &T {}

/// A type that can be a version token: `#[sweeper(version)]` fields.
///
/// Implemented for chrono's `DateTime<Tz>` and `NaiveDateTime` (a newer time is a new version),
/// integers (a revision number) and strings (an ETag or content hash).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a version token",
    label = "a `#[sweeper(version)]` field must change whenever the record changes",
    note = "use a chrono `DateTime<Tz>` or `NaiveDateTime` (e.g. `updated_at`), an integer revision, or a string such as an ETag; or drop `#[sweeper(version)]` to use a counter"
)]
pub trait VersionField {
    /// The token, as it goes into a fragment key.
    fn version_token(&self) -> String;
}

impl<T: VersionField + ?Sized> VersionField for &T {
    fn version_token(&self) -> String {
        (**self).version_token()
    }
}

impl<Tz: chrono::TimeZone> VersionField for chrono::DateTime<Tz> {
    fn version_token(&self) -> String {
        // Nanosecond precision as an exact integer: distinct instants never share a token.
        let nanos = i128::from(self.timestamp_subsec_nanos());
        (i128::from(self.timestamp()) * 1_000_000_000 + nanos).to_string()
    }
}

impl VersionField for chrono::NaiveDateTime {
    fn version_token(&self) -> String {
        self.and_utc().version_token()
    }
}

macro_rules! version_field_via_key_form {
    ($($ty:ty),* $(,)?) => {$(
        impl VersionField for $ty {
            fn version_token(&self) -> String {
                self.key_form().into_owned()
            }
        }
    )*};
}

version_field_via_key_form!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, str, String,
);

/// A reference to a record by model name and key: what a child touches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelRef {
    /// The model name ([`Sweepable::sweeper_model`]).
    pub model: &'static str,
    /// The record's key form.
    pub key: String,
}

impl ModelRef {
    /// The reference to a record of model `T` with this key.
    pub fn of<T: Sweepable + ?Sized>(key: &(impl KeyPart + ?Sized)) -> Self {
        ModelRef {
            model: T::sweeper_model(),
            key: key.key_form().into_owned(),
        }
    }

    /// The reference to this record.
    pub fn to<T: Sweepable + ?Sized>(record: &T) -> Self {
        ModelRef {
            model: T::sweeper_model(),
            key: record.sweeper_key().into_owned(),
        }
    }
}

/// A field that holds a parent's key: the key itself, or `Option` of it for an optional parent.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot hold a parent's key",
    label = "a `touches` field must hold the parent's key",
    note = "use the parent's key type (e.g. `i64`), or `Option` of it for an optional parent"
)]
pub trait ParentKey {
    /// The parent's key form, or `None` when this record has no parent.
    fn parent_key(&self) -> Option<Cow<'_, str>>;
}

impl<T: KeyPart + ?Sized> ParentKey for T {
    fn parent_key(&self) -> Option<Cow<'_, str>> {
        Some(self.key_form())
    }
}

/// `Option` is not a `KeyPart`, so this does not overlap the blanket impl.
impl<T: KeyPart> ParentKey for Option<T> {
    fn parent_key(&self) -> Option<Cow<'_, str>> {
        self.as_ref().map(KeyPart::key_form)
    }
}
