//! Turning the worker's replies into the HTTP answer: one JSON body ([`collect`]) or server-sent events
//! ([`events`]: a role chunk per choice, content chunks as text is generated, a finishing chunk per
//! choice, the usage chunk when asked for, then `data: [DONE]`). A failure after the stream started is
//! sent as a `data: {"error": ...}` event before `[DONE]`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use crate::agent;
use crate::error::ApiError;
use crate::queue::Reply;
use crate::response::{self, Meta};
use crate::server::Admission;

/// The receiving end of a job's replies.
pub(crate) type Replies = UnboundedReceiver<Reply>;

/// What the answer needs to know about its request.
pub(crate) struct Context {
    pub meta: Meta,
    pub n: usize,
    pub logprobs: bool,
    pub include_usage: bool,
    pub deadline: Instant,
    pub timeout: Duration,
}

/// The next reply, or the error that takes its place (deadline, worker gone).
async fn next(ctx: &Context, replies: &mut Replies) -> Reply {
    match tokio::time::timeout_at(ctx.deadline, replies.recv()).await {
        Ok(Some(reply)) => reply,
        Ok(None) => Reply::Failed(ApiError::internal(
            "the model worker dropped the request without an answer",
        )),
        Err(_) => Reply::Failed(ApiError::timeout(ctx.timeout)),
    }
}

/// Waits for the whole answer and returns it as one JSON body.
pub(crate) async fn collect(
    ctx: Context,
    mut replies: Replies,
    mut admission: Admission,
) -> Response {
    loop {
        let body = match next(&ctx, &mut replies).await {
            Reply::Delta { .. } => continue,
            Reply::Raw {
                choices,
                prompt_tokens,
            } => response::raw_completion(&ctx.meta, &choices, prompt_tokens, ctx.logprobs),
            Reply::Agent(trajectories) => response::agent_completion(&ctx.meta, &trajectories),
            Reply::Failed(error) => {
                admission.fail(&error);
                return error.into_response();
            }
        };
        admission.complete();
        return axum::Json(body).into_response();
    }
}

struct StreamState {
    ctx: Context,
    replies: Replies,
    admission: Admission,
    out: VecDeque<Event>,
    done: bool,
}

fn data(value: &Value) -> Event {
    Event::default().data(value.to_string())
}

impl StreamState {
    /// Turns one reply into events; sets `done` after the last.
    fn push(&mut self, reply: Reply) {
        let meta = &self.ctx.meta;
        match reply {
            Reply::Delta {
                choice,
                text,
                logprobs,
            } => {
                let d = response::delta(choice, json!({"content": text}), &logprobs);
                self.out.push_back(data(&response::chunk(meta, vec![d])));
            }
            Reply::Raw {
                choices,
                prompt_tokens,
            } => {
                let finishes = choices
                    .iter()
                    .enumerate()
                    .map(|(i, c)| response::finish(i, c.finish))
                    .collect();
                self.out.push_back(data(&response::chunk(meta, finishes)));
                let completion = choices.iter().map(|c| c.completion_tokens).sum();
                self.end(prompt_tokens, completion);
            }
            Reply::Agent(trajectories) => {
                let finishes = trajectories
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        let mut f = response::finish(i, agent::finish_reason(t));
                        f["pixel_trace"] = agent::trace_json(t);
                        f
                    })
                    .collect();
                self.out.push_back(data(&response::chunk(meta, finishes)));
                let (prompt, completion) = agent::usage(&trajectories);
                self.end(prompt, completion);
            }
            Reply::Failed(error) => {
                self.admission.fail(&error);
                self.out.push_back(data(&error.body()));
                self.out.push_back(Event::default().data("[DONE]"));
                self.done = true;
            }
        }
    }

    fn end(&mut self, prompt: usize, completion: usize) {
        if self.ctx.include_usage {
            let usage = response::usage_json(prompt, completion);
            self.out
                .push_back(data(&response::usage_chunk(&self.ctx.meta, usage)));
        }
        self.out.push_back(Event::default().data("[DONE]"));
        self.admission.complete();
        self.done = true;
    }
}

/// The answer as server-sent events. Dropping the stream (the client went away) drops the reply channel,
/// which stops the job.
pub(crate) fn events(
    ctx: Context,
    replies: Replies,
    admission: Admission,
    keep_alive: Duration,
) -> impl IntoResponse {
    let mut out = VecDeque::new();
    let roles: Vec<Value> = (0..ctx.n)
        .map(|i| response::delta(i, json!({"role": "assistant", "content": ""}), &[]))
        .collect();
    out.push_back(data(&response::chunk(&ctx.meta, roles)));
    let state = StreamState {
        ctx,
        replies,
        admission,
        out,
        done: false,
    };
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(event) = state.out.pop_front() {
                return Some((Ok::<Event, Infallible>(event), state));
            }
            if state.done {
                return None;
            }
            let reply = next(&state.ctx, &mut state.replies).await;
            state.push(reply);
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(keep_alive))
}
