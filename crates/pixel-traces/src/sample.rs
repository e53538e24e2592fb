//! Annotated samples: the input of trace synthesis.

use image::RgbImage;

use crate::geometry::{FrameWindow, NormBox};

/// What a sample shows and where its answer is.
#[derive(Debug, Clone)]
pub enum Visual {
    /// No image: a text-only question.
    None,
    /// An image whose answer lies in `reference`.
    Image {
        /// The full-resolution image.
        image: RgbImage,
        /// The region holding the answer.
        reference: NormBox,
        /// A short description of that region ("the small tag with a red border").
        cue: String,
    },
    /// A video (frames in order) whose answer lies in `window`.
    Video {
        /// The frames.
        frames: Vec<RgbImage>,
        /// The frames holding the answer (1-based, inclusive, at most 8).
        window: FrameWindow,
        /// A short description of what those frames show.
        cue: String,
    },
}

/// A question with its answer and visual evidence.
#[derive(Debug, Clone)]
pub struct AnnotatedSample {
    /// Unique id (used for file names: letters, digits, `-`, `_`).
    pub id: String,
    /// The question, with its options already written into it when multiple choice.
    pub question: String,
    /// Multiple-choice options (empty for open questions).
    pub options: Vec<String>,
    /// The answer that goes into `\boxed{}` (a letter for multiple choice).
    pub answer: String,
    /// The visual evidence.
    pub visual: Visual,
}

/// Letters for multiple-choice options.
pub const OPTION_LETTERS: [char; 8] = ['A', 'B', 'C', 'D', 'E', 'F', 'G', 'H'];

/// Writes `question` followed by lettered options, one per line (`A. text`).
pub fn with_options(question: &str, options: &[String]) -> String {
    let mut out = format!("{question}\nOptions:");
    for (letter, option) in OPTION_LETTERS.iter().zip(options) {
        out.push_str(&format!("\n{letter}. {option}"));
    }
    out
}
