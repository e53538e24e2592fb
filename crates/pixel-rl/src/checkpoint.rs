//! Checkpoints that survive `kill -9`: written into a temporary folder, then renamed into place.
//!
//! A run folder holds `checkpoint-00000012/` folders (the number is the trainer's progress counter: GRPO
//! iterations, SFT optimizer steps). Each holds:
//!
//! - `model/`: the weights as a Hugging Face checkpoint (`config.json` + safetensors, f32, exact), with the
//!   processor files of the source checkpoint beside them when known, so the folder loads anywhere;
//! - `optimizer.safetensors`: AdamW's moments **keyed by parameter path** (`{path}.exp_avg`,
//!   `{path}.exp_avg_sq`, the step count in the metadata). burn keys optimizer records by `ParamId`, and a
//!   model loaded from disk gets fresh ids, so a burn record would not find its parameters again;
//! - `state.json`: the step counters, the data cursor, the seeds and the trainer's config;
//! - trainer extras (the replay buffer of GRPO).
//!
//! The folder is complete or absent: it is written as `.tmp-checkpoint-…`, every file synced, then renamed
//! (a rename within a folder is atomic). [`latest_checkpoint`] ignores temporary folders, so a run killed
//! while writing resumes from the previous checkpoint.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::record::AdaptorRecord;
use burn::optim::{AdamW, AdamWState, AdaptiveMomentumState, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use safetensors::tensor::{Dtype, TensorView};

use crate::error::{Result, RlError};

/// Processor files copied next to a checkpoint's weights when present in the source folder.
pub const PROCESSOR_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.json",
    "chat_template.jinja",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "generation_config.json",
];

/// The name of checkpoint `counter`'s folder.
pub fn checkpoint_name(counter: usize) -> String {
    format!("checkpoint-{counter:08}")
}

