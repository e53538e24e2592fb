//! Visual operations for pixel-space reasoning and the exact Pixel Reasoner tool protocol.
//!
//! A Pixel Reasoner model (arXiv 2505.15966) answers questions about images and videos by calling two
//! visual operations, `crop_image_normalized` (zoom in) and `select_frames`, and reading their results.
//! This crate holds everything about those operations that does not need a model:
//!
//! | module | job |
//! |---|---|
//! | [`load`] | decode images with limits (bombs and lying headers are typed errors), RGBA on white |
//! | [`resize`] | qwen-vl-utils `smart_resize`; Pillow-exact and torchvision-exact bicubic resizes |
//! | [`crop`] | the official `crop_image_normalized` and the DeepEyes / verl `image_zoom_in_tool` |
//! | [`video`] | [`Video`] from frames, frame files or (feature `ffmpeg`) a file; `smart_nframes`; `select_frames` |
//! | [`protocol`] | tool schemas, the system prompt and user-turn text, byte-identical to the official code |
//! | [`parse`] | a model turn to a typed [`ToolCall`] (or a [`ToolCallError`]) |
//! | [`observation`] | the official observation texts: crops, frames, errors |
//! | [`episode`] | [`Episode`]: the running image list, limits, execution, counters for rewards |
//! | [`pyjson`] | JSON written as Python's `json.dumps` writes it (for the prompt) |
//! | [`error`] | the crate's [`Error`]; [`tool_error`] the model-facing [`ToolCallError`] |
//!
//! One turn of the protocol, end to end:
//!
//! ```
//! use pixel_ops::image::{Rgb, RgbImage};
//! use pixel_ops::{Episode, EpisodeConfig, Step, ToolSet};
//!
//! // What the model is shown: the system prompt, then the image and the question.
//! let system = ToolSet::PixelReasoner.system_prompt();
//! assert!(system.contains("\"name\": \"crop_image_normalized\""));
//! let user = ToolSet::PixelReasoner.user_text("What is written on the sign?");
//! assert!(user.ends_with("put your final answer within \\boxed{}."));
//!
//! // The model's turn ends with a tool call; the episode executes it.
//! let image = RgbImage::from_pixel(448, 336, Rgb([200, 200, 200]));
//! let mut episode = Episode::from_image(image, EpisodeConfig::default());
//! let turn = "The sign is too small to read. Let me zoom in.\n<tool_call>\n\
//!     {\"name\": \"crop_image_normalized\", \"arguments\": {\"bbox_2d\": [0.6, 0.1, 0.8, 0.3], \"target_image\": 1}}\n\
//!     </tool_call>";
//! let Step::Observation(obs) = episode.step(turn) else { unreachable!() };
//! // The next user turn: this text, then the crop (resized as the model will see it).
//! assert_eq!(obs.text, "\nHere is the cropped image (Image Size: 532x392):");
//! assert_eq!(obs.images[0].dimensions(), (532, 392));
//!
//! // A turn without a call is the answer; the stats feed the reward.
//! assert_eq!(episode.step("It says STOP. \\boxed{STOP}"), Step::Finished(pixel_ops::EndReason::Answered));
//! assert!(episode.stats().used_pixel_reasoning());
//! ```

pub mod crop;
pub mod episode;
pub mod error;
pub mod load;
pub mod observation;
pub mod parse;
pub mod protocol;
pub mod pyjson;
pub mod resize;
pub mod tool_error;
pub mod video;

pub use crop::{CropConfig, CropSource, crop_normalized, zoom_in};
pub use episode::{EndReason, Episode, EpisodeConfig, EpisodeStats, Step, Visual};
pub use error::{Error, Result};
/// The `image` crate, re-exported: images are [`image::RgbImage`] throughout.
pub use image;
pub use load::{DecodeLimits, decode_image, load_image};
pub use observation::{Observation, ObservationKind};
pub use parse::{ModelTurn, ToolCall, parse_turn, parse_turn_bytes};
pub use protocol::{ToolSchema, ToolSet};
pub use resize::{
    BicubicKernel, PixelLimits, resize_bicubic, resize_bicubic_torchvision, smart_resize,
    smart_resize_image, smart_resize_image_with,
};
pub use tool_error::ToolCallError;
pub use video::{SelectedFrames, Video, select_frames};
