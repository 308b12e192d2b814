//! Where Askama looks for templates, and with which delimiters: askama.toml, read the way
//! askama_derive 0.16.1 reads it (its `config.rs`).
//!
//! - The file is `askama.toml` in `CARGO_MANIFEST_DIR`, or the `config = "..."` of
//!   `#[template]` relative to it; a missing default file means the defaults, a missing named
//!   one is an error (`read_config_file`).
//! - The template directories are `CARGO_MANIFEST_DIR/templates`, or each of `[general] dirs`
//!   joined to `CARGO_MANIFEST_DIR`, a `dirs` entry with a `*` being a glob pattern of which
//!   only directories count (`Config::new_uncached`, `get_config_dirs`).
//! - The syntax is `#[template(syntax = "...")]`, else `[general] default_syntax`, else
//!   `"default"`; a `[[syntax]]` leaves the delimiters it does not set at their defaults
//!   (askama_parser's `SyntaxBuilder::to_syntax`).

use std::fs;
use std::path::{Path, PathBuf};

use serde_derive::Deserialize;

use super::syntax::Syntax;

/// The default config file, in `CARGO_MANIFEST_DIR`.
pub const CONFIG_FILE: &str = "askama.toml";
const DEFAULT_SYNTAX: &str = "default";

/// What the digest needs of Askama's configuration for one template.
#[derive(Debug)]
pub struct Config {
    /// `CARGO_MANIFEST_DIR`.
    pub root: PathBuf,
    /// The template directories, in search order.
    pub dirs: Vec<PathBuf>,
    /// Where `dirs` come from, for messages.
    dirs_origin: &'static str,
    /// The template's delimiters.
    pub syntax: Syntax,
    /// The config file, if there is one: part of the digest, since it can change what a
    /// template renders (escapers, whitespace, syntaxes).
    pub file: Option<ConfigFile>,
}

/// A config file that exists.
#[derive(Debug)]
pub struct ConfigFile {
    /// Its path as the user names it, relative to `CARGO_MANIFEST_DIR`: in the digest.
    pub name: String,
    /// Where it is.
    pub path: PathBuf,
    /// Its bytes.
    pub content: Vec<u8>,
}

/// Why a configuration could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    /// The config file is missing or invalid: reported at `config = "..."`, or the attribute.
    File(String),
    /// `#[template(syntax = "...")]` names no syntax: reported at that string.
    Syntax(String),
}

#[derive(Default, Deserialize)]
struct RawConfig {
    general: Option<General>,
    syntax: Option<Vec<RawSyntax>>,
}

#[derive(Deserialize)]
struct General {
    dirs: Option<Vec<String>>,
    default_syntax: Option<String>,
}

#[derive(Deserialize)]
struct RawSyntax {
    name: String,
    block_start: Option<String>,
    block_end: Option<String>,
    expr_start: Option<String>,
    expr_end: Option<String>,
    comment_start: Option<String>,
    comment_end: Option<String>,
}

