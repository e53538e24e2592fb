//! The trainers: [`SftTrainer`] and [`GrpoTrainer`], and what they share — the run folder with its
//! checkpoints, `metrics.jsonl` and plots.
//!
//! A run folder (`with_run_dir`) holds:
//!
//! - `checkpoint-NNNNNNNN/` (see [`crate::checkpoint`]): written atomically; the newest is resumed from;
//! - `metrics.jsonl`: one [`crate::metrics::MetricRecord`] per optimizer step; on resume the lines written after the
//!   checkpoint (by the run that was killed) are dropped, so the file reads as one uninterrupted run;
//! - `plots/*.png`: one chart per metric, written at the end of `train()`.

pub mod grpo;
mod memory;
pub mod replay;
mod rollout;
pub mod sft;

use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{FloatDType, Tensor};
use pixel_vlm::Qwen25Vl;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use grpo::{AgentEnvironment, Environment, GrpoTrainer};
pub use replay::{ReplayBuffer, ReplayGroup};
pub use sft::SftTrainer;

use crate::checkpoint::{
    AdamWOptimizer, PendingCheckpoint, bad, copy_processor_files, io, latest_checkpoint,
    save_optimizer, write_synced,
};
use crate::data::EpochCursor;
use crate::error::{Result, RlError};
use crate::metrics::{JsonlSink, MetricSink, read_jsonl};
use crate::parallel::{Collective, DataParallel, all_reduce_gradients};
use pixel_vlm::lora::LoraConfig;

/// The counters and cursor of a checkpoint (`state.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// The checkpoint's counter (GRPO: iterations done; SFT: optimizer steps done).
    pub counter: usize,
    /// Optimizer steps done (the schedule's position).
    pub step: usize,
    /// Where the data order stands.
    pub cursor: EpochCursor,
    /// The trainer's config, as JSON.
    pub config: Value,
}

/// A checkpoint read back.
pub(crate) struct Resumed<B: Backend> {
    pub dir: PathBuf,
    pub model: Qwen25Vl<B>,
    pub state: State,
}

/// A run folder: checkpoints, metrics, plots.
pub(crate) struct Run {
    pub dir: PathBuf,
    pub source: Option<PathBuf>,
    pub metrics: JsonlSink,
}

impl Run {
    /// Opens `dir`; the metrics file is continued after the newest checkpoint's step, or started fresh.
    pub fn open(dir: PathBuf, source: Option<&Path>) -> Result<Self> {
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let metrics_path = dir.join("metrics.jsonl");
        let metrics = match latest_checkpoint(&dir)? {
            Some(ckpt) => {
                let state = read_state(&ckpt)?;
                JsonlSink::resume(&metrics_path, state.step as u64)?
            }
            None => JsonlSink::create(&metrics_path)?,
        };
        Ok(Self {
            dir,
            source: source.map(Path::to_path_buf),
            metrics,
        })
    }

    /// Starts a checkpoint folder.
    pub fn begin(&mut self, counter: usize) -> Result<PendingCheckpoint> {
        self.metrics.flush()?;
        PendingCheckpoint::begin(&self.dir, counter)
    }

    /// Writes the model, optimizer and state into `pending` and moves it into place.
    pub fn commit<B: AutodiffBackend>(
        &mut self,
        pending: PendingCheckpoint,
        model: &Qwen25Vl<B>,
        optimizer: &AdamWOptimizer<Qwen25Vl<B>, B>,
        state: &State,
        keep: usize,
    ) -> Result<PathBuf> {
        if model.lora_sites().is_empty() {
            let model_dir = pending.dir().join(MODEL_DIR);
            model.valid().save_pretrained(&model_dir, FloatDType::F32)?;
            if let Some(source) = &self.source {
                copy_processor_files(source, &model_dir)?;
            }
        } else {
            // The base is frozen and unchanged: only the adapters are written (PEFT's folder).
            model.valid().save_lora(pending.dir().join(ADAPTER_DIR))?;
        }
        save_optimizer(
            optimizer,
            model,
            &pending.dir().join("optimizer.safetensors"),
        )?;
        let path = pending.dir().join("state.json");
        let json = serde_json::to_vec_pretty(state).map_err(|e| bad(&path, e.to_string()))?;
        // state.json last: a folder with it is complete (and the rename makes it visible at once).
        write_synced(&path, &json)?;
        pending.commit(keep)
    }

