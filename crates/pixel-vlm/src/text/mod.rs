//! The Qwen2 text decoder of Qwen2.5-VL with M-RoPE.

pub mod attention;
pub mod decoder_layer;
pub mod rope;

use burn::module::Module;
use burn::nn::{Embedding, RmsNorm};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, DType, Tensor, TensorData};

use crate::cache::KvCache;
use crate::config::TextConfig;
use crate::error::Result;
use crate::layers::norm::rms_norm;
use crate::loading::ParamLoader;
use decoder_layer::DecoderLayer;

/// Token embedding, decoder layers and the final norm (keys `model.embed_tokens`, `model.layers.*`,
/// `model.norm`).
#[derive(Module, Debug)]
pub struct TextModel<B: Backend> {
    /// Token embedding `[vocab, hidden]`.
    pub embed_tokens: Embedding<B>,
    /// Decoder layers.
    pub layers: Vec<DecoderLayer<B>>,
    /// Final RMSNorm.
    pub norm: RmsNorm<B>,
    /// Head dimension.
    pub head_dim: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// RoPE base.
    pub rope_theta: f64,
    /// M-RoPE split of the rotary frequencies.
    pub mrope_section: [usize; 3],
}

impl<B: Backend> TextModel<B> {
    pub(crate) fn load(p: &mut ParamLoader<'_, B>, c: &TextConfig) -> Self {
        Self {
            embed_tokens: p.embedding("model.embed_tokens", c.vocab_size, c.hidden_size, 0.02),
            layers: (0..c.num_hidden_layers)
                .map(|i| DecoderLayer::load(p, &format!("model.layers.{i}"), c))
                .collect(),
            norm: p.rms_norm("model.norm", c.hidden_size, c.rms_norm_eps),
            head_dim: c.head_dim(),
            num_kv_heads: c.num_key_value_heads,
            rope_theta: c.rope_theta,
            mrope_section: c.mrope_section,
        }
    }

