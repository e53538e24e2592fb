//! The crate's error type.

use thiserror::Error;

/// What can go wrong in training: the optimizer pieces, the GRPO loss, the model, metrics files and charts.
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
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file (or folder).
        path: std::path::PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A line of a metrics file is not a metric record (a torn last line is not an error).
    #[error("{}: line {line}: {message}", path.display())]
    MetricsLine {
        /// The metrics file.
        path: std::path::PathBuf,
        /// The line, counted from 1.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// A metric record could not be written (serialised).
    #[error("metrics: {0}")]
    Metrics(String),
    /// A chart could not be drawn or encoded.
    #[error("plot: {0}")]
    Plot(String),
    /// A rollout failed (`pixel-agent`: the engine, the processor, a server).
    #[error(transparent)]
    Agent(#[from] pixel_agent::AgentError),
    /// The reward could not be computed (`pixel-reward`).
    #[error(transparent)]
    Reward(#[from] pixel_reward::Error),
    /// An SFT example could not be built or batched.
    #[error(transparent)]
    Sft(#[from] crate::sft::SftError),
    /// A dataset could not be read (`pixel-traces`).
    #[error(transparent)]
    Data(#[from] pixel_traces::Error),
    /// A checkpoint folder is missing a part, or its parts do not fit the model or the run.
    #[error("checkpoint {}: {reason}", path.display())]
    Checkpoint {
        /// The checkpoint folder.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A data-parallel collective operation failed (joining, an all-reduce), or the ranks disagree.
    #[error("data parallel: {0}")]
    Collective(String),
}

/// `Result` with [`RlError`].
pub type Result<T> = std::result::Result<T, RlError>;
