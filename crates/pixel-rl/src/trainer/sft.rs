//! The SFT trainer: tokenized traces, per-epoch seeded shuffles, gradient accumulation with the
//! mini-batch's token count as the normaliser, global clipping, warmup-cosine, checkpoints and metrics.
//!
//! Examples come from [`crate::sft::build_example`] (or [`build_examples`] over many traces), so the
//! loss mask is fixed before training: the paper's spans or the released code's last two turns. An epoch
//! is a permutation of the examples seeded by `(seed, epoch)`; its last batch may be smaller.

use burn::optim::GradientsAccumulator;
use burn::tensor::backend::AutodiffBackend;
use image::RgbImage;
use pixel_traces::Trace;
use pixel_vlm::Qwen25Vl;
use pixel_vlm::processor::Processor;

use crate::checkpoint::AdamWOptimizer;
use crate::config::SftConfig;
use crate::data::{EpochCursor, micro_batches_by_length};
use crate::error::{Result, RlError};
use crate::metrics::{MetricRecord, MetricSink};
use crate::optim::{WarmupCosineSchedule, warmup_steps_from_ratio};
use crate::parallel::{Collective, DataParallel};
use crate::sft::{MaskRule, SftBatch, SftError, SftExample, build_example_with_system};
use crate::trainer::memory::{Master, adopt_dtypes, gradients};
use crate::trainer::{
    Run, Start, State, attach_lora, check_lora_run, clip_and_step, emit, export_merged,
    join_parallel, resume_from,
};

/// Builds the examples of `traces` under `rule`. Traces that cannot be built (an unknown tool set, a
/// missing image) are returned with their error instead of stopping the others.
pub fn build_examples(
    processor: &Processor,
    traces: &[Trace],
    rule: MaskRule,
    image: &dyn Fn(&str) -> std::result::Result<RgbImage, String>,
) -> (Vec<SftExample>, Vec<(String, SftError)>) {
    build_examples_with_system(processor, traces, rule, None, image)
}

/// [`build_examples`] with the system prompt given (see
/// [`build_example_with_system`]).
pub fn build_examples_with_system(
    processor: &Processor,
    traces: &[Trace],
    rule: MaskRule,
    system: Option<&str>,
    image: &dyn Fn(&str) -> std::result::Result<RgbImage, String>,
) -> (Vec<SftExample>, Vec<(String, SftError)>) {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for trace in traces {
        match build_example_with_system(processor, trace, rule, system, image) {
            Ok(e) if e.trained_tokens() > 0 => ok.push(e),
            Ok(_) => failed.push((
                trace.id.clone(),
                SftError::Trace {
                    id: trace.id.clone(),
                    reason: "no token is trained under this mask rule".into(),
                },
            )),
            Err(e) => failed.push((trace.id.clone(), e)),
        }
    }
    (ok, failed)
}

/// The format of an SFT data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SftFormat {
    /// The project's trace JSONL (`pixel_traces::Trace`, spans marked trained or not).
    Traces,
    /// The official SFT data (`message_list` records, a JSON list or JSONL), read unchanged: every
    /// assistant message is trained (the mask rule of [`build_example`](crate::sft::build_example) then decides what the loss sees).
    Official,
}

/// Reads the SFT traces of `path` (media paths confined to `root`); malformed records are skipped or fail
/// per `on_error`. Returns the traces and the skipped records' errors.
///
/// # Errors
/// [`RlError::Data`] for an unreadable file, or the first bad record with [`pixel_traces::OnError::Fail`].
pub fn load_sft_traces(
    path: &std::path::Path,
    root: &pixel_traces::DatasetRoot,
    format: SftFormat,
    on_error: pixel_traces::OnError,
) -> Result<(Vec<Trace>, Vec<pixel_traces::Error>)> {
    match format {
        SftFormat::Traces => {
            let loaded = pixel_traces::load_records::<Trace>(path, root, on_error)?;
            let skipped = loaded.skipped;
            Ok((
                loaded.records.into_iter().map(|(_, t)| t).collect(),
                skipped,
            ))
        }
        SftFormat::Official => {
            let loaded =
                pixel_traces::load_records::<pixel_traces::SftRecord>(path, root, on_error)?;
            let mut skipped = loaded.skipped;
            let mut traces = Vec::new();
            for (location, record) in loaded.records {
                let id = format!("{}:{location}", path.display());
                match Trace::from_official(&record, &id, false) {
                    Ok(t) => traces.push(t),
                    Err(reason) => {
                        let error = pixel_traces::Error::Record {
                            path: path.to_path_buf(),
                            location,
                            message: reason.to_string(),
                        };
                        if on_error == pixel_traces::OnError::Fail {
                            return Err(error.into());
                        }
                        skipped.push(error);
                    }
                }
            }
            Ok((traces, skipped))
        }
    }
}

