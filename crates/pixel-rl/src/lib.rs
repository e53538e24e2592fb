//! Training for Pixel Reasoner: SFT on traces and curiosity-driven GRPO, on burn.
//!
//! Built so far (the trainers that compose them are next):
//! - [`optim`]: the recipe's AdamW settings, **global** gradient-norm clipping (burn's
//!   `GradientClippingConfig::Norm` clips each tensor on its own), and warmup then cosine to a minimum
//!   learning rate (transformers' `cosine_with_min_lr`).
//! - [`loss`]: GRPO advantages, the asymmetric clipped surrogate, the loss aggregation modes (token-mean
//!   over the mini-batch, sequence-mean, the released code's constant normaliser) with the right
//!   denominators across micro-batches, and the k3 KL estimate.
//! - [`grpo`]: token-exact rollouts of `pixel-agent` turned into the policy's per-token log-probs, the
//!   rollout's log-probs, advantages and the loss mask, for the surrogate.
//! - [`sft`]: SFT examples from traces, with the paper's loss mask (the model's own spans, observations and
//!   deliberately wrong calls masked) or the released code's rule (the last two assistant turns, role header
//!   included), and the SFT loss.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
pub mod grpo;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod plot;
pub mod progress;
pub mod reward;
pub mod sft;
pub mod trainer;

pub use error::{Result, RlError};
