//! The GRPO loss: group advantages, the asymmetric clipped surrogate with an optional k3 KL term, and the
//! ways of aggregating per-token losses into the mini-batch loss.
//!
//! A GRPO optimizer step on one mini-batch (possibly split into micro-batches for memory):
//!
//! 1. [`advantages`] of each completion from its group's rewards;
//! 2. per micro-batch, [`clipped_surrogate`] on the policy's per-token log-probs (with gradient), the
//!    rollout policy's (`old`) and optionally the reference model's, giving the per-token loss `[b, s]`;
//! 3. [`aggregate`] it with the **mini-batch's** totals ([`MiniBatchTotals`]), so that the micro-batch losses
//!    add up to the one-shot mini-batch loss and their gradients accumulate to the one-shot gradient.
//!
//! # Correspondence with TRL's `GRPOTrainer` (trl 1.16, `_compute_loss`)
//!
//! With `importance_sampling_level="token"`, `delta=None`, no vLLM importance-sampling correction,
//! `top_entropy_quantile=1`, `use_bias_correction_kl=False`, `epsilon_low`/`epsilon_high` and `beta` as in
//! [`SurrogateSettings`], TRL's per-token loss is [`clipped_surrogate`]'s, and its aggregation maps as:
//!
//! | TRL `loss_type` | TRL's micro-batch loss | here |
//! |---|---|---|
//! | `"dapo"` | `Σ mask·loss / (mask count of the accumulation window)` (`num_items_in_batch` rescaled) | [`LossAggregation::TokenMean`] |
//! | `"grpo"` | `mean over its rows of (Σ_t mask·loss / max(1, Σ_t mask))`, divided by the accumulation steps | [`LossAggregation::SequenceMean`]; equal when every micro-batch has the same number of rows (TRL's fixed per-device batch); ours divides by the mini-batch's row count, exact for unequal micro-batches too |
//! | `"dr_grpo"` | `Σ mask·loss / (rows · max_completion_length)`, divided by the accumulation steps | [`LossAggregation::ConstantNormalizer`]`(rows in the mini-batch × max_completion_length)` |
//! | `"bnpo"` | each micro-batch's own token mean, divided by the accumulation steps | not provided (it equals `TokenMean` only when micro-batches hold equal token counts) |
//!
//! TRL's advantages with `scale_rewards="group"` are [`advantages`]`(…, true)`, with `"none"`
//! [`advantages`]`(…, false)`. `tests/loss.rs` checks losses, gradients and clip/KL metrics against values
//! recorded from TRL by `scripts/gen_rl_fixtures.py`.
//!
//! # The released Pixel-Reasoner code
//!
//! Its `PolicyLoss` (OpenRLHF-based `models/loss.py`) uses the same asymmetric clip (0.2 / 0.35), no KL term,
//! and `masked_mean` of `models/utils.py`, which divides each micro-batch's masked token sum by the constant
//! 200 ([`RELEASED_NORMALIZER`]) instead of a token count. DeepSpeed's `backward` (default `scale_wrt_gas`)
//! further divides by the gradient-accumulation steps and data-parallel averaging divides by the number of
//! ranks (from reading those defaults, not measured), so the one-shot equivalent of a whole optimizer step is
//! `ConstantNormalizer(200 × micro-batches per step across ranks)`.

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, FloatDType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Result, RlError};

/// Added to the group's standard deviation before dividing (TRL's `advantages / (std + 1e-4)`).
pub const ADVANTAGE_STD_EPS: f32 = 1e-4;

/// The released code's constant loss normaliser (`masked_mean`: token sum `/ 200.`).
pub const RELEASED_NORMALIZER: f32 = 200.0;

