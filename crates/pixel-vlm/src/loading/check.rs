//! The tensors a config implies ([`TensorPlan`]) and the check of a checkpoint's headers against them.

use super::index::CheckpointIndex;
use crate::config::Qwen25VlConfig;
use crate::error::{Result, VlmError};

impl CheckpointIndex {
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
