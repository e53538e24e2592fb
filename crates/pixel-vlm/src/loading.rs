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

use crate::config::Qwen25VlConfig;
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
    /// The element type, or the safetensors name of one this loader cannot read (`I64`, `F64`, ...), which
    /// [`CheckpointIndex::check`] reports for every tensor the model needs.
    dtype: std::result::Result<DiskDtype, String>,
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
                if !is_inside_name(file) {
                    return Err(VlmError::ShardPath {
                        index: index_path.clone(),
                        key: key.clone(),
                        file: file.to_string(),
                    });
                }
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

    /// Checks the tensors against the model `config` describes, from the headers alone (nothing is read
    /// or allocated): every parameter present, with the shape the config implies and a readable element
    /// type (F32, F16, BF16), and no tensor the model would not use. Every problem is reported at once.
    /// [`crate::Qwen25Vl::from_pretrained`] runs this before it builds anything, so a config describing a
    /// bigger model than the weights (a 7B `config.json` beside a tiny checkpoint) is an error, not a
    /// multi-gigabyte allocation.
    ///
    /// The work is bounded by the checkpoint, not by the config: layers the config has beyond the last one
    /// the files hold are reported as one entry (`model.layers.{a..=b}.* (n tensors)`).
    ///
    /// # Errors
    /// [`VlmError::Config`] if the config is invalid ([`crate::Qwen25VlConfig::validate`]);
    /// [`VlmError::Weights`] listing every missing, unexpected, mis-shaped and unreadable tensor.
    pub fn check(&self, config: &Qwen25VlConfig) -> Result<()> {
        let plan = TensorPlan::new(config)?;
        let mut missing = Vec::new();
        let mut mismatched = Vec::new();
        let mut unsupported_dtype = Vec::new();
        let mut check_one = |name: &str, shape: &[usize]| match self.entries.get(name) {
            None => missing.push(name.to_string()),
            Some(entry) => {
                if entry.shape != shape {
                    mismatched.push(format!(
                        "{name}: expected {shape:?}, found {:?}",
                        entry.shape
                    ));
                }
                if let Err(dtype) = &entry.dtype {
                    unsupported_dtype.push(format!("{name}: {dtype}"));
                }
            }
        };
        // Layers beyond the files' last one, one entry per kind (listed after the single tensors).
        let mut summaries = Vec::new();
        for (name, shape) in &plan.fixed {
            check_one(name, shape);
        }
        for block in &plan.blocks {
            // Only as many repeats as the files can hold are listed one by one.
            let present = self
                .entries
                .keys()
                .filter_map(|name| block.split(name).map(|(i, _)| i))
                .max()
                .map_or(0, |i| i.saturating_add(1));
            let listed = block.count.min(present);
            for i in 0..listed {
                for (suffix, shape) in &block.items {
                    check_one(&format!("{}.{i}.{suffix}", block.prefix), shape);
                }
            }
            if listed < block.count {
                summaries.push(format!(
                    "{}.{{{listed}..={}}}.* ({} tensors)",
                    block.prefix,
                    block.count - 1,
                    (block.count - listed).saturating_mul(block.items.len())
                ));
            }
        }
        missing.extend(summaries);
        let unexpected: Vec<String> = self
            .entries
            .keys()
            .filter(|name| !plan.expects(name))
            .cloned()
            .collect();
        if missing.is_empty()
            && unexpected.is_empty()
            && mismatched.is_empty()
            && unsupported_dtype.is_empty()
        {
            Ok(())
        } else {
            Err(VlmError::Weights {
                missing,
                unexpected,
                mismatched,
                unsupported_dtype,
            })
        }
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
        let dtype = entry.dtype.clone().map_err(|dtype| {
            st_err(
                path,
                format!("tensor `{name}`: unsupported dtype {dtype} (F32, F16 and BF16 are)"),
            )
        })?;
        let mut file = File::open(path).map_err(io_err(path))?;
        file.seek(SeekFrom::Start(entry.offset))
            .map_err(io_err(path))?;
        let mut bytes = vec![0u8; entry.len];
        file.read_exact(&mut bytes).map_err(io_err(path))?;
        Ok(Some(match dtype {
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
            Some("F32") => Ok(DiskDtype::F32),
            Some("F16") => Ok(DiskDtype::F16),
            Some("BF16") => Ok(DiskDtype::BF16),
            Some(other) => Err(other.to_string()),
            None => return Err(bad("no dtype")),
        };
        let shape: Vec<usize> = info
            .get("shape")
            .and_then(Value::as_array)
            .and_then(|a| {
                a.iter()
                    .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                    .collect()
            })
            .ok_or_else(|| bad("no shape (a list of sizes)"))?;
        let offsets: Vec<u64> = info
            .get("data_offsets")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(Value::as_u64).collect())
            .ok_or_else(|| bad("no data_offsets"))?;
        let [begin, end] = offsets[..] else {
            return Err(bad("data_offsets must have two entries"));
        };
        let numel = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| {
                bad(&format!(
                    "shape {shape:?} has more elements than fit in memory"
                ))
            })?;
        // The element size of a dtype this loader cannot read is known for the standard ones; an unknown
        // name is only checked to lie inside the file.
        let elem_size = match &dtype {
            Ok(d) => Some(d.size()),
            Err(name) => safetensors_dtype_size(name),
        };
        let bytes = elem_size.map(|size| numel.checked_mul(size));
        if end < begin
            || bytes.is_some_and(|b| b.and_then(|b| u64::try_from(b).ok()) != Some(end - begin))
        {
            return Err(bad(&format!(
                "data_offsets {begin}..{end} do not hold {numel} elements of {}",
                match &dtype {
                    Ok(d) => format!("{d:?}"),
                    Err(name) => name.clone(),
                }
            )));
        }
        let data_end = data_start.checked_add(end);
        if data_end.is_none_or(|e| e > file_len) {
            return Err(bad(&format!(
                "data ends at byte {} but the file has {file_len} bytes (truncated?)",
                data_end.map_or_else(|| "beyond 2^64".to_string(), |e| e.to_string())
            )));
        }
        let len =
            usize::try_from(end - begin).map_err(|_| bad("data larger than the address space"))?;
        out.push((
            name,
            Entry {
                file: file_idx,
                dtype,
                shape,
                offset: data_start + begin,
                len,
            },
        ));
    }
    Ok(out)
}