/// GRPO advantages: for each reward `r` of a group (consecutive runs of `group_size` rewards),
/// `A = r − mean(group)`, and with `scale_by_std`, `A = (r − mean(group)) / (std(group) + 1e-4)`.
///
/// `std` is the **unbiased** (Bessel-corrected, `n − 1`) standard deviation, as TRL's `nanstd` (and
/// `torch.std`'s default); a group of one has std 0 (TRL uses zeros there) and advantage 0. A group whose
/// rewards are all equal gets advantages 0. Computed in f64, returned as f32.
///
/// # Errors
/// - [`RlError::GroupSize`] when `group_size` is 0 or `rewards.len()` is not a multiple of it;
/// - [`RlError::NonFiniteReward`] for a NaN or infinite reward.
pub fn advantages(rewards: &[f32], group_size: usize, scale_by_std: bool) -> Result<Vec<f32>> {
    if group_size == 0 || !rewards.len().is_multiple_of(group_size) {
        return Err(RlError::GroupSize {
            len: rewards.len(),
            group_size,
        });
    }
    if let Some((index, &value)) = rewards.iter().enumerate().find(|(_, r)| !r.is_finite()) {
        return Err(RlError::NonFiniteReward { index, value });
    }
    let mut out = Vec::with_capacity(rewards.len());
    for group in rewards.chunks(group_size) {
        let n = group.len() as f64;
        let mean = group.iter().map(|&r| f64::from(r)).sum::<f64>() / n;
        let std = if group.len() > 1 {
            let ss = group
                .iter()
                .map(|&r| (f64::from(r) - mean).powi(2))
                .sum::<f64>();
            (ss / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        for &r in group {
            let centred = f64::from(r) - mean;
            let a = if scale_by_std {
                centred / (std + f64::from(ADVANTAGE_STD_EPS))
            } else {
                centred
            };
            out.push(a as f32);
        }
    }
    Ok(out)
}

/// The surrogate's clipping bounds and KL coefficient.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SurrogateSettings {
    /// ε_low: the ratio is clipped from below at `1 − ε_low`.
    pub epsilon_low: f32,
    /// ε_high: the ratio is clipped from above at `1 + ε_high`.
    pub epsilon_high: f32,
    /// β, the weight of the k3 KL term (0: no KL term even when reference log-probs are given).
    pub kl_beta: f32,
}

impl SurrogateSettings {
    /// The recipe: ε_low 0.2, ε_high 0.35 (the released code's DAPO-style asymmetric clip), β 0 (its KL
    /// term is commented out; TRL's default `beta` is 0 too).
    pub const RECIPE: Self = Self {
        epsilon_low: 0.2,
        epsilon_high: 0.35,
        kl_beta: 0.0,
    };

    /// Checks `0 ≤ ε_low < 1`, `ε_high ≥ 0`, `β ≥ 0`, all finite.
    ///
    /// # Errors
    /// [`RlError::Setting`] naming the value out of range.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.epsilon_low) {
            return Err(RlError::Setting(format!(
                "epsilon_low {} is not in [0, 1)",
                self.epsilon_low
            )));
        }
        if !(self.epsilon_high.is_finite() && self.epsilon_high >= 0.0) {
            return Err(RlError::Setting(format!(
                "epsilon_high {} is not ≥ 0",
                self.epsilon_high
            )));
        }
        if !(self.kl_beta.is_finite() && self.kl_beta >= 0.0) {
            return Err(RlError::Setting(format!(
                "kl_beta {} is not ≥ 0",
                self.kl_beta
            )));
        }
        Ok(())
    }
}

impl Default for SurrogateSettings {
    /// [`SurrogateSettings::RECIPE`].
    fn default() -> Self {
        Self::RECIPE
    }
}

/// One micro-batch of per-token log-probs for [`clipped_surrogate`]; `b` completions, `s` token positions.
#[derive(Clone, Debug)]
pub struct PolicyTokens<B: Backend> {
    /// `[b, s]` log-probs of the sampled tokens under the policy being trained (carries the gradient).
    pub logp: Tensor<B, 2>,
    /// `[b, s]` log-probs under the policy that sampled them (no gradient is taken through them).
    pub old_logp: Tensor<B, 2>,
    /// `[b, s]` log-probs under the reference model, for the KL term and its statistics.
    pub ref_logp: Option<Tensor<B, 2>>,
    /// `[b]` advantage of each completion.
    pub advantages: Tensor<B, 1>,
    /// `[b, s]` true where a token is trained (the model's own tokens), false for padding and observations.
    pub mask: Tensor<B, 2, Bool>,
}

