//! [`Server`]: the model worker plus the axum application in front of it.
//!
//! A request to `/v1/chat/completions` is admitted only if one of [`ServeConfig::max_pending`] slots is
//! free (else 503), then parsed and checked, its images loaded and (raw model) its prompt tokenized on a
//! blocking thread, and queued for the worker. The handler waits for the answer until the request's
//! deadline (504 after it) or streams it as server-sent events. When the client goes away, the handler
//! (or the event stream) is dropped and with it the reply channel: the worker sees that and stops the
//! job at its next check. Shutdown stops accepting connections and new requests (503), lets every
//! admitted request finish, then stops the worker.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use burn::tensor::backend::Backend;
use pixel_agent::{Media, Query};
use pixel_vlm::processor::Processor;
use pixel_vlm::rope_index::RopeIndexConfig;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::ServeConfig;
use crate::error::{ApiError, ServeError};
use crate::media::ImageLoader;
use crate::queue::{AgentWork, Job, JobQueue, Work};
use crate::request::{ChatRequest, ModelKind, PartSource, Role, parse_request};
use crate::response::{self, Meta};
use crate::stats::{Stats, StatsSnapshot};
use crate::worker::{self, ModelInfo, WorkerParts};
use crate::{raw, stream};

/// Longest time a client may take to send a request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// State shared by the handlers.
pub(crate) struct Shared {
    pub config: Arc<ServeConfig>,
    pub processor: Arc<Processor>,
    pub queue: Arc<JobQueue>,
    pub stats: Arc<Stats>,
    pub info: ModelInfo,
    pub rope: RopeIndexConfig,
    pub admission: Arc<Semaphore>,
    pub closing: AtomicBool,
    pub image_root: Option<std::path::PathBuf>,
    pub started: u64,
    next_id: AtomicU64,
    ids: RandomState,
}

impl Shared {
    /// A fresh 64-bit value: request ids and default seeds.
    fn fresh(&self) -> u64 {
        self.ids
            .hash_one(self.next_id.fetch_add(1, Ordering::Relaxed))
    }
}

/// An OpenAI-compatible server over one Qwen2.5-VL checkpoint (see the crate docs).
pub struct Server {
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Server {
    /// Loads the checkpoint in `model_dir` (model on a worker thread on `device`, processor here) and
    /// gets ready to serve; returns once the model is loaded.
    ///
    /// # Errors
    /// [`ServeError::Config`] for bad settings, [`ServeError::Load`] for a folder that is not a
    /// loadable checkpoint, [`ServeError::Worker`] if the model thread cannot start.
    pub fn start<B: Backend>(
        model_dir: impl AsRef<Path>,
        device: B::Device,
        config: ServeConfig,
    ) -> Result<Self, ServeError> {
        config.validate()?;
        let dir = model_dir.as_ref().to_path_buf();
        let image_root = config
            .image_root
            .as_ref()
            .map(|r| r.canonicalize())
            .transpose()?;
        let processor = Processor::from_pretrained(&dir).map_err(|source| ServeError::Load {
            path: dir.clone(),
            source,
        })?;
        let processor = Arc::new(processor);
        let config = Arc::new(config);
        let queue = Arc::new(JobQueue::new());
        let stats = Arc::new(Stats::default());
        let (handle, info) = worker::spawn::<B>(
            dir,
            device,
            WorkerParts {
                processor: Arc::clone(&processor),
                queue: Arc::clone(&queue),
                stats: Arc::clone(&stats),
                config: Arc::clone(&config),
            },
        )?;
        let mut rope = processor.rope_config();
        rope.tokens_per_second = info.tokens_per_second;
        let shared = Shared {
            admission: Arc::new(Semaphore::new(config.max_pending)),
            config,
            processor,
            queue,
            stats,
            info,
            rope,
            closing: AtomicBool::new(false),
            image_root,
            started: unix_now(),
            next_id: AtomicU64::new(0),
            ids: RandomState::new(),
        };
        Ok(Self {
            shared: Arc::new(shared),
            worker: Some(handle),
        })
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.shared.stats)
    }

    /// A copy of the counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// Tokens one conversation may hold (the configured context within the model's positions).
    pub fn context_tokens(&self) -> usize {
        self.shared.info.context
    }

