//! The digest of a template: every file it depends on, found where Askama finds it, hashed
//! under names that do not depend on where the crate is on disk.
//!
//! Resolution mirrors askama_derive 0.16.1: a `path` is looked up in the template directories
//! in order (`Config::find_template`, config.rs:186-228, with no starting template); a template
//! named by an `include`, `extends` or `import` tag is first looked up beside the template that
//! names it (`start_at.with_file_name(path)`), then in the directories (input.rs,
//! `find_used_templates`). Each file is read once, however many templates name it, so cycles
//! end.
//!
//! The hash is SHA-256 over length-prefixed fields: a version tag, the `#[template]` options
//! that change what is rendered, the config file (its name and bytes) if there is one, the
//! inline source if there is one, then each template file's name and bytes, sorted by name. A
//! file's name is its path relative to the template directory it is in (`/`-separated), so the
//! same templates give the same digest wherever the crate is built. No modification time or
//! absolute path enters it. The first 8 bytes, in lowercase hex, are the digest.

use std::collections::HashSet;
use std::fmt::{self, Display};
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::blocks;
use super::config::Config;
use super::deps::{self, Kind};

/// Bumped whenever what is hashed changes, so that old digests cannot match new ones.
const VERSION: &[u8] = b"cachesweeper template digest 1";

/// The template a digest starts from.
#[derive(Debug, Clone, Copy)]
pub enum Root<'a> {
    /// `#[template(path = "...")]`: a file in the template directories.
    Path(&'a str),
    /// `#[template(source = "...")]`: the template itself.
    Source(&'a str),
}

/// A computed digest.
#[derive(Debug)]
pub struct Digest {
    /// 16 lowercase hex characters.
    pub hex: String,
    /// Every file read (the config file first, then the templates by name), as found: the
    /// generated code `include_bytes!`es them so that cargo rebuilds when one changes.
    pub files: Vec<PathBuf>,
    /// The text of every template, the root first (the inline `source`, or the `path`), then
    /// the others by name: the family whose `cachesweeper` blocks are checked.
    pub templates: Vec<blocks::Template>,
}

/// Why a digest could not be computed.
#[derive(Debug)]
pub enum Error {
    /// A template that is not in any place Askama looks.
    NotFound {
        /// The path as written.
        path: String,
        /// The template that names it, or `None` for the `path` of `#[template]`.
        by: Option<By>,
        /// The directories searched ([`Config::searched`]).
        searched: String,
    },
    /// A template that was found but could not be read.
    Read {
        /// The path as written.
        path: String,
        /// Where it was found.
        file: PathBuf,
        /// Why it could not be read.
        error: io::Error,
    },
}

/// The template whose tag names a missing one.
#[derive(Debug)]
pub struct By {
    /// Its name (relative to its template directory), or `None` for the inline `source`.
    pub name: Option<String>,
    /// How it names the missing one.
    pub kind: Kind,
    /// The line of the tag.
    pub line: usize,
}

impl Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound {
                path,
                by: None,
                searched,
            } => write!(f, "template `{path}` not found in {searched}"),
            Error::NotFound {
                path,
                by: Some(by),
                searched,
            } => {
                let kind = by.kind.participle();
                let line = by.line;
                match &by.name {
                    Some(name) => write!(
                        f,
                        "template `{path}`, {kind} by `{name}` (line {line}), not found beside it or in {searched}"
                    ),
                    None => write!(
                        f,
                        "template `{path}`, {kind} by the inline `source` (line {line}), not found in {searched}"
                    ),
                }
            }
            Error::Read { path, file, error } => write!(
                f,
                "cannot read template `{path}` (at `{}`): {error}",
                file.display()
            ),
        }
    }
}

/// A template file to read.
struct Found {
    /// Where it is, as found (the directory or including template joined to its path).
    file: PathBuf,
    /// Its path relative to its template directory.
    name: String,
    /// Its path as written where it was named, for messages.
    written: String,
}

