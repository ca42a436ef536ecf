//! One error type for the library. Every variant names the file it concerns, and where it
//! applies the tensor and chunk, so the CLI can print a single self-explaining line.
use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// The container is malformed: bad magic/version, inconsistent or absurd header fields.
    #[error("{}: {msg}", path.display())]
    Format { path: PathBuf, msg: String },
    /// A stored chunk does not decode to what the index promises (checksum, size, codec).
    #[error("{}: tensor '{tensor}', chunk {chunk}: {msg}", path.display())]
    Chunk { path: PathBuf, tensor: String, chunk: usize, msg: String },
    /// The model file given as input cannot be used.
    #[error("{}: {msg}", path.display())]
    Input { path: PathBuf, msg: String },
    /// The arguments do not make sense together (sizes, codecs, shapes).
    #[error("{0}")]
    Invalid(String),
    #[error("interrupted")]
    Interrupted,
    #[error("GPU: {0}")]
    Gpu(String),
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_owned(), source }
    }
    pub fn format(path: &Path, msg: impl Into<String>) -> Self {
        Error::Format { path: path.to_owned(), msg: msg.into() }
    }
    pub fn input(path: &Path, msg: impl Into<String>) -> Self {
        Error::Input { path: path.to_owned(), msg: msg.into() }
    }
    /// The message without the variant's prefix, for wrapping into another error.
    pub fn detail(&self) -> String {
        match self {
            Error::Gpu(m) | Error::Invalid(m) => m.clone(),
            other => other.to_string(),
        }
    }
}
