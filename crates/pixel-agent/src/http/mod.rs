//! An [`Engine`] over an OpenAI-compatible `/v1/chat/completions` server (vLLM, SGLang, ...).
//!
//! Each row keeps its conversation as OpenAI chat messages: the system prompt as a string, user turns as
//! content lists of `{"type": "text"}` and `{"type": "image_url"}` parts (every image encoded once, as a
//! PNG `data:` URL, when its turn is appended), and assistant turns with the text as sampled. Every
//! [`Engine::generate`] sends each active row's whole conversation, so the server **re-tokenizes**: it
//! renders the chat template and tokenizes the conversation again each turn, and the token ids it saw are
//! never known here. Trajectories from this engine carry text and the log-probs the server reports, no
//! token ids ([`Engine::is_token_exact`] is false, [`Engine::record`] is `None`), and their context lengths
//! are the server's counts plus estimates ([`HttpEngine::estimate_tokens`]).
//!
//! Videos are sent as their frames, one `image_url` part each: vLLM's `video_url` input needs a URL or a
//! file it can decode itself, and frames as images is what the official evaluation does for MVBench. The
//! model therefore sees each frame as an image (no temporal merge), which differs from a native video input.
//!
//! No `tools` field is sent, so the server leaves `<tool_call>` blocks in the text for
//! [`crate::rollout`] to parse instead of extracting them itself.
//!
//! Robustness: connection failures, timeouts, HTTP 429 and 5xx are retried with exponential backoff
//! ([`HttpConfig::max_retries`]) and then reported as [`AgentError::Unreachable`]; other error statuses
//! as [`AgentError::Status`] at once; an answer that is not a chat completion (not JSON, no choices, a
//! content that is not a string, a body over [`HttpConfig::max_response_bytes`]) as
//! [`AgentError::BadResponse`]. No server answer makes the engine panic.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::conversation::{Part, UserTurn, assistant_json, system_json};
use crate::engine::{Engine, Generated, TurnSampling};
use crate::error::{AgentError, Result};
use crate::trajectory::TokenRecord;

mod wire;

use wire::{ChatRequest, Completion, body_snippet, parse_completion, row_seed, user_message};

/// Default per-request timeout (whole request: connect, send, generate, read the answer).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default number of retries after a failed attempt (so 4 attempts in all).
pub const DEFAULT_MAX_RETRIES: u32 = 3;
/// Default wait before the first retry; it doubles for each further retry.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(500);
/// Default cap on the wait between retries.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(8);
/// Default cap on the size of a response body (16 MiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 16 << 20;
/// Default number of rows whose requests are in flight at once.
pub const DEFAULT_MAX_CONCURRENCY: usize = 8;
/// End-of-turn tokens removed from the end of a returned text if the server left them in.
const END_OF_TURN: [&str; 2] = ["<|im_end|>", "<|endoftext|>"];
/// Characters of an error body kept in [`AgentError::Status`] and retry reasons.
const ERROR_BODY_CHARS: usize = 512;

