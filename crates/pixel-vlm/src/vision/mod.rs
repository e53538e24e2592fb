//! The Qwen2.5-VL vision tower: patch embedding, window/full attention blocks with 2-D RoPE, patch merger.
//!
//! Follows transformers' `Qwen2_5_VisionTransformerPretrainedModel`: patches are embedded, permuted into
//! window order (groups of `merge x merge` patches stay together), run through the blocks (full attention
//! per frame in `fullatt_block_indexes`, window attention elsewhere), merged, and put back into natural
//! order.

pub mod attention;
pub mod block;
pub mod merger;
pub mod patch_embed;
pub mod window;

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};

use crate::config::VisionConfig;
use crate::error::{Result, VlmError};
use crate::loading::ParamLoader;
use block::VisionBlock;
use merger::{PatchMerger, PatchMergerConfig};
use patch_embed::PatchEmbed;
use window::{
    equal_length_runs, full_attention_seqlens, patch_positions, vision_rope_tables, window_layout,
};

/// The vision tower (keys `visual.*`).
#[derive(Module, Debug)]
pub struct VisionTower<B: Backend> {
    /// Patch embedding.
    pub patch_embed: PatchEmbed<B>,
    /// Transformer blocks.
    pub blocks: Vec<VisionBlock<B>>,
    /// Patch merger to the text width.
    pub merger: PatchMerger<B>,
    /// Blocks using full attention.
    pub fullatt_block_indexes: Vec<usize>,
    /// `spatial_merge_size`.
    pub merge: usize,
    /// Window side in merged tokens.
    pub window_merged: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// Flattened patch length.
    pub patch_dim: usize,
    /// 2-D RoPE base.
    pub rope_theta: f64,
}

impl<B: Backend> VisionTower<B> {
    pub(crate) fn load(p: &mut ParamLoader<'_, B>, c: &VisionConfig) -> Self {
        Self {
            patch_embed: PatchEmbed::load(p, "visual.patch_embed", c),
            blocks: (0..c.depth)
                .map(|i| VisionBlock::load(p, &format!("visual.blocks.{i}"), c))
                .collect(),
            merger: PatchMergerConfig::new(c.hidden_size, c.out_hidden_size)
                .with_spatial_merge_size(c.spatial_merge_size)
                .load(p, "visual.merger"),
            fullatt_block_indexes: c.fullatt_block_indexes.clone(),
            merge: c.spatial_merge_size,
            window_merged: c.window_size / c.spatial_merge_size / c.patch_size,
            head_dim: c.head_dim(),
            patch_dim: c.patch_dim(),
            rope_theta: c.rope_theta,
        }
    }

    /// Checks `grid_thw` against the patch count and returns the number of patches.
    fn check_grid(&self, n: usize, grid_thw: &[[usize; 3]]) -> Result<usize> {
        let mut total = 0usize;
        for (i, &[t, h, w]) in grid_thw.iter().enumerate() {
            if t == 0 || h == 0 || w == 0 || h % self.merge != 0 || w % self.merge != 0 {
                return Err(VlmError::Input {
                    input: "grid_thw",
                    reason: format!(
                        "entry {i} = [{t}, {h}, {w}]: all positive and h, w multiples of {}",
                        self.merge
                    ),
                });
            }
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
        if total != n {
            return Err(VlmError::Input {
                input: "pixel_values",
                reason: format!("{n} patches but grid_thw describes {total}"),
            });
        }
        Ok(total)
    }

    /// Encodes images or videos into merged visual tokens, in natural order.
    ///
    /// # Shapes
    /// - `patches`: `[n, patch_dim]` with `n = Σ t·h·w` of `grid_thw`
    /// - output: `[n / merge², out_hidden_size]`
    ///
    /// # Errors
    /// [`VlmError::Input`] when `patches` and `grid_thw` disagree.
    pub fn forward(&self, patches: Tensor<B, 2>, grid_thw: &[[usize; 3]]) -> Result<Tensor<B, 2>> {
        let [n, dim] = patches.dims();
        if dim != self.patch_dim {
            return Err(VlmError::Input {
                input: "pixel_values",
                reason: format!(
                    "rows have {dim} values, the checkpoint's patch size needs {}",
                    self.patch_dim
                ),
            });
        }
        self.check_grid(n, grid_thw)?;
        let device = patches.device();
        let unit = self.merge * self.merge;
        let layout = window_layout(grid_thw, self.merge, self.window_merged);
        // Patch-level permutation into window order.
        let perm: Vec<usize> = layout
            .window_index
            .iter()
            .flat_map(|&m| (0..unit).map(move |j| m * unit + j))
            .collect();
        let positions = patch_positions(grid_thw, self.merge);
        let permuted: Vec<[usize; 2]> = perm.iter().map(|&i| positions[i]).collect();
        let (cos, sin) = vision_rope_tables(&permuted, self.head_dim, self.rope_theta);
        // The vision rotary embedding is applied in f32 whatever the model dtype, as in transformers.
        let table = |v: Vec<f32>| {
            Tensor::<B, 3>::from_data(
                TensorData::new(v, [n, 1, self.head_dim]),
                (&device, DType::F32),
            )
        };
        // Repeated over the heads once for all blocks: the rotation then multiplies contiguous operands of one
        // shape, where `[n, 1, head_dim]` tables broadcast over the heads cost `Flex` a strided walk per element.
        let heads = self.blocks.first().map_or(1, |block| block.attn.num_heads);
        let (cos, sin) = (
            table(cos).repeat_dim(1, heads),
            table(sin).repeat_dim(1, heads),
        );

        let mut x = self.patch_embed.forward(patches); // [n, hidden]
        x = x.select(0, index_tensor::<B>(&perm, &device));
        let window_runs = equal_length_runs(&layout.cu_window_seqlens);
        let full_runs = equal_length_runs(&full_attention_seqlens(grid_thw));
        for (i, block) in self.blocks.iter().enumerate() {
            let runs = if self.fullatt_block_indexes.contains(&i) {
                &full_runs
            } else {
                &window_runs
            };
            x = block.forward(x, cos.clone(), sin.clone(), runs);
        }
        let merged = self.merger.forward(x); // [n / unit, out], window order
        let mut reverse = vec![0usize; layout.window_index.len()];
        for (pos, &orig) in layout.window_index.iter().enumerate() {
            reverse[orig] = pos;
        }
        Ok(merged.select(0, index_tensor::<B>(&reverse, &device)))
    }
}

/// A 1-D `Int` tensor of indices.
pub(crate) fn index_tensor<B: Backend>(indices: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let data: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(data, [indices.len()]), device)
}
