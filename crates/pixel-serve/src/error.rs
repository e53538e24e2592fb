//! Errors: [`ServeError`] for starting and running the server, [`ApiError`] for one request (an HTTP status
//! and an OpenAI-style error body).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use thiserror::Error;

/// What can stop the server from starting or serving.
#[derive(Debug, Error)]
pub enum ServeError {
    /// The model or its processor could not be loaded.
    #[error("loading the model from {path}: {source}")]
    Load {
        /// The checkpoint folder.
        path: std::path::PathBuf,
        /// The cause.
        source: pixel_vlm::VlmError,
    },
    /// A setting is out of range.
    #[error("configuration: {0}")]
    Config(String),
    /// The model worker thread could not start, or died.
    #[error("model worker: {0}")]
    Worker(String),
    /// Binding or serving the socket failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// The `type` field of an OpenAI error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400 (and 413, 404 for routes): the request is malformed or over a limit.
    InvalidRequest,
    /// 404: the `model` is not served here.
    ModelNotFound,
    /// 503: the queue is full or the server is shutting down.
    Overloaded,
    /// 504: the request ran past its time limit.
    Timeout,
    /// 500: the model failed on this request.
    Server,
}

impl ErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest | Self::ModelNotFound => "invalid_request_error",
            Self::Overloaded => "overloaded_error",
            Self::Timeout => "timeout_error",
            Self::Server => "server_error",
        }
    }
}

/// A failed request: the HTTP status and the fields of the OpenAI error body
/// `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The error's kind (`type`).
    pub kind: ErrorKind,
    /// What went wrong, for a person.
    pub message: String,
    /// The request field at fault (`messages[1].content[0].image_url.url`), if one is.
    pub param: Option<String>,
    /// A machine-readable code (`context_length_exceeded`, `model_not_found`, ...), if any.
    pub code: Option<&'static str>,
}

impl ApiError {
    /// 400 about `param`.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: ErrorKind::InvalidRequest,
            message: message.into(),
            param: Some(param.into()),
            code: None,
        }
    }

    /// 400 not tied to one field.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            param: None,
            ..Self::invalid("", message)
        }
    }

    /// Sets the machine-readable code.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// 413: the body is larger than the server accepts.
    pub fn too_large(limit: usize) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            kind: ErrorKind::InvalidRequest,
            message: format!("the request body is over the {limit}-byte limit"),
            param: None,
            code: Some("request_too_large"),
        }
    }

    /// 404 for a `model` not served here; `served` lists those that are.
    pub fn unknown_model(model: &str, served: &[&str]) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            kind: ErrorKind::ModelNotFound,
            message: format!(
                "the model {model:?} does not exist here; served: {}",
                served.join(", ")
            ),
            param: Some("model".into()),
            code: Some("model_not_found"),
        }
    }

    /// 404 for a path the server does not have.
    pub fn no_route(path: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            kind: ErrorKind::InvalidRequest,
            message: format!("no route {path}"),
            param: None,
            code: None,
        }
    }

    /// 503: busy or shutting down.
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: ErrorKind::Overloaded,
            message: message.into(),
            param: None,
            code: None,
        }
    }

    /// 504: over the time limit.
    pub fn timeout(limit: std::time::Duration) -> Self {
        Self {
            status: StatusCode::GATEWAY_TIMEOUT,
            kind: ErrorKind::Timeout,
            message: format!(
                "the request ran past the server's {} s limit",
                limit.as_secs_f64()
            ),
            param: None,
            code: None,
        }
    }

    /// 500: the model or the server failed on this request.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: ErrorKind::Server,
            message: message.into(),
            param: None,
            code: None,
        }
    }

    /// The OpenAI error body.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind.as_str(),
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}
