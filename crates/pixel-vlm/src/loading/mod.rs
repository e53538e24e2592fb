//! Hugging Face checkpoint loading: single and sharded safetensors, both key layouts, bf16/f16 kept or widened.
//!
//! # Why not `burn-store`
//! `burn-store`'s `SafetensorsStore` loads *into an initialised module*: a 7B model would first be built with
//! random weights (seconds of RNG and a second copy of the parameters), BF16 tensors are not converted
//! (`NdArray` panics, `Flex` silently keeps BF16), unused tensors are dropped silently and the first missing
//! tensor aborts. Here every layer is *constructed* from the checkpoint: `ParamLoader` hands each layer its
//! tensors by name, converts the dtype, and records every missing, unexpected or mis-shaped tensor, so one
//! [`VlmError::Weights`](crate::VlmError::Weights) lists them all. It also reads tensors straight from
//! the files by offset (headers are parsed up front, data is read one tensor at a time), so peak memory is
//! the model plus one tensor, with no mmap. The plain `safetensors` crate is not used for the same reason:
//! its parser wants the whole file in one buffer.
//!
//! Precision: parameters are uploaded in the dtype the model is built with (see
//! [`crate::Qwen25Vl::from_pretrained_with_dtype`]); a tensor is read in its stored element type and converted
//! once, by burn, on upload: a bf16 checkpoint built as bf16 (e.g. on CUDA) is never widened to f32 on the host,
//! and one built as f32 (the CPU default) is widened exactly.
//!
//! Key layouts: the original one (`model.layers.*`, `model.embed_tokens`, `model.norm`, `visual.*`,
//! `lm_head`) is the canonical naming inside this crate; transformers 5 writes `model.language_model.*` and
//! `model.visual.*`, which are renamed on reading.
//!
//! Files: `index` (the safetensors headers of a checkpoint folder, shard names, reading one tensor),
//! `check` (the tensors a config implies, checked against the headers), `params` (handing each layer
//! its parameters, host tensors and their conversion).

mod check;
mod index;
mod params;

pub(crate) use check::TensorPlan;
pub use index::{CheckpointIndex, DiskDtype, canonical_key, checkpoint_shapes};
pub use params::HostTensor;
pub(crate) use params::{Init, ParamLoader};
