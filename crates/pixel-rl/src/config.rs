//! Trainer configurations: every default of the recipe is a field, with presets.
//!
//! [`GrpoConfig`] and [`SftConfig`] are burn [`Config`]s (`save`/`load` as JSON, `with_*` setters).
//! Three presets each:
//!
//! | field | `paper()` (= `new()`) | `official()` (released code) | `demo()` (tiny CPU runs) |
//! |---|---|---|---|
//! | reward | paper formula | released formula (bonus scaled by 1/RaPR, correct + failed last op = 0) | paper |
//! | loss aggregation | token mean over the mini-batch | constant normaliser 200 | token mean |
//! | old log-probs | recomputed before the first update | recomputed | taken from the rollout |
//! | queries × rollouts per buffer | 512 × 8 | 512 × 8 | 8 × 8 |
//! | optimizer steps per buffer | 16 | 16 | 2 |
//! | learning rate | 1e-6, 3 % warmup, cosine to 0.5× | same | 1e-4 (a from-scratch model) |
//! | selective sample replay | on | on | off |
//! | new tokens per turn | 2,048 | 2,048 | 64 |
//!
//! Shared by all three: group 8, advantage `r − mean` without std scaling, ε_low 0.2 / ε_high 0.35, no KL
//! and no reference model, reward-uniform groups dropped and refilled, global gradient clipping at 1.0,
//! AdamW β (0.9, 0.95), ε 1e-8, weight decay 0, vision tower trained, truncated rollouts trained.
//!
//! The SFT presets differ in the loss mask: `paper()` trains the model's own spans
//! ([`MaskRule::Paper`]), `official()` the last two assistant turns with their headers
//! ([`MaskRule::ReleasedLastTwoTurns`]); both use lr 1e-6 with 10 % warmup and cosine to 0, batch 16, 5
//! epochs, the vision tower frozen. `demo()` uses lr 3e-4, batch 8, 3 epochs.

use burn::config::Config;
use pixel_agent::RolloutConfig;
use pixel_reward::{RewardConfig, RewardVariant};
use pixel_vlm::lora::LoraConfig;

use crate::error::RlError;
use crate::loss::{LossAggregation, SurrogateSettings};
use crate::optim::{AdamWSettings, RECIPE_MAX_GRAD_NORM};
use crate::sft::MaskRule;

