//! Trace synthesis from annotated samples, following the paper's template, with self-correction variants.
//!
//! Template (paper §3.1, appendix E): whole-input analysis → "Now I will zoom in to look clearer at
//! '`<cue>`'." (or select frames) → the operation → analysis of its result → `\boxed{answer}`.
//! Self-correction mix (paper §5; the table in `docs/traces.md`, "Self-correction mix"): images 30 % clean,
//! 20 % one wrong crop (disjoint from the cue), 20 % two wrong crops, 30 % an over-large crop then a refined
//! crop; videos 90 % clean, 10 % wrong frames (disjoint from the reference window) first. The loss mask
//! trains assistant text, never observations, and never the deliberately wrong operation calls.

use image::RgbImage;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::geometry::{self, FrameWindow, NormBox};
use crate::narrator::{Modality, NarrationRequest, NarrationStep, Narrator};
use crate::official::Role;
use crate::protocol_text;
use crate::sample::{AnnotatedSample, Visual};
use crate::trace::{PIXEL_REASONER_TOOLS, Trace, TraceMessage, TracePart};
use crate::{Error, Result};

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
                image::ImageError::IoError(source) => Error::Io {
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

    #[allow(clippy::too_many_arguments)]
    fn image_trace(
        &self,
        sample: &AnnotatedSample,
        image: &RgbImage,
        reference: NormBox,
        cue: &str,
        requested: Variant,
        b: &mut Builder,
        rng: &mut ChaCha8Rng,
    ) -> Result<Variant> {
        let decimals = self.config.box_decimals;
        let target = geometry::round_outward(reference, decimals);
        let (correct_crop, _) = geometry::official_crop(image, target)
            .map_err(|e| invalid(sample, format!("the reference box cannot be cropped: {e}")))?;
        // Wrong crops: boxes whose padded crop region misses the reference box entirely.
        let wrong_count = match requested {
            Variant::OneWrong => 1,
            Variant::TwoWrong => 2,
            _ => 0,
        };
        let mut wrong_boxes = Vec::new();
        for _ in 0..wrong_count {
            match wrong_box(
                reference,
                image.width(),
                image.height(),
                decimals,
                &wrong_boxes,
                rng,
            ) {
                Some(w) => wrong_boxes.push(w),
                None => break,
            }
        }
        let coarse = if requested == Variant::CoarseToFine {
            coarse_box(reference, image.width(), image.height(), decimals, rng)
        } else {
            None
        };
        let variant = match requested {
            Variant::OneWrong | Variant::TwoWrong if wrong_boxes.len() < wrong_count => {
                Variant::Clean
            }
            Variant::CoarseToFine if coarse.is_none() => Variant::Clean,
            v => v,
        };
        let wrong_boxes = if variant == Variant::Clean {
            Vec::new()
        } else {
            wrong_boxes
        };

        let input = b.add_image("input", image.clone());
        b.push(
            Role::User,
            vec![
                TracePart::Image { image: input },
                TracePart::text(protocol_text::user_text(&sample.question)),
            ],
        );
        let intent = format!("{ZOOM_INTENT} '{cue}'.");
        let whole = self.narrate(
            sample,
            NarrationStep::WholeInput,
            Modality::Image,
            cue,
            vec![image],
            rng,
        )?;
        let mut lead = format!("{whole}\n\n{intent}\n");

        for (i, wrong) in wrong_boxes.iter().enumerate() {
            let (crop, _) = geometry::official_crop(image, *wrong)?;
            let seen = self.observe(&crop)?;
            b.push(
                Role::Assistant,
                vec![
                    TracePart::trained(lead),
                    TracePart::text(protocol_text::crop_call(wrong.to_array(), 1)),
                ],
            );
            b.push_crop_observation(&format!("wrong_{}", i + 1), &seen);
            let missed = self.narrate(
                sample,
                NarrationStep::Missed,
                Modality::Image,
                cue,
                vec![image, &seen],
                rng,
            )?;
            lead = format!("{missed}\n\n{intent}\n");
        }

        let final_view = if let Some(coarse) = coarse.filter(|_| variant == Variant::CoarseToFine) {
            let (coarse_crop, region) = geometry::official_crop(image, coarse)?;
            let coarse_seen = self.observe(&coarse_crop)?;
            b.push(
                Role::Assistant,
                vec![
                    TracePart::trained(lead),
                    TracePart::trained(protocol_text::crop_call(coarse.to_array(), 1)),
                ],
            );
            let coarse_index = b.visuals + 1;
            b.push_crop_observation("coarse", &coarse_seen);
            // The refined box is written in the coordinates of the coarse crop (image `coarse_index`).
            let refined = geometry::round_outward(reference.relative_to(region), decimals);
            let (fine_crop, _) = geometry::official_crop(&coarse_seen, refined)?;
            let too_coarse = self.narrate(
                sample,
                NarrationStep::TooCoarse,
                Modality::Image,
                cue,
                vec![image, &coarse_seen],
                rng,
            )?;
            b.push(
                Role::Assistant,
                vec![
                    TracePart::trained(format!("{too_coarse}\n")),
                    TracePart::trained(protocol_text::crop_call(refined.to_array(), coarse_index)),
                ],
            );
            fine_crop
        } else {
            b.push(
                Role::Assistant,
                vec![
                    TracePart::trained(lead),
                    TracePart::trained(protocol_text::crop_call(target.to_array(), 1)),
                ],
            );
            correct_crop
        };
        let seen = self.observe(&final_view)?;
        b.push_crop_observation("crop", &seen);
        self.push_answer(
            b,
            sample,
            NarrationStep::Final,
            Modality::Image,
            cue,
            vec![image, &seen],
            rng,
        )?;
        Ok(variant)
    }

    #[allow(clippy::too_many_arguments)]
    fn video_trace(
        &self,
        sample: &AnnotatedSample,
        frames: &[RgbImage],
        window: FrameWindow,
        cue: &str,
        requested: Variant,
        b: &mut Builder,
        rng: &mut ChaCha8Rng,
    ) -> Result<Variant> {
        if window.first == 0 || window.is_empty() || window.last > frames.len() || window.len() > 8
        {
            return Err(invalid(
                sample,
                format!(
                    "frame window {}..={} is not 1-based, at most 8 frames, within {} frames",
                    window.first,
                    window.last,
                    frames.len()
                ),
            ));
        }
        let wrong = if requested == Variant::VideoWrong {
            wrong_window(window, frames.len(), rng)
        } else {
            None
        };
        let variant = if wrong.is_some() {
            Variant::VideoWrong
        } else {
            Variant::VideoClean
        };

        let paths: Vec<String> = frames
            .iter()
            .enumerate()
            .map(|(i, f)| b.store(&format!("frame_{:02}", i + 1), f.clone()))
            .collect();
        b.visuals += 1;
        b.push(
            Role::User,
            vec![
                TracePart::Video { video: paths },
                TracePart::text(protocol_text::user_text(&sample.question)),
            ],
        );
        let intent = format!("{FRAMES_INTENT} '{cue}'.");
        let overview: Vec<&RgbImage> = frames.iter().collect();
        let whole = self.narrate(
            sample,
            NarrationStep::WholeInput,
            Modality::Video,
            cue,
            overview,
            rng,
        )?;
        let mut lead = format!("{whole}\n\n{intent}\n");

        let show = |b: &mut Builder, selected: &[usize], tag: &str| -> Result<Vec<RgbImage>> {
            let seen: Vec<RgbImage> = selected
                .iter()
                .map(|&f| self.observe(&frames[f - 1]))
                .collect::<Result<_>>()?;
            // Numbered from the visuals so far, as `pixel-ops`' episode does (the released code's rule).
            let first = b.visuals;
            let last = first + seen.len() - 1;
            let (w, h) = (seen[0].width(), seen[0].height());
            let mut content = vec![TracePart::text(protocol_text::frames_observation(
                w, h, first, last,
            ))];
            for (f, image) in selected.iter().zip(&seen) {
                content.push(TracePart::Image {
                    image: b.add_image(&format!("{tag}_{f:02}"), image.clone()),
                });
            }
            b.push(Role::User, content);
            Ok(seen)
        };

        if let Some(wrong) = &wrong {
            b.push(
                Role::Assistant,
                vec![
                    TracePart::trained(lead),
                    TracePart::text(protocol_text::select_frames_call(wrong)),
                ],
            );
            let seen = show(b, wrong, "wrong")?;
            let mut images = vec![&frames[0]];
            images.extend(seen.iter());
            let missed = self.narrate(
                sample,
                NarrationStep::Missed,
                Modality::Video,
                cue,
                images,
                rng,
            )?;
            lead = format!("{missed}\n\n{intent}\n");
        }
        let selected = window.frames();
        b.push(
            Role::Assistant,
            vec![
                TracePart::trained(lead),
                TracePart::trained(protocol_text::select_frames_call(&selected)),
            ],
        );
        let seen = show(b, &selected, "selected")?;
        self.push_answer(
            b,
            sample,
            NarrationStep::Final,
            Modality::Video,
            cue,
            seen.iter().collect(),
            rng,
        )?;
        Ok(variant)
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

/// A box the size of `reference` (scaled 0.8-1.5x) whose official crop region (padded by 0.1, clamped)
/// does not touch `reference`, differs from `taken`, and is croppable; `None` if none is found.
pub fn wrong_box(
    reference: NormBox,
    width: u32,
    height: u32,
    decimals: i32,
    taken: &[NormBox],
    rng: &mut dyn RngCore,
) -> Option<NormBox> {
    for _ in 0..200 {
        let scale = rng.random_range(0.8..1.5);
        let w = (reference.width() * scale).clamp(0.02, 0.9);
        let h = (reference.height() * scale).clamp(0.02, 0.9);
        let x1 = rng.random_range(0.0..=(1.0 - w));
        let y1 = rng.random_range(0.0..=(1.0 - h));
        let Ok(candidate) = NormBox::new(x1, y1, x1 + w, y1 + h) else {
            continue;
        };
        let candidate = geometry::round_outward(candidate, decimals);
        let region = candidate.padded(geometry::CROP_PAD);
        if region.intersects(reference)
            || taken
                .iter()
                .any(|t| t.padded(geometry::CROP_PAD).intersects(region))
        {
            continue;
        }
        let (l, t, r, b) = region.to_pixels(width, height);
        if r - l > geometry::MIN_CROP_SIDE && b - t > geometry::MIN_CROP_SIDE {
            return Some(candidate);
        }
    }
    None
}

/// An over-large box around `reference` (each side 2.5-4x, at least 0.25), containing it, inside the image;
/// `None` if `reference` is already too large for a coarse-to-fine trace.
pub fn coarse_box(
    reference: NormBox,
    width: u32,
    height: u32,
    decimals: i32,
    rng: &mut dyn RngCore,
) -> Option<NormBox> {
    if reference.width() > 0.4 || reference.height() > 0.4 {
        return None;
    }
    let scale = rng.random_range(2.5..4.0);
    let w = (reference.width() * scale).clamp(0.25, 1.0);
    let h = (reference.height() * scale).clamp(0.25, 1.0);
    // Place the reference box at a random position inside the coarse box.
    let x_lo = (reference.x2 - w).max(0.0);
    let x_hi = reference.x1.min(1.0 - w);
    let y_lo = (reference.y2 - h).max(0.0);
    let y_hi = reference.y1.min(1.0 - h);
    if x_lo > x_hi || y_lo > y_hi {
        return None;
    }
    let x1 = rng.random_range(x_lo..=x_hi);
    let y1 = rng.random_range(y_lo..=y_hi);
    let coarse = geometry::round_outward(
        NormBox::new(x1, y1, (x1 + w).min(1.0), (y1 + h).min(1.0)).ok()?,
        decimals,
    );
    let (l, t, r, b) = coarse.padded(geometry::CROP_PAD).to_pixels(width, height);
    (coarse.contains(reference)
        && r - l > geometry::MIN_CROP_SIDE
        && b - t > geometry::MIN_CROP_SIDE)
        .then_some(coarse)
}

/// Frames disjoint from `window`, as many as it has (at most what fits), in order; `None` if no frame is
/// left outside the window.
pub fn wrong_window(
    window: FrameWindow,
    total: usize,
    rng: &mut dyn RngCore,
) -> Option<Vec<usize>> {
    let outside: Vec<usize> = (1..=total)
        .filter(|f| *f < window.first || *f > window.last)
        .collect();
    if outside.is_empty() {
        return None;
    }
    // A contiguous run outside the window, like a plausible but wrong guess.
    let runs: Vec<Vec<usize>> = outside
        .chunk_by(|a, b| b == &(a + 1))
        .map(|run| run.to_vec())
        .collect();
    let run = &runs[rng.random_range(0..runs.len())];
    let len = window.len().min(run.len());
    let start = rng.random_range(0..=(run.len() - len));
    Some(run[start..start + len].to_vec())
}
