//! The recipe's optimizer pieces: AdamW settings, **global** gradient-norm clipping, and warmup then cosine
//! decay to a minimum learning rate.
//!
//! - [`AdamWSettings`]: betas (0.9, 0.95), ε 1e-8, weight decay 0 (the released RL code's `--adam_betas`
//!   and `--l2` defaults; ε is torch's/transformers' default), turned into a burn [`AdamWConfig`].
//! - [`clip_grad_norm`]: torch's `clip_grad_norm_` over all of a module's gradients at once. burn's own
//!   `GradientClippingConfig::Norm` clips each parameter tensor by its own norm, which is a different
//!   operation, so the config from [`AdamWSettings::config`] carries no clipping: call [`clip_grad_norm`] on
//!   the [`GradientsParams`] before `Optimizer::step` (the recipe's `max_norm` is [`RECIPE_MAX_GRAD_NORM`]).
//! - [`WarmupCosineSchedule`]: transformers' `get_cosine_with_min_lr_schedule_with_warmup`, value for value
//!   (checked against values recorded from transformers by `scripts/gen_rl_fixtures.py`), usable as a burn
//!   [`LrScheduler`] or through [`WarmupCosineSchedule::lr_at`].

use std::collections::HashSet;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::lr_scheduler::LrScheduler;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{FloatDType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Result, RlError};

/// The recipe's gradient clipping threshold: the released RL code's `--max_norm` default (1.0).
pub const RECIPE_MAX_GRAD_NORM: f32 = 1.0;

/// The constant torch's `clip_grad_norm_` adds to the total norm before dividing: `coef = max / (norm + 1e-6)`.
pub const CLIP_NORM_EPS: f32 = 1e-6;

/// AdamW hyper-parameters (the learning rate comes from the schedule, not from here).
///
/// The update is torch's `AdamW` (and burn's `AdamW`, which computes the same thing):
/// `m ← β₁·m + (1−β₁)·g`, `v ← β₂·v + (1−β₂)·g²`, `θ ← θ·(1 − lr·λ) − lr · m̂ / (√v̂ + ε)` with the
/// bias-corrected `m̂ = m / (1−β₁ᵗ)`, `v̂ = v / (1−β₂ᵗ)`.
///
/// [`AdamWSettings::RECIPE`] differs from burn's `AdamWConfig::new()` defaults in three values:
///
/// | field | recipe | burn 0.21 default | why |
/// |---|---|---|---|
/// | `beta_2` | 0.95 | 0.999 | the released RL code's `--adam_betas 0.9 0.95` |
/// | `epsilon` | 1e-8 | 1e-5 | torch's / transformers' AdamW default |
/// | `weight_decay` | 0 | 1e-4 | the released RL code's `--l2 0` (and transformers' `weight_decay` default) |
///
/// `beta_1` (0.9) is the same in both.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWSettings {
    /// β₁, the first-moment decay.
    pub beta_1: f32,
    /// β₂, the second-moment decay.
    pub beta_2: f32,
    /// ε, added to `√v̂` in the denominator.
    pub epsilon: f32,
    /// λ, the decoupled weight decay (`θ ← θ·(1 − lr·λ)` each step).
    pub weight_decay: f32,
}

impl AdamWSettings {
    /// The recipe: β = (0.9, 0.95), ε = 1e-8, λ = 0.
    pub const RECIPE: Self = Self {
        beta_1: 0.9,
        beta_2: 0.95,
        epsilon: 1e-8,
        weight_decay: 0.0,
    };

