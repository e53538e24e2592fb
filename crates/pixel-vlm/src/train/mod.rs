//! The training surface: a cache-free forward over padded batches, log-probs of given target tokens,
//! freezing, f32 master weights for bf16 models ([`MasterWeights`]), and a backward pass that recomputes
//! each decoder layer's activations ([`Qwen25Vl::backward_recomputed`]; `recompute.rs` says what burn 0.21's
//! own checkpointing can and cannot do).
//!
//! Run the model on an autodiff backend (`burn::backend::Autodiff<B>`) and these are differentiable:
//!
//! ```
//! use burn::backend::Autodiff;
//! use pixel_vlm::{ForwardInput, Qwen25Vl, Qwen25VlConfig, train::Targets};
//! type B = Autodiff<pixel_vlm::backend::CpuBackend>;
//!
//! let config = Qwen25VlConfig::from_json_str(r#"{
//!     "model_type": "qwen2_5_vl", "vocab_size": 64, "hidden_size": 16, "intermediate_size": 32,
//!     "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
//!     "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
//!     "rope_scaling": {"type": "mrope", "mrope_section": [1, 1, 2]}, "tie_word_embeddings": true,
//!     "image_token_id": 60, "video_token_id": 61, "vision_start_token_id": 62,
//!     "vision_config": {"depth": 1, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2,
//!         "out_hidden_size": 16, "fullatt_block_indexes": [0], "window_size": 56}}"#)?;
//! let model = Qwen25Vl::<B>::random(config, 0, &Default::default())?.with_frozen_vision();
//! let ids = [1u32, 2, 3, 4];
//! let positions: Vec<i64> = (0..3).flat_map(|_| 0..4).collect();
//! let input = ForwardInput { input_ids: &ids, batch: 1, positions: &positions, valid: None,
//!                            generated: None, images: None, videos: None };
//! let hidden = model.forward_train(&input)?;
//! // Log-prob of token i+1 at position i (the last position has no target: any id, masked later).
//! let scores = model.target_logprobs(hidden, &Targets::new(&[2, 3, 4, 0]))?;
//! let grads = scores.logprobs.sum().backward();
//! # Ok::<(), pixel_vlm::VlmError>(())
//! ```
//!
//! Log-probs are computed chunk by chunk along the sequence ([`Targets::chunk`] positions at a time), so
//! a forward never holds `[batch, seq, vocab]` logits at once (20 GB in f32 at batch 8 x 4,096 tokens of
//! Qwen's 151,936-token vocabulary). Without entropy, on `Flex` / `Autodiff<Flex>` each chunk is one fused
//! operation ([`crate::fused`]) whose backward recomputes the softmax from the logits and each row's
//! log-sum-exp, so only the chunk's logits are kept for the backward pass; elsewhere (and with entropy)
//! each chunk's log-softmax is kept.

mod master;
mod recompute;

pub use master::MasterWeights;
pub use recompute::RecomputedBackward;

use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};

use crate::error::{Result, VlmError};
use crate::model::{ForwardInput, Qwen25Vl};

/// Target tokens to score, one per position `[batch, seq]` (row-major): the token that follows each
/// position. Positions whose target does not matter (padding, the last token) still need an id in the
/// vocabulary; mask their scores afterwards.
#[derive(Debug, Clone, Copy)]
pub struct Targets<'a> {
    /// Target ids `[batch * seq]`.
    pub ids: &'a [u32],
    /// Sampling temperature per position `[batch * seq]` (logits are divided by it before the softmax, as
    /// the rollout sampled them); `None` means 1.
    pub temperature: Option<&'a [f32]>,
    /// Sequence positions scored at once (default 512).
    pub chunk: usize,
    /// Also compute the entropy of each position's distribution.
    pub entropy: bool,
}

impl<'a> Targets<'a> {
    /// Targets at temperature 1, chunks of 512 positions, no entropy.
    pub fn new(ids: &'a [u32]) -> Self {
        Self {
            ids,
            temperature: None,
            chunk: 512,
            entropy: false,
        }
    }
}

