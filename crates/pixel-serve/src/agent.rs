//! The agent model: the server runs the Pixel Reasoner loop (`pixel_agent::run_group_with` over an
//! in-process `LocalEngine`) and answers with the whole trace. A request's `n` is the group's rows.
//!
//! The message content is the trace as text: each assistant turn and each observation text in order,
//! joined by newlines (the last `\boxed{}` in it is the answer, as the official scorer reads it), and
//! every choice carries the structured trace in an extra `pixel_trace` field. When streaming, each turn
//! and observation is sent as a content piece as soon as it exists. The client and the deadline are
//! checked before every turn: a rollout whose client went away stops there.

use std::cell::Cell;

use burn::tensor::backend::Backend;
use image::RgbImage;
use pixel_agent::local::PreparedTurn;
use pixel_agent::{
    AgentError, Engine, Event, Generated, LocalEngine, RolloutEnd, TokenRecord, Trajectory,
    TurnSampling, UserTurn, run_group_with,
};
use pixel_ops::EndReason;
use pixel_vlm::Qwen25Vl;
use pixel_vlm::processor::Processor;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::queue::{AgentWork, Job, Reply};
use crate::raw::Stopped;
use crate::stats::Stats;

/// The error message of a rollout stopped because nobody waits for it.
const STOPPED: &str = "stopped: the client went away or the time limit passed";

/// A [`LocalEngine`] that refuses to start a turn once its job is abandoned or expired.
struct Guarded<'a, 'm, B: Backend> {
    inner: LocalEngine<'m, B>,
    job: &'a Job,
    stopped: Cell<Option<Stopped>>,
    stats: &'a Stats,
}

impl<B: Backend> Engine for Guarded<'_, '_, B> {
    type Prepared = PreparedTurn;

    fn is_token_exact(&self) -> bool {
        self.inner.is_token_exact()
    }
    fn open(&mut self, system: &str, question: &UserTurn, rows: usize) -> pixel_agent::Result<()> {
        self.inner.open(system, question, rows)
    }
    fn model_view(&self, image: &RgbImage) -> pixel_agent::Result<RgbImage> {
        self.inner.model_view(image)
    }
    fn rows(&self) -> usize {
        self.inner.rows()
    }
    fn context_tokens(&self, row: usize) -> usize {
        self.inner.context_tokens(row)
    }
    fn prepare(&self, row: usize, turn: &UserTurn) -> pixel_agent::Result<Self::Prepared> {
        self.inner.prepare(row, turn)
    }
    fn prepared_tokens(&self, prepared: &Self::Prepared) -> usize {
        self.inner.prepared_tokens(prepared)
    }
    fn append(&mut self, turns: Vec<Option<Self::Prepared>>) -> pixel_agent::Result<()> {
        self.inner.append(turns)
    }
    fn generate(
        &mut self,
        active: &[bool],
        sampling: &TurnSampling,
    ) -> pixel_agent::Result<Vec<Option<Generated>>> {
        let stop = if self.job.abandoned() {
            Some(Stopped::Abandoned)
        } else if self.job.expired() {
            Some(Stopped::Expired)
        } else {
            None
        };
        if stop.is_some() {
            self.stopped.set(stop);
            return Err(AgentError::Request(STOPPED.into()));
        }
        let out = self.inner.generate(active, sampling)?;
        let sampled: usize = out.iter().flatten().map(|g| g.tokens.len()).sum();
        Stats::add(&self.stats.generated_tokens, sampled as u64);
        Ok(out)
    }
    fn record(&self, row: usize) -> Option<TokenRecord> {
        self.inner.record(row)
    }
}

/// Runs an agent job and replies (streamed pieces while it runs, then the trajectories).
///
/// # Errors
/// How the job stopped early, or the loop's error as an API error (400 for a prompt the engine refuses,
/// 500 for anything else).
pub(crate) fn run<B: Backend>(
    model: &Qwen25Vl<B>,
    processor: &Processor,
    capacity: usize,
    job: &Job,
    work: &AgentWork,
    stats: &Stats,
) -> Result<(), Result<Stopped, ApiError>> {
    let mut engine = Guarded {
        inner: LocalEngine::new(model, processor, capacity),
        job,
        stopped: Cell::new(None),
        stats,
    };
    let mut pieces = vec![0usize; work.n];
    let observe = |event: Event<'_>| {
        if !work.stream {
            return;
        }
        let (row, text) = match event {
            Event::Turn { row, text, .. } => (row, text),
            Event::Observation { row, text, .. } => (row, text),
            Event::End { .. } => return,
        };
        let Some(count) = pieces.get_mut(row) else {
            return;
        };
        let text = if *count == 0 {
            text.to_owned()
        } else {
            format!("\n{text}")
        };
        *count += 1;
        job.send(Reply::Delta {
            choice: row,
            text,
            logprobs: Vec::new(),
        });
    };
    stats.record_batch(work.n);
    match run_group_with(&mut engine, &work.query, work.n, &work.config, observe) {
        Ok(trajectories) => {
            job.send(Reply::Agent(trajectories));
            Ok(())
        }
        Err(e) => match engine.stopped.take() {
            Some(stopped) => Err(Ok(stopped)),
            None => Err(Err(match e {
                AgentError::Request(m) if m.contains("capacity") => {
                    ApiError::invalid("messages", m).with_code("context_length_exceeded")
                }
                AgentError::Vlm(v) => ApiError::invalid("messages", v.to_string()),
                other => ApiError::internal(other.to_string()),
            })),
        },
    }
}

/// The trace as text: turns and observation texts in order, joined by newlines.
pub(crate) fn transcript(trajectory: &Trajectory) -> String {
    let mut pieces: Vec<&str> = Vec::new();
    for (turn, generated) in trajectory.turns.iter().enumerate() {
        pieces.push(&generated.text);
        for op in trajectory.operations.iter().filter(|o| o.turn == turn) {
            // An observation that did not fit the budget was never shown to the model.
            let shown = turn + 1 < trajectory.turns.len();
            if shown {
                pieces.push(&op.observation);
            }
        }
    }
    pieces.join("\n")
}

/// OpenAI's `finish_reason` for a rollout: `stop` when it answered or a limit of the loop ended it,
/// `length` when a turn or the token budget ran out.
pub(crate) fn finish_reason(trajectory: &Trajectory) -> &'static str {
    match trajectory.end {
        RolloutEnd::TurnLength
        | RolloutEnd::ObservationTooLong
        | RolloutEnd::Episode(EndReason::TokenBudget) => "length",
        RolloutEnd::Episode(_) | RolloutEnd::EndOfText => "stop",
    }
}

/// The structured trace of one rollout (the `pixel_trace` field).
pub(crate) fn trace_json(trajectory: &Trajectory) -> Value {
    let turns: Vec<Value> = trajectory
        .turns
        .iter()
        .map(|g| json!({"text": g.text, "end": g.end, "tokens": g.tokens.len()}))
        .collect();
    json!({
        "final_text": trajectory.final_text,
        "end": trajectory.end,
        "turns": turns,
        "operations": trajectory.operations,
        "stats": trajectory.stats,
        "context_tokens": trajectory.tokens.as_ref().map(TokenRecord::len),
    })
}

/// Prompt and completion tokens of a group: every token the model read that it did not sample, and
/// every token it sampled, over all rows.
pub(crate) fn usage(trajectories: &[Trajectory]) -> (usize, usize) {
    trajectories
        .iter()
        .filter_map(|t| t.tokens.as_ref())
        .fold((0, 0), |(p, c), r| {
            let sampled = r.sampled_len();
            (p + r.len() - sampled, c + sampled)
        })
}
