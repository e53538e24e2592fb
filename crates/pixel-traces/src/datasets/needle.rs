//! `needle`: a small digit on a coloured tag somewhere in a large cluttered image; multiple choice.
//!
//! The digit is 14-20 px tall by default: below one merged visual token (28 x 28 px) at the global view
//! (model-input limits up to the official 4,014,080 pixels keep a 1024 x 768 canvas at full size), and
//! above it once cropped (the official padded crop is about a quarter of the canvas and is resized up to
//! at least 200,704 pixels). Noise inside the tag, jittered cells, varied strokes and slant, and decoy tags
//! with other border colours keep it from being read at a glance.

use image::RgbImage;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use super::draw::{self, PALETTE, Rect};
use super::font::{self, GlyphStyle};
use crate::geometry::NormBox;
use crate::sample::{AnnotatedSample, OPTION_LETTERS, Visual, with_options};
use crate::{Error, Result};

/// Parameters of the needle dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeedleConfig {
    /// Canvas width. Default 1024.
    pub width: u32,
    /// Canvas height. Default 768.
    pub height: u32,
    /// Smallest digit height in pixels. Default 14.
    pub glyph_min: u32,
    /// Largest digit height in pixels. Default 20.
    pub glyph_max: u32,
    /// Number of clutter shapes. Default 120.
    pub clutter: u32,
    /// Decoy tags (other border colours, other digits). Default 3.
    pub decoys: u32,
    /// Noise amplitude (levels) inside each tag. Default 60.
    pub tag_noise: u8,
    /// Multiple-choice options (2-8). Default 4.
    pub num_options: usize,
    /// The thinnest stroke of a digit, as a share of its font cell (`..=1.0`): strokes are drawn from
    /// `stroke_min..=1.0`. Default 0.55 ([`font::STROKE_MIN`]: thin strokes draw a digit as separate dots).
    #[serde(default = "default_stroke_min")]
    pub stroke_min: f32,
}

fn default_stroke_min() -> f32 {
    font::STROKE_MIN
}

impl Default for NeedleConfig {
    fn default() -> Self {
        Self {
            width: 1024,
            height: 768,
            glyph_min: 14,
            glyph_max: 20,
            clutter: 120,
            decoys: 3,
            tag_noise: 60,
            num_options: 4,
            stroke_min: font::STROKE_MIN,
        }
    }
}

/// A needle sample with the facts tests need.
#[derive(Debug, Clone)]
pub struct NeedleSample {
    /// The annotated sample (reference box = the tag).
    pub sample: AnnotatedSample,
    /// The digit.
    pub digit: u8,
    /// The digit's height in pixels.
    pub glyph_height: u32,
    /// The tag's pixel rectangle `(x0, y0, x1, y1)`.
    pub tag: (u32, u32, u32, u32),
}

impl NeedleConfig {
    /// Checks the parameters.
    ///
    /// # Errors
    /// [`Error::Config`] naming the bad parameter.
    pub fn validate(&self) -> Result<()> {
        if self.glyph_min < 7 || self.glyph_min > self.glyph_max {
            return Err(Error::Config(format!(
                "needle glyph heights {}..={} (need 7 <= min <= max)",
                self.glyph_min, self.glyph_max
            )));
        }
        let tag = tag_size(self.glyph_max);
        if self.width < tag.0 * 4 || self.height < tag.1 * 4 {
            return Err(Error::Config(format!(
                "needle canvas {}x{} is too small for {}px glyphs",
                self.width, self.height, self.glyph_max
            )));
        }
        if !(0.1..=1.0).contains(&self.stroke_min) {
            return Err(Error::Config(format!(
                "needle stroke_min {} not in 0.1..=1.0",
                self.stroke_min
            )));
        }
        if !(2..=OPTION_LETTERS.len()).contains(&self.num_options) {
            return Err(Error::Config(format!(
                "needle num_options {} not in 2..=8",
                self.num_options
            )));
        }
        if self.decoys as usize >= PALETTE.len() {
            return Err(Error::Config(format!(
                "needle decoys {} must be below {}",
                self.decoys,
                PALETTE.len()
            )));
        }
        Ok(())
    }

