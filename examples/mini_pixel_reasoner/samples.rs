//! The warm-up's samples: fresh needle canvases, the crops around their tags, and the examples of the
//! objectives through the whole model (grounding, reading), drawn on a second thread while the warm-up
//! trains.

use anyhow::Context;
use pixel_rl::sft::{MaskRule, SftExample, build_example_with_system};
use pixel_traces::datasets::NeedleConfig;
use pixel_traces::geometry::{official_crop, round_outward};
use pixel_traces::synth::ImageMix;
use pixel_traces::{SynthConfig, Synthesizer};
use pixel_vlm::processor::Processor;
use rand::SeedableRng;

use crate::data::{Boxes, SYSTEM, TerseNarrator, VIEW, VIEW_MIN, digit_question, strip_guidelines};

mod reading;
pub use reading::{LegibleReads, Reading};

/// A batch of fresh needle samples: the global views, the crops around the tags, digits and tag cells.
pub struct Batch {
    /// The global views of the first [`BatchSpec::globals`] samples.
    pub globals: Vec<image::RgbImage>,
    pub crops: Vec<image::RgbImage>,
    pub digits: Vec<i64>,
    /// Index of the merged token of the global view holding the tag's centre (row-major), for each of
    /// `globals`.
    pub cells: Vec<i64>,
    /// First turns of clean crop traces on the same canvases (empty without [`Grounding`]).
    pub traces: Vec<SftExample>,
    /// The same traces whole, the loss on the answer after the crop only (empty without
    /// [`Grounding::read`] or [`Grounding::read_probe`]).
    pub answers: Vec<SftExample>,
    /// The digit of each of `answers`.
    pub answer_digits: Vec<i64>,
    /// The tag's cell for each of `traces`.
    pub trace_cells: Vec<i64>,
    /// For each of `traces`, the indices of the tokens that write its calls' boxes (the digits and
    /// separators between `[` and `]`).
    pub trace_boxes: Vec<Vec<usize>>,
    /// For each of `traces`, the cell each of `trace_boxes` names: the tag's cell in the image the call
    /// crops (in a zoom in two steps the second call's box is in the coordinates of the first crop).
    pub trace_box_cells: Vec<Vec<i64>>,
    /// With [`Grounding::box_values`], for each of `traces`, the four coordinates of its call's box as
    /// bins (`value * 10^decimals`).
    pub trace_box_values: Vec<[i64; 4]>,
    /// Reading through the whole model ([`Reading`]): a crop's observation turn and the answer after it.
    pub reads: Vec<SftExample>,
    /// With [`Reading::digit_weight`] > 0, `reads` again with the loss on the digit's tokens only, row for
    /// row (the same tokens: the forward of `reads` serves both).
    pub reads_digit: Vec<SftExample>,
    /// The weight of `reads_digit`'s loss beside `reads`' ([`Reading::digit_weight`]).
    pub reads_digit_weight: f32,
}

/// `v` cut in two: the first `v.len() / 2` items, then the rest.
fn halve<T>(mut v: Vec<T>) -> [Vec<T>; 2] {
    let rest = v.split_off(v.len() / 2);
    [v, rest]
}

impl Batch {
    /// The batch cut in two for two threads ([`crate::warmup::train`]): each objective's examples in half
    /// (the second half the larger when their count is odd). The objectives are independent, so a half
    /// need not hold whole samples: the tower's crops of one half and its grounding traces may come from
    /// different canvases.
    pub fn halves(self) -> [Batch; 2] {
        let [globals_a, globals_b] = halve(self.globals);
        let [crops_a, crops_b] = halve(self.crops);
        let [digits_a, digits_b] = halve(self.digits);
        let [cells_a, cells_b] = halve(self.cells);
        let [traces_a, traces_b] = halve(self.traces);
        let [answers_a, answers_b] = halve(self.answers);
        let [answer_digits_a, answer_digits_b] = halve(self.answer_digits);
        let [trace_cells_a, trace_cells_b] = halve(self.trace_cells);
        let [trace_boxes_a, trace_boxes_b] = halve(self.trace_boxes);
        let [trace_box_cells_a, trace_box_cells_b] = halve(self.trace_box_cells);
        let [trace_box_values_a, trace_box_values_b] = halve(self.trace_box_values);
        let [reads_a, reads_b] = halve(self.reads);
        let [reads_digit_a, reads_digit_b] = halve(self.reads_digit);
        [
            Batch {
                globals: globals_a,
                crops: crops_a,
                digits: digits_a,
                cells: cells_a,
                traces: traces_a,
                answers: answers_a,
                answer_digits: answer_digits_a,
                trace_cells: trace_cells_a,
                trace_boxes: trace_boxes_a,
                trace_box_cells: trace_box_cells_a,
                trace_box_values: trace_box_values_a,
                reads: reads_a,
                reads_digit: reads_digit_a,
                reads_digit_weight: self.reads_digit_weight,
            },
            Batch {
                globals: globals_b,
                crops: crops_b,
                digits: digits_b,
                cells: cells_b,
                traces: traces_b,
                answers: answers_b,
                answer_digits: answer_digits_b,
                trace_cells: trace_cells_b,
                trace_boxes: trace_boxes_b,
                trace_box_cells: trace_box_cells_b,
                trace_box_values: trace_box_values_b,
                reads: reads_b,
                reads_digit: reads_digit_b,
                reads_digit_weight: self.reads_digit_weight,
            },
        ]
    }
}

