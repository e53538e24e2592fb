//! [`LocalEngine`]: a `pixel-vlm` model in process, token-exact.
//!
//! The group's prompt is rendered with the checkpoint's chat template, tokenized once, prefilled once
//! (its images encoded once) and then forked into one KV-cache row per rollout. Each later user turn is
//! the difference between two renders of the conversation (with and without the new turn), which starts
//! right after the `<|im_end|>` the model sampled: it is tokenized alone and appended. Because a turn always
//! starts after a special token, this is the tokenization of the whole rendered conversation at that
//! point, and no earlier turn is ever re-tokenized.
//!
//! M-RoPE positions of a new turn are `get_rope_index` of the turn alone, shifted to start after the row's
//! largest position so far: the rule `get_rope_index` applies to every segment of a whole sequence. Text
//! the model sampled gets consecutive positions, as in generation.

use burn::tensor::backend::Backend;
use image::RgbImage;
use pixel_ops::Video;
use pixel_vlm::chat_template::RenderOptions;
use pixel_vlm::generation::{FinishReason, GenerationConfig, SegmentInput, Session};
use pixel_vlm::processor::{Patches, Processor, ProcessorOutput};
use pixel_vlm::rope_index::{RopeIndexConfig, get_rope_index};
use pixel_vlm::sampling::Sampler;
use pixel_vlm::{KvCache, Qwen25Vl, VisualInput};
use serde_json::Value;

use crate::conversation::{UserTurn, assistant_json, system_json};
use crate::engine::{Engine, Generated, TurnEnd, TurnSampling};
use crate::error::{AgentError, Result};
use crate::trajectory::{TokenRecord, VisualKind, VisualSpan};

/// The conversation state of one row.
#[derive(Debug, Clone, Default)]
struct Row {
    /// The messages so far, as the chat template receives them.
    messages: Vec<Value>,
    /// Exactly what the model saw.
    record: TokenRecord,
    /// The assistant turn to be given its text once sampled.
    forced: Option<Vec<u32>>,
}

/// A user turn tokenized and preprocessed for one row (see [`Engine::prepare`]).
#[derive(Debug, Clone)]
pub struct PreparedTurn {
    row: usize,
    message: Value,
    output: ProcessorOutput,
}

impl PreparedTurn {
    /// The turn's token ids, pads expanded.
    pub fn token_ids(&self) -> &[u32] {
        &self.output.input_ids
    }
}

/// A `pixel-vlm` model run in process (see the module docs). Token-exact.
pub struct LocalEngine<'m, B: Backend> {
    model: &'m Qwen25Vl<B>,
    processor: &'m Processor,
    capacity: usize,
    rope: RopeIndexConfig,
    session: Option<Session<'m, B>>,
    rows: Vec<Row>,
}

impl<'m, B: Backend> LocalEngine<'m, B> {
    /// An engine on `model` with its checkpoint's `processor`; each row holds up to `capacity` tokens
    /// (prompt, turns and observations: the official budget is 12,088 + one turn's 2,048). The KV cache is
    /// allocated as the rows grow, not at `capacity`.
    pub fn new(model: &'m Qwen25Vl<B>, processor: &'m Processor, capacity: usize) -> Self {
        let mut rope = processor.rope_config();
        rope.tokens_per_second = model.config.vision.tokens_per_second as f32;
        Self {
            model,
            processor,
            capacity,
            rope,
            session: None,
            rows: Vec::new(),
        }
    }

    /// The M-RoPE settings in use.
    pub fn rope_config(&self) -> &RopeIndexConfig {
        &self.rope
    }

    /// The open group's KV cache (`None` before [`Engine::open`]). Its capacity is the engine's; it is
    /// allocated as the rows grow ([`KvCache::allocated`]), so a capacity sized to the episode budget costs
    /// only what the rollouts use.
    pub fn cache(&self) -> Option<&KvCache<B>> {
        self.session.as_ref().map(Session::cache)
    }

