//! The model worker: one thread that loads the model and owns it for the server's life (burn models are
//! not shared between threads here), takes work from the [`JobQueue`] and runs it: a batch of raw jobs
//! together, an agent job as one group. A batch whose forward fails is retried job by job, so one bad
//! request does not fail the others; a panic in the model is caught and fails only the jobs it hit.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use burn::tensor::backend::Backend;
use pixel_vlm::Qwen25Vl;
use pixel_vlm::cache::DEFAULT_KV_CACHE_BUDGET;
use pixel_vlm::processor::Processor;

use crate::agent;
use crate::config::ServeConfig;
use crate::error::{ApiError, ServeError};
use crate::queue::{Job, JobQueue, Reply, Work};
use crate::raw::{self, Progress, Stopped};
use crate::stats::Stats;

/// Facts about the loaded model that the HTTP side needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ModelInfo {
    /// Tokens a conversation may hold: the configured context within the model's positions.
    pub context: usize,
    /// The vision config's `tokens_per_second` (M-RoPE time scale).
    pub tokens_per_second: f32,
}

/// Everything the worker shares with the handlers.
pub(crate) struct WorkerParts {
    pub processor: Arc<Processor>,
    pub queue: Arc<JobQueue>,
    pub stats: Arc<Stats>,
    pub config: Arc<ServeConfig>,
}

/// Starts the worker thread, which loads the model from `dir` on `device`; returns once it is loaded.
///
/// # Errors
/// [`ServeError::Load`] if the model cannot be loaded, [`ServeError::Worker`] if the thread cannot start.
pub(crate) fn spawn<B: Backend>(
    dir: PathBuf,
    device: B::Device,
    parts: WorkerParts,
) -> Result<(JoinHandle<()>, ModelInfo), ServeError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("pixel-serve-model".into())
        .stack_size(32 << 20)
        .spawn(move || {
            let model = match Qwen25Vl::<B>::from_pretrained(&dir, &device) {
                Ok(model) => model,
                Err(source) => {
                    let _ = ready_tx.send(Err(ServeError::Load { path: dir, source }));
                    return;
                }
            };
            let info = ModelInfo {
                // One position stays free for the last sampled token of a turn.
                context: parts
                    .config
                    .context_tokens
                    .min(model.config.text.max_position_embeddings.saturating_sub(1)),
                tokens_per_second: model.config.vision.tokens_per_second as f32,
            };
            let _ = ready_tx.send(Ok(info));
            serve_jobs(&model, &parts, info);
        })
        .map_err(|e| ServeError::Worker(format!("cannot start the model thread: {e}")))?;
    match ready_rx.recv() {
        Ok(Ok(info)) => Ok((handle, info)),
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(e)
        }
        Err(_) => {
            let _ = handle.join();
            Err(ServeError::Worker(
                "the model thread ended while loading".into(),
            ))
        }
    }
}

/// The worker's loop: until the queue is closed and empty.
fn serve_jobs<B: Backend>(model: &Qwen25Vl<B>, parts: &WorkerParts, info: ModelInfo) {
    let config = &parts.config;
    while let Some(batch) =
        parts
            .queue
            .next_batch(config.max_batch, config.batch_window, &parts.stats)
    {
        let n = batch.len() as u64;
        Stats::add(&parts.stats.running, n);
        if let [job] = batch.as_slice()
            && let Work::Agent(work) = &job.work
        {
            let result = catch_unwind(AssertUnwindSafe(|| {
                agent::run(
                    model,
                    &parts.processor,
                    info.context,
                    job,
                    work,
                    &parts.stats,
                )
            }));
            match result {
                Ok(Ok(())) => {}
                Ok(Err(Ok(stopped))) => stopped_job(job, stopped, parts),
                Ok(Err(Err(error))) => job.send(Reply::Failed(error)),
                Err(panic) => job.send(Reply::Failed(panicked(&panic))),
            }
        } else {
            let jobs: Vec<&Job> = batch.iter().collect();
            for group in groups(model, &jobs, info.context) {
                run_raw(model, parts, &group, true);
            }
        }
        Stats::sub(&parts.stats.running, n);
    }
}

/// Splits raw jobs (in order) into groups whose session fits the model's positions and the KV-cache
/// budget.
fn groups<'j, B: Backend>(
    model: &Qwen25Vl<B>,
    jobs: &[&'j Job],
    context: usize,
) -> Vec<Vec<&'j Job>> {
    let fits = |group: &[&Job]| {
        let rows: usize = group.iter().map(|j| j.rows()).sum();
        let capacity = raw::capacity_for(group);
        capacity <= context + 1
            && model
                .kv_cache_bytes(rows, capacity)
                .is_some_and(|b| b <= DEFAULT_KV_CACHE_BUDGET)
    };
    let mut out: Vec<Vec<&Job>> = Vec::new();
    for &job in jobs {
        if let Some(last) = out.last_mut() {
            last.push(job);
            if fits(last) {
                continue;
            }
            last.pop();
        }
        out.push(vec![job]);
    }
    out
}

/// Runs raw jobs together; on a failure, retries alone each job that has received nothing yet.
fn run_raw<B: Backend>(model: &Qwen25Vl<B>, parts: &WorkerParts, jobs: &[&Job], retry: bool) {
    let mut progress = vec![Progress::default(); jobs.len()];
    let result = catch_unwind(AssertUnwindSafe(|| {
        raw::run_batch(
            model,
            &parts.processor,
            jobs,
            parts.config.check_every,
            &parts.stats,
            &mut progress,
        )
    }));
    let error = match result {
        Ok(Ok(stopped)) => {
            for (job, stopped) in jobs.iter().zip(stopped) {
                if let Some(stopped) = stopped {
                    stopped_job(job, stopped, parts);
                }
            }
            return;
        }
        Ok(Err(message)) => ApiError::internal(format!("the model failed: {message}")),
        Err(panic) => panicked(&panic),
    };
    tracing::warn!(jobs = jobs.len(), error = %error.message, "raw batch failed");
    for (job, progress) in jobs.iter().zip(progress) {
        if progress.answered {
            continue;
        }
        if retry && jobs.len() > 1 && !progress.sent {
            run_raw(model, parts, &[job], false);
        } else {
            job.send(Reply::Failed(error.clone()));
        }
    }
}

/// A job that stopped early: nothing is sent to a client that went away; an expired one gets a 504.
fn stopped_job(job: &Job, stopped: Stopped, parts: &WorkerParts) {
    Stats::add(&parts.stats.abandoned, 1);
    if let Stopped::Expired = stopped {
        job.send(Reply::Failed(ApiError::timeout(
            parts.config.request_timeout,
        )));
    }
}

fn panicked(panic: &Box<dyn std::any::Any + Send>) -> ApiError {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic");
    ApiError::internal(format!("the model failed on this request: {what}"))
}
