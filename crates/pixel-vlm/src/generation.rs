//! Batched generation over a KV cache that grows with use, with multi-turn continuation.
//!
//! A [`Session`] owns the cache of `batch` rows. [`Session::append`] prefills new tokens (a prompt, or the
//! next user turn with its images) for every row at once, left-padding shorter rows; only the new part is
//! run. [`Session::generate`] then samples until each row hits a stop token, a stop string or the token
//! limit, streaming every token through a callback. Each sampled token is fed to the model lazily (at the
//! next step, or at the start of the next `append`), so a finished turn leaves nothing half-done.
//!
//! Sampled tokens are text: whatever the model samples (`<|image_pad|>`, `<|vision_start|>`, ...) is fed
//! back with its ordinary embedding row, as transformers does, and never ends generation with an error.
//! Placeholders are counted, and must match the images and videos, only in the input given to
//! [`Session::append`].
//!
//! Positions: new tokens of a row continue at that row's largest M-RoPE position + 1 (the `rope_deltas`
//! rule of transformers) unless the caller passes explicit positions (needed for segments with images or
//! videos, computed with `rope_index` over the whole sequence).

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::cache::KvCache;
use crate::error::{Result, VlmError};
use crate::model::{ForwardInput, Qwen25Vl, VisualInput};
use crate::sampling::Sampler;

/// Turns token ids into text (for stop strings).
pub type Detokenize<'a> = &'a dyn Fn(&[u32]) -> String;

/// New input for one row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SegmentInput {
    /// Token ids to append (may be empty: the row gets nothing new this time).
    pub input_ids: Vec<u32>,
    /// Explicit M-RoPE positions `[3, input_ids.len()]` (row-major); `None` continues text positions.
    /// They must not count a token still pending from the previous turn (see [`Session::pending`]),
    /// which is fed first at the next position.
    pub positions: Option<Vec<i64>>,
    /// Images whose pads appear in `input_ids`.
    pub images: Option<VisualInput>,
    /// Videos whose pads appear in `input_ids`.
    pub videos: Option<VisualInput>,
}

impl SegmentInput {
    /// Text-only input continuing the row's positions.
    pub fn text(input_ids: Vec<u32>) -> Self {
        Self {
            input_ids,
            ..Self::default()
        }
    }
}

/// When to stop a row.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GenerationConfig {
    /// Most tokens sampled per row in one [`Session::generate`] call.
    pub max_new_tokens: usize,
    /// Tokens that end a row (included in the output, like `<|im_end|>`).
    pub stop_token_ids: Vec<u32>,
    /// Strings that end a row once the decoded output ends with one (needs a detokenizer).
    pub stop_strings: Vec<String>,
}

/// Why a row stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token was sampled.
    StopToken(u32),
    /// The decoded output ended with this stop string.
    StopString(String),
    /// `max_new_tokens` was reached or the cache is full.
    Length,
}

/// The result of one [`Session::generate`] call for one row.
#[derive(Debug, Clone, PartialEq)]
pub struct RowOutput {
    /// Sampled tokens, the stop token included.
    pub tokens: Vec<u32>,
    /// Log-probability of each sampled token (see `sampling`).
    pub logprobs: Vec<f32>,
    /// Why the row stopped.
    pub finish: FinishReason,
}

/// A batch of sequences being generated, with their KV cache.
pub struct Session<'m, B: Backend> {
    model: &'m Qwen25Vl<B>,
    cache: KvCache<B>,
    /// Logits of the next token of each row, when the row has been run since its last sample.
    next_logits: Vec<Option<Vec<f32>>>,
    /// A sampled token not yet fed to the model, per row.
    pending: Vec<Option<u32>>,
    /// Every token of each row (fed or pending), in order.
    tokens: Vec<Vec<u32>>,
}

impl<'m, B: Backend> Session<'m, B> {
    /// A session of `batch` rows holding up to `capacity` tokens each, its KV cache within
    /// [`crate::cache::DEFAULT_KV_CACHE_BUDGET`] bytes when full (it is allocated as tokens arrive).
    ///
    /// # Errors
    /// As [`Session::with_budget`].
    pub fn new(model: &'m Qwen25Vl<B>, batch: usize, capacity: usize) -> Result<Self> {
        Self::with_budget(
            model,
            batch,
            capacity,
            crate::cache::DEFAULT_KV_CACHE_BUDGET,
        )
    }

