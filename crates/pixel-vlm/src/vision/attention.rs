//! Vision self-attention over chunks (windows or whole frames), with 2-D RoPE.

use burn::config::Config;
use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use crate::backend::{linear_forward, matmul};
use crate::fused::{permute, softmax_scaled_masked};
use crate::layers::lora::{LoraAdapter, adapted};
use crate::layers::rope::apply_rotary;
use crate::loading::ParamLoader;

/// Non-causal multi-head attention restricted to chunks of the patch sequence (keys `qkv`, `proj`).
#[derive(Module, Debug)]
pub struct VisionAttention<B: Backend> {
    /// Fused query/key/value projection `dim -> 3 * dim` (with bias).
    pub qkv: Linear<B>,
    /// Output projection `dim -> dim` (with bias).
    pub proj: Linear<B>,
    /// LoRA adapter of `qkv` ([`crate::lora`]); `None` without one.
    pub qkv_lora: Option<LoraAdapter<B>>,
    /// LoRA adapter of `proj`.
    pub proj_lora: Option<LoraAdapter<B>>,
    /// Attention heads.
    pub num_heads: usize,
}

/// Construction of a [`VisionAttention`].
#[derive(Config, Debug)]
pub struct VisionAttentionConfig {
    /// Width of the vision tower.
    pub hidden_size: usize,
    /// Attention heads.
    pub num_heads: usize,
}

impl VisionAttentionConfig {
    /// An attention layer with seeded random weights (normal, std 0.02) in the device's default float dtype.
    ///
    /// # Panics
    /// If `hidden_size` is not a multiple of `num_heads` or the head dimension is odd.
    pub fn init<B: Backend>(&self, device: &B::Device) -> VisionAttention<B> {
        let (h, n) = (self.hidden_size, self.num_heads);
        assert!(
            n > 0 && h.is_multiple_of(n) && (h / n).is_multiple_of(2),
            "VisionAttentionConfig: invalid head layout {self:?}"
        );
        self.load(&mut ParamLoader::random(0, device), "attn")
    }

    /// Reads `{prefix}.qkv` and `{prefix}.proj` from the loader.
    pub(crate) fn load<B: Backend>(
        &self,
        p: &mut ParamLoader<'_, B>,
        prefix: &str,
    ) -> VisionAttention<B> {
        let dim = self.hidden_size;
        VisionAttention {
            qkv: p.linear(&format!("{prefix}.qkv"), dim, 3 * dim, true, 0.02),
            proj: p.linear(&format!("{prefix}.proj"), dim, dim, true, 0.02),
            qkv_lora: None,
            proj_lora: None,
            num_heads: self.num_heads,
        }
    }
}

impl<B: Backend> VisionAttention<B> {
    /// Attention within each chunk; `runs` are `(start, chunk_len, n_chunks)` runs of equal-length chunks
    /// covering the sequence in order (see `window::equal_length_runs`), batched together.
    ///
    /// # Shapes
    /// - `x`: `[n, dim]`
    /// - `cos`, `sin`: `[n, heads, head_dim]` (or `[n, 1, head_dim]`, broadcast: slower on CPU), f32
    /// - output: `[n, dim]`
    pub fn forward(
        &self,
        x: Tensor<B, 2>,
        cos: Tensor<B, 3>,
        sin: Tensor<B, 3>,
        runs: &[(usize, usize, usize)],
    ) -> Tensor<B, 2> {
        let [n, dim] = x.dims();
        let heads = self.num_heads;
        let head_dim = dim / heads;
        let qkv = adapted(
            self.qkv_lora.as_ref(),
            linear_forward(&self.qkv, x.clone()),
            x,
        )
        .reshape([n, 3, heads, head_dim]);
        // q, k and v each contiguous: one permuted copy, then slices of whole blocks.
        let qkv = permute(qkv, [1, 0, 2, 3]); // [3, n, heads, head_dim]
        let q = qkv.clone().narrow(0, 0, 1).reshape([n, heads, head_dim]);
        let k = qkv.clone().narrow(0, 1, 1).reshape([n, heads, head_dim]);
        let v = qkv.narrow(0, 2, 1).reshape([n, heads, head_dim]);
        // Rotary in f32 (`cos`/`sin` are f32), softmax in f32, the rest in the model dtype, as transformers.
        let dtype = q.dtype();
        let q = apply_rotary(q.cast(DType::F32), cos.clone(), sin.clone()).cast(dtype);
        let k = apply_rotary(k.cast(DType::F32), cos, sin).cast(dtype);
        let scale = (head_dim as f64).powf(-0.5);
        let mut outputs = Vec::with_capacity(runs.len());
        for &(start, len, count) in runs {
            // Contiguous copies with the heads first (the keys transposed): views would make the element-wise
            // operations of the backward walk them element by element.
            let chunk = |t: &Tensor<B, 3>, axes: [usize; 4]| {
                let t = t
                    .clone()
                    .narrow(0, start, len * count)
                    .reshape([count, len, heads, head_dim]);
                permute(t, axes)
            };
            let qc = chunk(&q, [0, 2, 1, 3]); // [count, heads, len, head_dim]
            let kc = chunk(&k, [0, 2, 3, 1]); // [count, heads, head_dim, len]
            let vc = chunk(&v, [0, 2, 1, 3]);
            let scores = matmul(qc, kc); // [count, heads, len, len]
            let probs = softmax_scaled_masked(scores, scale, None).cast(dtype);
            let out = matmul(probs, vc); // [count, heads, len, head_dim]
            outputs.push(permute(out, [0, 2, 1, 3]).reshape([count * len, dim]));
        }
        let out = Tensor::cat(outputs, 0);
        adapted(
            self.proj_lora.as_ref(),
            linear_forward(&self.proj, out.clone()),
            out,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tolerance};

    type B = crate::backend::CpuBackend;

    /// Chunks of one patch each: every patch attends only to itself, so the output is `proj(v)`.
    #[test]
    fn single_patch_chunks_return_their_own_values() {
        let device = Default::default();
        let (n, dim, heads) = (5, 16, 2);
        let attn = VisionAttentionConfig::new(dim, heads).init::<B>(&device);
        let x = Tensor::<B, 2>::random([n, dim], Distribution::Default, &device);
        let angles = Tensor::<B, 3>::random([n, 1, dim / heads], Distribution::Default, &device);
        let got = attn.forward(x.clone(), angles.clone().cos(), angles.sin(), &[(0, 1, n)]);
        let v = attn.qkv.forward(x).narrow(1, 2 * dim, dim);
        got.into_data()
            .assert_approx_eq::<f32>(&attn.proj.forward(v).into_data(), Tolerance::absolute(1e-5));
    }

    #[test]
    #[should_panic(expected = "invalid head layout")]
    fn odd_head_dim_panics() {
        let _ = VisionAttentionConfig::new(6, 2).init::<B>(&Default::default());
    }
}