/// The digest of the template `root` under `config`, with `options` (name and value pairs of
/// the `#[template]` options that change what is rendered). Every missing template is
/// reported, not only the first.
pub fn digest(
    config: &Config,
    root: Root<'_>,
    options: &[(&str, &str)],
) -> Result<Digest, Vec<Error>> {
    let mut walk = Walk {
        config,
        seen: HashSet::new(),
        queue: Vec::new(),
        errors: Vec::new(),
    };
    match root {
        Root::Path(path) => walk.visit(path, None, None),
        Root::Source(source) => {
            for dep in deps::dependencies(source, &config.syntax) {
                walk.visit(dep.path, None, Some((None, dep.kind, dep.line)));
            }
        }
    }
    let mut files: Vec<(String, PathBuf, Vec<u8>)> = Vec::new();
    while let Some(found) = walk.queue.pop() {
        let content = match fs::read(&found.file) {
            Ok(content) => content,
            Err(error) => {
                walk.errors.push(Error::Read {
                    path: found.written,
                    file: found.file,
                    error,
                });
                continue;
            }
        };
        let text = String::from_utf8_lossy(&content);
        for dep in deps::dependencies(&text, &config.syntax) {
            walk.visit(
                dep.path,
                Some(&found.file),
                Some((Some(&found.name), dep.kind, dep.line)),
            );
        }
        files.push((found.name, found.file, content));
    }
    if !walk.errors.is_empty() {
        return Err(walk.errors);
    }
    // The first file read is the `path` of `#[template]`, if it has one.
    let mut templates: Vec<blocks::Template> = files
        .iter()
        .map(|(name, _, content)| blocks::Template {
            name: Some(name.clone()),
            text: String::from_utf8_lossy(content).into_owned(),
        })
        .collect();
    let skip = usize::from(matches!(root, Root::Path(_))).min(templates.len());
    templates[skip..].sort_by(|a, b| a.name.cmp(&b.name));
    if let Root::Source(source) = root {
        templates.insert(
            0,
            blocks::Template {
                name: None,
                text: source.to_owned(),
            },
        );
    }
    files.sort();

    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    field(VERSION);
    for (name, value) in options {
        field(format!("option {name}").as_bytes());
        field(value.as_bytes());
    }
    if let Some(file) = &config.file {
        field(format!("config {}", file.name).as_bytes());
        field(&file.content);
    }
    if let Root::Source(source) = root {
        field(b"source");
        field(source.as_bytes());
    }
    for (name, _, content) in &files {
        field(format!("template {name}").as_bytes());
        field(content);
    }
    let hash = hasher.finalize();
    let hex = hash[..8].iter().map(|b| format!("{b:02x}")).collect();

    let files = config
        .file
        .iter()
        .map(|file| file.path.clone())
        .chain(files.into_iter().map(|(_, file, _)| file))
        .map(|file| std::path::absolute(&file).unwrap_or(file))
        .collect();
    Ok(Digest {
        hex,
        files,
        templates,
    })
}

struct Walk<'a> {
    config: &'a Config,
    /// The files already queued, canonicalized: a template named twice (or in a cycle) is read
    /// once.
    seen: HashSet<PathBuf>,
    queue: Vec<Found>,
    errors: Vec<Error>,
}

impl Walk<'_> {
    /// Queues the template `path`, named by the template at `beside` (`None` for the
    /// `#[template]` itself or an inline source) with a tag (`by`: its name, kind and line).
    fn visit(
        &mut self,
        path: &str,
        beside: Option<&Path>,
        by: Option<(Option<&str>, Kind, usize)>,
    ) {
        let Some(file) = find(self.config, path, beside) else {
            self.errors.push(Error::NotFound {
                path: path.to_owned(),
                by: by.map(|(name, kind, line)| By {
                    name: name.map(str::to_owned),
                    kind,
                    line,
                }),
                searched: self.config.searched(),
            });
            return;
        };
        let identity = file.canonicalize().unwrap_or_else(|_| normalize(&file));
        if self.seen.insert(identity) {
            self.queue.push(Found {
                name: name_of(self.config, &file),
                file,
                written: path.to_owned(),
            });
        }
    }
}

/// Where Askama finds the template `path`: beside the template that names it, then in each
/// template directory (askama_derive's `Config::find_template`).
fn find(config: &Config, path: &str, beside: Option<&Path>) -> Option<PathBuf> {
    if let Some(including) = beside {
        let relative = including.with_file_name(path);
        if relative.exists() {
            return Some(relative);
        }
    }
    config
        .dirs
        .iter()
        .map(|dir| dir.join(path))
        .find(|file| file.exists())
}

/// The name of `file` in the digest: its path relative to the first template directory it is
/// in, or, outside all of them (found beside an including template, with `..`), relative to the
/// first directory.
fn name_of(config: &Config, file: &Path) -> String {
    let file = normalize(file);
    for dir in &config.dirs {
        if let Ok(relative) = file.strip_prefix(normalize(dir)) {
            return slashed(relative);
        }
    }
    let base = normalize(config.dirs.first().unwrap_or(&config.root));
    slashed(&relative_to(&file, &base))
}

/// `path` with `.` removed and `..` applied, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// `path` relative to `base`, both normalized.
fn relative_to(path: &Path, base: &Path) -> PathBuf {
    let path: Vec<Component> = path.components().collect();
    let base: Vec<Component> = base.components().collect();
    let common = path.iter().zip(&base).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..base.len() {
        out.push("..");
    }
    for component in &path[common..] {
        out.push(component);
    }
    out
}

