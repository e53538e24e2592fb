//! `frames`: a 16-frame clip (a disc moving over a textured scene) where one frame shows a sign with a
//! digit; multiple choice. The reference window is that frame and its neighbours.
//!
//! In the model's video view frames are downscaled and merged in pairs (temporal patch 2), so a digit that
//! is present in a single frame is faint; `select_frames` returns the frames as full images.

use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use super::draw::{self, PALETTE, Rect};
use super::needle::{draw_tag, tag_size};
use crate::geometry::FrameWindow;
use crate::sample::{AnnotatedSample, OPTION_LETTERS, Visual, with_options};
use crate::{Error, Result};

/// Parameters of the frames dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FramesConfig {
    /// Frame width. Default 320.
    pub width: u32,
    /// Frame height. Default 240.
    pub height: u32,
    /// Frames per clip. Default 16 (the official select_frames video length).
    pub num_frames: usize,
    /// Digit height on the sign, in pixels. Default 12.
    pub glyph_height: u32,
    /// Frames on each side of the sign frame in the reference window. Default 1.
    pub window_radius: usize,
    /// Multiple-choice options (2-8). Default 4.
    pub num_options: usize,
}

impl Default for FramesConfig {
    fn default() -> Self {
        Self {
            width: 320,
            height: 240,
            num_frames: 16,
            glyph_height: 12,
            window_radius: 1,
            num_options: 4,
        }
    }
}

impl FramesConfig {
    /// Checks the parameters.
    ///
    /// # Errors
    /// [`Error::Config`] naming the bad parameter.
    pub fn validate(&self) -> Result<()> {
        if !(2..=64).contains(&self.num_frames) {
            return Err(Error::Config(format!(
                "frames num_frames {} not in 2..=64",
                self.num_frames
            )));
        }
        // 2 * radius + 1 > 8, written so that no radius overflows.
        if self.window_radius > 3 {
            return Err(Error::Config(format!(
                "frames window_radius {} gives more than 8 frames",
                self.window_radius
            )));
        }
        let (tw, th) = tag_size(self.glyph_height.max(7));
        if self.glyph_height < 7 || self.width < tw * 3 || self.height < th * 3 {
            return Err(Error::Config(format!(
                "frames {}x{} too small for a {} px sign",
                self.width, self.height, self.glyph_height
            )));
        }
        // The moving disc (radius height / 12, at least 3) must fit across the frame.
        if i64::from(self.width) <= 2 * (i64::from(self.height) / 12).max(3) {
            return Err(Error::Config(format!(
                "frames {}x{} too narrow for the moving disc",
                self.width, self.height
            )));
        }
        if !(2..=OPTION_LETTERS.len()).contains(&self.num_options) {
            return Err(Error::Config(format!(
                "frames num_options {} not in 2..=8",
                self.num_options
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
        let mut rng = super::sample_rng(seed, index, 3);
        let rng: &mut dyn RngCore = &mut rng;
        let (w, h) = (i64::from(self.width), i64::from(self.height));
        let mut background = draw::textured_background(self.width, self.height, 10, rng);
        draw::clutter(&mut background, 12, w / 10, rng);
        let ball = PALETTE[rng.random_range(0..PALETTE.len())].rgb;
        let radius = (h / 12).max(3);
        let (sx, sy) = (
            rng.random_range(radius..w - radius),
            rng.random_range(radius..h - radius),
        );
        let (ex, ey) = (
            rng.random_range(radius..w - radius),
            rng.random_range(radius..h - radius),
        );
        let sign_frame = rng.random_range(1..=self.num_frames);
        let digit = rng.random_range(0..10u8);
        let (tw, th) = tag_size(self.glyph_height);
        let sign = Rect::at(
            rng.random_range(2..=w - i64::from(tw) - 2),
            rng.random_range(2..=h - i64::from(th) - 2),
            i64::from(tw),
            i64::from(th),
        );
        let border = PALETTE[rng.random_range(0..PALETTE.len())].rgb;
        let steps = (self.num_frames - 1).max(1) as i64;
        let frames = (1..=self.num_frames)
            .map(|f| {
                let mut frame = background.clone();
                let t = (f - 1) as i64;
                draw::fill_circle(
                    &mut frame,
                    sx + (ex - sx) * t / steps,
                    sy + (ey - sy) * t / steps,
                    radius,
                    ball,
                );
                if f == sign_frame {
                    draw_tag(
                        &mut frame,
                        sign,
                        self.glyph_height,
                        digit,
                        border,
                        30,
                        super::font::STROKE_MIN,
                        rng,
                    );
                }
                frame
            })
            .collect();
        let window = FrameWindow {
            first: sign_frame.saturating_sub(self.window_radius).max(1),
            last: (sign_frame + self.window_radius).min(self.num_frames),
        };
        let (options, answer) = super::digit_options(digit, self.num_options, rng);
        Ok(AnnotatedSample {
            id: format!("frames-{seed}-{index}"),
            question: with_options(
                "A sign with a digit appears in only one frame of this video. Which digit does it show?",
                &options,
            ),
            options,
            answer,
            visual: Visual::Video {
                frames,
                window,
                cue: "the frame where the sign appears".into(),
            },
        })
    }
}
