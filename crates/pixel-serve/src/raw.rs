//! The raw model: one plain assistant turn for a conversation, as an OpenAI-compatible server (vLLM)
//! answers it. The conversation is rendered with the checkpoint's chat template and tokenized whole every
//! request (the client holds the conversation, so the server re-tokenizes, as vLLM does). Requests are
//! prepared on the HTTP side ([`prepare`]) and generated together on the model worker ([`run_batch`]):
//! each choice is one row of a batched KV-cache session, left-padded, sampled with its own sampler, and
//! checked every few tokens for its client, its deadline and its stop strings.

use burn::tensor::backend::Backend;
use image::RgbImage;
use pixel_vlm::Qwen25Vl;
use pixel_vlm::VisualInput;
use pixel_vlm::chat_template::RenderOptions;
use pixel_vlm::generation::{FinishReason, GenerationConfig, SegmentInput, Session};
use pixel_vlm::processor::Processor;
use pixel_vlm::rope_index::{RopeIndexConfig, get_rope_index};
use pixel_vlm::sampling::{Sampler, SamplingParams};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::queue::{Job, RawChoice, RawWork, Reply, TokenLogprob, Work};
use crate::request::{ChatRequest, Message, Role};
use crate::stats::Stats;
use crate::text_stream::TextStream;

/// A message's content as the chat template receives it: one text part as a string, else a list of
/// `{"type": "text"}` and `{"type": "image"}` parts.
pub(crate) enum TemplatePart<'a> {
    Text(&'a str),
    Image,
}

/// A message as the chat template receives it.
pub(crate) fn template_message(role: Role, parts: &[TemplatePart<'_>]) -> Value {
    let content = match parts {
        [TemplatePart::Text(t)] => json!(t),
        _ => Value::Array(
            parts
                .iter()
                .map(|p| match p {
                    TemplatePart::Text(t) => json!({"type": "text", "text": t}),
                    TemplatePart::Image => json!({"type": "image"}),
                })
                .collect(),
        ),
    };
    json!({"role": role.as_str(), "content": content})
}

/// Renders, tokenizes and preprocesses a raw request (its images already loaded, in order) and checks
/// that its prompt plus `max_tokens` fits in `context` tokens.
///
/// # Errors
/// 400 when the template cannot render the conversation, an image cannot be processed, or the prompt is
/// too long (`context_length_exceeded`).
pub(crate) fn prepare(
    processor: &Processor,
    rope: &RopeIndexConfig,
    request: &ChatRequest,
    images: Vec<RgbImage>,
    context: usize,
    seed: u64,
) -> Result<RawWork, ApiError> {
    let messages: Vec<Value> = request
        .messages
        .iter()
        .map(|m: &Message| {
            let parts: Vec<TemplatePart<'_>> = m
                .parts
                .iter()
                .map(|p| match p {
                    crate::request::PartSource::Text(t) => TemplatePart::Text(t),
                    crate::request::PartSource::Image { .. } => TemplatePart::Image,
                })
                .collect();
            template_message(m.role, &parts)
        })
        .collect();
    let text = processor
        .apply_chat_template(&messages, &RenderOptions::generation())
        .map_err(|e| ApiError::invalid("messages", format!("the chat template failed: {e}")))?;
    let output = processor
        .process(&text, &images, &[])
        .map_err(|e| ApiError::invalid("messages", format!("cannot process the input: {e}")))?;
    let prompt = output.input_ids.len();
    if prompt + request.max_tokens > context {
        return Err(ApiError::invalid(
            "messages",
            format!(
                "the prompt has {prompt} tokens; with max_tokens {} that is over the context of \
                 {context} tokens",
                request.max_tokens
            ),
        )
        .with_code("context_length_exceeded"));
    }
    let index = get_rope_index(
        rope,
        &output.input_ids,
        &output.images.grid_thw,
        &output.videos.grid_thw,
        &output.second_per_grid_ts,
    )
    .map_err(|e| ApiError::invalid("messages", format!("cannot position the input: {e}")))?;
    let positions = std::array::from_fn(|axis| index.axis(axis).to_vec());
    Ok(RawWork {
        output,
        positions,
        n: request.n,
        max_tokens: request.max_tokens,
        // OpenAI's default when no sampling field is given: temperature 1, no truncation.
        sampling: request
            .sampling
            .unwrap_or(SamplingParams::with_temperature(1.0)),
        seed,
        logprobs: request.logprobs,
        stop: request.stop.clone(),
        stream: request.stream,
    })
}

/// Tokens of a raw job's prompt.
pub(crate) fn prompt_len(job: &Job) -> usize {
    match &job.work {
        Work::Raw(w) => w.output.input_ids.len(),
        Work::Agent(_) => 0,
    }
}

/// Tokens a session running these raw jobs together must hold: the longest prompt (rows are
/// left-padded to it), the largest `max_tokens`, and the last sampled token.
pub(crate) fn capacity_for(jobs: &[&Job]) -> usize {
    let prompt = jobs.iter().map(|j| prompt_len(j)).max().unwrap_or(0);
    let new = jobs
        .iter()
        .map(|j| match &j.work {
            Work::Raw(w) => w.max_tokens,
            Work::Agent(_) => 0,
        })
        .max()
        .unwrap_or(0);
    prompt + new + 1
}

/// How a job of a batch ended, when it did not end with an answer.
#[derive(Debug)]
pub(crate) enum Stopped {
    /// Nobody waits for it (client gone or handler timed out).
    Abandoned,
    /// Its deadline passed.
    Expired,
}

/// One row of the batch.
struct Row<'t> {
    job: usize,
    choice: usize,
    max_tokens: usize,
    tokens: usize,
    text: TextStream<'t>,
    logprobs: Vec<TokenLogprob>,
    /// Log-probs not yet sent with a streamed piece.
    unsent: usize,
    finish: Option<&'static str>,
}

