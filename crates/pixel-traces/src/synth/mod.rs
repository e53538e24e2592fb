//! Trace synthesis from annotated samples, following the paper's template, with self-correction variants.
//!
//! Template (paper §3.1, appendix E): whole-input analysis → "Now I will zoom in to look clearer at
//! '`<cue>`'." (or select frames) → the operation → analysis of its result → `\boxed{answer}`.
//! Self-correction mix (paper §5; the table in `docs/traces.md`, "Self-correction mix"): images 30 % clean,
//! 20 % one wrong crop (disjoint from the cue), 20 % two wrong crops, 30 % an over-large crop then a refined
//! crop; videos 90 % clean, 10 % wrong frames (disjoint from the reference window) first. The loss mask
//! trains assistant text, never observations, and never the deliberately wrong operation calls.

use ::image::RgbImage;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::geometry;
use crate::narrator::{Modality, NarrationRequest, NarrationStep, Narrator};
use crate::official::Role;
use crate::protocol_text;
use crate::sample::{AnnotatedSample, Visual};
use crate::trace::{PIXEL_REASONER_TOOLS, Trace, TraceMessage, TracePart};
use crate::{Error, Result};

mod image;
mod video;

pub use image::{coarse_box, grid_cell_box, grid_cell_holding, wrong_box, wrong_cell};
pub use video::wrong_window;

/// How a trace was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// Whole-image analysis, the right crop, the answer.
    Clean,
    /// One crop disjoint from the cue first (its call untrained), then the right crop.
    OneWrong,
    /// Two crops disjoint from the cue first, then the right crop.
    TwoWrong,
    /// An over-large crop containing the cue, then a refined crop of that crop.
    CoarseToFine,
    /// Whole-video analysis, the right frames, the answer.
    VideoClean,
    /// Frames disjoint from the reference window first (call untrained), then the right frames.
    VideoWrong,
    /// A text-only question answered without operations.
    TextOnly,
}

impl Variant {
    /// The snake_case name written into [`Trace::variant`].
    pub fn name(self) -> &'static str {
        match self {
            Variant::Clean => "clean",
            Variant::OneWrong => "one_wrong",
            Variant::TwoWrong => "two_wrong",
            Variant::CoarseToFine => "coarse_to_fine",
            Variant::VideoClean => "video_clean",
            Variant::VideoWrong => "video_wrong",
            Variant::TextOnly => "text_only",
        }
    }
}

/// Shares of the image variants; they need not sum to 1 (they are normalized).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ImageMix {
    /// [`Variant::Clean`]. Default 0.3.
    pub clean: f64,
    /// [`Variant::OneWrong`]. Default 0.2.
    pub one_wrong: f64,
    /// [`Variant::TwoWrong`]. Default 0.2.
    pub two_wrong: f64,
    /// [`Variant::CoarseToFine`]. Default 0.3.
    pub coarse_to_fine: f64,
}

impl Default for ImageMix {
    fn default() -> Self {
        Self {
            clean: 0.3,
            one_wrong: 0.2,
            two_wrong: 0.2,
            coarse_to_fine: 0.3,
        }
    }
}

