//! One rollout buffer's optimizer steps: old (and reference) log-probs on the unchanged policy, then per
//! mini-batch the clipped surrogate over its micro-batches (plain backward or per-layer recompute),
//! gradients summed over the ranks, clipping and the AdamW step (on the f32 master copies when the config
//! asks for them).

use burn::module::AutodiffModule;
use burn::optim::GradientsAccumulator;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Bool, Tensor, TensorData};
use pixel_agent::Trajectory;
use pixel_vlm::Qwen25Vl;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::{GrpoTrainer, is_truncated};
use crate::data::TaskSource;
use crate::error::Result;
use crate::grpo::{PolicyBatch, add_gap, policy_tokens_with_entropy};
use crate::loss::{MiniBatchTotals, SurrogateStats, aggregate, clipped_surrogate};
use crate::metrics::MetricRecord;
use crate::reward::Reward;
use crate::trainer::memory::gradients;
use crate::trainer::rollout::BufferGroup;
use crate::trainer::{clip_and_step, scalar};

impl<B: AutodiffBackend, S: TaskSource, R: Reward> GrpoTrainer<B, S, R> {
    /// The optimizer steps of one buffer (`global_rows`: the rows of all ranks' buffers).
    pub(super) fn update(
        &mut self,
        buffer: Vec<BufferGroup>,
        global_rows: usize,
        first: MetricRecord,
        rng: &mut ChaCha8Rng,
    ) -> Result<Vec<MetricRecord>> {
        let cfg = self.config.clone();
        let mut rows: Vec<(Trajectory, f32)> = buffer
            .into_iter()
            .flat_map(|g| g.trajectories.into_iter().zip(g.advantages))
            .collect();
        rows.shuffle(rng);
        // The same number of steps on every rank; a rank with fewer rows trains empty mini-batches.
        let n_mini = cfg.updates_per_buffer.min(global_rows).max(1);
        let per = rows.len().div_ceil(n_mini).max(1);
        let mut minis: Vec<Vec<(Trajectory, f32)>> = rows.chunks(per).map(<[_]>::to_vec).collect();
        minis.resize(n_mini, Vec::new());

        // Old (and reference) log-probs on the unchanged policy, before the first update.
        let policy = self.model.valid();
        let mut olds: Vec<Vec<Option<Tensor<B::InnerBackend, 2>>>> = Vec::new();
        let mut refs: Vec<Vec<Option<Tensor<B::InnerBackend, 2>>>> = Vec::new();
        let mut gap = (0.0f64, 0usize);
        for mini in &minis {
            let mut o = Vec::new();
            let mut r = Vec::new();
            for micro in mini.chunks(cfg.micro_batch_rows) {
                let (t, a) = split(micro);
                // On-policy, the gap is measured on the first training forward instead (below).
                let old = if cfg.recompute_old_logprobs {
                    let (tokens, _) = policy_tokens_with_entropy(
                        &policy,
                        &self.processor,
                        &t,
                        &a,
                        &cfg.rollout,
                        false,
                    )?;
                    add_gap(&mut gap, &tokens);
                    Some(tokens.logp)
                } else {
                    None
                };
                o.push(old);
                r.push(match &self.reference {
                    Some(reference) => Some(
                        policy_tokens_with_entropy(
                            reference,
                            &self.processor,
                            &t,
                            &a,
                            &cfg.rollout,
                            false,
                        )?
                        .0
                        .logp,
                    ),
                    None => None,
                });
            }
            olds.push(o);
            refs.push(r);
        }
        drop(policy);

        let mut records = Vec::new();
        for (u, mini) in minis.iter().enumerate() {
            let keep: Vec<bool> = mini
                .iter()
                .map(|(t, _)| !(cfg.mask_truncated && is_truncated(t)))
                .collect();
            let masks: Vec<Vec<bool>> = mini
                .iter()
                .zip(&keep)
                .map(|((t, _), &k)| {
                    let m = &t.tokens.as_ref().map_or(&[][..], |r| &r.loss_mask[..]);
                    m.iter().skip(1).map(|&x| x && k).collect()
                })
                .collect();
            let mut totals = MiniBatchTotals::from_masks(masks.iter().map(Vec::as_slice));
            if let Some(c) = &self.parallel {
                // The loss of each rank is its part of the loss over all ranks' mini-batches.
                let t = c.sum::<B::InnerBackend>(
                    &[totals.tokens as f64, totals.sequences as f64],
                    &self.model.device(),
                )?;
                totals = MiniBatchTotals {
                    tokens: t[0] as usize,
                    sequences: t[1] as usize,
                };
            }
            let mut accumulator = GradientsAccumulator::<Qwen25Vl<B>>::new();
            let mut surrogate_stats = SurrogateStats::default();
            let mut loss_sum = 0.0f64;
            let mut entropy = (0.0f64, 0usize);
            for (k, micro) in mini.chunks(cfg.micro_batch_rows).enumerate() {
                let (t, a) = split(micro);
                let batch = PolicyBatch::new(&self.processor, &t, &a, &cfg.rollout)?;
                let row_keep = &keep[k * cfg.micro_batch_rows..k * cfg.micro_batch_rows + t.len()];
                let model = &self.model;
                // The loss from the final hidden states (the same with or without recompute).
                let loss_of = |hidden| -> Result<Tensor<B, 1>> {
                    let (mut tokens, ent) = batch.tokens(model, hidden, true)?;
                    if !cfg.recompute_old_logprobs && u == 0 && gap.1 == 0 {
                        // The policy has not stepped yet: this forward is the one the gap is about.
                        add_gap(&mut gap, &tokens);
                    }
                    tokens.mask = keep_rows(tokens.mask, row_keep);
                    if let Some(old) = olds[u][k].clone() {
                        tokens.old_logp = Tensor::from_inner(old);
                    }
                    tokens.ref_logp = refs[u][k].clone().map(Tensor::from_inner);
                    if let Some(e) = ent {
                        let e = e
                            .detach()
                            .mask_fill(tokens.mask.clone().bool_not(), 0.0)
                            .sum();
                        entropy.0 += f64::from(scalar(e));
                        entropy.1 += count(&tokens.mask);
                    }
                    let mask = tokens.mask.clone();
                    let surrogate = clipped_surrogate(tokens, &cfg.surrogate)?;
                    surrogate_stats.merge(&surrogate.stats);
                    aggregate(surrogate.loss, mask, cfg.aggregation, totals)
                };
                let (loss, grads) =
                    gradients(model, &batch.input(), cfg.recompute_activations, loss_of)?;
                loss_sum += loss;
                accumulator.accumulate(&self.model, grads);
            }
            if let Some(c) = &self.parallel {
                let v = c.sum::<B::InnerBackend>(
                    &[loss_sum, entropy.0, entropy.1 as f64],
                    &self.model.device(),
                )?;
                loss_sum = v[0];
                entropy = (v[1], v[2] as usize);
            }
            let lr = self.schedule.lr_at(self.step);
            let (model, norm) = clip_and_step(
                self.model.clone(),
                &mut self.optimizer,
                accumulator.grads(),
                cfg.max_grad_norm,
                lr,
                self.parallel.as_ref(),
                self.master.as_mut(),
            )?;
            self.model = model;
            self.step += 1;
            let mut m = if u == 0 {
                first.clone()
            } else {
                MetricRecord::new("grpo", self.step as u64)
            };
            m.step = self.step as u64;
            m.set("lr", lr)
                .set("loss", loss_sum)
                .set("grad_norm", f64::from(norm))
                .set("clip_low", surrogate_stats.clip_low_fraction())
                .set("clip_high", surrogate_stats.clip_high_fraction())
                .set("trained_tokens", totals.tokens as f64);
            if let Some(r) = surrogate_stats.ratio_mean() {
                m.set("ratio_mean", r);
            }
            if let (Some(lo), Some(hi)) = (surrogate_stats.ratio_min, surrogate_stats.ratio_max) {
                m.set("ratio_min", f64::from(lo))
                    .set("ratio_max", f64::from(hi));
            }
            if let Some(kl) = surrogate_stats.kl_mean() {
                m.set("kl", kl);
            }
            if entropy.1 > 0 {
                m.set("entropy", entropy.0 / entropy.1 as f64);
            }
            if u == 0 && gap.1 > 0 {
                m.set("logp_gap", gap.0 / gap.1 as f64);
            }
            records.push(m);
        }
        Ok(records)
    }
}

fn split(micro: &[(Trajectory, f32)]) -> (Vec<&Trajectory>, Vec<f32>) {
    micro.iter().map(|(t, a)| (t, *a)).unzip()
}

fn count<B: Backend>(mask: &Tensor<B, 2, Bool>) -> usize {
    scalar(mask.clone().int().sum().float()) as usize
}

/// `mask` with the rows where `keep` is false cleared.
fn keep_rows<B: Backend>(mask: Tensor<B, 2, Bool>, keep: &[bool]) -> Tensor<B, 2, Bool> {
    if keep.iter().all(|&k| k) {
        return mask;
    }
    let [b, s] = mask.dims();
    let device = mask.device();
    let rows = Tensor::<B, 1, Bool>::from_data(TensorData::new(keep.to_vec(), [b]), &device)
        .reshape([b, 1])
        .expand([b, s]);
    mask.int().mul(rows.int()).greater_elem(0)
}
