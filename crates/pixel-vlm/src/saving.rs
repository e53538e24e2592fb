//! Saving a model as a Hugging Face checkpoint folder that [`Qwen25Vl::from_pretrained`] and transformers'
//! `Qwen2_5_VLForConditionalGeneration.from_pretrained` both read.
//!
//! [`Qwen25Vl::save_pretrained`] inverts what [`crate::loading`] does when it builds a model:
//!
//! - every parameter under its checkpoint name in the original (transformers-4) key layout that the released
//!   Qwen2.5-VL checkpoints use: `visual.*`, `model.embed_tokens`, `model.layers.*`, `model.norm`,
//!   `lm_head` (a model loaded from the transformers-5 layout is saved in this one);
//! - linear weights transposed back from burn's `[in, out]` to torch's `[out, in]`, the patch embedding
//!   back to its convolution kernel `[out, in_channels, temporal_patch_size, patch_size, patch_size]`;
//! - no `lm_head.weight` when the head is tied to the token embedding (`tie_word_embeddings`);
//! - elements in f32, bf16 or f16 (rounded to nearest even, as torch's `.to()` does);
//! - one `model.safetensors`, or, above [`SaveOptions::max_shard_bytes`] (default 5 GB, transformers'
//!   `max_shard_size`), shards `model-0000k-of-0000n.safetensors` and `model.safetensors.index.json`;
//! - `config.json` in the flat layout ([`config_json`]) with `torch_dtype`.
//!
//! Each file is written to a temporary file in the folder and renamed over its final name, so a reader
//! never sees half a file. Weight files of an earlier save that the new one does not use (a stale index or
//! shard) are removed afterwards; nothing else in the folder is touched (a tokenizer saved beside stays).
//! Parameters are read back from the device one at a time while their file is written: peak host memory
//! is one tensor, not one shard.
//!
//! ```
//! use pixel_vlm::{FloatDType, Qwen25Vl, backend::CpuBackend};
//!
//! let device = Default::default();
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/models/tiny_flat");
//! let model = Qwen25Vl::<CpuBackend>::from_pretrained(dir, &device)?;
//! let out = std::env::temp_dir().join(format!("pixel-vlm-doc-save-{}", std::process::id()));
//! model.save_pretrained(&out, FloatDType::BF16)?;
//! let back = Qwen25Vl::<CpuBackend>::from_pretrained(&out, &device)?;
//! assert_eq!(back.config.text, model.config.text);
//! # std::fs::remove_dir_all(&out).ok();
//! # Ok::<(), pixel_vlm::VlmError>(())
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use burn::nn::{Linear, RmsNorm};
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor};
use half::{bf16, f16};
use serde_json::{Map, Value, json};

use crate::config::Qwen25VlConfig;
use crate::error::{Result, VlmError};
use crate::layers::swiglu::SwiGlu;
use crate::loading::{HostTensor, TensorPlan};
use crate::model::Qwen25Vl;

/// transformers' default `max_shard_size` ("5GB", decimal).
pub const DEFAULT_MAX_SHARD_BYTES: u64 = 5_000_000_000;

/// How [`Qwen25Vl::save_pretrained_with`] writes a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaveOptions {
    /// Element type of the saved tensors: `F32`, `BF16` or `F16` (written to `config.json` as
    /// `torch_dtype`).
    pub dtype: FloatDType,
    /// Largest shard in bytes of tensor data ([`DEFAULT_MAX_SHARD_BYTES`]): a checkpoint that fits is one
    /// `model.safetensors`, a bigger one is sharded. A tensor larger than this gets a shard of its own.
    pub max_shard_bytes: u64,
}

impl SaveOptions {
    /// Tensors in `dtype`, shards of at most [`DEFAULT_MAX_SHARD_BYTES`].
    pub fn new(dtype: FloatDType) -> Self {
        Self {
            dtype,
            max_shard_bytes: DEFAULT_MAX_SHARD_BYTES,
        }
    }