    /// Makes `row`'s next turn emit `tokens` instead of sampling (teacher forcing: replaying a known turn,
    /// scripted policies in tests). Each token is recorded with its log-probability under the turn's
    /// sampling settings.
    ///
    /// # Errors
    /// [`AgentError::Request`] if `row` is not a row of the open group.
    pub fn force_next_turn(&mut self, row: usize, tokens: Vec<u32>) -> Result<()> {
        let n = self.rows.len();
        let state = self
            .rows
            .get_mut(row)
            .ok_or_else(|| AgentError::Request(format!("row {row} of {n}")))?;
        state.forced = Some(tokens);
        Ok(())
    }

    fn render(&self, messages: &[Value], generation: bool) -> Result<String> {
        let options = if generation {
            RenderOptions::generation()
        } else {
            RenderOptions::default()
        };
        Ok(self.processor.apply_chat_template(messages, &options)?)
    }

    fn process(&self, text: &str, turn: &UserTurn) -> Result<ProcessorOutput> {
        let images: Vec<RgbImage> = turn.images().cloned().collect();
        let videos: Vec<Video> = turn.videos().cloned().collect();
        Ok(self.processor.process(text, &images, &videos)?)
    }

    /// Positions of `output`'s tokens when they follow a sequence whose largest position is `last`.
    fn positions(&self, output: &ProcessorOutput, last: Option<i64>) -> Result<[Vec<i64>; 3]> {
        let rope = get_rope_index(
            &self.rope,
            &output.input_ids,
            &output.images.grid_thw,
            &output.videos.grid_thw,
            &output.second_per_grid_ts,
        )?;
        let shift = last.map_or(0, |l| l + 1);
        Ok(std::array::from_fn(|axis| {
            rope.axis(axis).iter().map(|p| p + shift).collect()
        }))
    }

    /// Appends `output` (not sampled) to a record, with its positions and visual spans.
    fn extend_record(
        &self,
        record: &mut TokenRecord,
        output: &ProcessorOutput,
        positions: &[Vec<i64>; 3],
    ) {
        let start = record.token_ids.len();
        record.visuals.extend(visual_spans(
            &output.input_ids,
            start,
            self.rope.image_token_id,
            &output.images.grid_thw,
            VisualKind::Image,
            &[],
            self.rope.spatial_merge_size,
        ));
        record.visuals.extend(visual_spans(
            &output.input_ids,
            start,
            self.rope.video_token_id,
            &output.videos.grid_thw,
            VisualKind::Video,
            &output.second_per_grid_ts,
            self.rope.spatial_merge_size,
        ));
        record.visuals.sort_by_key(|v| v.start);
        let n = output.input_ids.len();
        record.token_ids.extend_from_slice(&output.input_ids);
        record.loss_mask.extend(std::iter::repeat_n(false, n));
        record.logprobs.extend(std::iter::repeat_n(0.0, n));
        for (axis, p) in positions.iter().enumerate() {
            record.positions[axis].extend_from_slice(p);
        }
    }

    fn segment(output: &ProcessorOutput, positions: &[Vec<i64>; 3]) -> SegmentInput {
        let visual = |p: &Patches| {
            (!p.grid_thw.is_empty()).then(|| VisualInput {
                pixel_values: p.pixel_values.clone(),
                grid_thw: p.grid_thw.clone(),
            })
        };
        SegmentInput {
            input_ids: output.input_ids.clone(),
            positions: Some(positions.concat()),
            images: visual(&output.images),
            videos: visual(&output.videos),
        }
    }

    fn session(&mut self) -> Result<&mut Session<'m, B>> {
        self.session
            .as_mut()
            .ok_or_else(|| AgentError::Request("no open group: call open first".into()))
    }
}

