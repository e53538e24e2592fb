//! Model-input sizes and resizing: qwen-vl-utils' `smart_resize` and bit-exact bicubic resizes.
//!
//! The official pipeline (qwen-vl-utils `fetch_image`, the official `resize_cropped`) picks a size with
//! [`smart_resize`] and resizes with Pillow's `Image.resize(..., BICUBIC)`. [`resize_bicubic`] reproduces
//! Pillow 13.0's result bit for bit (see [`bicubic`]), and [`smart_resize_image`] does both steps.
//!
//! Serving engines (vLLM through transformers' processors), transformers' fast image processor and
//! qwen-vl-utils' video-file frames resize with torchvision's antialiased bicubic on `uint8` tensors
//! instead: [`resize_bicubic_torchvision`] reproduces it bit for bit, and [`smart_resize_image_with`]
//! picks the kernel ([`BicubicKernel`]).

pub mod bicubic;

use image::RgbImage;
use serde::{Deserialize, Serialize};

pub use bicubic::{
    BicubicKernel, PassOrder, pass_order, resize_bicubic, resize_bicubic_torchvision,
};

use crate::{Error, Result};

/// The side multiple of Qwen2.5-VL: patch 14 times spatial merge 2.
pub const IMAGE_FACTOR: u32 = 28;

/// Largest aspect ratio `smart_resize` accepts (qwen-vl-utils `MAX_RATIO`).
pub const MAX_RATIO: u32 = 200;

/// Bounds on the pixel count `h * w` of a resized image (qwen-vl-utils `min_pixels` / `max_pixels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PixelLimits {
    /// Smallest allowed `h * w`; smaller images are scaled up.
    pub min_pixels: u64,
    /// Largest allowed `h * w`; larger images are scaled down.
    pub max_pixels: u64,
}

impl PixelLimits {
    /// qwen-vl-utils' defaults: 4 to 16384 visual tokens of 28x28 pixels (3,136 to 12,845,056 pixels).
    pub const QWEN_VL_UTILS: PixelLimits = PixelLimits {
        min_pixels: 4 * 784,
        max_pixels: 16384 * 784,
    };
    /// The official evaluation setting (`MIN_PIXELS=401408`, `MAX_PIXELS=4014080` in the official
    /// README): 512 to 5120 visual tokens. Used for the input image.
    pub const OFFICIAL_EVAL: PixelLimits = PixelLimits {
        min_pixels: 512 * 784,
        max_pixels: 5120 * 784,
    };
    /// What the official code resizes a crop to at evaluation (`resize_cropped` with
    /// `min_pixels=256*28*28`, `max_pixels=5120*28*28`).
    pub const OFFICIAL_EVAL_CROP: PixelLimits = PixelLimits {
        min_pixels: 256 * 784,
        max_pixels: 5120 * 784,
    };
    /// The official RL training setting for the input image (`4*28*28` to `raw_maxsize=2000` tokens).
    pub const OFFICIAL_TRAIN: PixelLimits = PixelLimits {
        min_pixels: 4 * 784,
        max_pixels: 2000 * 784,
    };
    /// The official RL training setting for a crop (`4*28*28` to `zoom_maxsize=1000` tokens).
    pub const OFFICIAL_TRAIN_CROP: PixelLimits = PixelLimits {
        min_pixels: 4 * 784,
        max_pixels: 1000 * 784,
    };
    /// The official RL training setting for a selected video frame (`4*28*28` to `select_maxsize=400` tokens).
    pub const OFFICIAL_TRAIN_FRAME: PixelLimits = PixelLimits {
        min_pixels: 4 * 784,
        max_pixels: 400 * 784,
    };

    /// Limits from a pixel range.
    pub const fn new(min_pixels: u64, max_pixels: u64) -> Self {
        PixelLimits {
            min_pixels,
            max_pixels,
        }
    }
}

impl Default for PixelLimits {
    /// [`PixelLimits::OFFICIAL_EVAL`].
    fn default() -> Self {
        PixelLimits::OFFICIAL_EVAL
    }
}

