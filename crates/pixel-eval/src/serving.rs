//! The official image pipeline's second stage: the serving engine resizes **every image it receives**
//! (the pre-resized original, each crop, each selected frame) to its processor's pixel bounds with
//! torchvision's antialiased bicubic on `uint8` (vLLM through transformers' Qwen2-VL processor;
//! [401,408, 4,014,080] pixels in the official setting).
//!
//! A server does this on its side. For an engine that resizes differently, [`ServingResizeEngine`] wraps
//! it and does the stage itself, in front of it: every image of every user turn is resized with
//! [`ServingResize`] (by default [`pixel_ops::resize_bicubic_torchvision`], byte-exact with torchvision),
//! so the wrapped engine receives images that already have their model-input size and its own resize is a
//! no-op (give the wrapped engine the same bounds). Its [`Engine::model_view`], what in-process crops are
//! cut from, is the same resize. Videos pass unchanged: [`crate::OfficialPipeline`] sizes their frames in
//! the first stage, as qwen-vl-utils does.

use std::borrow::Cow;

use image::RgbImage;
use pixel_agent::{Engine, Generated, Part, TokenRecord, TurnSampling, UserTurn};
use pixel_ops::{BicubicKernel, PixelLimits, smart_resize};
use serde::{Deserialize, Serialize};

/// The serving engine's resize: `smart_resize` (factor 28) to `limits`, then `kernel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServingResize {
    /// Pixel bounds of every image (official: [401,408, 4,014,080], `MIN_PIXELS` / `MAX_PIXELS`).
    pub limits: PixelLimits,
    /// The resize kernel (official: torchvision's).
    pub kernel: BicubicKernel,
}

impl ServingResize {
    /// The official evaluation's serving engine: [`PixelLimits::OFFICIAL_EVAL`] with torchvision's kernel.
    pub const OFFICIAL: ServingResize = ServingResize {
        limits: PixelLimits::OFFICIAL_EVAL,
        kernel: BicubicKernel::Torchvision,
    };

    /// `image` as the engine shows it to the model (borrowed when it already has that size).
    ///
    /// # Errors
    /// As [`pixel_ops::smart_resize`] and [`pixel_ops::resize_bicubic`] (extreme aspect ratios, absurd
    /// sizes).
    pub fn apply<'a>(&self, image: &'a RgbImage) -> pixel_ops::Result<Cow<'a, RgbImage>> {
        let (h, w) = smart_resize(image.height(), image.width(), 28, self.limits)?;
        if (w, h) == image.dimensions() {
            return Ok(Cow::Borrowed(image));
        }
        Ok(Cow::Owned(self.kernel.resize(image, w, h)?))
    }

    /// `turn` with every image resized (borrowed when none changes).
    ///
    /// # Errors
    /// As [`ServingResize::apply`].
    pub fn turn<'a>(&self, turn: &'a UserTurn) -> pixel_ops::Result<Cow<'a, UserTurn>> {
        let mut parts: Option<Vec<Part>> = None;
        for (i, part) in turn.parts.iter().enumerate() {
            if let Part::Image(image) = part
                && let Cow::Owned(resized) = self.apply(image)?
            {
                parts.get_or_insert_with(|| turn.parts.clone())[i] = Part::Image(resized);
            }
        }
        Ok(match parts {
            Some(parts) => Cow::Owned(UserTurn { parts }),
            None => Cow::Borrowed(turn),
        })
    }
}

/// An engine behind the serving stage (see the module docs).
#[derive(Debug)]
pub struct ServingResizeEngine<E> {
    engine: E,
    stage: ServingResize,
}

impl<E> ServingResizeEngine<E> {
    /// `engine` with `stage` in front of it.
    pub fn new(engine: E, stage: ServingResize) -> Self {
        Self { engine, stage }
    }

    /// The stage.
    pub fn stage(&self) -> ServingResize {
        self.stage
    }

    /// The wrapped engine.
    pub fn into_inner(self) -> E {
        self.engine
    }
}