/// Settings of [`crate::trainer::GrpoTrainer`]. Defaults are the paper's recipe ([`GrpoConfig::paper`]).
#[derive(Config, Debug, PartialEq)]
pub struct GrpoConfig {
    /// Rollout buffers (iterations) to train for.
    pub iterations: usize,
    /// Rollouts per query (official: 8).
    #[config(default = 8)]
    pub group_size: usize,
    /// Queries whose groups make one rollout buffer (official: 512).
    #[config(default = 512)]
    pub queries_per_buffer: usize,
    /// Optimizer steps per rollout buffer (official: 16, i.e. mini-batches of 32 groups).
    #[config(default = 16)]
    pub updates_per_buffer: usize,
    /// Rows per forward/backward; gradients are accumulated over the micro-batches of a mini-batch.
    #[config(default = 4)]
    pub micro_batch_rows: usize,
    /// Peak learning rate (official: 1e-6).
    #[config(default = 1e-6)]
    pub learning_rate: f64,
    /// Share of the optimizer steps spent warming up linearly from 0 (official: 0.03).
    #[config(default = 0.03)]
    pub warmup_ratio: f64,
    /// The cosine decays to this share of the peak (official: 0.5).
    #[config(default = 0.5)]
    pub min_lr_rate: f64,
    /// AdamW's betas, ε and weight decay.
    #[config(default = "AdamWSettings::RECIPE")]
    pub adamw: AdamWSettings,
    /// Global gradient-norm clipping threshold (official: 1.0); `None` disables clipping.
    #[config(default = "Some(RECIPE_MAX_GRAD_NORM)")]
    pub max_grad_norm: Option<f32>,
    /// The curiosity reward's α, β, H, N and formula, used by [`crate::trainer::GrpoTrainer::curious`]
    /// (a trainer given another [`crate::reward::Reward`] does not read it).
    #[config(default = "RewardConfig::default()")]
    pub reward: RewardConfig,
    /// Scale advantages by the group's standard deviation (off in the recipe).
    #[config(default = false)]
    pub scale_advantages_by_std: bool,
    /// Clipping bounds and the KL weight (β > 0 loads a frozen reference model: the initial policy).
    #[config(default = "SurrogateSettings::RECIPE")]
    pub surrogate: SurrogateSettings,
    /// How per-token losses become the mini-batch loss.
    #[config(default = "LossAggregation::TokenMean")]
    pub aggregation: LossAggregation,
    /// Recompute the old policy's log-probs before the first update of a buffer (the official trainer
    /// does) instead of using the rollout's sampling log-probs.
    #[config(default = true)]
    pub recompute_old_logprobs: bool,
    /// Drop groups whose rewards are all equal (they carry no signal) and draw more queries instead.
    #[config(default = true)]
    pub drop_uniform_groups: bool,
    /// At most this many queries are drawn per buffer, refills included, as a multiple of
    /// `queries_per_buffer` (a buffer that stays short is trained as it is).
    #[config(default = 2.0)]
    pub max_draw_factor: f64,
    /// Selective sample replay: a short buffer is topped up with earlier non-uniform groups, drawn with
    /// probability proportional to their mean |advantage|.
    #[config(default = true)]
    pub selective_replay: bool,
    /// Groups kept for replay (the oldest leave first).
    #[config(default = 1024)]
    pub replay_capacity: usize,
    /// Train no token of a rollout that ran out of tokens or context (truncated answers).
    #[config(default = false)]
    pub mask_truncated: bool,
    /// Train the vision tower (official RL: yes).
    #[config(default = true)]
    pub train_vision: bool,
    /// Sampling, limits and tools of the rollouts (its `seed` is replaced per iteration and draw).
    #[config(default = "RolloutConfig::default()")]
    pub rollout: RolloutConfig,
    /// Seed of data order, rollouts and replay.
    #[config(default = 0)]
    pub seed: u64,
    /// Write a checkpoint every this many iterations (0: only at the end) when the trainer has a run
    /// folder.
    #[config(default = 1)]
    pub checkpoint_every: usize,
    /// Checkpoints kept in the run folder (the newest).
    #[config(default = 2)]
    pub keep_checkpoints: usize,
    /// Train LoRA adapters only (the base frozen; `None`: every trainable parameter). The trainer adds
    /// them to the model it is given; checkpoints hold the adapters in PEFT's layout (`adapter/`), and
    /// `export` merges them into the base.
    #[config(default = "None")]
    pub lora: Option<LoraConfig>,
    /// Keep f32 master copies of the trainable parameters and step the optimizer on them
    /// ([`pixel_vlm::train::MasterWeights`]): for full fine-tuning of a bf16/f16 policy, whose parameters
    /// would silently drop updates far below their rounding step (at lr 1e-6, almost all). The policy is
    /// cast from the copies after every step; checkpoints hold the copies (f32). No effect on an f32
    /// policy; refused with `lora` (the adapters are f32 already).
    #[config(default = false)]
    pub master_weights: bool,
    /// Recompute each decoder layer's activations during the backward pass
    /// ([`pixel_vlm::Qwen25Vl::backward_recomputed`]): activation memory of the layers' inputs plus one
    /// layer's graph instead of every layer's, for one more forward of the decoder. The gradients are the
    /// plain backward's up to the order of summation. Refused with LoRA dropout (the recomputed forward
    /// would draw other masks).
    #[config(default = false)]
    pub recompute_activations: bool,
}

impl GrpoConfig {
    /// The paper's recipe (the same as [`GrpoConfig::new`]).
    pub fn paper(iterations: usize) -> Self {
        Self::new(iterations)
    }

    /// The released code's behaviour: its reward formula and its constant loss normaliser of 200.
    pub fn official(iterations: usize) -> Self {
        Self::new(iterations)
            .with_reward(RewardConfig {
                variant: RewardVariant::ReleasedCode,
                ..RewardConfig::default()
            })
            .with_aggregation(LossAggregation::ConstantNormalizer(200.0))
    }

    /// Tiny CPU runs: 8 queries × 8 rollouts, 2 updates per buffer, lr 1e-4, 64 new tokens per turn,
    /// old log-probs from the rollout, no replay.
    pub fn demo(iterations: usize) -> Self {
        Self::new(iterations)
            .with_queries_per_buffer(8)
            .with_updates_per_buffer(2)
            .with_learning_rate(1e-4)
            .with_warmup_ratio(0.0)
            .with_recompute_old_logprobs(false)
            .with_selective_replay(false)
            .with_rollout(RolloutConfig {
                max_new_tokens: 64,
                ..RolloutConfig::default()
            })
    }

