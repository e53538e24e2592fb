//! Hugging Face checkpoint loading: single and sharded safetensors, both key layouts, bf16/f16 kept or widened.
//!
//! # Why not `burn-store`
//! `burn-store`'s `SafetensorsStore` loads *into an initialised module*: a 7B model would first be built with
//! random weights (seconds of RNG and a second copy of the parameters), BF16 tensors are not converted
//! (`NdArray` panics, `Flex` silently keeps BF16), unused tensors are dropped silently and the first missing
//! tensor aborts. Here every layer is *constructed* from the checkpoint: `ParamLoader` hands each layer its
//! tensors by name, converts the dtype, and records every missing, unexpected or mis-shaped tensor, so one
//! [`VlmError::Weights`] lists them all. It also reads tensors straight from the files by offset (headers are
//! parsed up front, data is read one tensor at a time), so peak memory is the model plus one tensor, with no
//! mmap. The plain `safetensors` crate is not used for the same reason: its parser wants the whole file in
//! one buffer.
//!
//! Precision: parameters are uploaded in the dtype the model is built with (see
//! [`crate::Qwen25Vl::from_pretrained_with_dtype`]); a tensor is read in its stored element type and converted
//! once, by burn, on upload: a bf16 checkpoint built as bf16 (e.g. on CUDA) is never widened to f32 on the host,
//! and one built as f32 (the CPU default) is widened exactly.
//!
//! Key layouts: the original one (`model.layers.*`, `model.embed_tokens`, `model.norm`, `visual.*`,
//! `lm_head`) is the canonical naming inside this crate; transformers 5 writes `model.language_model.*` and
//! `model.visual.*`, which are renamed on reading.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::{Embedding, Linear, RmsNorm};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor, TensorData};
use half::{bf16, f16};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use crate::error::{Result, VlmError, io_err, read_text};

/// Largest safetensors header accepted (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100_000_000;

/// Element type of a tensor on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskDtype {
    /// IEEE f32.
    F32,
    /// IEEE f16.
    F16,
    /// bfloat16.
    BF16,
}

impl DiskDtype {
    fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
        }
    }
}

/// Where one tensor lives.
#[derive(Debug, Clone)]
struct Entry {
    file: usize,
    dtype: DiskDtype,
    shape: Vec<usize>,
    /// Absolute byte offset in the file.
    offset: u64,
    len: usize,
}

/// The tensors of a checkpoint folder: parsed headers of every shard, keyed by canonical name.
#[derive(Debug)]
pub struct CheckpointIndex {
    files: Vec<PathBuf>,
    entries: BTreeMap<String, Entry>,
}

/// Maps a transformers-5 key (`model.language_model.*`, `model.visual.*`) to the canonical original layout.
pub fn canonical_key(key: &str) -> String {
    if let Some(rest) = key.strip_prefix("model.language_model.") {
        format!("model.{rest}")
    } else if let Some(rest) = key.strip_prefix("model.visual.") {
        format!("visual.{rest}")
    } else {
        key.to_string()
    }
}

