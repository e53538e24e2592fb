//! Patch merger: RMSNorm, then an MLP over the concatenation of `merge x merge` neighbouring patches.

use burn::module::Module;
use burn::nn::{Linear, RmsNorm};
use burn::tensor::activation::gelu;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use crate::loading::ParamLoader;
use crate::model::norm::rms_norm;

/// `mlp(ln_q(x).view(-1, 4 * dim))` with `mlp = Linear, GELU (erf), Linear` (keys `visual.merger.ln_q`,
/// `visual.merger.mlp.0`, `visual.merger.mlp.2`).
#[derive(Module, Debug)]
pub struct PatchMerger<B: Backend> {
    /// RMSNorm over each patch (eps 1e-6).
    pub ln_q: RmsNorm<B>,
    /// `4 * dim -> 4 * dim`.
    pub fc1: Linear<B>,
    /// `4 * dim -> out_hidden_size`.
    pub fc2: Linear<B>,
    /// Patches merged into one token.
    pub merge_unit: usize,
}

impl<B: Backend> PatchMerger<B> {
    pub(crate) fn load(
        p: &mut ParamLoader<'_, B>,
        prefix: &str,
        dim: usize,
        out: usize,
        merge_unit: usize,
    ) -> Self {
        let wide = dim * merge_unit;
        Self {
            ln_q: p.rms_norm(&format!("{prefix}.ln_q"), dim, 1e-6),
            fc1: p.linear(&format!("{prefix}.mlp.0"), wide, wide, true, 0.02),
            fc2: p.linear(&format!("{prefix}.mlp.2"), wide, out, true, 0.02),
            merge_unit,
        }
    }

    /// Merges consecutive groups of `merge_unit` patches.
    ///
    /// # Shapes
    /// - `x`: `[n, dim]` with `n` a multiple of `merge_unit`
    /// - output: `[n / merge_unit, out_hidden_size]`
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let [n, dim] = x.dims();
        let x = rms_norm(&self.ln_q, x).reshape([n / self.merge_unit, dim * self.merge_unit]);
        // GELU in f32 and rounded once, as torch's fused kernel does in bf16.
        let h = self.fc1.forward(x);
        let dtype = h.dtype();
        self.fc2.forward(gelu(h.cast(DType::F32)).cast(dtype))
    }
}