/// The grounding objective's settings: the processor that tokenizes the traces and the boxes they write.
pub struct Grounding {
    pub processor: Processor,
    pub boxes: Boxes,
    /// Steps (the last ones of the warm-up) that train it; the earlier steps train the tower's heads only.
    /// Last, not first: with grounding on the first 400 of 800 steps, the tower training on alone after
    /// them, the text model's locate probe ended at 23 % (39 % after 250 steps with grounding throughout):
    /// the features it had learned to read had moved.
    pub steps: usize,
    /// Samples of each batch (the first ones) that also give a grounding example. A row of a zoom in two
    /// steps holds about twice the tokens of one call (the first crop and the second call); 12 rows instead
    /// of 16 (and 500 steps instead of 600) saved ~100 s of an 851 s warm-up and left the warmed model's
    /// crops on the tag 22 % of the time against 63-76 % (one run).
    pub rows: usize,
    /// Also train reading through the text model: each grounding step adds the whole clean traces of the
    /// same canvases with the loss on the answer after the crop only (the first turn is trained by the
    /// first-turn examples), so the text model learns to read the digit from the crop's tokens.
    pub read: bool,
    /// Also train a read probe on the text model: the digit from its final hidden states at the crop's
    /// tokens in the whole clean traces (no loss on their text unless [`Grounding::read`]), so the text
    /// model carries the digit where the answer can attend to it.
    pub read_probe: bool,
    /// Also train a box probe at the tokens that write the call's box: the box's four exact values
    /// (not only the tag's cell), so the hidden states that write the box hold it.
    pub box_values: bool,
    /// Train the whole clean trace (the last crop and the answer after it too), not its first turns up to
    /// the last call: the answer then reads the digit in the trace's context, where the global view and
    /// the first crop are in sight as well (the SFT model read 77-86 % of crops alone, teacher-forced, and
    /// 42-58 % of the answers of synthesized traces). Measured (`--grounding-whole`, one run per seed):
    /// SFT / GRPO 37 / 37.5 % (seed 0; 42 / 40 % without) and 32 / 30 % (seed 1): not the default.
    pub whole: bool,
}

impl Grounding {
    /// The first turn of a clean crop trace of `sample` (question, narration, call), tokenized, and with
    /// [`Grounding::read`] the whole trace with the loss on its last turn (the answer) only.
    fn clean_trace(
        &self,
        sample: &pixel_traces::AnnotatedSample,
        index: u64,
    ) -> anyhow::Result<Option<Grounded>> {
        // A tag whose crop would be under the tool's minimum cannot be synthesized: no grounding example.
        let Ok(mut made) = clean_synthesizer(self.boxes).synthesize(sample, index) else {
            return Ok(None);
        };
        // A zoom in two steps writes two calls: the first turns up to the second call.
        let calls = match made.variant {
            pixel_traces::Variant::CoarseToFine => 2,
            _ => 1,
        };
        strip_guidelines(&mut made.trace);
        let images: std::collections::HashMap<_, _> = made.images.into_iter().collect();
        let load = |name: &str| images.get(name).cloned().ok_or(format!("no image {name}"));
        let build = |trace: &pixel_traces::Trace| {
            build_example_with_system(&self.processor, trace, MaskRule::Paper, Some(SYSTEM), &load)
        };
        let answer = if self.read || self.read_probe {
            let mut whole = build(&made.trace)?;
            train_last_turn_only(&mut whole);
            if !self.read {
                whole.loss_mask.iter_mut().for_each(|m| *m = false);
            }
            Some(whole)
        } else {
            None
        };
        // The first turn only (question, narration, call): with whole traces (crop and answer too) the
        // text model's locate probe went higher (55-75 % against 38 %) but the SFT model's calls were worse
        // (28-52 % malformed, first crops holding the tag 10-18 % against 0 % and 64 %; one run each).
        // With [`Grounding::whole`] the whole trace, every assistant turn trained (the answer after the
        // last crop too: reading in the trace's context).
        if !self.whole {
            made.trace.messages.truncate(2 * calls);
        }
        let first = build(&made.trace)?;
        let boxed = box_tokens(&self.processor, &first)?;
        // `[x1, y1, x2, y2]`: at least the four numbers and three commas.
        anyhow::ensure!(
            boxed.len() == calls && boxed.iter().all(|b| b.len() >= 7),
            "a grounding example's {calls} calls write their boxes in {:?} tokens",
            boxed.iter().map(Vec::len).collect::<Vec<_>>()
        );
        Ok(Some((first, boxed, answer)))
    }
}

