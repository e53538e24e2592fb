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
use burn::tensor::{Bool, IndexingUpdateOp, Int, Tensor, TensorData};
use pixel_agent::{RolloutConfig, Trajectory, VisualKind};
use pixel_vlm::processor::Processor;
use pixel_vlm::train::Targets;
use pixel_vlm::{ForwardInput, Qwen25Vl, VisualInput};

use crate::error::{Result, RlError};
use crate::loss::PolicyTokens;
use crate::trainer::scalar;

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
/// [`crate::loss::clipped_surrogate`]. Log-probs are computed at the masked (trained) positions only and
/// are 0 elsewhere.
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
/// The head (the vocabulary projection, its log-softmax, the entropy) runs only at the positions the
/// loss mask trains, as TRL's `logits_to_keep` does: log-probs and entropies elsewhere are 0.
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
    policy_tokens_at(
        model,
        processor,
        trajectories,
        advantages,
        rollout,
        entropy,
        Head::Trained,
    )
}

/// As [`policy_tokens_with_entropy`], the head applied where `head` says.
fn policy_tokens_at<B: Backend>(
    model: &Qwen25Vl<B>,
    processor: &Processor,
    trajectories: &[&Trajectory],
    advantages: &[f32],
    rollout: &RolloutConfig,
    entropy: bool,
    head: Head,
) -> Result<(PolicyTokens<B>, Option<Tensor<B, 2>>)> {
    let batch = PolicyBatch::new(processor, trajectories, advantages, rollout)?;
    let hidden = model.forward_train(&batch.input())?; // [b, s, hidden]
    Ok(batch.tokens_at(model, hidden, entropy, head)?)
}

/// A micro-batch of trajectories assembled for the policy's training forward: right-padded token ids,
/// positions, images, and what the loss reads one token ahead (targets, mask, old log-probs,
/// temperatures). [`policy_tokens_with_entropy`] is `batch.tokens(model, model.forward_train(&batch.input()))`;
/// a trainer differentiating the decoder layer by layer hands [`PolicyBatch::tokens`] the hidden states.
pub(crate) struct PolicyBatch {
    rows: usize,
    len: usize,
    ids: Vec<u32>,
    valid: Vec<bool>,
    positions: Vec<i64>,
    generated: Vec<bool>,
    images: VisualInput,
    targets: Vec<u32>,
    old: Vec<f32>,
    mask: Vec<bool>,
    temperature: Vec<f32>,
    advantages: Vec<f32>,
}

impl PolicyBatch {
    /// Assembles `trajectories` (see [`policy_tokens`]).
    ///
    /// # Errors
    /// As [`policy_tokens`], except the model's.
    pub(crate) fn new(
        processor: &Processor,
        trajectories: &[&Trajectory],
        advantages: &[f32],
        rollout: &RolloutConfig,
    ) -> Result<Self> {
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
        // Tokens the model sampled are embedded as text whatever their id (a sampled pad is not a
        // placeholder).
        let mut generated = vec![false; b * s];
        for (row, r) in records.iter().enumerate() {
            for (i, &m) in r.loss_mask.iter().enumerate() {
                generated[row * s + i] = m;
            }
        }
        Ok(Self {
            rows: b,
            len: s,
            ids,
            valid,
            positions,
            generated,
            images,
            targets,
            old,
            mask,
            temperature,
            advantages: advantages.to_vec(),
        })
    }

    /// The policy's input for this batch.
    pub(crate) fn input(&self) -> ForwardInput<'_> {
        ForwardInput {
            input_ids: &self.ids,
            batch: self.rows,
            positions: &self.positions,
            valid: Some(&self.valid),
            generated: Some(&self.generated),
            images: (!self.images.grid_thw.is_empty()).then_some(&self.images),
            videos: None,
        }
    }

    /// The tokens of [`policy_tokens_with_entropy`] from the final hidden states `[b, s, hidden]` of
    /// [`PolicyBatch::input`].
    ///
    /// # Errors
    /// The model's errors.
    pub(crate) fn tokens<B: Backend>(
        &self,
        model: &Qwen25Vl<B>,
        hidden: Tensor<B, 3>,
        entropy: bool,
    ) -> std::result::Result<(PolicyTokens<B>, Option<Tensor<B, 2>>), pixel_vlm::VlmError> {
        self.tokens_at(model, hidden, entropy, Head::Trained)
    }

    fn tokens_at<B: Backend>(
        &self,
        model: &Qwen25Vl<B>,
        hidden: Tensor<B, 3>,
        entropy: bool,
        head: Head,
    ) -> std::result::Result<(PolicyTokens<B>, Option<Tensor<B, 2>>), pixel_vlm::VlmError> {
        let (b, s) = (self.rows, self.len);
        let (logp, entropy) = score(
            model,
            hidden,
            &Scored {
                targets: &self.targets,
                temperature: &self.temperature,
                mask: &self.mask,
                entropy,
            },
            head,
        )?;
        let device = model.device();
        let tokens = PolicyTokens {
            logp,
            old_logp: Tensor::from_data(TensorData::new(self.old.clone(), [b, s]), &device),
            ref_logp: None,
            advantages: Tensor::from_data(TensorData::new(self.advantages.clone(), [b]), &device),
            mask: Tensor::<B, 2, Bool>::from_data(
                TensorData::new(self.mask.clone(), [b, s]),
                &device,
            ),
        };
        Ok((tokens, entropy))
    }
}

