//! The demo's data: needle questions asking for the digit, terse synthesized traces, the compact prompt.

use std::collections::HashMap;

use anyhow::Context;
use pixel_agent::{Media, Query};
use pixel_rl::data::Task;
use pixel_traces::NormBox;
use pixel_traces::datasets::NeedleConfig;
use pixel_traces::synth::ImageMix;
use pixel_traces::trace::TracePart;
use pixel_traces::{
    NarrationRequest, NarrationStep, Narrator, SynthConfig, Synthesizer, SyntheticDataset, Trace,
    Visual,
};
use rand::{Rng, RngCore, SeedableRng};

pub fn needle_defaults() -> NeedleConfig {
    NeedleConfig {
        width: 448,
        height: 448,
        glyph_min: 36,
        glyph_max: 42,
        clutter: 40,
        decoys: 0,
        tag_noise: 30,
        num_options: 8,
        stroke_min: pixel_traces::datasets::font::STROKE_MIN,
    }
}

/// The model's view: every image (global view and crops) at 112 x 112 (16 merged tokens).
pub const VIEW: u64 = 112 * 112;

/// The smallest image the processor, the tool and the synthesizer resize to (transformers' default,
/// 56 x 56). Not [`VIEW`]: with `min_pixels == max_pixels`, `smart_resize` is not idempotent for
/// non-square images (an 84 x 112 crop, resized again, becomes 112 x 140), and the rollout resizes a crop
/// twice (the tool, then the processor) where SFT resized it an even number of times. The first runs of
/// this demo did that: after a crop the model saw 20 tokens where training had shown it 12, and wrote
/// garbage. With the lower bound here, an image already resized is left as it is.
pub const VIEW_MIN: u64 = 56 * 56;

/// The demo's system prompt. The official one (the tool block and its instructions) and the guidelines
/// after the question are ~600 constant tokens that a model trained from scratch cannot read: the demo
/// replaces them with this line and no guidelines, in SFT and in every rollout alike. The tool-call
/// format, the observations and the answer format are the official ones.
pub const SYSTEM: &str = "Zoom in with <tool_call>{\"name\": \"crop_image_normalized\", \"arguments\": {\"bbox_2d\": [x1, y1, x2, y2], \"target_image\": 1}}</tool_call>; answer in \\boxed{}.";

/// The trace's first user text without the official guidelines (see [`SYSTEM`]).
pub fn strip_guidelines(trace: &mut pixel_traces::Trace) {
    for m in &mut trace.messages {
        for part in &mut m.content {
            if let pixel_traces::trace::TracePart::Text { text, .. } = part
                && let Some(q) = text.strip_suffix(pixel_ops::protocol::GUIDELINES)
            {
                *text = q.trim_end_matches('\n').to_owned();
            }
        }
    }
}

/// Sample `index` of `seed`, asking for the digit itself: the needle dataset's multiple-choice form
/// (8 digits as options A-H, the answer a letter) would make a model trained from scratch learn a second
/// skill, mapping the digit it read to the letter of its option, that is not what the demo is about.
/// Chance is 10 %.
pub fn digit_sample(
    needle: &NeedleConfig,
    seed: u64,
    index: u64,
) -> anyhow::Result<pixel_traces::AnnotatedSample> {
    Ok(digit_question(needle.generate(seed, index)?))
}

/// A generated needle sample turned into the digit question (see [`digit_sample`]).
pub fn digit_question(s: pixel_traces::datasets::NeedleSample) -> pixel_traces::AnnotatedSample {
    let mut sample = s.sample;
    if let Some((question, _)) = sample.question.split_once("\nOptions:") {
        sample.question = question.to_owned();
    }
    sample.options.clear();
    sample.answer = s.digit.to_string();
    sample
}

/// The largest legible digit a 448 px canvas takes (a tag 1.5x the digit plus its border, placed 4 px
/// from the edges).
pub const LEGIBLE_GLYPH_MAX: u32 = 280;

/// Checks legible digit heights `(min, max)` in pixels: `7 <= min <= max <= LEGIBLE_GLYPH_MAX`.
pub fn check_legible_glyph((lo, hi): (u32, u32)) -> anyhow::Result<()> {
    anyhow::ensure!(
        (7..=hi).contains(&lo) && hi <= LEGIBLE_GLYPH_MAX,
        "legible digits {lo}-{hi} px: 7 <= MIN <= MAX <= {LEGIBLE_GLYPH_MAX}"
    );
    Ok(())
}

