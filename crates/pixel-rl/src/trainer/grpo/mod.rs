//! The GRPO trainer: rollout buffers from an [`Environment`], rewards from a [`Reward`], the clipped
//! surrogate, AdamW with global clipping and the warmup-cosine schedule, metrics and resumable
//! checkpoints.
//!
//! One **iteration**: draw tasks (a seeded per-epoch order) and roll out `group_size` trajectories of each
//! on the current policy; score each group; drop reward-uniform groups and draw more tasks (up to
//! `max_draw_factor × queries_per_buffer` draws); top a short buffer up from the replay buffer (selective
//! sample replay, optional); shuffle the rollouts and split them into `updates_per_buffer` mini-batches,
//! each trained in micro-batches of `micro_batch_rows` with the loss normalised over the whole mini-batch.
//! Old log-probs come from the rollout, or are recomputed on the unchanged policy before the first update
//! (the official trainer). A checkpoint can be written after each iteration.

mod update;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use pixel_agent::RolloutConfig;
use pixel_vlm::Qwen25Vl;
use pixel_vlm::processor::Processor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::checkpoint::AdamWOptimizer;
use crate::config::GrpoConfig;
use crate::data::{EpochCursor, TaskSource};
use crate::error::{Result, RlError};
use crate::loss::advantages;
use crate::metrics::{MetricRecord, MetricSink};
use crate::optim::{WarmupCosineSchedule, warmup_steps_from_ratio};
use crate::parallel::{Collective, DataParallel};
use crate::reward::{CuriosityReward, Reward};
use crate::trainer::memory::{Master, adopt_dtypes};
use crate::trainer::replay::{ReplayBuffer, ReplayGroup};
pub use crate::trainer::rollout::{AgentEnvironment, Environment, is_truncated};
use crate::trainer::rollout::{BufferGroup, RolloutStats};
use crate::trainer::{
    Run, Start, attach_lora, check_lora_run, emit, export_merged, join_parallel, mix_seed,
    resume_from,
};

/// The GRPO trainer. See the [module docs](self) for one iteration, and the crate docs for an example.
pub struct GrpoTrainer<B: AutodiffBackend, S: TaskSource, R: Reward> {
    model: Qwen25Vl<B>,
    processor: Processor,
    optimizer: AdamWOptimizer<Qwen25Vl<B>, B>,
    schedule: WarmupCosineSchedule,
    reference: Option<Qwen25Vl<B::InnerBackend>>,
    config: GrpoConfig,
    data: S,
    reward: R,
    environment: Box<dyn Environment<B::InnerBackend>>,
    cursor: EpochCursor,
    replay: ReplayBuffer,
    iteration: usize,
    step: usize,
    sinks: Vec<Box<dyn MetricSink>>,
    run: Option<Run>,
    source: Option<std::path::PathBuf>,
    lora_base: Option<Qwen25Vl<B>>,
    parallel: Option<Collective>,
    master: Option<Master<B>>,
}

impl<B: AutodiffBackend, S: TaskSource> GrpoTrainer<B, S, CuriosityReward> {
    /// A trainer scored by the curiosity-driven reward with the config's `reward` settings (the paper's
    /// formula in [`GrpoConfig::paper`], the released code's in [`GrpoConfig::official`]).
    ///
    /// # Errors
    /// As [`GrpoTrainer::new`].
    pub fn curious(
        model: Qwen25Vl<B>,
        processor: Processor,
        data: S,
        config: GrpoConfig,
    ) -> Result<Self> {
        let reward = CuriosityReward::new(config.reward);
        Self::new(model, processor, data, reward, config)
    }
}