/// [`clipped_surrogate`]'s result: the per-token loss and statistics of the micro-batch.
#[derive(Clone, Debug)]
pub struct Surrogate<B: Backend> {
    /// `[b, s]` per-token loss, exactly 0 at untrained tokens.
    pub loss: Tensor<B, 2>,
    /// Clipping, ratio and KL statistics over the trained tokens.
    pub stats: SurrogateStats,
}

/// Statistics of a surrogate over trained tokens, as sums and counts so micro-batches can be
/// [merged](SurrogateStats::merge) into mini-batch figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SurrogateStats {
    /// Trained tokens (mask count).
    pub tokens: usize,
    /// Trained tokens with `ratio < 1 − ε_low` and `A < 0` (clipped from below: TRL's `clip_ratio/low`).
    pub clipped_low: usize,
    /// Trained tokens with `ratio > 1 + ε_high` and `A > 0` (clipped from above: TRL's `clip_ratio/high`).
    pub clipped_high: usize,
    /// `Σ ratio` over trained tokens.
    pub ratio_sum: f64,
    /// The smallest ratio over trained tokens; `None` without any.
    pub ratio_min: Option<f32>,
    /// The largest ratio over trained tokens; `None` without any.
    pub ratio_max: Option<f32>,
    /// `Σ k3` over trained tokens, when reference log-probs were given (whatever β).
    pub kl_sum: Option<f64>,
}

impl SurrogateStats {
    /// `clipped_low / tokens` (0 without tokens).
    pub fn clip_low_fraction(&self) -> f64 {
        fraction(self.clipped_low as f64, self.tokens)
    }

    /// `clipped_high / tokens` (0 without tokens).
    pub fn clip_high_fraction(&self) -> f64 {
        fraction(self.clipped_high as f64, self.tokens)
    }

    /// `ratio_sum / tokens`; `None` without tokens.
    pub fn ratio_mean(&self) -> Option<f64> {
        (self.tokens > 0).then(|| fraction(self.ratio_sum, self.tokens))
    }

    /// `kl_sum / tokens` (the mean k3 estimate); `None` without tokens or reference log-probs.
    pub fn kl_mean(&self) -> Option<f64> {
        self.kl_sum
            .filter(|_| self.tokens > 0)
            .map(|k| fraction(k, self.tokens))
    }

    /// Adds `other`'s counts and sums; min/max of both (a `None` side is ignored, as is a `None` KL sum).
    pub fn merge(&mut self, other: &SurrogateStats) {
        self.tokens += other.tokens;
        self.clipped_low += other.clipped_low;
        self.clipped_high += other.clipped_high;
        self.ratio_sum += other.ratio_sum;
        self.ratio_min = pick(self.ratio_min, other.ratio_min, f32::min);
        self.ratio_max = pick(self.ratio_max, other.ratio_max, f32::max);
        self.kl_sum = pick(self.kl_sum, other.kl_sum, |a, b| a + b);
    }
}

fn fraction(x: f64, n: usize) -> f64 {
    if n == 0 { 0.0 } else { x / n as f64 }
}