    /// Charts of `keys` from `metrics.jsonl` into `plots/`.
    pub fn plot(&self, keys: &[&str]) -> Result<Vec<PathBuf>> {
        let records = read_jsonl(&self.dir.join("metrics.jsonl"))?;
        crate::plot::plot_metrics(&records, keys, &self.dir.join("plots"))
    }
}

/// The newest checkpoint of `run_dir`, if any, with its model loaded on `start`'s device: the full model
/// from `model/`, or `start`'s base with the adapters of `adapter/` for a LoRA run. Its config must equal
/// `config` except for the run length (`iterations`/`epochs` may be extended). Reads only (ranks other than
/// 0 of a data-parallel run resume this way without writing).
pub(crate) fn resume_from<B: Backend, C: Serialize>(
    run_dir: &Path,
    config: &C,
    start: &Start<B>,
) -> Result<Option<Resumed<B>>> {
    let Some(dir) = latest_checkpoint(run_dir)? else {
        return Ok(None);
    };
    let state = read_state(&dir)?;
    let mut ours = serde_json::to_value(config).map_err(|e| bad(&dir, e.to_string()))?;
    let mut theirs = state.config.clone();
    for v in [&mut ours, &mut theirs] {
        if let Some(map) = v.as_object_mut() {
            map.remove("iterations");
            map.remove("epochs");
            // Recompute changes memory and time, not the step: a run may resume with it on or off.
            map.remove("recompute_activations");
            // Absent in checkpoints written before the field existed: the default.
            if map.get("master_weights") == Some(&Value::Bool(false)) {
                map.remove("master_weights");
            }
            // An unset optional field (`lora: null`) equals its absence in a checkpoint written before the
            // field existed.
            map.retain(|_, value| !value.is_null());
        }
    }
    if ours != theirs {
        return Err(bad(
            &dir,
            format!("written with another config:\n  checkpoint: {theirs}\n  now:        {ours}"),
        ));
    }
    let adapter = dir.join(ADAPTER_DIR);
    let model = match &start.lora_base {
        Some(base) if adapter.is_dir() => base.clone().load_lora(&adapter)?,
        Some(_) => {
            return Err(bad(
                &dir,
                "a LoRA run, but the checkpoint has no adapter/ folder",
            ));
        }
        None if adapter.is_dir() => {
            return Err(bad(
                &dir,
                "holds LoRA adapters (adapter/) but the trainer's config has no `lora`",
            ));
        }
        None => Qwen25Vl::from_pretrained(dir.join(MODEL_DIR), &start.device)?,
    };
    Ok(Some(Resumed { dir, model, state }))
}

/// Where a checkpoint keeps the full model (Hugging Face layout).
pub const MODEL_DIR: &str = "model";
/// Where a LoRA run's checkpoint keeps the adapters (PEFT's layout).
pub const ADAPTER_DIR: &str = "adapter";

/// What a trainer starts from, for resuming: the device, and for a LoRA run the base model (the
/// checkpoint's adapters are loaded onto it).
pub(crate) struct Start<B: Backend> {
    pub device: B::Device,
    pub lora_base: Option<Qwen25Vl<B>>,
}

/// `model` with the adapters `lora` asks for (the base frozen), and the base kept for resuming; `model`
/// unchanged without `lora`.
///
/// # Errors
/// [`RlError::Setting`] when `lora` is set and the model has adapters already; the adapter config's errors.
pub(crate) fn attach_lora<B: Backend>(
    model: Qwen25Vl<B>,
    lora: Option<&LoraConfig>,
) -> Result<(Qwen25Vl<B>, Option<Qwen25Vl<B>>)> {
    let Some(lora) = lora else {
        return Ok((model, None));
    };
    if !model.lora_sites().is_empty() {
        return Err(RlError::Setting(
            "config.lora is set but the model has LoRA adapters already: pass the base model (the trainer \
             adds the adapters)"
                .into(),
        ));
    }
    let base = burn::module::Module::no_grad(model.clone());
    Ok((model.with_lora(lora)?, Some(base)))
}