impl<B: AutodiffBackend, S: TaskSource, R: Reward> GrpoTrainer<B, S, R> {
    /// A trainer for `model` (with its checkpoint's `processor`) over `data`, scored by `reward`. With
    /// `config.lora`, `model` is the base: the trainer adds the adapters and trains only them (the KL
    /// reference, if any, is the base).
    ///
    /// # Errors
    /// [`RlError::Setting`] for an invalid config, empty data, or `config.lora` with a model that has
    /// adapters already.
    pub fn new(
        model: Qwen25Vl<B>,
        processor: Processor,
        data: S,
        reward: R,
        config: GrpoConfig,
    ) -> Result<Self> {
        config.validate()?;
        let model = if config.train_vision {
            model
        } else {
            model.with_frozen_vision()
        };
        let (model, lora_base) = attach_lora(model, config.lora.as_ref())?;
        let master = config
            .master_weights
            .then(|| pixel_vlm::train::MasterWeights::new(&model));
        let total = config.total_steps();
        let schedule = WarmupCosineSchedule::new(
            config.learning_rate,
            warmup_steps_from_ratio(total, config.warmup_ratio)?,
            total,
            config.min_lr_rate,
        )?;
        let reference = (config.surrogate.kl_beta > 0.0).then(|| {
            lora_base
                .as_ref()
                .map_or_else(|| model.valid(), |b| b.valid())
        });
        Ok(Self {
            optimizer: config.adamw.config()?.init(),
            cursor: EpochCursor::new(data.len(), config.seed)?,
            replay: ReplayBuffer::new(config.replay_capacity),
            model,
            processor,
            schedule,
            reference,
            data,
            reward,
            environment: Box::new(AgentEnvironment),
            iteration: 0,
            step: 0,
            sinks: Vec::new(),
            run: None,
            source: None,
            lora_base,
            parallel: None,
            master,
            config,
        })
    }

    /// Trains as rank `dp.rank` of a data-parallel run. Each rank rolls out its own share of the buffer's
    /// queries (round `k` of the shared task order gives rank `r` the task at `k · world + r`, sampled
    /// with that slot's seed, so the ranks together draw what one device would), and refills its own
    /// uniform groups; the rollout metrics are summed over the ranks. Each mini-batch is normalised by the
    /// totals of all ranks' mini-batches and the gradients are summed over the ranks before clipping and
    /// the step, so the ranks stay identical. Blocks until every rank has joined (threads: with no
    /// timeout; processes: up to the group's `join_timeout`); call it on every rank before
    /// [`GrpoTrainer::with_run_dir`]. Only rank 0 writes the run folder; the others resume from it.
    ///
    /// # Errors
    /// [`RlError::Setting`] for an invalid layout, when called after `with_run_dir`, or with
    /// `selective_replay` (its buffer is per rank and not checkpointed per rank yet);
    /// [`RlError::Collective`] when joining fails or the ranks' parameters differ.
    pub fn with_data_parallel(mut self, dp: &DataParallel) -> Result<Self> {
        if self.config.selective_replay && dp.world_size > 1 {
            return Err(RlError::Setting(
                "selective_replay is not supported with data parallel yet (turn it off)".into(),
            ));
        }
        self.parallel = Some(join_parallel(&self.model, dp, self.run.is_some())?);
        Ok(self)
    }

    /// Writes the trained policy as a Hugging Face folder in `dtype` at `dir`, LoRA adapters merged into
    /// the base, with the run's source processor files beside it (when `with_run_dir` was given a source).
    ///
    /// # Errors
    /// The model's save errors; I/O errors.
    pub fn export(
        &self,
        dir: impl AsRef<std::path::Path>,
        dtype: burn::tensor::FloatDType,
    ) -> Result<std::path::PathBuf> {
        let weights = self.master_weights().unwrap_or(&self.model);
        export_merged(weights, dir.as_ref(), dtype, self.source.as_deref())
    }

    /// Rolls out in `environment` instead of [`AgentEnvironment`].
    pub fn with_environment(
        mut self,
        environment: impl Environment<B::InnerBackend> + 'static,
    ) -> Self {
        self.environment = Box::new(environment);
        self
    }

    /// Also sends every step's metrics to `sink`.
    pub fn with_sink(mut self, sink: impl MetricSink + 'static) -> Self {
        self.sinks.push(Box::new(sink));
        self
    }

