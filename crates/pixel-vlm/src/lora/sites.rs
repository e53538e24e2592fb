//! Where adapters sit: a projection of one decoder layer or vision block, named as transformers names it.

use burn::nn::Linear;
use burn::tensor::backend::Backend;

use super::LoraTarget;
use crate::layers::lora::LoraAdapter;
use crate::layers::swiglu::SwiGlu;
use crate::model::Qwen25VlModel;

/// The two towers with adaptable layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tower {
    /// The text decoder's layers (`model.language_model.layers.*`).
    Text,
    /// The vision tower's blocks (`model.visual.blocks.*`).
    Vision,
}

/// One adaptable projection: a tower, a layer (block) index and a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LoraSite {
    /// The tower.
    pub tower: Tower,
    /// Decoder layer or vision block index.
    pub layer: usize,
    /// The projection.
    pub target: LoraTarget,
}

type Slot<'m, B> = (&'m Linear<B>, &'m Option<LoraAdapter<B>>);
type SlotMut<'m, B> = (&'m mut Linear<B>, &'m mut Option<LoraAdapter<B>>);

impl LoraSite {
    /// Every site of `model`, decoder layers first, each layer's targets in [`LoraTarget::ALL`] order.
    pub fn all<B: Backend>(model: &Qwen25VlModel<B>) -> Vec<Self> {
        let mut sites = Vec::new();
        for (tower, layers) in [
            (Tower::Text, model.text.layers.len()),
            (Tower::Vision, model.visual.blocks.len()),
        ] {
            for layer in 0..layers {
                for target in LoraTarget::ALL {
                    if target.path_in(tower).is_some() {
                        sites.push(Self {
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

    /// The module path in transformers 5 (`model.language_model.layers.3.self_attn.q_proj`,
    /// `model.visual.blocks.0.attn.qkv`): what PEFT with transformers 5 writes after `base_model.model.`.
    pub fn module_path(&self) -> String {
        let inner = self.target.path_in(self.tower).unwrap_or("?");
        match self.tower {
            Tower::Text => format!("model.language_model.layers.{}.{inner}", self.layer),
            Tower::Vision => format!("model.visual.blocks.{}.{inner}", self.layer),
        }
    }

    /// Parses a module path in either layout: transformers 5 (`model.language_model.layers.N.…`,
    /// `model.visual.blocks.N.…`) or the original one of the released checkpoints (`model.layers.N.…`,
    /// `visual.blocks.N.…`).
    pub fn parse(path: &str) -> Option<Self> {
        let (tower, rest) = if let Some(rest) = path
            .strip_prefix("model.language_model.layers.")
            .or_else(|| path.strip_prefix("model.layers."))
        {
            (Tower::Text, rest)
        } else if let Some(rest) = path
            .strip_prefix("model.visual.blocks.")
            .or_else(|| path.strip_prefix("visual.blocks."))
        {
            (Tower::Vision, rest)
        } else {
            return None;
        };
        let (index, inner) = rest.split_once('.')?;
        if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let layer = index.parse().ok()?;
        let target = LoraTarget::ALL
            .into_iter()
            .find(|t| t.path_in(tower) == Some(inner))?;
        Some(Self {
            tower,
            layer,
            target,
        })
    }

    /// The base projection and the adapter slot of this site, `None` if the model has no such layer.
    pub(crate) fn slot<'m, B: Backend>(&self, m: &'m Qwen25VlModel<B>) -> Option<Slot<'m, B>> {
        match self.tower {
            Tower::Text => {
                let layer = m.text.layers.get(self.layer)?;
                let a = &layer.self_attn;
                match self.target {
                    LoraTarget::QProj => Some((&a.q_proj, &a.q_proj_lora)),
                    LoraTarget::KProj => Some((&a.k_proj, &a.k_proj_lora)),
                    LoraTarget::VProj => Some((&a.v_proj, &a.v_proj_lora)),
                    LoraTarget::OProj => Some((&a.o_proj, &a.o_proj_lora)),
                    target => mlp_slot(&layer.mlp, target),
                }
            }
            Tower::Vision => {
                let block = m.visual.blocks.get(self.layer)?;
                let a = &block.attn;
                match self.target {
                    LoraTarget::Qkv => Some((&a.qkv, &a.qkv_lora)),
                    LoraTarget::Proj => Some((&a.proj, &a.proj_lora)),
                    target => mlp_slot(&block.mlp, target),
                }
            }
        }
    }

    /// As [`LoraSite::slot`], mutably.
    pub(crate) fn slot_mut<'m, B: Backend>(
        &self,
        m: &'m mut Qwen25VlModel<B>,
    ) -> Option<SlotMut<'m, B>> {
        match self.tower {
            Tower::Text => {
                let layer = m.text.layers.get_mut(self.layer)?;
                let a = &mut layer.self_attn;
                match self.target {
                    LoraTarget::QProj => Some((&mut a.q_proj, &mut a.q_proj_lora)),
                    LoraTarget::KProj => Some((&mut a.k_proj, &mut a.k_proj_lora)),
                    LoraTarget::VProj => Some((&mut a.v_proj, &mut a.v_proj_lora)),
                    LoraTarget::OProj => Some((&mut a.o_proj, &mut a.o_proj_lora)),
                    target => mlp_slot_mut(&mut layer.mlp, target),
                }
            }
            Tower::Vision => {
                let block = m.visual.blocks.get_mut(self.layer)?;
                let a = &mut block.attn;
                match self.target {
                    LoraTarget::Qkv => Some((&mut a.qkv, &mut a.qkv_lora)),
                    LoraTarget::Proj => Some((&mut a.proj, &mut a.proj_lora)),
                    target => mlp_slot_mut(&mut block.mlp, target),
                }
            }
        }
    }
}

fn mlp_slot<B: Backend>(mlp: &SwiGlu<B>, target: LoraTarget) -> Option<Slot<'_, B>> {
    match target {
        LoraTarget::GateProj => Some((&mlp.gate_proj, &mlp.gate_proj_lora)),
        LoraTarget::UpProj => Some((&mlp.up_proj, &mlp.up_proj_lora)),
        LoraTarget::DownProj => Some((&mlp.down_proj, &mlp.down_proj_lora)),
        _ => None,
    }
}

fn mlp_slot_mut<B: Backend>(mlp: &mut SwiGlu<B>, target: LoraTarget) -> Option<SlotMut<'_, B>> {
    match target {
        LoraTarget::GateProj => Some((&mut mlp.gate_proj, &mut mlp.gate_proj_lora)),
        LoraTarget::UpProj => Some((&mut mlp.up_proj, &mut mlp.up_proj_lora)),
        LoraTarget::DownProj => Some((&mut mlp.down_proj, &mut mlp.down_proj_lora)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_in_both_layouts_and_print_in_transformers_5s() {
        for (path, canonical) in [
            (
                "model.language_model.layers.12.self_attn.q_proj",
                "model.language_model.layers.12.self_attn.q_proj",
            ),
            (
                "model.layers.3.mlp.down_proj",
                "model.language_model.layers.3.mlp.down_proj",
            ),
            ("visual.blocks.0.attn.qkv", "model.visual.blocks.0.attn.qkv"),
            (
                "model.visual.blocks.31.mlp.gate_proj",
                "model.visual.blocks.31.mlp.gate_proj",
            ),
        ] {
            let site = LoraSite::parse(path).unwrap_or_else(|| panic!("{path}"));
            assert_eq!(site.module_path(), canonical);
        }
        for bad in [
            "model.layers.x.self_attn.q_proj",
            "model.layers.1.self_attn.qkv",
            "visual.blocks.1.attn.q_proj",
            "model.layers.+1.mlp.up_proj",
            "lm_head",
            "model.layers.1",
        ] {
            assert!(LoraSite::parse(bad).is_none(), "{bad}");
        }
    }
}
