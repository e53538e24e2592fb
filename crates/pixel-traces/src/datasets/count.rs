//! `count`: count the small discs of one colour among discs of other colours and clutter.
//!
//! The target discs are clustered in a sub-window of the image (the reference box), so a crop of that
//! window shows them all while the distractors spread over the whole image.

use rand::seq::SliceRandom;
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use super::draw::{self, PALETTE, Rect};
use crate::geometry::NormBox;
use crate::sample::{AnnotatedSample, Visual};
use crate::{Error, Result};

/// Parameters of the count dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CountConfig {
    /// Canvas width. Default 768.
    pub width: u32,
    /// Canvas height. Default 576.
    pub height: u32,
    /// Fewest target discs. Default 1.
    pub min_count: u32,
    /// Most target discs. Default 7.
    pub max_count: u32,
    /// Distractor discs of other colours. Default 14.
    pub distractors: u32,
    /// Disc radius range in pixels, smallest. Default 4.
    pub radius_min: u32,
    /// Largest disc radius. Default 7.
    pub radius_max: u32,
    /// Side of the cluster window holding the targets, as a share of each image side. Default 0.3.
    pub cluster: f64,
    /// Clutter shapes. Default 40.
    pub clutter: u32,
}

impl Default for CountConfig {
    fn default() -> Self {
        Self {
            width: 768,
            height: 576,
            min_count: 1,
            max_count: 7,
            distractors: 14,
            radius_min: 4,
            radius_max: 7,
            cluster: 0.3,
            clutter: 40,
        }
    }
}

impl CountConfig {
    /// Checks the parameters.
    ///
    /// # Errors
    /// [`Error::Config`] naming the bad parameter.
    pub fn validate(&self) -> Result<()> {
        if self.min_count == 0 || self.min_count > self.max_count || self.max_count > 20 {
            return Err(Error::Config(format!(
                "count range {}..={} (need 1 <= min <= max <= 20)",
                self.min_count, self.max_count
            )));
        }
        if self.radius_min < 2 || self.radius_min > self.radius_max {
            return Err(Error::Config(format!(
                "count radii {}..={}",
                self.radius_min, self.radius_max
            )));
        }
        if !(0.1..=0.6).contains(&self.cluster) {
            return Err(Error::Config(format!(
                "count cluster {} not in 0.1..=0.6",
                self.cluster
            )));
        }
        let cluster_px = (f64::from(self.width.min(self.height)) * self.cluster) as u32;
        if cluster_px < 6 * self.radius_max * 3 {
            return Err(Error::Config(format!(
                "count canvas {}x{} too small for the cluster",
                self.width, self.height
            )));
        }
        Ok(())
    }

    /// Generates sample `index` for `seed`.
    ///
    /// # Errors
    /// [`Error::Config`] if the parameters are invalid.
    pub fn generate(&self, seed: u64, index: u64) -> Result<AnnotatedSample> {
        self.validate()?;
        let mut rng = super::sample_rng(seed, index, 2);
        let rng: &mut dyn RngCore = &mut rng;
        let (w, h) = (i64::from(self.width), i64::from(self.height));
        let mut img = draw::textured_background(self.width, self.height, 14, rng);
        draw::clutter(&mut img, self.clutter, w / 20, rng);
        let mut colours = PALETTE.to_vec();
        colours.shuffle(rng);
        let target = colours[0];
        let count = rng.random_range(self.min_count..=self.max_count);
        let (cw, ch) = (
            (w as f64 * self.cluster) as i64,
            (h as f64 * self.cluster) as i64,
        );
        let cluster = Rect::at(
            rng.random_range(0..=w - cw),
            rng.random_range(0..=h - ch),
            cw,
            ch,
        );
        let rmax = i64::from(self.radius_max);

        let mut discs: Vec<Rect> = Vec::new();
        let mut place =
            |rng: &mut dyn RngCore, area: Rect, avoid: Option<Rect>| -> Option<(i64, i64, i64)> {
                for _ in 0..400 {
                    let r = rng.random_range(i64::from(self.radius_min)..=rmax);
                    let cx = rng.random_range(area.x0 + r + 1..=area.x1 - r - 2);
                    let cy = rng.random_range(area.y0 + r + 1..=area.y1 - r - 2);
                    let bb = Rect::at(cx - r, cy - r, 2 * r + 1, 2 * r + 1);
                    if discs.iter().any(|d| d.overlaps(&bb, 3))
                        || avoid.is_some_and(|a| a.overlaps(&bb, 2))
                    {
                        continue;
                    }
                    discs.push(bb);
                    return Some((cx, cy, r));
                }
                None
            };
        let mut target_bounds: Option<Rect> = None;
        let mut placed_targets = 0;
        for _ in 0..count {
            let Some((cx, cy, r)) = place(rng, cluster, None) else {
                break;
            };
            draw::fill_circle(&mut img, cx, cy, r, target.rgb);
            placed_targets += 1;
            let bb = Rect::at(cx - r, cy - r, 2 * r + 1, 2 * r + 1);
            target_bounds = Some(match target_bounds {
                None => bb,
                Some(t) => Rect {
                    x0: t.x0.min(bb.x0),
                    y0: t.y0.min(bb.y0),
                    x1: t.x1.max(bb.x1),
                    y1: t.y1.max(bb.y1),
                },
            });
        }
        let bounds =
            target_bounds.ok_or_else(|| Error::Config("count: no room for the targets".into()))?;
        let whole = Rect::at(0, 0, w, h);
        for _ in 0..self.distractors {
            // Distractors keep out of the targets' bounding box, so the reference box holds only targets.
            let Some((cx, cy, r)) = place(rng, whole, Some(bounds)) else {
                break;
            };
            let colour = colours[rng.random_range(1..colours.len())];
            draw::fill_circle(&mut img, cx, cy, r, colour.rgb);
        }
        let pad = 3;
        let reference = NormBox::from_pixels(
            (bounds.x0 - pad).max(0) as u32,
            (bounds.y0 - pad).max(0) as u32,
            (bounds.x1 + pad).min(w) as u32,
            (bounds.y1 + pad).min(h) as u32,
            self.width,
            self.height,
        )?;
        Ok(AnnotatedSample {
            id: format!("count-{seed}-{index}"),
            question: format!(
                "How many {} circles are there in the image? Answer with a number.",
                target.name
            ),
            options: Vec::new(),
            answer: placed_targets.to_string(),
            visual: Visual::Image {
                image: img,
                reference,
                cue: format!("the {} circles", target.name),
            },
        })
    }
}
