//! The OpenAI response bodies: chat completions, stream chunks, usage, the model list.

use serde_json::{Value, json};

use crate::agent;
use crate::queue::{RawChoice, TokenLogprob};
use pixel_agent::Trajectory;

/// What every body of one request shares.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub id: String,
    pub created: u64,
    pub model: String,
}

fn logprobs_json(logprobs: &[TokenLogprob]) -> Value {
    let content: Vec<Value> = logprobs
        .iter()
        .map(|l| {
            json!({
                "token": l.token,
                "logprob": l.logprob,
                "bytes": l.token.as_bytes(),
                "top_logprobs": [],
            })
        })
        .collect();
    json!({ "content": content })
}

pub(crate) fn usage_json(prompt: usize, completion: usize) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

fn completion(meta: &Meta, choices: Vec<Value>, usage: Value) -> Value {
    json!({
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "choices": choices,
        "usage": usage,
    })
}

/// A raw request's answer.
pub(crate) fn raw_completion(
    meta: &Meta,
    choices: &[RawChoice],
    prompt_tokens: usize,
    logprobs: bool,
) -> Value {
    let completion_tokens = choices.iter().map(|c| c.completion_tokens).sum();
    let choices = choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({
                "index": i,
                "message": {"role": "assistant", "content": c.text},
                "logprobs": if logprobs { logprobs_json(&c.logprobs) } else { Value::Null },
                "finish_reason": c.finish,
            })
        })
        .collect();
    completion(meta, choices, usage_json(prompt_tokens, completion_tokens))
}

/// An agent request's answer: the trace as text in `content`, the structured trace in `pixel_trace`.
pub(crate) fn agent_completion(meta: &Meta, trajectories: &[Trajectory]) -> Value {
    let (prompt, completion_tokens) = agent::usage(trajectories);
    let choices = trajectories
        .iter()
        .enumerate()
        .map(|(i, t)| {
            json!({
                "index": i,
                "message": {"role": "assistant", "content": agent::transcript(t)},
                "logprobs": Value::Null,
                "finish_reason": agent::finish_reason(t),
                "pixel_trace": agent::trace_json(t),
            })
        })
        .collect();
    completion(meta, choices, usage_json(prompt, completion_tokens))
}

/// A stream chunk holding `choices`.
pub(crate) fn chunk(meta: &Meta, choices: Vec<Value>) -> Value {
    json!({
        "id": meta.id,
        "object": "chat.completion.chunk",
        "created": meta.created,
        "model": meta.model,
        "choices": choices,
    })
}

/// A chunk choice carrying `delta`.
pub(crate) fn delta(index: usize, delta: Value, logprobs: &[TokenLogprob]) -> Value {
    json!({
        "index": index,
        "delta": delta,
        "logprobs": if logprobs.is_empty() { Value::Null } else { logprobs_json(logprobs) },
        "finish_reason": Value::Null,
    })
}

/// A chunk choice that ends choice `index`.
pub(crate) fn finish(index: usize, reason: &str) -> Value {
    json!({
        "index": index,
        "delta": {},
        "logprobs": Value::Null,
        "finish_reason": reason,
    })
}

/// The last chunk when `stream_options.include_usage` is set: no choices, the usage.
pub(crate) fn usage_chunk(meta: &Meta, usage: Value) -> Value {
    let mut c = chunk(meta, Vec::new());
    c["usage"] = usage;
    c
}

/// One entry of `/v1/models`.
pub(crate) fn model_entry(id: &str, created: u64, context: usize, runs_loop: bool) -> Value {
    json!({
        "id": id,
        "object": "model",
        "created": created,
        "owned_by": "pixel-serve",
        "max_model_len": context,
        "pixel_agent_loop": runs_loop,
    })
}