/// Settings of an [`HttpEngine`]. Build with [`HttpConfig::new`] and change fields as needed.
#[derive(Clone)]
pub struct HttpConfig {
    /// The server: its root (`http://host:8000`), its `/v1` (`http://host:8000/v1`) or the full
    /// `/v1/chat/completions` endpoint; see [`HttpConfig::endpoint`].
    pub base_url: String,
    /// The `model` field of every request (the name the server serves the model under).
    pub model: String,
    /// Sent as `Authorization: Bearer <key>` when set (default `None`: local servers need none).
    pub api_key: Option<String>,
    /// Limit on one attempt, end to end: connect, send, the whole generation, reading the answer (default
    /// 120 s). A timed-out attempt is retried from scratch, so set it above the longest turn you expect
    /// (`max_new_tokens` at the server's per-request speed under load).
    pub timeout: Duration,
    /// Limit on establishing the connection (default 10 s), so a dead host fails fast.
    pub connect_timeout: Duration,
    /// Retries after a failed attempt (connection error, timeout, HTTP 429 or 5xx), default 3: four
    /// attempts in all. `0` tries once.
    pub max_retries: u32,
    /// Wait before the first retry (default 0.5 s); doubles for each further one, up to
    /// [`HttpConfig::backoff_max`].
    pub backoff_initial: Duration,
    /// Cap on the wait between retries (default 8 s).
    pub backoff_max: Duration,
    /// Largest response body read (default 16 MiB; a 2,048-token turn with log-probs is well under 1 MiB);
    /// a larger one is an [`AgentError::BadResponse`].
    pub max_response_bytes: u64,
    /// The `stop` strings of every request (default `["<|im_end|>"]`; empty sends no `stop`). Servers stop
    /// at the model's end-of-turn token from its generation config anyway; the stop string also catches
    /// servers that render special tokens as text. A matched stop string is not part of the text.
    pub stop: Vec<String>,
    /// Ask for the sampled tokens' log-probs (`"logprobs": true`, default true). vLLM reports the
    /// model's raw log-probs (before temperature) unless started with
    /// `--logprobs-mode processed_logprobs`.
    pub logprobs: bool,
    /// Rows whose requests run at once, each on its own thread (default 8, a group's size: servers batch
    /// concurrent requests). `1` sends them one after the other.
    pub max_concurrency: usize,
    /// Use the proxy named by `HTTP_PROXY` / `HTTPS_PROXY` / `ALL_PROXY` (honouring `NO_PROXY`), default
    /// true; false connects directly.
    pub env_proxy: bool,
    /// Further fields merged into every request body, overriding the engine's own (for example
    /// `repetition_penalty`, `min_p`, `skip_special_tokens`); default empty.
    pub extra_body: Map<String, Value>,
}

impl HttpConfig {
    /// Settings for `model` served at `base_url`, with the defaults documented on each field.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_retries: DEFAULT_MAX_RETRIES,
            backoff_initial: DEFAULT_BACKOFF_INITIAL,
            backoff_max: DEFAULT_BACKOFF_MAX,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            stop: vec![END_OF_TURN[0].to_owned()],
            logprobs: true,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            env_proxy: true,
            extra_body: Map::new(),
        }
    }

    /// The chat completions endpoint: [`HttpConfig::base_url`] without trailing slashes, as is if it ends
    /// in `/chat/completions`, plus `/chat/completions` if it ends in `/v1`, else plus
    /// `/v1/chat/completions`.
    pub fn endpoint(&self) -> String {
        let base = self.base_url.trim_end_matches('/');
        if base.ends_with("/chat/completions") {
            base.to_owned()
        } else if base.ends_with("/v1") {
            format!("{base}/chat/completions")
        } else {
            format!("{base}/v1/chat/completions")
        }
    }

    /// Attempts a request makes at most (`max_retries + 1`).
    pub fn attempts(&self) -> u32 {
        self.max_retries.saturating_add(1)
    }

    /// The wait after failed attempt `attempt` (1-based): `backoff_initial · 2^(attempt-1)`, at most
    /// `backoff_max`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(30);
        self.backoff_initial
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

impl fmt::Debug for HttpConfig {
    /// Like a derived `Debug`, with the API key redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_retries", &self.max_retries)
            .field("backoff_initial", &self.backoff_initial)
            .field("backoff_max", &self.backoff_max)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("stop", &self.stop)
            .field("logprobs", &self.logprobs)
            .field("max_concurrency", &self.max_concurrency)
            .field("env_proxy", &self.env_proxy)
            .field("extra_body", &self.extra_body)
            .finish()
    }
}

/// One row's conversation.
#[derive(Debug, Clone)]
struct Row {
    /// The OpenAI messages so far (images as data URLs).
    messages: Vec<Value>,
    /// Tokens in the context: the server's last count plus estimates since.
    tokens: usize,
}

/// An engine that talks to an OpenAI-compatible chat completions server (see the module docs).
///
/// ```no_run
/// use pixel_agent::{HttpConfig, HttpEngine};
///
/// let mut config = HttpConfig::new("http://localhost:8000", "TIGER-Lab/PixelReasoner-RL-v1");
/// config.max_concurrency = 16;
/// let engine = HttpEngine::new(config)?;
/// # Ok::<(), pixel_agent::AgentError>(())
/// ```
#[derive(Debug)]
pub struct HttpEngine {
    config: HttpConfig,
    endpoint: String,
    agent: ureq::Agent,
    rows: Vec<Row>,
}

