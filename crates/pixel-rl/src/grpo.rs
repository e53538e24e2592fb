//! From rollouts to a GRPO micro-batch: the token-exact trajectories of `pixel-agent` become the
//! per-token log-probs [`crate::loss::clipped_surrogate`] needs, with nothing re-rendered or re-tokenized.
//!
//! Each trajectory's [`pixel_agent::TokenRecord`] gives the ids the model saw, the loss mask over the
//! tokens it sampled, their sampling log-probs (the `old` policy's, taken from the rollout) and the M-RoPE
//! positions used; its images are preprocessed again by the checkpoint's processor (deterministic, and
//! checked against the record's grids). Position `i` of a row predicts token `i + 1`, so the loss mask and
//! the old log-probs are read one token ahead. Log-probs are taken at each token's sampling temperature
//! (the rollout samples the first turn at 1.0 and later turns at 0.9), as the rollout computed them.

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor, TensorData};
use pixel_agent::{RolloutConfig, Trajectory, VisualKind};
use pixel_vlm::processor::Processor;
use pixel_vlm::train::Targets;
use pixel_vlm::{ForwardInput, Qwen25Vl, VisualInput};

use crate::error::{Result, RlError};
use crate::loss::PolicyTokens;

/// Row `b`'s sampling temperature at each token: the temperature of the turn each sampled token belongs
/// to (turns are the runs of the loss mask, in order), 1 elsewhere and for greedy turns.
pub fn turn_temperatures(loss_mask: &[bool], config: &RolloutConfig) -> Vec<f32> {
    let mut out = vec![1.0; loss_mask.len()];
    let mut turn = 0;
    for i in 0..loss_mask.len() {
        if loss_mask[i] {
            let t = config.sampling(turn).params.temperature;
            out[i] = if t > 0.0 { t } else { 1.0 };
            if loss_mask.get(i + 1) != Some(&true) {
                turn += 1;
            }
        }
    }
    out
}

/// The policy's per-token log-probs for `trajectories` (one row each, right-padded) with the rollout's
/// log-probs as `old_logp`, the advantages, and the loss mask: ready for
/// [`crate::loss::clipped_surrogate`].
///
/// # Errors
/// [`RlError::Shape`] for a trajectory without a token record (an HTTP rollout), a mismatch between
/// trajectories and advantages, or images whose patch grids differ from the record's; the model's errors
/// as [`RlError::Vlm`].
pub fn policy_tokens<B: Backend>(
    model: &Qwen25Vl<B>,
    processor: &Processor,
    trajectories: &[&Trajectory],
    advantages: &[f32],
    rollout: &RolloutConfig,
) -> Result<PolicyTokens<B>> {
    Ok(policy_tokens_with_entropy(model, processor, trajectories, advantages, rollout, false)?.0)
}

/// As [`policy_tokens`], with the policy's per-token entropy `[b, s]` (at each token's temperature) when
/// `entropy` is set (for metrics: it costs one more pass over the vocabulary).
///
/// # Errors
/// As [`policy_tokens`].
pub fn policy_tokens_with_entropy<B: Backend>(
    model: &Qwen25Vl<B>,
    processor: &Processor,
    trajectories: &[&Trajectory],
    advantages: &[f32],
    rollout: &RolloutConfig,
    entropy: bool,
) -> Result<(PolicyTokens<B>, Option<Tensor<B, 2>>)> {
    if trajectories.is_empty() || trajectories.len() != advantages.len() {
        return Err(RlError::Shape(format!(
            "{} trajectories with {} advantages",
            trajectories.len(),
            advantages.len()
        )));
    }
    let records = trajectories
        .iter()
        .map(|t| {
            t.tokens.as_ref().ok_or_else(|| {
                RlError::Shape(format!(
                    "trajectory {} has no token record (only token-exact engines can be trained on)",
                    t.row
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let b = records.len();
    let s = records.iter().map(|r| r.len()).max().unwrap_or(0);
    if s < 2 {
        return Err(RlError::Shape("records need at least two tokens".into()));
    }
    let mut ids = vec![0u32; b * s];
    let mut valid = vec![false; b * s];
    let mut positions = vec![0i64; 3 * b * s];
    let mut targets = vec![0u32; b * s];
    let mut old = vec![0f32; b * s];
    let mut mask = vec![false; b * s];
    let mut temperature = vec![1f32; b * s];
    let mut images = VisualInput::default();
    for (row, (t, r)) in trajectories.iter().zip(&records).enumerate() {
        let n = r.len();
        let base = row * s;
        ids[base..base + n].copy_from_slice(&r.token_ids);
        valid[base..base + n].iter_mut().for_each(|v| *v = true);
        for axis in 0..3 {
            let start = (axis * b + row) * s;
            positions[start..start + n].copy_from_slice(&r.positions[axis]);
        }
        let temps = turn_temperatures(&r.loss_mask, rollout);
        // Position i predicts token i + 1: everything about the target is read one token ahead.
        targets[base..base + n - 1].copy_from_slice(&r.token_ids[1..]);
        mask[base..base + n - 1].copy_from_slice(&r.loss_mask[1..]);
        old[base..base + n - 1].copy_from_slice(&r.logprobs[1..]);
        temperature[base..base + n - 1].copy_from_slice(&temps[1..]);
        if r.visuals.iter().any(|v| v.kind == VisualKind::Video) {
            return Err(RlError::Shape(format!(
                "trajectory {}: video rollouts are not supported by policy_tokens yet",
                t.row
            )));
        }
        let patches = processor.image_processor.preprocess_images(&t.images)?;
        let grids: Vec<[usize; 3]> = r.visuals.iter().map(|v| v.grid_thw).collect();
        if patches.grid_thw != grids {
            return Err(RlError::Shape(format!(
                "trajectory {}: its images give grids {:?}, the record has {grids:?}",
                t.row, patches.grid_thw
            )));
        }
        images.extend(&VisualInput {
            pixel_values: patches.pixel_values,
            grid_thw: patches.grid_thw,
        });
    }
    // Tokens the model sampled are embedded as text whatever their id (a sampled pad is not a placeholder).
    let mut generated = vec![false; b * s];
    for (row, r) in records.iter().enumerate() {
        for (i, &m) in r.loss_mask.iter().enumerate() {
            generated[row * s + i] = m;
        }
    }
    let input = ForwardInput {
        input_ids: &ids,
        batch: b,
        positions: &positions,
        valid: Some(&valid),
        generated: Some(&generated),
        images: (!images.grid_thw.is_empty()).then_some(&images),
        videos: None,
    };
    let hidden = model.forward_train(&input)?;
    let targets = Targets {
        temperature: Some(&temperature),
        entropy,
        ..Targets::new(&targets)
    };
    let scores = model.target_logprobs(hidden, &targets)?;
    let logp = scores.logprobs;
    let device = model.device();
    let tokens = PolicyTokens {
        logp,
        old_logp: Tensor::from_data(TensorData::new(old, [b, s]), &device),
        ref_logp: None,
        advantages: Tensor::from_data(TensorData::new(advantages.to_vec(), [b]), &device),
        mask: Tensor::<B, 2, Bool>::from_data(TensorData::new(mask, [b, s]), &device),
    };
    Ok((tokens, scores.entropy))
}
