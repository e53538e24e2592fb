//! Activation recompute per decoder layer: a backward pass that keeps only each layer's input.
//!
//! # What burn 0.21 offers, and why this is done by hand
//!
//! burn's autodiff backend takes a checkpointing strategy as a type parameter, `Autodiff<B, C>`:
//! `NoCheckpointing` (the default) keeps every activation a backward step needs; `BalancedCheckpointing`
//! keeps instead a recipe to recompute the outputs of operations marked *memory-bound* (element-wise ops,
//! activations, casts) and still stores the inputs of *compute-bound* ones (matrix products, and everything
//! whose parents are untracked). The choice is per backend, for every operation of the graph; there is no
//! way to mark a region (a decoder layer) as "store only its input, recompute the rest", as
//! `torch.utils.checkpoint` does. A custom autodiff operation cannot do it either: its backward runs while
//! burn holds the graph's lock (`burn-autodiff-0.21.0/src/runtime/graph.rs`, `GraphMutexClient::backward`),
//! and a backward pass started inside it (to differentiate the recomputed layer) takes the same lock in
//! `GraphCleaner::cleanup_orphaned_entries`, which deadlocks.
//!
//! [`Qwen25Vl::backward_recomputed`] therefore splits one backward pass into one per decoder layer, in
//! sequence, outside any burn backward:
//!
//! 1. the decoder runs without a graph (on the inner backend), keeping each layer's input `x_i`;
//! 2. the final norm, the head and the caller's loss run with a graph from a leaf `x_L`; their backward
//!    gives the parameters' gradients and `dL/dx_L`;
//! 3. for `i = L-1 .. 0`: layer `i` runs again with a graph from a leaf `x_i`, and the backward of
//!    `sum(layer(x_i) * dL/dx_{i+1})` gives its parameters' gradients and `dL/dx_i`;
//! 4. the backward of `sum(embeds * dL/dx_0)` reaches the embedding (and the vision tower).
//!
//! Peak activation memory is the `L` layer inputs plus one layer's graph instead of all `L` layers' graphs,
//! for one extra forward of the decoder. The gradients are those of the plain backward up to the order in
//! which contributions are summed (`tests/recompute.rs`: within 2.2e-6 of the largest gradient on
//! tiny_flat, its tied-head variant and LoRA adapters).

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;

use crate::error::{Result, VlmError};
use crate::layers::norm::rms_norm;
use crate::model::{ForwardInput, Qwen25Vl};
use crate::text::full_attention_mask;

/// The loss of one [`Qwen25Vl::backward_recomputed`] and the parameters' gradients.
#[derive(Debug)]
pub struct RecomputedBackward<B: AutodiffBackend> {
    /// The loss value (no graph).
    pub loss: Tensor<B::InnerBackend, 1>,
    /// Gradients of every trainable parameter the loss depends on, keyed by parameter id (as
    /// `GradientsParams::from_grads(loss.backward(), &model)` gives them).
    pub grads: GradientsParams,
}

impl<B: AutodiffBackend> Qwen25Vl<B> {
    /// The gradients of `loss_fn(self.forward_train(input))` computed with each decoder layer's
    /// activations recomputed during the backward pass (see the module docs): what
    /// `GradientsParams::from_grads(loss.backward(), self)` gives, holding one layer's activations at a time.
    ///
    /// `loss_fn` receives the final-norm hidden states `[batch, seq, hidden]` (a leaf of this pass's graph)
    /// and returns a scalar loss `[1]`; it may use the model's head (`target_logprobs`, `logits`).
    ///
    /// # Errors
    /// As [`Qwen25Vl::forward_train`], and whatever `loss_fn` returns; [`VlmError::Input`] for a model with
    /// LoRA dropout (the forward without a graph applies none and the recomputed one would draw new masks,
    /// so the gradients would not be those of any single forward).
    pub fn backward_recomputed<F>(
        &self,
        input: &ForwardInput<'_>,
        loss_fn: F,
    ) -> Result<RecomputedBackward<B>>
    where
        F: FnOnce(Tensor<B, 3>) -> Result<Tensor<B, 1>>,
    {
        if let Some(site) = self.lora_sites().into_iter().find(|&site| {
            self.lora_adapter(site)
                .is_some_and(|a| a.dropout.prob > 0.0)
        }) {
            return Err(VlmError::Input {
                input: "model",
                reason: format!(
                    "LoRA dropout (on `{}`) cannot be recomputed identically; train with dropout 0 or \
                     without recompute",
                    site.module_path()
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
        let text = &self.model.text;
        let [b, s, _] = embeds.dims();
        let (cos, sin) = text.rotary(&embeds, input.positions);
        let mask = full_attention_mask::<B>(valid, b, s, &embeds.device());

        // 1. Forward without a graph, keeping each layer's input.
        let (cos_i, sin_i, mask_i) = (
            cos.clone().inner(),
            sin.clone().inner(),
            mask.clone().inner(),
        );
        let mut inputs = Vec::with_capacity(text.layers.len());
        let mut x = embeds.clone().inner();
        for layer in &text.layers {
            inputs.push(x.clone());
            x = layer
                .valid()
                .forward_full(x, cos_i.clone(), sin_i.clone(), mask_i.clone());
        }

        // 2. Final norm, head and loss.
        let mut acc = GradientsAccumulator::<Self>::new();
        let top = Tensor::<B, 3>::from_inner(x).require_grad();
        let loss = loss_fn(rms_norm(&text.norm, top.clone()))?;
        let loss_value = loss.clone().inner();
        let grads = loss.backward();
        let mut upstream = top
            .grad(&grads)
            .unwrap_or_else(|| top.clone().inner().zeros_like());
        acc.accumulate(self, GradientsParams::from_grads(grads, self));

        // 3. Each layer again, last first.
        for (layer, x) in text.layers.iter().zip(inputs).rev() {
            let x = Tensor::<B, 3>::from_inner(x).require_grad();
            let out = layer.forward_full(x.clone(), cos.clone(), sin.clone(), mask.clone());
            let grads = (out * Tensor::from_inner(upstream)).sum().backward();
            upstream = x
                .grad(&grads)
                .unwrap_or_else(|| x.clone().inner().zeros_like());
            acc.accumulate(self, GradientsParams::from_grads(grads, layer));
        }

        // 4. Embedding (and vision tower), unless nothing there is trained (a backward from an untracked
        // tensor panics in burn).
        let visual_used = [input.images, input.videos]
            .into_iter()
            .flatten()
            .any(|v| !v.grid_thw.is_empty());
        let tracked = self.model.text.embed_tokens.weight.is_require_grad()
            || (visual_used && any_trainable(&self.model.visual));
        if tracked {
            let grads = (embeds * Tensor::from_inner(upstream)).sum().backward();
            acc.accumulate(self, GradientsParams::from_grads(grads, self));
        }
        Ok(RecomputedBackward {
            loss: loss_value,
            grads: acc.grads(),
        })
    }
}

/// Whether any float parameter of `module` requires a gradient.
fn any_trainable<B: AutodiffBackend, M: Module<B>>(module: &M) -> bool {
    struct Any(bool);
    impl<B: AutodiffBackend> ModuleVisitor<B> for Any {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0 |= param.is_require_grad();
        }
    }
    let mut any = Any(false);
    module.visit(&mut any);
    any.0
}
