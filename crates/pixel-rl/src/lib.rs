//! Training for Pixel Reasoner: SFT on traces and curiosity-driven GRPO, on burn — one model for CPU and
//! CUDA, composable in your own code.
//!
//! A GRPO trainer from a model, a dataset, a reward and a config:
//!
//! ```
//! use burn::backend::Autodiff;
//! use pixel_agent::Query;
//! use pixel_rl::{config::GrpoConfig, data::Task, trainer::GrpoTrainer};
//! use pixel_vlm::{Qwen25Vl, backend::CpuBackend, builder, processor::Processor};
//!
//! let dir = tempfile::tempdir()?; // any Qwen2.5-VL folder; here a tiny random one
//! builder::write_tiny_checkpoint(dir.path(), &builder::TinySpec::default())?;
//! let model = Qwen25Vl::<Autodiff<CpuBackend>>::from_pretrained(dir.path(), &Default::default())?;
//! let processor = Processor::from_pretrained(dir.path())?;
//! let image = image::RgbImage::from_pixel(56, 56, image::Rgb([200, 30, 30]));
//! let question = Query::image(image, "What colour is the square?");
//! let tasks = vec![Task { id: "q1".into(), query: question, answers: vec!["red".into()], options: vec![] }];
//! let mut config = GrpoConfig::demo(2).with_group_size(2).with_queries_per_buffer(1).with_updates_per_buffer(1);
//! config.rollout.max_new_tokens = 4;
//! // The curiosity-driven reward with config.reward (paper formula; GrpoConfig::official: the released one).
//! let mut trainer = GrpoTrainer::curious(model, processor, tasks, config)?
//!     .with_run_dir(dir.path().join("run"), Some(dir.path()))?; // checkpoints, metrics.jsonl, plots; resumes
//! let metrics = trainer.train()?;
//! assert_eq!(metrics.len(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`trainer::GrpoTrainer::new`] takes any [`reward::Reward`] instead (or a closure via
//! [`reward::PerRollout`]); the data can be any [`data::TaskSource`], the rollouts any
//! [`trainer::Environment`], and metrics go to any [`metrics::MetricSink`] as well as the run folder. Presets: [`config::GrpoConfig::paper`] (the defaults),
//! [`config::GrpoConfig::official`] (the released code), [`config::GrpoConfig::demo`]; `docs/training.md`
//! lists every difference.
//!
//! Modules:
//! - [`trainer`]: [`trainer::SftTrainer`] and [`trainer::GrpoTrainer`], run folders, selective sample
//!   replay.
//! - [`config`]: every default of the recipe as a burn `Config` field, with presets.
//! - [`checkpoint`]: atomic checkpoint folders; AdamW state keyed by parameter path (loaded models get fresh
//!   parameter ids).
//! - [`data`], [`reward`]: RL tasks and their sources, the curiosity reward.
//! - [`metrics`], [`plot`], [`progress`]: JSONL metrics, PNG charts, progress bars.
//! - [`parallel`]: data-parallel training (threads or processes) over `burn-collective`'s all-reduce.
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
pub mod parallel;
pub mod plot;
pub mod progress;
pub mod reward;
pub mod sft;
pub mod trainer;

pub use error::{Result, RlError};
