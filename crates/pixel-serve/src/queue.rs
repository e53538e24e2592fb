//! Jobs for the model worker and the queue they wait in. Handlers push checked, preprocessed jobs; the
//! worker takes one agent job, or a batch of raw jobs (up to a number of rows, waiting a short window for
//! more when the queue runs empty). Jobs whose client went away are dropped when they come up.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pixel_agent::{Query, RolloutConfig, Trajectory};
use pixel_vlm::processor::ProcessorOutput;
use pixel_vlm::sampling::SamplingParams;
use tokio::sync::mpsc::UnboundedSender;

use crate::error::ApiError;
use crate::stats::Stats;

/// A raw request made ready for the model: tokenized, images preprocessed, positions computed.
pub(crate) struct RawWork {
    pub output: ProcessorOutput,
    /// M-RoPE positions of `output`'s tokens, `[3][len]`.
    pub positions: [Vec<i64>; 3],
    pub n: usize,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub seed: u64,
    pub logprobs: bool,
    pub stop: Vec<String>,
    pub stream: bool,
}

/// An agent request: the query and the loop's settings.
pub(crate) struct AgentWork {
    pub query: Query,
    pub n: usize,
    pub config: RolloutConfig,
    pub stream: bool,
}

/// What a job asks for.
pub(crate) enum Work {
    Raw(RawWork),
    Agent(AgentWork),
}

/// One sampled token's log-probability, for `logprobs`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
}

/// One choice of a raw answer.
#[derive(Debug, Clone)]
pub(crate) struct RawChoice {
    pub text: String,
    pub finish: &'static str,
    pub logprobs: Vec<TokenLogprob>,
    pub completion_tokens: usize,
}

/// What the worker sends back.
pub(crate) enum Reply {
    /// Streamed text of one choice (and, for the raw model with `logprobs`, its tokens').
    Delta {
        choice: usize,
        text: String,
        logprobs: Vec<TokenLogprob>,
    },
    /// A raw request's answer.
    Raw {
        choices: Vec<RawChoice>,
        prompt_tokens: usize,
    },
    /// An agent request's rollouts.
    Agent(Vec<Trajectory>),
    /// The request failed.
    Failed(ApiError),
}

/// A request waiting for, or being run by, the model.
pub(crate) struct Job {
    pub work: Work,
    pub replies: UnboundedSender<Reply>,
    pub deadline: Instant,
}

impl Job {
    /// Rows the job takes in a batch.
    pub fn rows(&self) -> usize {
        match &self.work {
            Work::Raw(w) => w.n,
            Work::Agent(w) => w.n,
        }
    }

    /// Whether the client stopped waiting (disconnected, or its handler timed out).
    pub fn abandoned(&self) -> bool {
        self.replies.is_closed()
    }

    /// Whether the time limit has passed.
    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Sends a reply; a client that went away is not an error.
    pub fn send(&self, reply: Reply) {
        let _ = self.replies.send(reply);
    }
}

struct State {
    jobs: VecDeque<Job>,
    closed: bool,
}

/// The queue between the handlers and the worker.
pub(crate) struct JobQueue {
    state: Mutex<State>,
    ready: Condvar,
}

impl JobQueue {
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves a consistent deque: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a job; gives it back if the queue is closed.
    #[allow(clippy::result_large_err)]
    pub fn push(&self, job: Job) -> Result<(), Job> {
        let mut state = self.lock();
        if state.closed {
            return Err(job);
        }
        state.jobs.push_back(job);
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    /// Refuses further jobs; the worker finishes those queued, then stops.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// Takes the next work: one agent job, or raw jobs of up to `max_rows` rows together. Waits for a
    /// first job; then, while the queue is empty and the batch not full, up to `window` for more. Jobs
    /// whose client went away are dropped (counted in `stats`). `None` once closed and empty.
    pub fn next_batch(&self, max_rows: usize, window: Duration, stats: &Stats) -> Option<Vec<Job>> {
        let mut state = self.lock();
        let first = loop {
            match state.jobs.pop_front() {
                Some(job) if job.abandoned() => drop_abandoned(job, stats),
                Some(job) => break job,
                None if state.closed => return None,
                None => state = self.ready.wait(state).unwrap_or_else(|e| e.into_inner()),
            }
        };
        Stats::sub(&stats.queued, 1);
        if matches!(first.work, Work::Agent(_)) {
            return Some(vec![first]);
        }
        let mut rows = first.rows();
        let mut batch = vec![first];
        let until = Instant::now() + window;
        while rows < max_rows {
            match state.jobs.front() {
                Some(job) if job.abandoned() => {
                    if let Some(job) = state.jobs.pop_front() {
                        drop_abandoned(job, stats);
                    }
                }
                Some(job) if matches!(job.work, Work::Raw(_)) && rows + job.rows() <= max_rows => {
                    if let Some(job) = state.jobs.pop_front() {
                        Stats::sub(&stats.queued, 1);
                        rows += job.rows();
                        batch.push(job);
                    }
                }
                Some(_) => break,
                None => {
                    let now = Instant::now();
                    if state.closed || now >= until {
                        break;
                    }
                    state = self
                        .ready
                        .wait_timeout(state, until - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        Some(batch)
    }
}

/// A job nobody waits for any more leaves the queue unrun.
fn drop_abandoned(job: Job, stats: &Stats) {
    Stats::sub(&stats.queued, 1);
    Stats::add(&stats.abandoned, 1);
    drop(job);
}
