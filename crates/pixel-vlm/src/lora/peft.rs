//! Adapter files in PEFT's format, so Python tools (PEFT, vLLM) load what we train and we load what they
//! trained.
//!
//! A folder holds `adapter_model.safetensors` with two tensors per adapted projection,
//! `base_model.model.<module path>.lora_A.weight` `[rank, d_in]` and `….lora_B.weight` `[d_out, rank]`
//! (torch's `[out, in]` layout), and `adapter_config.json` (`peft_type: "LORA"`, `r`, `lora_alpha`,
//! `lora_dropout`, `target_modules`, ...). Module paths are written in transformers 5's layout
//! (`model.language_model.layers.N…`, `model.visual.blocks.N…`), which PEFT 0.21 with transformers 5 writes
//! and reads (it does not rename the original layout's paths); both layouts are read.
//!
//! Reading checks everything before the model changes and reports every problem at once in
//! [`VlmError::Adapter`]: a PEFT feature this crate does not implement (DoRA, per-module ranks or alphas,
//! trained biases, `modules_to_save`, `fan_in_fan_out`), a tensor for a module the model does not have,
//! a missing half of a pair, a wrong shape or element type.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::Path;

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::{Value, json};

use super::{LoraAdapter, LoraSite};
use crate::error::{Result, VlmError};
use crate::loading::HostTensor;
use crate::model::Qwen25Vl;
use crate::saving::write_atomic;

/// The adapter weights' file name in a PEFT folder.
pub const ADAPTER_WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// The adapter config's file name in a PEFT folder.
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";

/// What PEFT puts before a module path (`PeftModel.base_model` is the tuner, whose `.model` is the model).
const PREFIX: &str = "base_model.model.";
/// Largest `adapter_config.json` read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The settings of `adapter_config.json` this crate uses.
#[derive(Debug, Clone, PartialEq)]
struct PeftLora {
    rank: usize,
    alpha: f64,
    dropout: f64,
    use_rslora: bool,
}

impl PeftLora {
    fn scaling(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.rank as f64).sqrt()
        } else {
            self.alpha / self.rank as f64
        }
    }
}