/// A synthesizer of the traces without a wrong crop that `boxes` make: one call on the sample's reference
/// box, or with [`Boxes::coarse_grid`] the reference's cell, then the reference inside that crop.
fn clean_synthesizer(boxes: Boxes) -> Synthesizer<TerseNarrator> {
    let two_step = boxes.coarse_grid > 0;
    Synthesizer::new(
        SynthConfig {
            image_mix: ImageMix {
                clean: f64::from(u8::from(!two_step)),
                one_wrong: 0.0,
                two_wrong: 0.0,
                coarse_to_fine: f64::from(u8::from(two_step)),
            },
            box_decimals: boxes.decimals,
            observation_min_pixels: VIEW_MIN,
            observation_max_pixels: VIEW,
            refine_from_original: true,
            coarse_grid: boxes.coarse_grid,
            fine_grid: boxes.fine_grid,
            fine_inset: crate::data::FINE_INSET,
            ..SynthConfig::default()
        },
        TerseNarrator,
    )
}

/// For each box the trained tokens write, the indices of its tokens: after a trained token holding `[`,
/// up to the one holding `]` (excluded). Empty without a box.
fn box_tokens(processor: &Processor, example: &SftExample) -> anyhow::Result<Vec<Vec<usize>>> {
    let mut boxes = Vec::new();
    let mut inside = None;
    for (i, (&id, &trained)) in example.token_ids.iter().zip(&example.loss_mask).enumerate() {
        if !trained {
            continue;
        }
        let text = processor.tokenizer.decode(&[id], false)?;
        match inside {
            None if text.contains('[') => inside = Some(Vec::new()),
            Some(ref mut v) if text.contains(']') => {
                boxes.push(std::mem::take(v));
                inside = None;
            }
            Some(ref mut v) => v.push(i),
            None => {}
        }
    }
    Ok(boxes)
}

/// A grounding example: the first turns up to the last call, the indices of each call's box tokens
/// ([`box_tokens`]), and with [`Grounding::read`] or [`Grounding::read_probe`] the whole trace.
type Grounded = (SftExample, Vec<Vec<usize>>, Option<SftExample>);

/// Keeps the loss on the last run of trained tokens only (the last assistant turn).
pub fn train_last_turn_only(example: &mut SftExample) {
    let end = example
        .loss_mask
        .iter()
        .rposition(|&m| m)
        .map_or(0, |i| i + 1);
    let start = example.loss_mask[..end]
        .iter()
        .rposition(|&m| !m)
        .map_or(0, |i| i + 1);
    for (i, m) in example.loss_mask.iter_mut().enumerate() {
        *m = *m && i >= start;
    }
}

/// The index (row-major) of the cell of a `(rows, columns)` grid holding the point `(x, y)`.
fn cell_index(x: f64, y: f64, (rows, cols): (usize, usize)) -> i64 {
    let col = ((x * cols as f64).max(0.0) as usize).min(cols - 1);
    let row = ((y * rows as f64).max(0.0) as usize).min(rows - 1);
    (row * cols + col) as i64
}

/// How the warm-up's crops are moved around the tag's box: each side moved out by up to `out`
/// (normalized, of the image the box is written in) and, with `cut > 0`, moved *in* by up to `cut` of the
/// tag's width (height), so some crops cut off the tag's edge as a trained model's boxes do.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Jitter {
    /// Largest margin added to a side.
    pub out: f64,
    /// Largest share of the tag's width (left and right sides) or height (top and bottom) a side moves in.
    pub cut: f64,
}

