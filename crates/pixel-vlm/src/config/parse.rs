//! Reading `config.json` (either layout) into a [`Qwen25VlConfig`]: raw serde structs, defaults, field names.

use std::path::Path;

use burn::tensor::FloatDType;
use serde::Deserialize;
use serde_json::Value;

use super::{FieldNames, Qwen25VlConfig, TextConfig, VisionConfig, invalid};
use crate::error::{Result, VlmError, read_text};

#[derive(Debug, Default, Deserialize)]
struct RawRope {
    #[serde(default)]
    rope_type: Option<String>,
    /// Older spelling; real configs may carry both (`"type": "mrope", "rope_type": "default"`).
    #[serde(default, rename = "type")]
    legacy_type: Option<String>,
    #[serde(default)]
    mrope_section: Option<Vec<usize>>,
    #[serde(default)]
    rope_theta: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
struct RawText {
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<RawRope>,
    rope_parameters: Option<RawRope>,
    max_position_embeddings: Option<usize>,
    hidden_act: Option<String>,
    tie_word_embeddings: Option<bool>,
    use_sliding_window: Option<bool>,
    eos_token_id: Option<Value>,
    torch_dtype: Option<String>,
    dtype: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawVision {
    depth: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_heads: Option<usize>,
    in_channels: Option<usize>,
    in_chans: Option<usize>,
    patch_size: Option<usize>,
    temporal_patch_size: Option<usize>,
    spatial_merge_size: Option<usize>,
    window_size: Option<usize>,
    fullatt_block_indexes: Option<Vec<usize>>,
    out_hidden_size: Option<usize>,
    tokens_per_second: Option<f64>,
    hidden_act: Option<String>,
    rope_parameters: Option<RawRope>,
}

#[derive(Debug, Default, Deserialize)]
struct RawConfig {
    #[serde(flatten)]
    top: RawText,
    text_config: Option<RawText>,
    vision_config: Option<RawVision>,
    image_token_id: Option<u32>,
    video_token_id: Option<u32>,
    vision_start_token_id: Option<u32>,
    vision_end_token_id: Option<u32>,
}

fn required<T>(value: Option<T>, field: &str) -> Result<T> {
    value.ok_or_else(|| invalid(field, "missing"))
}

fn eos_ids(value: &Value, field: &str) -> Result<Vec<u32>> {
    let as_id = |v: &Value| {
        v.as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .ok_or_else(|| invalid(field, format!("expected a token id, found {v}")))
    };
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items.iter().map(as_id).collect(),
        other => Ok(vec![as_id(other)?]),
    }
}

/// A torch dtype name as written in `config.json` (`"bfloat16"`, `"torch.float16"`, ...).
fn parse_dtype(name: &str) -> Option<FloatDType> {
    match name.strip_prefix("torch.").unwrap_or(name) {
        "float32" | "float" => Some(FloatDType::F32),
        "float16" | "half" => Some(FloatDType::F16),
        "bfloat16" => Some(FloatDType::BF16),
        "float64" | "double" => Some(FloatDType::F64),
        _ => None,
    }
}

impl Qwen25VlConfig {
    /// Reads and validates `config.json` at `path`.
    ///
    /// # Errors
    /// [`VlmError::Io`] if the file cannot be read, [`VlmError::Json`] if it is not JSON,
    /// [`VlmError::Config`] naming the first invalid or missing field.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = read_text(path)?;
        Self::from_json_str(&text).map_err(|err| match err {
            VlmError::Json { message, .. } => VlmError::Json {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates a `config.json` document in either layout (see the module docs).
    ///
    /// # Errors
    /// [`VlmError::Json`] (with an empty path) for malformed JSON, [`VlmError::Config`] naming the field.
    pub fn from_json_str(json: &str) -> Result<Self> {
        let raw: RawConfig = serde_json::from_str(json).map_err(|e| VlmError::Json {
            path: Default::default(),
            message: e.to_string(),
        })?;
        let config = Self::from_raw(raw)?;
        config.validate()?;
        Ok(config)
    }

    /// Maps the parsed file onto the config: picks the layout, applies transformers' defaults, rejects
    /// missing fields and features the model does not implement. Values are checked by
    /// [`Qwen25VlConfig::validate`].
    fn from_raw(raw: RawConfig) -> Result<Self> {
        let nested = raw.text_config.is_some();
        let text_raw = raw.text_config.unwrap_or_default();
        let top = raw.top;
        let prefix = if nested { "text_config." } else { "" };
        // In the nested layout a few fields may still sit at the top level (older conversions).
        macro_rules! text_field {
            ($name:ident) => {
                text_raw.$name.clone().or_else(|| top.$name.clone())
            };
        }
        let f = |name: &str| format!("{prefix}{name}");

        if let Some(act) = text_field!(hidden_act)
            && act != "silu"
        {
            return Err(invalid(
                f("hidden_act"),
                format!("only \"silu\" is supported, found {act:?}"),
            ));
        }
        if text_field!(use_sliding_window) == Some(true) {
            return Err(invalid(
                f("use_sliding_window"),
                "sliding-window attention is not supported",
            ));
        }
        let rope = text_raw
            .rope_parameters
            .as_ref()
            .or(text_raw.rope_scaling.as_ref())
            .or(top.rope_parameters.as_ref())
            .or(top.rope_scaling.as_ref());
        let rope_name = if text_raw.rope_parameters.is_some() || top.rope_parameters.is_some() {
            "rope_parameters"
        } else {
            "rope_scaling"
        };
        let names = FieldNames {
            text: prefix,
            rope: rope_name,
        };
        let rope_field = f(rope_name);
        for kind in rope
            .iter()
            .flat_map(|r| [r.rope_type.as_deref(), r.legacy_type.as_deref()])
            .flatten()
        {
            if !matches!(kind, "mrope" | "default") {
                return Err(invalid(
                    format!("{rope_field}.rope_type"),
                    format!("unsupported RoPE type {kind:?}"),
                ));
            }
        }
        let section = rope
            .and_then(|r| r.mrope_section.clone())
            .ok_or_else(|| invalid(format!("{rope_field}.mrope_section"), "missing"))?;
        let mrope_section: [usize; 3] = section.as_slice().try_into().map_err(|_| {
            invalid(
                format!("{rope_field}.mrope_section"),
                format!("expected 3 entries, found {section:?}"),
            )
        })?;
        let hidden_size = required(text_field!(hidden_size), &f("hidden_size"))?;
        let num_attention_heads =
            required(text_field!(num_attention_heads), &f("num_attention_heads"))?;
        let text = TextConfig {
            vocab_size: required(text_field!(vocab_size), &f("vocab_size"))?,
            hidden_size,
            intermediate_size: required(text_field!(intermediate_size), &f("intermediate_size"))?,
            num_hidden_layers: required(text_field!(num_hidden_layers), &f("num_hidden_layers"))?,
            num_attention_heads,
            num_key_value_heads: text_field!(num_key_value_heads).unwrap_or(num_attention_heads),
            rms_norm_eps: text_field!(rms_norm_eps).unwrap_or(1e-6),
            rope_theta: rope
                .and_then(|r| r.rope_theta)
                .or_else(|| text_field!(rope_theta))
                .unwrap_or(1_000_000.0),
            mrope_section,
            max_position_embeddings: text_field!(max_position_embeddings).unwrap_or(128_000),
        };

        let v = raw
            .vision_config
            .ok_or_else(|| invalid("vision_config", "missing"))?;
        let vf = |name: &str| format!("vision_config.{name}");
        if let Some(act) = &v.hidden_act
            && act != "silu"
        {
            return Err(invalid(
                vf("hidden_act"),
                format!("only \"silu\" is supported, found {act:?}"),
            ));
        }
        let vision = VisionConfig {
            depth: required(v.depth, &vf("depth"))?,
            hidden_size: required(v.hidden_size, &vf("hidden_size"))?,
            intermediate_size: required(v.intermediate_size, &vf("intermediate_size"))?,
            num_heads: required(v.num_heads, &vf("num_heads"))?,
            in_channels: v.in_channels.or(v.in_chans).unwrap_or(3),
            patch_size: v.patch_size.unwrap_or(14),
            temporal_patch_size: v.temporal_patch_size.unwrap_or(2),
            spatial_merge_size: v.spatial_merge_size.unwrap_or(2),
            window_size: v.window_size.unwrap_or(112),
            fullatt_block_indexes: v.fullatt_block_indexes.unwrap_or_default(),
            out_hidden_size: v.out_hidden_size.unwrap_or(hidden_size),
            tokens_per_second: v.tokens_per_second.unwrap_or(2.0),
            rope_theta: v
                .rope_parameters
                .and_then(|r| r.rope_theta)
                .unwrap_or(10_000.0),
        };

        let tie_word_embeddings = top.tie_word_embeddings.unwrap_or(false)
            || text_raw.tie_word_embeddings.unwrap_or(false);
        let eos = match (&text_raw.eos_token_id, &top.eos_token_id) {
            (Some(v), _) => eos_ids(v, &f("eos_token_id"))?,
            (None, Some(v)) => eos_ids(v, "eos_token_id")?,
            (None, None) => Vec::new(),
        };
        let torch_dtype = match top.dtype.as_ref().or(top.torch_dtype.as_ref()) {
            None => None,
            Some(name) => Some(parse_dtype(name).ok_or_else(|| {
                invalid(
                    if top.dtype.is_some() {
                        "dtype"
                    } else {
                        "torch_dtype"
                    },
                    format!(
                        "unknown dtype {name:?} (float32, float16, bfloat16 and float64 are known)"
                    ),
                )
            })?),
        };
        Ok(Self {
            image_token_id: required(raw.image_token_id, "image_token_id")?,
            video_token_id: required(raw.video_token_id, "video_token_id")?,
            vision_start_token_id: required(raw.vision_start_token_id, "vision_start_token_id")?,
            vision_end_token_id: raw.vision_end_token_id,
            text,
            vision,
            tie_word_embeddings,
            eos_token_ids: eos,
            torch_dtype,
            names,
        })
    }
}
