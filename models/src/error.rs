//! The error of every loader: what was wrong, in which file, at which field, key or tensor.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be opened or read.
    #[error("{}: {source}", file.display())]
    Io { file: PathBuf, source: std::io::Error },
    /// The file is malformed or inconsistent at `field` (a header field, metadata key or
    /// tensor name).
    #[error("{}: {field}: {msg}", file.display())]
    Invalid { file: PathBuf, field: String, msg: String },
    /// The file is valid but asks for something this engine does not support.
    #[error("{}: unsupported {what}: {value}", file.display())]
    Unsupported { file: PathBuf, what: String, value: String },
}

impl LoadError {
    pub fn io(file: impl AsRef<Path>, source: std::io::Error) -> Self {
        LoadError::Io { file: file.as_ref().to_path_buf(), source }
    }

    pub fn invalid(file: impl AsRef<Path>, field: impl Into<String>, msg: impl Into<String>) -> Self {
        LoadError::Invalid { file: file.as_ref().to_path_buf(), field: field.into(), msg: msg.into() }
    }

    pub fn unsupported(file: impl AsRef<Path>, what: impl Into<String>, value: impl Into<String>) -> Self {
        LoadError::Unsupported { file: file.as_ref().to_path_buf(), what: what.into(), value: value.into() }
    }
}