/// Bytes per element of the safetensors dtypes (`None` for a name the format does not define).
fn safetensors_dtype_size(name: &str) -> Option<usize> {
    Some(match name {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" => 8,
        _ => return None,
    })
}

/// Whether a shard name from `model.safetensors.index.json` stays inside the checkpoint folder: relative,
/// only plain components (a sub-folder is fine), no `..`, no root or drive prefix, no backslash (a
/// separator on Windows). Checked on the text alone: symbolic links inside the folder (the Hugging Face
/// cache links every file into `blobs/`) are followed as usual.
fn is_inside_name(file: &str) -> bool {
    let path = Path::new(file);
    !file.is_empty()
        && !file.contains('\\')
        && !file.contains(':')
        && path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// Every parameter a config implies, with its shape (in the checkpoint's layout: `[out, in]` linear
/// weights, the 5-D patch convolution), grouped so that repeated layers are described once. It mirrors the
/// layers' `load` functions; a unit test checks the two agree.
#[derive(Debug)]
pub(crate) struct TensorPlan {
    /// Parameters outside the repeated blocks.
    fixed: Vec<(String, Vec<usize>)>,
    /// Vision blocks and decoder layers.
    blocks: Vec<RepeatedBlock>,
    /// Names that may be present without being used (`lm_head.weight` of a tied model).
    tolerated: Vec<&'static str>,
}

/// `count` repeats of the same parameters, named `{prefix}.{i}.{suffix}`.
#[derive(Debug)]
struct RepeatedBlock {
    prefix: &'static str,
    count: usize,
    items: Vec<(String, Vec<usize>)>,
}

impl RepeatedBlock {
    /// `(i, suffix)` if `name` is `{prefix}.{i}.{suffix}`.
    fn split<'n>(&self, name: &'n str) -> Option<(usize, &'n str)> {
        let rest = name.strip_prefix(self.prefix)?.strip_prefix('.')?;
        let (index, suffix) = rest.split_once('.')?;
        Some((index.parse().ok()?, suffix))
    }
}