/// A relative path with `/` between its components, whatever the platform.
pub fn slashed(path: &Path) -> String {
    path.components()
        .map(|component| component.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A directory under the system's temp dir, removed when dropped.
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(label: &str) -> Self {
            static COUNT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "cachesweeper-derive-{label}-{}-{}",
                std::process::id(),
                COUNT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }

        pub fn write(&self, name: &str, content: &str) {
            let path = self.0.join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A crate at `dir` with the default `templates` directory.
    fn config(dir: &TempDir) -> Config {
        Config::with_dirs(dir.path(), vec![dir.path().join("templates")])
    }

    fn digest_of(dir: &TempDir, path: &str) -> String {
        digest(&config(dir), Root::Path(path), &[]).unwrap().hex
    }

    /// A blog: a page extending a layout, including a comment that includes a signature;
    /// `other.html` is unrelated.
    fn blog(dir: &TempDir) {
        dir.write(
            "templates/blog/article.html",
            r#"{% extends "layout.html" %}{% block body %}{% for c in cs %}{% include "comment.html" %}{% endfor %}{% endblock %}"#,
        );
        dir.write(
            "templates/layout.html",
            "<html>{% block body %}{% endblock %}</html>",
        );
        dir.write(
            "templates/blog/comment.html",
            r#"<li>{{ c.body }}{%- include "partials/signature.html" -%}</li>"#,
        );
        dir.write(
            "templates/partials/signature.html",
            "<em>{{ c.author }}</em>",
        );
        dir.write("templates/other.html", "unrelated");
    }

    #[test]
    fn the_digest_is_16_hex_chars_and_lists_every_file() {
        let dir = TempDir::new("files");
        blog(&dir);
        let digest = digest(&config(&dir), Root::Path("blog/article.html"), &[]).unwrap();
        assert_eq!(digest.hex.len(), 16);
        assert!(
            digest
                .hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        let templates = dir.path().join("templates");
        assert_eq!(
            digest.files,
            [
                // Sorted by name; `layout.html` is found in the directory, not beside.
                templates.join("blog/article.html"),
                templates.join("blog/comment.html"),
                templates.join("layout.html"),
                templates.join("partials/signature.html"),
            ]
        );
    }

    #[test]
    fn the_digest_follows_the_templates_it_depends_on() {
        let dir = TempDir::new("changes");
        blog(&dir);
        let before = digest_of(&dir, "blog/article.html");
        assert_eq!(digest_of(&dir, "blog/article.html"), before, "stable");

        dir.write("templates/other.html", "still unrelated");
        assert_eq!(
            digest_of(&dir, "blog/article.html"),
            before,
            "an unrelated template changed"
        );

        let mut seen = vec![before];
        for (file, content) in [
            (
                "templates/blog/article.html",
                r#"{% extends "layout.html" %}{% block body %}<ol>{% for c in cs %}{% include "comment.html" %}{% endfor %}</ol>{% endblock %}"#,
            ),
            (
                "templates/layout.html",
                "<html><body>{% block body %}{% endblock %}</body></html>",
            ),
            (
                "templates/blog/comment.html",
                r#"<li class="c">{{ c.body }}{%- include "partials/signature.html" -%}</li>"#,
            ),
            ("templates/partials/signature.html", "<b>{{ c.author }}</b>"),
        ] {
            dir.write(file, content);
            let now = digest_of(&dir, "blog/article.html");
            assert!(!seen.contains(&now), "{file} changed, the digest did not");
            seen.push(now);
        }
    }

    #[test]
    fn the_same_templates_elsewhere_give_the_same_digest() {
        let a = TempDir::new("copy-a");
        let b = TempDir::new("copy-b-at-another-depth");
        blog(&a);
        blog(&b);
        // Not the same files: the same relative layout, somewhere else.
        let nested = b.path().join("x/y");
        fs::create_dir_all(&nested).unwrap();
        fs::rename(b.path().join("templates"), nested.join("templates")).unwrap();
        let moved = Config::with_dirs(&nested, vec![nested.join("templates")]);
        assert_eq!(
            digest(&moved, Root::Path("blog/article.html"), &[])
                .unwrap()
                .hex,
            digest_of(&a, "blog/article.html")
        );
    }

    #[test]
    fn the_root_and_the_options_are_part_of_it() {
        let dir = TempDir::new("options");
        blog(&dir);
        let config = config(&dir);
        let plain = digest(&config, Root::Path("blog/article.html"), &[])
            .unwrap()
            .hex;
        let escaped = digest(
            &config,
            Root::Path("blog/article.html"),
            &[("escape", "none")],
        )
        .unwrap()
        .hex;
        assert_ne!(plain, escaped);
        assert_ne!(plain, digest_of(&dir, "blog/comment.html"));
    }

    #[test]
    fn an_inline_source_and_its_includes() {
        let dir = TempDir::new("inline");
        blog(&dir);
        let config = config(&dir);
        let hex = |source| digest(&config, Root::Source(source), &[]).unwrap();
        let a = hex(r#"<p>{% include "partials/signature.html" %}</p>"#);
        assert_eq!(
            a.files,
            [dir.path().join("templates/partials/signature.html")]
        );
        assert_ne!(a.hex, hex(r#"<p>{% include "other.html" %}</p>"#).hex);
        assert_ne!(a.hex, hex("<p></p>").hex);
        dir.write("templates/partials/signature.html", "<i>{{ c.author }}</i>");
        assert_ne!(
            a.hex,
            hex(r#"<p>{% include "partials/signature.html" %}</p>"#).hex
        );
    }

    #[test]
    fn cycles_end() {
        let dir = TempDir::new("cycles");
        dir.write(
            "templates/a.html",
            r#"{% include "b.html" %}{% include "a.html" %}"#,
        );
        dir.write("templates/b.html", r#"{% import "c.html" as c %}"#);
        dir.write(
            "templates/c.html",
            r#"{% include "a.html" %}{% include "./b.html" %}"#,
        );
        let digest = digest(&config(&dir), Root::Path("a.html"), &[]).unwrap();
        assert_eq!(digest.files.len(), 3, "{:?}", digest.files);
    }

    #[test]
    fn includes_are_found_beside_their_template_first() {
        let dir = TempDir::new("beside");
        dir.write("templates/blog/page.html", r#"{% include "part.html" %}"#);
        dir.write("templates/blog/part.html", "blog part");
        dir.write("templates/part.html", "top part");
        dir.write("shared/footer.html", "footer");
        dir.write(
            "templates/up.html",
            r#"{% include "../shared/footer.html" %}"#,
        );
        let config = config(&dir);
        let page = digest(&config, Root::Path("blog/page.html"), &[]).unwrap();
        assert_eq!(page.files[1], dir.path().join("templates/blog/part.html"));

        // Outside the template directory: named relative to it, still without absolute paths.
        assert_eq!(
            name_of(&config, &dir.path().join("templates/../shared/footer.html")),
            "../shared/footer.html"
        );
        let up = digest(&config, Root::Path("up.html"), &[]).unwrap();
        assert_eq!(up.files.len(), 2);
    }

    #[test]
    fn the_directories_are_searched_in_order() {
        let dir = TempDir::new("order");
        dir.write("first/x.html", "first");
        dir.write("second/x.html", "second");
        dir.write("second/y.html", r#"{% include "x.html" %}"#);
        let config = Config::with_dirs(
            dir.path(),
            vec![dir.path().join("first"), dir.path().join("second")],
        );
        // `x.html` from the attribute: the first directory that has it.
        let x = digest(&config, Root::Path("x.html"), &[]).unwrap();
        assert_eq!(x.files, [dir.path().join("first/x.html")]);
        // `x.html` included by `second/y.html`: the one beside it comes first.
        let y = digest(&config, Root::Path("y.html"), &[]).unwrap();
        assert_eq!(
            y.files,
            [
                dir.path().join("second/x.html"),
                dir.path().join("second/y.html")
            ]
        );
    }

    #[test]
    fn every_missing_template_is_reported() {
        let dir = TempDir::new("missing");
        dir.write(
            "templates/blog/page.html",
            "{% extends \"nope.html\" %}\n{% include \"blog/gone.html\" %}",
        );
        let config = config(&dir);
        let messages = |root| -> Vec<String> {
            digest(&config, root, &[])
                .unwrap_err()
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(
            messages(Root::Path("blog/missing.html")),
            ["template `blog/missing.html` not found in `templates` (the test's)"]
        );
        assert_eq!(
            messages(Root::Path("blog/page.html")),
            [
                "template `nope.html`, extended by `blog/page.html` (line 1), not found beside it or in `templates` (the test's)",
                "template `blog/gone.html`, included by `blog/page.html` (line 2), not found beside it or in `templates` (the test's)",
            ]
        );
        assert_eq!(
            messages(Root::Source("a\n{% import \"macros.html\" as m %}")),
            [
                "template `macros.html`, imported by the inline `source` (line 2), not found in `templates` (the test's)"
            ]
        );
    }
}