    /// A session of `batch` rows holding up to `capacity` tokens each, its KV cache within `budget` bytes
    /// ([`Qwen25Vl::kv_cache_bytes`]; [`Qwen25Vl::max_cache_capacity`] gives the largest capacity allowed).
    ///
    /// # Errors
    /// [`VlmError::CacheBeyondContext`] if `capacity` exceeds the model's `max_position_embeddings`,
    /// [`VlmError::CacheOverBudget`] if the cache would need more than `budget` bytes.
    pub fn with_budget(
        model: &'m Qwen25Vl<B>,
        batch: usize,
        capacity: usize,
        budget: u64,
    ) -> Result<Self> {
        Ok(Self {
            model,
            cache: model.new_cache_with_budget(batch, capacity, budget)?,
            next_logits: vec![None; batch],
            pending: vec![None; batch],
            tokens: vec![Vec::new(); batch],
        })
    }

    /// A session of `rows` rows that all continue row `row` of this one: its cache, tokens, pending token
    /// and next logits are copied, so a shared prompt is prefilled (and its images encoded) once.
    ///
    /// # Errors
    /// [`VlmError::Input`] if `row` is out of range or `rows` is 0; as [`Session::fork_with_budget`] with
    /// [`crate::cache::DEFAULT_KV_CACHE_BUDGET`].
    pub fn fork(&self, row: usize, rows: usize) -> Result<Session<'m, B>> {
        self.fork_with_budget(row, rows, crate::cache::DEFAULT_KV_CACHE_BUDGET)
    }

    /// As [`Session::fork`], the new cache within `budget` bytes.
    ///
    /// # Errors
    /// [`VlmError::Input`] if `row` is out of range, `rows` is 0, or `rows` rows of this capacity take
    /// more than `budget` bytes (checked before anything is copied).
    pub fn fork_with_budget(&self, row: usize, rows: usize, budget: u64) -> Result<Session<'m, B>> {
        let capacity = self.cache.capacity();
        let bytes = self.model.kv_cache_bytes(rows, capacity);
        if bytes.is_none_or(|b| b > budget) {
            return Err(VlmError::Input {
                input: "fork",
                reason: format!(
                    "{rows} rows of {capacity} tokens need {} bytes of KV cache, over the budget of {budget}",
                    bytes.map_or("more than 2^64".to_string(), |b| b.to_string())
                ),
            });
        }
        let cache = self.cache.fork_row(row, rows)?;
        Ok(Session {
            model: self.model,
            cache,
            next_logits: vec![self.next_logits[row].clone(); rows],
            pending: vec![self.pending[row]; rows],
            tokens: vec![self.tokens[row].clone(); rows],
        })
    }

    /// Rows.
    pub fn batch(&self) -> usize {
        self.cache.batch()
    }

    /// Every token of row `row` so far (prompt, generated, pending).
    pub fn tokens(&self, row: usize) -> &[u32] {
        &self.tokens[row]
    }

    /// The token sampled last for `row` that the model has not seen yet.
    pub fn pending(&self, row: usize) -> Option<u32> {
        self.pending[row]
    }

    /// Next M-RoPE text position of `row` (counting its pending token).
    pub fn next_position(&self, row: usize) -> i64 {
        self.cache.next_position(row) + i64::from(self.pending[row].is_some())
    }

    /// The KV cache.
    pub fn cache(&self) -> &KvCache<B> {
        &self.cache
    }

    /// Runs new input for every row (one [`SegmentInput`] per row; pending tokens go first).
    ///
    /// # Errors
    /// [`VlmError::Input`] for a wrong number of rows or inconsistent positions, the model's errors
    /// (placeholder mismatch, ...), [`VlmError::Generation`] if the cache is full.
    pub fn append(&mut self, inputs: &[SegmentInput]) -> Result<()> {
        let inputs: Vec<Option<&SegmentInput>> = inputs.iter().map(Some).collect();
        self.append_rows(&inputs)
    }

    /// As [`Session::append`], but a `None` row is idle: nothing is fed for it, not even its pending token
    /// (a row whose rollout ended while others go on).
    ///
    /// # Errors
    /// As [`Session::append`].
    pub fn append_rows(&mut self, inputs: &[Option<&SegmentInput>]) -> Result<()> {
        let batch = self.batch();
        if inputs.len() != batch {
            return Err(VlmError::Input {
                input: "inputs",
                reason: format!("{} segments for a session of {batch} rows", inputs.len()),
            });
        }
        // Per row: ids and positions of everything new (pending token first), and whether a pending
        // token leads it.
        let mut rows: Vec<(Vec<u32>, [Vec<i64>; 3])> = Vec::with_capacity(batch);
        let mut leads_pending = vec![false; batch];
        for (row, input) in inputs.iter().enumerate() {
            let Some(input) = input else {
                rows.push(Default::default());
                continue;
            };
            let mut ids = Vec::new();
            let mut pos: [Vec<i64>; 3] = Default::default();
            let mut next = self.cache.next_position(row);
            if let Some(token) = self.pending[row] {
                leads_pending[row] = true;
                ids.push(token);
                pos.iter_mut().for_each(|p| p.push(next));
                next += 1;
            }
            let n = input.input_ids.len();
            match &input.positions {
                Some(explicit) => {
                    if explicit.len() != 3 * n {
                        return Err(VlmError::Input {
                            input: "positions",
                            reason: format!(
                                "row {row}: expected 3 x {n} positions, found {}",
                                explicit.len()
                            ),
                        });
                    }
                    for (axis, p) in pos.iter_mut().enumerate() {
                        p.extend_from_slice(&explicit[axis * n..(axis + 1) * n]);
                    }
                }
                None => pos
                    .iter_mut()
                    .for_each(|p| p.extend((0..n as i64).map(|i| next + i))),
            }
            ids.extend_from_slice(&input.input_ids);
            rows.push((ids, pos));
        }
        let seq = rows.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0);
        if seq == 0 {
            return Ok(());
        }
        let mut ids = vec![0u32; batch * seq];
        let mut valid = vec![false; batch * seq];
        let mut generated = vec![false; batch * seq];
        let mut positions = vec![0i64; 3 * batch * seq];
        for (row, (row_ids, row_pos)) in rows.iter().enumerate() {
            let pad = seq - row_ids.len();
            if leads_pending[row] {
                // The model's own token is text whatever it is (a sampled `<|image_pad|>` included).
                generated[row * seq + pad] = true;
            }
            for (i, &id) in row_ids.iter().enumerate() {
                ids[row * seq + pad + i] = id;
                valid[row * seq + pad + i] = true;
                for axis in 0..3 {
                    positions[(axis * batch + row) * seq + pad + i] = row_pos[axis][i];
                }
            }
        }
        let merge = |pick: fn(&SegmentInput) -> Option<&VisualInput>| {
            let mut all = VisualInput::default();
            inputs
                .iter()
                .flatten()
                .filter_map(|s| pick(s))
                .for_each(|v| all.extend(v));
            (!all.grid_thw.is_empty()).then_some(all)
        };
        let images = merge(|s| s.images.as_ref());
        let videos = merge(|s| s.videos.as_ref());
        let input = ForwardInput {
            input_ids: &ids,
            batch,
            positions: &positions,
            valid: Some(&valid),
            generated: Some(&generated),
            images: images.as_ref(),
            videos: videos.as_ref(),
        };
        let hidden = self.model.forward_hidden(&input, &mut self.cache)?; // [batch, seq, hidden]
        let last = self.last_logits(hidden.narrow(1, seq - 1, 1))?;
        for (row, (row_ids, _)) in rows.iter().enumerate() {
            if let (false, Some(input)) = (row_ids.is_empty(), inputs[row]) {
                self.next_logits[row] = Some(last[row].clone());
                self.pending[row] = None;
                self.tokens[row].extend_from_slice(&input.input_ids);
            }
        }
        Ok(())
    }

    fn last_logits(&self, hidden: Tensor<B, 3>) -> Result<Vec<Vec<f32>>> {
        let vocab = self.model.config.text.vocab_size;
        let logits = self.model.logits(hidden); // [batch, 1, vocab]
        let data = logits
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| VlmError::Generation(format!("cannot read logits: {e:?}")))?;
        Ok(data.chunks_exact(vocab).map(<[f32]>::to_vec).collect())
    }

    /// Samples up to `config.max_new_tokens` tokens per row (one sampler per row), calling
    /// `on_token(row, token, logprob)` for every token as it is sampled.
    ///
    /// `detokenize` turns a row's recent tokens into text for `stop_strings`; it is required when
    /// `stop_strings` is not empty.
    ///
    /// # Errors
    /// [`VlmError::Input`] if the samplers do not match the rows, a row has no logits (nothing appended),
    /// or stop strings are given without a detokenizer; the model's and sampler's errors.
    pub fn generate(
        &mut self,
        config: &GenerationConfig,
        samplers: &mut [Sampler],
        detokenize: Option<Detokenize<'_>>,
        on_token: impl FnMut(usize, u32, f32),
    ) -> Result<Vec<RowOutput>> {
        let active = vec![true; self.batch()];
        self.generate_rows(config, &active, samplers, detokenize, on_token)
    }

    /// As [`Session::generate`] for the rows where `active` is true; the others are neither sampled nor
    /// fed (their output is empty, finish [`FinishReason::Length`]), and need no logits. Their slots are
    /// still part of the batched decode step, masked out.
    ///
    /// # Errors
    /// As [`Session::generate`], and [`VlmError::Input`] if `active` does not have one entry per row.
    pub fn generate_rows(
        &mut self,
        config: &GenerationConfig,
        active: &[bool],
        samplers: &mut [Sampler],
        detokenize: Option<Detokenize<'_>>,
        mut on_token: impl FnMut(usize, u32, f32),
    ) -> Result<Vec<RowOutput>> {
        let batch = self.batch();
        if active.len() != batch {
            return Err(VlmError::Input {
                input: "active",
                reason: format!("{} flags for {batch} rows", active.len()),
            });
        }
        if samplers.len() != batch {
            return Err(VlmError::Input {
                input: "samplers",
                reason: format!("{} samplers for {batch} rows", samplers.len()),
            });
        }
        if !config.stop_strings.is_empty() && detokenize.is_none() {
            return Err(VlmError::Input {
                input: "detokenize",
                reason: "stop strings need a detokenizer".into(),
            });
        }
        if let Some(row) = (0..batch).find(|&r| active[r] && self.next_logits[r].is_none()) {
            return Err(VlmError::Input {
                input: "session",
                reason: format!("row {row} has nothing to continue from: append input first"),
            });
        }
        let longest_stop = config
            .stop_strings
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(0);
        let mut outputs: Vec<RowOutput> = (0..batch)
            .map(|_| RowOutput {
                tokens: Vec::new(),
                logprobs: Vec::new(),
                finish: FinishReason::Length,
            })
            .collect();
        let mut active = active.to_vec();
        for step in 0..config.max_new_tokens {
            for row in 0..batch {
                if !active[row] {
                    continue;
                }
                let Some(logits) = self.next_logits[row].take() else {
                    continue;
                };
                let sampled = samplers[row].sample(&logits)?;
                let token = sampled.token;
                self.pending[row] = Some(token);
                self.tokens[row].push(token);
                outputs[row].tokens.push(token);
                outputs[row].logprobs.push(sampled.logprob);
                on_token(row, token, sampled.logprob);
                if config.stop_token_ids.contains(&token) {
                    outputs[row].finish = FinishReason::StopToken(token);
                    active[row] = false;
                } else if let Some(detok) = detokenize.filter(|_| longest_stop > 0) {
                    let tail = &outputs[row].tokens
                        [outputs[row].tokens.len().saturating_sub(longest_stop + 2)..];
                    let text = detok(tail);
                    if let Some(stop) = config
                        .stop_strings
                        .iter()
                        .find(|s| text.ends_with(s.as_str()))
                    {
                        outputs[row].finish = FinishReason::StopString(stop.clone());
                        active[row] = false;
                    }
                }
            }
            if !active.iter().any(|&a| a) || step + 1 == config.max_new_tokens {
                break;
            }
            if self.cache.len() + 1 > self.cache.capacity() {
                break; // every active row stops with `Length`
            }
            self.feed_pending(&active)?;
        }
        Ok(outputs)
    }

    /// Feeds the pending token of every active row in one decode step.
    fn feed_pending(&mut self, active: &[bool]) -> Result<()> {
        let batch = self.batch();
        let mut ids = vec![0u32; batch];
        let mut valid = vec![false; batch];
        let mut positions = vec![0i64; 3 * batch];
        for row in 0..batch {
            if let (true, Some(token)) = (active[row], self.pending[row]) {
                ids[row] = token;
                valid[row] = true;
                let p = self.cache.next_position(row);
                for axis in 0..3 {
                    positions[axis * batch + row] = p;
                }
            }
        }
        let input = ForwardInput {
            input_ids: &ids,
            batch,
            positions: &positions,
            valid: Some(&valid),
            // Only sampled tokens here: embedded as ordinary tokens, whatever their id.
            generated: Some(&valid),
            images: None,
            videos: None,
        };
        let hidden = self.model.forward_hidden(&input, &mut self.cache)?;
        let last = self.last_logits(hidden)?;
        for row in 0..batch {
            if valid[row] {
                self.pending[row] = None;
                self.next_logits[row] = Some(last[row].clone());
            }
        }
        Ok(())
    }
}
