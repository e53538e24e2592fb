//! SFT examples from traces, and the SFT loss.
//!
//! A [`pixel_traces::Trace`] is rendered once with the checkpoint's chat template (the tool set's system
//! prompt first), its image placeholders expanded, and tokenized once; each token's loss flag comes from the
//! byte range it starts in:
//!
//! - [`MaskRule::Paper`] (default): exactly the trained spans of assistant messages (the model's own
//!   reasoning and its correct calls; observations, prompts and the deliberately wrong calls of
//!   self-correction traces are not trained), plus the `<|im_end|>` that closes an assistant message whose
//!   last span is trained (the model must learn to stop).
//! - [`MaskRule::ReleasedLastTwoTurns`]: the released SFT code's rule (`create_assistant_response_mask`):
//!   the last two assistant messages, each from its `<|im_start|>assistant\n` header through its
//!   `<|im_end|>`, whatever their spans say.
//!
//! The loss is the negative log-likelihood of the flagged tokens, summed and divided by the number of
//! flagged tokens of the whole mini-batch (passed in, so that gradient accumulation over micro-batches gives
//! the one-shot gradient).

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use image::RgbImage;
use pixel_ops::{ToolSet, Video};
use pixel_traces::official::Role;
use pixel_traces::{Trace, TracePart};
use pixel_vlm::chat_template::RenderOptions;
use pixel_vlm::processor::Processor;
use pixel_vlm::rope_index::get_rope_index;
use pixel_vlm::train::Targets;
use pixel_vlm::{ForwardInput, Qwen25Vl, VisualInput, VlmError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Which tokens of a trace the SFT loss covers (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskRule {
    /// The trace's trained spans and the `<|im_end|>` closing them (the paper).
    #[default]
    Paper,
    /// The last two assistant messages with their role headers (the released code).
    ReleasedLastTwoTurns,
}

/// Frames per second assumed for a trace's video given as frame files (the official data samples 2 fps).
pub const TRACE_VIDEO_FPS: f64 = 2.0;

/// One tokenized training example.
#[derive(Debug, Clone)]
pub struct SftExample {
    /// The trace's id.
    pub id: String,
    /// Token ids of the whole rendered conversation.
    pub token_ids: Vec<u32>,
    /// True for the tokens the loss covers.
    pub loss_mask: Vec<bool>,
    /// M-RoPE positions `[3][len]` (`get_rope_index` over the whole sequence).
    pub positions: [Vec<i64>; 3],
    /// Image patches in order of appearance.
    pub images: VisualInput,
    /// Video patches in order of appearance.
    pub videos: VisualInput,
}

impl SftExample {
    /// Tokens.
    pub fn len(&self) -> usize {
        self.token_ids.len()
    }

    /// Whether the example has no tokens.
    pub fn is_empty(&self) -> bool {
        self.token_ids.is_empty()
    }

    /// Tokens the loss covers.
    pub fn trained_tokens(&self) -> usize {
        self.loss_mask.iter().filter(|&&m| m).count()
    }
}

/// Why an example could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SftError {
    /// The model, processor or tokenizer failed.
    #[error(transparent)]
    Vlm(#[from] VlmError),
    /// A video of the trace could not be assembled.
    #[error(transparent)]
    Ops(#[from] pixel_ops::Error),
    /// The trace is not usable (unknown tool set, structure, a span not found in the render).
    #[error("trace {id}: {reason}")]
    Trace {
        /// The trace's id.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// A batch was empty or its parts inconsistent.
    #[error("batch: {0}")]
    Batch(String),
}

fn tool_set(name: &str) -> Option<ToolSet> {
    match name {
        pixel_traces::trace::PIXEL_REASONER_TOOLS => Some(ToolSet::PixelReasoner),
        "deepeyes" => Some(ToolSet::DeepEyes),
        _ => None,
    }
}

/// Tokenizes `trace` under `rule`; `image` loads a media path of the trace (from a dataset root, or from
/// memory for synthesized traces).
///
/// # Errors
/// [`SftError::Trace`] for an unknown tool set or a span the render does not contain; the processor's
/// errors; the loader's errors as [`SftError::Trace`].
pub fn build_example(
    processor: &Processor,
    trace: &Trace,
    rule: MaskRule,
    image: &dyn Fn(&str) -> Result<RgbImage, String>,
) -> Result<SftExample, SftError> {
    build_example_with_system(processor, trace, rule, None, image)
}

/// [`build_example`] with the system prompt given: `None` is the tool set's official prompt (what
/// [`build_example`] uses); `Some(text)` must be the prompt the policy will later be rolled out with
/// (`pixel_agent::RolloutConfig::system`).
///
/// # Errors
/// As [`build_example`].
pub fn build_example_with_system(
    processor: &Processor,
    trace: &Trace,
    rule: MaskRule,
    system: Option<&str>,
    image: &dyn Fn(&str) -> Result<RgbImage, String>,
) -> Result<SftExample, SftError> {
    let bad = |reason: String| SftError::Trace {
        id: trace.id.clone(),
        reason,
    };
    let tools =
        tool_set(&trace.tools).ok_or_else(|| bad(format!("unknown tool set {:?}", trace.tools)))?;
    let system = system.map_or_else(|| tools.system_prompt(), str::to_owned);
    let mut messages = vec![json!({"role": "system", "content": system})];
    let mut images = Vec::new();
    let mut videos = Vec::new();
    for message in &trace.messages {
        let role = match message.role {
            Role::User => "user",
            Role::Assistant => "assistant",
            other => return Err(bad(format!("a {other:?} message"))),
        };
        if message.role == Role::Assistant {
            messages.push(json!({"role": role, "content": message.text()}));
            continue;
        }
        let mut content: Vec<Value> = Vec::new();
        for part in &message.content {
            match part {
                TracePart::Text { text, .. } => content.push(json!({"type": "text", "text": text})),
                TracePart::Image { image: path } => {
                    images.push(
                        processor
                            .image_processor
                            .fit(&image(path).map_err(&bad)?)?
                            .into_owned(),
                    );
                    content.push(json!({"type": "image"}));
                }
                TracePart::Video { video } => {
                    let frames = video
                        .iter()
                        .map(|p| image(p))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(&bad)?;
                    videos.push(Video::from_frames(frames, TRACE_VIDEO_FPS)?);
                    content.push(json!({"type": "video"}));
                }
            }
        }
        messages.push(json!({"role": role, "content": content}));
    }
    let text = processor.apply_chat_template(&messages, &RenderOptions::default())?;
    // The conversation ends at the last assistant message's <|im_end|>.
    let text = text.trim_end_matches('\n');
    let output = processor.process(text, &images, &videos)?;
    let expanded = expanded_text(processor, text, &output)?;
    let ranges = trained_ranges(trace, &expanded, rule).map_err(bad)?;
    let encoding = processor
        .tokenizer
        .inner()
        .encode(expanded.as_str(), false)
        .map_err(|e| bad(format!("tokenizer: {e}")))?;
    if encoding.get_ids() != output.input_ids.as_slice() {
        return Err(bad(
            "tokenizing with offsets gave other ids than the processor".into(),
        ));
    }
    let loss_mask: Vec<bool> = encoding
        .get_offsets()
        .iter()
        .map(|&(start, _)| ranges.iter().any(|r| r.contains(&start)))
        .collect();
    let rope = get_rope_index(
        &processor.rope_config(),
        &output.input_ids,
        &output.images.grid_thw,
        &output.videos.grid_thw,
        &output.second_per_grid_ts,
    )?;
    Ok(SftExample {
        id: trace.id.clone(),
        positions: std::array::from_fn(|axis| rope.axis(axis).to_vec()),
        token_ids: output.input_ids,
        loss_mask,
        images: VisualInput {
            pixel_values: output.images.pixel_values,
            grid_thw: output.images.grid_thw,
        },
        videos: VisualInput {
            pixel_values: output.videos.pixel_values,
            grid_thw: output.videos.grid_thw,
        },
    })
}

/// `text` with each image/video placeholder expanded to its pad tokens, as the processor tokenized it.
fn expanded_text(
    processor: &Processor,
    text: &str,
    output: &pixel_vlm::processor::ProcessorOutput,
) -> Result<String, VlmError> {
    let mi = processor.image_processor.config().merge_size;
    let mv = processor.video_processor.config().merge_size;
    let image_tokens: Vec<usize> = (0..output.images.grid_thw.len())
        .map(|i| output.images.tokens_of(i, mi))
        .collect();
    let video_tokens: Vec<usize> = (0..output.videos.grid_thw.len())
        .map(|i| output.videos.tokens_of(i, mv))
        .collect();
    processor.expand_placeholders(text, &image_tokens, &video_tokens)
}

/// Byte ranges of `text` the rule trains.
fn trained_ranges(
    trace: &Trace,
    text: &str,
    rule: MaskRule,
) -> Result<Vec<std::ops::Range<usize>>, String> {
    const HEADER: &str = "<|im_start|>assistant\n";
    const END: &str = "<|im_end|>";
    let mut ranges = Vec::new();
    // (header start, content start, end of <|im_end|>) of every assistant message, in order.
    let mut turns = Vec::new();
    let mut cursor = 0;
    for message in trace.messages.iter().filter(|m| m.role == Role::Assistant) {
        let header = text[cursor..]
            .find(HEADER)
            .map(|i| cursor + i)
            .ok_or("an assistant header is missing from the render")?;
        let content_start = header + HEADER.len();
        let content = message.text();
        if !text[content_start..].starts_with(&content) {
            return Err("the template changed an assistant message's text".into());
        }
        let mut at = content_start;
        let mut last_trained = false;
        for part in &message.content {
            if let TracePart::Text { text: span, train } = part {
                if *train && rule == MaskRule::Paper && !span.is_empty() {
                    ranges.push(at..at + span.len());
                }
                last_trained = *train;
                at += span.len();
            }
        }
        if !text[at..].starts_with(END) {
            return Err("an assistant message is not closed by <|im_end|>".into());
        }
        if last_trained && rule == MaskRule::Paper {
            ranges.push(at..at + END.len());
        }
        turns.push((header, at + END.len()));
        cursor = at + END.len();
    }
    if rule == MaskRule::ReleasedLastTwoTurns {
        ranges.extend(turns.iter().rev().take(2).map(|&(start, end)| start..end));
    }
    Ok(ranges)
}

/// The SFT loss of a micro-batch: `−Σ log p(token)` over flagged tokens, divided by `normalizer` (the number
/// of flagged tokens of the whole mini-batch; for one micro-batch, its own count).
///
/// Rows are right-padded to the longest; position `i` predicts token `i + 1`.
///
/// # Errors
/// [`SftError::Batch`] for an empty batch or a normalizer of 0; the model's errors.
pub fn sft_loss<B: Backend>(
    model: &Qwen25Vl<B>,
    batch: &[&SftExample],
    normalizer: usize,
) -> Result<Tensor<B, 1>, SftError> {
    Ok(sft_loss_and_hidden(model, batch, normalizer)?.0)
}

/// [`sft_loss`] and the final hidden states it was computed from, `[rows, longest, hidden]` (row `r` holds
/// `batch[r]`'s tokens from position 0, right-padded): for auxiliary heads trained beside the SFT loss.
///
/// # Errors
/// As [`sft_loss`].
pub fn sft_loss_and_hidden<B: Backend>(
    model: &Qwen25Vl<B>,
    batch: &[&SftExample],
    normalizer: usize,
) -> Result<(Tensor<B, 1>, Tensor<B, 3>), SftError> {
    let batch = SftBatch::new(batch, normalizer)?;
    let hidden = model.forward_train(&batch.input())?;
    Ok((batch.loss(model, hidden.clone())?, hidden))
}

/// A micro-batch of [`SftExample`]s assembled for the model: right-padded rows, their positions, targets
/// and loss weights. [`sft_loss`] is `batch.loss(model, model.forward_train(&batch.input()))`; a trainer
/// that differentiates the decoder layer by layer (`Qwen25Vl::backward_recomputed`) hands
/// [`SftBatch::loss`] the final hidden states itself.
#[derive(Debug, Clone)]
pub struct SftBatch {
    rows: usize,
    len: usize,
    ids: Vec<u32>,
    valid: Vec<bool>,
    positions: Vec<i64>,
    targets: Vec<u32>,
    weights: Vec<f32>,
    images: VisualInput,
    videos: VisualInput,
    normalizer: usize,
}

impl SftBatch {
    /// Assembles `batch` (rows right-padded to the longest; position `i` predicts token `i + 1`) for a loss
    /// divided by `normalizer`.
    ///
    /// # Errors
    /// [`SftError::Batch`] for an empty batch, a normalizer of 0, or examples shorter than two tokens.
    pub fn new(batch: &[&SftExample], normalizer: usize) -> Result<Self, SftError> {
        if batch.is_empty() || normalizer == 0 {
            return Err(SftError::Batch(format!(
                "{} examples with a normalizer of {normalizer}",
                batch.len()
            )));
        }
        let b = batch.len();
        let s = batch.iter().map(|e| e.len()).max().unwrap_or(0);
        if s < 2 {
            return Err(SftError::Batch("examples need at least two tokens".into()));
        }
        let mut out = Self {
            rows: b,
            len: s,
            ids: vec![0u32; b * s],
            valid: vec![false; b * s],
            positions: vec![0i64; 3 * b * s],
            targets: vec![0u32; b * s],
            weights: vec![0f32; b * s],
            images: VisualInput::default(),
            videos: VisualInput::default(),
            normalizer,
        };
        for (row, e) in batch.iter().enumerate() {
            let n = e.len();
            out.ids[row * s..row * s + n].copy_from_slice(&e.token_ids);
            out.valid[row * s..row * s + n]
                .iter_mut()
                .for_each(|v| *v = true);
            for axis in 0..3 {
                let start = (axis * b + row) * s;
                out.positions[start..start + n].copy_from_slice(&e.positions[axis]);
            }
            for i in 0..n.saturating_sub(1) {
                out.targets[row * s + i] = e.token_ids[i + 1];
                out.weights[row * s + i] = f32::from(u8::from(e.loss_mask[i + 1]));
            }
            out.images.extend(&e.images);
            out.videos.extend(&e.videos);
        }
        Ok(out)
    }

    /// The model's input for this batch.
    pub fn input(&self) -> ForwardInput<'_> {
        ForwardInput {
            input_ids: &self.ids,
            batch: self.rows,
            positions: &self.positions,
            valid: Some(&self.valid),
            generated: None,
            images: (!self.images.grid_thw.is_empty()).then_some(&self.images),
            videos: (!self.videos.grid_thw.is_empty()).then_some(&self.videos),
        }
    }

    /// The loss (see [`sft_loss`]) from the final hidden states `[rows, longest, hidden]` of
    /// [`SftBatch::input`].
    ///
    /// # Errors
    /// The model's errors (hidden states of another shape).
    ///
    /// Only the trained positions (weight > 0) go through the language-model head: the others carry no
    /// loss, and the head's logits over the vocabulary are the largest tensor of a step (at 7B, 152k
    /// entries per position; in a trace most positions are the prompt, the images and the observations).
    pub fn loss<B: Backend>(
        &self,
        model: &Qwen25Vl<B>,
        hidden: Tensor<B, 3>,
    ) -> Result<Tensor<B, 1>, VlmError> {
        let [b, s, h] = hidden.dims();
        if (b, s) != (self.rows, self.len) {
            return Err(VlmError::Input {
                input: "hidden",
                reason: format!(
                    "[{b}, {s}, {h}] hidden states for a batch of {} x {}",
                    self.rows, self.len
                ),
            });
        }
        let device = model.device();
        let (mut at, mut targets, mut weights) = (Vec::new(), Vec::new(), Vec::new());
        for (i, &w) in self.weights.iter().enumerate() {
            if w > 0.0 {
                at.push(i as i64);
                targets.push(self.targets[i]);
                weights.push(w);
            }
        }
        let m = at.len();
        if m == 0 {
            // Nothing trained: a zero loss that still depends on `hidden` (a backward pass stays valid).
            return Ok(hidden.sum().mul_scalar(0.0));
        }
        let at = Tensor::<B, 1, Int>::from_data(TensorData::new(at, [m]), &device);
        let trained = hidden.reshape([b * s, h]).select(0, at).reshape([1, m, h]);
        let scores = model.target_logprobs(trained, &Targets::new(&targets))?;
        let weights = Tensor::<B, 2>::from_data(TensorData::new(weights, [1, m]), &device);
        Ok((scores.logprobs * weights).sum().neg() / self.normalizer as f64)
    }
}