    /// The same options with another shard size limit.
    pub fn with_max_shard_bytes(self, max_shard_bytes: u64) -> Self {
        Self {
            max_shard_bytes,
            ..self
        }
    }
}

/// Where a saved tensor's values come from, and how they are laid out on the way.
#[derive(Debug, Clone)]
enum Source<B: Backend> {
    /// A 1-D parameter (norm scale, bias), as is.
    Vector(Tensor<B, 1>),
    /// A 2-D parameter stored in torch's layout already (embedding table).
    Matrix(Tensor<B, 2>),
    /// A linear weight, burn's `[in, out]`, written transposed as `[out, in]`.
    Linear(Tensor<B, 2>),
}

/// One tensor of the checkpoint.
#[derive(Debug, Clone)]
struct Entry<B: Backend> {
    name: String,
    /// Shape on disk.
    shape: Vec<usize>,
    source: Source<B>,
}

impl<B: Backend> Entry<B> {
    fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values, row-major in the on-disk layout, as little-endian bytes of `dtype`.
    fn bytes(&self, dtype: FloatDType) -> Result<Vec<u8>> {
        let read = |data: std::result::Result<burn::tensor::TensorData, _>| -> Result<Vec<f32>> {
            let data = data.map_err(|e: burn::tensor::backend::ExecutionError| {
                VlmError::Save(format!("reading `{}` from the device: {e}", self.name))
            })?;
            data.convert::<f32>()
                .into_vec::<f32>()
                .map_err(|e| VlmError::Save(format!("converting `{}` to f32: {e:?}", self.name)))
        };
        let values = match &self.source {
            Source::Vector(t) => read(t.clone().try_into_data())?,
            Source::Matrix(t) => read(t.clone().try_into_data())?,
            Source::Linear(t) => {
                let [d_in, d_out] = t.dims();
                match HostTensor::F32(read(t.clone().try_into_data())?).transpose(d_in, d_out) {
                    HostTensor::F32(v) => v,
                    other => other.into_f32(),
                }
            }
        };
        Ok(match dtype {
            FloatDType::BF16 => values
                .iter()
                .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
                .collect(),
            FloatDType::F16 => values
                .iter()
                .flat_map(|&x| f16::from_f32(x).to_le_bytes())
                .collect(),
            _ => values.iter().flat_map(|x| x.to_le_bytes()).collect(),
        })
    }
}

/// The safetensors name and byte size of a supported dtype.
fn disk_dtype(dtype: FloatDType) -> Result<(&'static str, usize)> {
    match dtype {
        FloatDType::F32 => Ok(("F32", 4)),
        FloatDType::BF16 => Ok(("BF16", 2)),
        FloatDType::F16 => Ok(("F16", 2)),
        other => Err(VlmError::Save(format!(
            "a checkpoint is saved in F32, BF16 or F16, not {other:?}"
        ))),
    }
}

/// The torch name of a supported dtype, as `config.json` spells it.
fn torch_dtype_name(dtype: FloatDType) -> &'static str {
    match dtype {
        FloatDType::BF16 => "bfloat16",
        FloatDType::F16 => "float16",
        FloatDType::F64 => "float64",
        _ => "float32",
    }
}

