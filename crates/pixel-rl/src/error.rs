//! The crate's error type.

use thiserror::Error;

/// What can go wrong in the optimizer pieces and the GRPO loss.
#[derive(Debug, Error)]
pub enum RlError {
    /// A setting is out of range (a learning rate, a clipping bound, a normaliser, ...).
    #[error("invalid setting: {0}")]
    Setting(String),
    /// Tensors or slices that must agree in shape do not.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// The rewards do not split into whole groups.
    #[error("{len} rewards do not split into groups of {group_size}")]
    GroupSize {
        /// The number of rewards.
        len: usize,
        /// The group size asked for.
        group_size: usize,
    },
    /// A reward is NaN or infinite.
    #[error("reward {index} is not finite ({value})")]
    NonFiniteReward {
        /// Its position.
        index: usize,
        /// Its value.
        value: f32,
    },
    /// The model, processor or tokenizer failed (`pixel-vlm`).
    #[error(transparent)]
    Vlm(#[from] pixel_vlm::VlmError),
    /// The global gradient norm is NaN or infinite; the gradients were left as they were.
    #[error("the global gradient norm is not finite ({0})")]
    NonFiniteGradNorm(f32),
}

/// `Result` with [`RlError`].
pub type Result<T> = std::result::Result<T, RlError>;