    /// Checks `0 ≤ β₁ < 1`, `0 ≤ β₂ < 1`, `ε > 0`, `λ ≥ 0`, all finite.
    ///
    /// # Errors
    /// [`RlError::Setting`] naming the first value out of range.
    pub fn validate(&self) -> Result<()> {
        let beta = |name: &str, b: f32| {
            if (0.0..1.0).contains(&b) {
                Ok(())
            } else {
                Err(RlError::Setting(format!(
                    "AdamW {name} = {b} is not in [0, 1)"
                )))
            }
        };
        beta("beta_1", self.beta_1)?;
        beta("beta_2", self.beta_2)?;
        if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
            return Err(RlError::Setting(format!(
                "AdamW epsilon = {} is not > 0",
                self.epsilon
            )));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(RlError::Setting(format!(
                "AdamW weight_decay = {} is not ≥ 0",
                self.weight_decay
            )));
        }
        Ok(())
    }

    /// burn's [`AdamWConfig`] with these values, no AMSGrad, no cautious weight decay, and **no** gradient
    /// clipping (use [`clip_grad_norm`]: burn's per-tensor norm clipping is not torch's global one).
    ///
    /// # Errors
    /// [`RlError::Setting`] as [`AdamWSettings::validate`].
    pub fn config(&self) -> Result<AdamWConfig> {
        self.validate()?;
        Ok(AdamWConfig::new()
            .with_beta_1(self.beta_1)
            .with_beta_2(self.beta_2)
            .with_epsilon(self.epsilon)
            .with_weight_decay(self.weight_decay)
            .with_amsgrad(false)
            .with_cautious_weight_decay(false)
            .with_grad_clipping(None))
    }
}

impl Default for AdamWSettings {
    /// [`AdamWSettings::RECIPE`].
    fn default() -> Self {
        Self::RECIPE
    }
}

/// Collects `Σ g²` of each parameter gradient once (tied parameters share an id and count once).
struct SquaredNorms<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    seen: HashSet<ParamId>,
    sums: Vec<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorms<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !self.seen.insert(param.id) {
            return;
        }
        if let Some(grad) = self.grads.get::<B::InnerBackend, D>(param.id) {
            // Summed in f32 whatever the gradient dtype, as torch's norm of a bf16 tensor accumulates in f32.
            let grad = grad.cast(FloatDType::F32);
            self.sums.push(grad.square().sum());
        }
    }
}

/// Multiplies each parameter gradient by `coef`, once per parameter id.
struct Scale<'a> {
    grads: &'a mut GradientsParams,
    seen: HashSet<ParamId>,
    coef: f32,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !self.seen.insert(param.id) {
            return;
        }
        if let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads
                .register::<B::InnerBackend, D>(param.id, grad.mul_scalar(self.coef));
        }
    }
}

/// The global L2 norm of `module`'s gradients in `grads`: `‖g‖ = √(Σ_params Σ_elements g²)`.
///
/// Parameters without a gradient in `grads` (frozen ones) count as zero; a parameter reached twice (tied
/// weights) counts once. One device-to-host read.
pub fn grad_norm<B: AutodiffBackend, M: Module<B>>(module: &M, grads: &GradientsParams) -> f32 {
    let mut visitor = SquaredNorms::<B> {
        grads,
        seen: HashSet::new(),
        sums: Vec::new(),
    };
    Module::<B>::visit(module, &mut visitor);
    if visitor.sums.is_empty() {
        return 0.0;
    }
    Tensor::cat(visitor.sums, 0)
        .sum()
        .sqrt()
        .into_data()
        .iter::<f32>()
        .next()
        .unwrap_or(f32::NAN)
}

/// Global gradient-norm clipping, torch's `clip_grad_norm_(parameters, max_norm)` (L2, not foreach-specific):
///
/// `norm = √(Σ_params Σ_elements g²)`, `coef = min(1, max_norm / (norm + 1e-6))`, every gradient `g ← coef·g`.
///
/// Returns the norm **before** clipping (for metrics). When `coef` is 1 the gradients are left untouched
/// (torch multiplies by 1.0, which changes nothing either). Parameters without a gradient in `grads`
/// (frozen ones) are neither counted nor touched; a parameter reached twice (tied weights) counts and is
/// scaled once.
///
/// # Errors
/// - [`RlError::Setting`] when `max_norm` is not a finite positive number.
/// - [`RlError::NonFiniteGradNorm`] when the norm is NaN or infinite; `grads` are then left as they were
///   (torch would multiply them by NaN), so the caller can skip the step.
pub fn clip_grad_norm<B: AutodiffBackend, M: Module<B>>(
    module: &M,
    grads: &mut GradientsParams,
    max_norm: f32,
) -> Result<f32> {
    if !(max_norm.is_finite() && max_norm > 0.0) {
        return Err(RlError::Setting(format!(
            "max_norm = {max_norm} is not a finite positive number"
        )));
    }
    let norm = grad_norm::<B, M>(module, grads);
    if !norm.is_finite() {
        return Err(RlError::NonFiniteGradNorm(norm));
    }
    let coef = max_norm / (norm + CLIP_NORM_EPS);
    if coef < 1.0 {
        let mut visitor = Scale {
            grads,
            seen: HashSet::new(),
            coef,
        };
        Module::<B>::visit(module, &mut visitor);
    }
    Ok(norm)
}

