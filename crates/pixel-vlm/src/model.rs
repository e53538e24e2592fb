//! The whole Qwen2.5-VL model: vision tower + text decoder + LM head, and its forward entry points.

use std::path::Path;

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor, TensorData, get_device_settings};

use crate::cache::{DEFAULT_KV_CACHE_BUDGET, KvCache, kv_cache_bytes};
use crate::config::Qwen25VlConfig;
use crate::error::{Result, VlmError};
use crate::layers::linear::{linear, tied_head};
use crate::loading::{CheckpointIndex, ParamLoader};
use crate::text::TextModel;
use crate::vision::{VisionTower, index_tensor};

/// The parameters of Qwen2.5-VL (a burn [`Module`]).
#[derive(Module, Debug)]
pub struct Qwen25VlModel<B: Backend> {
    /// The vision tower.
    pub visual: VisionTower<B>,
    /// The text decoder.
    pub text: TextModel<B>,
    /// The LM head; `None` when tied to the token embedding.
    pub lm_head: Option<Linear<B>>,
}

/// Visual inputs of one forward: all images (or all videos) of the batch, in order of appearance.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VisualInput {
    /// Flattened normalised patches `[n, patch_dim]` (row-major), as the processor produces them.
    pub pixel_values: Vec<f32>,
    /// Patches per image/video: `[t, h, w]`.
    pub grid_thw: Vec<[usize; 3]>,
}

impl VisualInput {
    /// Merged tokens these inputs produce: `Σ t·h·w / merge_unit`.
    ///
    /// # Errors
    /// [`VlmError::Input`] naming `grid_thw` if the patch count overflows, or for a zero `merge_unit`.
    pub fn merged_tokens(&self, merge_unit: usize) -> Result<usize> {
        let mut total = 0usize;
        for (i, &[t, h, w]) in self.grid_thw.iter().enumerate() {
            total = t
                .checked_mul(h)
                .and_then(|th| th.checked_mul(w))
                .and_then(|thw| total.checked_add(thw))
                .ok_or_else(|| VlmError::Input {
                    input: "grid_thw",
                    reason: format!(
                        "entry {i} = [{t}, {h}, {w}]: the patch count overflows the address space"
                    ),
                })?;
        }
        total
            .checked_div(merge_unit)
            .ok_or_else(|| VlmError::Input {
                input: "merge_unit",
                reason: "must be positive".into(),
            })
    }

    /// Appends the items of `other`.
    pub fn extend(&mut self, other: &VisualInput) {
        self.pixel_values.extend_from_slice(&other.pixel_values);
        self.grid_thw.extend_from_slice(&other.grid_thw);
    }
}

/// The token side of one forward over `batch` rows of equal length `seq`.
#[derive(Debug, Clone, Copy)]
pub struct ForwardInput<'a> {
    /// Token ids `[batch, seq]` (row-major).
    pub input_ids: &'a [u32],
    /// Rows.
    pub batch: usize,
    /// M-RoPE position ids `[3, batch, seq]` (row-major).
    pub positions: &'a [i64],
    /// Which tokens are real `[batch, seq]`; `None` means all (left padding is marked `false`).
    pub valid: Option<&'a [bool]>,
    /// Which tokens `[batch, seq]` the model sampled itself; `None` means none. They are embedded as
    /// ordinary tokens whatever their id, so a sampled `<|image_pad|>` is text, not a placeholder (as in
    /// transformers, which scatters visual features only over the prompt that comes with pixel values).
    /// Placeholders are counted among the other tokens only.
    pub generated: Option<&'a [bool]>,
    /// Images whose `<|image_pad|>` tokens appear in `input_ids`.
    pub images: Option<&'a VisualInput>,
    /// Videos whose `<|video_pad|>` tokens appear in `input_ids`.
    pub videos: Option<&'a VisualInput>,
}

