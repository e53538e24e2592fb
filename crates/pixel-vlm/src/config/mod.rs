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
//!
//! Files: `parse` (the JSON layouts read into [`Qwen25VlConfig`]), `validate` (every value checked,
//! size products included).

mod parse;
mod validate;

use burn::tensor::FloatDType;

use crate::error::VlmError;

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

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> VlmError {
    VlmError::Config {
        field: field.into(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests;