fn pick<T>(a: Option<T>, b: Option<T>, f: impl Fn(T, T) -> T) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// The per-token clipped surrogate with asymmetric clipping and the optional k3 KL term.
///
/// At each trained token, with `A` the completion's advantage:
///
/// - `ratio = exp(logp − old_logp)`;
/// - `loss = −min(ratio·A, clip(ratio, 1 − ε_low, 1 + ε_high)·A)`;
/// - with reference log-probs and `β > 0`, plus `β·k3`, `k3 = exp(ref − logp) − (ref − logp) − 1` (Schulman's
///   non-negative KL estimate; TRL's `per_token_kl`).
///
/// At untrained tokens the loss is exactly 0 and no gradient reaches `logp`: the log-ratio and the
/// reference difference are replaced by 0 there **before** `exp`, so padding holding any value (even NaN or
/// ±∞) neither contributes nor poisons the gradient. The statistics (see [`SurrogateStats`]) cost one
/// device-to-host read; they are computed on detached tensors in f32.
///
/// # Errors
/// - [`RlError::Setting`] when `settings` fail [`SurrogateSettings::validate`];
/// - [`RlError::Shape`] unless `logp`, `old_logp`, `ref_logp` and `mask` are all `[b, s]` and
///   `advantages` is `[b]`.
pub fn clipped_surrogate<B: Backend>(
    tokens: PolicyTokens<B>,
    settings: &SurrogateSettings,
) -> Result<Surrogate<B>> {
    settings.validate()?;
    let PolicyTokens {
        logp,
        old_logp,
        ref_logp,
        advantages,
        mask,
    } = tokens;
    let dims = logp.dims();
    let [b, s] = dims;
    let check = |name: &str, got: [usize; 2]| {
        if got == dims {
            Ok(())
        } else {
            Err(RlError::Shape(format!(
                "{name} is {got:?}, logp is {dims:?}"
            )))
        }
    };
    check("old_logp", old_logp.dims())?;
    check("mask", mask.dims())?;
    if let Some(r) = &ref_logp {
        check("ref_logp", r.dims())?;
    }
    if advantages.dims() != [b] {
        return Err(RlError::Shape(format!(
            "advantages are {:?} for {b} completions",
            advantages.dims()
        )));
    }

    let skip = mask.clone().bool_not();
    let log_ratio = (logp.clone() - old_logp).mask_fill(skip.clone(), 0.0);
    let ratio = log_ratio.exp();
    let adv = advantages.reshape([b, 1]).expand([b, s]);
    let low = 1.0 - settings.epsilon_low;
    let high = 1.0 + settings.epsilon_high;
    let unclipped = ratio.clone() * adv.clone();
    let clipped = ratio.clone().clamp(low, high) * adv.clone();
    let mut loss = unclipped.min_pair(clipped).neg();
    let k3 = ref_logp.map(|r| {
        let d = (r - logp).mask_fill(skip.clone(), 0.0);
        d.clone().exp() - d - 1.0
    });
    if let Some(k3) = &k3
        && settings.kl_beta != 0.0
    {
        loss = loss + k3.clone().mul_scalar(settings.kl_beta);
    }
    let loss = loss.mask_fill(skip.clone(), 0.0);

    // Statistics, detached, in f32, read back at once.
    let f32_of = |t: Tensor<B, 2>| t.detach().cast(FloatDType::F32);
    let ratio = f32_of(ratio);
    let adv = f32_of(adv);
    let keep = mask.clone();
    let count = |m: Tensor<B, 2, Bool>| m.float().cast(FloatDType::F32).sum();
    let low_hits = ratio
        .clone()
        .lower_elem(low)
        .bool_and(adv.clone().lower_elem(0.0))
        .bool_and(keep.clone());
    let high_hits = ratio
        .clone()
        .greater_elem(high)
        .bool_and(adv.greater_elem(0.0))
        .bool_and(keep.clone());
    let mut parts = vec![
        count(keep),
        count(low_hits),
        count(high_hits),
        ratio.clone().mask_fill(skip.clone(), 0.0).sum(),
        ratio.clone().mask_fill(skip.clone(), f32::INFINITY).min(),
        ratio.mask_fill(skip.clone(), f32::NEG_INFINITY).max(),
    ];
    if let Some(k3) = k3 {
        parts.push(f32_of(k3).mask_fill(skip, 0.0).sum());
    }
    let values: Vec<f32> = Tensor::cat(parts, 0).into_data().iter::<f32>().collect();
    let at = |i: usize| values.get(i).copied().unwrap_or(f32::NAN);
    let n = at(0).round() as usize;
    let stats = SurrogateStats {
        tokens: n,
        clipped_low: at(1).round() as usize,
        clipped_high: at(2).round() as usize,
        ratio_sum: f64::from(at(3)),
        ratio_min: (n > 0).then(|| at(4)),
        ratio_max: (n > 0).then(|| at(5)),
        kl_sum: (values.len() > 6).then(|| f64::from(at(6))),
    };
    Ok(Surrogate { loss, stats })
}

