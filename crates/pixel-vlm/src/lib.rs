//! pixel-vlm: Qwen2.5-VL on burn, loading Hugging Face checkpoints unchanged.
//!
//! Modules: [`config`] (`config.json`, both layouts), [`loading`] (safetensors, sharded, bf16),
//! [`layers`] (linear products, RMSNorm, rotary embeddings, SwiGLU: shared by both towers), [`vision`]
//! (vision tower), [`text`] (decoder with M-RoPE), [`model`] (the whole model and its forward), [`cache`]
//! (preallocated KV cache), [`generation`] (batched generation), [`train`] (the cache-free training
//! forward, target log-probs, freezing), [`lora`] (LoRA adapters, merging, PEFT adapter files),
//! [`saving`] (`save_pretrained` to a Hugging Face folder),
//! [`builder`] (a complete tiny checkpoint from scratch), [`backend`] (default CPU backend).
//!
//! ```no_run
//! use pixel_vlm::{backend::CpuBackend, Qwen25Vl};
//!
//! let device = Default::default();
//! let model = Qwen25Vl::<CpuBackend>::from_pretrained("Qwen2.5-VL-3B-Instruct", &device)?;
//! println!("{} decoder layers", model.config.text.num_hidden_layers);
//! # Ok::<(), pixel_vlm::VlmError>(())
//! ```
//!
//! Half precision: `Qwen25Vl::<B>::from_pretrained_with_dtype(dir, &device, FloatDType::BF16)` keeps a bf16
//! checkpoint in bf16 (see the crate README's *Precision* section).

pub mod backend;
pub mod builder;
pub mod cache;
pub mod chat_template;
pub mod config;
mod env_flag;
pub mod error;
pub mod fused;
pub mod generation;
pub mod layers;
pub mod loading;
pub mod lora;
pub mod model;
pub mod processor;
pub mod rope_index;
pub mod sampling;
pub mod saving;
pub mod text;
pub mod tokenizer;
pub mod train;
pub mod vision;

/// The float dtypes a model can be built in ([`Qwen25Vl::from_pretrained_with_dtype`]), re-exported from burn.
pub use burn::tensor::FloatDType;
pub use cache::KvCache;
pub use config::Qwen25VlConfig;
pub use error::VlmError;
pub use model::{ForwardInput, Qwen25Vl, VisualInput};