/// How one attempt failed.
enum Failure {
    /// Worth another attempt; the reason.
    Retry(String),
    /// Final.
    Fatal(AgentError),
}

impl HttpEngine {
    /// An engine for `config`'s server. Nothing is sent until the first [`Engine::generate`].
    ///
    /// # Errors
    /// [`AgentError::Request`] if [`HttpConfig::base_url`] is not an `http://` or `https://` URL.
    pub fn new(config: HttpConfig) -> Result<Self> {
        let endpoint = config.endpoint();
        let scheme_ok = ["http://", "https://"].iter().any(|s| {
            endpoint.len() > s.len()
                && endpoint
                    .get(..s.len())
                    .is_some_and(|p| p.eq_ignore_ascii_case(s))
        });
        if !scheme_ok {
            return Err(AgentError::Request(format!(
                "base URL {:?} is not an http:// or https:// URL",
                config.base_url
            )));
        }
        let mut builder = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .timeout_global(Some(config.timeout))
            .timeout_connect(Some(config.connect_timeout))
            .user_agent(concat!("pixel-agent/", env!("CARGO_PKG_VERSION")));
        if !config.env_proxy {
            builder = builder.proxy(None);
        }
        let agent = ureq::Agent::new_with_config(builder.build());
        Ok(Self {
            config,
            endpoint,
            agent,
            rows: Vec::new(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &HttpConfig {
        &self.config
    }

    /// The URL requests go to ([`HttpConfig::endpoint`]).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// `row`'s conversation as the OpenAI messages the next request sends (images as PNG data URLs);
    /// `None` for a row not open.
    pub fn messages(&self, row: usize) -> Option<&[Value]> {
        self.rows.get(row).map(|r| r.messages.as_slice())
    }

    /// An estimate of the tokens `text` takes: its UTF-8 bytes / 3, rounded up. Qwen's tokenizer averages
    /// about 4 bytes a token on English, so this errs high.
    pub fn estimate_text_tokens(text: &str) -> usize {
        text.len().div_ceil(3)
    }

    /// An estimate of the tokens an image of `width × height` takes: `⌈w/28⌉ · ⌈h/28⌉` merged patches
    /// plus `<|vision_start|>` and `<|vision_end|>`. The server resizes to its processor's pixel limits
    /// (multiples of 28, within `min_pixels..max_pixels`), so the real count differs, most for large
    /// images.
    pub fn estimate_image_tokens(width: u32, height: u32) -> usize {
        (width.div_ceil(28) as usize) * (height.div_ceil(28) as usize) + 2
    }

    /// An estimate of the tokens `turn` adds (an estimate: the server tokenizes, not this engine): its
    /// text by [`HttpEngine::estimate_text_tokens`], each image and each video frame by
    /// [`HttpEngine::estimate_image_tokens`]. The template's role markers are not counted.
    pub fn estimate_tokens(turn: &UserTurn) -> usize {
        turn.parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => Self::estimate_text_tokens(t),
                Part::Image(i) => Self::estimate_image_tokens(i.width(), i.height()),
                Part::Video(v) => v
                    .frames()
                    .iter()
                    .map(|f| Self::estimate_image_tokens(f.width(), f.height()))
                    .sum(),
            })
            .sum()
    }

    /// The request body for `row` under `sampling`.
    fn request_body(&self, row: usize, sampling: &TurnSampling) -> Result<Vec<u8>> {
        let params = &sampling.params;
        let mut fields = Map::new();
        fields.insert("max_tokens".into(), json!(sampling.max_new_tokens));
        fields.insert("temperature".into(), json!(params.temperature));
        fields.insert("top_p".into(), json!(params.top_p));
        if params.top_k > 0 {
            fields.insert("top_k".into(), json!(params.top_k));
        }
        fields.insert("seed".into(), json!(row_seed(sampling.seed, row)));
        if self.config.logprobs {
            fields.insert("logprobs".into(), json!(true));
        }
        if !self.config.stop.is_empty() {
            fields.insert("stop".into(), json!(self.config.stop));
        }
        for (k, v) in &self.config.extra_body {
            fields.insert(k.clone(), v.clone());
        }
        let request = ChatRequest {
            model: &self.config.model,
            messages: &self.rows[row].messages,
            fields,
        };
        serde_json::to_vec(&request)
            .map_err(|e| AgentError::Request(format!("cannot serialize the request: {e}")))
    }

    /// Sends one request body with retries and parses the answer.
    fn complete(&self, body: &[u8]) -> Result<Completion> {
        let attempts = self.config.attempts();
        let mut reason = String::new();
        for attempt in 1..=attempts {
            match self.attempt(body) {
                Ok(bytes) => {
                    return parse_completion(&bytes).map_err(|reason| AgentError::BadResponse {
                        url: self.endpoint.clone(),
                        reason,
                    });
                }
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(r)) => {
                    reason = r;
                    if attempt < attempts {
                        std::thread::sleep(self.config.backoff(attempt));
                    }
                }
            }
        }
        Err(AgentError::Unreachable {
            url: self.endpoint.clone(),
            attempts,
            reason,
        })
    }

    /// One attempt: the 2xx body, or why not.
    fn attempt(&self, body: &[u8]) -> std::result::Result<Vec<u8>, Failure> {
        let mut request = self
            .agent
            .post(&self.endpoint)
            .header("content-type", "application/json")
            .header("accept", "application/json");
        if let Some(key) = &self.config.api_key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let mut response = request.send(body).map_err(|e| self.transport_failure(e))?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return match response
                .body_mut()
                .with_config()
                .limit(self.config.max_response_bytes)
                .read_to_vec()
            {
                Ok(bytes) => Ok(bytes),
                Err(ureq::Error::BodyExceedsLimit(limit)) => {
                    Err(Failure::Fatal(AgentError::BadResponse {
                        url: self.endpoint.clone(),
                        reason: format!("response body over the {limit}-byte cap"),
                    }))
                }
                Err(e) => match self.transport_failure(e) {
                    Failure::Retry(r) => Err(Failure::Retry(format!("reading the answer: {r}"))),
                    fatal => Err(fatal),
                },
            };
        }
        let snippet = body_snippet(response.body_mut());
        if status == 429 || status >= 500 {
            Err(Failure::Retry(format!("HTTP {status}: {snippet}")))
        } else {
            Err(Failure::Fatal(AgentError::Status {
                url: self.endpoint.clone(),
                status,
                body: snippet,
            }))
        }
    }

