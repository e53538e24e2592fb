//! pixel-agent: the Pixel Reasoner loop. A vision-language model reasons about an image or a video, calls
//! zoom-in and select-frames while it does, sees their results as new images, and answers; every rollout
//! is recorded token-in/token-out for training.
//!
//! - [`engine`]: the [`Engine`] trait (batched continuation of a group of conversations) and its two
//!   implementations, [`LocalEngine`] (a `pixel-vlm` model in process, token-exact) and [`HttpEngine`]
//!   (an OpenAI-compatible server, re-tokenizes).
//! - [`rollout`]: the loop — prompt, sample, parse, execute in a `pixel-ops` `Episode`, append the
//!   observation, repeat within the official limits — for a group of rollouts of one query.
//! - [`trajectory`]: what a rollout did: turns, operations, why it ended, and the exact token record.
//! - [`conversation`]: user turns (question, observations) as the engines receive them.
//!
//! ```no_run
//! use pixel_agent::{LocalEngine, RolloutConfig, Query, run_group};
//! use pixel_vlm::{backend::CpuBackend, Qwen25Vl};
//!
//! let device = Default::default();
//! let model = Qwen25Vl::<CpuBackend>::from_pretrained("Qwen2.5-VL-7B", &device)?;
//! let processor = pixel_vlm::processor::Processor::from_pretrained("Qwen2.5-VL-7B")?;
//! let mut engine = LocalEngine::new(&model, &processor, 14_336);
//! let image = pixel_ops::load_image("photo.jpg")?;
//! let query = Query::image(image, "What is written on the sign?");
//! let rollouts = run_group(&mut engine, &query, 8, &RolloutConfig::default())?;
//! for r in &rollouts {
//!     println!("{:?}: {}", r.end, r.final_text);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod conversation;
pub mod engine;
pub mod error;
pub mod http;
pub mod local;
pub mod rollout;
pub mod trajectory;

pub use conversation::{Part, UserTurn};
pub use engine::{Engine, Generated, TurnEnd, TurnSampling};
pub use error::{AgentError, Result};
pub use http::{HttpConfig, HttpEngine};
pub use local::LocalEngine;
pub use rollout::{Event, Media, Query, RolloutConfig, run_group, run_group_with};
pub use trajectory::{
    OperationRecord, RolloutEnd, TokenRecord, Trajectory, VisualKind, VisualSpan,
};