/// The spans of `grids` in `ids` (each a run of `pad` tokens), offset by `start`.
fn visual_spans(
    ids: &[u32],
    start: usize,
    pad: u32,
    grids: &[[usize; 3]],
    kind: VisualKind,
    second_per_grid_ts: &[f32],
    merge: usize,
) -> Vec<VisualSpan> {
    let mut spans = Vec::with_capacity(grids.len());
    let mut i = 0;
    for (k, grid) in grids.iter().enumerate() {
        while i < ids.len() && ids[i] != pad {
            i += 1;
        }
        let len = grid[0] * grid[1] * grid[2] / (merge * merge).max(1);
        spans.push(VisualSpan {
            kind,
            start: start + i,
            len,
            grid_thw: *grid,
            second_per_grid_t: second_per_grid_ts.get(k).copied().unwrap_or(0.0),
        });
        i += len;
    }
    spans
}

fn last_position(record: &TokenRecord) -> Option<i64> {
    record
        .positions
        .iter()
        .filter_map(|p| p.iter().max())
        .max()
        .copied()
}

impl<B: Backend> Engine for LocalEngine<'_, B> {
    type Prepared = PreparedTurn;

    fn is_token_exact(&self) -> bool {
        true
    }

    fn model_view(&self, image: &RgbImage) -> Result<RgbImage> {
        Ok(self.processor.image_processor.fit(image)?.into_owned())
    }

    fn open(&mut self, system: &str, question: &UserTurn, rows: usize) -> Result<()> {
        if rows == 0 {
            return Err(AgentError::Request("a group needs at least one row".into()));
        }
        self.session = None;
        self.rows.clear();
        let messages = vec![system_json(system), question.to_template_json()];
        let text = self.render(&messages, true)?;
        let output = self.process(&text, question)?;
        if output.input_ids.len() >= self.capacity {
            return Err(AgentError::Request(format!(
                "the prompt has {} tokens, the engine's capacity is {}",
                output.input_ids.len(),
                self.capacity
            )));
        }
        let positions = self.positions(&output, None)?;
        let mut record = TokenRecord::default();
        self.extend_record(&mut record, &output, &positions);
        // Prefill once, then fork: the prompt's images are encoded once for the whole group.
        let mut session = Session::new(self.model, 1, self.capacity)?;
        session.append(&[Self::segment(&output, &positions)])?;
        let session = if rows > 1 {
            session.fork(0, rows)?
        } else {
            session
        };
        self.session = Some(session);
        self.rows = vec![
            Row {
                messages,
                record,
                forced: None,
            };
            rows
        ];
        Ok(())
    }

    fn rows(&self) -> usize {
        self.rows.len()
    }

    fn context_tokens(&self, row: usize) -> usize {
        self.rows.get(row).map_or(0, |r| r.record.len())
    }

    fn prepare(&self, row: usize, turn: &UserTurn) -> Result<PreparedTurn> {
        let state = self
            .rows
            .get(row)
            .ok_or_else(|| AgentError::Request(format!("row {row} of {}", self.rows.len())))?;
        let im_end = self.processor.tokenizer.special().im_end;
        if state.record.token_ids.last() != Some(&im_end) {
            return Err(AgentError::Request(format!(
                "row {row}: a user turn can only follow an assistant turn that ended with <|im_end|>"
            )));
        }
        let before = self.render(&state.messages, false)?;
        let mut messages = state.messages.clone();
        let message = turn.to_template_json();
        messages.push(message.clone());
        let after = self.render(&messages, true)?;
        const END: &str = "<|im_end|>";
        let cut = before
            .rfind(END)
            .map(|i| i + END.len())
            .filter(|_| after.starts_with(&before))
            .ok_or_else(|| {
                AgentError::Template(
                    "the conversation with the new turn does not extend the conversation before it \
                     after its last <|im_end|>"
                        .into(),
                )
            })?;
        let output = self.process(&after[cut..], turn)?;
        Ok(PreparedTurn {
            row,
            message,
            output,
        })
    }

    fn prepared_tokens(&self, prepared: &PreparedTurn) -> usize {
        prepared.output.input_ids.len()
    }

    fn append(&mut self, turns: Vec<Option<PreparedTurn>>) -> Result<()> {
        if turns.len() != self.rows.len() {
            return Err(AgentError::Request(format!(
                "{} turns for {} rows",
                turns.len(),
                self.rows.len()
            )));
        }
        let mut segments: Vec<Option<SegmentInput>> = Vec::with_capacity(turns.len());
        let mut updates = Vec::new();
        for (row, turn) in turns.into_iter().enumerate() {
            let Some(turn) = turn else {
                segments.push(None);
                continue;
            };
            if turn.row != row {
                return Err(AgentError::Request(format!(
                    "a turn prepared for row {} given to row {row}",
                    turn.row
                )));
            }
            let last = last_position(&self.rows[row].record);
            let positions = self.positions(&turn.output, last)?;
            segments.push(Some(Self::segment(&turn.output, &positions)));
            updates.push((row, turn, positions));
        }
        let refs: Vec<Option<&SegmentInput>> = segments.iter().map(Option::as_ref).collect();
        self.session()?.append_rows(&refs)?;
        for (row, turn, positions) in updates {
            let mut record = std::mem::take(&mut self.rows[row].record);
            self.extend_record(&mut record, &turn.output, &positions);
            let state = &mut self.rows[row];
            state.record = record;
            state.messages.push(turn.message);
        }
        Ok(())
    }

    fn generate(
        &mut self,
        active: &[bool],
        sampling: &TurnSampling,
    ) -> Result<Vec<Option<Generated>>> {
        let n = self.rows.len();
        if active.len() != n {
            return Err(AgentError::Request(format!(
                "{} flags for {n} rows",
                active.len()
            )));
        }
        let mut samplers = Vec::with_capacity(n);
        for (row, state) in self.rows.iter_mut().enumerate() {
            let sampler = match state.forced.take() {
                Some(tokens) => Sampler::scripted(sampling.params, tokens)?,
                None => Sampler::for_sequence(sampling.params, sampling.seed, row as u64)?,
            };
            samplers.push(sampler);
        }
        let special = *self.processor.tokenizer.special();
        let config = GenerationConfig {
            max_new_tokens: sampling.max_new_tokens,
            stop_token_ids: special.stop_tokens().to_vec(),
            stop_strings: Vec::new(),
        };
        let outputs =
            self.session()?
                .generate_rows(&config, active, &mut samplers, None, |_, _, _| {})?;
        let mut generated = Vec::with_capacity(n);
        for (row, output) in outputs.into_iter().enumerate() {
            if !active[row] {
                generated.push(None);
                continue;
            }
            let end = match output.finish {
                FinishReason::StopToken(id) if id == special.im_end => TurnEnd::Stop,
                FinishReason::StopToken(_) => TurnEnd::EndOfText,
                _ => TurnEnd::Length,
            };
            let body = match end {
                TurnEnd::Stop | TurnEnd::EndOfText => {
                    &output.tokens[..output.tokens.len().saturating_sub(1)]
                }
                TurnEnd::Length => &output.tokens[..],
            };
            // A model may sample an id its tokenizer lacks (Qwen's embedding has ~270 spare rows past
            // the tokenizer): it stays in the record, and the text leaves it out, as transformers' decode
            // does, so that a model's output never ends a rollout with an error.
            let tokenizer = &self.processor.tokenizer;
            let known: Vec<u32> = body
                .iter()
                .copied()
                .filter(|&id| tokenizer.id_to_token(id).is_some())
                .collect();
            let text = tokenizer.decode(&known, false)?;
            let state = &mut self.rows[row];
            let first = last_position(&state.record).map_or(0, |l| l + 1);
            let record = &mut state.record;
            for (i, (&token, &logprob)) in output.tokens.iter().zip(&output.logprobs).enumerate() {
                record.token_ids.push(token);
                record.loss_mask.push(true);
                record.logprobs.push(logprob);
                for axis in &mut record.positions {
                    axis.push(first + i as i64);
                }
            }
            state.messages.push(assistant_json(&text));
            generated.push(Some(Generated {
                text,
                tokens: output.tokens,
                logprobs: output.logprobs,
                end,
            }));
        }
        Ok(generated)
    }

    fn record(&self, row: usize) -> Option<TokenRecord> {
        self.rows.get(row).map(|r| r.record.clone())
    }
}
