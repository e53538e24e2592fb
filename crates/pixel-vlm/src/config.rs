//! `config.json` of a Qwen2.5-VL checkpoint, in both layouts found in the wild.
//!
//! - The original layout (released Qwen2.5-VL and PixelReasoner checkpoints, transformers 4.x): the text
//!   model's fields sit at the top level, `vision_config` is nested, RoPE is
//!   `"rope_scaling": {"type": "mrope", "mrope_section": [..]}` with a top-level `rope_theta`.
//! - The transformers-5 layout: `text_config` and `vision_config` are nested, RoPE is
//!   `"rope_parameters": {"rope_type": "default", "mrope_section": [..], "rope_theta": ..}` (inside
//!   `text_config`).
//!
//! [`Qwen25VlConfig::from_json_str`] reads either into one validated struct; every rejection names the
//! field.

use std::path::Path;

use burn::tensor::FloatDType;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Result, VlmError, read_text};

/// Vision tower hyper-parameters (`vision_config`).
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    /// Number of vision blocks (`depth`).
    pub depth: usize,
    /// Width of the vision blocks (`hidden_size`).
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP inside a block (`intermediate_size`).
    pub intermediate_size: usize,
    /// Attention heads per block (`num_heads`).
    pub num_heads: usize,
    /// Input channels (3).
    pub in_channels: usize,
    /// Spatial patch side in pixels (14).
    pub patch_size: usize,
    /// Frames per temporal patch (2).
    pub temporal_patch_size: usize,
    /// Side of the square of patches merged into one LLM token (2).
    pub spatial_merge_size: usize,
    /// Window side in pixels for window attention (112).
    pub window_size: usize,
    /// Blocks that attend over the whole image instead of windows.
    pub fullatt_block_indexes: Vec<usize>,
    /// Width of the merged tokens handed to the text model (`out_hidden_size`).
    pub out_hidden_size: usize,
    /// M-RoPE temporal positions per second of video (2).
    pub tokens_per_second: f64,
    /// Base of the vision 2-D rotary embedding (10000).
    pub rope_theta: f64,
}

impl VisionConfig {
    /// Dimension of one attention head (0 for a config with no heads; [`Qwen25VlConfig::validate`]
    /// rejects those).
    pub fn head_dim(&self) -> usize {
        self.hidden_size.checked_div(self.num_heads).unwrap_or(0)
    }

    /// Values in one flattened patch: `in_channels * temporal_patch_size * patch_size^2` (1176).
    /// Saturates instead of overflowing; [`Qwen25VlConfig::validate`] rejects configs where it would.
    pub fn patch_dim(&self) -> usize {
        self.in_channels
            .saturating_mul(self.temporal_patch_size)
            .saturating_mul(self.patch_size)
            .saturating_mul(self.patch_size)
    }

    /// Patches merged into one token: `spatial_merge_size^2` (4). Saturates like
    /// [`VisionConfig::patch_dim`].
    pub fn merge_unit(&self) -> usize {
        self.spatial_merge_size
            .saturating_mul(self.spatial_merge_size)
    }
}

/// Text decoder hyper-parameters (`text_config`, or the top level in the original layout).
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    /// Vocabulary size (rows of `embed_tokens`).
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention).
    pub num_key_value_heads: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// Split of the `head_dim / 2` rotary frequencies among (temporal, height, width).
    pub mrope_section: [usize; 3],
    /// Longest context the checkpoint was trained for (informative; the KV cache is sized by the caller).
    pub max_position_embeddings: usize,
}

impl TextConfig {
    /// Dimension of one attention head (0 for a config with no heads; [`Qwen25VlConfig::validate`]
    /// rejects those).
    pub fn head_dim(&self) -> usize {
        self.hidden_size
            .checked_div(self.num_attention_heads)
            .unwrap_or(0)
    }
}

