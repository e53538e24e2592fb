//! Patch merger: RMSNorm, then an MLP over the concatenation of `merge x merge` neighbouring patches.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, RmsNorm};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use crate::backend::{gelu, linear_forward};
use crate::layers::norm::rms_norm;
use crate::loading::ParamLoader;

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

/// Construction of a [`PatchMerger`].
#[derive(Config, Debug)]
pub struct PatchMergerConfig {
    /// Width of the vision tower.
    pub hidden_size: usize,
    /// Width of the merged tokens (the text model's hidden size).
    pub out_hidden_size: usize,
    /// Neighbouring patches merged per side (`spatial_merge_size`).
    #[config(default = 2)]
    pub spatial_merge_size: usize,
}

impl PatchMergerConfig {
    /// A merger with seeded random weights (normal, std 0.02; norm at 1) in the device's default float dtype.
    ///
    /// # Panics
    /// If a size is zero.
    pub fn init<B: Backend>(&self, device: &B::Device) -> PatchMerger<B> {
        assert!(
            self.hidden_size > 0 && self.out_hidden_size > 0 && self.spatial_merge_size > 0,
            "PatchMergerConfig: sizes must be positive, got {self:?}"
        );
        self.load(&mut ParamLoader::random(0, device), "merger")
    }

    /// Reads `{prefix}.ln_q`, `{prefix}.mlp.0` and `{prefix}.mlp.2` from the loader.
    pub(crate) fn load<B: Backend>(
        &self,
        p: &mut ParamLoader<'_, B>,
        prefix: &str,
    ) -> PatchMerger<B> {
        let dim = self.hidden_size;
        let merge_unit = self.spatial_merge_size * self.spatial_merge_size;
        let wide = dim * merge_unit;
        PatchMerger {
            ln_q: p.rms_norm(&format!("{prefix}.ln_q"), dim, 1e-6),
            fc1: p.linear(&format!("{prefix}.mlp.0"), wide, wide, true, 0.02),
            fc2: p.linear(
                &format!("{prefix}.mlp.2"),
                wide,
                self.out_hidden_size,
                true,
                0.02,
            ),
            merge_unit,
        }
    }
}

impl<B: Backend> PatchMerger<B> {
    /// Merges consecutive groups of `merge_unit` patches.
    ///
    /// # Shapes
    /// - `x`: `[n, dim]` with `n` a multiple of `merge_unit`
    /// - output: `[n / merge_unit, out_hidden_size]`
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let [n, dim] = x.dims();
        let x = rms_norm(&self.ln_q, x).reshape([n / self.merge_unit, dim * self.merge_unit]);
        // GELU in f32 and rounded once, as torch's fused kernel does in bf16.
        let h = linear_forward(&self.fc1, x);
        let dtype = h.dtype();
        linear_forward(&self.fc2, gelu(h.cast(DType::F32)).cast(dtype))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tolerance};

    type B = crate::backend::CpuBackend;

    /// Each output token is the MLP of its `merge²` consecutive normalised patches, concatenated.
    #[test]
    fn merges_consecutive_groups() {
        let device = Default::default();
        let merger = PatchMergerConfig::new(8, 12).init::<B>(&device);
        assert_eq!(merger.merge_unit, 4);
        let x = Tensor::<B, 2>::random([8, 8], Distribution::Default, &device);
        let got = merger.forward(x.clone());
        assert_eq!(got.dims(), [2, 12]);
        // The second token from its own group alone.
        let second = merger.forward(x.narrow(0, 4, 4));
        got.narrow(0, 1, 1)
            .into_data()
            .assert_approx_eq::<f32>(&second.into_data(), Tolerance::absolute(1e-5));
    }
}