fn st_err(path: &Path, reason: impl Into<String>) -> VlmError {
    VlmError::Safetensors {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl CheckpointIndex {
    /// Indexes the safetensors of a checkpoint folder: `model.safetensors.index.json` (sharded) if present,
    /// else `model.safetensors`, else every `*.safetensors` in the folder.
    ///
    /// # Errors
    /// [`VlmError::NotACheckpoint`] if the folder has no safetensors, [`VlmError::Json`] for a bad index,
    /// [`VlmError::Safetensors`] for a malformed or truncated file, [`VlmError::Io`] if reading fails.
    pub fn open_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(VlmError::NotACheckpoint {
                path: dir.to_path_buf(),
                reason: "not a directory".into(),
            });
        }
        let index_path = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index_path.is_file() {
            let text = read_text(&index_path)?;
            let json: Value = serde_json::from_str(&text).map_err(|e| VlmError::Json {
                path: index_path.clone(),
                message: e.to_string(),
            })?;
            let map = json
                .get("weight_map")
                .and_then(Value::as_object)
                .ok_or_else(|| VlmError::Json {
                    path: index_path.clone(),
                    message: "no `weight_map` object".into(),
                })?;
            let mut names = BTreeSet::new();
            for (key, file) in map {
                let file = file.as_str().ok_or_else(|| VlmError::Json {
                    path: index_path.clone(),
                    message: format!("weight_map[{key:?}] is not a file name"),
                })?;
                names.insert(file.to_string());
            }
            names.into_iter().map(|n| dir.join(n)).collect()
        } else if dir.join("model.safetensors").is_file() {
            vec![dir.join("model.safetensors")]
        } else {
            let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(io_err(dir))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
                .collect();
            found.sort();
            found
        };
        if files.is_empty() {
            return Err(VlmError::NotACheckpoint {
                path: dir.to_path_buf(),
                reason: "no model.safetensors, model.safetensors.index.json or *.safetensors"
                    .into(),
            });
        }
        Self::open_files(files)
    }

    /// Indexes the given safetensors files (shards of one checkpoint).
    ///
    /// # Errors
    /// As [`CheckpointIndex::open_dir`]; a tensor present in two files is a [`VlmError::Safetensors`] error.
    pub fn open_files(files: Vec<PathBuf>) -> Result<Self> {
        let mut entries = BTreeMap::new();
        for (file_idx, path) in files.iter().enumerate() {
            for (name, entry) in read_header(path, file_idx)? {
                let key = canonical_key(&name);
                if entries.insert(key.clone(), entry).is_some() {
                    return Err(st_err(
                        path,
                        format!("tensor `{key}` appears twice in the checkpoint"),
                    ));
                }
            }
        }
        Ok(Self { files, entries })
    }

    /// Canonical names of all tensors.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Shape of a tensor, by canonical name.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    /// Reads one tensor as f32 (converting bf16/f16), by canonical name. `None` if absent.
    ///
    /// # Errors
    /// [`VlmError::Io`] if the read fails.
    pub fn read_f32(&self, name: &str) -> Result<Option<Vec<f32>>> {
        Ok(self.read(name)?.map(HostTensor::into_f32))
    }

    /// Reads one tensor in its stored element type, by canonical name. `None` if absent.
    ///
    /// # Errors
    /// [`VlmError::Io`] if the read fails.
    pub fn read(&self, name: &str) -> Result<Option<HostTensor>> {
        let Some(entry) = self.entries.get(name) else {
            return Ok(None);
        };
        let path = &self.files[entry.file];
        let mut file = File::open(path).map_err(io_err(path))?;
        file.seek(SeekFrom::Start(entry.offset))
            .map_err(io_err(path))?;
        let mut bytes = vec![0u8; entry.len];
        file.read_exact(&mut bytes).map_err(io_err(path))?;
        Ok(Some(match entry.dtype {
            DiskDtype::F32 => HostTensor::F32(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            DiskDtype::F16 => HostTensor::F16(
                bytes
                    .chunks_exact(2)
                    .map(|c| f16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            ),
            DiskDtype::BF16 => HostTensor::BF16(
                bytes
                    .chunks_exact(2)
                    .map(|c| bf16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            ),
        }))
    }
}

/// One tensor's elements on the host, row-major, in the type the checkpoint stores (converted only when
/// uploaded, to the model's dtype, so a bf16 checkpoint loaded as bf16 is never widened).
#[derive(Debug, Clone, PartialEq)]
pub enum HostTensor {
    /// f32 elements.
    F32(Vec<f32>),
    /// f16 elements.
    F16(Vec<f16>),
    /// bf16 elements.
    BF16(Vec<bf16>),
}

impl HostTensor {
    /// The elements widened to f32.
    pub fn into_f32(self) -> Vec<f32> {
        match self {
            Self::F32(v) => v,
            Self::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            Self::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
        }
    }

    /// Burn tensor data of the given shape (same element type).
    pub fn into_data(self, shape: Vec<usize>) -> TensorData {
        match self {
            Self::F32(v) => TensorData::new(v, shape),
            Self::F16(v) => TensorData::new(v, shape),
            Self::BF16(v) => TensorData::new(v, shape),
        }
    }

    /// The `[rows, cols]` matrix transposed to `[cols, rows]`, same element type.
    pub fn transpose(self, rows: usize, cols: usize) -> Self {
        match self {
            Self::F32(v) => Self::F32(transpose(&v, rows, cols)),
            Self::F16(v) => Self::F16(transpose(&v, rows, cols)),
            Self::BF16(v) => Self::BF16(transpose(&v, rows, cols)),
        }
    }
}

/// Row-major `[rows, cols]` to row-major `[cols, rows]`.
fn transpose<T: Copy + Default>(m: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut out = vec![T::default(); m.len()];
    for (r, row) in m.chunks_exact(cols.max(1)).take(rows).enumerate() {
        for (c, &x) in row.iter().enumerate() {
            out[c * rows + r] = x;
        }
    }
    out
}

/// Parses one safetensors header and checks every tensor lies inside the file.
fn read_header(path: &Path, file_idx: usize) -> Result<Vec<(String, Entry)>> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let file_len = file.metadata().map_err(io_err(path))?.len();
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes)
        .map_err(|_| st_err(path, format!("file of {file_len} bytes has no header")))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER || 8 + header_len > file_len {
        return Err(st_err(
            path,
            format!("header length {header_len} does not fit a file of {file_len} bytes"),
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(io_err(path))?;
    let json: BTreeMap<String, Value> = serde_json::from_slice(&header)
        .map_err(|e| st_err(path, format!("header is not valid JSON: {e}")))?;
    let data_start = 8 + header_len;
    let mut out = Vec::with_capacity(json.len());
    for (name, info) in json {
        if name == "__metadata__" {
            continue;
        }
        let bad = |what: &str| st_err(path, format!("tensor `{name}`: {what}"));
        let dtype = match info.get("dtype").and_then(Value::as_str) {
            Some("F32") => DiskDtype::F32,
            Some("F16") => DiskDtype::F16,
            Some("BF16") => DiskDtype::BF16,
            Some(other) => {
                return Err(bad(&format!(
                    "unsupported dtype {other} (F32, F16 and BF16 are)"
                )));
            }
            None => return Err(bad("no dtype")),
        };
        let shape: Vec<usize> = info
            .get("shape")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(|d| d.as_u64().map(|d| d as usize)).collect())
            .ok_or_else(|| bad("no shape"))?;
        let offsets: Vec<u64> = info
            .get("data_offsets")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(Value::as_u64).collect())
            .ok_or_else(|| bad("no data_offsets"))?;
        let [begin, end] = offsets[..] else {
            return Err(bad("data_offsets must have two entries"));
        };
        let numel: usize = shape.iter().product();
        if end < begin || (end - begin) as usize != numel * dtype.size() {
            return Err(bad(&format!(
                "data_offsets {begin}..{end} do not hold {numel} elements of {dtype:?}"
            )));
        }
        if data_start + end > file_len {
            return Err(bad(&format!(
                "data ends at byte {} but the file has {file_len} bytes (truncated?)",
                data_start + end
            )));
        }
        out.push((
            name,
            Entry {
                file: file_idx,
                dtype,
                shape,
                offset: data_start + begin,
                len: (end - begin) as usize,
            },
        ));
    }
    Ok(out)
}

/// How a parameter is initialised when it is not loaded from a checkpoint.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Init {
    /// All ones (norm scales).
    Ones,
    /// All zeros (biases).
    Zeros,
    /// Normal with mean 0 and this standard deviation.
    Normal(f64),
}

enum Source {
    Checkpoint(CheckpointIndex),
    Random(Box<ChaCha8Rng>),
}

/// Hands each layer its parameters by name, from a checkpoint or from a seeded random initialiser, and
/// collects every problem so that [`ParamLoader::finish`] reports them together.
pub(crate) struct ParamLoader<'a, B: Backend> {
    device: &'a B::Device,
    /// The dtype every parameter is uploaded as.
    dtype: FloatDType,
    source: Source,
    used: BTreeSet<String>,
    missing: Vec<String>,
    mismatched: Vec<String>,
    /// Names the model may leave unused without an error (a saved `lm_head` of a tied model).
    tolerated: BTreeSet<String>,
    io_error: Option<VlmError>,
}