/// Qwen2.5-VL ready to run: the module plus its configuration.
///
/// A burn [`Module`] itself (the config is skipped: not a parameter, not in records), so optimizers,
/// records, `valid()`, `no_grad()` and `num_params()` apply to the whole model directly.
#[derive(Module, Debug)]
pub struct Qwen25Vl<B: Backend> {
    /// The parameters.
    pub model: Qwen25VlModel<B>,
    /// The configuration it was built from.
    #[module(skip)]
    pub config: Qwen25VlConfig,
}

impl<B: Backend> Qwen25Vl<B> {
    /// Loads a Hugging Face checkpoint folder (`config.json` + `model.safetensors` or a sharded
    /// `model.safetensors.index.json`), in either key layout, in the device's default float dtype: f32 on the
    /// CPU backends and `Cuda` (bf16/f16 checkpoints are widened), bf16 on `Cuda<bf16>` (kept as stored).
    ///
    /// # Errors
    /// [`VlmError::NotACheckpoint`] for a folder without `config.json` or safetensors, [`VlmError::Config`]
    /// for an invalid config, [`VlmError::Safetensors`] for malformed files, [`VlmError::Weights`] listing
    /// every missing, unexpected and mis-shaped tensor.
    pub fn from_pretrained(dir: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        Self::from_pretrained_with_dtype(dir, device, get_device_settings::<B>(device).float_dtype)
    }