/// A **legible** question (`--legible-glyph`): the same question about a tag drawn so large (digits
/// `glyph` px tall on the canvas, 140-170 by default: 35-42 px in the 112 px global view, the size the
/// model reads in its crops) that the global view shows it, on the same background and clutter. A
/// direct answer can read it; the zoom the model learned for small tags (the tag's cell of the 4 x 4
/// grid, 0.45 of the canvas once padded) cuts a tag this large, and its crops show the digit at about
/// twice the size the model was taught to read: the operation path starts out worse, the question the
/// learning trap needs (docs/demo.md, "The learning trap"). The question's text is the needle's, so that
/// only the image tells the two kinds apart.
pub fn legible_sample(
    needle: &NeedleConfig,
    glyph: (u32, u32),
    seed: u64,
    index: u64,
) -> anyhow::Result<pixel_traces::AnnotatedSample> {
    use pixel_traces::datasets::draw::{self, PALETTE, Rect};
    use pixel_traces::datasets::needle::{draw_tag, tag_size};
    check_legible_glyph(glyph)?;
    let (lo, hi) = glyph;
    let (width, height) = (needle.width, needle.height);
    let mut rng = rand::rngs::StdRng::seed_from_u64(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index.rotate_left(29) ^ 0x1e61_b1e5,
    );
    let rng: &mut dyn RngCore = &mut rng;
    let mut img = draw::textured_background(width, height, 18, rng);
    draw::clutter(&mut img, needle.clutter, i64::from(width / 16), rng);
    let colour = PALETTE[rng.random_range(0..PALETTE.len())];
    let glyph_height = rng.random_range(lo..=hi);
    let (tw, th) = tag_size(glyph_height);
    anyhow::ensure!(
        tw + 8 <= width && th + 8 <= height,
        "a {glyph_height} px digit's tag ({tw} x {th}) does not fit the {width} x {height} canvas"
    );
    let x = rng.random_range(4..=i64::from(width - tw - 4));
    let y = rng.random_range(4..=i64::from(height - th - 4));
    let rect = Rect::at(x, y, i64::from(tw), i64::from(th));
    let digit = rng.random_range(0..10u8);
    draw_tag(
        &mut img,
        rect,
        glyph_height,
        digit,
        colour.rgb,
        needle.tag_noise,
        needle.stroke_min,
        rng,
    );
    let reference = NormBox::from_pixels(
        rect.x0 as u32,
        rect.y0 as u32,
        rect.x1 as u32,
        rect.y1 as u32,
        width,
        height,
    )?;
    Ok(pixel_traces::AnnotatedSample {
        id: format!("legible-{seed}-{index}"),
        question: format!(
            "What digit is written on the small tag with a {} border?",
            colour.name
        ),
        options: Vec::new(),
        answer: digit.to_string(),
        visual: Visual::Image {
            image: img,
            reference,
            cue: format!("the small tag with a {} border", colour.name),
        },
    })
}

/// Whether item `i` of a mix with `share` legible questions is legible: spread evenly (with 0.5, every
/// second one).
pub fn is_legible(i: u64, share: f64) -> bool {
    ((i + 1) as f64 * share).floor() > (i as f64 * share).floor()
}

pub fn task_of(
    sample: &pixel_traces::AnnotatedSample,
) -> anyhow::Result<(Task, pixel_traces::NormBox)> {
    let Visual::Image {
        image, reference, ..
    } = &sample.visual
    else {
        anyhow::bail!("needle samples are images");
    };
    Ok((
        Task {
            id: sample.id.clone(),
            query: Query {
                media: Media::Images(vec![image.clone()]),
                question: sample.question.clone(),
            },
            answers: vec![sample.answer.clone()],
            options: sample.options.clone(),
        },
        *reference,
    ))
}