    /// The axum application (routes, body limit, panic guard). [`Server::serve`] runs it; use this to
    /// mount it elsewhere.
    pub fn router(&self) -> Router {
        let config = &self.shared.config;
        Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/models", get(models))
            .route("/v1/models/{id}", get(model))
            .route("/health", get(health))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(DefaultBodyLimit::max(config.max_body_bytes))
            .layer(RequestBodyTimeoutLayer::new(BODY_TIMEOUT))
            .layer(CatchPanicLayer::custom(|_| {
                ApiError::internal("the server failed on this request").into_response()
            }))
            .layer(TraceLayer::new_for_http())
            .with_state(Arc::clone(&self.shared))
    }

    /// Serves on `listener` until `shutdown` completes, then shuts down gracefully: no new connections
    /// or requests (503), every admitted request runs to its end, then the model worker stops.
    ///
    /// # Errors
    /// [`ServeError::Io`] if serving fails, [`ServeError::Worker`] if the worker panicked.
    pub async fn serve(
        mut self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let app = self.router();
        let shared = Arc::clone(&self.shared);
        let signal = async move {
            shutdown.await;
            shared.closing.store(true, Ordering::SeqCst);
            tracing::info!("shutting down: draining admitted requests");
        };
        axum::serve(listener, app)
            .with_graceful_shutdown(signal)
            .await?;
        self.shared.closing.store(true, Ordering::SeqCst);
        // Every connection is closed, so every admitted request has been answered or abandoned.
        self.shared.queue.close();
        if let Some(worker) = self.worker.take() {
            tokio::task::spawn_blocking(move || worker.join())
                .await
                .map_err(|e| ServeError::Worker(e.to_string()))?
                .map_err(|_| ServeError::Worker("the model thread panicked".into()))?;
        }
        Ok(())
    }
}

impl Drop for Server {
    /// Stops the worker once the jobs already queued are done (without waiting for it).
    fn drop(&mut self) {
        self.shared.queue.close();
    }
}

/// Holds an admission slot and settles the request's outcome in the counters exactly once; a request
/// dropped before it settled (its client went away) counts as cancelled.
pub(crate) struct Admission {
    stats: Arc<Stats>,
    _permit: OwnedSemaphorePermit,
    settled: bool,
}

impl Admission {
    /// Counts a full answer.
    pub fn complete(&mut self) {
        self.settle(|s| &s.completed);
    }

    /// Counts a failure (timeouts apart).
    pub fn fail(&mut self, error: &ApiError) {
        if error.status == StatusCode::GATEWAY_TIMEOUT {
            self.settle(|s| &s.timed_out);
        } else {
            self.settle(|s| &s.failed);
        }
    }

    fn settle(&mut self, counter: fn(&Stats) -> &AtomicU64) {
        if !self.settled {
            self.settled = true;
            Stats::add(counter(&self.stats), 1);
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.settle(|s| &s.cancelled);
    }
}

async fn chat(State(shared): State<Arc<Shared>>, body: Result<Bytes, BytesRejection>) -> Response {
    if shared.closing.load(Ordering::SeqCst) {
        Stats::add(&shared.stats.rejected_busy, 1);
        return ApiError::overloaded("the server is shutting down").into_response();
    }
    let Ok(permit) = Arc::clone(&shared.admission).try_acquire_owned() else {
        Stats::add(&shared.stats.rejected_busy, 1);
        return ApiError::overloaded(format!(
            "the server is busy: {} requests are queued or running; retry later",
            shared.config.max_pending
        ))
        .into_response();
    };
    Stats::add(&shared.stats.admitted, 1);
    let mut admission = Admission {
        stats: Arc::clone(&shared.stats),
        _permit: permit,
        settled: false,
    };
    let deadline = Instant::now() + shared.config.request_timeout;
    match admit(&shared, body, deadline).await {
        Ok((request, job, replies)) => {
            let meta = Meta {
                id: format!("chatcmpl-{:016x}", shared.fresh()),
                created: unix_now(),
                model: request.model.clone(),
            };
            // Counted before the push: the worker may take the job at once.
            Stats::add(&shared.stats.queued, 1);
            if let Err(job) = shared.queue.push(job) {
                drop(job);
                Stats::sub(&shared.stats.queued, 1);
                let error = ApiError::overloaded("the server is shutting down");
                admission.fail(&error);
                return error.into_response();
            }
            let ctx = stream::Context {
                meta,
                n: request.n,
                logprobs: request.logprobs,
                include_usage: request.include_usage,
                deadline,
                timeout: shared.config.request_timeout,
            };
            if request.stream {
                stream::events(ctx, replies, admission, shared.config.keep_alive).into_response()
            } else {
                stream::collect(ctx, replies, admission).await
            }
        }
        Err(error) => {
            admission.fail(&error);
            error.into_response()
        }
    }
}

/// Reads, checks and prepares a request into a job (not yet queued).
async fn admit(
    shared: &Arc<Shared>,
    body: Result<Bytes, BytesRejection>,
    deadline: Instant,
) -> Result<(ChatRequest, Job, stream::Replies), ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(shared.config.max_body_bytes)
        } else {
            ApiError::bad_request(format!("cannot read the body: {}", rejection.body_text()))
        }
    })?;
    let request = parse_request(&body, &shared.config)?;
    drop(body);
    let seed = request.seed.unwrap_or_else(|| shared.fresh() >> 1);
    let prepared = {
        let shared = Arc::clone(shared);
        let request = request.clone();
        tokio::task::spawn_blocking(move || prepare(&shared, &request, seed))
    };
    let work = tokio::time::timeout_at(deadline, prepared)
        .await
        .map_err(|_| ApiError::timeout(shared.config.request_timeout))?
        .map_err(|e| ApiError::internal(format!("preparing the request failed: {e}")))??;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let job = Job {
        work,
        replies: tx,
        deadline: deadline.into_std(),
    };
    Ok((request, job, rx))
}