    /// As [`Qwen25Vl::from_pretrained`], with every parameter, activation and KV-cache entry in `dtype`.
    ///
    /// `FloatDType::BF16` on a bf16 checkpoint keeps its weights as stored (half the memory of f32, what a GPU
    /// wants); numerically sensitive steps run in f32 and are rounded once, as in transformers (RMSNorm
    /// statistics, attention masking and softmax, the vision rotary embedding, SiLU/GELU); logits are read
    /// back as f32 by generation.
    ///
    /// # Errors
    /// As [`Qwen25Vl::from_pretrained`]; [`VlmError::UnsupportedDtype`] if the backend cannot compute in
    /// `dtype` (e.g. `NdArray` with half precision).
    pub fn from_pretrained_with_dtype(
        dir: impl AsRef<Path>,
        device: &B::Device,
        dtype: FloatDType,
    ) -> Result<Self> {
        check_dtype::<B>(device, dtype)?;
        let dir = dir.as_ref();
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(VlmError::NotACheckpoint {
                path: dir.to_path_buf(),
                reason: "no config.json".into(),
            });
        }
        let config = Qwen25VlConfig::from_file(&config_path)?;
        let index = CheckpointIndex::open_dir(dir)?;
        // Shapes and dtypes from the headers, before anything is allocated.
        index.check(&config)?;
        Self::build(ParamLoader::from_checkpoint(index, device, dtype), config)
    }

    /// A model with seeded random weights (normal, std 0.02; norms at 1) in the device's default float
    /// dtype, for tests and benchmarks. It allocates every parameter the config describes.
    ///
    /// # Errors
    /// [`VlmError::Config`] if the config is invalid ([`Qwen25VlConfig::validate`]).
    pub fn random(config: Qwen25VlConfig, seed: u64, device: &B::Device) -> Result<Self> {
        Self::build(ParamLoader::random(seed, device), config)
    }

    fn build(mut p: ParamLoader<'_, B>, config: Qwen25VlConfig) -> Result<Self> {
        // Again here: the public fields may have been edited since parsing.
        config.validate()?;
        let model = Self::load_parameters(&mut p, &config);
        p.finish()?;
        Ok(Self { model, config })
    }

    /// Asks the loader for every parameter (the order and names [`crate::loading::TensorPlan`] mirrors).
    fn load_parameters(p: &mut ParamLoader<'_, B>, config: &Qwen25VlConfig) -> Qwen25VlModel<B> {
        let visual = VisionTower::load(p, &config.vision);
        let text = TextModel::load(p, &config.text);
        let lm_head = if config.tie_word_embeddings {
            p.tolerate("lm_head.weight");
            None
        } else {
            Some(p.linear(
                "lm_head",
                config.text.hidden_size,
                config.text.vocab_size,
                false,
                0.02,
            ))
        };
        Qwen25VlModel {
            visual,
            text,
            lm_head,
        }
    }

    /// The device the parameters live on.
    pub fn device(&self) -> B::Device {
        self.model.text.embed_tokens.weight.val().device()
    }

    /// The float dtype of the parameters, activations and KV cache.
    pub fn dtype(&self) -> DType {
        self.model.text.embed_tokens.weight.val().dtype()
    }

    /// An empty KV cache for `batch` rows of up to `capacity` tokens, within
    /// [`DEFAULT_KV_CACHE_BUDGET`] bytes.
    ///
    /// # Errors
    /// As [`Qwen25Vl::new_cache_with_budget`].
    pub fn new_cache(&self, batch: usize, capacity: usize) -> Result<KvCache<B>> {
        self.new_cache_with_budget(batch, capacity, DEFAULT_KV_CACHE_BUDGET)
    }

    /// An empty KV cache for `batch` rows of up to `capacity` tokens whose keys and values take at most
    /// `budget` bytes ([`Qwen25Vl::kv_cache_bytes`]).
    ///
    /// # Errors
    /// [`VlmError::CacheBeyondContext`] if `capacity` exceeds the config's `max_position_embeddings`,
    /// [`VlmError::CacheOverBudget`] if the cache needs more than `budget` bytes.
    pub fn new_cache_with_budget(
        &self,
        batch: usize,
        capacity: usize,
        budget: u64,
    ) -> Result<KvCache<B>> {
        let c = &self.config.text;
        if capacity > c.max_position_embeddings {
            return Err(VlmError::CacheBeyondContext {
                capacity,
                max_position_embeddings: c.max_position_embeddings,
            });
        }
        KvCache::new(
            c.num_hidden_layers,
            batch,
            c.num_key_value_heads,
            c.head_dim(),
            capacity,
            budget,
            (&self.device(), self.dtype()),
        )
    }

    /// Bytes the keys and values of a `batch x capacity` cache take in this model's dtype (`None` if more
    /// than a `u64` counts).
    pub fn kv_cache_bytes(&self, batch: usize, capacity: usize) -> Option<u64> {
        let c = &self.config.text;
        kv_cache_bytes(
            c.num_hidden_layers,
            batch,
            c.num_key_value_heads,
            c.head_dim(),
            capacity,
            self.dtype().size(),
        )
    }

    /// The largest cache capacity (tokens per row) for `batch` rows that both the context
    /// (`max_position_embeddings`) and `budget` bytes allow: what a caller can clamp a token limit to.
    pub fn max_cache_capacity(&self, batch: usize, budget: u64) -> usize {
        let per_token = self.kv_cache_bytes(batch, 1).unwrap_or(u64::MAX).max(1);
        let by_budget = usize::try_from(budget / per_token).unwrap_or(usize::MAX);
        by_budget.min(self.config.text.max_position_embeddings)
    }

    /// Encodes images or videos into merged visual tokens.
    ///
    /// # Shapes
    /// - output: `[Σ t·h·w / merge², hidden]`
    ///
    /// # Errors
    /// [`VlmError::Input`] if the pixel values and grids disagree.
    pub fn encode_visual(&self, visual: &VisualInput) -> Result<Tensor<B, 2>> {
        let patch_dim = self.config.vision.patch_dim();
        if !visual.pixel_values.len().is_multiple_of(patch_dim) {
            return Err(VlmError::Input {
                input: "pixel_values",
                reason: format!(
                    "{} values is not a multiple of the patch size {patch_dim}",
                    visual.pixel_values.len()
                ),
            });
        }
        let n = visual.pixel_values.len() / patch_dim;
        let patches = Tensor::<B, 2>::from_data(
            TensorData::new(visual.pixel_values.clone(), [n, patch_dim]),
            (&self.device(), self.dtype()),
        );
        self.model.visual.forward(patches, &visual.grid_thw)
    }

    /// Token embeddings with the image/video features scattered into their pad positions.
    ///
    /// # Shapes
    /// - output: `[batch, seq, hidden]`
    ///
    /// # Errors
    /// [`VlmError::Input`] for out-of-vocabulary ids or inconsistent shapes, [`VlmError::PlaceholderMismatch`]
    /// when the pad tokens do not match `Σ t·h·w / merge²`.
    pub fn embed(&self, input: &ForwardInput<'_>) -> Result<Tensor<B, 3>> {
        let (b, s) = self.check_input(input)?;
        let device = self.device();
        let vocab = self.config.text.vocab_size;
        if let Some(bad) = input.input_ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(VlmError::Input {
                input: "input_ids",
                reason: format!("token id {bad} >= vocab size {vocab}"),
            });
        }
        let unit = self.config.vision.merge_unit();
        let mut table = vec![];
        let text_rows = b * s;
        let ids: Vec<usize> = input.input_ids.iter().map(|&i| i as usize).collect();
        table.push(
            self.model
                .text
                .embed_tokens
                .weight
                .val()
                .select(0, index_tensor::<B>(&ids, &device)),
        );
        let mut gather: Vec<usize> = (0..text_rows).collect();
        let mut next_row = text_rows;
        for (kind, token, visual) in [
            ("image", self.config.image_token_id, input.images),
            ("video", self.config.video_token_id, input.videos),
        ] {
            let slots: Vec<usize> = input
                .input_ids
                .iter()
                .enumerate()
                .filter(|&(i, id)| *id == token && !input.generated.is_some_and(|g| g[i]))
                .map(|(i, _)| i)
                .collect();
            let expected = match visual {
                Some(v) => v.merged_tokens(unit)?,
                None => 0,
            };
            if slots.len() != expected {
                return Err(VlmError::PlaceholderMismatch {
                    kind,
                    tokens: slots.len(),
                    expected,
                    merge: unit,
                });
            }
            if let Some(visual) = visual.filter(|v| !v.grid_thw.is_empty()) {
                table.push(self.encode_visual(visual)?);
                for (k, slot) in slots.into_iter().enumerate() {
                    gather[slot] = next_row + k;
                }
                next_row += expected;
            }
        }
        let hidden = self.config.text.hidden_size;
        let embeds = if table.len() == 1 {
            table.pop().unwrap_or_else(|| unreachable!())
        } else {
            Tensor::cat(table, 0).select(0, index_tensor::<B>(&gather, &device))
        };
        Ok(embeds.reshape([b, s, hidden]))
    }

    fn check_input(&self, input: &ForwardInput<'_>) -> Result<(usize, usize)> {
        let b = input.batch;
        if b == 0 || input.input_ids.is_empty() || !input.input_ids.len().is_multiple_of(b) {
            return Err(VlmError::Input {
                input: "input_ids",
                reason: format!(
                    "{} ids cannot form {b} non-empty rows",
                    input.input_ids.len()
                ),
            });
        }
        let s = input.input_ids.len() / b;
        if input.positions.len() != 3 * b * s {
            return Err(VlmError::Input {
                input: "positions",
                reason: format!(
                    "expected 3 x {b} x {s} = {} ids, found {}",
                    3 * b * s,
                    input.positions.len()
                ),
            });
        }
        for (name, flags) in [("valid", input.valid), ("generated", input.generated)] {
            if let Some(flags) = flags
                && flags.len() != b * s
            {
                return Err(VlmError::Input {
                    input: name,
                    reason: format!("expected {} flags, found {}", b * s, flags.len()),
                });
            }
        }
        Ok((b, s))
    }

    /// Runs the model over new tokens, appending them to `cache`; returns the final hidden states.
    ///
    /// # Shapes
    /// - output: `[batch, seq, hidden]`
    ///
    /// # Errors
    /// As [`Qwen25Vl::embed`]; [`VlmError::Input`] if the cache has another batch size;
    /// [`VlmError::Generation`] if the cache is full.
    pub fn forward_hidden(
        &self,
        input: &ForwardInput<'_>,
        cache: &mut KvCache<B>,
    ) -> Result<Tensor<B, 3>> {
        if cache.batch() != input.batch {
            return Err(VlmError::Input {
                input: "cache",
                reason: format!(
                    "cache has {} rows, input has {}",
                    cache.batch(),
                    input.batch
                ),
            });
        }
        let embeds = self.embed(input)?;
        let all_valid;
        let valid = match input.valid {
            Some(v) => v,
            None => {
                all_valid = vec![true; input.input_ids.len()];
                &all_valid
            }
        };
        let hidden = self
            .model
            .text
            .forward(embeds, input.positions, valid, cache)?;
        // Each row continues from its largest position + 1 (the `rope_deltas` rule).
        let s = input.input_ids.len() / input.batch;
        for row in 0..input.batch {
            let mut max = cache.next_position(row) - 1;
            for axis in 0..3 {
                for i in 0..s {
                    if valid[row * s + i] {
                        max = max.max(input.positions[(axis * input.batch + row) * s + i]);
                    }
                }
            }
            cache.set_next_position(row, max + 1);
        }
        Ok(hidden)
    }

    /// Vocabulary logits of hidden states.
    ///
    /// # Shapes
    /// - `hidden`: `[batch, seq, hidden]`
    /// - output: `[batch, seq, vocab]`
    pub fn logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, s, h] = hidden.dims();
        let flat = hidden.reshape([b * s, h]);
        let out = match &self.model.lm_head {
            Some(head) => linear(head, flat),
            None => tied_head(self.model.text.embed_tokens.weight.val(), flat),
        };
        out.reshape([b, s, self.config.text.vocab_size])
    }

    /// Full forward: logits of every new token.
    ///
    /// # Shapes
    /// - output: `[batch, seq, vocab]`
    ///
    /// # Errors
    /// As [`Qwen25Vl::forward_hidden`].
    pub fn forward(
        &self,
        input: &ForwardInput<'_>,
        cache: &mut KvCache<B>,
    ) -> Result<Tensor<B, 3>> {
        let hidden = self.forward_hidden(input, cache)?;
        Ok(self.logits(hidden))
    }
}