/// The number of warmup steps transformers derives from a ratio: `⌈total · ratio⌉`, computed in f64 like
/// `TrainingArguments.get_warmup_steps` (so `⌈100 · 0.07⌉` is 8, not 7: `100 · 0.07` is `7.000000000000001`).
/// The released RL code computes `math.ceil(max_steps * lr_warmup_ratio)`, the same thing.
///
/// # Errors
/// [`RlError::Setting`] when `ratio` is not in `[0, 1]`.
pub fn warmup_steps_from_ratio(total_steps: usize, ratio: f64) -> Result<usize> {
    if !(0.0..=1.0).contains(&ratio) {
        return Err(RlError::Setting(format!(
            "warmup ratio {ratio} is not in [0, 1]"
        )));
    }
    // ratio ≤ 1, so the product is at most `total_steps` (plus rounding) and fits back in usize.
    Ok((total_steps as f64 * ratio).ceil() as usize)
}

/// Linear warmup from 0, then cosine decay to `min_lr_rate × peak_lr`: transformers'
/// `get_cosine_with_min_lr_schedule_with_warmup(num_warmup_steps, num_training_steps, num_cycles,
/// min_lr_rate)` on an optimizer whose learning rate is `peak_lr`.
///
/// At optimizer step `t` (0 for the first update; the value torch's `LambdaLR` holds before its `t`-th
/// `step()`), with `w` warmup steps, `T` total steps, `c` cycles (0.5: one half-cosine) and `r` the minimum
/// rate:
///
/// - `t < w`: `lr = peak · t / max(1, w)` (so the very first update uses lr 0 when `w > 0`);
/// - otherwise `p = (t − w) / max(1, T − w)`, `f = ½·(1 + cos(π · c · 2 · p))`,
///   `lr = peak · max(0, f·(1 − r) + r)`.
///
/// Past `T` the formula is followed as transformers does (with `c = 0.5` the cosine climbs back up); a
/// trainer stops at `T`. The recipe: peak 1e-6; RL: warmup `⌈3 % · T⌉`, `r = 0.5`
/// ([`WarmupCosineSchedule::rl_recipe`]); SFT: transformers' `cosine` with warmup ratio 0.1, i.e. `r = 0`
/// ([`WarmupCosineSchedule::sft_recipe`]).
///
/// As a burn [`LrScheduler`], each `step()` returns `lr_at(current)` and then advances; its record is the
/// number of steps taken. The whole struct (settings and position) is also serde-serialisable for
/// checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct WarmupCosineSchedule {
    peak_lr: f64,
    warmup_steps: usize,
    total_steps: usize,
    min_lr_rate: f64,
    num_cycles: f64,
    step: usize,
}

impl WarmupCosineSchedule {
    /// The recipe's peak learning rate (SFT and RL): 1e-6.
    pub const RECIPE_PEAK_LR: f64 = 1e-6;

    /// A schedule at step 0 with `num_cycles` 0.5.
    ///
    /// # Errors
    /// [`RlError::Setting`] unless `peak_lr` is finite and positive, `min_lr_rate` is in `[0, 1]`,
    /// `total_steps ≥ 1` and `warmup_steps ≤ total_steps`.
    pub fn new(
        peak_lr: f64,
        warmup_steps: usize,
        total_steps: usize,
        min_lr_rate: f64,
    ) -> Result<Self> {
        if !(peak_lr.is_finite() && peak_lr > 0.0) {
            return Err(RlError::Setting(format!(
                "peak learning rate {peak_lr} is not > 0"
            )));
        }
        if !(0.0..=1.0).contains(&min_lr_rate) {
            return Err(RlError::Setting(format!(
                "min_lr_rate {min_lr_rate} is not in [0, 1]"
            )));
        }
        if total_steps == 0 || warmup_steps > total_steps {
            return Err(RlError::Setting(format!(
                "{warmup_steps} warmup steps out of {total_steps} total (need 1 ≤ total, warmup ≤ total)"
            )));
        }
        Ok(Self {
            peak_lr,
            warmup_steps,
            total_steps,
            min_lr_rate,
            num_cycles: 0.5,
            step: 0,
        })
    }