    /// Keeps checkpoints, `metrics.jsonl` and plots in `run_dir`, and **resumes** from its newest
    /// checkpoint if there is one (model, optimizer, schedule, data cursor, replay buffer, counters).
    /// `source` is the checkpoint folder the model came from: its processor files are copied beside each
    /// checkpoint's weights.
    ///
    /// # Errors
    /// [`RlError::Checkpoint`] for a checkpoint that does not fit this model or config; I/O errors.
    pub fn with_run_dir(
        mut self,
        run_dir: impl Into<std::path::PathBuf>,
        source: Option<&std::path::Path>,
    ) -> Result<Self> {
        check_lora_run(&self.model, self.lora_base.as_ref())?;
        let run_dir = run_dir.into();
        self.source = source.map(std::path::Path::to_path_buf);
        let writes = self.parallel.as_ref().is_none_or(|c| c.rank() == 0);
        let run = if writes {
            Some(Run::open(run_dir.clone(), source)?)
        } else {
            None
        };
        let start = Start {
            device: self.model.device(),
            lora_base: self.lora_base.clone(),
        };
        if let Some(resumed) = resume_from::<B, GrpoConfig>(&run_dir, &self.config, &start)? {
            let model = if self.config.train_vision || self.lora_base.is_some() {
                resumed.model
            } else {
                resumed.model.with_frozen_vision()
            };
            let (model, master) = adopt_dtypes(model, &self.model, self.config.master_weights)?;
            self.master = master;
            self.optimizer = crate::checkpoint::load_optimizer(
                self.config.adamw.config()?.init(),
                &model,
                &resumed.dir.join("optimizer.safetensors"),
            )?;
            self.model = model;
            self.step = resumed.state.step;
            self.iteration = resumed.state.counter;
            self.cursor = resumed.state.cursor;
            if let Some(reference) = self.reference.as_ref().filter(|_| self.lora_base.is_none()) {
                // Saved in f32; read back in the dtype it was computed in.
                let dtype = burn::tensor::FloatDType::from(reference.dtype());
                self.reference = Some(Qwen25Vl::from_pretrained_with_dtype(
                    resumed.dir.join("reference"),
                    &self.model.device(),
                    dtype,
                )?);
            }
            let replay = resumed.dir.join("replay");
            if replay.is_dir() {
                self.replay = ReplayBuffer::load(&replay, self.config.replay_capacity)?;
            }
        }
        self.run = run;
        Ok(self)
    }

    /// The policy being trained.
    pub fn model(&self) -> &Qwen25Vl<B> {
        &self.model
    }

    /// The trained policy.
    pub fn into_model(self) -> Qwen25Vl<B> {
        self.model
    }

    /// The f32 master copies of the trainable parameters (a model whose trainable parameters are f32),
    /// when the config's `master_weights` is on.
    pub fn master_weights(&self) -> Option<&Qwen25Vl<B>> {
        self.master.as_ref().map(|m| m.master())
    }

    /// The processor of the policy's checkpoint.
    pub fn processor(&self) -> &Processor {
        &self.processor
    }

    /// The config.
    pub fn config(&self) -> &GrpoConfig {
        &self.config
    }

    /// Iterations done.
    pub fn iteration(&self) -> usize {
        self.iteration
    }

    /// Optimizer steps done.
    pub fn step(&self) -> usize {
        self.step
    }