/// qwen-vl-utils `smart_resize`: the `(height, width)` closest to the input's with both sides multiples of
/// `factor` and `min_pixels <= h * w <= max_pixels`, keeping the aspect ratio as well as possible.
///
/// Exactly the Python arithmetic: `round` is Python's (ties to even), the scale `beta` is
/// `sqrt(h * w / max_pixels)` then `floor`, or `sqrt(min_pixels / (h * w))` then `ceil`.
///
/// # Errors
/// [`Error::AspectRatio`] if the longer side is more than 200 times the shorter one (qwen-vl-utils'
/// `ValueError`); [`Error::ZeroSize`] for a zero side, or where the Python code would return a zero side
/// (extreme ratios with a small `max_pixels`); [`Error::InvalidPixelLimits`] if `min_pixels > max_pixels`
/// or `factor == 0`.
pub fn smart_resize(
    height: u32,
    width: u32,
    factor: u32,
    limits: PixelLimits,
) -> Result<(u32, u32)> {
    let PixelLimits {
        min_pixels,
        max_pixels,
    } = limits;
    if min_pixels > max_pixels || factor == 0 {
        return Err(Error::InvalidPixelLimits {
            min_pixels,
            max_pixels,
            factor,
        });
    }
    if height == 0 || width == 0 {
        return Err(Error::ZeroSize { width, height });
    }
    let (h, w, f) = (f64::from(height), f64::from(width), f64::from(factor));
    let ratio = h.max(w) / h.min(w);
    if ratio > f64::from(MAX_RATIO) {
        return Err(Error::AspectRatio {
            ratio,
            max: MAX_RATIO,
            height,
            width,
        });
    }
    // Python ints are unbounded: keep sizes as integers (u128 products), floats only where Python has them.
    let f_int = u128::from(factor);
    let by_factor = |x: f64| -> u128 {
        if x.is_finite() && x > 0.0 {
            (x as u128) * f_int
        } else {
            0
        }
    };
    let mut h_bar = f_int.max(by_factor((h / f).round_ties_even()));
    let mut w_bar = f_int.max(by_factor((w / f).round_ties_even()));
    let area = u64::from(height) * u64::from(width);
    if h_bar * w_bar > u128::from(max_pixels) {
        let beta = (area as f64 / max_pixels as f64).sqrt();
        h_bar = by_factor((h / beta / f).floor());
        w_bar = by_factor((w / beta / f).floor());
    } else if h_bar * w_bar < u128::from(min_pixels) {
        let beta = (min_pixels as f64 / area as f64).sqrt();
        h_bar = by_factor((h * beta / f).ceil());
        w_bar = by_factor((w * beta / f).ceil());
    }
    let (Ok(h_out), Ok(w_out)) = (u32::try_from(h_bar), u32::try_from(w_bar)) else {
        return Err(Error::ZeroSize {
            width: 0,
            height: 0,
        });
    };
    if h_out == 0 || w_out == 0 {
        return Err(Error::ZeroSize {
            width: w_out,
            height: h_out,
        });
    }
    Ok((h_out, w_out))
}

/// qwen-vl-utils `fetch_image`'s resize step: [`smart_resize`] with factor 28 and `limits`, then
/// [`resize_bicubic`] (a copy when the size already fits).
///
/// # Errors
/// As [`smart_resize`].
pub fn smart_resize_image(image: &RgbImage, limits: PixelLimits) -> Result<RgbImage> {
    smart_resize_image_with(image, limits, BicubicKernel::Pillow)
}

/// [`smart_resize`] with factor 28 and `limits`, then a resize with `kernel` (a copy when the size already
/// fits). With [`BicubicKernel::Torchvision`] this is what transformers' fast Qwen2-VL image processor does
/// to a `uint8` image before rescaling.
///
/// # Errors
/// As [`smart_resize`] and [`resize_bicubic`].
pub fn smart_resize_image_with(
    image: &RgbImage,
    limits: PixelLimits,
    kernel: BicubicKernel,
) -> Result<RgbImage> {
    let (h, w) = smart_resize(image.height(), image.width(), IMAGE_FACTOR, limits)?;
    kernel.resize(image, w, h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_eval_example() {
        // 4000x3000 -> 2296x1708 under the official eval limits (measured with qwen-vl-utils).
        assert_eq!(
            smart_resize(3000, 4000, 28, PixelLimits::OFFICIAL_EVAL).unwrap(),
            (1708, 2296)
        );
    }

    #[test]
    fn ties_round_to_even() {
        // 42 / 28 = 1.5 -> 2 (even), 70 / 28 = 2.5 -> 2 (even): Rust's `round` would give 3.
        let big = PixelLimits::new(1, u64::MAX / 4);
        assert_eq!(smart_resize(42, 70, 28, big).unwrap(), (56, 56));
    }

    #[test]
    fn min_equal_to_max_is_not_idempotent_for_a_non_square_image() {
        // 209 x 157 -> 112 x 84 (the downscale branch floors), and again -> 140 x 112 (84 x 112 is below
        // `min_pixels`, the upscale branch ceils): an image resized twice has another size and token count
        // than one resized once. The mini Pixel Reasoner's rollouts did that to every crop.
        let view = PixelLimits::new(112 * 112, 112 * 112);
        let once = smart_resize(157, 209, 28, view).unwrap();
        assert_eq!(once, (84, 112));
        assert_eq!(smart_resize(once.0, once.1, 28, view).unwrap(), (112, 140));
    }

    #[test]
    fn a_resized_size_is_a_fixed_point_when_min_is_well_below_max() {
        // With `min_pixels` at transformers' default (56 x 56) a second resize leaves every size alone.
        let limits = PixelLimits::new(56 * 56, 112 * 112);
        let mut checked = 0;
        for h in (20..600).step_by(7) {
            for w in (20..600).step_by(11) {
                // Flat extremes floor a side to 0 (an error, as in qwen-vl-utils): nothing to resize again.
                let Ok(once) = smart_resize(h, w, 28, limits) else {
                    continue;
                };
                assert_eq!(
                    smart_resize(once.0, once.1, 28, limits).unwrap(),
                    once,
                    "{h} x {w}"
                );
                checked += 1;
            }
        }
        assert!(checked > 3500, "{checked} sizes checked");
    }

    #[test]
    fn errors_are_typed() {
        let l = PixelLimits::QWEN_VL_UTILS;
        assert!(matches!(
            smart_resize(1, 201, 28, l),
            Err(Error::AspectRatio { .. })
        ));
        assert!(smart_resize(1, 200, 28, l).is_ok());
        assert!(matches!(
            smart_resize(0, 10, 28, l),
            Err(Error::ZeroSize { .. })
        ));
        assert!(matches!(
            smart_resize(10, 10, 28, PixelLimits::new(10, 5)),
            Err(Error::InvalidPixelLimits { .. })
        ));
    }
}
