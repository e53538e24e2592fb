//! The safetensors headers of a checkpoint folder (single or sharded), shard names, and reading one tensor.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use serde_json::Value;

use super::params::HostTensor;
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
pub(super) struct Entry {
    file: usize,
    /// The element type, or the safetensors name of one this loader cannot read (`I64`, `F64`, ...), which
    /// [`CheckpointIndex::check`] reports for every tensor the model needs.
    pub(super) dtype: std::result::Result<DiskDtype, String>,
    pub(super) shape: Vec<usize>,
    /// Absolute byte offset in the file.
    offset: u64,
    len: usize,
}

/// The tensors of a checkpoint folder: parsed headers of every shard, keyed by canonical name.
#[derive(Debug)]
pub struct CheckpointIndex {
    files: Vec<PathBuf>,
    pub(super) entries: BTreeMap<String, Entry>,
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

/// Canonical names of the tensors a checkpoint has, with their shapes (for diagnostics and tests).
pub fn checkpoint_shapes(dir: impl AsRef<Path>) -> Result<HashMap<String, Vec<usize>>> {
    let index = CheckpointIndex::open_dir(dir)?;
    Ok(index
        .entries
        .iter()
        .map(|(k, e)| (k.clone(), e.shape.clone()))
        .collect())
}