impl<'a, B: Backend> ParamLoader<'a, B> {
    pub(crate) fn from_checkpoint(
        index: CheckpointIndex,
        device: &'a B::Device,
        dtype: FloatDType,
    ) -> Self {
        Self::new(Source::Checkpoint(index), device, dtype)
    }

    /// A seeded random source in the device's default float dtype (benchmarks, tests, layer configs' `init`).
    pub(crate) fn random(seed: u64, device: &'a B::Device) -> Self {
        let dtype = burn::tensor::get_device_settings::<B>(device).float_dtype;
        Self::new(
            Source::Random(Box::new(ChaCha8Rng::seed_from_u64(seed))),
            device,
            dtype,
        )
    }

    fn new(source: Source, device: &'a B::Device, dtype: FloatDType) -> Self {
        Self {
            device,
            dtype,
            source,
            used: BTreeSet::new(),
            missing: Vec::new(),
            mismatched: Vec::new(),
            tolerated: BTreeSet::new(),
            io_error: None,
        }
    }

    /// Lets `name` be present in the checkpoint without being used.
    pub(crate) fn tolerate(&mut self, name: &str) {
        self.tolerated.insert(name.to_string());
    }

    /// Host data of parameter `name` with the given shape (row-major), in the checkpoint's element type.
    pub(crate) fn host(&mut self, name: &str, shape: &[usize], init: Init) -> HostTensor {
        let numel: usize = shape.iter().product();
        let zeros = || HostTensor::F32(vec![0.0; numel]);
        match &mut self.source {
            Source::Random(rng) => HostTensor::F32(match init {
                Init::Ones => vec![1.0; numel],
                Init::Zeros => vec![0.0; numel],
                Init::Normal(std) => (0..numel)
                    .map(|_| {
                        // Box–Muller: enough for benchmark and test weights.
                        let u1: f64 = rng.random::<f64>().max(1e-12);
                        let u2: f64 = rng.random::<f64>();
                        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos() * std) as f32
                    })
                    .collect(),
            }),
            Source::Checkpoint(index) => {
                self.used.insert(name.to_string());
                match index.shape(name) {
                    None => {
                        self.missing.push(name.to_string());
                        zeros()
                    }
                    Some(found) if found != shape => {
                        self.mismatched
                            .push(format!("{name}: expected {shape:?}, found {found:?}"));
                        zeros()
                    }
                    Some(_) => match index.read(name) {
                        Ok(Some(data)) => data,
                        Ok(None) => zeros(),
                        Err(err) => {
                            self.io_error.get_or_insert(err);
                            zeros()
                        }
                    },
                }
            }
        }
    }

    /// Uploads host data as a tensor of the model's dtype (converting the element type on the way).
    fn upload<const D: usize>(&self, data: HostTensor, shape: [usize; D]) -> Tensor<B, D> {
        Tensor::from_data(
            data.into_data(shape.to_vec()),
            (self.device, DType::from(self.dtype)),
        )
    }

    /// Parameter `name` as a tensor of the given shape.
    pub(crate) fn tensor<const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
        init: Init,
    ) -> Tensor<B, D> {
        let data = self.host(name, &shape, init);
        self.upload(data, shape)
    }

    /// A `torch.nn.Linear` stored as `{prefix}.weight` `[d_out, d_in]` (+ `{prefix}.bias`), transposed into
    /// burn's `[d_in, d_out]` layout.
    pub(crate) fn linear(
        &mut self,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        std: f64,
    ) -> Linear<B> {
        let weight = self.host(
            &format!("{prefix}.weight"),
            &[d_out, d_in],
            Init::Normal(std),
        );
        self.linear_from_rows(prefix, weight, d_in, d_out, bias)
    }

    /// A linear layer from a `[d_out, d_in]` row-major weight already read (e.g. a reshaped conv kernel).
    pub(crate) fn linear_from_rows(
        &mut self,
        prefix: &str,
        weight: HostTensor,
        d_in: usize,
        d_out: usize,
        bias: bool,
    ) -> Linear<B> {
        let weight = self.upload(weight.transpose(d_out, d_in), [d_in, d_out]);
        let bias = bias.then(|| {
            Param::from_tensor(self.tensor(&format!("{prefix}.bias"), [d_out], Init::Zeros))
        });
        Linear {
            weight: Param::from_tensor(weight),
            bias,
        }
    }

    /// An RMSNorm with scale `{prefix}.weight`.
    pub(crate) fn rms_norm(&mut self, prefix: &str, dim: usize, eps: f64) -> RmsNorm<B> {
        RmsNorm {
            gamma: Param::from_tensor(self.tensor(&format!("{prefix}.weight"), [dim], Init::Ones)),
            epsilon: eps,
        }
    }

    /// An embedding table `{prefix}.weight` `[n, dim]`.
    pub(crate) fn embedding(
        &mut self,
        prefix: &str,
        n: usize,
        dim: usize,
        std: f64,
    ) -> Embedding<B> {
        Embedding {
            weight: Param::from_tensor(self.tensor(
                &format!("{prefix}.weight"),
                [n, dim],
                Init::Normal(std),
            )),
        }
    }

    /// Ends loading: any missing, unexpected or mis-shaped tensor (or a failed read) is an error.
    pub(crate) fn finish(self) -> Result<()> {
        if let Some(err) = self.io_error {
            return Err(err);
        }
        let unexpected: Vec<String> = match &self.source {
            Source::Random(_) => Vec::new(),
            Source::Checkpoint(index) => index
                .names()
                .filter(|n| !self.used.contains(*n) && !self.tolerated.contains(*n))
                .map(str::to_string)
                .collect(),
        };
        if self.missing.is_empty() && unexpected.is_empty() && self.mismatched.is_empty() {
            Ok(())
        } else {
            Err(VlmError::Weights {
                missing: self.missing,
                unexpected,
                mismatched: self.mismatched,
            })
        }
    }
}

/// Canonical names of the tensors a checkpoint has, with their shapes (for diagnostics and tests).
pub fn checkpoint_shapes(dir: impl AsRef<Path>) -> Result<HashMap<String, Vec<usize>>> {
    let index = CheckpointIndex::open_dir(dir)?;
    Ok(index
        .entries
        .iter()
        .map(|(k, e)| (k.clone(), e.shape.clone()))
        .collect())
}