/// Synthesis settings; defaults follow the paper.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthConfig {
    /// Seed of every random choice (variant, wrong boxes, templates). Default 0.
    pub seed: u64,
    /// Image variant shares. Default 30/20/20/30.
    pub image_mix: ImageMix,
    /// Share of video traces with wrong frames first. Default 0.1.
    pub video_wrong: f64,
    /// Decimals of box coordinates in calls, 1 to 15 (synthesis refuses others with [`Error::Config`]).
    /// Default 3.
    pub box_decimals: i32,
    /// `min_pixels` of the resize applied to observations (crops, frames) before the model sees them.
    /// Default 200,704 (256 x 28 x 28, the official evaluation's `resize_cropped`).
    pub observation_min_pixels: u64,
    /// `max_pixels` of that resize. Default 4,014,080 (5120 x 28 x 28).
    pub observation_max_pixels: u64,
    /// Cut a coarse-to-fine trace's refined crop from the coarse crop at full resolution, as a rollout
    /// does whose episode crops originals (`pixel_ops::CropSource::Original`), instead of from the coarse
    /// crop as observed. With the default observation limits the observed crop is at least as large as
    /// the cut, so the two differ little; with limits below it (a small model's view) the observed crop
    /// has lost the detail the refinement is for. Default false.
    #[serde(default)]
    pub refine_from_original: bool,
    /// With `n > 0`, image traces zoom in two steps on a grid: a coarse-to-fine trace's first box is the
    /// cell of an `n x n` grid holding the reference box's centre ([`grid_cell_box`]: a box a model can
    /// name from where the object is, instead of a random box 2.5-4x the reference's size), and one- and
    /// two-wrong traces crop other cells first ([`wrong_cell`]), then that cell, then the reference inside
    /// it. A trace whose cell's crop (padded by the official 0.1 per side) does not hold the whole
    /// reference is written clean. Default 0 (off).
    #[serde(default)]
    pub coarse_grid: u32,
    /// With `n > 0` and [`SynthConfig::coarse_grid`], the second box of a zoom in two steps is a cell too:
    /// of an `n x n` grid of the first crop, the one holding the reference's centre, when that cell's crop
    /// region (padded by the official 0.1 per side) holds the reference inset by
    /// [`SynthConfig::fine_inset`] ([`grid_cell_holding`]); the reference's own box otherwise. A model
    /// names a cell from where the object is, where a box's exact sides must be read off its edges.
    /// Default 0 (off).
    #[serde(default)]
    pub fine_grid: u32,
    /// With [`SynthConfig::fine_grid`], the share of the reference's width (height) per side that the
    /// fine cell's crop may cut off (0 to 0.5): a needle tag's digit sits inside a plate margin of about a
    /// fifth of the tag's size. Default 0 (the whole reference).
    #[serde(default)]
    pub fine_inset: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            image_mix: ImageMix::default(),
            video_wrong: 0.1,
            box_decimals: 3,
            observation_min_pixels: 256 * 28 * 28,
            observation_max_pixels: 5120 * 28 * 28,
            refine_from_original: false,
            coarse_grid: 0,
            fine_grid: 0,
            fine_inset: 0.0,
        }
    }
}

/// A synthesized trace and the images it refers to (not yet written anywhere).
#[derive(Debug, Clone)]
pub struct SynthesizedTrace {
    /// The trace; its media paths are the names in `images`.
    pub trace: Trace,
    /// The variant actually built (a requested wrong-crop variant falls back to `Clean` when no disjoint
    /// crop fits in the image).
    pub variant: Variant,
    /// `(relative path, image)` for every media path of the trace.
    pub images: Vec<(String, RgbImage)>,
}

impl SynthesizedTrace {
    /// Writes the images under `dir` (creating folders) as PNG.
    ///
    /// # Errors
    /// [`Error::Io`] / [`Error::Image`] on write failures.
    pub fn write_images(&self, dir: &std::path::Path) -> Result<()> {
        for (name, image) in &self.images {
            let path = dir.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|source| Error::Io {
                    path: parent.to_path_buf(),
                    source,
                })?;
            }
            image.save(&path).map_err(|e| match e {
                ::image::ImageError::IoError(source) => Error::Io {
                    path: path.clone(),
                    source,
                },
                other => Error::Image(other),
            })?;
        }
        Ok(())
    }
}

/// Turns annotated samples into traces with a [`Narrator`].
#[derive(Debug, Clone)]
pub struct Synthesizer<N> {
    config: SynthConfig,
    narrator: N,
}

/// The trace under construction.
struct Builder {
    id: String,
    messages: Vec<TraceMessage>,
    images: Vec<(String, RgbImage)>,
    /// Visuals in the conversation so far: what `target_image` indexes and what frame numbering starts
    /// from (an input video counts as one, as in `pixel-ops`' episode).
    visuals: usize,
}

impl Builder {
    fn push(&mut self, role: Role, content: Vec<TracePart>) {
        self.messages.push(TraceMessage { role, content });
    }

    /// Stores an image to be written as `<id>/<stem>.png` and returns that path.
    fn store(&mut self, stem: &str, image: RgbImage) -> String {
        let name = format!("{}/{stem}.png", self.id);
        self.images.push((name.clone(), image));
        name
    }

