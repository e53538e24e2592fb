//! LoRA fine-tuning of Qwen2.5-VL: adapters on the decoder's (and optionally the vision blocks') projections
//! over a frozen base, merging, and adapter files in PEFT's format.
//!
//! burn 0.21 has no LoRA. Here an adapter ([`LoraAdapter`]) sits beside each adapted `Linear` of the model
//! (`q_proj_lora` beside `q_proj`, ...), so a LoRA model is still a [`Qwen25Vl`]: the training forward,
//! target log-probs, burn's optimizers and the trainers use it unchanged, and only the adapters receive
//! gradients because [`Qwen25Vl::with_lora`] freezes everything else.
//!
//! ```
//! use burn::backend::Autodiff;
//! use pixel_vlm::lora::LoraConfig;
//! use pixel_vlm::{Qwen25Vl, backend::CpuBackend};
//! type B = Autodiff<CpuBackend>;
//!
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/models/tiny_flat");
//! let model = Qwen25Vl::<B>::from_pretrained(dir, &Default::default())?
//!     .with_lora(&LoraConfig::new().with_rank(4).with_alpha(8.0))?;
//! assert_eq!(model.lora_sites().len(), 2 * 7); // two decoder layers, seven projections each
//! let out = std::env::temp_dir().join(format!("pixel-vlm-doc-lora-{}", std::process::id()));
//! model.save_lora(&out)?; // adapter_model.safetensors + adapter_config.json, as PEFT writes them
//! let merged = model.merge_lora(); // a plain model again, with the update folded into the weights
//! # std::fs::remove_dir_all(&out).ok();
//! # Ok::<(), pixel_vlm::VlmError>(())
//! ```
//!
//! The adapters are f32 whatever the base's dtype (a bf16 base on a GPU holds 2 bytes per weight and the
//! adapters the optimizer updates stay exact); see [`crate::layers::lora`] for how the sum is rounded.

mod peft;
mod sites;

use burn::config::Config;
use burn::module::Module;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::error::{Result, VlmError};
pub use crate::layers::lora::LoraAdapter;
use crate::model::Qwen25Vl;
pub use peft::{ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE};
pub use sites::{LoraSite, Tower};

/// A projection LoRA can adapt, by its module name in transformers (PEFT's `target_modules` match these).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraTarget {
    /// Decoder attention query projection.
    QProj,
    /// Decoder attention key projection.
    KProj,
    /// Decoder attention value projection.
    VProj,
    /// Decoder attention output projection.
    OProj,
    /// MLP gate projection (decoder and vision blocks).
    GateProj,
    /// MLP up projection (decoder and vision blocks).
    UpProj,
    /// MLP down projection (decoder and vision blocks).
    DownProj,
    /// Vision attention's fused query/key/value projection.
    Qkv,
    /// Vision attention's output projection.
    Proj,
}

impl LoraTarget {
    /// Every target, in the order sites are listed.
    pub const ALL: [Self; 9] = [
        Self::QProj,
        Self::KProj,
        Self::VProj,
        Self::OProj,
        Self::GateProj,
        Self::UpProj,
        Self::DownProj,
        Self::Qkv,
        Self::Proj,
    ];

    /// The module's own name (`q_proj`, `qkv`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::QProj => "q_proj",
            Self::KProj => "k_proj",
            Self::VProj => "v_proj",
            Self::OProj => "o_proj",
            Self::GateProj => "gate_proj",
            Self::UpProj => "up_proj",
            Self::DownProj => "down_proj",
            Self::Qkv => "qkv",
            Self::Proj => "proj",
        }
    }

    /// The path inside a decoder layer / vision block (`self_attn.q_proj`, `attn.qkv`, `mlp.up_proj`), or
    /// `None` where the tower has no such projection.
    pub fn path_in(self, tower: Tower) -> Option<&'static str> {
        match (tower, self) {
            (Tower::Text, Self::QProj) => Some("self_attn.q_proj"),
            (Tower::Text, Self::KProj) => Some("self_attn.k_proj"),
            (Tower::Text, Self::VProj) => Some("self_attn.v_proj"),
            (Tower::Text, Self::OProj) => Some("self_attn.o_proj"),
            (Tower::Vision, Self::Qkv) => Some("attn.qkv"),
            (Tower::Vision, Self::Proj) => Some("attn.proj"),
            (_, Self::GateProj) => Some("mlp.gate_proj"),
            (_, Self::UpProj) => Some("mlp.up_proj"),
            (_, Self::DownProj) => Some("mlp.down_proj"),
            _ => None,
        }
    }
}

