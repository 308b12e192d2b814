//! Demo content: the same articles and comments on every run, from a fixed pseudo-random seed,
//! so that pages (and their cache figures) can be compared between runs and machines.

use crate::models::Comment;
use chrono::{DateTime, Duration, TimeZone, Utc};

/// A seeded article and its comments (their ids, and the comments' `article_id`, are the
/// database's to give).
pub struct SeedArticle {
    pub title: String,
    pub body: String,
    pub updated_at: DateTime<Utc>,
    pub comments: Vec<Comment>,
}

/// `articles` articles of `comments` comments each, the same on every run.
pub fn content(articles: u32, comments: u32) -> Vec<SeedArticle> {
    let mut rng = SplitMix64(0x5EED_B10C);
    let start = Utc
        .with_ymd_and_hms(2024, 3, 1, 9, 0, 0)
        .single()
        .expect("a valid date");
    (0..articles)
        .map(|a| {
            let updated_at = start + Duration::days(a.into()) + Duration::minutes(rng.below(600));
            let body = article_body(&mut rng);
            let mut created_at = updated_at;
            let comments = (0..comments)
                .map(|c| {
                    created_at += Duration::minutes(5 + rng.below(180));
                    comment(&mut rng, c, created_at)
                })
                .collect();
            SeedArticle {
                title: title(a),
                body,
                updated_at,
                comments,
            }
        })
        .collect()
}

const TOPICS: &[&str] = &[
    "fragment caching",
    "lazy sweeping",
    "version counters",
    "Russian doll caching",
    "memcached meta commands",
    "cache stampedes",
    "SQLite in production",
    "Askama templates",
    "compile-time checks",
    "consistent hashing",
    "failing open",
    "cache key design",
    "measuring hit rates",
    "template digests",
    "write-through vs. lazy",
    "time to live",
    "counters that never go back",
    "HTTP caching headers",
    "invalidation by example",
    "the two hard things",
];

const SENTENCES: &[&str] = &[
    "Every key carries the version of the record it belongs to.",
    "Nothing deletes keys: old fragments are never asked for again and age out by themselves.",
    "A counter bump is one atomic round trip, however many fragments it retires.",
    "The cheapest render is the one you never do.",
    "Measure before you cache, and again after.",
    "A cache that is down should cost speed, never correctness.",
    "Nested fragments mean a change re-renders only the path from the leaf to the root.",
    "Timestamps make good versions when the record itself changed.",
    "Counters make good versions when something inside it changed.",
    "Keep the key small, readable, and derived from data you already have.",
];

const AUTHORS: &[&str] = &[
    "ada", "brian", "chiara", "dmitri", "emeka", "fatima", "gustav", "hana", "ines", "jun", "kofi",
    "lena", "mateo", "noor", "olga", "pavel",
];

const REMARKS: &[&str] = &[
    "Great write-up, thanks!",
    "I tried this on our app and the page went from 180 ms to 12 ms.",
    "What happens when memcached restarts? The counters are gone.",
    "Isn't this just `incr_version` with extra steps?",
    "We used **Russian doll** caching for years; the touch chain is the tricky part.",
    "Small nit: the _time to live_ should depend on how often the record changes.",
    "Could you show the numbers with a cold cache too?",
    "This finally made invalidation click for me.",
    "How does this compare with HTTP caching in front of the app?",
    "Counter-versioned keys are underrated.",
    "> Nothing deletes keys\n\nThat line alone is worth the article.",
    "Two things I'd add:\n\n- measure the hit rate per template\n- alert when errors rise",
];

fn title(index: u32) -> String {
    let topic = TOPICS[index as usize % TOPICS.len()];
    let part = index as usize / TOPICS.len();
    let mut title = format!("Notes on {topic}");
    if part > 0 {
        title.push_str(&format!(", part {}", part + 1));
    }
    title
}

fn article_body(rng: &mut SplitMix64) -> String {
    let mut body = String::new();
    for paragraph in 0..3 + rng.below(3) {
        if paragraph == 2 {
            body.push_str("## In practice\n\n");
        }
        // Consecutive sentences from a random start: no sentence twice in a paragraph.
        let first = rng.below(SENTENCES.len() as i64) as usize;
        let sentences: Vec<&str> = (0..2 + rng.below(4) as usize)
            .map(|i| SENTENCES[(first + i) % SENTENCES.len()])
            .collect();
        body.push_str(&sentences.join(" "));
        body.push_str("\n\n");
    }
    body.push_str("- version the key, not the value\n- let old entries expire\n");
    body
}

const SNIPPETS: &[&str] = &[
    "```rust\n#[derive(Sweepable)]\n#[sweeper(counter)]\nstruct Article {\n    id: i64,\n    #[sweeper(version)]\n    updated_at: DateTime<Utc>,\n}\n```",
    "```rust\nlet request = sweeper.scope();\nlet page = ArticlePage { article: &article, comments: &comments };\nlet html = request.render_async(&page).await?;\n```",
    "```sql\nUPDATE comments SET likes = likes + 1 WHERE id = ?1 RETURNING *;\n```",
    "```text\nmg cs|comment|42 v N2\nEN\nms cs|comment|42 1024 T600\n```",
];

const LINKS: &[&str] = &[
    "[the memcached meta protocol](https://github.com/memcached/memcached/wiki/MetaCommands)",
    "[Rails' cache digests](https://guides.rubyonrails.org/caching_with_rails.html)",
    "[django-cache-sweeper](https://pypi.org/project/django-cache-sweeper/)",
    "[Askama's book](https://askama.readthedocs.io/)",
];

/// A comment's Markdown, a few hundred bytes to a few kilobytes, as real comments run:
/// remarks, paragraphs, lists, code and links.
fn comment_body(rng: &mut SplitMix64) -> String {
    let mut blocks = vec![rng.pick(REMARKS).to_owned()];
    for _ in 0..1 + rng.below(5) {
        let block = match rng.below(5) {
            0 | 1 => {
                let first = rng.below(SENTENCES.len() as i64) as usize;
                let mut paragraph: Vec<&str> = (0..3 + rng.below(4) as usize)
                    .map(|i| SENTENCES[(first + i) % SENTENCES.len()])
                    .collect();
                let link = format!("More in {}.", rng.pick(LINKS));
                paragraph.push(&link);
                paragraph.join(" ")
            }
            2 => (0..3 + rng.below(3))
                .map(|_| format!("- {}", rng.pick(SENTENCES)))
                .collect::<Vec<_>>()
                .join("\n"),
            3 => rng.pick(SNIPPETS).to_owned(),
            _ => rng.pick(REMARKS).to_owned(),
        };
        blocks.push(block);
    }
    blocks.join("\n\n")
}

fn comment(rng: &mut SplitMix64, index: u32, created_at: DateTime<Utc>) -> Comment {
    let mut body = comment_body(rng);
    // Now and then a commenter pastes HTML: it must come out as text, never as markup.
    if index % 25 == 7 {
        body.push_str("\n\nDoes this work? <script>alert('hi')</script> <b>bold?</b>");
    }
    Comment {
        // Assigned by the database.
        id: 0,
        article_id: 0,
        author: rng.pick(AUTHORS).to_owned(),
        body,
        likes: rng.below(30),
        dislikes: rng.below(8),
        created_at,
    }
}

/// A small, fixed pseudo-random generator (SplitMix64): the same seed gives the same blog on
/// every machine, with no dependency for it.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: i64) -> i64 {
        (self.next() % n as u64) as i64
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as i64) as usize]
    }
}
