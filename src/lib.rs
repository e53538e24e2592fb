//! Pixel Reasoner in Rust: the umbrella crate of the workspace.
//!
//! It re-exports the member crates so the runnable programs in `examples/` and the cross-crate tests in
//! `tests/` have one dependency. Users normally depend on the member crates directly:
//!
//! - [`pixel_ops`]: the visual operations (zoom-in, select-frames) and the exact tool protocol.
//! - [`pixel_reward`]: answer matching and the curiosity-driven reward.
//! - [`pixel_traces`]: dataset formats, trace synthesis and procedural synthetic datasets.
//! - with the `vlm` feature, `pixel_vlm` (Qwen2.5-VL on burn) and `pixel_agent` (the multi-turn loop).

/// The multi-turn pixel-reasoning loop (feature `vlm`).
#[cfg(feature = "vlm")]
pub use pixel_agent;
pub use pixel_ops;
pub use pixel_reward;
pub use pixel_traces;
/// Qwen2.5-VL on burn (feature `vlm`).
#[cfg(feature = "vlm")]
pub use pixel_vlm;
