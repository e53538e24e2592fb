//! Grouped-query self-attention of the text decoder, with M-RoPE and the KV cache.

use burn::config::Config;
use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::backend::{linear_forward, matmul};
use crate::cache::KvCache;
use crate::fused::{permute, softmax_scaled_masked};
use crate::layers::linear::linear;
use crate::layers::lora::{LoraAdapter, adapted};
use crate::layers::rope::apply_rotary;
use crate::loading::ParamLoader;

/// Causal GQA attention (keys `q_proj`, `k_proj`, `v_proj` with biases, `o_proj` without).
#[derive(Module, Debug)]
pub struct TextAttention<B: Backend> {
    /// `hidden -> heads * head_dim`.
    pub q_proj: Linear<B>,
    /// `hidden -> kv_heads * head_dim`.
    pub k_proj: Linear<B>,
    /// `hidden -> kv_heads * head_dim`.
    pub v_proj: Linear<B>,
    /// `heads * head_dim -> hidden`, no bias.
    pub o_proj: Linear<B>,
    /// LoRA adapter of `q_proj` ([`crate::lora`]); `None` without one.
    pub q_proj_lora: Option<LoraAdapter<B>>,
    /// LoRA adapter of `k_proj`.
    pub k_proj_lora: Option<LoraAdapter<B>>,
    /// LoRA adapter of `v_proj`.
    pub v_proj_lora: Option<LoraAdapter<B>>,
    /// LoRA adapter of `o_proj`.
    pub o_proj_lora: Option<LoraAdapter<B>>,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Head dimension.
    pub head_dim: usize,
}

/// Construction of a [`TextAttention`].
#[derive(Config, Debug)]
pub struct TextAttentionConfig {
    /// Model width.
    pub hidden_size: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention).
    pub num_key_value_heads: usize,
}

impl TextAttentionConfig {
    /// An attention layer with seeded random weights (normal, std 0.02) in the device's default float dtype.
    ///
    /// # Panics
    /// If `hidden_size` is not a multiple of `num_attention_heads`, the head dimension is odd (RoPE rotates
    /// pairs), or `num_attention_heads` is not a multiple of `num_key_value_heads`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> TextAttention<B> {
        let (h, q, kv) = (
            self.hidden_size,
            self.num_attention_heads,
            self.num_key_value_heads,
        );
        assert!(
            q > 0
                && kv > 0
                && h.is_multiple_of(q)
                && (h / q).is_multiple_of(2)
                && q.is_multiple_of(kv),
            "TextAttentionConfig: invalid head layout {self:?}"
        );
        self.load(&mut ParamLoader::random(0, device), "self_attn")
    }

    /// Reads `{prefix}.{q,k,v,o}_proj` from the loader.
    pub(crate) fn load<B: Backend>(
        &self,
        p: &mut ParamLoader<'_, B>,
        prefix: &str,
    ) -> TextAttention<B> {
        let (hidden, heads, kv_heads) = (
            self.hidden_size,
            self.num_attention_heads,
            self.num_key_value_heads,
        );
        let head_dim = hidden / heads;
        TextAttention {
            q_proj: p.linear(
                &format!("{prefix}.q_proj"),
                hidden,
                heads * head_dim,
                true,
                0.02,
            ),
            k_proj: p.linear(
                &format!("{prefix}.k_proj"),
                hidden,
                kv_heads * head_dim,
                true,
                0.02,
            ),
            v_proj: p.linear(
                &format!("{prefix}.v_proj"),
                hidden,
                kv_heads * head_dim,
                true,
                0.02,
            ),
            o_proj: p.linear(
                &format!("{prefix}.o_proj"),
                heads * head_dim,
                hidden,
                false,
                0.02,
            ),
            q_proj_lora: None,
            k_proj_lora: None,
            v_proj_lora: None,
            o_proj_lora: None,
            num_heads: heads,
            num_kv_heads: kv_heads,
            head_dim,
        }
    }
}

