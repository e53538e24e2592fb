//! pixel-serve: an OpenAI-compatible HTTP server for a Pixel Reasoner (Qwen2.5-VL) checkpoint.
//!
//! Two model ids are served from one checkpoint:
//! - the **agent** model ([`ServeConfig::agent_model`], default `pixel-reasoner`): the server runs the
//!   zoom-in / select-frames loop itself (`pixel_agent::run_group` over an in-process engine) and answers
//!   with the whole trace: the turns and observations as text in the message content, the structured
//!   trace (turns, operations, end, counters) in each choice's `pixel_trace`;
//! - the **raw** model ([`ServeConfig::raw_model`], default `pixel-reasoner-raw`): one plain assistant
//!   turn, as vLLM answers it, for clients that run the loop themselves (`pixel_agent::HttpEngine` works
//!   against it).
//!
//! Modules: [`config`] (settings and limits), [`server`] (the [`Server`], routes, admission, shutdown),
//! [`request`] (parsing and checking a request), [`media`] (images from data URLs or an allowed folder),
//! [`error`] (OpenAI-style errors), [`stats`] (counters); the worker, queue, batching and streaming are
//! internal.
//!
//! ```no_run
//! use pixel_serve::{ServeConfig, Server};
//! use pixel_vlm::backend::CpuBackend;
//!
//! # async fn run() -> Result<(), pixel_serve::ServeError> {
//! let server = Server::start::<CpuBackend>("PixelReasoner-RL-v1", Default::default(), ServeConfig::default())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! server.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

#![warn(missing_docs)]

mod agent;
pub mod config;
pub mod error;
pub mod media;
mod queue;
mod raw;
pub mod request;
mod response;
pub mod server;
pub mod stats;
mod stream;
mod text_stream;
mod worker;

pub use config::{DEFAULT_AGENT_MODEL, DEFAULT_RAW_MODEL, ServeConfig};
pub use error::{ApiError, ErrorKind, ServeError};
pub use server::Server;
pub use stats::{Stats, StatsSnapshot};
