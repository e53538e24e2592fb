//! The crate's one error type.

/// Everything that can go wrong in `pixel-ops`: bad files, bad sizes, bad tool calls.
///
/// Variants carry the facts a user (or a model, through an error observation) needs to fix the input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading a file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
