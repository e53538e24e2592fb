//! What a tool returns to the model: a new **user** turn of text followed by images.
//!
//! Texts are the official ones (`experience_maker.py`): a crop reports the size of the image the model
//! receives, i.e. after the crop was resized with `smart_resize`; frames report the first frame's size and
//! the official numbering; failures wrap the error message.

use image::RgbImage;

use crate::tool_error::ToolCallError;

/// The observation text for a crop of `width`x`height` pixels (the resized crop the model sees).
pub fn crop_text(width: u32, height: u32) -> String {
    format!("\nHere is the cropped image (Image Size: {width}x{height}):")
}

/// The observation text for selected frames of `width`x`height` numbered `first` to `last`.
pub fn frames_text(width: u32, height: u32, first: usize, last: usize) -> String {
    format!(
        "\nHere are the selected frames (Frame Size: {width}x{height}, Numbered {first} to {last}):"
    )
}

/// The observation text for a failed call.
pub fn error_text(message: &str) -> String {
    format!("\nExecution error:\n{message}\n")
}

/// The DeepEyes / verl text for a zoom-in on `bbox` (already formatted as a list) with an optional label.
pub fn zoom_in_text(bbox: &str, label: Option<&str>) -> String {
    match label {
        Some(l) => format!("Zoomed in on the image to the region {bbox} with label {l}."),
        None => format!("Zoomed in on the image to the region {bbox}."),
    }
}

/// What kind of result an observation carries.
#[derive(Debug, Clone, PartialEq)]
pub enum ObservationKind {
    /// A crop from `crop_image_normalized` or `image_zoom_in_tool`.
    Crop,
    /// Frames from `select_frames`, with the numbers the text announces.
    Frames {
        /// First number in the text.
        first: usize,
        /// Last number in the text.
        last: usize,
    },
    /// A failed call; the text carries the error message.
    Error(ToolCallError),
}

/// A tool result as the next user turn: `text` first, then `images` in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The turn's text (it precedes the images).
    pub text: String,
    /// Images the model receives, in order, already resized to what the model sees.
    pub images: Vec<RgbImage>,
    /// What the observation reports.
    pub kind: ObservationKind,
}

impl Observation {
    /// A successful crop.
    pub fn crop(image: RgbImage) -> Self {
        Self {
            text: crop_text(image.width(), image.height()),
            images: vec![image],
            kind: ObservationKind::Crop,
        }
    }

    /// A DeepEyes zoom-in (verl's text).
    pub fn zoom_in(image: RgbImage, bbox: &str, label: Option<&str>) -> Self {
        Self {
            text: zoom_in_text(bbox, label),
            images: vec![image],
            kind: ObservationKind::Crop,
        }
    }

    /// Selected frames numbered `first..` (the text reports the first frame's size). `frames` must not
    /// be empty; an empty list gives a text of size 0x0.
    pub fn frames(frames: Vec<RgbImage>, first: usize) -> Self {
        let (w, h) = frames.first().map_or((0, 0), |f| f.dimensions());
        let last = (first + frames.len()).saturating_sub(1);
        Self {
            text: frames_text(w, h, first, last),
            images: frames,
            kind: ObservationKind::Frames { first, last },
        }
    }

    /// A failed call: `"\nExecution error:\n{message}\n"`.
    pub fn error(error: ToolCallError) -> Self {
        Self {
            text: error_text(&error.to_string()),
            images: Vec::new(),
            kind: ObservationKind::Error(error),
        }
    }

    /// Whether this reports a failure.
    pub fn is_error(&self) -> bool {
        matches!(self.kind, ObservationKind::Error(_))
    }
}