impl Config {
    /// The configuration of a template in the crate at `root`, with the `config` and `syntax`
    /// of its `#[template]`.
    pub fn load(root: &Path, config: Option<&str>, syntax: Option<&str>) -> Result<Self, Error> {
        let name = config.unwrap_or(CONFIG_FILE);
        let path = root.join(name);
        let file = if path.exists() {
            let content = fs::read(&path)
                .map_err(|err| Error::File(format!("cannot read `{name}`: {err}")))?;
            Some(ConfigFile {
                name: name.to_owned(),
                path,
                content,
            })
        } else if config.is_some() {
            return Err(Error::File(format!(
                "config file `{name}` not found beside Cargo.toml"
            )));
        } else {
            None
        };

        let raw = match &file {
            Some(file) if !file.content.is_empty() => {
                let text = std::str::from_utf8(&file.content)
                    .map_err(|err| Error::File(format!("`{name}` is not UTF-8: {err}")))?;
                basic_toml::from_str(text)
                    .map_err(|err| Error::File(format!("invalid TOML in `{name}`: {err}")))?
            }
            _ => RawConfig::default(),
        };

        let general = raw.general.as_ref();
        let (dirs, dirs_origin) = match general.and_then(|g| g.dirs.as_ref()) {
            Some(dirs) => (
                dirs.iter().flat_map(|dir| config_dirs(root, dir)).collect(),
                "the `dirs` of askama.toml",
            ),
            None => (
                vec![root.join("templates")],
                if file.is_some() {
                    "the default, as askama.toml sets no `dirs`"
                } else {
                    "the default template directory, beside Cargo.toml"
                },
            ),
        };

        let default_syntax = general
            .and_then(|g| g.default_syntax.as_deref())
            .unwrap_or(DEFAULT_SYNTAX);
        let wanted = syntax.unwrap_or(default_syntax);
        let mut found = (wanted == DEFAULT_SYNTAX).then(Syntax::default);
        let mut names = vec![DEFAULT_SYNTAX];
        for raw in raw.syntax.iter().flatten() {
            if names.contains(&raw.name.as_str()) {
                return Err(Error::File(format!(
                    "syntax `{}` is defined twice in `{name}`",
                    raw.name
                )));
            }
            names.push(&raw.name);
            if raw.name == wanted {
                found = Some(raw.to_syntax());
            }
        }
        let syntax = match (found, syntax) {
            (Some(found), _) => found,
            (None, Some(wanted)) => {
                return Err(Error::Syntax(format!(
                    "syntax `{wanted}` is not defined; the syntaxes are {} (a `[[syntax]]` table in {} defines one)",
                    names
                        .iter()
                        .map(|name| format!("`{name}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    file.as_ref().map_or(CONFIG_FILE, |f| &f.name),
                )));
            }
            (None, None) => {
                return Err(Error::File(format!(
                    "the default syntax `{wanted}` of `{name}` is not defined by a `[[syntax]]`"
                )));
            }
        };

        Ok(Config {
            root: root.to_owned(),
            dirs,
            dirs_origin,
            syntax,
            file,
        })
    }

    /// The configuration without a config file (for tests): `dirs`, the default syntax.
    #[cfg(test)]
    pub fn with_dirs(root: &Path, dirs: Vec<PathBuf>) -> Self {
        Config {
            root: root.to_owned(),
            dirs,
            dirs_origin: "the test's",
            syntax: Syntax::default(),
            file: None,
        }
    }

    /// The directories searched, for messages: relative to `CARGO_MANIFEST_DIR` where they are
    /// under it, and where they come from.
    pub fn searched(&self) -> String {
        if self.dirs.is_empty() {
            return "no directory (the `dirs` of askama.toml match none)".into();
        }
        let dirs: Vec<String> = self
            .dirs
            .iter()
            .map(|dir| match dir.strip_prefix(&self.root) {
                Ok(relative) => format!("`{}`", super::digest::slashed(relative)),
                Err(_) => format!("`{}`", dir.display()),
            })
            .collect();
        format!("{} ({})", dirs.join(", "), self.dirs_origin)
    }
}

impl RawSyntax {
    fn to_syntax(&self) -> Syntax {
        let default = Syntax::default();
        let pick = |set: &Option<String>, default: String| set.clone().unwrap_or(default);
        Syntax {
            block_start: pick(&self.block_start, default.block_start),
            block_end: pick(&self.block_end, default.block_end),
            expr_start: pick(&self.expr_start, default.expr_start),
            expr_end: pick(&self.expr_end, default.expr_end),
            comment_start: pick(&self.comment_start, default.comment_start),
            comment_end: pick(&self.comment_end, default.comment_end),
        }
    }
}

/// A `dirs` entry: a directory, or with a `*` the directories its glob pattern matches.
fn config_dirs(root: &Path, dir: &str) -> Vec<PathBuf> {
    let path = root.join(dir);
    if dir.contains('*')
        && let Some(pattern) = path.to_str()
        && let Ok(matches) = glob::glob(pattern)
    {
        return matches
            .filter_map(Result::ok)
            .filter(|path| path.is_dir())
            .collect();
    }
    vec![path]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::digest::tests::TempDir;

    #[test]
    fn no_config_file() {
        let dir = TempDir::new("config-none");
        let config = Config::load(dir.path(), None, None).unwrap();
        assert_eq!(config.dirs, [dir.path().join("templates")]);
        assert_eq!(config.syntax, Syntax::default());
        assert!(config.file.is_none());
        assert_eq!(
            config.searched(),
            "`templates` (the default template directory, beside Cargo.toml)"
        );
        assert_eq!(
            Config::load(dir.path(), Some("other.toml"), None).unwrap_err(),
            Error::File("config file `other.toml` not found beside Cargo.toml".into())
        );
    }

    #[test]
    fn dirs_globs_and_syntaxes() {
        let dir = TempDir::new("config-dirs");
        dir.write("themes/a/x.html", "");
        dir.write("themes/b/y.html", "");
        dir.write("themes/file.html", "");
        dir.write(
            "askama.toml",
            r#"
[general]
dirs = ["views", "themes/*", "../shared"]
default_syntax = "angle"

[[syntax]]
name = "angle"
block_start = "<%"
block_end = "%>"

[[escaper]]
path = "::my::Escaper"
extensions = ["x"]
"#,
        );
        let config = Config::load(dir.path(), None, None).unwrap();
        assert_eq!(
            config.dirs,
            [
                dir.path().join("views"),
                dir.path().join("themes/a"),
                dir.path().join("themes/b"),
                dir.path().join("../shared"),
            ]
        );
        assert_eq!(
            config.searched(),
            "`views`, `themes/a`, `themes/b`, `../shared` (the `dirs` of askama.toml)"
        );
        assert_eq!(config.syntax.block_start, "<%");
        assert_eq!(config.syntax.expr_start, "{{");
        assert_eq!(config.file.as_ref().unwrap().name, "askama.toml");

        let config = Config::load(dir.path(), None, Some("default")).unwrap();
        assert_eq!(config.syntax, Syntax::default());
        assert_eq!(
            Config::load(dir.path(), None, Some("curly")).unwrap_err(),
            Error::Syntax(
                "syntax `curly` is not defined; the syntaxes are `default`, `angle` \
                 (a `[[syntax]]` table in askama.toml defines one)"
                    .into()
            )
        );
    }

    #[test]
    fn a_named_config_without_dirs() {
        let dir = TempDir::new("config-named");
        dir.write("cfg/askama.toml", "[general]\nwhitespace = \"suppress\"\n");
        let config = Config::load(dir.path(), Some("cfg/askama.toml"), None).unwrap();
        assert_eq!(config.dirs, [dir.path().join("templates")]);
        assert_eq!(
            config.searched(),
            "`templates` (the default, as askama.toml sets no `dirs`)"
        );
        dir.write("bad.toml", "[general\n");
        let Error::File(message) = Config::load(dir.path(), Some("bad.toml"), None).unwrap_err()
        else {
            panic!()
        };
        assert!(
            message.starts_with("invalid TOML in `bad.toml`: "),
            "{message}"
        );
    }
}