    /// Generates sample `index` for `seed` (same inputs, same sample).
    ///
    /// # Errors
    /// [`Error::Config`] if the parameters are invalid.
    pub fn generate(&self, seed: u64, index: u64) -> Result<NeedleSample> {
        self.validate()?;
        let mut rng = super::sample_rng(seed, index, 1);
        let rng: &mut dyn RngCore = &mut rng;
        let mut img = draw::textured_background(self.width, self.height, 18, rng);
        draw::clutter(&mut img, self.clutter, i64::from(self.width / 16), rng);

        let mut colours = PALETTE.to_vec();
        colours.shuffle(rng);
        let mut placed: Vec<Rect> = Vec::new();
        let mut target = None;
        for (k, colour) in colours.iter().take(self.decoys as usize + 1).enumerate() {
            let glyph_height = rng.random_range(self.glyph_min..=self.glyph_max);
            let (tw, th) = tag_size(glyph_height);
            let mut rect = None;
            for _ in 0..500 {
                let x = rng.random_range(4..=i64::from(self.width - tw - 4));
                let y = rng.random_range(4..=i64::from(self.height - th - 4));
                let r = Rect::at(x, y, i64::from(tw), i64::from(th));
                if !placed.iter().any(|p| p.overlaps(&r, i64::from(tw))) {
                    rect = Some(r);
                    break;
                }
            }
            let Some(rect) = rect else { continue };
            placed.push(rect);
            let digit = rng.random_range(0..10u8);
            draw_tag(
                &mut img,
                rect,
                glyph_height,
                digit,
                colour.rgb,
                self.tag_noise,
                self.stroke_min,
                rng,
            );
            if k == 0 {
                target = Some((rect, digit, glyph_height, colour.name));
            }
        }
        let (rect, digit, glyph_height, colour) =
            target.ok_or_else(|| Error::Config("needle: no room for the target tag".into()))?;

        let (options, answer) = super::digit_options(digit, self.num_options, rng);
        let cue = format!("the small tag with a {colour} border");
        let question = with_options(
            &format!("What digit is written on the small tag with a {colour} border?"),
            &options,
        );
        let (x0, y0, x1, y1) = (
            rect.x0 as u32,
            rect.y0 as u32,
            rect.x1 as u32,
            rect.y1 as u32,
        );
        let reference = NormBox::from_pixels(x0, y0, x1, y1, self.width, self.height)?;
        Ok(NeedleSample {
            sample: AnnotatedSample {
                id: format!("needle-{seed}-{index}"),
                question,
                options,
                answer,
                visual: Visual::Image {
                    image: img,
                    reference,
                    cue,
                },
            },
            digit,
            glyph_height,
            tag: (x0, y0, x1, y1),
        })
    }
}

/// Tag size `(w, h)` for a glyph `glyph_height` tall: the glyph plus a margin and a 2 px border.
pub fn tag_size(glyph_height: u32) -> (u32, u32) {
    let margin = glyph_height / 4 + 2;
    (
        font::glyph_width(glyph_height) + 2 * margin + 4,
        glyph_height + 2 * margin + 4,
    )
}

/// Draws a tag: light noisy plate, coloured border, dark digit (its stroke at least `stroke_min` of a
/// font cell).
#[allow(clippy::too_many_arguments)]
pub fn draw_tag(
    img: &mut RgbImage,
    rect: Rect,
    glyph_height: u32,
    digit: u8,
    border: [u8; 3],
    noise: u8,
    stroke_min: f32,
    rng: &mut dyn RngCore,
) {
    let plate = rng.random_range(205..=245u8);
    draw::fill_rect(img, rect, [plate, plate, plate]);
    draw::rect_border(img, rect, 2, border);
    let ink = rng.random_range(20..=90u8);
    let margin = i64::from(glyph_height / 4 + 2) + 2;
    let style = GlyphStyle::random_with_stroke(rng, stroke_min);
    font::draw_digit(
        img,
        digit,
        (rect.x0 + margin, rect.y0 + margin),
        glyph_height,
        style,
        [ink, ink, ink],
        rng,
    );
    let inner = Rect {
        x0: rect.x0 + 2,
        y0: rect.y0 + 2,
        x1: rect.x1 - 2,
        y1: rect.y1 - 2,
    };
    draw::add_noise(img, inner, noise, rng);
}