/// A validated Qwen2.5-VL configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Qwen25VlConfig {
    /// The text decoder.
    pub text: TextConfig,
    /// The vision tower.
    pub vision: VisionConfig,
    /// Id of `<|image_pad|>`.
    pub image_token_id: u32,
    /// Id of `<|video_pad|>`.
    pub video_token_id: u32,
    /// Id of `<|vision_start|>`.
    pub vision_start_token_id: u32,
    /// Id of `<|vision_end|>`, when the config names it.
    pub vision_end_token_id: Option<u32>,
    /// Whether `lm_head` shares the token embedding matrix.
    pub tie_word_embeddings: bool,
    /// End-of-sequence ids from the config (`eos_token_id`, an int or a list).
    pub eos_token_ids: Vec<u32>,
    /// The dtype the checkpoint was saved in (`torch_dtype`, or transformers 5's `dtype`), when declared.
    pub torch_dtype: Option<FloatDType>,
    /// How the text fields were spelled in the file, so that [`Qwen25VlConfig::validate`] names a field
    /// as the user wrote it.
    names: FieldNames,
}

/// Spelling of the layout-dependent field names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FieldNames {
    /// `""` (original layout) or `"text_config."`.
    text: &'static str,
    /// `"rope_scaling"` or `"rope_parameters"`.
    rope: &'static str,
}

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

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> VlmError {
    VlmError::Config {
        field: field.into(),
        reason: reason.into(),
    }
}

fn required<T>(value: Option<T>, field: &str) -> Result<T> {
    value.ok_or_else(|| invalid(field, "missing"))
}