    /// Classifies a ureq error: network trouble is retried, a bad URL or TLS setup is not.
    fn transport_failure(&self, e: ureq::Error) -> Failure {
        match e {
            ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
            | ureq::Error::Protocol(_) => Failure::Retry(e.to_string()),
            other => Failure::Fatal(AgentError::Unreachable {
                url: self.endpoint.clone(),
                attempts: 1,
                reason: other.to_string(),
            }),
        }
    }
}

impl Engine for HttpEngine {
    /// The turn and its token estimate ([`HttpEngine::estimate_tokens`]); images are encoded when it is
    /// appended.
    type Prepared = (UserTurn, usize);

    /// False: the server re-tokenizes the conversation every turn.
    fn is_token_exact(&self) -> bool {
        false
    }

    /// Starts `rows` conversations of the system message and `question` (its images encoded once and
    /// shared). Nothing is sent.
    fn open(&mut self, system: &str, question: &UserTurn, rows: usize) -> Result<()> {
        self.rows.clear();
        let question_message = user_message(question)?;
        let tokens = Self::estimate_text_tokens(system) + Self::estimate_tokens(question);
        let row = Row {
            messages: vec![system_json(system), question_message],
            tokens,
        };
        self.rows = vec![row; rows];
        Ok(())
    }

    fn rows(&self) -> usize {
        self.rows.len()
    }

    /// The server's last `prompt_tokens + completion_tokens` for `row` plus estimates of what was
    /// appended since (before the first answer: estimates only); 0 for a row not open.
    fn context_tokens(&self, row: usize) -> usize {
        self.rows.get(row).map_or(0, |r| r.tokens)
    }

