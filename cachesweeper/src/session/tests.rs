//! The render session against a scripted backend: which backend calls a page costs, cold and
//! warm, and what a page does when one of them fails.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::scripted::{Note, Scripted};
use crate::{Sweeper, TemplateDigest};

/// A page of notes, each in a block named "note", written the way Askama's generated code
/// calls the filter; `bodies` counts the blocks' bodies rendered.
struct Page<'a> {
    notes: &'a [Note],
    bodies: &'a AtomicUsize,
}

struct Body<'a> {
    note: &'a Note,
    bodies: &'a AtomicUsize,
}

impl fmt::Display for Body<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.bodies.fetch_add(1, Ordering::Relaxed);
        write!(f, "<p>{}</p>", self.note.text)
    }
}

impl askama::Template for Page<'_> {
    fn render_into_with_values(
        &self,
        writer: &mut dyn fmt::Write,
        values: &dyn askama::Values,
    ) -> askama::Result<()> {
        for note in self.notes {
            let body = Body {
                note,
                bodies: self.bodies,
            };
            let fragment = crate::filters::cachesweeper::default()
                .with_0(note)
                .with_1(600u32)
                .with_2("note")
                .execute(body, values)?;
            write!(writer, "{fragment}")?;
        }
        Ok(())
    }

    const SIZE_HINT: usize = 0;
}

impl askama::FastWritable for Page<'_> {
    fn write_into(
        &self,
        dest: &mut dyn fmt::Write,
        values: &dyn askama::Values,
    ) -> askama::Result<()> {
        askama::Template::render_into_with_values(self, dest, values)
    }
}

impl fmt::Display for Page<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        askama::Template::render_into(self, f).map_err(|_| fmt::Error)
    }
}

impl TemplateDigest for Page<'_> {
    const TEMPLATE_DIGEST: &'static str = "0123456789abcdef";
}

fn notes() -> Vec<Note> {
    (1..=20).map(|id| Note { id, text: "hi" }).collect()
}

fn sweeper() -> (Sweeper, Arc<Scripted>) {
    Scripted::sweeper()
}

#[test]
fn a_cold_page_costs_one_batch_of_each_kind_and_a_warm_one_two_calls() {
    let (sweeper, script) = sweeper();
    let (notes, bodies) = (notes(), AtomicUsize::new(0));
    let page = Page {
        notes: &notes,
        bodies: &bodies,
    };
    let expected = "<p>hi</p>".repeat(20);

    assert_eq!(sweeper.scope().render(&page).unwrap(), expected);
    // The versions in one batch, the fragments in one, every miss stored in one.
    assert_eq!(
        script.take_calls(),
        ["incr_each", "get_leased", "set_many"],
        "cold"
    );
    assert_eq!(bodies.swap(0, Ordering::Relaxed), 20, "each body once");

    let request = sweeper.scope();
    assert_eq!(request.render(&page).unwrap(), expected);
    assert_eq!(script.take_calls(), ["incr_each", "get_leased"], "warm");
    assert_eq!(bodies.load(Ordering::Relaxed), 0, "a hit renders no body");
    let warm = request.stats();
    assert_eq!((warm.hits, warm.misses, warm.round_trips), (20, 0, 2));
}

#[test]
fn a_page_whose_versions_cannot_be_read_renders_whole_and_stores_nothing() {
    let (sweeper, script) = sweeper();
    let (notes, bodies) = (notes(), AtomicUsize::new(0));
    let page = Page {
        notes: &notes,
        bodies: &bodies,
    };
    script.fail(&["incr_each"]);
    let request = sweeper.scope();
    assert_eq!(request.render(&page).unwrap(), "<p>hi</p>".repeat(20));
    // No fragment is asked for or stored under a version nobody knows.
    assert_eq!(script.take_calls(), ["incr_each"]);
    let stats = request.stats();
    assert_eq!((stats.misses, stats.errors), (20, 1), "{stats:?}");
    // A record pass renders the bodies too, to look inside them: twice each, at most.
    assert!(bodies.load(Ordering::Relaxed) <= 40);
}

#[test]
fn a_page_whose_fragments_cannot_be_read_renders_and_stores_what_it_rendered() {
    let (sweeper, script) = sweeper();
    let (notes, bodies) = (notes(), AtomicUsize::new(0));
    let page = Page {
        notes: &notes,
        bodies: &bodies,
    };
    script.fail(&["get_leased"]);
    assert_eq!(
        sweeper.scope().render(&page).unwrap(),
        "<p>hi</p>".repeat(20)
    );
    assert_eq!(bodies.swap(0, Ordering::Relaxed), 20);
    // The versions were known, so what was rendered is current, and stored.
    assert_eq!(script.take_calls(), ["incr_each", "get_leased", "set_many"]);
    script.fail(&[]);
    // The next page finds it in the store.
    let request = sweeper.scope();
    request.render(&page).unwrap();
    assert_eq!(script.take_calls(), ["incr_each", "get_leased"]);
    let stats = request.stats();
    assert_eq!((stats.hits, stats.coalesced), (20, 0), "{stats:?}");
    assert_eq!(bodies.load(Ordering::Relaxed), 0);
}