impl<E: Engine> Engine for ServingResizeEngine<E> {
    type Prepared = E::Prepared;

    fn is_token_exact(&self) -> bool {
        self.engine.is_token_exact()
    }

    fn open(&mut self, system: &str, question: &UserTurn, rows: usize) -> pixel_agent::Result<()> {
        let question = self.stage.turn(question)?;
        self.engine.open(system, &question, rows)
    }

    fn model_view(&self, image: &RgbImage) -> pixel_agent::Result<RgbImage> {
        let shown = self.stage.apply(image)?;
        self.engine.model_view(&shown)
    }

    fn rows(&self) -> usize {
        self.engine.rows()
    }

    fn context_tokens(&self, row: usize) -> usize {
        self.engine.context_tokens(row)
    }

    fn prepare(&self, row: usize, turn: &UserTurn) -> pixel_agent::Result<Self::Prepared> {
        let turn = self.stage.turn(turn)?;
        self.engine.prepare(row, &turn)
    }

    fn prepared_tokens(&self, prepared: &Self::Prepared) -> usize {
        self.engine.prepared_tokens(prepared)
    }

    fn append(&mut self, turns: Vec<Option<Self::Prepared>>) -> pixel_agent::Result<()> {
        self.engine.append(turns)
    }

    fn generate(
        &mut self,
        active: &[bool],
        sampling: &TurnSampling,
    ) -> pixel_agent::Result<Vec<Option<Generated>>> {
        self.engine.generate(active, sampling)
    }

    fn record(&self, row: usize) -> Option<TokenRecord> {
        self.engine.record(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn photo(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([
                (x * 7 % 256) as u8,
                ((x ^ y) % 256) as u8,
                (y * 3 % 256) as u8,
            ])
        })
    }

    #[test]
    fn the_official_stage_is_torchvision_to_the_engine_bounds() {
        let stage = ServingResize::OFFICIAL;
        assert_eq!(
            (stage.limits.min_pixels, stage.limits.max_pixels),
            (401_408, 4_014_080)
        );
        let image = photo(1000, 300);
        let shown = stage.apply(&image).unwrap();
        let (h, w) = smart_resize(300, 1000, 28, stage.limits).unwrap();
        assert_eq!(shown.dimensions(), (w, h));
        let expected = pixel_ops::resize_bicubic_torchvision(&image, w, h).unwrap();
        assert_eq!(*shown, expected);
        assert_ne!(*shown, pixel_ops::resize_bicubic(&image, w, h).unwrap());
        // An image that already has its size is passed on as it is.
        assert!(matches!(stage.apply(&expected).unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn a_turn_has_every_image_resized_and_its_text_kept() {
        let stage = ServingResize {
            limits: PixelLimits::new(56 * 56, 112 * 112),
            kernel: BicubicKernel::Torchvision,
        };
        let sized = RgbImage::new(84, 84);
        let turn = UserTurn {
            parts: vec![
                Part::Text("a".into()),
                Part::Image(photo(300, 200)),
                Part::Image(sized.clone()),
            ],
        };
        let out = stage.turn(&turn).unwrap();
        assert_eq!(out.parts.len(), 3);
        assert_eq!(out.parts[0], Part::Text("a".into()));
        let Part::Image(first) = &out.parts[1] else {
            panic!("an image")
        };
        // 300x200 over 112x112 pixels: smart_resize shrinks it to 112x84.
        assert_eq!(first.dimensions(), (112, 84));
        assert_eq!(out.parts[2], Part::Image(sized.clone()));
        let unchanged = UserTurn {
            parts: vec![Part::Image(sized)],
        };
        assert!(matches!(stage.turn(&unchanged).unwrap(), Cow::Borrowed(_)));
        // An aspect ratio no engine accepts is an error, not a panic.
        let thin = UserTurn {
            parts: vec![Part::Image(RgbImage::new(1000, 2))],
        };
        assert!(stage.turn(&thin).is_err());
    }
}
