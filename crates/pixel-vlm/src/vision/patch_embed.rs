//! Patch embedding: the checkpoint's `Conv3d` (kernel = stride = `[2, 14, 14]`, no bias) as a matmul.
//!
//! A kernel equal to its stride sees each flattened patch exactly once, so the convolution is
//! `patches [n, 1176] @ W^T` with the `[out, 3, 2, 14, 14]` kernel flattened to `[out, 1176]`: the
//! processor already lays each patch out in the kernel's (channel, time, row, column) order.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::backend::linear_forward;
use crate::config::VisionConfig;
use crate::loading::{Init, ParamLoader};

/// `visual.patch_embed.proj` as a bias-free linear layer `[patch_dim -> hidden_size]`.
#[derive(Module, Debug)]
pub struct PatchEmbed<B: Backend> {
    /// The flattened convolution kernel.
    pub proj: Linear<B>,
}

impl<B: Backend> PatchEmbed<B> {
    pub(crate) fn load(p: &mut ParamLoader<'_, B>, prefix: &str, c: &VisionConfig) -> Self {
        let name = format!("{prefix}.proj.weight");
        let shape = [
            c.hidden_size,
            c.in_channels,
            c.temporal_patch_size,
            c.patch_size,
            c.patch_size,
        ];
        let kernel = p.host(&name, &shape, Init::Normal(0.02));
        Self {
            proj: p.linear_from_rows(prefix, kernel, c.patch_dim(), c.hidden_size, false),
        }
    }

    /// Embeds flattened patches.
    ///
    /// # Shapes
    /// - `patches`: `[n, patch_dim]`
    /// - output: `[n, hidden_size]`
    pub fn forward(&self, patches: Tensor<B, 2>) -> Tensor<B, 2> {
        linear_forward(&self.proj, patches)
    }
}