/// The boxes the traces' calls write (and so the model learns to write).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Boxes {
    /// Decimals of the coordinates.
    pub decimals: i32,
    /// `0`: the tag's own box. `n > 0`: the cell of an `n x n` grid holding the tag's centre. With 8, the
    /// cells are the global view's 14 px patches (112 / 8), the finest place a 112 px view can say
    /// where something is; with the tool's padding of 0.1 per side the crop holds the whole tag (at most
    /// 0.08 beyond its centre on the 448 px canvas) wherever its centre lies in the cell.
    pub grid: u32,
    /// `0`: one call, on the box above. `n > 0`: a zoom in two steps ([`SynthConfig::coarse_grid`]): the
    /// cell of an `n x n` grid holding the tag's centre, then the tag's own box inside that crop, where
    /// the tag is about twice as large in the view and a box written to the same precision in the view's
    /// coordinates is half as far off on the canvas. With 4, the first box is one merged token of the
    /// global view, the class the text model's locate probe already finds.
    pub coarse_grid: u32,
    /// With [`Boxes::coarse_grid`]: `0`, the second box is the tag's own box in the first crop; `n > 0`,
    /// the cell of an `n x n` grid of the first crop holding the tag's centre ([`SynthConfig::fine_grid`]),
    /// whose crop may cut off up to [`FINE_INSET`] of the tag per side (the plate's margin, not the digit).
    pub fine_grid: u32,
}

/// The share of the tag's width (height) per side a fine cell's crop may cut off: the plate's margin
/// around the digit is about a quarter of the tag's width and a fifth of its height. At 0.25, 99 % of the
/// demo's two-step traces write the cell (18 % must hold the whole tag; 78 % at 0.18).
pub const FINE_INSET: f64 = 0.25;

impl Boxes {
    /// With [`Boxes::fine_grid`], the second box of a zoom in two steps for a tag at `inside` (in the
    /// first crop's coordinates; the crop `width` x `height` pixels): the tag's cell; `None` without a fine
    /// grid, or when that cell's crop would cut the digit (the traces then write the tag's own box).
    pub fn fine_cell(&self, inside: NormBox, width: u32, height: u32) -> Option<NormBox> {
        pixel_traces::synth::grid_cell_holding(
            inside,
            self.fine_grid,
            width,
            height,
            self.decimals,
            FINE_INSET,
        )
    }

    /// With [`Boxes::coarse_grid`], the first crop of a zoom in two steps on `tag` (cut from `image` at
    /// full resolution) and its region on the canvas; `None` for one call, or when the cell's crop does not
    /// hold the whole tag (the traces then crop once).
    pub fn coarse(
        &self,
        image: &image::RgbImage,
        tag: NormBox,
    ) -> anyhow::Result<Option<(image::RgbImage, NormBox)>> {
        let (w, h) = image.dimensions();
        match pixel_traces::synth::grid_cell_box(tag, self.coarse_grid, w, h, self.decimals) {
            Some(cell) => Ok(Some(pixel_traces::geometry::official_crop(image, cell)?)),
            None => Ok(None),
        }
    }

    /// The box a call writes to look at `tag`, rounded outward to [`Boxes::decimals`].
    pub fn written(&self, tag: NormBox) -> NormBox {
        let bx = match self.cell_of(tag) {
            None => tag,
            Some((row, col)) => {
                let n = f64::from(self.grid);
                NormBox {
                    x1: col as f64 / n,
                    y1: row as f64 / n,
                    x2: (col + 1) as f64 / n,
                    y2: (row + 1) as f64 / n,
                }
            }
        };
        pixel_traces::geometry::round_outward(bx, self.decimals)
    }

    /// `(row, column)` of the grid cell holding `tag`'s centre; `None` without a grid.
    pub fn cell_of(&self, tag: NormBox) -> Option<(usize, usize)> {
        if self.grid == 0 {
            return None;
        }
        let n = self.grid as usize;
        let at = |v: f64| ((v * n as f64).max(0.0) as usize).min(n - 1);
        Some((at((tag.y1 + tag.y2) / 2.0), at((tag.x1 + tag.x2) / 2.0)))
    }

    /// `sample` with its reference box replaced by [`Boxes::written`]: what the synthesizer then writes
    /// in its calls and crops around. (Evaluation keeps the tag's own box: a crop hits when its box holds
    /// the tag's centre.)
    pub fn on_grid(
        &self,
        mut sample: pixel_traces::AnnotatedSample,
    ) -> pixel_traces::AnnotatedSample {
        if let Visual::Image { reference, .. } = &mut sample.visual {
            *reference = self.written(*reference);
        }
        sample
    }
}