/// The SFT trainer.
pub struct SftTrainer<B: AutodiffBackend> {
    model: Qwen25Vl<B>,
    optimizer: AdamWOptimizer<Qwen25Vl<B>, B>,
    schedule: WarmupCosineSchedule,
    config: SftConfig,
    examples: Vec<SftExample>,
    cursor: EpochCursor,
    step: usize,
    sinks: Vec<Box<dyn MetricSink>>,
    run: Option<Run>,
    source: Option<std::path::PathBuf>,
    lora_base: Option<Qwen25Vl<B>>,
    parallel: Option<Collective>,
    master: Option<Master<B>>,
}

/// What one more micro-batch costs, in padded tokens, when [`SftConfig::micro_batch_by_length`] cuts a
/// batch: a forward and backward pass has fixed costs (the vision tower's call, the layers' launches), so a
/// cut that saves fewer padded tokens than this is not made.
const MICRO_BATCH_OVERHEAD: usize = 64;

impl<B: AutodiffBackend> SftTrainer<B> {
    /// A trainer for `model` on `examples`. With `config.lora`, `model` is the base: the trainer adds the
    /// adapters and trains only them.
    ///
    /// # Errors
    /// [`RlError::Setting`] for an invalid config, no examples, or `config.lora` with a model that has
    /// adapters already.
    pub fn new(model: Qwen25Vl<B>, examples: Vec<SftExample>, config: SftConfig) -> Result<Self> {
        config.validate()?;
        let cursor = Self::grouped(
            EpochCursor::new(examples.len(), config.seed)?,
            &examples,
            &config,
        );
        let model = if config.freeze_vision {
            model.with_frozen_vision()
        } else {
            model
        };
        let (model, lora_base) = attach_lora(model, config.lora.as_ref())?;
        let master = config
            .master_weights
            .then(|| pixel_vlm::train::MasterWeights::new(&model));
        let total = Self::total_for(&config, examples.len());
        let schedule = WarmupCosineSchedule::new(
            config.learning_rate,
            warmup_steps_from_ratio(total, config.warmup_ratio)?,
            total,
            config.min_lr_rate,
        )?;
        Ok(Self {
            optimizer: config.adamw.config()?.init(),
            model,
            schedule,
            config,
            examples,
            cursor,
            step: 0,
            sinks: Vec::new(),
            run: None,
            source: None,
            lora_base,
            parallel: None,
            master,
        })
    }

    /// Trains as rank `dp.rank` of a data-parallel run: every rank draws the same global batch of
    /// `batch_size` examples, trains the examples at its positions ([`DataParallel::shard`]) with the loss
    /// normalised by the global batch's trained tokens, and the gradients are summed over the ranks before
    /// clipping and the step, so the ranks stay identical and the step is the one-device step on the global
    /// batch. Blocks until every rank has joined (threads: with no timeout; processes: up to the group's
    /// `join_timeout`); call it on every rank (one thread or process each) before
    /// [`SftTrainer::with_run_dir`]. Only rank 0 writes the run folder; the others resume from it.
    ///
    /// # Errors
    /// [`RlError::Setting`] for an invalid layout or when called after `with_run_dir`;
    /// [`RlError::Collective`] when joining fails or the ranks' parameters differ.
    pub fn with_data_parallel(mut self, dp: &DataParallel) -> Result<Self> {
        self.parallel = Some(join_parallel(&self.model, dp, self.run.is_some())?);
        Ok(self)
    }

    fn total_for(config: &SftConfig, n: usize) -> usize {
        config.epochs * n.div_ceil(config.batch_size)
    }

    /// Optimizer steps of the whole run.
    pub fn total_steps(&self) -> usize {
        Self::total_for(&self.config, self.examples.len())
    }

    /// Optimizer steps done.
    pub fn step(&self) -> usize {
        self.step
    }