/// Loads the images and builds the work for the model (blocking: decoding, resizing, tokenizing).
fn prepare(shared: &Shared, request: &ChatRequest, seed: u64) -> Result<Work, ApiError> {
    let mut loader = ImageLoader::new(&shared.config, shared.image_root.clone());
    let mut images = Vec::with_capacity(request.image_count());
    for part in request.messages.iter().flat_map(|m| &m.parts) {
        if let PartSource::Image { source, param } = part {
            images.push(loader.load(source, param)?);
        }
    }
    match request.kind {
        ModelKind::Raw => Ok(Work::Raw(raw::prepare(
            &shared.processor,
            &shared.rope,
            request,
            images,
            shared.info.context,
            seed,
        )?)),
        ModelKind::Agent => {
            let text_of = |role: Role| -> Option<String> {
                let m = request.messages.iter().find(|m| m.role == role)?;
                let texts: Vec<&str> = m
                    .parts
                    .iter()
                    .filter_map(|p| match p {
                        PartSource::Text(t) => Some(t.as_str()),
                        PartSource::Image { .. } => None,
                    })
                    .collect();
                Some(texts.join("\n"))
            };
            let mut config = shared.config.rollout.clone();
            if let Some(system) = text_of(Role::System) {
                config.system = Some(system);
            }
            config.max_new_tokens = request.max_tokens;
            if let Some(params) = request.sampling {
                config.first_turn = params;
                config.later_turns = params;
            }
            config.seed = seed;
            // Keep room for a whole turn after the last observation the budget lets in.
            let room = shared.info.context.saturating_sub(request.max_tokens);
            config.episode.max_total_tokens = Some(
                config
                    .episode
                    .max_total_tokens
                    .map_or(room, |b| b.min(room)),
            );
            Ok(Work::Agent(AgentWork {
                query: Query {
                    media: Media::Images(images),
                    question: text_of(Role::User).unwrap_or_default(),
                },
                n: request.n,
                config,
                stream: request.stream,
            }))
        }
    }
}

async fn models(State(shared): State<Arc<Shared>>) -> Response {
    let c = &shared.config;
    let data = vec![
        response::model_entry(&c.agent_model, shared.started, shared.info.context, true),
        response::model_entry(&c.raw_model, shared.started, shared.info.context, false),
    ];
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

async fn model(State(shared): State<Arc<Shared>>, UrlPath(id): UrlPath<String>) -> Response {
    let c = &shared.config;
    if id == c.agent_model || id == c.raw_model {
        let entry = response::model_entry(
            &id,
            shared.started,
            shared.info.context,
            id == c.agent_model,
        );
        axum::Json(entry).into_response()
    } else {
        ApiError::unknown_model(&id, &[&c.agent_model, &c.raw_model]).into_response()
    }
}

async fn health(State(shared): State<Arc<Shared>>) -> Response {
    let status = if shared.closing.load(Ordering::SeqCst) {
        "shutting_down"
    } else {
        "ok"
    };
    axum::Json(json!({"status": status, "stats": shared.stats.snapshot()})).into_response()
}

async fn not_found(uri: Uri) -> Response {
    ApiError::no_route(uri.path()).into_response()
}

async fn method_not_allowed() -> Response {
    let mut error = ApiError::bad_request("method not allowed on this route");
    error.status = StatusCode::METHOD_NOT_ALLOWED;
    error.into_response()
}
