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
pub mod replay;
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
use crate::error::Result;
use crate::metrics::{JsonlSink, MetricSink, read_jsonl};

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

    /// The newest checkpoint, if any, with its model loaded on `device`. Its config must equal `config`
    /// except for the run length (`iterations`/`epochs` may be extended).
    pub fn resume<B: Backend, C: Serialize>(
        &self,
        config: &C,
        device: &B::Device,
    ) -> Result<Option<Resumed<B>>> {
        let Some(dir) = latest_checkpoint(&self.dir)? else {
            return Ok(None);
        };
        let state = read_state(&dir)?;
        let mut ours = serde_json::to_value(config).map_err(|e| bad(&dir, e.to_string()))?;
        let mut theirs = state.config.clone();
        for key in ["iterations", "epochs"] {
            for v in [&mut ours, &mut theirs] {
                if let Some(map) = v.as_object_mut() {
                    map.remove(key);
                }
            }
        }
        if ours != theirs {
            return Err(bad(
                &dir,
                format!(
                    "written with another config:\n  checkpoint: {theirs}\n  now:        {ours}"
                ),
            ));
        }
        let model = Qwen25Vl::from_pretrained(dir.join("model"), device)?;
        Ok(Some(Resumed { dir, model, state }))
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
        let model_dir = pending.dir().join("model");
        model.valid().save_pretrained(&model_dir, FloatDType::F32)?;
        if let Some(source) = &self.source {
            copy_processor_files(source, &model_dir)?;
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

fn read_state(dir: &Path) -> Result<State> {
    let path = dir.join("state.json");
    let bytes = std::fs::read(&path).map_err(io(&path))?;
    serde_json::from_slice(&bytes).map_err(|e| bad(&path, e.to_string()))
}

/// Global gradient-norm clipping when `max_grad_norm` is set, then one AdamW step at `lr`. Returns the
/// stepped model and the gradient norm before clipping.
pub(crate) fn clip_and_step<B: AutodiffBackend>(
    model: Qwen25Vl<B>,
    optimizer: &mut AdamWOptimizer<Qwen25Vl<B>, B>,
    mut grads: burn::optim::GradientsParams,
    max_grad_norm: Option<f32>,
    lr: f64,
) -> Result<(Qwen25Vl<B>, f32)> {
    use burn::optim::Optimizer;
    let norm = match max_grad_norm {
        Some(max) => crate::optim::clip_grad_norm(&model, &mut grads, max)?,
        None => crate::optim::grad_norm(&model, &grads),
    };
    Ok((optimizer.step(lr, model, grads), norm))
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