    /// The model being trained.
    pub fn model(&self) -> &Qwen25Vl<B> {
        &self.model
    }

    /// The trained model.
    pub fn into_model(self) -> Qwen25Vl<B> {
        self.model
    }

    /// The f32 master copies of the trainable parameters (a model whose trainable parameters are f32),
    /// when the config's `master_weights` is on.
    pub fn master_weights(&self) -> Option<&Qwen25Vl<B>> {
        self.master.as_ref().map(|m| m.master())
    }

    /// The weights checkpoints and exports are written from: the master copies, else the model.
    fn weights(&self) -> &Qwen25Vl<B> {
        self.master_weights().unwrap_or(&self.model)
    }

    /// Also sends every step's metrics to `sink`.
    pub fn with_sink(mut self, sink: impl MetricSink + 'static) -> Self {
        self.sinks.push(Box::new(sink));
        self
    }

    /// Keeps checkpoints, `metrics.jsonl` and plots in `run_dir`, resuming from its newest checkpoint if
    /// there is one; `source`'s processor files are copied beside each checkpoint's weights.
    ///
    /// # Errors
    /// [`RlError::Checkpoint`] for a checkpoint that does not fit; I/O errors.
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
        if let Some(resumed) = resume_from::<B, SftConfig>(&run_dir, &self.config, &start)? {
            if resumed.state.cursor.len != self.examples.len() {
                return Err(RlError::Checkpoint {
                    path: resumed.dir,
                    reason: format!(
                        "written for {} examples, this run has {}",
                        resumed.state.cursor.len,
                        self.examples.len()
                    ),
                });
            }
            let model = if self.config.freeze_vision && self.lora_base.is_none() {
                resumed.model.with_frozen_vision()
            } else {
                resumed.model
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
            self.cursor = Self::grouped(resumed.state.cursor, &self.examples, &self.config);
        }
        self.run = run;
        Ok(self)
    }

    /// `cursor` drawing by length groups when `config.length_group_batches` asks for them.
    fn grouped(cursor: EpochCursor, examples: &[SftExample], config: &SftConfig) -> EpochCursor {
        let lengths: Vec<usize> = examples.iter().map(SftExample::len).collect();
        cursor.with_length_groups(
            &lengths,
            config
                .length_group_batches
                .saturating_mul(config.batch_size),
        )
    }

    /// Writes the trained model as a Hugging Face folder in `dtype` at `dir`, LoRA adapters merged into the
    /// base, with the run's source processor files beside it (when `with_run_dir` was given a source): the
    /// final export of a LoRA run, loadable by `Qwen25Vl::from_pretrained` and transformers.
    ///
    /// # Errors
    /// The model's save errors; I/O errors.
    pub fn export(
        &self,
        dir: impl AsRef<std::path::Path>,
        dtype: burn::tensor::FloatDType,
    ) -> Result<std::path::PathBuf> {
        export_merged(self.weights(), dir.as_ref(), dtype, self.source.as_deref())
    }

    /// Trains the remaining steps with a progress bar and checkpoints; plots at the end. Returns the
    /// metrics of the steps run.
    ///
    /// # Errors
    /// The model's errors; I/O errors of the run folder.
    pub fn train(&mut self) -> Result<Vec<MetricRecord>> {
        let total = self.total_steps();
        // One display per stage: a data-parallel run's other ranks take the same steps.
        let progress = crate::progress::StageProgress::for_rank(
            "SFT",
            total as u64,
            self.parallel.as_ref().map(|c| c.rank()),
        );
        progress.inc(self.step as u64);
        let mut all = Vec::new();
        while self.step < total {
            let m = self.train_step()?;
            progress.set_message(format!("loss {:.4}", m.get("loss").unwrap_or(f64::NAN)));
            progress.inc(1);
            all.push(m);
            let every = self.config.checkpoint_every;
            let last = self.step == total;
            if self.run.is_some() && (last || (every > 0 && self.step.is_multiple_of(every))) {
                self.checkpoint()?;
            }
        }
        progress.finish();
        if let Some(run) = &self.run {
            run.plot(&["loss", "lr", "grad_norm"])?;
        }
        Ok(all)
    }

