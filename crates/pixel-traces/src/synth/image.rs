//! Image traces: clean, one or two wrong crops first, and coarse-to-fine, with the boxes they use.

use ::image::RgbImage;
use rand::{Rng, RngCore};
use rand_chacha::ChaCha8Rng;

use super::{Builder, Synthesizer, Variant, ZOOM_INTENT, invalid};
use crate::Result;
use crate::geometry::{self, NormBox};
use crate::narrator::{Modality, NarrationStep, Narrator};
use crate::official::Role;
use crate::protocol_text;
use crate::sample::AnnotatedSample;
use crate::trace::TracePart;

impl<N: Narrator> Synthesizer<N> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn image_trace(
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
        let grid = self.config.coarse_grid;
        let (width, height) = image.dimensions();
        let mut wrong_boxes = Vec::new();
        for _ in 0..wrong_count {
            let wrong = match grid {
                0 => wrong_box(reference, width, height, decimals, &wrong_boxes, rng),
                n => wrong_cell(reference, n, width, height, decimals, &wrong_boxes, rng),
            };
            match wrong {
                Some(w) => wrong_boxes.push(w),
                None => break,
            }
        }
        // The first box of a zoom in two steps: a random over-large box, or with a grid every zoom's
        // first box is the reference's cell.
        let coarse = match (grid, requested) {
            (0, Variant::CoarseToFine) => coarse_box(reference, width, height, decimals, rng),
            (0, _) | (_, Variant::Clean) => None,
            (n, _) => grid_cell_box(reference, n, width, height, decimals),
        };
        let variant = match requested {
            Variant::OneWrong | Variant::TwoWrong if wrong_boxes.len() < wrong_count => {
                Variant::Clean
            }
            Variant::CoarseToFine if coarse.is_none() => Variant::Clean,
            // On a grid a wrong crop is another cell: without the right cell, no wrong one either.
            Variant::OneWrong | Variant::TwoWrong if grid > 0 && coarse.is_none() => Variant::Clean,
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

        let final_view = if let Some(coarse) = coarse.filter(|_| variant != Variant::Clean) {
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
            let refine_from = match self.config.refine_from_original {
                true => &coarse_crop,
                false => &coarse_seen,
            };
            // With a fine grid, the cell of the coarse crop holding the reference's centre when its crop
            // holds the reference's core; the reference's own box otherwise.
            let inside = reference.relative_to(region);
            let (cw, ch) = refine_from.dimensions();
            let refined = grid_cell_holding(
                inside,
                self.config.fine_grid,
                cw,
                ch,
                decimals,
                self.config.fine_inset,
            )
            .unwrap_or_else(|| geometry::round_outward(inside, decimals));
            let (fine_crop, _) = geometry::official_crop(refine_from, refined)?;
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
        if croppable(candidate, width, height) {
            return Some(candidate);
        }
    }
    None
}

/// The cell of an `n x n` grid holding `reference`'s centre, rounded outward to `decimals` (values stay
/// below 1, [`geometry::round_outward`]); `None` when `n` is 0, when the cell's official crop region
/// (padded by 0.1 per side) does not hold the whole reference, or when that region is under the tool's
/// minimum side.
pub fn grid_cell_box(
    reference: NormBox,
    n: u32,
    width: u32,
    height: u32,
    decimals: i32,
) -> Option<NormBox> {
    grid_cell_holding(reference, n, width, height, decimals, 0.0)
}

/// As [`grid_cell_box`], but the cell's padded crop region need only hold `reference` inset by `inset` of
/// its size per side ([`NormBox::inset`]): the reference's core, e.g. a tag's digit without the plate's
/// margin around it.
pub fn grid_cell_holding(
    reference: NormBox,
    n: u32,
    width: u32,
    height: u32,
    decimals: i32,
    inset: f64,
) -> Option<NormBox> {
    if n == 0 {
        return None;
    }
    let at = |v: f64| ((v * f64::from(n)).floor().max(0.0) as u32).min(n - 1);
    let (col, row) = (
        at((reference.x1 + reference.x2) / 2.0),
        at((reference.y1 + reference.y2) / 2.0),
    );
    let core = reference.inset(inset);
    cell_box(col, row, n, width, height, decimals)
        .filter(|cell| cell.padded(geometry::CROP_PAD).contains(core))
}

/// Whether the official crop of `bbox` (padded by 0.1 per side, clamped) in a `width` x `height` image is
/// larger than the tool's minimum side both ways.
fn croppable(bbox: NormBox, width: u32, height: u32) -> bool {
    let (l, t, r, b) = bbox.padded(geometry::CROP_PAD).to_pixels(width, height);
    r - l > geometry::MIN_CROP_SIDE && b - t > geometry::MIN_CROP_SIDE
}

/// Cell `(col, row)` of an `n x n` grid rounded outward to `decimals`, if its padded crop is croppable.
fn cell_box(col: u32, row: u32, n: u32, width: u32, height: u32, decimals: i32) -> Option<NormBox> {
    let n = f64::from(n);
    let cell = geometry::round_outward(
        NormBox::new(
            f64::from(col) / n,
            f64::from(row) / n,
            f64::from(col + 1) / n,
            f64::from(row + 1) / n,
        )
        .ok()?,
        decimals,
    );
    croppable(cell, width, height).then_some(cell)
}

/// A random cell of an `n x n` grid whose official crop region misses `reference` entirely and differs
/// from `taken`'s (the wrong crops of a trace zooming in on a grid, [`SynthConfig::coarse_grid`]); `None`
/// if no cell qualifies.
///
/// [`SynthConfig::coarse_grid`]: super::SynthConfig::coarse_grid
pub fn wrong_cell(
    reference: NormBox,
    n: u32,
    width: u32,
    height: u32,
    decimals: i32,
    taken: &[NormBox],
    rng: &mut dyn RngCore,
) -> Option<NormBox> {
    let candidates: Vec<NormBox> = (0..n * n)
        .filter_map(|k| cell_box(k % n, k / n, n, width, height, decimals))
        .filter(|cell| {
            let region = cell.padded(geometry::CROP_PAD);
            !region.intersects(reference) && !taken.contains(cell)
        })
        .collect();
    (!candidates.is_empty()).then(|| candidates[rng.random_range(0..candidates.len())])
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
    (coarse.contains(reference) && croppable(coarse, width, height)).then_some(coarse)
}