impl Jitter {
    /// Sides moved out by up to `out`, never in.
    pub fn out(out: f64) -> Self {
        Self { out, cut: 0.0 }
    }

    /// Both bounds times `f` (the warm-up's curriculum).
    pub fn scaled(self, f: f64) -> Self {
        Self {
            out: self.out * f,
            cut: self.cut * f,
        }
    }

    /// The four margins (left, top, right, bottom; negative moves a side in) for a tag of `width` and
    /// `height`. Without a cut the draws are the ones of the moved-out-only jitter before it existed.
    fn margins(self, rng: &mut impl rand::Rng, width: f64, height: f64) -> [f64; 4] {
        let sizes = [width, height, width, height];
        sizes.map(|size| {
            let inward = (self.cut * size).max(0.0);
            match (self.out > 0.0, inward > 0.0) {
                (_, true) => rng.random_range(-inward..=self.out.max(0.0)),
                (true, false) => rng.random_range(0.0..=self.out),
                (false, false) => 0.0,
            }
        })
    }
}

/// `tag` with each side moved out by its margin (left, top, right, bottom), clamped to the image and
/// rounded outward to `decimals` places.
pub fn moved_out(
    tag: pixel_traces::NormBox,
    margins: [f64; 4],
    decimals: i32,
) -> pixel_traces::NormBox {
    round_outward(
        pixel_traces::NormBox {
            x1: (tag.x1 - margins[0]).max(0.0),
            y1: (tag.y1 - margins[1]).max(0.0),
            x2: (tag.x2 + margins[2]).min(1.0),
            y2: (tag.y2 + margins[3]).min(1.0),
        },
        decimals,
    )
}

/// What a warm-up draws for every step ([`crate::warmup::train`]): the data, the box format and grid, the
/// examples through the whole model beside the crops, and the crops' jitter.
pub struct Draws {
    pub needle: NeedleConfig,
    pub boxes: Boxes,
    /// The grid of the global view's merged tokens (the tags' cells are indexed in it).
    pub grid: (usize, usize),
    /// Grounding examples, in the last `Grounding::steps` steps.
    pub grounding: Option<Grounding>,
    /// Reading examples, in the last `Reading::steps` steps.
    pub reading: Option<Reading>,
    /// The crops' jitter at its full size (the warm-up reaches it half-way).
    pub jitter: Jitter,
}

impl Draws {
    /// The spec of step `step` of `steps`, the warm-up's curriculum: grounding and reading examples only in
    /// their last `steps` steps; exact crops first (the tower learns to read one geometry within a few
    /// hundred steps), the full jitter from half-way (at the full jitter from the first step the tower's
    /// read loss was still at chance after 400 steps); with grid boxes the tag anywhere in a call's crop
    /// from half-way too.
    pub fn at_step(&self, step: usize, steps: usize) -> BatchSpec<'_> {
        BatchSpec {
            grounding: self.grounding.as_ref().filter(|g| step + g.steps >= steps),
            reads: self
                .reading
                .as_ref()
                .filter(|r| step + r.steps >= steps)
                .map_or(0, |r| r.per_batch),
            jitter: self
                .jitter
                .scaled((2.0 * step as f64 / steps.max(1) as f64).min(1.0)),
            around_written: 2 * step >= steps,
            reads_digit_only: self.reading.as_ref().is_some_and(|r| r.digit_only)
                && self
                    .grounding
                    .as_ref()
                    .is_none_or(|g| step + g.steps < steps),
            ..self.held_out(0)
        }
    }

    /// The spec of a held-out batch of `n`: every sample with its reading example, the crops around the box
    /// a call writes and at the full jitter.
    pub fn held_out(&self, n: usize) -> BatchSpec<'_> {
        BatchSpec {
            needle: &self.needle,
            boxes: self.boxes,
            grid: self.grid,
            grounding: self.grounding.as_ref(),
            reading: self.reading.as_ref(),
            reads: n,
            jitter: self.jitter,
            around_written: true,
            // Without grounding steps the answer's other tokens are never trained: measured on the digit's.
            reads_digit_only: self.reading.as_ref().is_some_and(|r| r.digit_only)
                && self.grounding.is_none(),
            globals: usize::MAX,
        }
    }
}