    /// One optimizer step over the next batch (the rest of the epoch if fewer remain).
    ///
    /// # Errors
    /// The model's errors.
    pub fn train_step(&mut self) -> Result<MetricRecord> {
        let n = self.examples.len();
        // A batch never spans two epochs (the cursor moves to the next one when this one is drawn).
        let remaining = if self.cursor.epoch_done() {
            n
        } else {
            n - self.cursor.offset
        };
        let take = self.config.batch_size.min(remaining);
        let indices: Vec<usize> = (0..take).map(|_| self.cursor.next_index()).collect();
        let batch: Vec<&SftExample> = indices.iter().map(|&i| &self.examples[i]).collect();
        // The global batch's count: each rank's loss is a part of the one-device loss.
        let normalizer: usize = batch.iter().map(|e| e.trained_tokens()).sum();
        let mine: Vec<&SftExample> = match &self.parallel {
            Some(c) => c.layout().shard(batch.len()).map(|i| batch[i]).collect(),
            None => batch,
        };
        let mut accumulator = GradientsAccumulator::<Qwen25Vl<B>>::new();
        let mut loss_sum = 0.0f64;
        let micro_batches: Vec<Vec<&SftExample>> = if self.config.micro_batch_by_length {
            let lengths: Vec<usize> = mine.iter().map(|e| e.len()).collect();
            micro_batches_by_length(&lengths, self.config.micro_batch_size, MICRO_BATCH_OVERHEAD)
                .into_iter()
                .map(|run| run.into_iter().map(|i| mine[i]).collect())
                .collect()
        } else {
            mine.chunks(self.config.micro_batch_size)
                .map(<[&SftExample]>::to_vec)
                .collect()
        };
        // Tokens computed (each micro-batch padded to its longest row), summed over the ranks below.
        let padded: usize = micro_batches
            .iter()
            .map(|m| m.len() * m.iter().map(|e| e.len()).max().unwrap_or(0))
            .sum();
        for micro in &micro_batches {
            let batch = SftBatch::new(micro, normalizer.max(1))?;
            let model = &self.model;
            let (loss, grads) = gradients(
                model,
                &batch.input(),
                self.config.recompute_activations,
                |hidden| Ok(batch.loss(model, hidden)?),
            )?;
            loss_sum += loss;
            accumulator.accumulate(&self.model, grads);
        }
        let mut padded = padded as f64;
        if let Some(c) = &self.parallel {
            let sums = c.sum::<B::InnerBackend>(&[loss_sum, padded], &self.model.device())?;
            (loss_sum, padded) = (sums[0], sums[1]);
        }
        let lr = self.schedule.lr_at(self.step);
        let (model, norm) = clip_and_step(
            self.model.clone(),
            &mut self.optimizer,
            accumulator.grads(),
            self.config.max_grad_norm,
            lr,
            self.parallel.as_ref(),
            self.master.as_mut(),
        )?;
        self.model = model;
        self.step += 1;
        let mut m = MetricRecord::new("sft", self.step as u64);
        m.set("loss", loss_sum)
            .set("lr", lr)
            .set("grad_norm", f64::from(norm))
            .set("trained_tokens", normalizer as f64)
            .set("examples", take as f64)
            .set("micro_batches", micro_batches.len() as f64)
            .set("padded_tokens", padded)
            .set("epoch", self.cursor.epoch as f64);
        emit(&mut self.sinks, self.run.as_mut(), &m)?;
        Ok(m)
    }

    /// Writes a checkpoint into the run folder: the model (`model/`), or for a LoRA run only the adapters
    /// (`adapter/`, PEFT's layout), the optimizer state and the counters.
    ///
    /// # Errors
    /// [`RlError::Setting`] without a run folder (ranks other than 0 have none); I/O errors.
    pub fn checkpoint(&mut self) -> Result<std::path::PathBuf> {
        let Some(run) = &mut self.run else {
            return Err(RlError::Setting(
                "no run folder: call with_run_dir first".into(),
            ));
        };
        let pending = run.begin(self.step)?;
        let weights = self.master.as_ref().map_or(&self.model, |m| m.master());
        let state = State {
            counter: self.step,
            step: self.step,
            cursor: self.cursor.clone(),
            config: serde_json::to_value(&self.config)
                .map_err(|e| RlError::Setting(e.to_string()))?,
        };
        run.commit(
            pending,
            weights,
            &self.optimizer,
            &state,
            self.config.keep_checkpoints,
        )
    }
}