/// Adds the sum of |log-prob - rollout log-prob| over the masked tokens of `tokens`, and their count, to
/// `gap` (the trainer's `logp_gap` metric: how far the training forward is from the sampling log-probs).
pub(crate) fn add_gap<B: Backend>(gap: &mut (f64, usize), tokens: &PolicyTokens<B>) {
    let diff = (tokens.logp.clone().detach() - tokens.old_logp.clone())
        .abs()
        .mask_fill(tokens.mask.clone().bool_not(), 0.0)
        .sum();
    gap.0 += f64::from(scalar(diff));
    gap.1 += scalar(tokens.mask.clone().int().sum().float()) as usize;
}

/// Where [`score`] applies the head (the vocabulary projection and its log-softmax).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// Only at the trained positions (the mask): TRL's `logits_to_keep`. The others score 0.
    Trained,
    /// At every position (what the trainer did before; kept to test [`Head::Trained`] against).
    #[cfg_attr(not(test), allow(dead_code))]
    Every,
}

/// What [`score`] scores, all `[b * s]` row-major.
struct Scored<'a> {
    targets: &'a [u32],
    temperature: &'a [f32],
    mask: &'a [bool],
    entropy: bool,
}

/// Log-probs of the targets (and entropies) `[b, s]` from the final hidden states `[b, s, hidden]`.
///
/// With [`Head::Trained`] the hidden states of the trained positions are gathered first, so the head's
/// product, softmax and backward run on those rows only (a GRPO row is mostly prompt: 149 of 181
/// positions in the trainer benchmark); the results are scattered back, and untrained positions are 0
/// (the loss masks them).
fn score<B: Backend>(
    model: &Qwen25Vl<B>,
    hidden: Tensor<B, 3>,
    scored: &Scored<'_>,
    head: Head,
) -> std::result::Result<(Tensor<B, 2>, Option<Tensor<B, 2>>), pixel_vlm::VlmError> {
    let [b, s, width] = hidden.dims();
    if head == Head::Every {
        let targets = Targets {
            temperature: Some(scored.temperature),
            entropy: scored.entropy,
            ..Targets::new(scored.targets)
        };
        let scores = model.target_logprobs(hidden, &targets)?;
        return Ok((scores.logprobs, scores.entropy));
    }
    let mut picked: Vec<usize> = (0..b * s).filter(|&i| scored.mask[i]).collect();
    if picked.is_empty() {
        // Nothing is trained; one position keeps the loss a function of the parameters.
        picked.push(0);
    }
    let n = picked.len();
    let ids: Vec<u32> = picked.iter().map(|&i| scored.targets[i]).collect();
    let temperature: Vec<f32> = picked.iter().map(|&i| scored.temperature[i]).collect();
    let device = hidden.device();
    let index = Tensor::<B, 1, Int>::from_data(
        TensorData::new(picked.iter().map(|&i| i as i64).collect(), [n]),
        &device,
    );
    let rows = hidden
        .reshape([b * s, width])
        .select(0, index.clone())
        .reshape([1, n, width]);
    let targets = Targets {
        temperature: Some(&temperature),
        entropy: scored.entropy,
        ..Targets::new(&ids)
    };
    let scores = model.target_logprobs(rows, &targets)?;
    let scatter = |values: Tensor<B, 2>| {
        Tensor::<B, 1>::zeros([b * s], (&device, values.dtype()))
            .select_assign(0, index.clone(), values.reshape([n]), IndexingUpdateOp::Add)
            .reshape([b, s])
    };
    Ok((scatter(scores.logprobs), scores.entropy.map(scatter)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
    use burn::tensor::backend::AutodiffBackend;
    use pixel_agent::{LocalEngine, Media, Query, run_group};
    use pixel_vlm::backend::CpuBackend;
    use pixel_vlm::sampling::SamplingParams;

    type AB = Autodiff<CpuBackend>;

    /// The committed tiny checkpoint as one folder (`pixel-testkit`).
    fn checkpoint() -> tempfile::TempDir {
        pixel_testkit::tiny_checkpoint()
    }

    /// Every parameter's gradient, flattened, in visiting order.
    struct Grads<'a>(&'a <AB as AutodiffBackend>::Gradients, Vec<Vec<f32>>);

    impl ModuleVisitor<AB> for Grads<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
            if let Some(g) = param.val().grad(self.0) {
                self.1
                    .push(g.into_data().convert::<f32>().to_vec().expect("f32"));
            }
        }
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    fn values(t: Tensor<AB, 2>) -> Vec<f32> {
        t.into_data().convert::<f32>().to_vec().expect("f32")
    }

    #[test]
    fn the_head_at_trained_positions_gives_the_log_probs_entropies_and_gradients_of_the_full_head()
    {
        let dir = checkpoint();
        let processor = Processor::from_pretrained(dir.path()).expect("processor");
        let model =
            Qwen25Vl::<AB>::from_pretrained(dir.path(), &Default::default()).expect("model");
        // Temperature 0.7: the head divides by the sampling temperature at the trained positions.
        let rollout = RolloutConfig {
            first_turn: SamplingParams::with_temperature(0.7),
            max_new_tokens: 6,
            system: Some("You are a helpful assistant.".into()),
            ..RolloutConfig::default()
        };
        let policy = model.valid();
        let mut trajectories = Vec::new();
        // Two prompts of different lengths: rows are right-padded.
        for question in [
            "Pick one.",
            "Which of the two books on the top shelf is the older one?",
        ] {
            let query = Query {
                media: Media::Images(Vec::new()),
                question: question.into(),
            };
            let mut engine = LocalEngine::new(&policy, &processor, 512);
            trajectories.extend(run_group(&mut engine, &query, 2, &rollout).expect("rollouts"));
        }
        let refs: Vec<&Trajectory> = trajectories.iter().collect();
        let lengths: Vec<usize> = refs
            .iter()
            .map(|t| t.tokens.as_ref().unwrap().len())
            .collect();
        assert!(
            lengths.iter().any(|&l| l != lengths[0]),
            "rows of one length: {lengths:?}"
        );
        let advantages = [0.5, -0.5, 1.0, -1.0];

        let run = |head: Head| {
            let (tokens, entropy) =
                policy_tokens_at(&model, &processor, &refs, &advantages, &rollout, true, head)
                    .expect("policy tokens");
            let mask = tokens.mask.clone().float();
            let loss = (tokens.logp.clone() * mask.clone()).sum();
            let mut grads = Grads(&loss.backward(), Vec::new());
            model.visit(&mut grads);
            let mask = values(mask);
            (
                values(tokens.logp),
                values(entropy.expect("entropy")),
                mask,
                grads.1,
            )
        };
        let (logp, entropy, mask, grads) = run(Head::Trained);
        let (full_logp, full_entropy, full_mask, full_grads) = run(Head::Every);
        assert_eq!(mask, full_mask);
        let trained = mask.iter().filter(|&&m| m > 0.0).count();
        assert!(
            trained >= 4 && trained < mask.len() / 2,
            "{trained} of {}",
            mask.len()
        );
        for i in 0..mask.len() {
            if mask[i] > 0.0 {
                assert!(
                    (logp[i] - full_logp[i]).abs() <= 1e-6,
                    "log-prob {i}: {} vs {}",
                    logp[i],
                    full_logp[i]
                );
                assert!(
                    (entropy[i] - full_entropy[i]).abs() <= 1e-6,
                    "entropy {i}: {} vs {}",
                    entropy[i],
                    full_entropy[i]
                );
                assert!(full_logp[i] < 0.0 && entropy[i] > 0.0);
            } else {
                assert_eq!((logp[i], entropy[i]), (0.0, 0.0), "untrained position {i}");
            }
        }
        assert_eq!(grads.len(), full_grads.len());
        assert!(!grads.is_empty());
        for (k, (g, f)) in grads.iter().zip(&full_grads).enumerate() {
            let scale = f.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1.0);
            assert!(
                max_diff(g, f) <= 1e-5 * scale,
                "parameter {k}: gradients differ by {}",
                max_diff(g, f)
            );
        }
    }
}
