//! Procedural synthetic datasets: generated from a seed, no files needed (the embedded default).
//!
//! Every sample carries its reference box (images) or frame window (videos), so traces can be synthesized
//! from it. Sample `index` of `seed` is the same on every machine and in any order (ChaCha8, one stream per
//! index).

pub mod count;
pub mod draw;
pub mod font;
pub mod frames;
pub mod needle;
pub mod text_only;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use count::CountConfig;
pub use frames::FramesConfig;
pub use needle::{NeedleConfig, NeedleSample};
pub use text_only::TextOnlyConfig;

use crate::Result;
use crate::sample::{AnnotatedSample, OPTION_LETTERS};

/// The generator of sample `index` of dataset `salt` under `seed`.
pub(crate) fn sample_rng(seed: u64, index: u64, salt: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    rng.set_stream(index);
    rng
}

/// Multiple-choice options for a digit question: `digit` and `num_options - 1` other digits, shuffled.
/// Returns the option texts and the answer letter. `num_options` must be in `2..=OPTION_LETTERS.len()`
/// (the callers' configs check it).
pub(crate) fn digit_options<R: Rng + ?Sized>(
    digit: u8,
    num_options: usize,
    rng: &mut R,
) -> (Vec<String>, String) {
    let mut options: Vec<u8> = (0..10u8).filter(|d| *d != digit).collect();
    options.shuffle(rng);
    options.truncate(num_options - 1);
    options.push(digit);
    options.shuffle(rng);
    let answer_pos = options.iter().position(|d| *d == digit).unwrap_or(0);
    let options = options.iter().map(|d| d.to_string()).collect();
    (options, OPTION_LETTERS[answer_pos].to_string())
}

/// One of the synthetic datasets with its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum SyntheticDataset {
    /// A small digit on a tag in a large cluttered image.
    Needle(NeedleConfig),
    /// Count discs of one colour.
    Count(CountConfig),
    /// A 16-frame clip where one frame shows the answer.
    Frames(FramesConfig),
    /// Text-only arithmetic questions.
    TextOnly(TextOnlyConfig),
}

impl SyntheticDataset {
    /// Names accepted by [`SyntheticDataset::by_name`].
    pub const NAMES: [&'static str; 4] = ["needle", "count", "frames", "text-only"];

    /// The dataset called `name` with default parameters.
    pub fn by_name(name: &str) -> Option<Self> {
        Some(match name {
            "needle" => Self::Needle(NeedleConfig::default()),
            "count" => Self::Count(CountConfig::default()),
            "frames" => Self::Frames(FramesConfig::default()),
            "text-only" | "text_only" | "text" => Self::TextOnly(TextOnlyConfig::default()),
            _ => return None,
        })
    }

    /// The dataset's name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Needle(_) => "needle",
            Self::Count(_) => "count",
            Self::Frames(_) => "frames",
            Self::TextOnly(_) => "text-only",
        }
    }

    /// Sample `index` under `seed`.
    ///
    /// # Errors
    /// [`crate::Error::Config`] if the parameters are invalid.
    pub fn sample(&self, seed: u64, index: u64) -> Result<AnnotatedSample> {
        match self {
            Self::Needle(c) => c.generate(seed, index).map(|n| n.sample),
            Self::Count(c) => c.generate(seed, index),
            Self::Frames(c) => c.generate(seed, index),
            Self::TextOnly(c) => c.generate(seed, index),
        }
    }
}
