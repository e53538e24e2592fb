//! Visual operations for pixel-space reasoning and the exact Pixel Reasoner tool protocol.
//!
//! (Crate map and runnable example to be completed as the modules land.)

pub mod error;

pub use error::{Error, Result};
/// The `image` crate, re-exported: images are [`image::RgbImage`] throughout.
pub use image;