/// One sentence per step, so that the trained tokens are the call and the answer rather than prose: the
/// built-in templates (two or three sentences per step) made a 4-layer model spend its SFT budget on
/// wording and run out of new tokens before the call.
pub struct TerseNarrator;

impl Narrator for TerseNarrator {
    fn narrate(
        &self,
        request: &NarrationRequest<'_>,
        _rng: &mut dyn RngCore,
    ) -> pixel_traces::Result<String> {
        Ok(match request.step {
            NarrationStep::WholeInput => "The tag is too small to read. I will zoom in.".into(),
            NarrationStep::Missed => "The tag is not here. I will look elsewhere.".into(),
            NarrationStep::TooCoarse => "The tag is still small. I will zoom in further.".into(),
            NarrationStep::Final => format!("The digit is \\boxed{{{}}}.", request.answer),
            NarrationStep::TextOnly => format!("The answer is \\boxed{{{}}}.", request.answer),
        })
    }
}

/// The SFT traces and their images.
pub struct Traces {
    pub traces: Vec<Trace>,
    pub images: HashMap<String, image::RgbImage>,
    /// Self-correction variants whose refined crop would be under the tool's 28 px minimum (skipped).
    pub unsynthesizable: usize,
}

/// `n` traces: of every 8, one text-only question answered directly, `direct` (at most 6) needle
/// questions answered directly from the global view (a guess: the tag is illegible there), the other needle
/// questions answered by zooming in (clean, one wrong crop then the right one, or coarse-to-fine). With
/// `jitter > 0` each side of the box a call writes (and so of its crop) is moved out by up to `jitter`.
pub fn build_traces(
    needle: &NeedleConfig,
    n: usize,
    seed: u64,
    boxes: Boxes,
    direct: u64,
    jitter: f64,
) -> anyhow::Result<Traces> {
    let direct = direct.min(6);
    let synth = synthesizer(seed, boxes);
    let text_only = SyntheticDataset::by_name("text-only").context("text-only dataset")?;
    let mut out = Traces {
        traces: Vec::new(),
        images: HashMap::new(),
        unsynthesizable: 0,
    };
    for i in 0..n as u64 {
        let sample = if i % 8 == 7 {
            text_only.sample(seed + 7, i)?
        } else {
            jittered(
                boxes.on_grid(digit_sample(needle, seed + 7, i)?),
                jitter,
                boxes.decimals,
                seed ^ (i << 20) ^ 0x5f7,
            )
        };
        out.add(&synth, &sample, i, (7 - direct..7).contains(&(i % 8)))?;
    }
    Ok(out)
}

/// `n` legible questions ([`legible_sample`]) for SFT: a share `zoom` of them (spread evenly) zoom in as
/// the needle traces do, the others answer directly from the global view. Boxes moved out by up to
/// `jitter` as in [`build_traces`].
pub fn build_legible_traces(
    needle: &NeedleConfig,
    glyph: (u32, u32),
    n: usize,
    seed: u64,
    boxes: Boxes,
    zoom: f64,
    jitter: f64,
) -> anyhow::Result<Traces> {
    let synth = synthesizer(seed + 31, boxes);
    let mut out = Traces {
        traces: Vec::new(),
        images: HashMap::new(),
        unsynthesizable: 0,
    };
    for i in 0..n as u64 {
        let sample = jittered(
            boxes.on_grid(legible_sample(needle, glyph, seed + 31, i)?),
            jitter,
            boxes.decimals,
            seed ^ (i << 20) ^ 0x1e6,
        );
        out.add(&synth, &sample, i, !is_legible(i, zoom))?;
    }
    Ok(out)
}

/// `sample` with each side of its tag's box moved out by up to `jitter` (drawn from `seed`).
fn jittered(
    mut sample: pixel_traces::AnnotatedSample,
    jitter: f64,
    decimals: i32,
    seed: u64,
) -> pixel_traces::AnnotatedSample {
    if jitter > 0.0
        && let Visual::Image { reference, .. } = &mut sample.visual
    {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let margins = [(); 4].map(|_| rng.random_range(0.0..=jitter));
        *reference = crate::samples::moved_out(*reference, margins, decimals);
    }
    sample
}

