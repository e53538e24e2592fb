//! One pre-norm vision transformer block.

use burn::module::Module;
use burn::nn::RmsNorm;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::config::VisionConfig;
use crate::layers::norm::rms_norm;
use crate::layers::swiglu::{SwiGlu, SwiGluConfig};
use crate::loading::ParamLoader;
use crate::vision::attention::{VisionAttention, VisionAttentionConfig};

/// `x + attn(norm1(x))`, then `x + mlp(norm2(x))` (keys `visual.blocks.{i}.*`).
#[derive(Module, Debug)]
pub struct VisionBlock<B: Backend> {
    /// RMSNorm before attention (eps 1e-6).
    pub norm1: RmsNorm<B>,
    /// RMSNorm before the MLP (eps 1e-6).
    pub norm2: RmsNorm<B>,
    /// Chunked self-attention.
    pub attn: VisionAttention<B>,
    /// SwiGLU MLP with biases.
    pub mlp: SwiGlu<B>,
}

impl<B: Backend> VisionBlock<B> {
    pub(crate) fn load(p: &mut ParamLoader<'_, B>, prefix: &str, c: &VisionConfig) -> Self {
        Self {
            norm1: p.rms_norm(&format!("{prefix}.norm1"), c.hidden_size, 1e-6),
            norm2: p.rms_norm(&format!("{prefix}.norm2"), c.hidden_size, 1e-6),
            attn: VisionAttentionConfig::new(c.hidden_size, c.num_heads)
                .load(p, &format!("{prefix}.attn")),
            mlp: SwiGluConfig::new(c.hidden_size, c.intermediate_size)
                .with_bias(true)
                .load(p, &format!("{prefix}.mlp")),
        }
    }

    /// Applies the block.
    ///
    /// # Shapes
    /// - `x`: `[n, dim]`; `cos`, `sin`: `[n, heads, head_dim]` (or `[n, 1, head_dim]`); output `[n, dim]`
    pub fn forward(
        &self,
        x: Tensor<B, 2>,
        cos: Tensor<B, 3>,
        sin: Tensor<B, 3>,
        runs: &[(usize, usize, usize)],
    ) -> Tensor<B, 2> {
        let x = x.clone() + self.attn.forward(rms_norm(&self.norm1, x), cos, sin, runs);
        x.clone() + self.mlp.forward(rms_norm(&self.norm2, x))
    }
}