/// The complete checkpoints of `run_dir`, oldest first, with their counters.
///
/// # Errors
/// [`RlError::Io`] when the folder exists but cannot be listed.
pub fn list_checkpoints(run_dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
    if !run_dir.exists() {
        return Ok(Vec::new());
    }
    let entries = fs::read_dir(run_dir).map_err(io(run_dir))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io(run_dir))?;
        let name = entry.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|s| s.strip_prefix("checkpoint-"))
            .and_then(|s| s.parse::<usize>().ok())
        else {
            continue;
        };
        if entry.path().join("state.json").is_file() {
            out.push((n, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The newest complete checkpoint of `run_dir`, if any.
///
/// # Errors
/// As [`list_checkpoints`].
pub fn latest_checkpoint(run_dir: &Path) -> Result<Option<PathBuf>> {
    Ok(list_checkpoints(run_dir)?.pop().map(|(_, p)| p))
}

pub(crate) fn io(path: &Path) -> impl Fn(std::io::Error) -> RlError + '_ {
    move |source| RlError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn bad(path: &Path, reason: impl Into<String>) -> RlError {
    RlError::Checkpoint {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Writes `bytes` to `path` and syncs it.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = fs::File::create(path).map_err(io(path))?;
    file.write_all(bytes).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

/// A checkpoint being written: files go into a temporary folder until [`PendingCheckpoint::commit`].
pub struct PendingCheckpoint {
    run_dir: PathBuf,
    counter: usize,
    tmp: PathBuf,
}

impl PendingCheckpoint {
    /// Starts checkpoint `counter` in `run_dir` (a stale temporary folder of the same name is removed).
    ///
    /// # Errors
    /// [`RlError::Io`] when the folders cannot be created.
    pub fn begin(run_dir: &Path, counter: usize) -> Result<Self> {
        fs::create_dir_all(run_dir).map_err(io(run_dir))?;
        let tmp = run_dir.join(format!(".tmp-{}", checkpoint_name(counter)));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        Ok(Self {
            run_dir: run_dir.to_path_buf(),
            counter,
            tmp,
        })
    }

    /// The temporary folder files are written into.
    pub fn dir(&self) -> &Path {
        &self.tmp
    }

    /// Renames the folder into place (replacing a checkpoint of the same counter) and keeps only the
    /// newest `keep` checkpoints. Returns the final folder.
    ///
    /// # Errors
    /// [`RlError::Io`] when the rename or the clean-up fails.
    pub fn commit(self, keep: usize) -> Result<PathBuf> {
        let dst = self.run_dir.join(checkpoint_name(self.counter));
        if dst.exists() {
            fs::remove_dir_all(&dst).map_err(io(&dst))?;
        }
        fs::rename(&self.tmp, &dst).map_err(io(&dst))?;
        if let Ok(dir) = fs::File::open(&self.run_dir) {
            // Persist the rename itself (best effort: not every file system syncs folders).
            let _ = dir.sync_all();
        }
        let all = list_checkpoints(&self.run_dir)?;
        let keep = keep.max(1);
        if all.len() > keep {
            for (_, old) in &all[..all.len() - keep] {
                fs::remove_dir_all(old).map_err(io(old))?;
            }
        }
        Ok(dst)
    }
}

/// Copies the processor files of `source` (see [`PROCESSOR_FILES`]) into `dst`.
///
/// # Errors
/// [`RlError::Io`] when a present file cannot be copied.
pub fn copy_processor_files(source: &Path, dst: &Path) -> Result<()> {
    for name in PROCESSOR_FILES {
        let from = source.join(name);
        if from.is_file() {
            let to = dst.join(name);
            fs::copy(&from, &to).map_err(io(&to))?;
        }
    }
    Ok(())
}

/// The AdamW optimizer the trainers use.
pub type AdamWOptimizer<M, B> = OptimizerAdaptor<AdamW, M, B>;

/// Collects `(path, id)` of every float parameter, in module order.
struct Paths {
    stack: Vec<String>,
    out: Vec<(String, ParamId, Vec<usize>)>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Paths {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.stack.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.out.push((
            self.stack.join("."),
            param.id,
            param.shape().dims::<D>().to_vec(),
        ));
    }
}

/// Every float parameter of `module` as `(path, id, shape)`, in module order (paths like
/// `model.text.layers.0.self_attn.q_proj.weight`).
pub fn parameter_paths<B: AutodiffBackend, M: Module<B>>(
    module: &M,
) -> Vec<(String, ParamId, Vec<usize>)> {
    let mut visitor = Paths {
        stack: Vec::new(),
        out: Vec::new(),
    };
    module.visit(&mut visitor);
    visitor.out
}

/// One parameter's AdamW state on the host.
struct ExportedState {
    path: String,
    shape: Vec<usize>,
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
    step: usize,
}

/// Reads one optimizer state's tensors into host vectors; generic over the rank of the parameter.
struct Export<'a, B: AutodiffBackend> {
    stack: Vec<String>,
    records: &'a HashMap<ParamId, AdaptorRecord<AdamW, B>>,
    out: Vec<ExportedState>,
    error: Option<String>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Export<'_, B> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.stack.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(record) = self.records.get(&param.id) else {
            return; // frozen, or not stepped yet
        };
        let state: AdamWState<B::InnerBackend, D> = record.clone().into_state();
        let m = state.momentum;
        let read = |t: Tensor<B::InnerBackend, D>| t.into_data().convert::<f32>().to_vec::<f32>();
        match (read(m.moment_1.clone()), read(m.moment_2.clone())) {
            (Ok(exp_avg), Ok(exp_avg_sq)) => self.out.push(ExportedState {
                path: self.stack.join("."),
                shape: m.moment_1.dims().to_vec(),
                exp_avg,
                exp_avg_sq,
                step: m.time,
            }),
            _ => self.error = Some(format!("{}: moments not readable", self.stack.join("."))),
        }
    }
}

/// Writes `optimizer`'s AdamW state for `model`'s parameters to `path`, keyed by parameter path.
///
/// # Errors
/// [`RlError::Checkpoint`] when a state cannot be read back from the device; [`RlError::Io`].
pub fn save_optimizer<B: AutodiffBackend, M: AutodiffModule<B>>(
    optimizer: &AdamWOptimizer<M, B>,
    model: &M,
    path: &Path,
) -> Result<()> {
    let records: HashMap<ParamId, AdaptorRecord<AdamW, B>> =
        optimizer.to_record().into_iter().collect();
    let mut export = Export::<B> {
        stack: Vec::new(),
        records: &records,
        out: Vec::new(),
        error: None,
    };
    model.visit(&mut export);
    if let Some(e) = export.error {
        return Err(bad(path, e));
    }
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = export
        .out
        .iter()
        .flat_map(|e| {
            [("exp_avg", &e.exp_avg), ("exp_avg_sq", &e.exp_avg_sq)].map(|(suffix, v)| {
                (
                    format!("{}.{suffix}", e.path),
                    e.shape.clone(),
                    v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
                )
            })
        })
        .collect();
    let mut views = Vec::with_capacity(bytes.len());
    for (name, shape, data) in &bytes {
        let view = TensorView::new(Dtype::F32, shape.clone(), data)
            .map_err(|e| bad(path, format!("{name}: {e}")))?;
        views.push((name.clone(), view));
    }
    let metadata: HashMap<String, String> = export
        .out
        .iter()
        .map(|e| (format!("{}.step", e.path), e.step.to_string()))
        .collect();
    let file = safetensors::tensor::serialize(views, Some(metadata))
        .map_err(|e| bad(path, e.to_string()))?;
    write_synced(path, &file)
}

/// Rebuilds optimizer records for `model`'s (new) parameter ids from a file of [`save_optimizer`].
struct Import<'a, B: AutodiffBackend> {
    stack: Vec<String>,
    file: &'a safetensors::SafeTensors<'a>,
    steps: &'a HashMap<String, String>,
    out: HashMap<ParamId, AdaptorRecord<AdamW, B>>,
    error: Option<String>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Import<'_, B> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.stack.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.error.is_some() {
            return;
        }
        let name = self.stack.join(".");
        let Some(step) = self.steps.get(&format!("{name}.step")) else {
            return; // this parameter had no state
        };
        let Ok(time) = step.parse::<usize>() else {
            self.error = Some(format!("{name}: step {step:?} is not a number"));
            return;
        };
        let shape = param.shape().dims::<D>().to_vec();
        let device = param.val().device();
        let mut load = |suffix: &str| -> Option<Tensor<B::InnerBackend, D>> {
            let key = format!("{name}.{suffix}");
            let view = match self.file.tensor(&key) {
                Ok(v) => v,
                Err(e) => {
                    self.error = Some(format!("{key}: {e}"));
                    return None;
                }
            };
            if view.dtype() != Dtype::F32 || view.shape() != shape.as_slice() {
                self.error = Some(format!(
                    "{key}: {:?} {:?}, the parameter is {shape:?}",
                    view.dtype(),
                    view.shape()
                ));
                return None;
            }
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            Some(Tensor::from_data(
                TensorData::new(values, shape.clone()),
                &device,
            ))
        };
        let (Some(m1), Some(m2)) = (load("exp_avg"), load("exp_avg_sq")) else {
            return;
        };
        let state = AdamWState::new(AdaptiveMomentumState::new(time, m1, m2));
        self.out.insert(param.id, AdaptorRecord::from_state(state));
    }
}

/// Loads a file of [`save_optimizer`] into `optimizer` for `model` (matched by parameter path).
///
/// # Errors
/// [`RlError::Checkpoint`] for a malformed file or a state whose shape does not fit its parameter;
/// [`RlError::Io`].
pub fn load_optimizer<B: AutodiffBackend, M: AutodiffModule<B>>(
    optimizer: AdamWOptimizer<M, B>,
    model: &M,
    path: &Path,
) -> Result<AdamWOptimizer<M, B>> {
    let bytes = fs::read(path).map_err(io(path))?;
    let file =
        safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(path, e.to_string()))?;
    let (_, metadata) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(path, e.to_string()))?;
    let steps = metadata.metadata().clone().unwrap_or_default();
    let mut import = Import::<B> {
        stack: Vec::new(),
        file: &file,
        steps: &steps,
        out: HashMap::new(),
        error: None,
    };
    model.visit(&mut import);
    if let Some(e) = import.error {
        return Err(bad(path, e));
    }
    if import.out.len() != steps.len() {
        return Err(bad(
            path,
            format!(
                "{} parameter states in the file, {} match the model's parameters",
                steps.len(),
                import.out.len()
            ),
        ));
    }
    Ok(optimizer.load_record(import.out.into_iter().collect()))
}