/// Fails unless `B` can compute in `dtype` on `device`.
fn check_dtype<B: Backend>(device: &B::Device, dtype: FloatDType) -> Result<()> {
    if B::supports_dtype(device, DType::from(dtype)) {
        Ok(())
    } else {
        Err(VlmError::UnsupportedDtype {
            dtype: format!("{dtype:?}"),
            backend: B::name(device),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::CpuBackend;
    use crate::loading::TensorPlan;

    /// The header check's list of parameters is exactly what the layers load, in both layouts, tied and
    /// untied.
    #[test]
    fn tensor_plan_matches_what_the_layers_load() {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/models");
        for name in ["tiny_flat", "tiny_nested"] {
            let mut config =
                Qwen25VlConfig::from_file(format!("{fixtures}/{name}/config.json")).unwrap();
            for tie in [false, true] {
                config.tie_word_embeddings = tie;
                let device = Default::default();
                let mut loader = ParamLoader::<CpuBackend>::random(0, &device);
                Qwen25Vl::load_parameters(&mut loader, &config);
                let mut loaded = loader.requested;
                let mut planned = TensorPlan::new(&config).unwrap().flatten();
                loaded.sort();
                planned.sort();
                assert_eq!(loaded, planned, "{name}, tied: {tie}");
            }
        }
    }
}