/// Log-probs (and optionally entropies) of target tokens.
#[derive(Debug, Clone)]
pub struct TokenScores<B: Backend> {
    /// `log_softmax(logits / T)[target]`, `[batch, seq]`, f32.
    pub logprobs: Tensor<B, 2>,
    /// Entropy of `softmax(logits / T)`, `[batch, seq]`, f32, when asked for.
    pub entropy: Option<Tensor<B, 2>>,
}

impl<B: Backend> Qwen25Vl<B> {
    /// The forward a trainer uses: whole sequences, no KV cache, every token attending to the earlier
    /// valid tokens of its row (right or left padding marked `false` in `input.valid`). The attention mask
    /// is built on the device. The first tokens that every row shares ([`Qwen25Vl::shared_prefix`]: a
    /// system prompt, say) are computed once (`TextModel::forward_full_shared`); [`SHARED_PREFIX_ENV`]`=off`
    /// computes every row whole.
    ///
    /// # Shapes
    /// - output: `[batch, seq, hidden]` (final-norm hidden states; [`Qwen25Vl::target_logprobs`] or
    ///   [`Qwen25Vl::logits`] turn them into scores)
    ///
    /// # Errors
    /// As [`Qwen25Vl::embed`].
    pub fn forward_train(&self, input: &ForwardInput<'_>) -> Result<Tensor<B, 3>> {
        let embeds = self.embed(input)?;
        let all_valid;
        let valid = match input.valid {
            Some(v) => v,
            None => {
                all_valid = vec![true; input.input_ids.len()];
                &all_valid
            }
        };
        let prefix = if shared_prefix_on() {
            self.shared_prefix(input, valid)
        } else {
            0
        };
        Ok(self
            .model
            .text
            .forward_full_shared(embeds, input.positions, valid, prefix))
    }

    /// How many first tokens every row of `input` shares, for the shared-prefix forward: the same id (not
    /// an image or video placeholder, whose embeddings come from each row's own pixels), the same three
    /// position ids and valid in every row, at most `seq - 1`; 0 for one row or a shared part shorter than
    /// [`MIN_SHARED_PREFIX`].
    pub fn shared_prefix(&self, input: &ForwardInput<'_>, valid: &[bool]) -> usize {
        let b = input.batch;
        if b < 2 || input.input_ids.is_empty() || !input.input_ids.len().is_multiple_of(b) {
            return 0;
        }
        let s = input.input_ids.len() / b;
        let (ids, pos) = (input.input_ids, input.positions);
        if pos.len() != 3 * b * s || valid.len() != b * s {
            return 0;
        }
        let placeholders = [self.config.image_token_id, self.config.video_token_id];
        let same = |i: usize| {
            let id = ids[i];
            !placeholders.contains(&id)
                && (0..b).all(|r| {
                    ids[r * s + i] == id
                        && valid[r * s + i]
                        && (0..3).all(|c| pos[c * b * s + r * s + i] == pos[c * b * s + i])
                })
        };
        let prefix = (0..s - 1).take_while(|&i| same(i)).count();
        if prefix < MIN_SHARED_PREFIX {
            0
        } else {
            prefix
        }
    }