/// The demo's synthesizer: terse narration, the boxes of `boxes`, observations at the model's view.
fn synthesizer(seed: u64, boxes: Boxes) -> Synthesizer<TerseNarrator> {
    // With a zoom in two steps every trace zooms in twice (a wrong cell first in a fifth of them).
    let image_mix = match boxes.coarse_grid {
        0 => ImageMix {
            clean: 0.6,
            one_wrong: 0.2,
            two_wrong: 0.0,
            coarse_to_fine: 0.2,
        },
        _ => ImageMix {
            clean: 0.0,
            one_wrong: 0.2,
            two_wrong: 0.0,
            coarse_to_fine: 0.8,
        },
    };
    Synthesizer::new(
        SynthConfig {
            seed,
            image_mix,
            box_decimals: boxes.decimals,
            observation_min_pixels: VIEW_MIN,
            observation_max_pixels: VIEW,
            // The rollouts crop originals (`CropSource::Original`), a crop of a crop included: so do the
            // coarse-to-fine traces. Cut from the 112 px view of the coarse crop, their refined crops were
            // enlargements of ~40 px (until 2026-11-27 11:40).
            refine_from_original: true,
            coarse_grid: boxes.coarse_grid,
            fine_grid: boxes.fine_grid,
            fine_inset: FINE_INSET,
            ..SynthConfig::default()
        },
        TerseNarrator,
    )
}

impl Traces {
    /// Synthesizes trace `i` of `sample` (answered directly when `direct`) into the set; a sample the
    /// synthesizer cannot make a trace of is counted and skipped.
    fn add(
        &mut self,
        synth: &Synthesizer<TerseNarrator>,
        sample: &pixel_traces::AnnotatedSample,
        i: u64,
        direct: bool,
    ) -> anyhow::Result<()> {
        let mut made = match synth.synthesize(sample, i) {
            Ok(made) => made,
            Err(e) => {
                self.unsynthesizable += 1;
                if self.unsynthesizable == 1 {
                    eprintln!("skipping traces that cannot be synthesized; first: {e}");
                }
                return Ok(());
            }
        };
        strip_guidelines(&mut made.trace);
        if direct {
            answer_directly(&mut made.trace, &sample.answer);
        }
        self.images.extend(made.images.iter().cloned());
        self.traces.push(made.trace);
        Ok(())
    }

    /// Adds `other`'s traces and images after these.
    pub fn extend(&mut self, other: Traces) {
        self.traces.extend(other.traces);
        self.images.extend(other.images);
        self.unsynthesizable += other.unsynthesizable;
    }

    /// The zoom-in traces (no text-only question, no direct answer), at most `limit`, tokenized with the
    /// demo's system line, the SFT loss on the answer after the last crop only: reading in the trace's
    /// context (`--sft-trace-reads`, and `--inspect`'s teacher-forced sweep).
    pub fn answer_examples(
        &self,
        processor: &pixel_vlm::processor::Processor,
        limit: usize,
    ) -> anyhow::Result<Vec<pixel_rl::sft::SftExample>> {
        let zooms: Vec<Trace> = self
            .traces
            .iter()
            .filter(|t| t.variant != "text_only" && t.variant != "direct")
            .take(limit)
            .cloned()
            .collect();
        let load = |name: &str| {
            self.images
                .get(name)
                .cloned()
                .ok_or(format!("no image {name}"))
        };
        let (mut examples, failed) = pixel_rl::trainer::sft::build_examples_with_system(
            processor,
            &zooms,
            pixel_rl::sft::MaskRule::Paper,
            Some(SYSTEM),
            &load,
        );
        anyhow::ensure!(
            failed.is_empty(),
            "{} zoom-in traces could not be built; first: {:?}",
            failed.len(),
            failed.first()
        );
        examples
            .iter_mut()
            .for_each(crate::samples::train_last_turn_only);
        Ok(examples)
    }
}

/// Keeps the question and replaces everything after it by one answer turn without an operation.
fn answer_directly(trace: &mut Trace, answer: &str) {
    trace.messages.truncate(1);
    trace.messages.push(pixel_traces::trace::TraceMessage {
        role: pixel_traces::official::Role::Assistant,
        content: vec![TracePart::trained(format!(
            "The digit is \\boxed{{{answer}}}."
        ))],
    });
    trace.variant = "direct".into();
}