    /// Runs the remaining iterations with a progress bar, checkpointing as configured, and plots the
    /// metrics into the run folder at the end. Returns the metrics of every optimizer step.
    ///
    /// # Errors
    /// The first error of an iteration (the last checkpoint stays valid).
    pub fn train(&mut self) -> Result<Vec<MetricRecord>> {
        // One display per stage: a data-parallel run's other ranks take the same steps.
        let progress = crate::progress::StageProgress::for_rank(
            "GRPO",
            self.config.iterations as u64,
            self.parallel.as_ref().map(|c| c.rank()),
        );
        progress.inc(self.iteration as u64);
        let mut all = Vec::new();
        while self.iteration < self.config.iterations {
            let records = self.iterate()?;
            if let Some(first) = records.first() {
                progress.set_message(format!(
                    "reward {:.3} acc {:.2} RaPR {:.2}",
                    first.get("reward").unwrap_or(f64::NAN),
                    first.get("accuracy").unwrap_or(f64::NAN),
                    first.get("rapr").unwrap_or(f64::NAN),
                ));
            }
            all.extend(records);
            progress.inc(1);
            let every = self.config.checkpoint_every;
            let last = self.iteration == self.config.iterations;
            if self.run.is_some() && (last || (every > 0 && self.iteration.is_multiple_of(every))) {
                self.checkpoint()?;
            }
        }
        progress.finish();
        if let Some(run) = &self.run {
            run.plot(&GRPO_PLOTS)?;
        }
        Ok(all)
    }

    /// One iteration: a rollout buffer and its optimizer steps. Returns one metric record per step (the
    /// first carries the rollout metrics).
    ///
    /// # Errors
    /// The environment's, the reward's, the model's errors.
    pub fn iterate(&mut self) -> Result<Vec<MetricRecord>> {
        let cfg = self.config.clone();
        self.reward.begin_iteration(self.iteration);
        let policy = self.model.valid();
        let mut stats = RolloutStats::default();
        let mut buffer: Vec<BufferGroup> = Vec::new();
        let (rank, world) = self
            .parallel
            .as_ref()
            .map_or((0, 1), |c| (c.rank(), c.world_size()));
        // This rank's share of the buffer's queries.
        let quota =
            cfg.queries_per_buffer / world + usize::from(rank < cfg.queries_per_buffer % world);
        let max_draws = (quota as f64 * cfg.max_draw_factor).ceil() as usize;
        let mut draws = 0;
        while buffer.len() < quota && draws < max_draws {
            // One round: the next `world` tasks of the shared order, this rank's at its rank.
            let mut index = 0;
            for k in 0..world {
                let i = self.cursor.next_index();
                if k == rank {
                    index = i;
                }
            }
            let task = self.data.task(index)?;
            let slot = draws * world + rank;
            let rollout = RolloutConfig {
                seed: mix_seed(cfg.seed, self.iteration as u64, slot as u64),
                ..cfg.rollout.clone()
            };
            draws += 1;
            let trajectories = self.environment.rollouts(
                &policy,
                &self.processor,
                &task,
                cfg.group_size,
                &rollout,
            )?;
            let score = self.reward.score_group(&task, &trajectories)?;
            if trajectories.len() != cfg.group_size || score.rewards.len() != cfg.group_size {
                return Err(RlError::Shape(format!(
                    "task {}: {} rollouts and {} rewards for a group of {}",
                    task.id,
                    trajectories.len(),
                    score.rewards.len(),
                    cfg.group_size
                )));
            }
            let rewards: Vec<f32> = score.rewards.iter().map(|&r| r as f32).collect();
            let adv = advantages(&rewards, cfg.group_size, cfg.scale_advantages_by_std)?;
            let uniform = adv.iter().all(|a| *a == 0.0);
            stats.add(&trajectories, &score, uniform);
            if uniform && cfg.drop_uniform_groups {
                continue;
            }
            if cfg.selective_replay && !uniform {
                self.replay.push(ReplayGroup {
                    task_id: task.id.clone(),
                    trajectories: trajectories.clone(),
                    advantages: adv.clone(),
                });
            }
            buffer.push(BufferGroup {
                trajectories,
                advantages: adv,
            });
        }
        let device = self.model.device();
        let mut global_groups = buffer.len();
        if let Some(c) = &self.parallel {
            // Every rank's cursor ends where the rank that drew the most rounds left it.
            let rounds = c.gather::<B::InnerBackend>(draws as f64, &device)?;
            let most = rounds.iter().fold(0.0f64, |a, &b| a.max(b)) as usize;
            for _ in 0..most.saturating_sub(draws) * world {
                self.cursor.next_index();
            }
            let mut values = stats.to_values();
            values.push(buffer.len() as f64);
            let summed = c.sum::<B::InnerBackend>(&values, &device)?;
            global_groups = summed[summed.len() - 1] as usize;
            stats = RolloutStats::from_values(&summed);
        }
        let fresh = buffer.len();
        let mut rng =
            ChaCha8Rng::seed_from_u64(mix_seed(cfg.seed, self.iteration as u64, u64::MAX));
        if cfg.selective_replay && buffer.len() < cfg.queries_per_buffer {
            // Groups pushed this iteration are not replayed within it.
            let mut pool = self.replay.clone();
            pool.truncate_newest(fresh.min(pool.len()));
            for g in pool.sample(cfg.queries_per_buffer - buffer.len(), &mut rng) {
                buffer.push(BufferGroup {
                    trajectories: g.trajectories,
                    advantages: g.advantages,
                });
            }
        }
        let mut first = MetricRecord::new("grpo", self.step as u64 + 1);
        first.set("iteration", (self.iteration + 1) as f64);
        stats.write(&mut first);
        first
            .set(
                "groups_trained",
                (global_groups + buffer.len() - fresh) as f64,
            )
            .set("groups_replayed", (buffer.len() - fresh) as f64);

        let records = if global_groups + buffer.len() - fresh == 0 {
            // Nothing to learn from: the schedule still advances so the run keeps its length.
            let mut records = Vec::new();
            for u in 0..cfg.updates_per_buffer {
                self.step += 1;
                let mut m = if u == 0 {
                    first.clone()
                } else {
                    MetricRecord::new("grpo", self.step as u64)
                };
                m.step = self.step as u64;
                m.set("lr", self.schedule.lr_at(self.step - 1))
                    .set("skipped", 1.0);
                records.push(m);
            }
            records
        } else {
            let rows = (global_groups + buffer.len() - fresh) * cfg.group_size;
            self.update(buffer, rows, first, &mut rng)?
        };
        self.iteration += 1;
        for m in &records {
            emit(&mut self.sinks, self.run.as_mut(), m)?;
        }
        Ok(records)
    }

