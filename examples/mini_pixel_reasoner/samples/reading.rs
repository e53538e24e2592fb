//! Reading through the whole model: the warm-up's reading rows (a crop's observation turn, then the
//! answer), also SFT's reading examples.

use pixel_rl::sft::{MaskRule, SftExample, build_example_with_system};
use pixel_traces::official::Role;
use pixel_traces::trace::{TraceMessage, TracePart};
use pixel_vlm::processor::Processor;

use super::{clean_synthesizer, train_last_turn_only};
use crate::data::{Boxes, SYSTEM, strip_guidelines};

/// Reading through the whole model, on the last warm-up steps: the last two turns of a crop trace alone (the
/// observation with the warm-up's crop around the tag, then `The digit is \boxed{d}.`), the SFT loss on
/// the answer.
///
/// What it stands in for: a real Qwen2.5-VL reads text in images through its language model (OCR
/// pretraining). The tower's read head trains the tower only; the text model then had to learn to read in
/// SFT, from one answer token per trace. The observation text states the size of `crop` as the processor
/// fits it, as the tool's does.
pub struct Reading {
    pub processor: Processor,
    /// How many samples of each warm-up batch also give a reading example (a reading row costs more than
    /// the tower's read head: ~90 tokens through the text model).
    pub per_batch: usize,
    /// Steps (the last ones of the warm-up, when the crops have their full jitter and the tower reads
    /// them) that train it.
    pub steps: usize,
    /// Read in the trace's context: the whole clean trace (global view, question, the call that asks for
    /// this crop, the crop, the answer), the loss on the answer only, instead of the crop's observation
    /// turn alone. Alone, a warmed model read 79.7 % of held-out jittered crops but 37.5 % of the same
    /// answers in traces, and SFT did not bring it back (31-55 % alone, 54-58 % in traces): in a trace
    /// the answer also sees the global view, whose tokens look like the crop's.
    pub in_context: bool,
    /// Some reading rows show a legible canvas whole instead of a crop ([`LegibleReads`]).
    pub legible: Option<LegibleReads>,
    /// Train only the tokens of the answer that write the digit (all of `The digit is \boxed{d}.`
    /// otherwise) until the grounding steps begin, the whole answer from then on: `--read-digit-only`
    /// ([`BatchSpec::reads_digit_only`]).
    pub digit_only: bool,
    /// Weight of an extra loss on the digit's tokens of the reading rows, beside the whole answer's
    /// (0: none): `--read-digit-weight` ([`Batch::reads_digit`]). In the whole answer's mean the digit is
    /// one token of ~12, and the others are the same in every row.
    pub digit_weight: f32,
}

/// Reading rows that show a legible canvas ([`crate::data::legible_sample`]: the digit large enough to
/// read in the global view) whole, as an observation turn, then the answer: a pretrained model reads large
/// text anywhere in an image, and a direct answer to a legible question needs it.
#[derive(Debug, Clone, Copy)]
pub struct LegibleReads {
    /// Digit heights on the canvas.
    pub glyph: (u32, u32),
    /// One reading row in this many (the last of each run of `every`) is a legible canvas.
    pub every: usize,
}

impl Reading {
    /// The whole clean trace of `sample` whose call asks for `crop_box` (the warm-up's jittered crop),
    /// the loss on the answer after the crop only; `None` when the crop cannot be synthesized.
    pub(super) fn in_context(
        &self,
        sample: &pixel_traces::AnnotatedSample,
        crop_box: pixel_traces::NormBox,
        decimals: i32,
        index: u64,
    ) -> anyhow::Result<Option<SftExample>> {
        let mut sample = sample.clone();
        if let pixel_traces::Visual::Image { reference, .. } = &mut sample.visual {
            *reference = crop_box;
        }
        let boxes = Boxes {
            decimals,
            grid: 0,
            coarse_grid: 0,
            fine_grid: 0,
        };
        let Ok(mut made) = clean_synthesizer(boxes).synthesize(&sample, index) else {
            return Ok(None);
        };
        strip_guidelines(&mut made.trace);
        let images: std::collections::HashMap<_, _> = made.images.into_iter().collect();
        let load = |name: &str| images.get(name).cloned().ok_or(format!("no image {name}"));
        let mut whole = build_example_with_system(
            &self.processor,
            &made.trace,
            MaskRule::Paper,
            Some(SYSTEM),
            &load,
        )?;
        train_last_turn_only(&mut whole);
        Ok(Some(whole))
    }

    /// The observation turn showing `crop` (a crop, or a legible canvas whole) and the answer `digit`
    /// after it.
    pub fn example(
        &self,
        crop: &image::RgbImage,
        digit: u8,
        id: String,
    ) -> anyhow::Result<SftExample> {
        self.example_masked(crop, digit, id, false)
    }

    /// [`Reading::example`], with `digit_only` its loss on the tokens that write the digit only.
    pub fn example_masked(
        &self,
        crop: &image::RgbImage,
        digit: u8,
        id: String,
        digit_only: bool,
    ) -> anyhow::Result<SftExample> {
        let seen = self.processor.image_processor.fit(crop)?.into_owned();
        let trace = pixel_traces::Trace {
            id,
            tools: pixel_traces::trace::PIXEL_REASONER_TOOLS.to_string(),
            variant: "read".into(),
            answer: Some(digit.to_string()),
            messages: vec![
                TraceMessage {
                    role: Role::User,
                    content: vec![
                        TracePart::text(pixel_ops::observation::crop_text(
                            seen.width(),
                            seen.height(),
                        )),
                        TracePart::Image {
                            image: "crop".into(),
                        },
                    ],
                },
                TraceMessage {
                    role: Role::Assistant,
                    content: vec![TracePart::trained(format!(
                        "The digit is \\boxed{{{digit}}}."
                    ))],
                },
            ],
        };
        let load = |_: &str| Ok(seen.clone());
        let mut e = build_example_with_system(
            &self.processor,
            &trace,
            MaskRule::Paper,
            Some(SYSTEM),
            &load,
        )?;
        if digit_only {
            // The loss on the tokens that write the digit only: the other tokens of the answer are the same
            // in every row and soon predicted, and a mean over them gave the digit a tenth of the row's loss.
            let only = self.digit_tokens_only(&e, digit);
            if only.loss_mask.iter().any(|&k| k) {
                e = only;
            }
        }
        Ok(e)
    }

    /// `e` with its loss on the trained tokens that write `digit` only (no token trained when none does).
    pub fn digit_tokens_only(&self, e: &SftExample, digit: u8) -> SftExample {
        let d = digit.to_string();
        let keep: Vec<bool> = e
            .token_ids
            .iter()
            .zip(&e.loss_mask)
            .map(|(&t, &m)| {
                m && self
                    .processor
                    .tokenizer
                    .decode(&[t], false)
                    .is_ok_and(|s| s.contains(&d))
            })
            .collect();
        SftExample {
            loss_mask: keep,
            ..e.clone()
        }
    }
}
