//! Reading the config file and turning serde's byte spans into file:line messages.

use std::fmt;
use std::path::{Path, PathBuf};

use super::Config;

/// A parsed config together with the text it came from, so later checks can point at lines.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub path: PathBuf,
    pub text: String,
    pub config: Config,
}

impl LoadedConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            hint: match source.kind() {
                std::io::ErrorKind::NotFound => " (give the config with --config PATH: the package installs /etc/telesink/telesink.toml, a checkout has config/telesink.toml)",
                _ => "",
            },
            source,
        })?;
        Self::parse(path, text)
    }

    pub fn parse(path: &Path, text: String) -> Result<Self, ConfigError> {
        match toml::from_str::<Config>(&text) {
            Ok(config) => Ok(Self {
                path: path.to_owned(),
                text,
                config,
            }),
            Err(e) => Err(ConfigError::Syntax {
                at: Location {
                    path: path.to_owned(),
                    line: e.span().map_or(0, |s| line_of(&text, s.start)),
                },
                message: with_key(&text, e.span().map(|s| s.start), e.message()),
            }),
        }
    }

    /// The folder relative paths in the config are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        self.path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// file:line of a byte offset in the config text.
    pub fn at(&self, offset: usize) -> Location {
        Location {
            path: self.path.clone(),
            line: line_of(&self.text, offset),
        }
    }
}

/// serde's message with the key it is about ("duplicate key" alone names nothing): the
/// key of the line the error points at, or the line itself when it has no `key =`.
fn with_key(text: &str, offset: Option<usize>, message: &str) -> String {
    let Some(offset) = offset else {
        return message.to_owned();
    };
    let start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("").trim();
    match line.split_once('=') {
        Some((key, _)) if !line.starts_with('[') => {
            format!("{}: {message}", key.trim().trim_matches('"'))
        }
        _ if !line.is_empty() => {
            let shown: String = line.chars().take(80).collect();
            format!("{message} (at `{shown}`)")
        }
        _ => message.to_owned(),
    }
}

/// 1-based line of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: PathBuf,
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", normalized(&self.path).display(), self.line)
    }
}

/// `config/../blocklists/x.list` as `blocklists/x.list`: `..` after a named folder is
/// taken out, lexically, so messages name the file the way an admin would.
pub fn normalized(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component<'_>> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    if out.is_empty() {
        return PathBuf::from(".");
    }
    out.iter().collect()
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read config: {source}{hint}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
        /// What to do about it, when that is clear.
        hint: &'static str,
    },
    #[error("{at}: {message}")]
    Syntax { at: Location, message: String },
    #[error("{at}: {message}")]
    Invalid { at: Location, message: String },
}