/// Refuses a run folder for a model with adapters the trainer did not add (its checkpoints could not be
/// resumed: the base is not known).
pub(crate) fn check_lora_run<B: Backend>(
    model: &Qwen25Vl<B>,
    lora_base: Option<&Qwen25Vl<B>>,
) -> Result<()> {
    if lora_base.is_none() && !model.lora_sites().is_empty() {
        return Err(RlError::Setting(
            "the model has LoRA adapters the trainer did not add: set the config's `lora` and pass the base \
             model to checkpoint a LoRA run (or train without a run folder and save_lora yourself)"
                .into(),
        ));
    }
    Ok(())
}

/// Writes `model` merged (adapters folded into the base, if any) as a Hugging Face folder in `dtype`, with
/// `source`'s processor files beside it.
pub(crate) fn export_merged<B: AutodiffBackend>(
    model: &Qwen25Vl<B>,
    dir: &Path,
    dtype: FloatDType,
    source: Option<&Path>,
) -> Result<PathBuf> {
    model.valid().merge_lora().save_pretrained(dir, dtype)?;
    if let Some(source) = source {
        copy_processor_files(source, dir)?;
    }
    Ok(dir.to_path_buf())
}

/// Joins a data-parallel run for `model` and checks that every rank holds the same parameters.
pub(crate) fn join_parallel<B: AutodiffBackend>(
    model: &Qwen25Vl<B>,
    dp: &DataParallel,
    has_run: bool,
) -> Result<Collective> {
    if has_run {
        return Err(RlError::Setting(
            "call with_data_parallel before with_run_dir (only rank 0 writes the run folder)"
                .into(),
        ));
    }
    let device = model.device();
    let collective = dp.join::<B::InnerBackend>(&device)?;
    collective.check_identical::<B::InnerBackend, _>(&model.valid(), &device)?;
    Ok(collective)
}

fn read_state(dir: &Path) -> Result<State> {
    let path = dir.join("state.json");
    let bytes = std::fs::read(&path).map_err(io(&path))?;
    serde_json::from_slice(&bytes).map_err(|e| bad(&path, e.to_string()))
}

/// The gradients summed over the ranks of a data-parallel run (unchanged on one device), then global
/// gradient-norm clipping when `max_grad_norm` is set, then one AdamW step at `lr`: on the model, or with
/// `master` on its f32 copies, the model cast back from them. Returns the stepped model and the gradient
/// norm before clipping.
pub(crate) fn clip_and_step<B: AutodiffBackend>(
    model: Qwen25Vl<B>,
    optimizer: &mut AdamWOptimizer<Qwen25Vl<B>, B>,
    grads: burn::optim::GradientsParams,
    max_grad_norm: Option<f32>,
    lr: f64,
    parallel: Option<&Collective>,
    master: Option<&mut memory::Master<B>>,
) -> Result<(Qwen25Vl<B>, f32)> {
    use burn::optim::Optimizer;
    let mut grads = match parallel {
        Some(c) => all_reduce_gradients(&model, grads, c)?,
        None => grads,
    };
    let norm = match max_grad_norm {
        Some(max) => crate::optim::clip_grad_norm(&model, &mut grads, max)?,
        None => crate::optim::grad_norm(&model, &grads),
    };
    let model = match master {
        Some(master) => master.step(optimizer, lr, model, grads),
        None => optimizer.step(lr, model, grads),
    };
    Ok((model, norm))
}

/// Sends a record to the user's sinks and to the run folder's `metrics.jsonl`.
pub(crate) fn emit(
    sinks: &mut [Box<dyn MetricSink>],
    run: Option<&mut Run>,
    record: &crate::metrics::MetricRecord,
) -> Result<()> {
    for sink in sinks {
        sink.record(record)?;
    }
    if let Some(run) = run {
        run.metrics.record(record)?;
    }
    Ok(())
}

/// A seed for draw `c` of iteration `b` of a run seeded `a` (SplitMix64 over the three).
pub fn mix_seed(a: u64, b: u64, c: u64) -> u64 {
    let mut x = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ c.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The first element of a tensor as f32 (NaN if it cannot be read).
pub(crate) fn scalar<B: Backend, const D: usize>(t: Tensor<B, D>) -> f32 {
    t.into_data()
        .convert::<f32>()
        .iter::<f32>()
        .next()
        .unwrap_or(f32::NAN)
}