    /// The turn with its estimate; nothing is encoded yet.
    ///
    /// # Errors
    /// [`AgentError::Request`] for a row not open.
    fn prepare(&self, row: usize, turn: &UserTurn) -> Result<Self::Prepared> {
        if row >= self.rows.len() {
            return Err(AgentError::Request(format!(
                "row {row} of a group of {}",
                self.rows.len()
            )));
        }
        Ok((turn.clone(), Self::estimate_tokens(turn)))
    }

    fn prepared_tokens(&self, prepared: &Self::Prepared) -> usize {
        prepared.1
    }

    /// Appends each row's turn as a user message (images encoded here); all or nothing.
    fn append(&mut self, turns: Vec<Option<Self::Prepared>>) -> Result<()> {
        if turns.len() != self.rows.len() {
            return Err(AgentError::Request(format!(
                "{} turns for {} rows",
                turns.len(),
                self.rows.len()
            )));
        }
        let messages = turns
            .iter()
            .map(|t| {
                t.as_ref()
                    .map(|(turn, tokens)| Ok((user_message(turn)?, *tokens)))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        for (row, message) in self.rows.iter_mut().zip(messages) {
            if let Some((message, tokens)) = message {
                row.messages.push(message);
                row.tokens += tokens;
            }
        }
        Ok(())
    }

    /// One request per active row, up to [`HttpConfig::max_concurrency`] at once (each on its own
    /// thread), with `temperature` (0: greedy), `top_p`, `top_k` (only when > 0; a vLLM / SGLang
    /// extension), `max_tokens` = `max_new_tokens`, `seed` = `sampling.seed + row` and `logprobs`. `tokens`
    /// stays empty; `logprobs` holds what the server reported (empty if none). All or nothing: if any
    /// row fails, no row's assistant turn is appended and the first failing row's error is returned.
    fn generate(
        &mut self,
        active: &[bool],
        sampling: &TurnSampling,
    ) -> Result<Vec<Option<Generated>>> {
        if active.len() != self.rows.len() {
            return Err(AgentError::Request(format!(
                "{} active flags for {} rows",
                active.len(),
                self.rows.len()
            )));
        }
        let jobs = active
            .iter()
            .enumerate()
            .filter(|&(_, &a)| a)
            .map(|(row, _)| Ok((row, self.request_body(row, sampling)?)))
            .collect::<Result<Vec<_>>>()?;
        let workers = self.config.max_concurrency.clamp(1, jobs.len().max(1));
        let mut results: Vec<(usize, Result<Completion>)> = if workers <= 1 {
            jobs.iter()
                .map(|(row, body)| (*row, self.complete(body)))
                .collect()
        } else {
            let next = AtomicUsize::new(0);
            let this = &*self;
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..workers)
                    .map(|_| {
                        scope.spawn(|| {
                            let mut done = Vec::new();
                            loop {
                                let i = next.fetch_add(1, Ordering::Relaxed);
                                let Some((row, body)) = jobs.get(i) else {
                                    break;
                                };
                                done.push((*row, this.complete(body)));
                            }
                            done
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| {
                        h.join().unwrap_or_else(|_| {
                            vec![(
                                usize::MAX,
                                Err(AgentError::Request("a request thread panicked".into())),
                            )]
                        })
                    })
                    .collect()
            })
        };
        results.sort_by_key(|(row, _)| *row);
        let completions = results
            .into_iter()
            .map(|(row, r)| r.map(|c| (row, c)))
            .collect::<Result<Vec<_>>>()?;
        let mut out: Vec<Option<Generated>> = vec![None; self.rows.len()];
        for (row, completion) in completions {
            let state = &mut self.rows[row];
            state.messages.push(assistant_json(&completion.text));
            state.tokens = completion
                .total_tokens
                .unwrap_or_else(|| state.tokens + Self::estimate_text_tokens(&completion.text));
            out[row] = Some(Generated {
                text: completion.text,
                tokens: Vec::new(),
                logprobs: completion.logprobs,
                end: completion.end,
            });
        }
        Ok(out)
    }

    /// `None`: the server's token ids are not known.
    fn record(&self, _row: usize) -> Option<TokenRecord> {
        None
    }
}
