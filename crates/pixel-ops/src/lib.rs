//! Visual operations for pixel-space reasoning and the exact Pixel Reasoner tool protocol.
//!
//! (Crate map and runnable example to be completed as the modules land.)

pub mod crop;
pub mod error;
pub mod load;
pub mod pyjson;
pub mod resize;
pub mod tool_error;
pub mod video;

pub use crop::{CropConfig, CropSource, crop_normalized, zoom_in};
pub use error::{Error, Result};
/// The `image` crate, re-exported: images are [`image::RgbImage`] throughout.
pub use image;
pub use load::{DecodeLimits, decode_image, load_image};
pub use resize::{PixelLimits, resize_bicubic, smart_resize, smart_resize_image};
pub use tool_error::ToolCallError;
pub use video::{SelectedFrames, Video, select_frames};
