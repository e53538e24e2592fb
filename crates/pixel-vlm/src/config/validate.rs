//! [`Qwen25VlConfig::validate`]: every value of a config checked, with checked size arithmetic.

use super::{Qwen25VlConfig, invalid};
use crate::error::{Result, VlmError};

impl Qwen25VlConfig {
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

fn positive(value: usize, field: &str) -> Result<usize> {
    if value == 0 {
        Err(invalid(field, "must be positive"))
    } else {
        Ok(value)
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
