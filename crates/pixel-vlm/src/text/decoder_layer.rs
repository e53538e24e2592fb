//! One Qwen2 decoder layer.

use burn::module::Module;
use burn::nn::RmsNorm;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::cache::KvCache;
use crate::config::TextConfig;
use crate::layers::norm::rms_norm;
use crate::layers::swiglu::{SwiGlu, SwiGluConfig};
use crate::loading::ParamLoader;
use crate::text::attention::{TextAttention, TextAttentionConfig};

/// Pre-norm attention and SwiGLU MLP with residuals (keys `model.layers.{i}.*`).
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    /// RMSNorm before attention.
    pub input_layernorm: RmsNorm<B>,
    /// Self-attention.
    pub self_attn: TextAttention<B>,
    /// RMSNorm before the MLP.
    pub post_attention_layernorm: RmsNorm<B>,
    /// SwiGLU MLP without biases.
    pub mlp: SwiGlu<B>,
}

impl<B: Backend> DecoderLayer<B> {
    pub(crate) fn load(p: &mut ParamLoader<'_, B>, prefix: &str, c: &TextConfig) -> Self {
        Self {
            input_layernorm: p.rms_norm(
                &format!("{prefix}.input_layernorm"),
                c.hidden_size,
                c.rms_norm_eps,
            ),
            self_attn: TextAttentionConfig::new(
                c.hidden_size,
                c.num_attention_heads,
                c.num_key_value_heads,
            )
            .load(p, &format!("{prefix}.self_attn")),
            post_attention_layernorm: p.rms_norm(
                &format!("{prefix}.post_attention_layernorm"),
                c.hidden_size,
                c.rms_norm_eps,
            ),
            mlp: SwiGluConfig::new(c.hidden_size, c.intermediate_size)
                .load(p, &format!("{prefix}.mlp")),
        }
    }

    /// Applies the layer.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]`; `cos`, `sin`: `[batch, 1, seq, head_dim]`;
    ///   `mask`: `[batch, 1, 1, seq, len + seq]`; output `[batch, seq, hidden]`
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        cos: Tensor<B, 4>,
        sin: Tensor<B, 4>,
        mask: Tensor<B, 5>,
        cache: &mut KvCache<B>,
        layer: usize,
    ) -> Tensor<B, 3> {
        let attn = self.self_attn.forward(
            rms_norm(&self.input_layernorm, x.clone()),
            cos,
            sin,
            mask,
            cache,
            layer,
        );
        self.finish(x + attn)
    }

    /// Applies the layer to a whole sequence without a cache (training).
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]`; `cos`, `sin`: `[batch, 1, seq, head_dim]`;
    ///   `mask`: `[batch, 1, 1, seq, seq]`; output `[batch, seq, hidden]`
    pub fn forward_full(
        &self,
        x: Tensor<B, 3>,
        cos: Tensor<B, 4>,
        sin: Tensor<B, 4>,
        mask: Tensor<B, 5>,
    ) -> Tensor<B, 3> {
        let attn =
            self.self_attn
                .forward_full(rms_norm(&self.input_layernorm, x.clone()), cos, sin, mask);
        self.finish(x + attn)
    }

    /// [`Self::forward_full`] over rows sharing a prefix computed once
    /// ([`TextAttention::forward_shared`]): the prefix `xp` `[1, p, hidden]` and the rows' rest `xs`
    /// `[batch, s, hidden]`, each with its rotary tables and mask.
    pub fn forward_shared(
        &self,
        xp: Tensor<B, 3>,
        xs: Tensor<B, 3>,
        rope_p: (Tensor<B, 4>, Tensor<B, 4>),
        rope_s: (Tensor<B, 4>, Tensor<B, 4>),
        mask_p: Tensor<B, 5>,
        mask_s: Tensor<B, 5>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let (ap, as_) = self.self_attn.forward_shared(
            rms_norm(&self.input_layernorm, xp.clone()),
            rms_norm(&self.input_layernorm, xs.clone()),
            rope_p,
            rope_s,
            mask_p,
            mask_s,
        );
        (self.finish(xp + ap), self.finish(xs + as_))
    }

    /// The MLP half with its residual.
    fn finish(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        x.clone()
            + self
                .mlp
                .forward(rms_norm(&self.post_attention_layernorm, x))
    }
}
