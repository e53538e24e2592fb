//! The crate's error type: every error about a file names the file, and every error about a record names
//! where in the file it is.

use std::path::PathBuf;

use pixel_traces::Location;

/// Everything that can go wrong while loading, running, scoring or reporting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file is not in the layout it was read as (not JSON, a missing column, a wrong top-level shape).
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// One record of a file is malformed or names a media file that is missing.
    #[error("{path}, {location}: {message}")]
    Record {
        /// The file.
        path: PathBuf,
        /// Where the record is (1-based line, or 0-based element / row).
        location: Location,
        /// What is wrong.
        message: String,
    },
    /// A file or folder the layout needs is not there.
    #[error("{path}: missing ({what})")]
    Missing {
        /// What was looked for.
        path: PathBuf,
        /// What it is for.
        what: String,
    },
    /// A data file of `pixel-traces` (official records) could not be read.
    #[error(transparent)]
    Traces(#[from] pixel_traces::Error),
    /// An image or video could not be loaded or resized.
    #[error(transparent)]
    Ops(#[from] pixel_ops::Error),
    /// The engine failed (model, server).
    #[error(transparent)]
    Agent(#[from] pixel_agent::AgentError),
    /// A results file was written with other settings than the run that would continue it.
    #[error(
        "{path} was written with other settings ({differences}); use another output file or the same settings"
    )]
    SettingsMismatch {
        /// The header file.
        path: PathBuf,
        /// The settings that differ.
        differences: String,
    },
    /// Settings or arguments that cannot be used.
    #[error("invalid settings: {0}")]
    Invalid(String),
}

/// `Result` with [`EvalError`].
pub type Result<T> = std::result::Result<T, EvalError>;

/// An [`EvalError::Io`] for `path`.
pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> EvalError {
    let path = path.into();
    move |source| EvalError::Io { path, source }
}