/// What a job of a batch has received so far: streamed text, its answer.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Progress {
    /// Some streamed text was sent (retrying the job would repeat it).
    pub sent: bool,
    /// The answer was sent.
    pub answered: bool,
}

/// Generates every raw job of `jobs` together and replies to each (streamed pieces while it runs, then
/// its answer), recording in `progress` (one per job) what each received. A job whose client went away
/// or whose deadline passed is dropped from the batch at the next check; the others go on.
///
/// # Errors
/// The model's error for the whole batch; `progress` tells which jobs can still be retried.
pub(crate) fn run_batch<B: Backend>(
    model: &Qwen25Vl<B>,
    processor: &Processor,
    jobs: &[&Job],
    check_every: usize,
    stats: &Stats,
    progress: &mut [Progress],
) -> Result<Vec<Option<Stopped>>, String> {
    let works: Vec<&RawWork> = jobs
        .iter()
        .map(|j| match &j.work {
            Work::Raw(w) => Ok(w),
            Work::Agent(_) => Err("an agent job in a raw batch".to_owned()),
        })
        .collect::<Result<_, _>>()?;
    let tokenizer = &processor.tokenizer;
    let stop_ids = tokenizer.special().stop_tokens().to_vec();
    let mut rows: Vec<Row<'_>> = Vec::new();
    let mut segments = Vec::new();
    let mut samplers = Vec::new();
    for (j, work) in works.iter().enumerate() {
        let visual = (!work.output.images.grid_thw.is_empty()).then(|| VisualInput {
            pixel_values: work.output.images.pixel_values.clone(),
            grid_thw: work.output.images.grid_thw.clone(),
        });
        let segment = SegmentInput {
            input_ids: work.output.input_ids.clone(),
            positions: Some(work.positions.concat()),
            images: visual,
            videos: None,
        };
        for choice in 0..work.n {
            let sampler = Sampler::for_sequence(work.sampling, work.seed, choice as u64)
                .map_err(|e| format!("sampler: {e}"))?;
            samplers.push(sampler);
            segments.push(segment.clone());
            rows.push(Row {
                job: j,
                choice,
                max_tokens: work.max_tokens,
                tokens: 0,
                text: TextStream::new(tokenizer, &work.stop),
                logprobs: Vec::new(),
                unsent: 0,
                finish: None,
            });
        }
    }
    stats.record_batch(rows.len());
    let model_error = |e: pixel_vlm::VlmError| e.to_string();
    let mut session = Session::new(model, rows.len(), capacity_for(jobs)).map_err(model_error)?;
    session.append(&segments).map_err(model_error)?;
    drop(segments);

    let mut stopped: Vec<Option<Stopped>> = jobs.iter().map(|_| None).collect();
    loop {
        for (j, job) in jobs.iter().enumerate() {
            if stopped[j].is_none() && rows.iter().any(|r| r.job == j && r.finish.is_none()) {
                if job.abandoned() {
                    stopped[j] = Some(Stopped::Abandoned);
                } else if job.expired() {
                    stopped[j] = Some(Stopped::Expired);
                }
            }
        }
        let active: Vec<bool> = rows
            .iter()
            .map(|r| r.finish.is_none() && stopped[r.job].is_none())
            .collect();
        if !active.iter().any(|&a| a) {
            break;
        }
        let chunk = rows
            .iter()
            .zip(&active)
            .filter(|(_, a)| **a)
            .map(|(r, _)| r.max_tokens - r.tokens)
            .min()
            .unwrap_or(1)
            .clamp(1, check_every);
        let config = GenerationConfig {
            max_new_tokens: chunk,
            stop_token_ids: stop_ids.clone(),
            stop_strings: Vec::new(),
        };
        let outputs = session
            .generate_rows(
                &config,
                &active,
                &mut samplers,
                None,
                |row, token, logprob| {
                    let r = &mut rows[row];
                    if r.text.stopped() {
                        return;
                    }
                    r.tokens += 1;
                    if stop_ids.contains(&token) {
                        return;
                    }
                    let piece = r.text.push(token);
                    if works[r.job].logprobs {
                        r.logprobs.push(TokenLogprob {
                            token: tokenizer.decode(&[token], false).unwrap_or_default(),
                            logprob,
                        });
                    }
                    if works[r.job].stream && (!piece.is_empty() || r.text.stopped()) {
                        let logprobs = r.logprobs[r.unsent..].to_vec();
                        r.unsent = r.logprobs.len();
                        progress[r.job].sent = true;
                        jobs[r.job].send(Reply::Delta {
                            choice: r.choice,
                            text: piece,
                            logprobs,
                        });
                    }
                },
            )
            .map_err(model_error)?;
        let sampled: usize = outputs.iter().map(|o| o.tokens.len()).sum();
        Stats::add(&stats.generated_tokens, sampled as u64);
        let mut continuing = vec![false; rows.len()];
        for (i, (row, output)) in rows.iter_mut().zip(&outputs).enumerate() {
            if !active[i] {
                continue;
            }
            row.finish =
                if matches!(output.finish, FinishReason::StopToken(_)) || row.text.stopped() {
                    Some("stop")
                } else if row.tokens >= row.max_tokens || output.tokens.len() < chunk {
                    Some("length")
                } else {
                    continuing[i] = true;
                    None
                };
        }
        if continuing.iter().any(|&c| c) {
            // Feed each continuing row its last sampled token (an empty segment: the pending token goes first).
            let empty = SegmentInput::default();
            let feed: Vec<Option<&SegmentInput>> =
                continuing.iter().map(|&c| c.then_some(&empty)).collect();
            session.append_rows(&feed).map_err(model_error)?;
        }
        // Jobs whose rows are all done get their answers now, not at the end of the batch.
        for (j, job) in jobs.iter().enumerate() {
            let done = rows
                .iter()
                .filter(|r| r.job == j)
                .all(|r| r.finish.is_some());
            if stopped[j].is_none() && done && !progress[j].answered {
                progress[j] = Progress {
                    sent: true,
                    answered: true,
                };
                reply(job, works[j], &mut rows, j);
            }
        }
    }
    Ok(stopped)
}

/// Sends job `j` its last pieces and its answer, and marks its rows as answered.
fn reply(job: &Job, work: &RawWork, rows: &mut [Row<'_>], j: usize) {
    let mut choices = Vec::with_capacity(work.n);
    for row in rows.iter_mut().filter(|r| r.job == j) {
        let rest = row.text.finish();
        if work.stream && (!rest.is_empty() || row.unsent < row.logprobs.len()) {
            job.send(Reply::Delta {
                choice: row.choice,
                text: rest,
                logprobs: row.logprobs[row.unsent..].to_vec(),
            });
        }
        row.unsent = row.logprobs.len();
        choices.push(RawChoice {
            text: row.text.text().to_owned(),
            finish: row.finish.unwrap_or("length"),
            logprobs: std::mem::take(&mut row.logprobs),
            completion_tokens: row.tokens,
        });
    }
    job.send(Reply::Raw {
        choices,
        prompt_tokens: work.output.input_ids.len(),
    });
}
