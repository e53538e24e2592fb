//! The crate's one error type.

use std::path::PathBuf;

/// Where in a data file a record sits: a 1-based line of a JSONL file or a 0-based index of a JSON array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// 1-based line number in a JSONL file.
    Line(usize),
    /// 0-based element index in a JSON array file.
    Index(usize),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Line(n) => write!(f, "line {n}"),
            Location::Index(n) => write!(f, "element {n}"),
        }
    }
}

/// Everything that can go wrong in `pixel-traces`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file is larger than the cap it is read under (checked before reading and enforced while reading).
    #[error("{path} is over the limit of {limit} bytes")]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// The cap, in bytes.
        limit: u64,
    },
    /// A whole data file is not valid JSON / JSONL at the top level.
    #[error("{path} is not a JSON array or JSONL file: {message}")]
    FileFormat {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// One record of a data file is malformed.
    #[error("{path}, {location}: {message}")]
    Record {
        /// The file.
        path: PathBuf,
        /// Where the record is.
        location: Location,
        /// What is wrong with it.
        message: String,
    },
    /// A media path in a record is absolute, climbs out of the dataset root, passes through a symlink, or
    /// (when opened) does not name a regular file or changed while it was being opened.
    #[error("path {path:?} is not allowed under the dataset root: {reason}")]
    UnsafePath {
        /// The path as written in the record.
        path: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// An annotated sample cannot be turned into a trace (e.g. an empty reference box).
    #[error("invalid sample {id}: {message}")]
    InvalidSample {
        /// The sample's id.
        id: String,
        /// What is wrong.
        message: String,
    },
    /// A dataset or synthesis configuration is invalid.
    #[error("invalid config: {0}")]
    Config(String),
    /// A visual operation from `pixel-ops` failed while synthesizing a trace.
    #[error("visual operation failed: {0}")]
    Ops(#[from] pixel_ops::Error),
    /// Encoding an image failed.
    #[error("cannot encode image: {0}")]
    Image(#[from] image::ImageError),
    /// The teacher endpoint answered with a non-success HTTP status.
    #[error("teacher endpoint {url} answered HTTP {status}: {body}")]
    TeacherStatus {
        /// The request URL.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// The teacher endpoint did not answer in time.
    #[error("teacher endpoint {url} timed out after {seconds:.1} s")]
    TeacherTimeout {
        /// The request URL.
        url: String,
        /// The configured timeout.
        seconds: f64,
    },
    /// The teacher endpoint could not be reached or the transfer failed.
    #[error("teacher endpoint {url} failed: {message}")]
    TeacherTransport {
        /// The request URL.
        url: String,
        /// The transport error.
        message: String,
    },
    /// The teacher answered 2xx but not with a usable chat completion.
    #[error("teacher endpoint {url} returned an unusable response: {message}")]
    TeacherResponse {
        /// The request URL.
        url: String,
        /// What is missing or wrong.
        message: String,
    },
}

/// `Result` with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