    /// Log-probs of `targets` under the head applied to `hidden`, chunk by chunk along the sequence.
    ///
    /// # Shapes
    /// - `hidden`: `[batch, seq, hidden]`
    /// - output tensors: `[batch, seq]`, f32
    ///
    /// # Errors
    /// [`VlmError::Input`] for a wrong number of targets or temperatures, an id outside the vocabulary, a
    /// temperature that is not finite and positive, or a chunk of 0.
    pub fn target_logprobs(
        &self,
        hidden: Tensor<B, 3>,
        targets: &Targets<'_>,
    ) -> Result<TokenScores<B>> {
        let [b, s, _] = hidden.dims();
        let vocab = self.config.text.vocab_size;
        let input = |reason: String| VlmError::Input {
            input: "targets",
            reason,
        };
        if targets.ids.len() != b * s {
            return Err(input(format!(
                "{} target ids for {b} x {s} positions",
                targets.ids.len()
            )));
        }
        if let Some(bad) = targets.ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(input(format!("target id {bad} >= vocab size {vocab}")));
        }
        if let Some(t) = targets.temperature {
            if t.len() != b * s {
                return Err(input(format!(
                    "{} temperatures for {b} x {s} positions",
                    t.len()
                )));
            }
            if let Some(bad) = t.iter().find(|t| !(t.is_finite() && **t > 0.0)) {
                return Err(input(format!(
                    "temperature {bad} is not finite and positive"
                )));
            }
        }
        if targets.chunk == 0 {
            return Err(input("chunk must be at least 1".into()));
        }
        let device = hidden.device();
        let mut logprobs = Vec::new();
        let mut entropies = Vec::new();
        let mut start = 0;
        while start < s {
            let len = targets.chunk.min(s - start);
            let ids = chunk_rows(targets.ids, b, s, start, len);
            let t = targets.temperature.map(|t| chunk_rows(t, b, s, start, len));
            let logits = self
                .logits(hidden.clone().narrow(1, start, len))
                .cast(DType::F32); // [b, len, vocab]
            if targets.entropy {
                let logits = match t {
                    Some(t) => {
                        let t = Tensor::<B, 3>::from_data(
                            TensorData::new(t, [b, len, 1]),
                            (&device, DType::F32),
                        );
                        logits / t
                    }
                    None => logits,
                };
                let logp = log_softmax(logits, 2); // [b, len, vocab]
                let ids: Vec<i64> = ids.iter().map(|&id| i64::from(id)).collect();
                let ids =
                    Tensor::<B, 3, Int>::from_data(TensorData::new(ids, [b, len, 1]), &device);
                logprobs.push(logp.clone().gather(2, ids).reshape([b, len]));
                let p = logp.clone().exp();
                entropies.push((p * logp).sum_dim(2).neg().reshape([b, len]));
            } else {
                // One fused operation on CPU: no `[b, len, vocab]` log-softmax is kept for the backward.
                let lp = crate::fused::target_logprobs(
                    logits.reshape([b * len, vocab]),
                    &ids,
                    t.as_deref(),
                );
                logprobs.push(lp.reshape([b, len]));
            }
            start += len;
        }
        Ok(TokenScores {
            logprobs: Tensor::cat(logprobs, 1),
            entropy: targets.entropy.then(|| Tensor::cat(entropies, 1)),
        })
    }

    /// This model with the vision tower excluded from gradients (official SFT trains the language model
    /// only).
    pub fn with_frozen_vision(mut self) -> Self {
        self.model.visual = self.model.visual.no_grad();
        self
    }

    /// This model with the token embedding excluded from gradients (with a tied head, the head too).
    pub fn with_frozen_embeddings(mut self) -> Self {
        self.model.text.embed_tokens = self.model.text.embed_tokens.no_grad();
        self
    }
}

/// Shortest shared prefix [`Qwen25Vl::forward_train`] computes once: below it the rows' forward is run
/// whole (a few tokens save little beside the shared path's extra operations; the threshold is a choice,
/// not a measurement).
pub const MIN_SHARED_PREFIX: usize = 16;

/// Name of the environment variable that turns the shared-prefix forward off (`off`, `0` or `false`), e.g.
/// to compare the two in a benchmark; read once.
pub const SHARED_PREFIX_ENV: &str = "PIXEL_VLM_SHARED_PREFIX";

fn shared_prefix_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| !crate::env_flag::says_off(SHARED_PREFIX_ENV))
}

/// Positions `start..start + len` of each of the `b` rows of a row-major `[b, s]` slice, row after row.
fn chunk_rows<T: Copy>(v: &[T], b: usize, s: usize, start: usize, len: usize) -> Vec<T> {
    (0..b)
        .flat_map(|row| v[row * s + start..row * s + start + len].iter().copied())
        .collect()
}
