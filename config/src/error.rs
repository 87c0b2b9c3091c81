//! Configuration errors that a person can act on.

use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration problem: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (None for settings built in code).
    pub file: Option<PathBuf>,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The field's dotted path (`workers.lcores`), when known.
    pub field: Option<String>,
    /// What is wrong and, where possible, what to write instead.
    pub message: String,
}

impl ConfigError {
    /// An error about `field` of `file`, at the byte `offset` of `text` if known.
    pub fn at(
        file: Option<&Path>,
        text: Option<&str>,
        offset: Option<usize>,
        field: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        let line = match (text, offset) {
            (Some(t), Some(o)) => Some(line_of(t, o)),
            _ => None,
        };
        ConfigError {
            file: file.map(Path::to_path_buf),
            line,
            field: field.map(str::to_owned),
            message: message.into(),
        }
    }

    /// An error about the whole file (unreadable, say).
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        ConfigError { file: Some(file.to_path_buf()), line: None, field: None, message: message.into() }
    }
}

/// 1-based line number of byte `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(p), Some(l)) => write!(f, "{}:{}: ", p.display(), l)?,
            (Some(p), None) => write!(f, "{}: ", p.display())?,
            (None, Some(l)) => write!(f, "line {l}: ")?,
            (None, None) => {}
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}
