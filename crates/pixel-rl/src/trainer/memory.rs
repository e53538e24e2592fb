//! The trainers' two memory options: per-decoder-layer activation recompute (`recompute_activations`)
//! and f32 master weights (`master_weights`).
//!
//! - [`gradients`] runs a micro-batch's forward and backward, plain (`loss.backward()`) or through
//!   [`Qwen25Vl::backward_recomputed`]; the trainer hands it the loss as a function of the final hidden
//!   states, so both paths compute the same loss.
//! - [`Master`] holds the f32 copies ([`MasterWeights`]); the optimizer steps them and the policy is cast
//!   from them. A checkpoint holds the copies (its `model/` is written in f32 anyway), and
//!   [`adopt_dtypes`] rebuilds the copies and the policy from it on resume, so a resumed run continues
//!   from the exact f32 values instead of the policy's rounded ones.

use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use pixel_vlm::train::MasterWeights;
use pixel_vlm::{ForwardInput, Qwen25Vl, VlmError};

use crate::error::Result;
use crate::trainer::scalar;

/// f32 master copies of a policy's trainable parameters.
pub(crate) type Master<B> = MasterWeights<B, Qwen25Vl<B>>;

/// The loss `loss_fn(final hidden states of input)` and the gradients of the model's trainable
/// parameters, by a plain backward or, with `recompute`, one decoder layer at a time.
///
/// # Errors
/// The model's errors and `loss_fn`'s (returned as they are).
pub(crate) fn gradients<B: AutodiffBackend>(
    model: &Qwen25Vl<B>,
    input: &ForwardInput<'_>,
    recompute: bool,
    loss_fn: impl FnOnce(Tensor<B, 3>) -> Result<Tensor<B, 1>>,
) -> Result<(f64, GradientsParams)> {
    if !recompute {
        let hidden = model.forward_train(input)?;
        let loss = loss_fn(hidden)?;
        let value = f64::from(scalar(loss.clone().detach()));
        return Ok((value, GradientsParams::from_grads(loss.backward(), model)));
    }
    // `backward_recomputed` takes a loss in the model's error type: the trainer's own error is kept aside
    // and returned unchanged.
    let mut failed = None;
    let out = model.backward_recomputed(input, |hidden| {
        loss_fn(hidden).map_err(|e| {
            failed = Some(e);
            VlmError::Input {
                input: "loss",
                reason: "the trainer's loss failed".into(),
            }
        })
    });
    if let Some(e) = failed {
        return Err(e);
    }
    let out = out?;
    Ok((f64::from(scalar(out.loss)), out.grads))
}

/// A model read back from a checkpoint (f32 on the CPU), with each parameter in the dtype of the
/// parameter at the same place in `like` (the model the trainer was given), and its f32 master copies when
/// `master` is set (taken from the checkpoint's values, not from their rounding to `like`'s dtypes).
///
/// # Errors
/// [`crate::RlError::Vlm`] when the two models do not have the same parameters.
pub(crate) fn adopt_dtypes<B: AutodiffBackend>(
    loaded: Qwen25Vl<B>,
    like: &Qwen25Vl<B>,
    master: bool,
) -> Result<(Qwen25Vl<B>, Option<Master<B>>)> {
    let copies = MasterWeights::from_master(loaded, like)?;
    let model = copies.model();
    Ok((model, master.then_some(copies)))
}