impl TensorPlan {
    /// The parameters of the model `config` describes.
    ///
    /// # Errors
    /// [`VlmError::Config`] if the config is invalid (every size product below is then representable).
    pub(crate) fn new(config: &Qwen25VlConfig) -> Result<Self> {
        config.validate()?;
        let (v, t) = (&config.vision, &config.text);
        let linear = |items: &mut Vec<(String, Vec<usize>)>, name: &str, d_in, d_out, bias| {
            items.push((format!("{name}.weight"), vec![d_out, d_in]));
            if bias {
                items.push((format!("{name}.bias"), vec![d_out]));
            }
        };
        let mut fixed = vec![(
            "visual.patch_embed.proj.weight".to_string(),
            vec![
                v.hidden_size,
                v.in_channels,
                v.temporal_patch_size,
                v.patch_size,
                v.patch_size,
            ],
        )];
        let wide = v.hidden_size * v.merge_unit();
        fixed.push(("visual.merger.ln_q.weight".into(), vec![v.hidden_size]));
        linear(&mut fixed, "visual.merger.mlp.0", wide, wide, true);
        linear(
            &mut fixed,
            "visual.merger.mlp.2",
            wide,
            v.out_hidden_size,
            true,
        );
        fixed.push((
            "model.embed_tokens.weight".into(),
            vec![t.vocab_size, t.hidden_size],
        ));
        fixed.push(("model.norm.weight".into(), vec![t.hidden_size]));
        let mut tolerated = Vec::new();
        if config.tie_word_embeddings {
            tolerated.push("lm_head.weight");
        } else {
            linear(&mut fixed, "lm_head", t.hidden_size, t.vocab_size, false);
        }

        let mut vision_block = Vec::new();
        for norm in ["norm1", "norm2"] {
            vision_block.push((format!("{norm}.weight"), vec![v.hidden_size]));
        }
        linear(
            &mut vision_block,
            "attn.qkv",
            v.hidden_size,
            3 * v.hidden_size,
            true,
        );
        linear(
            &mut vision_block,
            "attn.proj",
            v.hidden_size,
            v.hidden_size,
            true,
        );
        let swiglu = |items: &mut Vec<(String, Vec<usize>)>, hidden, inter, bias| {
            linear(items, "mlp.gate_proj", hidden, inter, bias);
            linear(items, "mlp.up_proj", hidden, inter, bias);
            linear(items, "mlp.down_proj", inter, hidden, bias);
        };
        swiglu(&mut vision_block, v.hidden_size, v.intermediate_size, true);

        let mut layer = Vec::new();
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            layer.push((format!("{norm}.weight"), vec![t.hidden_size]));
        }
        let kv = t.num_key_value_heads * t.head_dim();
        linear(
            &mut layer,
            "self_attn.q_proj",
            t.hidden_size,
            t.hidden_size,
            true,
        );
        linear(&mut layer, "self_attn.k_proj", t.hidden_size, kv, true);
        linear(&mut layer, "self_attn.v_proj", t.hidden_size, kv, true);
        linear(
            &mut layer,
            "self_attn.o_proj",
            t.hidden_size,
            t.hidden_size,
            false,
        );
        swiglu(&mut layer, t.hidden_size, t.intermediate_size, false);

        Ok(Self {
            fixed,
            blocks: vec![
                RepeatedBlock {
                    prefix: "visual.blocks",
                    count: v.depth,
                    items: vision_block,
                },
                RepeatedBlock {
                    prefix: "model.layers",
                    count: t.num_hidden_layers,
                    items: layer,
                },
            ],
            tolerated,
        })
    }

    /// Whether the model uses (or tolerates) a tensor of this canonical name.
    fn expects(&self, name: &str) -> bool {
        self.tolerated.contains(&name)
            || self.fixed.iter().any(|(n, _)| n == name)
            || self.blocks.iter().any(|b| {
                b.split(name).is_some_and(|(i, suffix)| {
                    i < b.count && b.items.iter().any(|(s, _)| s == suffix)
                })
            })
    }

    /// Every parameter, repeats expanded (saving checks the model against it; tests).
    pub(crate) fn flatten(&self) -> Vec<(String, Vec<usize>)> {
        let mut all = self.fixed.clone();
        for b in &self.blocks {
            for i in 0..b.count {
                for (suffix, shape) in &b.items {
                    all.push((format!("{}.{i}.{suffix}", b.prefix), shape.clone()));
                }
            }
        }
        all
    }
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
    /// Every parameter asked for, with its shape (tests compare it with [`TensorPlan`]).
    #[cfg(test)]
    pub(crate) requested: Vec<(String, Vec<usize>)>,
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
            #[cfg(test)]
            requested: Vec::new(),
        }
    }

    /// Lets `name` be present in the checkpoint without being used.
    pub(crate) fn tolerate(&mut self, name: &str) {
        self.tolerated.insert(name.to_string());
    }

    /// Host data of parameter `name` with the given shape (row-major), in the checkpoint's element type.
    pub(crate) fn host(&mut self, name: &str, shape: &[usize], init: Init) -> HostTensor {
        #[cfg(test)]
        self.requested.push((name.to_string(), shape.to_vec()));
        // Representable: the config was validated (`Qwen25VlConfig::validate` checks every parameter's
        // element count) before any layer asks for its parameters.
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
                // Unreadable dtypes are reported by `CheckpointIndex::check` before loading.
                unsupported_dtype: Vec::new(),
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