/// Which projections get adapters, and their rank and scale. Defaults are PEFT's `LoraConfig` defaults
/// (rank 8, alpha 8, no dropout) on every projection of the text decoder.
#[derive(Config, Debug, PartialEq)]
pub struct LoraConfig {
    /// Rank `r` of each adapter.
    #[config(default = 8)]
    pub rank: usize,
    /// `lora_alpha`: the update is scaled by `alpha / rank` (by `alpha / sqrt(rank)` with `use_rslora`).
    #[config(default = 8.0)]
    pub alpha: f64,
    /// Dropout probability on each adapter's input during training (`lora_dropout`).
    #[config(default = 0.0)]
    pub dropout: f64,
    /// rsLoRA scaling `alpha / sqrt(rank)`.
    #[config(default = false)]
    pub use_rslora: bool,
    /// Projections adapted, by name: a vision block has `qkv`, `proj` and the MLP's three, a decoder layer
    /// `q_proj` .. `o_proj` and the MLP's three; each tower takes the names it has.
    #[config(default = "LoraTarget::ALL.to_vec()")]
    pub targets: Vec<LoraTarget>,
    /// Adapt the text decoder's layers.
    #[config(default = true)]
    pub text: bool,
    /// Adapt the vision tower's blocks too (not the patch embedding or the merger).
    #[config(default = false)]
    pub vision: bool,
    /// Seed of the `A` matrices' initialisation.
    #[config(default = 0)]
    pub seed: u64,
}

impl LoraConfig {
    /// The factor of the update: `alpha / rank`, or `alpha / sqrt(rank)` with rsLoRA.
    pub fn scaling(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.rank as f64).sqrt()
        } else {
            self.alpha / self.rank as f64
        }
    }

    /// Checks the values.
    ///
    /// # Errors
    /// [`VlmError::Config`] naming the field (`lora.rank`, ...) for a zero rank, an alpha that is not finite
    /// and positive, a dropout outside `[0, 1)`, no targets, or neither tower.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, reason: String| {
            Err(VlmError::Config {
                field: format!("lora.{field}"),
                reason,
            })
        };
        if self.rank == 0 {
            return bad("rank", "must be at least 1".into());
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return bad(
                "alpha",
                format!("{} is not finite and positive", self.alpha),
            );
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad("dropout", format!("{} is not in [0, 1)", self.dropout));
        }
        if self.targets.is_empty() {
            return bad("targets", "no projection to adapt".into());
        }
        if !self.text && !self.vision {
            return bad(
                "text",
                "neither the text decoder nor the vision tower is adapted".into(),
            );
        }
        Ok(())
    }
}

impl<B: Backend> Qwen25Vl<B> {
    /// This model with every parameter frozen and fresh adapters (`B = 0`, so the outputs are unchanged)
    /// on the projections `config` names: only the adapters require gradients.
    ///
    /// # Errors
    /// [`VlmError::Config`] for an invalid config ([`LoraConfig::validate`]) or a model that has adapters
    /// already ([`Qwen25Vl::merge_lora`] them first).
    pub fn with_lora(self, config: &LoraConfig) -> Result<Self> {
        config.validate()?;
        if !self.lora_sites().is_empty() {
            return Err(VlmError::Config {
                field: "lora".into(),
                reason: "the model already has LoRA adapters (merge_lora first)".into(),
            });
        }
        let mut model = self.no_grad();
        let device = model.device();
        let scaling = config.scaling();
        for (k, site) in model.adaptable_sites(config).into_iter().enumerate() {
            let seed = config
                .seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(k as u64);
            if let Some((linear, slot)) = site.slot_mut(&mut model.model) {
                let [d_in, d_out] = linear.weight.dims();
                *slot = Some(LoraAdapter::init(
                    d_in,
                    d_out,
                    config.rank,
                    scaling,
                    config.dropout,
                    seed,
                    &device,
                ));
            }
        }
        Ok(model)
    }

    /// The sites `config` adapts on this model, in order (decoder layers, then vision blocks).
    pub fn adaptable_sites(&self, config: &LoraConfig) -> Vec<LoraSite> {
        let mut sites = Vec::new();
        let towers = [
            (Tower::Text, config.text, self.model.text.layers.len()),
            (Tower::Vision, config.vision, self.model.visual.blocks.len()),
        ];
        for (tower, on, layers) in towers {
            if !on {
                continue;
            }
            for layer in 0..layers {
                for &target in &LoraTarget::ALL {
                    if config.targets.contains(&target) && target.path_in(tower).is_some() {
                        sites.push(LoraSite {
                            tower,
                            layer,
                            target,
                        });
                    }
                }
            }
        }
        sites
    }