fn positive(value: usize, field: &str) -> Result<usize> {
    if value == 0 {
        Err(invalid(field, "must be positive"))
    } else {
        Ok(value)
    }
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

    /// Checks every value: sizes positive and consistent (heads divide widths, M-RoPE sections sum to half
    /// a head, windows hold whole merge blocks), floats finite and positive, token ids inside the
    /// vocabulary, and every size product the model computes (patch length, merged width, each parameter's
    /// element count) representable, so that no later arithmetic on the config can overflow.
    /// [`Qwen25VlConfig::from_json_str`] calls it; building a model calls it again, so a config edited in
    /// code is checked too.
    ///
    /// # Errors
    /// [`VlmError::Config`] naming the first offending field as the file spells it.
    pub fn validate(&self) -> Result<()> {
        let f = |name: &str| format!("{}{name}", self.names.text);
        let vf = |name: &str| format!("vision_config.{name}");
        let t = &self.text;
        for (value, name) in [
            (t.vocab_size, "vocab_size"),
            (t.hidden_size, "hidden_size"),
            (t.intermediate_size, "intermediate_size"),
            (t.num_hidden_layers, "num_hidden_layers"),
            (t.num_attention_heads, "num_attention_heads"),
            (t.num_key_value_heads, "num_key_value_heads"),
            (t.max_position_embeddings, "max_position_embeddings"),
        ] {
            positive(value, &f(name))?;
        }
        if !t.hidden_size.is_multiple_of(t.num_attention_heads) {
            return Err(invalid(
                f("hidden_size"),
                format!(
                    "{} is not divisible by num_attention_heads {}",
                    t.hidden_size, t.num_attention_heads
                ),
            ));
        }
        if !t.num_attention_heads.is_multiple_of(t.num_key_value_heads) {
            return Err(invalid(
                f("num_key_value_heads"),
                format!(
                    "num_attention_heads {} is not a multiple of {}",
                    t.num_attention_heads, t.num_key_value_heads
                ),
            ));
        }
        let head_dim = t.head_dim();
        if !head_dim.is_multiple_of(2) {
            return Err(invalid(
                f("hidden_size"),
                format!("head dimension {head_dim} must be even for RoPE"),
            ));
        }
        let section_field = format!("{}{}.mrope_section", self.names.text, self.names.rope);
        let section_sum = t
            .mrope_section
            .iter()
            .try_fold(0usize, |acc, &x| acc.checked_add(x));
        if section_sum != Some(head_dim / 2) {
            return Err(invalid(
                section_field,
                format!(
                    "{:?} must sum to head_dim / 2 = {}",
                    t.mrope_section,
                    head_dim / 2
                ),
            ));
        }
        finite_positive(t.rope_theta, &f("rope_theta"))?;
        finite_positive(t.rms_norm_eps, &f("rms_norm_eps"))?;

        let v = &self.vision;
        for (value, name) in [
            (v.depth, "depth"),
            (v.hidden_size, "hidden_size"),
            (v.intermediate_size, "intermediate_size"),
            (v.num_heads, "num_heads"),
            (v.in_channels, "in_channels"),
            (v.patch_size, "patch_size"),
            (v.temporal_patch_size, "temporal_patch_size"),
            (v.spatial_merge_size, "spatial_merge_size"),
        ] {
            positive(value, &vf(name))?;
        }
        if !v.hidden_size.is_multiple_of(v.num_heads) || !v.head_dim().is_multiple_of(4) {
            return Err(invalid(
                vf("num_heads"),
                format!(
                    "hidden_size {} / num_heads {} must be a multiple of 4 (2-D RoPE)",
                    v.hidden_size, v.num_heads
                ),
            ));
        }
        if let Some(bad) = v.fullatt_block_indexes.iter().find(|&&i| i >= v.depth) {
            return Err(invalid(
                vf("fullatt_block_indexes"),
                format!("block {bad} >= depth {}", v.depth),
            ));
        }
        let block = checked(
            v.patch_size,
            v.spatial_merge_size,
            &vf("spatial_merge_size"),
            "patch_size * spatial_merge_size",
        )?;
        if v.window_size < block || !v.window_size.is_multiple_of(block) {
            return Err(invalid(
                vf("window_size"),
                format!(
                    "{} must be a positive multiple of patch_size * spatial_merge_size",
                    v.window_size
                ),
            ));
        }
        if v.out_hidden_size != t.hidden_size {
            return Err(invalid(
                vf("out_hidden_size"),
                format!(
                    "{} must equal the text hidden_size {}",
                    v.out_hidden_size, t.hidden_size
                ),
            ));
        }
        finite_positive(v.tokens_per_second, &vf("tokens_per_second"))?;
        finite_positive(v.rope_theta, &vf("rope_parameters.rope_theta"))?;
        // Products the model computes: patch length, merged width, and the element count of the largest
        // parameter of each kind (the others are smaller factors of these).
        let patch_dim = [v.temporal_patch_size, v.patch_size, v.patch_size]
            .into_iter()
            .try_fold(v.in_channels, |acc, x| acc.checked_mul(x))
            .ok_or_else(|| {
                overflow(
                    &vf("patch_size"),
                    "in_channels * temporal_patch_size * patch_size^2",
                )
            })?;
        let merge_unit = checked(
            v.spatial_merge_size,
            v.spatial_merge_size,
            &vf("spatial_merge_size"),
            "spatial_merge_size^2",
        )?;
        let merged = checked(
            v.hidden_size,
            merge_unit,
            &vf("hidden_size"),
            "hidden_size * spatial_merge_size^2",
        )?;
        checked(merged, merged, &vf("hidden_size"), "the merger's weight")?;
        checked(
            merged,
            v.out_hidden_size,
            &vf("out_hidden_size"),
            "the merger's output weight",
        )?;
        checked(
            patch_dim,
            v.hidden_size,
            &vf("hidden_size"),
            "the patch embedding's weight",
        )?;
        let qkv = checked(3, v.hidden_size, &vf("hidden_size"), "3 * hidden_size")?;
        checked(
            qkv,
            v.hidden_size,
            &vf("hidden_size"),
            "the attention's qkv weight",
        )?;
        checked(
            v.intermediate_size,
            v.hidden_size,
            &vf("intermediate_size"),
            "the MLP weight",
        )?;
        checked(
            t.vocab_size,
            t.hidden_size,
            &f("vocab_size"),
            "the token embedding",
        )?;
        checked(
            t.intermediate_size,
            t.hidden_size,
            &f("intermediate_size"),
            "the MLP weight",
        )?;
        checked(
            t.hidden_size,
            t.hidden_size,
            &f("hidden_size"),
            "the attention weights",
        )?;

        for (name, id) in [
            ("image_token_id", self.image_token_id),
            ("video_token_id", self.video_token_id),
            ("vision_start_token_id", self.vision_start_token_id),
        ] {
            if id as usize >= t.vocab_size {
                return Err(invalid(
                    name,
                    format!("{id} >= vocab_size {}", t.vocab_size),
                ));
            }
        }
        Ok(())
    }
}