    /// Rollouts per buffer.
    pub fn rollouts_per_buffer(&self) -> usize {
        self.queries_per_buffer * self.group_size
    }

    /// Checks every field's range.
    ///
    /// # Errors
    /// [`RlError::Setting`] naming the field.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(RlError::Setting(m));
        if self.iterations == 0 {
            return bad("iterations must be at least 1".into());
        }
        if self.group_size < 2 {
            return bad(format!(
                "group_size {} < 2: a group-relative advantage needs two rollouts",
                self.group_size
            ));
        }
        if self.queries_per_buffer == 0
            || self.updates_per_buffer == 0
            || self.micro_batch_rows == 0
        {
            return bad(
                "queries_per_buffer, updates_per_buffer and micro_batch_rows must be ≥ 1".into(),
            );
        }
        if self.updates_per_buffer > self.queries_per_buffer {
            return bad(format!(
                "updates_per_buffer {} > queries_per_buffer {}: a mini-batch needs at least one group",
                self.updates_per_buffer, self.queries_per_buffer
            ));
        }
        validate_optimization(
            self.learning_rate,
            self.warmup_ratio,
            self.min_lr_rate,
            self.max_grad_norm,
        )?;
        if !(self.max_draw_factor.is_finite() && self.max_draw_factor >= 1.0) {
            return bad(format!("max_draw_factor {} < 1", self.max_draw_factor));
        }
        self.adamw.validate()?;
        self.surrogate.validate()?;
        self.reward.validate()?;
        validate_memory(
            self.lora.as_ref(),
            self.master_weights,
            self.recompute_activations,
        )
    }

    /// Total optimizer steps of the run.
    pub fn total_steps(&self) -> usize {
        self.iterations * self.updates_per_buffer
    }
}

/// Settings of [`crate::trainer::SftTrainer`]. Defaults are the paper's ([`SftConfig::paper`]).
#[derive(Config, Debug, PartialEq)]
pub struct SftConfig {
    /// Passes over the data (released: 5).
    #[config(default = 5)]
    pub epochs: usize,
    /// Examples per optimizer step (released: 16).
    #[config(default = 16)]
    pub batch_size: usize,
    /// Examples per forward/backward; gradients accumulate over the micro-batches of a batch.
    #[config(default = 1)]
    pub micro_batch_size: usize,
    /// Cut each batch into micro-batches of rows of similar length
    /// ([`crate::data::micro_batches_by_length`], at most `micro_batch_size` rows each) instead of in
    /// drawing order: a batch that mixes short and long examples then pads less, for the same loss and
    /// gradient up to the order of float additions (each micro-batch is normalized by the whole batch's
    /// trained tokens). Unlike `length_group_batches` the batches themselves do not change. Off by default.
    #[config(default = false)]
    pub micro_batch_by_length: bool,
    /// Group examples by length (transformers' `group_by_length`): each epoch's shuffled order is sorted
    /// by token count within windows of this many batches, so a batch holds examples of similar length
    /// and pads less. 0 or 1: off (released: off).
    #[config(default = 0)]
    pub length_group_batches: usize,
    /// Peak learning rate (released: 1e-6).
    #[config(default = 1e-6)]
    pub learning_rate: f64,
    /// Share of the steps spent warming up (released: 0.1).
    #[config(default = 0.1)]
    pub warmup_ratio: f64,
    /// The cosine decays to this share of the peak (released: 0).
    #[config(default = 0.0)]
    pub min_lr_rate: f64,
    /// AdamW's betas, ε and weight decay.
    #[config(default = "AdamWSettings::RECIPE")]
    pub adamw: AdamWSettings,
    /// Global gradient-norm clipping threshold; `None` disables clipping.
    #[config(default = "Some(RECIPE_MAX_GRAD_NORM)")]
    pub max_grad_norm: Option<f32>,
    /// Which tokens the loss covers.
    #[config(default = "MaskRule::Paper")]
    pub mask_rule: MaskRule,
    /// Freeze the vision tower (official SFT: yes).
    #[config(default = true)]
    pub freeze_vision: bool,
    /// Seed of the per-epoch shuffles.
    #[config(default = 0)]
    pub seed: u64,
    /// Write a checkpoint every this many optimizer steps (0: only at the end) when the trainer has a run
    /// folder.
    #[config(default = 50)]
    pub checkpoint_every: usize,
    /// Checkpoints kept in the run folder (the newest).
    #[config(default = 2)]
    pub keep_checkpoints: usize,
    /// Train LoRA adapters only (the base frozen; `None`: every trainable parameter). The trainer adds
    /// them to the model it is given; checkpoints hold the adapters in PEFT's layout (`adapter/`), and
    /// `export` merges them into the base.
    #[config(default = "None")]
    pub lora: Option<LoraConfig>,
    /// Keep f32 master copies of the trainable parameters and step the optimizer on them
    /// ([`pixel_vlm::train::MasterWeights`]): for full fine-tuning of a bf16/f16 policy, whose parameters
    /// would silently drop updates far below their rounding step (at lr 1e-6, almost all). The policy is
    /// cast from the copies after every step; checkpoints hold the copies (f32). No effect on an f32
    /// policy; refused with `lora` (the adapters are f32 already).
    #[config(default = false)]
    pub master_weights: bool,
    /// Recompute each decoder layer's activations during the backward pass
    /// ([`pixel_vlm::Qwen25Vl::backward_recomputed`]): activation memory of the layers' inputs plus one
    /// layer's graph instead of every layer's, for one more forward of the decoder. The gradients are the
    /// plain backward's up to the order of summation. Refused with LoRA dropout (the recomputed forward
    /// would draw other masks).
    #[config(default = false)]
    pub recompute_activations: bool,
}