    /// Runs the decoder over `seq` new embedded tokens, appending their keys/values to `cache`.
    ///
    /// `positions` are the M-RoPE ids `[3, batch, seq]` (row-major), `valid` `[batch, seq]` says which new
    /// tokens are real (false for left padding).
    ///
    /// # Shapes
    /// - `embeds`: `[batch, seq, hidden]`
    /// - output: `[batch, seq, hidden]` after the final norm
    ///
    /// # Errors
    /// [`crate::VlmError::Generation`] if the cache has no room for `seq` more slots.
    pub fn forward(
        &self,
        embeds: Tensor<B, 3>,
        positions: &[i64],
        valid: &[bool],
        cache: &mut KvCache<B>,
    ) -> Result<Tensor<B, 3>> {
        let [_, s, _] = embeds.dims();
        let device = embeds.device();
        let (cos, sin) = self.rotary(&embeds, positions);
        cache.begin(s, valid)?;
        let mask = cache.attention_mask(s, &device);
        let mut x = embeds;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x, cos.clone(), sin.clone(), mask.clone(), cache, i);
        }
        cache.commit(s);
        Ok(rms_norm(&self.norm, x))
    }

    /// Runs the decoder over whole sequences without a cache (training): each token attends to the
    /// earlier tokens of its row that are valid. The mask is built on the device from `valid` `[batch, seq]`
    /// (a `batch x seq` upload), not on the host.
    ///
    /// # Shapes
    /// - `embeds`: `[batch, seq, hidden]`
    /// - output: `[batch, seq, hidden]` after the final norm
    pub fn forward_full(
        &self,
        embeds: Tensor<B, 3>,
        positions: &[i64],
        valid: &[bool],
    ) -> Tensor<B, 3> {
        let [b, s, _] = embeds.dims();
        let device = embeds.device();
        let (cos, sin) = self.rotary(&embeds, positions);
        let mask = full_attention_mask::<B>(valid, b, s, &device);
        let mut x = embeds;
        for layer in &self.layers {
            x = layer.forward_full(x, cos.clone(), sin.clone(), mask.clone());
        }
        rms_norm(&self.norm, x)
    }

    /// [`Self::forward_full`] for rows whose first `prefix` tokens are the same (ids, positions and
    /// embeddings, all valid): the prefix is computed once, as one row, and every row's remaining tokens
    /// attend to it and to themselves ([`DecoderLayer::forward_shared`]). The output is
    /// [`Self::forward_full`]'s up to rounding (the prefix's hidden states repeated in every row), and so are
    /// the gradients; a prefix of 0, one row, or a prefix that leaves no token runs [`Self::forward_full`].
    ///
    /// # Shapes
    /// - `embeds`: `[batch, seq, hidden]` (the prefix is read from row 0)
    /// - output: `[batch, seq, hidden]` after the final norm
    pub fn forward_full_shared(
        &self,
        embeds: Tensor<B, 3>,
        positions: &[i64],
        valid: &[bool],
        prefix: usize,
    ) -> Tensor<B, 3> {
        let [b, s, h] = embeds.dims();
        if prefix == 0 || prefix >= s || b < 2 {
            return self.forward_full(embeds, positions, valid);
        }
        let rest = s - prefix;
        let device = embeds.device();
        let xp = embeds.clone().narrow(0, 0, 1).narrow(1, 0, prefix);
        let xs = embeds.narrow(1, prefix, rest);
        // Positions `[3, batch, seq]`: the prefix's from row 0, the rest of every row.
        let plane = b * s;
        let pos_p: Vec<i64> = (0..3)
            .flat_map(|c| positions[c * plane..c * plane + prefix].iter().copied())
            .collect();
        let pos_s: Vec<i64> = (0..3)
            .flat_map(|c| {
                (0..b).flat_map(move |r| {
                    let row = c * plane + r * s;
                    positions[row + prefix..row + s].iter().copied()
                })
            })
            .collect();
        let rope_p = self.rotary(&xp, &pos_p);
        let rope_s = self.rotary(&xs, &pos_s);
        let mask_p = full_attention_mask::<B>(&vec![true; prefix], 1, prefix, &device);
        let valid_s: Vec<bool> = (0..b)
            .flat_map(|r| valid[r * s + prefix..r * s + s].iter().copied())
            .collect();
        // The rest's queries see the whole prefix, and the rest causally.
        let mask_s = Tensor::cat(
            vec![
                Tensor::<B, 5>::zeros([b, 1, 1, rest, prefix], (&device, DType::F32)),
                full_attention_mask::<B>(&valid_s, b, rest, &device),
            ],
            4,
        );
        let (mut xp, mut xs) = (xp, xs);
        for layer in &self.layers {
            (xp, xs) = layer.forward_shared(
                xp,
                xs,
                rope_p.clone(),
                rope_s.clone(),
                mask_p.clone(),
                mask_s.clone(),
            );
        }
        let xp = rms_norm(&self.norm, xp).expand([b, prefix, h]);
        Tensor::cat(vec![xp, rms_norm(&self.norm, xs)], 1)
    }

    /// M-RoPE cos/sin tables `[batch, 1, seq, head_dim]` for `positions` `[3, batch, seq]`, computed in f32
    /// and applied in the model dtype (transformers casts cos/sin to the activations' dtype).
    pub(crate) fn rotary(
        &self,
        embeds: &Tensor<B, 3>,
        positions: &[i64],
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let [b, s, _] = embeds.dims();
        let device = embeds.device();
        let (cos, sin) = rope::mrope_tables(
            positions,
            b,
            s,
            self.head_dim,
            self.rope_theta,
            self.mrope_section,
        );
        let table = |v: Vec<f32>| {
            Tensor::<B, 4>::from_data(
                TensorData::new(v, [b, 1, s, self.head_dim]),
                (&device, embeds.dtype()),
            )
        };
        (table(cos), table(sin))
    }
}

/// Additive f32 mask `[batch, 1, 1, seq, seq]`: 0 where key `k <= q` and key `k` is valid, a large negative
/// number elsewhere. A query whose keys are all masked (a padding query with nothing valid before it)
/// attends uniformly; its output is never used.
pub(crate) fn full_attention_mask<B: Backend>(
    valid: &[bool],
    b: usize,
    s: usize,
    device: &B::Device,
) -> Tensor<B, 5> {
    // burn's `tril_mask` is true *outside* the lower triangle: exactly the future keys `k > q`.
    let future = Tensor::<B, 2, Bool>::tril_mask([s, s], 0, device).reshape([1, 1, 1, s, s]);
    let invalid_keys = Tensor::<B, 2, Bool>::from_data(
        TensorData::new(valid.iter().map(|v| !v).collect::<Vec<bool>>(), [b, s]),
        device,
    )
    .reshape([b, 1, 1, 1, s]);
    let blocked = future
        .expand([b, 1, 1, s, s])
        .bool_or(invalid_keys.expand([b, 1, 1, s, s]));
    Tensor::<B, 5>::zeros([b, 1, 1, s, s], (device, DType::F32)).mask_fill(blocked, -1e30)
}