fn finite_positive(value: f64, field: &str) -> Result<()> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("must be finite and positive, found {value}"),
        ))
    }
}

fn overflow(field: &str, what: &str) -> VlmError {
    invalid(field, format!("{what} overflows the address space"))
}

/// `a * b`, or an error naming `field` and the product.
fn checked(a: usize, b: usize, field: &str, what: &str) -> Result<usize> {
    a.checked_mul(b).ok_or_else(|| overflow(field, what))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAT: &str = r#"{
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 500,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "hidden_act": "silu",
        "rope_scaling": {"type": "mrope", "rope_type": "default", "mrope_section": [2, 3, 3]},
        "image_token_id": 400, "video_token_id": 401, "vision_start_token_id": 398,
        "eos_token_id": 151645, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
        "vision_config": {"depth": 2, "hidden_size": 32, "intermediate_size": 48, "num_heads": 2,
            "out_hidden_size": 64, "fullatt_block_indexes": [1], "window_size": 56, "tokens_per_second": 2}
    }"#;

    const NESTED: &str = r#"{
        "model_type": "qwen2_5_vl", "image_token_id": 400, "video_token_id": 401,
        "vision_start_token_id": 398, "tie_word_embeddings": false,
        "text_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 500, "eos_token_id": [7, 8],
            "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 5000.0}},
        "vision_config": {"depth": 2, "hidden_size": 32, "intermediate_size": 48, "num_heads": 2,
            "out_hidden_size": 64, "fullatt_block_indexes": [1]}
    }"#;

    #[test]
    fn dtype_names_parse_and_unknown_ones_are_named() {
        let with = |field: &str, value: &str| {
            FLAT.replacen(
                "\"torch_dtype\": \"bfloat16\"",
                &format!("\"{field}\": \"{value}\""),
                1,
            )
        };
        let dtype = |json: String| Qwen25VlConfig::from_json_str(&json).map(|c| c.torch_dtype);
        assert_eq!(
            dtype(with("dtype", "float16")).unwrap(),
            Some(FloatDType::F16)
        );
        assert_eq!(
            dtype(with("torch_dtype", "torch.float32")).unwrap(),
            Some(FloatDType::F32)
        );
        let err = dtype(with("torch_dtype", "int8")).unwrap_err();
        assert!(
            matches!(&err, VlmError::Config { field, .. } if field == "torch_dtype"),
            "{err}"
        );
    }

    #[test]
    fn both_layouts_parse() {
        let flat = Qwen25VlConfig::from_json_str(FLAT).unwrap();
        assert_eq!(flat.text.mrope_section, [2, 3, 3]);
        assert_eq!(flat.text.rope_theta, 1e6);
        assert!(flat.tie_word_embeddings);
        assert_eq!(flat.eos_token_ids, vec![151645]);
        assert_eq!(flat.torch_dtype, Some(FloatDType::BF16));
        assert_eq!(flat.vision.window_size, 56);
        let nested = Qwen25VlConfig::from_json_str(NESTED).unwrap();
        assert_eq!(nested.text.rope_theta, 5000.0);
        assert_eq!(nested.text.num_key_value_heads, 2);
        assert!(!nested.tie_word_embeddings);
        assert_eq!(nested.eos_token_ids, vec![7, 8]);
        assert_eq!(nested.torch_dtype, None);
        assert_eq!(nested.vision.window_size, 112);
        assert_eq!(nested.vision.patch_dim(), 1176);
    }

    fn field_of(json: &str) -> String {
        match Qwen25VlConfig::from_json_str(json) {
            Err(VlmError::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            field_of(&FLAT.replace("[2, 3, 3]", "[2, 3, 4]")),
            "rope_scaling.mrope_section"
        );
        assert_eq!(
            field_of(&NESTED.replace("[2, 3, 3]", "[2, 3]")),
            "text_config.rope_parameters.mrope_section"
        );
        assert_eq!(
            field_of(&NESTED.replace("\"vocab_size\": 500,", "")),
            "text_config.vocab_size"
        );
        assert_eq!(
            field_of(&FLAT.replace("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3")),
            "num_key_value_heads"
        );
        assert_eq!(
            field_of(&FLAT.replace(
                "\"fullatt_block_indexes\": [1]",
                "\"fullatt_block_indexes\": [2]"
            )),
            "vision_config.fullatt_block_indexes"
        );
        assert_eq!(
            field_of(&FLAT.replace("\"image_token_id\": 400", "\"image_token_id\": 900")),
            "image_token_id"
        );
        assert_eq!(
            field_of(&FLAT.replace("\"out_hidden_size\": 64", "\"out_hidden_size\": 63")),
            "vision_config.out_hidden_size"
        );
        assert!(matches!(
            Qwen25VlConfig::from_json_str("{"),
            Err(VlmError::Json { .. })
        ));
    }

    #[test]
    fn tokens_per_second_must_be_finite_and_positive() {
        for bad in ["0", "-2", "0.0"] {
            assert_eq!(
                field_of(&FLAT.replace(
                    "\"tokens_per_second\": 2",
                    &format!("\"tokens_per_second\": {bad}")
                )),
                "vision_config.tokens_per_second",
                "{bad}"
            );
        }
        // The vision RoPE base is checked the same way.
        assert_eq!(
            field_of(&NESTED.replace(
                "\"num_heads\": 2,",
                "\"num_heads\": 2, \"rope_parameters\": {\"rope_theta\": -1.0},"
            )),
            "vision_config.rope_parameters.rope_theta"
        );
    }

    #[test]
    fn overflowing_size_products_name_the_field() {
        // patch_size^2 * in_channels * temporal_patch_size overflows; the window is a multiple of the
        // merge block, so the product check is what rejects it.
        let huge_patch = FLAT.replace(
            "\"window_size\": 56",
            "\"window_size\": 8589934592, \"patch_size\": 4294967296",
        );
        let err = Qwen25VlConfig::from_json_str(&huge_patch).unwrap_err();
        assert!(
            matches!(&err, VlmError::Config { field, reason }
                if field == "vision_config.patch_size" && reason.contains("overflows")),
            "{err}"
        );
        // The embedding table's element count overflows.
        let huge_vocab = FLAT.replace("\"vocab_size\": 500", "\"vocab_size\": 4611686018427387904");
        let err = Qwen25VlConfig::from_json_str(&huge_vocab).unwrap_err();
        assert!(
            matches!(&err, VlmError::Config { field, .. } if field == "vocab_size"),
            "{err}"
        );
        // patch_size * spatial_merge_size overflows in the window check.
        let huge_merge = NESTED.replace(
            "\"num_heads\": 2,",
            "\"num_heads\": 2, \"patch_size\": 4294967296, \"spatial_merge_size\": 4294967296,",
        );
        let err = Qwen25VlConfig::from_json_str(&huge_merge).unwrap_err();
        assert!(
            matches!(&err, VlmError::Config { field, .. } if field == "vision_config.spatial_merge_size"),
            "{err}"
        );
    }

    #[test]
    fn a_config_edited_in_code_is_validated_again() {
        let mut config = Qwen25VlConfig::from_json_str(NESTED).unwrap();
        config.vision.tokens_per_second = f64::NAN;
        let err = config.validate().unwrap_err();
        assert!(
            matches!(&err, VlmError::Config { field, .. } if field == "vision_config.tokens_per_second"),
            "{err}"
        );
        config.vision.tokens_per_second = 2.0;
        config.text.num_attention_heads = 0;
        assert_eq!(config.text.head_dim(), 0, "no division by zero");
        let err = config.validate().unwrap_err();
        assert!(
            matches!(&err, VlmError::Config { field, .. } if field == "text_config.num_attention_heads"),
            "{err}"
        );
    }
}