impl SftConfig {
    /// The paper's SFT: the model's own spans trained.
    pub fn paper() -> Self {
        Self::new()
    }

    /// The released SFT code: the last two assistant turns with their role headers.
    pub fn official() -> Self {
        Self::new().with_mask_rule(MaskRule::ReleasedLastTwoTurns)
    }

    /// Tiny CPU runs: lr 3e-4, batch 8, 3 epochs, 5 % warmup.
    pub fn demo() -> Self {
        Self::new()
            .with_learning_rate(3e-4)
            .with_batch_size(8)
            .with_epochs(3)
            .with_warmup_ratio(0.05)
    }

    /// Checks every field's range.
    ///
    /// # Errors
    /// [`RlError::Setting`] naming the field.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(RlError::Setting(m));
        if self.epochs == 0 || self.batch_size == 0 || self.micro_batch_size == 0 {
            return bad("epochs, batch_size and micro_batch_size must be ≥ 1".into());
        }
        validate_optimization(
            self.learning_rate,
            self.warmup_ratio,
            self.min_lr_rate,
            self.max_grad_norm,
        )?;
        validate_memory(
            self.lora.as_ref(),
            self.master_weights,
            self.recompute_activations,
        )?;
        self.adamw.validate()
    }
}

/// The LoRA config's own checks, and the combinations the trainers refuse: master weights with LoRA (the
/// adapters are trained in f32 already: there is nothing to keep a master copy of) and activation
/// recompute with LoRA dropout (the recomputed forward would draw new dropout masks).
fn validate_memory(
    lora: Option<&LoraConfig>,
    master_weights: bool,
    recompute_activations: bool,
) -> crate::Result<()> {
    let Some(lora) = lora else {
        return Ok(());
    };
    lora.validate()?;
    if master_weights {
        return Err(RlError::Setting(
            "master_weights is for full fine-tuning: with lora the adapters are f32 already (turn one off)"
                .into(),
        ));
    }
    if recompute_activations && lora.dropout > 0.0 {
        return Err(RlError::Setting(format!(
            "recompute_activations cannot recompute LoRA dropout {} identically: set lora.dropout to 0 or \
             turn recompute_activations off",
            lora.dropout
        )));
    }
    Ok(())
}

/// The checks both trainers' configs share: a positive learning rate, `warmup_ratio` in `[0, 1)`,
/// `min_lr_rate` in `[0, 1]`, a positive clipping threshold when set.
fn validate_optimization(
    learning_rate: f64,
    warmup_ratio: f64,
    min_lr_rate: f64,
    max_grad_norm: Option<f32>,
) -> crate::Result<()> {
    let bad = |m: String| Err(RlError::Setting(m));
    if !(learning_rate.is_finite() && learning_rate > 0.0) {
        return bad(format!("learning_rate {learning_rate} is not positive"));
    }
    if !(0.0..1.0).contains(&warmup_ratio) || !(0.0..=1.0).contains(&min_lr_rate) {
        return bad(format!(
            "warmup_ratio {warmup_ratio} must be in [0, 1) and min_lr_rate {min_lr_rate} in [0, 1]"
        ));
    }
    if let Some(n) = max_grad_norm
        && !(n.is_finite() && n > 0.0)
    {
        return bad(format!("max_grad_norm {n} is not positive"));
    }
    Ok(())
}