/// How long and how fast a warm-up trains, and the seed its samples are drawn from.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub steps: usize,
    /// Samples per step (each a crop for the tower's read head).
    pub batch: usize,
    /// Of each step's samples, how many also give their global view to the tower's locate head (at most
    /// `batch`; the plan's default: 16 of 32). The locate head finds the tag's token 99-100 % of the time
    /// within a few hundred steps while the read head keeps learning; 24 samples with 8 global views read
    /// no better than 16 with 16 (one run, docs/demo.md, "What limits reading").
    pub globals: usize,
    /// The peak learning rate (cosine decay to a tenth).
    pub lr: f64,
    pub seed: u64,
}

/// What a batch of fresh samples is drawn with ([`BatchSpec::draw`]): the data, the crops, and which
/// examples through the whole model each sample also gives.
#[derive(Clone, Copy)]
pub struct BatchSpec<'a> {
    pub needle: &'a NeedleConfig,
    pub boxes: Boxes,
    /// The grid of the global view's merged tokens (the tags' cells are indexed in it).
    pub grid: (usize, usize),
    /// Grounding examples (clean crop traces' first turns) of the first `Grounding::rows` samples.
    pub grounding: Option<&'a Grounding>,
    /// Reading examples of the first `reads` samples.
    pub reading: Option<&'a Reading>,
    pub reads: usize,
    /// How far the crops' boxes move out (and in) from the box they are around.
    pub jitter: Jitter,
    /// The crops around the box a call writes ([`Boxes::written`]) rather than around the tag's own box.
    pub around_written: bool,
    /// The reading examples' loss on the digit's tokens only ([`Reading::digit_only`]).
    pub reads_digit_only: bool,
    /// Global views (and their tags' cells) of the first `globals` samples only: the tower's locate head
    /// needs fewer than its read head ([`Schedule::globals`]).
    pub globals: usize,
}

