//! The crate's error type.

use thiserror::Error;

/// What can go wrong while running rollouts.
#[derive(Debug, Error)]
pub enum AgentError {
    /// The model, processor or tokenizer failed (`pixel-vlm`).
    #[error(transparent)]
    Vlm(#[from] pixel_vlm::VlmError),
    /// An image or video operation failed outside a tool call (`pixel-ops`).
    #[error(transparent)]
    Ops(#[from] pixel_ops::Error),
    /// A request to the engine was inconsistent (wrong rows, no open group, ...).
    #[error("engine request: {0}")]
    Request(String),
    /// The chat template did not render a conversation as a prefix of its continuation, so the new turn's
    /// tokens cannot be appended without re-tokenizing earlier turns.
    #[error("chat template: {0}")]
    Template(String),
    /// An HTTP engine could not reach the server (after its retries).
    #[error("server {url} unreachable after {attempts} attempts: {reason}")]
    Unreachable {
        /// The endpoint.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        reason: String,
    },
    /// An HTTP engine's server answered with an error status.
    #[error("server {url} answered {status}: {body}")]
    Status {
        /// The endpoint.
        url: String,
        /// HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// An HTTP engine's server answered something that is not an OpenAI chat completion.
    #[error("server {url} answered garbage: {reason}")]
    BadResponse {
        /// The endpoint.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// Writing a trajectory or its images failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// `Result` with [`AgentError`].
pub type Result<T> = std::result::Result<T, AgentError>;