impl<B: Backend> Qwen25Vl<B> {
    /// Writes this model's adapters as a PEFT adapter folder (created if needed): `adapter_model.safetensors`
    /// (f32) and `adapter_config.json` listing the adapted modules by path. Each file is written to a
    /// temporary file and renamed into place. The base weights are not written.
    ///
    /// # Errors
    /// [`VlmError::Save`] if the model has no adapters or adapters of different ranks, scales or dropouts
    /// (one config cannot describe them) or a tensor cannot be read back; [`VlmError::Write`] for I/O.
    pub fn save_lora(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        let sites = self.lora_sites();
        let adapters: Vec<(LoraSite, &LoraAdapter<B>)> = sites
            .iter()
            .filter_map(|&s| self.lora_adapter(s).map(|a| (s, a)))
            .collect();
        let Some((_, first)) = adapters.first() else {
            return Err(VlmError::Save("the model has no LoRA adapters".into()));
        };
        let (rank, scaling, dropout) = (first.rank(), first.scaling, first.dropout.prob);
        if let Some((site, _)) = adapters
            .iter()
            .find(|(_, a)| a.rank() != rank || a.scaling != scaling || a.dropout.prob != dropout)
        {
            return Err(VlmError::Save(format!(
                "adapter `{}` differs in rank, scaling or dropout from the first one: one adapter_config.json \
                 cannot describe both",
                site.module_path()
            )));
        }
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (site, adapter) in &adapters {
            let path = site.module_path();
            let a = read_f32(adapter.lora_a.val(), &path)?;
            let b = read_f32(adapter.lora_b.val(), &path)?;
            let [d_in, r] = adapter.lora_a.dims();
            let [_, d_out] = adapter.lora_b.dims();
            tensors.push((
                format!("{PREFIX}{path}.lora_A.weight"),
                vec![r, d_in],
                le_bytes(transposed(a, d_in, r)),
            ));
            tensors.push((
                format!("{PREFIX}{path}.lora_B.weight"),
                vec![d_out, r],
                le_bytes(transposed(b, r, d_out)),
            ));
        }
        let views = tensors
            .iter()
            .map(|(name, shape, bytes)| {
                TensorView::new(Dtype::F32, shape.clone(), bytes)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| VlmError::Save(format!("`{name}`: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        let bytes = safetensors::serialize(views, Some(metadata))
            .map_err(|e| VlmError::Save(format!("serializing the adapter: {e}")))?;
        let modules: Vec<String> = adapters.iter().map(|(s, _)| s.module_path()).collect();
        // The alpha that gives this scaling at this rank without rsLoRA: the same update whichever was used.
        let config = json!({
            "peft_type": "LORA",
            "task_type": null,
            "base_model_name_or_path": null,
            "r": rank,
            "lora_alpha": scaling * rank as f64,
            "lora_dropout": dropout,
            "use_rslora": false,
            "target_modules": modules,
            "bias": "none",
            "fan_in_fan_out": false,
            "init_lora_weights": true,
            "inference_mode": true,
            "modules_to_save": null,
            "layers_to_transform": null,
            "layers_pattern": null,
            "rank_pattern": {},
            "alpha_pattern": {},
            "use_dora": false,
            "lora_bias": false,
        });
        std::fs::create_dir_all(dir).map_err(crate::saving::write_err(dir))?;
        let weights = dir.join(ADAPTER_WEIGHTS_FILE);
        write_atomic(&weights, |out| {
            out.write_all(&bytes)
                .map_err(crate::saving::write_err(&weights))
        })?;
        let config_path = dir.join(ADAPTER_CONFIG_FILE);
        let mut text = serde_json::to_string_pretty(&config)
            .map_err(|e| VlmError::Save(format!("adapter_config.json: {e}")))?;
        text.push('\n');
        write_atomic(&config_path, |out| {
            out.write_all(text.as_bytes())
                .map_err(crate::saving::write_err(&config_path))
        })
    }

    /// This model with every parameter frozen and the adapters of a PEFT adapter folder attached (in f32,
    /// whatever the files store). The model must have no adapters yet.
    ///
    /// # Errors
    /// [`VlmError::Io`] if a file cannot be read; [`VlmError::Adapter`] listing every problem of the folder
    /// (see the module docs) or if the model already has adapters.
    pub fn load_lora(self, dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let config_path = dir.join(ADAPTER_CONFIG_FILE);
        let config = read_config(&config_path)?;
        let weights_path = dir.join(ADAPTER_WEIGHTS_FILE);
        let adapter_err = |reason: String| VlmError::Adapter {
            path: weights_path.clone(),
            reason,
        };
        if !weights_path.is_file() && dir.join("adapter_model.bin").is_file() {
            return Err(adapter_err(
                "only adapter_model.bin (a pickle) is present; save the adapter with safetensors"
                    .into(),
            ));
        }
        if !self.lora_sites().is_empty() {
            return Err(adapter_err(
                "the model already has LoRA adapters (merge_lora first)".into(),
            ));
        }
        let bytes = std::fs::read(&weights_path).map_err(|source| VlmError::Io {
            path: weights_path.clone(),
            source,
        })?;
        let pairs = read_pairs(&bytes, &config, &self).map_err(adapter_err)?;
        let mut model = self.no_grad();
        let device = model.device();
        let scaling = config.scaling();
        for (site, (a, b)) in pairs {
            if let Some((_, slot)) = site.slot_mut(&mut model.model) {
                *slot = Some(LoraAdapter::from_data(
                    a,
                    b,
                    scaling,
                    config.dropout,
                    &device,
                ));
            }
        }
        Ok(model)
    }
}

/// Reads and checks `adapter_config.json`.
fn read_config(path: &Path) -> Result<PeftLora> {
    let io = |source| VlmError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    let err = |reason: String| VlmError::Adapter {
        path: path.to_path_buf(),
        reason,
    };
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(err(format!("larger than {MAX_CONFIG_BYTES} bytes")));
    }
    let value: Value =
        serde_json::from_str(&text).map_err(|e| err(format!("not valid JSON: {e}")))?;
    let Some(obj) = value.as_object() else {
        return Err(err("not a JSON object".into()));
    };
    let mut problems = Vec::new();
    let field = |name: &str| obj.get(name).filter(|v| !v.is_null());
    if let Some(t) = field("peft_type")
        && t.as_str() != Some("LORA")
    {
        problems.push(format!("peft_type is {t}, not \"LORA\""));
    }
    let rank = match field("r").and_then(Value::as_u64) {
        Some(r) if r > 0 => r as usize,
        _ => {
            problems.push(format!(
                "r must be a positive integer, found {}",
                field("r").unwrap_or(&Value::Null)
            ));
            1
        }
    };
    let number = |name: &str, default: f64, problems: &mut Vec<String>| match field(name) {
        None => default,
        Some(v) => v.as_f64().unwrap_or_else(|| {
            problems.push(format!("{name} must be a number, found {v}"));
            default
        }),
    };
    let alpha = number("lora_alpha", 8.0, &mut problems);
    if !(alpha.is_finite() && alpha > 0.0) {
        problems.push(format!("lora_alpha {alpha} is not finite and positive"));
    }
    let dropout = number("lora_dropout", 0.0, &mut problems);
    if !(0.0..1.0).contains(&dropout) {
        problems.push(format!("lora_dropout {dropout} is not in [0, 1)"));
    }
    let flag = |name: &str| field(name).and_then(Value::as_bool).unwrap_or(false);
    for unsupported in ["use_dora", "fan_in_fan_out", "lora_bias"] {
        if flag(unsupported) {
            problems.push(format!("{unsupported} is true (not supported)"));
        }
    }
    if let Some(bias) = field("bias")
        && bias.as_str() != Some("none")
    {
        problems.push(format!("bias is {bias} (only \"none\" is supported)"));
    }
    for name in ["rank_pattern", "alpha_pattern"] {
        if field(name).is_some_and(|v| v.as_object().is_none_or(|m| !m.is_empty())) {
            problems.push(format!(
                "{name} is not empty (per-module ranks and alphas are not supported)"
            ));
        }
    }
    for name in [
        "modules_to_save",
        "layer_replication",
        "trainable_token_indices",
    ] {
        if field(name).is_some_and(|v| v.as_array().is_none_or(|a| !a.is_empty())) {
            problems.push(format!("{name} is set (not supported)"));
        }
    }
    if problems.is_empty() {
        Ok(PeftLora {
            rank,
            alpha,
            dropout,
            use_rslora: flag("use_rslora"),
        })
    } else {
        Err(err(problems.join("; ")))
    }
}

/// The `(A, B)` of every site in the file, in burn's layout (`[d_in, r]`, `[r, d_out]`, f32), checked
/// against the config and the model; `Err` lists every problem.
fn read_pairs<B: Backend>(
    bytes: &[u8],
    config: &PeftLora,
    model: &Qwen25Vl<B>,
) -> std::result::Result<BTreeMap<LoraSite, (TensorData, TensorData)>, String> {
    let file =
        SafeTensors::deserialize(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
    let r = config.rank;
    let mut halves: BTreeMap<LoraSite, [Option<TensorData>; 2]> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut names = file.names();
    names.sort();
    for name in names {
        let parsed = name.strip_prefix(PREFIX).and_then(|rest| {
            let (path, half) = rest
                .strip_suffix(".lora_A.weight")
                .map(|p| (p, 0))
                .or_else(|| rest.strip_suffix(".lora_B.weight").map(|p| (p, 1)))?;
            Some((LoraSite::parse(path)?, half))
        });
        let Some((site, half)) = parsed else {
            problems.push(format!(
                "`{name}` is not the lora_A/lora_B weight of a projection LoRA can adapt"
            ));
            continue;
        };
        let Some((linear, _)) = site.slot(&model.model) else {
            problems.push(format!(
                "`{name}`: the model has no layer {} in that tower",
                site.layer
            ));
            continue;
        };
        let Ok(view) = file.tensor(name) else {
            problems.push(format!("`{name}`: unreadable"));
            continue;
        };
        let [d_in, d_out] = linear.weight.dims();
        let expected = if half == 0 { [r, d_in] } else { [d_out, r] };
        if view.shape() != expected {
            problems.push(format!(
                "`{name}`: expected shape {expected:?}, found {:?}",
                view.shape()
            ));
            continue;
        }
        let Some(values) = host_f32(view.dtype(), view.data()) else {
            problems.push(format!(
                "`{name}`: element type {:?} (F32, F16 or BF16 expected)",
                view.dtype()
            ));
            continue;
        };
        let [rows, cols] = expected;
        let data = TensorData::new(
            HostTensor::F32(values).transpose(rows, cols).into_f32(),
            [cols, rows],
        );
        let slot = &mut halves.entry(site).or_default()[half];
        if slot.is_some() {
            problems.push(format!(
                "`{name}`: a second tensor for `{}` (both key layouts?)",
                site.module_path()
            ));
        }
        *slot = Some(data);
    }
    let mut pairs = BTreeMap::new();
    for (site, [a, b]) in halves {
        match (a, b) {
            (Some(a), Some(b)) => {
                pairs.insert(site, (a, b));
            }
            (a, _) => problems.push(format!(
                "`{}`: lora_{} is missing",
                site.module_path(),
                if a.is_none() { "A" } else { "B" }
            )),
        }
    }
    if pairs.is_empty() && problems.is_empty() {
        problems.push("no lora_A/lora_B tensors".into());
    }
    if problems.is_empty() {
        Ok(pairs)
    } else {
        Err(problems.join("; "))
    }
}

/// Little-endian f32/f16/bf16 bytes widened to f32.
fn host_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

fn read_f32<B: Backend>(t: Tensor<B, 2>, name: &str) -> Result<Vec<f32>> {
    t.try_into_data()
        .map_err(|e| VlmError::Save(format!("reading the adapter of `{name}`: {e}")))?
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| VlmError::Save(format!("converting the adapter of `{name}`: {e:?}")))
}

/// Row-major `[rows, cols]` to row-major `[cols, rows]`.
fn transposed(m: Vec<f32>, rows: usize, cols: usize) -> Vec<f32> {
    HostTensor::F32(m).transpose(rows, cols).into_f32()
}

fn le_bytes(values: Vec<f32>) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}