/// `config.json` for `config` in the flat (original, transformers-4) layout of the released Qwen2.5-VL
/// checkpoints, with every field [`Qwen25VlConfig::from_json_str`] reads and `torch_dtype` set to `dtype`.
/// The vision RoPE base is written (as `vision_config.rope_parameters.rope_theta`) only when it is not the
/// 10,000 that transformers hard-codes.
pub fn config_json(config: &Qwen25VlConfig, dtype: FloatDType) -> Value {
    let (t, v) = (&config.text, &config.vision);
    let mut vision = json!({
        "depth": v.depth,
        "fullatt_block_indexes": v.fullatt_block_indexes,
        "hidden_act": "silu",
        "hidden_size": v.hidden_size,
        "in_channels": v.in_channels,
        "in_chans": v.in_channels,
        "intermediate_size": v.intermediate_size,
        "model_type": "qwen2_5_vl",
        "num_heads": v.num_heads,
        "out_hidden_size": v.out_hidden_size,
        "patch_size": v.patch_size,
        "spatial_merge_size": v.spatial_merge_size,
        "temporal_patch_size": v.temporal_patch_size,
        "tokens_per_second": integral(v.tokens_per_second),
        "window_size": v.window_size,
    });
    if v.rope_theta != 10_000.0 {
        vision["rope_parameters"] = json!({ "rope_theta": v.rope_theta });
    }
    let mut out = json!({
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "attention_dropout": 0.0,
        // Not tracked by the config; without it transformers assumes Qwen's 151643 and warns on a small
        // vocabulary.
        "bos_token_id": null,
        "hidden_act": "silu",
        "hidden_size": t.hidden_size,
        "image_token_id": config.image_token_id,
        "initializer_range": 0.02,
        "intermediate_size": t.intermediate_size,
        "max_position_embeddings": t.max_position_embeddings,
        "max_window_layers": t.num_hidden_layers,
        "model_type": "qwen2_5_vl",
        "num_attention_heads": t.num_attention_heads,
        "num_hidden_layers": t.num_hidden_layers,
        "num_key_value_heads": t.num_key_value_heads,
        "rms_norm_eps": t.rms_norm_eps,
        "rope_scaling": { "mrope_section": t.mrope_section, "type": "mrope" },
        "rope_theta": t.rope_theta,
        "tie_word_embeddings": config.tie_word_embeddings,
        "torch_dtype": torch_dtype_name(dtype),
        "use_cache": true,
        "use_sliding_window": false,
        "video_token_id": config.video_token_id,
        "vision_config": vision,
        "vision_start_token_id": config.vision_start_token_id,
        "vocab_size": t.vocab_size,
    });
    if let Some(id) = config.vision_end_token_id {
        out["vision_end_token_id"] = json!(id);
    }
    match config.eos_token_ids.as_slice() {
        [] => {}
        [one] => out["eos_token_id"] = json!(one),
        many => out["eos_token_id"] = json!(many),
    }
    out
}

/// `x` as a JSON integer when it is a whole number (transformers 5 types `tokens_per_second` as `int` and
/// rejects `2.0`), else as a float.
fn integral(x: f64) -> Value {
    if x.fract() == 0.0 && (0.0..9.0e15).contains(&x) {
        json!(x as u64)
    } else {
        json!(x)
    }
}

pub(crate) fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> VlmError + '_ {
    move |source| VlmError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `path` atomically: `write` fills a temporary file in the same folder, which is flushed, synced