    /// Writes a checkpoint of the current state into the run folder.
    ///
    /// # Errors
    /// [`RlError::Setting`] without a run folder; I/O errors.
    pub fn checkpoint(&mut self) -> Result<std::path::PathBuf> {
        let Some(run) = &mut self.run else {
            return Err(RlError::Setting(
                "no run folder: call with_run_dir first".into(),
            ));
        };
        let pending = run.begin(self.iteration)?;
        let weights = self.master.as_ref().map_or(&self.model, |m| m.master());
        // With LoRA the reference is the frozen base, rebuilt on resume.
        if let Some(reference) = self.reference.as_ref().filter(|_| self.lora_base.is_none()) {
            reference.save_pretrained(
                pending.dir().join("reference"),
                burn::tensor::FloatDType::F32,
            )?;
        }
        if self.config.selective_replay {
            self.replay.save(&pending.dir().join("replay"))?;
        }
        run.commit(
            pending,
            weights,
            &self.optimizer,
            &crate::trainer::State {
                counter: self.iteration,
                step: self.step,
                cursor: self.cursor.clone(),
                config: serde_json::to_value(&self.config)
                    .map_err(|e| RlError::Setting(e.to_string()))?,
            },
            self.config.keep_checkpoints,
        )
    }
}

/// The charts written at the end of a GRPO run.
pub const GRPO_PLOTS: [&str; 10] = [
    "reward",
    "accuracy",
    "rapr",
    "curiosity_bonus",
    "penalty",
    "op_error_rate",
    "uniform_share",
    "response_length",
    "grad_norm",
    "entropy",
];
