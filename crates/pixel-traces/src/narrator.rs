//! Where the analysis text of a synthesized trace comes from: built-in templates or a teacher model.

use image::RgbImage;
use rand::{Rng, RngCore};

use crate::Result;

/// Which moment of the trace the text is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NarrationStep {
    /// First look at the whole image / video, before any operation.
    WholeInput,
    /// After an operation that missed the cue (a deliberately wrong crop or frame choice).
    Missed,
    /// After a crop that contains the cue but is too large to read it.
    TooCoarse,
    /// After the operation that shows the cue: analyse it and reason towards the answer.
    Final,
    /// A text-only question: reason to the answer.
    TextOnly,
}

/// The input kind of the sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modality {
    /// One image.
    Image,
    /// A video.
    Video,
    /// No visual input.
    Text,
}

/// What a narrator is asked to write.
#[derive(Debug, Clone)]
pub struct NarrationRequest<'a> {
    /// The moment in the trace.
    pub step: NarrationStep,
    /// Image, video or text.
    pub modality: Modality,
    /// The question (with options).
    pub question: &'a str,
    /// The reference answer.
    pub answer: &'a str,
    /// The visual cue (empty for text-only).
    pub cue: &'a str,
    /// The images the teacher may look at: the input, then the latest observation.
    pub images: Vec<&'a RgbImage>,
}

/// Writes the analysis text of one trace step.
///
/// Implementations must not write the final `\boxed{}` (the synthesizer adds it) nor the operation call.
pub trait Narrator {
    /// The text for `request`; `rng` is the trace's seeded generator (template narrators draw from it).
    ///
    /// # Errors
    /// Narrator-specific (a teacher's HTTP failure, for example).
    fn narrate(&self, request: &NarrationRequest<'_>, rng: &mut dyn RngCore) -> Result<String>;
}

/// Built-in templates, several per step, chosen by the trace's seeded generator.
#[derive(Debug, Clone, Copy, Default)]
pub struct TemplateNarrator;

const WHOLE_IMAGE: &[&str] = &[
    "The image shows a busy, cluttered scene. The question asks about {cue}, but at this resolution that region is only a few pixels across and I cannot read it reliably.",
    "Looking at the whole image first: there are many shapes and textures, and the region with {cue} is small compared with the rest of the picture. Its details are too fine to make out from this view.",
    "To answer this I need to read {cue}. I can roughly locate that region, but it is tiny and blurred at the current scale, so any answer from this view would be a guess.",
    "At first glance the picture is full of distracting patterns. The part of the image that matters, {cue}, takes up only a small area, and the detail the question depends on is not legible here.",
];

const WHOLE_VIDEO: &[&str] = &[
    "The video shows a short scene over 16 frames. The question depends on {cue}, which appears only briefly, so the sampled overview is not enough to be sure.",
    "Watching the whole clip, most frames look alike. The relevant moment is {cue}, and at this temporal and spatial resolution I cannot read it clearly.",
    "The question concerns {cue}. The overview of the clip blends neighbouring frames together, so the detail I need is hard to see.",
];

const MISSED_IMAGE: &[&str] = &[
    "This region does not contain {cue}; it only shows background clutter. I need to look at a different part of the image.",
    "The zoomed view shows nothing relevant: there is no sign of {cue} here. Let me re-examine where it actually is.",
    "Hmm, this crop missed the target. I cannot find {cue} in it, so I will try another region.",
];

const MISSED_VIDEO: &[&str] = &[
    "These frames do not show {cue}; the scene there is ordinary. I should look at other frames.",
    "None of the selected frames contain {cue}. The relevant moment must be elsewhere in the clip.",
];

const COARSE: &[&str] = &[
    "The crop contains {cue}, but that region is still small in this view. I will zoom in further on it.",
    "I can see {cue} in this region now, though not yet sharply enough to read the detail. A tighter crop should help.",
    "This view covers the right area, but it is too wide: {cue} occupies only a small part of it. Let me narrow down.",
];

const FINAL_IMAGE: &[&str] = &[
    "Now {cue} can be seen clearly. Reading the detail carefully and comparing it with the question, the answer is {answer}.",
    "In the zoomed view the details of {cue} are legible. Checking them against the question, they match {answer}.",
    "With the closer look, the detail of {cue} can be read without doubt, which settles the question: {answer}.",
];

const FINAL_VIDEO: &[&str] = &[
    "In these frames {cue} can be seen clearly. Reading the detail carefully, the answer is {answer}.",
    "The selected frames show {cue} at full resolution, and the detail matches {answer}.",
];

const TEXT_ONLY: &[&str] = &[
    "This question can be answered from the text alone, without looking closer at any image. Working it out step by step gives {answer}.",
    "No visual inspection is needed here. Reasoning through the numbers step by step, the result is {answer}.",
];

fn fill(template: &str, request: &NarrationRequest<'_>) -> String {
    template
        .replace("{cue}", request.cue)
        .replace("{answer}", request.answer)
}

impl Narrator for TemplateNarrator {
    fn narrate(&self, request: &NarrationRequest<'_>, rng: &mut dyn RngCore) -> Result<String> {
        let video = request.modality == Modality::Video;
        let pool = match request.step {
            NarrationStep::WholeInput if video => WHOLE_VIDEO,
            NarrationStep::WholeInput => WHOLE_IMAGE,
            NarrationStep::Missed if video => MISSED_VIDEO,
            NarrationStep::Missed => MISSED_IMAGE,
            NarrationStep::TooCoarse => COARSE,
            NarrationStep::Final if video => FINAL_VIDEO,
            NarrationStep::Final => FINAL_IMAGE,
            NarrationStep::TextOnly => TEXT_ONLY,
        };
        let template = pool[rng.random_range(0..pool.len())];
        Ok(fill(template, request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn templates_fill_every_placeholder_and_vary_with_the_seed() {
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..40 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            for step in [
                NarrationStep::WholeInput,
                NarrationStep::Missed,
                NarrationStep::TooCoarse,
                NarrationStep::Final,
                NarrationStep::TextOnly,
            ] {
                let req = NarrationRequest {
                    step,
                    modality: Modality::Image,
                    question: "q",
                    answer: "B",
                    cue: "the red tag",
                    images: Vec::new(),
                };
                let text = TemplateNarrator.narrate(&req, &mut rng).unwrap();
                assert!(!text.contains('{'), "{text}");
                assert!(!text.contains("\\boxed"), "{text}");
                if step == NarrationStep::WholeInput {
                    seen.insert(text);
                }
            }
        }
        assert!(seen.len() >= 3, "templates do not vary: {seen:?}");
    }
}
