//! Layers shared by the vision tower and the text decoder: linear products, LoRA adapters, RMSNorm, rotary
//! embeddings and the SwiGLU MLP. They import nothing from [`crate::model`], [`crate::text`] or
//! [`crate::vision`], which build on them.

pub mod linear;
pub mod lora;
pub mod norm;
pub mod rope;
pub mod swiglu;