    /// The same schedule with `num_cycles` waves of the cosine (0.5: decay once, transformers' default).
    ///
    /// # Errors
    /// [`RlError::Setting`] when `num_cycles` is negative or not finite.
    pub fn with_num_cycles(mut self, num_cycles: f64) -> Result<Self> {
        if !(num_cycles.is_finite() && num_cycles >= 0.0) {
            return Err(RlError::Setting(format!(
                "num_cycles {num_cycles} is not ≥ 0"
            )));
        }
        self.num_cycles = num_cycles;
        Ok(self)
    }

    /// The RL recipe over `total_steps` optimizer steps: peak 1e-6, warmup `⌈0.03 · total⌉`, minimum 0.5 ×
    /// peak (the released code's `lr_warmup_ratio` 0.03 and `min_lr = 0.5 · lr`).
    ///
    /// # Errors
    /// [`RlError::Setting`] when `total_steps` is 0.
    pub fn rl_recipe(total_steps: usize) -> Result<Self> {
        Self::new(
            Self::RECIPE_PEAK_LR,
            warmup_steps_from_ratio(total_steps, 0.03)?,
            total_steps,
            0.5,
        )
    }

    /// The SFT recipe over `total_steps` optimizer steps: peak 1e-6, warmup `⌈0.1 · total⌉`, decay to 0
    /// (transformers' `cosine` with `--warmup_ratio 0.1`).
    ///
    /// # Errors
    /// [`RlError::Setting`] when `total_steps` is 0.
    pub fn sft_recipe(total_steps: usize) -> Result<Self> {
        Self::new(
            Self::RECIPE_PEAK_LR,
            warmup_steps_from_ratio(total_steps, 0.1)?,
            total_steps,
            0.0,
        )
    }

    /// The learning rate of optimizer step `step` (see the type's formula); does not move the schedule.
    pub fn lr_at(&self, step: usize) -> f64 {
        let factor = if step < self.warmup_steps {
            step as f64 / self.warmup_steps.max(1) as f64
        } else {
            let progress = (step - self.warmup_steps) as f64
                / (self.total_steps - self.warmup_steps).max(1) as f64;
            let cosine =
                0.5 * (1.0 + (std::f64::consts::PI * self.num_cycles * 2.0 * progress).cos());
            (cosine * (1.0 - self.min_lr_rate) + self.min_lr_rate).max(0.0)
        };
        self.peak_lr * factor
    }

    /// The number of steps taken so far (the index of the next optimizer step).
    pub fn current_step(&self) -> usize {
        self.step
    }

    /// The same schedule positioned at `step` (resuming from a checkpoint).
    pub fn at_step(mut self, step: usize) -> Self {
        self.step = step;
        self
    }

    /// The peak learning rate.
    pub fn peak_lr(&self) -> f64 {
        self.peak_lr
    }

    /// The number of warmup steps.
    pub fn warmup_steps(&self) -> usize {
        self.warmup_steps
    }

    /// The total number of optimizer steps.
    pub fn total_steps(&self) -> usize {
        self.total_steps
    }

    /// The minimum learning rate as a fraction of the peak.
    pub fn min_lr_rate(&self) -> f64 {
        self.min_lr_rate
    }
}

impl LrScheduler for WarmupCosineSchedule {
    /// The number of steps taken.
    type Record<B: Backend> = usize;

    /// `lr_at(current_step)`, then advances by one.
    fn step(&mut self) -> f64 {
        let lr = self.lr_at(self.step);
        self.step = self.step.saturating_add(1);
        lr
    }

    fn to_record<B: Backend>(&self) -> usize {
        self.step
    }

    fn load_record<B: Backend>(self, record: usize) -> Self {
        self.at_step(record)
    }
}