/// and renamed over `path`. The temporary file is removed if anything fails.
pub(crate) fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<()>,
) -> Result<()> {
    let name = path
        .file_name()
        .map_or_else(|| "file".to_string(), |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let file = File::create(&tmp).map_err(write_err(&tmp))?;
        let mut out = BufWriter::new(file);
        write(&mut out)?;
        let file = out
            .into_inner()
            .map_err(|e| write_err(&tmp)(e.into_error()))?;
        file.sync_all().map_err(write_err(&tmp))?;
        std::fs::rename(&tmp, path).map_err(write_err(path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes one safetensors file: header (`__metadata__: {"format": "pt"}`, tensors by name with increasing
/// offsets, padded with spaces to 8 bytes, as the `safetensors` library writes it), then the data, one
/// tensor read from the device at a time.
fn write_shard<B: Backend>(path: &Path, entries: &[&Entry<B>], dtype: FloatDType) -> Result<()> {
    let (dtype_name, size) = disk_dtype(dtype)?;
    let mut sorted: Vec<&Entry<B>> = entries.to_vec();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut header = String::from(r#"{"__metadata__":{"format":"pt"}"#);
    let mut offset = 0usize;
    for e in &sorted {
        let len = e.numel() * size;
        header.push(',');
        header.push_str(&Value::String(e.name.clone()).to_string());
        header.push_str(&format!(
            r#":{{"dtype":"{dtype_name}","shape":{},"data_offsets":[{offset},{}]}}"#,
            json!(e.shape),
            offset + len
        ));
        offset += len;
    }
    header.push('}');
    let mut header = header.into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');
    write_atomic(path, |out| {
        out.write_all(&(header.len() as u64).to_le_bytes())
            .and_then(|()| out.write_all(&header))
            .map_err(write_err(path))?;
        for e in &sorted {
            out.write_all(&e.bytes(dtype)?).map_err(write_err(path))?;
        }
        Ok(())
    })
}

/// Pretty JSON (two-space indent) with a final newline.
fn json_bytes(value: &Value) -> Vec<u8> {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.push('\n');
    text.into_bytes()
}

/// Whether `name` is a shard name `model-NNNNN-of-NNNNN.safetensors`.
fn is_shard_name(name: &str) -> bool {
    name.strip_prefix("model-")
        .and_then(|r| r.strip_suffix(".safetensors"))
        .and_then(|r| r.split_once("-of-"))
        .is_some_and(|(a, b)| {
            [a, b]
                .iter()
                .all(|x| x.len() >= 5 && x.bytes().all(|c| c.is_ascii_digit()))
        })
}

impl<B: Backend> Qwen25Vl<B> {
    /// Saves the model as a Hugging Face checkpoint folder (`config.json` + safetensors; see the
    /// [module docs](crate::saving)) with tensors in `dtype` (`F32`, `BF16` or `F16`), sharded above 5 GB.
    /// The folder is created if needed.
    ///
    /// # Errors
    /// As [`Qwen25Vl::save_pretrained_with`].
    pub fn save_pretrained(&self, dir: impl AsRef<Path>, dtype: FloatDType) -> Result<()> {
        self.save_pretrained_with(dir, &SaveOptions::new(dtype))
    }

    /// As [`Qwen25Vl::save_pretrained`], with a chosen shard size.
    ///
    /// # Errors
    /// [`VlmError::Save`] for a dtype other than F32/BF16/F16, a config that is no longer valid, parameters
    /// whose names or shapes no longer match the config, a tensor the device cannot read back, or LoRA
    /// adapters (a checkpoint has no place for them: [`Qwen25Vl::merge_lora`] first, or
    /// [`Qwen25Vl::save_lora`]); [`VlmError::Write`] if a file cannot be written.
    pub fn save_pretrained_with(&self, dir: impl AsRef<Path>, options: &SaveOptions) -> Result<()> {
        let dir = dir.as_ref();
        let (_, size) = disk_dtype(options.dtype)?;
        if let Some(site) = self.lora_sites().first() {
            return Err(VlmError::Save(format!(
                "the model has LoRA adapters (`{}`, ...), which a checkpoint cannot hold: merge_lora() first, \
                 or save_lora() for the adapters alone",
                site.module_path()
            )));
        }
        let entries = self.checkpoint_entries()?;
        std::fs::create_dir_all(dir).map_err(write_err(dir))?;

        // Shards in module order (as transformers splits its state dict): a new shard starts when the next
        // tensor would overflow the current one.
        let mut shards: Vec<Vec<&Entry<B>>> = vec![Vec::new()];
        let mut current = 0u64;
        for e in &entries {
            let bytes = (e.numel() * size) as u64;
            let last = shards.len() - 1;
            if !shards[last].is_empty() && current.saturating_add(bytes) > options.max_shard_bytes {
                shards.push(Vec::new());
                current = 0;
            }
            current = current.saturating_add(bytes);
            let last = shards.len() - 1;
            shards[last].push(e);
        }

        let n = shards.len();
        let mut written: Vec<String> = Vec::new();
        if n == 1 {
            written.push("model.safetensors".into());
            write_shard(&dir.join("model.safetensors"), &shards[0], options.dtype)?;
        } else {
            let mut weight_map = BTreeMap::new();
            let mut total = 0u64;
            for (k, shard) in shards.iter().enumerate() {
                let name = format!("model-{:05}-of-{n:05}.safetensors", k + 1);
                write_shard(&dir.join(&name), shard, options.dtype)?;
                for e in shard {
                    total += (e.numel() * size) as u64;
                    weight_map.insert(e.name.clone(), Value::String(name.clone()));
                }
                written.push(name);
            }
            let index = json!({
                "metadata": { "total_size": total },
                "weight_map": Map::from_iter(weight_map),
            });
            let path = dir.join("model.safetensors.index.json");
            write_atomic(&path, |out| {
                out.write_all(&json_bytes(&index)).map_err(write_err(&path))
            })?;
            written.push("model.safetensors.index.json".into());
        }
        let path = dir.join("config.json");
        let config = json_bytes(&config_json(&self.config, options.dtype));
        write_atomic(&path, |out| {
            out.write_all(&config).map_err(write_err(&path))
        })?;
        remove_stale_weights(dir, &written)
    }

    /// Every parameter under its checkpoint name, in module order, checked against the config.
    fn checkpoint_entries(&self) -> Result<Vec<Entry<B>>> {
        let mut out = Vec::new();
        let m = &self.model;
        let v = &self.config.vision;
        // The patch embedding: a [patch_dim -> hidden] linear layer saved as its Conv3d kernel.
        let patch = m.visual.patch_embed.proj.weight.val();
        let [d_in, d_out] = patch.dims();
        let kernel = [
            v.in_channels,
            v.temporal_patch_size,
            v.patch_size,
            v.patch_size,
        ];
        let shape = if kernel.iter().product::<usize>() == d_in {
            [&[d_out][..], &kernel[..]].concat()
        } else {
            vec![d_out, d_in]
        };
        out.push(Entry {
            name: "visual.patch_embed.proj.weight".into(),
            shape,
            source: Source::Linear(patch),
        });
        for (i, block) in m.visual.blocks.iter().enumerate() {
            let p = format!("visual.blocks.{i}");
            push_norm(&mut out, &format!("{p}.norm1"), &block.norm1);
            push_norm(&mut out, &format!("{p}.norm2"), &block.norm2);
            push_linear(&mut out, &format!("{p}.attn.qkv"), &block.attn.qkv);
            push_linear(&mut out, &format!("{p}.attn.proj"), &block.attn.proj);
            push_swiglu(&mut out, &format!("{p}.mlp"), &block.mlp);
        }
        push_norm(&mut out, "visual.merger.ln_q", &m.visual.merger.ln_q);
        push_linear(&mut out, "visual.merger.mlp.0", &m.visual.merger.fc1);
        push_linear(&mut out, "visual.merger.mlp.2", &m.visual.merger.fc2);
        let embed = m.text.embed_tokens.weight.val();
        out.push(Entry {
            name: "model.embed_tokens.weight".into(),
            shape: embed.dims().to_vec(),
            source: Source::Matrix(embed),
        });
        for (i, layer) in m.text.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            push_norm(
                &mut out,
                &format!("{p}.input_layernorm"),
                &layer.input_layernorm,
            );
            let attn = &layer.self_attn;
            for (name, linear) in [
                ("q_proj", &attn.q_proj),
                ("k_proj", &attn.k_proj),
                ("v_proj", &attn.v_proj),
                ("o_proj", &attn.o_proj),
            ] {
                push_linear(&mut out, &format!("{p}.self_attn.{name}"), linear);
            }
            push_norm(
                &mut out,
                &format!("{p}.post_attention_layernorm"),
                &layer.post_attention_layernorm,
            );
            push_swiglu(&mut out, &format!("{p}.mlp"), &layer.mlp);
        }
        push_norm(&mut out, "model.norm", &m.text.norm);
        if let Some(head) = &m.lm_head {
            push_linear(&mut out, "lm_head", head);
        }
        self.check_entries(&out)?;
        Ok(out)
    }

    /// The entries must be exactly the tensors the config implies (what loading the folder will ask for).
    fn check_entries(&self, entries: &[Entry<B>]) -> Result<()> {
        let plan = TensorPlan::new(&self.config)
            .map_err(|e| VlmError::Save(format!("the model's config is invalid: {e}")))?;
        let want: BTreeMap<String, Vec<usize>> = plan.flatten().into_iter().collect();
        let have: BTreeMap<&str, &[usize]> = entries
            .iter()
            .map(|e| (e.name.as_str(), e.shape.as_slice()))
            .collect();
        let mut problems = Vec::new();
        for (name, shape) in &want {
            match have.get(name.as_str()) {
                None => problems.push(format!("{name}: missing (the config implies {shape:?})")),
                Some(found) if *found != shape.as_slice() => problems.push(format!(
                    "{name}: shape {found:?}, the config implies {shape:?}"
                )),
                Some(_) => {}
            }
        }
        for name in have.keys().filter(|n| !want.contains_key(**n)) {
            problems.push(format!("{name}: not a parameter of the configured model"));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(VlmError::Save(format!(
                "the parameters do not match the config: {}",
                problems.join("; ")
            )))
        }
    }
}

fn push_norm<B: Backend>(out: &mut Vec<Entry<B>>, prefix: &str, norm: &RmsNorm<B>) {
    let gamma = norm.gamma.val();
    out.push(Entry {
        name: format!("{prefix}.weight"),
        shape: gamma.dims().to_vec(),
        source: Source::Vector(gamma),
    });
}

fn push_linear<B: Backend>(out: &mut Vec<Entry<B>>, prefix: &str, linear: &Linear<B>) {
    let weight = linear.weight.val();
    let [d_in, d_out] = weight.dims();
    out.push(Entry {
        name: format!("{prefix}.weight"),
        shape: vec![d_out, d_in],
        source: Source::Linear(weight),
    });
    if let Some(bias) = &linear.bias {
        let bias = bias.val();
        out.push(Entry {
            name: format!("{prefix}.bias"),
            shape: bias.dims().to_vec(),
            source: Source::Vector(bias),
        });
    }
}

fn push_swiglu<B: Backend>(out: &mut Vec<Entry<B>>, prefix: &str, mlp: &SwiGlu<B>) {
    push_linear(out, &format!("{prefix}.gate_proj"), &mlp.gate_proj);
    push_linear(out, &format!("{prefix}.up_proj"), &mlp.up_proj);
    push_linear(out, &format!("{prefix}.down_proj"), &mlp.down_proj);
}

/// Removes weight files of an earlier save that `written` does not include: `model.safetensors`, the shard
/// index, and `model-NNNNN-of-NNNNN.safetensors` shards. Nothing else is touched.
fn remove_stale_weights(dir: &Path, written: &[String]) -> Result<()> {
    let listing = std::fs::read_dir(dir).map_err(write_err(dir))?;
    let stale: Vec<PathBuf> = listing
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| {
            (name == "model.safetensors"
                || name == "model.safetensors.index.json"
                || is_shard_name(name))
                && !written.contains(name)
        })
        .map(|name| dir.join(name))
        .collect();
    for path in stale {
        std::fs::remove_file(&path).map_err(write_err(&path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_are_recognised() {
        assert!(is_shard_name("model-00001-of-00002.safetensors"));
        assert!(is_shard_name("model-100001-of-100002.safetensors"));
        assert!(!is_shard_name("model-1-of-2.safetensors"));
        assert!(!is_shard_name("model.safetensors"));
        assert!(!is_shard_name("adapter-00001-of-00002.safetensors"));
        assert!(!is_shard_name("model-00001-of-00002.safetensors.tmp"));
    }

    #[test]
    fn only_f32_bf16_f16_are_saved() {
        assert!(disk_dtype(FloatDType::F32).is_ok());
        assert!(disk_dtype(FloatDType::BF16).is_ok());
        assert!(disk_dtype(FloatDType::F16).is_ok());
        assert!(matches!(
            disk_dtype(FloatDType::F64),
            Err(VlmError::Save(_))
        ));
    }
}
