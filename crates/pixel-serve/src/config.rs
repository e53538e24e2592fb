//! [`ServeConfig`]: the served model ids, request limits, batching, queue and time limits.

use std::path::PathBuf;
use std::time::Duration;

use pixel_agent::RolloutConfig;

use crate::error::ServeError;

/// Default id of the model that runs the zoom-in / select-frames loop on the server.
pub const DEFAULT_AGENT_MODEL: &str = "pixel-reasoner";
/// Default id of the model that answers one plain continuation (the client runs the loop).
pub const DEFAULT_RAW_MODEL: &str = "pixel-reasoner-raw";

/// Settings of a [`crate::Server`]. Every field has a documented default ([`ServeConfig::default`]).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The model id whose requests the server answers by running the whole tool loop (`run_group` over
    /// an in-process engine); default [`DEFAULT_AGENT_MODEL`].
    pub agent_model: String,
    /// The model id whose requests get one plain assistant turn, as vLLM answers them; default
    /// [`DEFAULT_RAW_MODEL`].
    pub raw_model: String,
    /// Largest request body in bytes (default 32 MiB; images travel base64-encoded inside it). Larger is 413.
    pub max_body_bytes: usize,
    /// Most messages in a request (default 64).
    pub max_messages: usize,
    /// Most images in a request (default 16, the official per-episode limit).
    pub max_images: usize,
    /// Most pixels of one image, checked from its header before decoding (default 36,000,000: an
    /// 8K frame of 7680x4320 fits).
    pub max_image_pixels: u64,
    /// Most pixels of all the images of a request together (default 64,000,000).
    pub max_request_pixels: u64,
    /// Largest `max_tokens` a request may ask for, per turn (default 2,048, the official per-turn limit);
    /// also the default when a request gives none.
    pub max_tokens: usize,
    /// Largest `n` (choices; for the agent model, rollouts of one group) (default 8).
    pub max_n: usize,
    /// Tokens one conversation may hold: prompt, turns and observations (default 14,336 = the official
    /// budget of 12,088 plus one 2,048-token turn and room for the prompt); clamped to the model's
    /// `max_position_embeddings`. A raw request whose prompt plus `max_tokens` exceeds it is a 400.
    pub context_tokens: usize,
    /// Most rows (requests' choices together) generated in one batch (default 8).
    pub max_batch: usize,
    /// How long the worker waits for more raw requests to batch with the first one it takes, when the
    /// queue is empty (default 2 ms; zero batches only what is already queued).
    pub batch_window: Duration,
    /// Requests admitted at once, queued or running (default 32); one more is answered 503.
    pub max_pending: usize,
    /// Time limit of one request from admission to its last byte (default 600 s): 504 when it runs out
    /// before the answer, an error event when streaming. Generation stops at the next check.
    pub request_timeout: Duration,
    /// Interval of SSE keep-alive comments (default 1 s); they also reveal a client that went away.
    pub keep_alive: Duration,
    /// A folder whose image files requests may name as `file://` URLs or relative paths (default `None`:
    /// only `data:` URLs are accepted). Paths that resolve outside it are refused.
    pub image_root: Option<PathBuf>,
    /// Settings of the agent model's loop: episode limits, tool set, crop pixel limits, the system
    /// prompt (default [`RolloutConfig::default`]: the official limits and rollout sampling). A request's
    /// sampling fields override the sampling; its `max_tokens` the per-turn limit; its `seed` the seed.
    pub rollout: RolloutConfig,
    /// Tokens generated between checks for cancellation, deadlines and stop strings in raw batches
    /// (default 8).
    pub check_every: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            agent_model: DEFAULT_AGENT_MODEL.into(),
            raw_model: DEFAULT_RAW_MODEL.into(),
            max_body_bytes: 32 << 20,
            max_messages: 64,
            max_images: 16,
            max_image_pixels: 36_000_000,
            max_request_pixels: 64_000_000,
            max_tokens: 2048,
            max_n: 8,
            context_tokens: 14_336,
            max_batch: 8,
            batch_window: Duration::from_millis(2),
            max_pending: 32,
            request_timeout: Duration::from_secs(600),
            keep_alive: Duration::from_secs(1),
            image_root: None,
            rollout: RolloutConfig::default(),
            check_every: 8,
        }
    }
}

impl ServeConfig {
    /// Checks that the settings make sense together.
    ///
    /// # Errors
    /// [`ServeError::Config`] naming the first bad setting.
    pub fn validate(&self) -> Result<(), ServeError> {
        let bad = |m: String| Err(ServeError::Config(m));
        if self.agent_model.is_empty() || self.raw_model.is_empty() {
            return bad("model ids must not be empty".into());
        }
        if self.agent_model == self.raw_model {
            return bad(format!(
                "the agent and raw model ids are both {:?}",
                self.agent_model
            ));
        }
        for (name, value) in [
            ("max_body_bytes", self.max_body_bytes),
            ("max_messages", self.max_messages),
            ("max_tokens", self.max_tokens),
            ("max_n", self.max_n),
            ("context_tokens", self.context_tokens),
            ("max_batch", self.max_batch),
            ("max_pending", self.max_pending),
            ("check_every", self.check_every),
        ] {
            if value == 0 {
                return bad(format!("{name} must be at least 1"));
            }
        }
        if self.max_n > self.max_batch {
            return bad(format!(
                "max_n ({}) is larger than max_batch ({})",
                self.max_n, self.max_batch
            ));
        }
        if self.max_tokens >= self.context_tokens {
            return bad(format!(
                "max_tokens ({}) leaves no room for a prompt in context_tokens ({})",
                self.max_tokens, self.context_tokens
            ));
        }
        if self.request_timeout.is_zero() || self.keep_alive.is_zero() {
            return bad("request_timeout and keep_alive must be positive".into());
        }
        if let Some(root) = &self.image_root
            && !root.is_dir()
        {
            return bad(format!("image_root {} is not a folder", root.display()));
        }
        Ok(())
    }
}