impl<B: Backend> TextAttention<B> {
    /// Attends from the `seq` new tokens to every valid cached slot (and to themselves, causally).
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]`
    /// - `cos`, `sin`: `[batch, 1, seq, head_dim]`
    /// - `mask`: `[batch, 1, 1, seq, len + seq]` additive, f32
    /// - output: `[batch, seq, hidden]`
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        cos: Tensor<B, 4>,
        sin: Tensor<B, 4>,
        mask: Tensor<B, 5>,
        cache: &mut KvCache<B>,
        layer: usize,
    ) -> Tensor<B, 3> {
        let (q, k, v) = self.project(x, cos, sin);
        let (k_all, v_all) = cache.update(layer, k, v); // [b, kvh, total, d]
        // The keys transposed as a view: the product reads it in place (a copy would be of the whole cache).
        self.attend(q, k_all.swap_dims(2, 3), v_all, mask)
    }

    /// Attention of a whole sequence to itself, without a cache (training).
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]`
    /// - `cos`, `sin`: `[batch, 1, seq, head_dim]`
    /// - `mask`: `[batch, 1, 1, seq, seq]` additive, f32 (causal and padding)
    /// - output: `[batch, seq, hidden]`
    pub fn forward_full(
        &self,
        x: Tensor<B, 3>,
        cos: Tensor<B, 4>,
        sin: Tensor<B, 4>,
        mask: Tensor<B, 5>,
    ) -> Tensor<B, 3> {
        let (q, k, v) = self.project(x, cos, sin);
        // The keys transposed into a copy of their own: its backward hands the rotation a contiguous
        // gradient (through a view, every element-wise operation there walks it element by element).
        self.attend(q, permute(k, [0, 1, 3, 2]), v, mask)
    }

    /// [`Self::forward_full`] over rows that share their first tokens, the shared part computed once: the
    /// prefix `xp` (one row) attends to itself causally, every row's rest `xs` to the prefix and to itself.
    /// The prefix's keys and values are broadcast to the rows (their gradients summed over the rows).
    ///
    /// # Shapes
    /// - `xp`: `[1, p, hidden]`, `xs`: `[batch, s, hidden]`
    /// - `rope_p`: cos/sin `[1, 1, p, head_dim]`, `rope_s`: `[batch, 1, s, head_dim]`
    /// - `mask_p`: `[1, 1, 1, p, p]`, `mask_s`: `[batch, 1, 1, s, p + s]` additive, f32
    /// - outputs: `[1, p, hidden]` and `[batch, s, hidden]`
    pub fn forward_shared(
        &self,
        xp: Tensor<B, 3>,
        xs: Tensor<B, 3>,
        rope_p: (Tensor<B, 4>, Tensor<B, 4>),
        rope_s: (Tensor<B, 4>, Tensor<B, 4>),
        mask_p: Tensor<B, 5>,
        mask_s: Tensor<B, 5>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let b = xs.dims()[0];
        let (qp, kp, vp) = self.project(xp, rope_p.0, rope_p.1); // keys, values [1, kvh, p, d]
        let (qs, ks, vs) = self.project(xs, rope_s.0, rope_s.1); // [b, kvh, s, d]
        let [_, kvh, p, d] = kp.dims();
        let out_p = self.attend(qp, permute(kp.clone(), [0, 1, 3, 2]), vp.clone(), mask_p);
        let keys = Tensor::cat(vec![kp.expand([b, kvh, p, d]), ks], 2);
        let values = Tensor::cat(vec![vp.expand([b, kvh, p, d]), vs], 2);
        let out_s = self.attend(qs, permute(keys, [0, 1, 3, 2]), values, mask_s);
        (out_p, out_s)
    }

    /// Queries `[b, h, s, d]` and keys/values `[b, kvh, s, d]`, rotated.
    fn project(
        &self,
        x: Tensor<B, 3>,
        cos: Tensor<B, 4>,
        sin: Tensor<B, 4>,
    ) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
        let [b, s, _] = x.dims();
        let (h, kvh, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        // Projections of `[b * s, hidden]` rows: under autodiff a 3-D input makes each weight gradient a
        // product per row of the batch, summed.
        let x = x.reshape([b * s, self.q_proj.weight.dims()[0]]);
        let project = |layer: &Linear<B>, lora: &Option<LoraAdapter<B>>| {
            adapted(lora.as_ref(), linear_forward(layer, x.clone()), x.clone())
        };
        let q = project(&self.q_proj, &self.q_proj_lora).reshape([b, s, h, d]);
        let k = project(&self.k_proj, &self.k_proj_lora).reshape([b, s, kvh, d]);
        let v = permute(
            project(&self.v_proj, &self.v_proj_lora).reshape([b, s, kvh, d]),
            [0, 2, 1, 3],
        ); // [b, kvh, s, d]
        // Heads first in memory, then the rotation with the tables repeated over the heads: every operand is
        // contiguous and of one shape, forward and backward, which CPU backends multiply in one pass. A
        // `[b, heads, s, d]` view of the projection times `[b, 1, s, d]` tables broadcast over the heads
        // cost `Flex` a strided walk per element (~2x slower for the rotation, forward and backward).
        let q = apply_rotary(
            permute(q, [0, 2, 1, 3]),
            cos.clone().repeat_dim(1, h),
            sin.clone().repeat_dim(1, h),
        ); // [b, h, s, d]
        let k = apply_rotary(
            permute(k, [0, 2, 1, 3]),
            cos.repeat_dim(1, kvh),
            sin.repeat_dim(1, kvh),
        ); // [b, kvh, s, d]
        (q, k, v)
    }

    /// Scaled dot-product attention of `q` `[b, h, s, d]` over keys transposed `k_t` `[b, kvh, d, total]`
    /// and values `v` `[b, kvh, total, d]` with an additive f32 `mask` `[b, 1, 1, s, total]`; output
    /// `[b, s, hidden]` after `o_proj`.
    fn attend(
        &self,
        q: Tensor<B, 4>,
        k_t: Tensor<B, 4>,
        v: Tensor<B, 4>,
        mask: Tensor<B, 5>,
    ) -> Tensor<B, 3> {
        let [b, h, s, d] = q.dims();
        let kvh = self.num_kv_heads;
        let groups = h / kvh;
        let total = k_t.dims()[3];
        // Query head j uses key/value head j / groups: fold the groups into the query length.
        let q = q.reshape([b, kvh, groups * s, d]);
        let scores = matmul(q, k_t).reshape([b, kvh, groups, s, total]);
        let dtype = scores.dtype();
        // Scaling, masking (the mask broadcast over the heads) and softmax in f32 whatever the model dtype,
        // as transformers' eager attention does; one fused operation on CPU.
        let probs = softmax_scaled_masked(scores, (d as f64).powf(-0.5), Some(mask))
            .cast(dtype)
            .reshape([b, kvh, groups * s, total]);
        let out =
            permute(matmul(probs, v).reshape([b, h, s, d]), [0, 2, 1, 3]).reshape([b, s, h * d]);
        adapted(
            self.o_proj_lora.as_ref(),
            linear(&self.o_proj, out.clone()),
            out,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tolerance};

    type B = crate::backend::CpuBackend;

    /// A single token attends only to itself, so the output is `o_proj(v)` with each key/value head shared
    /// by its group of query heads, whatever the rotary angle.
    #[test]
    fn one_token_returns_its_own_values() {
        let device = Default::default();
        let (hidden, heads, kv_heads) = (16, 4, 2);
        let attn = TextAttentionConfig::new(hidden, heads, kv_heads).init::<B>(&device);
        let head_dim = hidden / heads;
        let x = Tensor::<B, 3>::random([1, 1, hidden], Distribution::Default, &device);
        let angles = Tensor::<B, 4>::random([1, 1, 1, head_dim], Distribution::Default, &device);
        let mut cache = KvCache::<B>::new(
            1,
            1,
            kv_heads,
            head_dim,
            4,
            crate::cache::DEFAULT_KV_CACHE_BUDGET,
            &device,
        )
        .unwrap();
        cache.begin(1, &[true]).unwrap();
        let mask = cache.attention_mask(1, &device);
        let got = attn.forward(
            x.clone(),
            angles.clone().cos(),
            angles.sin(),
            mask,
            &mut cache,
            0,
        );

        let v = attn.v_proj.forward(x).reshape([1, kv_heads, 1, head_dim]);
        let v = v.repeat_dim(2, heads / kv_heads).reshape([1, 1, hidden]); // head j uses kv head j / groups
        let want = attn.o_proj.forward(v);
        got.into_data()
            .assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-5));
    }

    #[test]
    #[should_panic(expected = "invalid head layout")]
    fn heads_not_dividing_kv_heads_panic() {
        let _ = TextAttentionConfig::new(24, 6, 4).init::<B>(&Default::default());
    }
}