impl BatchSpec<'_> {
    /// `n` fresh samples of `seed` from `first` on: canvases, crops around the tags, digits, the tags'
    /// cells in the grid, and the examples through the whole model the spec asks for.
    pub fn draw(&self, seed: u64, first: u64, n: usize) -> anyhow::Result<Batch> {
        let BatchSpec {
            needle,
            boxes,
            grid,
            grounding,
            reading,
            reads,
            jitter,
            around_written,
            reads_digit_only,
            globals,
        } = *self;
        let mut b = Batch {
            globals: Vec::new(),
            crops: Vec::new(),
            digits: Vec::new(),
            cells: Vec::new(),
            traces: Vec::new(),
            answers: Vec::new(),
            answer_digits: Vec::new(),
            trace_cells: Vec::new(),
            trace_boxes: Vec::new(),
            trace_box_cells: Vec::new(),
            trace_box_values: Vec::new(),
            reads: Vec::new(),
            reads_digit: Vec::new(),
            reads_digit_weight: reading.map_or(0.0, |r| r.digit_weight),
        };
        let mut rng =
            rand::rngs::StdRng::seed_from_u64(seed ^ first.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        for i in 0..n as u64 {
            let s = needle.generate(seed, first + i)?;
            let digit = s.digit;
            let sample = digit_question(s);
            let grounded = match grounding {
                Some(g) if (i as usize) < g.rows => {
                    g.clean_trace(&boxes.on_grid(sample.clone()), first + i)?
                }
                _ => None,
            };
            let pixel_traces::Visual::Image {
                image, reference, ..
            } = &sample.visual
            else {
                anyhow::bail!("needle samples are images");
            };
            // The crop a call makes around the tag: its box moved out by up to `jitter` on each side (so
            // the tag is off-centre and of varied size, as in the crops a trained model's calls make) and
            // rounded outward as calls write boxes. Trained on the synthesizer's crops only (jitter 0), the
            // whole model read 41 % of held-out exact crops and 6 % of crops moved out by 0-0.05 per side:
            // the tower had learned one geometry.
            // With a zoom in two steps: the cell's crop (cut at full resolution, as the rollouts cut it), the
            // tag in that crop's coordinates, and the box the second call writes there (the tag's, or with a
            // fine grid its cell).
            let coarse = boxes
                .coarse(image, *reference)?
                .map(|(coarse_crop, region)| {
                    let inside = reference.relative_to(region);
                    let (w, h) = coarse_crop.dimensions();
                    let target = boxes.fine_cell(inside, w, h).unwrap_or(inside);
                    (coarse_crop, inside, target)
                });
            // The cut is a share of the size of the box the crop is around, in the image it is written in.
            let (width, height) = match &coarse {
                Some((_, _, target)) => (target.width(), target.height()),
                None => (reference.width(), reference.height()),
            };
            let margins = jitter.margins(&mut rng, width, height);
            // Around the box a call writes ([`Boxes::written`]: with a grid, the tag anywhere in its cell), or
            // early in the warm-up around the tag's own box (the tag centred: the tower learns to read first).
            let around = match around_written {
                true => boxes.written(*reference),
                false => *reference,
            };
            let crop_box = moved_out(around, margins, boxes.decimals);
            let (cx, cy) = (
                (reference.x1 + reference.x2) / 2.0,
                (reference.y1 + reference.y2) / 2.0,
            );
            // With a zoom in two steps the crop read is a crop of the tag's cell's crop, its box the second
            // call's moved out by the margins; the tag's cell in that crop is what the second call's box names.
            let (crop, fine_cell) = match coarse {
                Some((coarse_crop, inside, target)) => {
                    let fine = moved_out(target, margins, boxes.decimals);
                    let cell = cell_index(
                        (inside.x1 + inside.x2) / 2.0,
                        (inside.y1 + inside.y2) / 2.0,
                        (4, 4),
                    );
                    (official_crop(&coarse_crop, fine)?.0, Some(cell))
                }
                None => (official_crop(image, crop_box)?.0, None),
            };
            let (gh, gw) = grid;
            let col = ((cx * gw as f64) as usize).min(gw - 1);
            let row = ((cy * gh as f64) as usize).min(gh - 1);
            if let Some(r) = reading.filter(|_| (i as usize) < reads) {
                let legible = r
                    .legible
                    .filter(|l| l.every > 0 && (i as usize) % l.every == l.every - 1);
                let (example, read_digit) = match (legible, r.in_context) {
                    (Some(l), _) => {
                        // The legible canvas of the same index, drawn from a seed of its own.
                        let s =
                            crate::data::legible_sample(needle, l.glyph, seed ^ 0x1e6, first + i)?;
                        let pixel_traces::Visual::Image { image, .. } = &s.visual else {
                            anyhow::bail!("legible samples are images");
                        };
                        let digit: u8 = s.answer.parse()?;
                        (
                            Some(r.example(image, digit, format!("read-{}", s.id))?),
                            digit,
                        )
                    }
                    (None, true) => (
                        r.in_context(&sample, crop_box, boxes.decimals, first + i)?,
                        digit,
                    ),
                    (None, false) => (
                        Some(r.example_masked(
                            &crop,
                            digit,
                            format!("read-{seed}-{}", first + i),
                            reads_digit_only,
                        )?),
                        digit,
                    ),
                };
                if let Some(e) = example {
                    if r.digit_weight > 0.0 {
                        b.reads_digit.push(r.digit_tokens_only(&e, read_digit));
                    }
                    b.reads.push(e);
                }
            }
            if (i as usize) < globals {
                b.globals.push(image.clone());
                b.cells.push((row * gw + col) as i64);
            }
            b.crops.push(crop);
            b.digits.push(i64::from(digit));
            if let Some((example, boxed, answer)) = grounded {
                // The class the text model's locate probe learns at a box's tokens: the cell the first box
                // names (with a grid, the grid's), then the tag's cell in the first crop.
                let first_cell = match boxes.cell_of(*reference) {
                    Some((r, c)) => (r * boxes.grid as usize + c) as i64,
                    None => (row * gw + col) as i64,
                };
                let mut labels = Vec::new();
                for (k, positions) in boxed.iter().enumerate() {
                    let cell = match k {
                        0 => first_cell,
                        _ => fine_cell.context("a second call without a zoom in two steps")?,
                    };
                    labels.push(vec![cell; positions.len()]);
                }
                b.trace_box_cells.push(labels.concat());
                b.trace_boxes.push(boxed.concat());
                b.traces.push(example);
                if grounding.is_some_and(|g| g.box_values) {
                    let w = boxes.written(*reference);
                    let scale = 10f64.powi(boxes.decimals.clamp(1, 3));
                    b.trace_box_values
                        .push([w.x1, w.y1, w.x2, w.y2].map(|v| (v * scale).round() as i64));
                }
                // The class the locate probe learns at the prompt's last token: the cell the call's box names.
                b.trace_cells.push(first_cell);
                if let Some(answer) = answer {
                    b.answers.push(answer);
                    b.answer_digits.push(i64::from(digit));
                }
            }
        }
        Ok(b)
    }
}