    /// Stores an image that joins the conversation as a visual of its own.
    fn add_image(&mut self, stem: &str, image: RgbImage) -> String {
        self.visuals += 1;
        self.store(stem, image)
    }

    /// Adds a crop the model sees and the user turn that shows it (the official observation text).
    fn push_crop_observation(&mut self, stem: &str, seen: &RgbImage) {
        let text = protocol_text::crop_observation(seen.width(), seen.height());
        let name = self.add_image(stem, seen.clone());
        self.push(
            Role::User,
            vec![TracePart::text(text), TracePart::Image { image: name }],
        );
    }
}

const ZOOM_INTENT: &str = "Now I will zoom in to look clearer at";
const FRAMES_INTENT: &str = "Now I will select some frames to look clearer at";
const ANSWER_LINES: &[&str] = &[
    "Therefore, the answer is",
    "So the final answer is",
    "The answer is",
];

impl<N: Narrator> Synthesizer<N> {
    /// A synthesizer with `config` and `narrator`.
    pub fn new(config: SynthConfig, narrator: N) -> Self {
        Self { config, narrator }
    }

    /// The settings.
    pub fn config(&self) -> &SynthConfig {
        &self.config
    }

    /// The generator of sample `index`: the same `(seed, index)` always gives the same trace, whatever
    /// order samples are synthesized in.
    pub fn rng_for(&self, index: u64) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed);
        rng.set_stream(index);
        rng
    }

    /// Draws the variant for a sample of `modality` from the configured mix.
    pub fn choose_variant(&self, modality: Modality, rng: &mut dyn RngCore) -> Variant {
        match modality {
            Modality::Text => Variant::TextOnly,
            Modality::Video => {
                if rng.random::<f64>() < self.config.video_wrong {
                    Variant::VideoWrong
                } else {
                    Variant::VideoClean
                }
            }
            Modality::Image => {
                let m = self.config.image_mix;
                let weights =
                    [m.clean, m.one_wrong, m.two_wrong, m.coarse_to_fine].map(|w| w.max(0.0));
                let total: f64 = weights.iter().sum();
                let mut x = rng.random::<f64>() * if total > 0.0 { total } else { 1.0 };
                let variants = [
                    Variant::Clean,
                    Variant::OneWrong,
                    Variant::TwoWrong,
                    Variant::CoarseToFine,
                ];
                for (v, w) in variants.iter().zip(weights) {
                    if x < w {
                        return *v;
                    }
                    x -= w;
                }
                Variant::Clean
            }
        }
    }

    /// Synthesizes the trace of `sample`, drawing its variant from the mix with the generator of `index`.
    ///
    /// # Errors
    /// [`Error::InvalidSample`] for unusable samples, [`Error::Config`] for a `box_decimals` out of range,
    /// narrator errors as they come.
    pub fn synthesize(&self, sample: &AnnotatedSample, index: u64) -> Result<SynthesizedTrace> {
        let mut rng = self.rng_for(index);
        let variant = self.choose_variant(modality_of(sample), &mut rng);
        self.build(sample, variant, &mut rng)
    }

    /// Synthesizes `sample` as `variant` (which must suit the sample's modality).
    ///
    /// # Errors
    /// As [`Synthesizer::synthesize`], and [`Error::InvalidSample`] for a variant of the wrong modality.
    pub fn synthesize_as(
        &self,
        sample: &AnnotatedSample,
        index: u64,
        variant: Variant,
    ) -> Result<SynthesizedTrace> {
        let mut rng = self.rng_for(index);
        // Draw the variant anyway so that the rest of the stream matches `synthesize`.
        let _ = self.choose_variant(modality_of(sample), &mut rng);
        self.build(sample, variant, &mut rng)
    }

    fn build(
        &self,
        sample: &AnnotatedSample,
        variant: Variant,
        rng: &mut ChaCha8Rng,
    ) -> Result<SynthesizedTrace> {
        if !(1..=15).contains(&self.config.box_decimals) {
            return Err(Error::Config(format!(
                "box_decimals {} not in 1..=15",
                self.config.box_decimals
            )));
        }
        if sample.id.is_empty()
            || !sample
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(
                sample,
                "id must be non-empty ASCII letters, digits, '-' or '_'".into(),
            ));
        }
        let mut b = Builder {
            id: sample.id.clone(),
            messages: Vec::new(),
            images: Vec::new(),
            visuals: 0,
        };
        let built = match (&sample.visual, variant) {
            (Visual::None, Variant::TextOnly) => {
                self.text_only(sample, &mut b, rng)?;
                Variant::TextOnly
            }
            (
                Visual::Image {
                    image,
                    reference,
                    cue,
                },
                Variant::Clean | Variant::OneWrong | Variant::TwoWrong | Variant::CoarseToFine,
            ) => self.image_trace(sample, image, *reference, cue, variant, &mut b, rng)?,
            (
                Visual::Video {
                    frames,
                    window,
                    cue,
                },
                Variant::VideoClean | Variant::VideoWrong,
            ) => self.video_trace(sample, frames, *window, cue, variant, &mut b, rng)?,
            (_, v) => {
                return Err(invalid(
                    sample,
                    format!("variant {} does not suit this sample's input", v.name()),
                ));
            }
        };
        let trace = Trace {
            id: sample.id.clone(),
            tools: PIXEL_REASONER_TOOLS.to_string(),
            variant: built.name().to_string(),
            answer: Some(sample.answer.clone()),
            messages: b.messages,
        };
        Ok(SynthesizedTrace {
            trace,
            variant: built,
            images: b.images,
        })
    }

    fn narrate(
        &self,
        sample: &AnnotatedSample,
        step: NarrationStep,
        modality: Modality,
        cue: &str,
        images: Vec<&RgbImage>,
        rng: &mut ChaCha8Rng,
    ) -> Result<String> {
        let request = NarrationRequest {
            step,
            modality,
            question: &sample.question,
            answer: &sample.answer,
            cue,
            images,
        };
        Ok(self.narrator.narrate(&request, rng)?.trim().to_string())
    }

    /// Narrates the last step and pushes it as the final assistant turn, ending with `\boxed{answer}`
    /// (unless the narration already holds a box).
    #[allow(clippy::too_many_arguments)]
    fn push_answer(
        &self,
        b: &mut Builder,
        sample: &AnnotatedSample,
        step: NarrationStep,
        modality: Modality,
        cue: &str,
        images: Vec<&RgbImage>,
        rng: &mut ChaCha8Rng,
    ) -> Result<()> {
        let analysis = self.narrate(sample, step, modality, cue, images, rng)?;
        let text = if analysis.contains("\\boxed{") {
            analysis
        } else {
            let line = ANSWER_LINES[rng.random_range(0..ANSWER_LINES.len())];
            format!("{analysis}\n\n{line} \\boxed{{{}}}.", sample.answer)
        };
        b.push(Role::Assistant, vec![TracePart::trained(text)]);
        Ok(())
    }

    fn text_only(
        &self,
        sample: &AnnotatedSample,
        b: &mut Builder,
        rng: &mut ChaCha8Rng,
    ) -> Result<()> {
        b.push(
            Role::User,
            vec![TracePart::text(protocol_text::user_text(&sample.question))],
        );
        self.push_answer(
            b,
            sample,
            NarrationStep::TextOnly,
            Modality::Text,
            "",
            Vec::new(),
            rng,
        )
    }

    /// Resizes an observation as the model would receive it (smart_resize to the observation limits).
    fn observe(&self, image: &RgbImage) -> Result<RgbImage> {
        geometry::resize_for_model(
            image,
            self.config.observation_min_pixels,
            self.config.observation_max_pixels,
        )
    }
}

/// [`Error::InvalidSample`] for `sample`.
fn invalid(sample: &AnnotatedSample, message: String) -> Error {
    Error::InvalidSample {
        id: sample.id.clone(),
        message,
    }
}

fn modality_of(sample: &AnnotatedSample) -> Modality {
    match sample.visual {
        Visual::None => Modality::Text,
        Visual::Image { .. } => Modality::Image,
        Visual::Video { .. } => Modality::Video,
    }
}