    /// The sites that hold an adapter, in order.
    pub fn lora_sites(&self) -> Vec<LoraSite> {
        LoraSite::all(&self.model)
            .into_iter()
            .filter(|site| site.slot(&self.model).is_some_and(|(_, a)| a.is_some()))
            .collect()
    }

    /// The adapter at `site`, if any.
    pub fn lora_adapter(&self, site: LoraSite) -> Option<&LoraAdapter<B>> {
        site.slot(&self.model).and_then(|(_, a)| a.as_ref())
    }

    /// Elements in all adapters.
    pub fn lora_num_params(&self) -> usize {
        self.lora_sites()
            .into_iter()
            .filter_map(|site| self.lora_adapter(site))
            .map(|a| a.num_params())
            .sum()
    }

    /// This model with every adapter folded into its base weight (`W + scaling · A B`, summed in f32 and
    /// rounded once to the weight's dtype) and removed. Parameters keep their ids and gradient settings
    /// (the base stays frozen).
    pub fn merge_lora(mut self) -> Self {
        for site in self.lora_sites() {
            if let Some((linear, slot)) = site.slot_mut(&mut self.model)
                && let Some(adapter) = slot.take()
            {
                *linear = adapter.merge_into(linear.clone());
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::CpuBackend;

    #[test]
    fn invalid_configs_name_their_field() {
        let cases = [
            (LoraConfig::new().with_rank(0), "lora.rank"),
            (LoraConfig::new().with_alpha(f64::NAN), "lora.alpha"),
            (LoraConfig::new().with_dropout(1.0), "lora.dropout"),
            (LoraConfig::new().with_targets(vec![]), "lora.targets"),
            (LoraConfig::new().with_text(false), "lora.text"),
        ];
        for (config, want) in cases {
            match config.validate() {
                Err(VlmError::Config { field, .. }) => assert_eq!(field, want),
                other => panic!("{want}: {other:?}"),
            }
        }
        assert!(LoraConfig::new().validate().is_ok());
    }

    #[test]
    fn scaling_is_alpha_over_rank_or_its_root() {
        let c = LoraConfig::new().with_rank(16).with_alpha(32.0);
        assert_eq!(c.scaling(), 2.0);
        assert_eq!(c.with_use_rslora(true).scaling(), 8.0);
    }

    #[test]
    fn the_config_round_trips_through_json_with_snake_case_targets() {
        let c = LoraConfig::new()
            .with_targets(vec![LoraTarget::QProj, LoraTarget::Qkv])
            .with_vision(true);
        let json = serde_json::to_string(&c).unwrap();
        assert!(
            json.contains("\"q_proj\"") && json.contains("\"qkv\""),
            "{json}"
        );
        let back: LoraConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn sites_follow_the_towers_and_targets() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/models/tiny_flat"
        );
        let model = Qwen25Vl::<CpuBackend>::from_pretrained(dir, &Default::default()).unwrap();
        // tiny_flat: 2 decoder layers, 3 vision blocks.
        assert_eq!(model.adaptable_sites(&LoraConfig::new()).len(), 2 * 7);
        let both = LoraConfig::new().with_vision(true);
        assert_eq!(model.adaptable_sites(&both).len(), 2 * 7 + 3 * 5);
        let mlp_only = LoraConfig::new()
            .with_targets(vec![LoraTarget::UpProj])
            .with_vision(true);
        let names: Vec<String> = model
            .adaptable_sites(&mlp_only)
            .iter()
            .map(LoraSite::module_path)
            .collect();
        assert_eq!(
            names,
            [
                "model.language_model.layers.0.mlp.up_proj",
                "model.language_model.layers.1.mlp.up_proj",
                "model.visual.blocks.0.mlp.up_proj",
                "model.visual.blocks.1.mlp.up_proj",
                "model.visual.blocks.2.mlp.up_proj",
            ]
        );
        let model = model.with_lora(&both).unwrap();
        assert_eq!(model.lora_sites().len(), 29);
        assert!(matches!(
            model.with_lora(&both),
            Err(VlmError::Config { field, .. }) if field == "lora"
        ));
    }
}