/// How per-token losses become the mini-batch loss.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum LossAggregation {
    /// `Σ_{i,t} mask·loss / N_tokens`, `N_tokens` the trained tokens of the **whole mini-batch** (TRL's
    /// `"dapo"`): every token weighs the same.
    TokenMean,
    /// `Σ_i (Σ_t mask·loss / max(1, Σ_t mask)) / N_sequences`, `N_sequences` the completions of the whole
    /// mini-batch (TRL's `"grpo"`): every completion weighs the same; a completion without trained tokens
    /// contributes 0 but counts.
    SequenceMean,
    /// `Σ_{i,t} mask·loss / c` for a constant `c` (the released code's `masked_mean`, `c = 200` per
    /// micro-batch; see the module docs for its gradient-accumulation equivalent).
    ConstantNormalizer(f32),
}

/// The denominators of a whole mini-batch (all the micro-batches of one optimizer step).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MiniBatchTotals {
    /// Trained tokens over the whole mini-batch.
    pub tokens: usize,
    /// Completions (rows) over the whole mini-batch, trained tokens or not.
    pub sequences: usize,
}

impl MiniBatchTotals {
    /// Totals of the mini-batch whose completions have these loss masks (one slice per completion).
    pub fn from_masks<'a>(masks: impl IntoIterator<Item = &'a [bool]>) -> Self {
        masks
            .into_iter()
            .fold(Self::default(), |acc, row| MiniBatchTotals {
                tokens: acc.tokens + row.iter().filter(|&&m| m).count(),
                sequences: acc.sequences + 1,
            })
    }
}

/// A micro-batch's share of the mini-batch loss: its per-token `loss [b, s]` under `mask [b, s]`, divided
/// by the **mini-batch** denominators in `totals` (see [`LossAggregation`] for the formulas).
///
/// Because the denominators are the mini-batch's, summing this over the micro-batches gives the loss of the
/// mini-batch computed in one go, and accumulating their gradients gives its gradient. Untrained tokens
/// contribute exactly 0 (they are selected out, not multiplied by 0). `totals.tokens` of 0 is treated as 1
/// (the sum is then 0 anyway), as TRL clamps its denominators.
///
/// # Errors
/// - [`RlError::Shape`] when `loss` and `mask` differ in shape, or `totals.sequences` is smaller than this
///   micro-batch's row count;
/// - [`RlError::Setting`] for a constant normaliser that is not finite and positive.
pub fn aggregate<B: Backend>(
    loss: Tensor<B, 2>,
    mask: Tensor<B, 2, Bool>,
    mode: LossAggregation,
    totals: MiniBatchTotals,
) -> Result<Tensor<B, 1>> {
    let [b, _] = loss.dims();
    if loss.dims() != mask.dims() {
        return Err(RlError::Shape(format!(
            "loss is {:?}, mask is {:?}",
            loss.dims(),
            mask.dims()
        )));
    }
    if totals.sequences < b {
        return Err(RlError::Shape(format!(
            "the mini-batch totals count {} sequences, this micro-batch alone has {b}",
            totals.sequences
        )));
    }
    let masked = loss.mask_fill(mask.clone().bool_not(), 0.0);
    match mode {
        LossAggregation::TokenMean => Ok(masked.sum().div_scalar(totals.tokens.max(1) as f64)),
        LossAggregation::SequenceMean => {
            let per_row = masked.sum_dim(1);
            let counts = mask.float().sum_dim(1).clamp_min(1.0);
            Ok((per_row / counts)
                .sum()
                .div_scalar(totals.sequences.max(1) as f64))
        }
        LossAggregation::ConstantNormalizer(c) => {
            if !(c.is_finite() && c > 0.0) {
                return Err(RlError::Setting(format!(
                    "constant loss normaliser {c} is not a finite positive number"
                )));
            }
            Ok(masked.sum().div_scalar(f64::from(c)))
        }
    }
}
