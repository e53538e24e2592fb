//! Normalized boxes, the official padded crop, and frame windows.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The padding the official `crop_image_normalized` adds on every side (normalized units).
pub const CROP_PAD: f64 = 0.1;

/// A crop smaller than this (in pixels, either side) is an error in the official tool.
pub const MIN_CROP_SIDE: u32 = 28;

/// An axis-aligned box in normalized image coordinates, `[x1, y1, x2, y2]` with `0 <= x1 < x2 <= 1`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(into = "[f64; 4]", try_from = "[f64; 4]")]
pub struct NormBox {
    /// Left edge.
    pub x1: f64,
    /// Top edge.
    pub y1: f64,
    /// Right edge.
    pub x2: f64,
    /// Bottom edge.
    pub y2: f64,
}

impl From<NormBox> for [f64; 4] {
    fn from(b: NormBox) -> Self {
        b.to_array()
    }
}

impl TryFrom<[f64; 4]> for NormBox {
    type Error = String;
    fn try_from(a: [f64; 4]) -> std::result::Result<Self, String> {
        NormBox::new(a[0], a[1], a[2], a[3]).map_err(|e| e.to_string())
    }
}

impl NormBox {
    /// A box, checked: finite, inside `[0, 1]`, positive width and height.
    ///
    /// # Errors
    /// [`Error::Config`] naming the offending values.
    pub fn new(x1: f64, y1: f64, x2: f64, y2: f64) -> Result<Self> {
        let ok = [x1, y1, x2, y2]
            .iter()
            .all(|v| v.is_finite() && (0.0..=1.0).contains(v))
            && x1 < x2
            && y1 < y2;
        if !ok {
            return Err(Error::Config(format!(
                "box [{x1}, {y1}, {x2}, {y2}] is not a normalized box with x1<x2, y1<y2"
            )));
        }
        Ok(Self { x1, y1, x2, y2 })
    }

    /// A box from pixel coordinates of a `width` x `height` image.
    ///
    /// # Errors
    /// As [`NormBox::new`].
    pub fn from_pixels(
        x1: u32,
        y1: u32,
        x2: u32,
        y2: u32,
        width: u32,
        height: u32,
    ) -> Result<Self> {
        let (w, h) = (f64::from(width.max(1)), f64::from(height.max(1)));
        Self::new(
            f64::from(x1) / w,
            f64::from(y1) / h,
            f64::from(x2) / w,
            f64::from(y2) / h,
        )
    }

    /// `[x1, y1, x2, y2]`.
    pub fn to_array(self) -> [f64; 4] {
        [self.x1, self.y1, self.x2, self.y2]
    }

    /// The same box with every coordinate rounded to `decimals` places (as a model would write it), kept valid.
    pub fn rounded(self, decimals: i32) -> Self {
        let s = 10f64.powi(decimals);
        let r = |v: f64| (v * s).round() / s;
        let (x1, y1, x2, y2) = (r(self.x1), r(self.y1), r(self.x2), r(self.y2));
        Self::new(x1, y1, x2, y2).unwrap_or(self)
    }

    /// Width (normalized).
    pub fn width(self) -> f64 {
        self.x2 - self.x1
    }

    /// Height (normalized).
    pub fn height(self) -> f64 {
        self.y2 - self.y1
    }

    /// Whether the two boxes overlap with positive area.
    pub fn intersects(self, other: NormBox) -> bool {
        self.x1 < other.x2 && other.x1 < self.x2 && self.y1 < other.y2 && other.y1 < self.y2
    }

    /// Whether `other` lies entirely inside `self`.
    pub fn contains(self, other: NormBox) -> bool {
        self.x1 <= other.x1 && self.y1 <= other.y1 && other.x2 <= self.x2 && other.y2 <= self.y2
    }

    /// The box with each side moved in by `share` of its width (left, right) or height (top, bottom);
    /// `share` is clamped to `[0, 0.5]`, so the box never turns inside out (at 0.5 it is its centre).
    pub fn inset(self, share: f64) -> NormBox {
        let share = if share.is_finite() {
            share.clamp(0.0, 0.5)
        } else {
            0.0
        };
        let (dx, dy) = (self.width() * share, self.height() * share);
        NormBox {
            x1: self.x1 + dx,
            y1: self.y1 + dy,
            x2: self.x2 - dx,
            y2: self.y2 - dy,
        }
    }

    /// The box grown by `pad` on every side and clamped to `[0, 1]`: the region the official tool crops.
    pub fn padded(self, pad: f64) -> NormBox {
        NormBox {
            x1: (self.x1 - pad).max(0.0),
            y1: (self.y1 - pad).max(0.0),
            x2: (self.x2 + pad).min(1.0),
            y2: (self.y2 + pad).min(1.0),
        }
    }

    /// `self` expressed in the coordinates of the region `frame` (both normalized to the same image).
    pub fn relative_to(self, frame: NormBox) -> NormBox {
        let (fw, fh) = (
            frame.width().max(f64::EPSILON),
            frame.height().max(f64::EPSILON),
        );
        NormBox {
            x1: ((self.x1 - frame.x1) / fw).clamp(0.0, 1.0),
            y1: ((self.y1 - frame.y1) / fh).clamp(0.0, 1.0),
            x2: ((self.x2 - frame.x1) / fw).clamp(0.0, 1.0),
            y2: ((self.y2 - frame.y1) / fh).clamp(0.0, 1.0),
        }
    }

    /// `self`, written in the coordinates of the region `frame`, expressed in the coordinates `frame` is
    /// written in: the inverse of [`NormBox::relative_to`] for a box inside its frame. A box a model writes
    /// for a crop (`target_image` > 1) maps onto the image that crop was cut from this way.
    pub fn within(self, frame: NormBox) -> NormBox {
        NormBox {
            x1: frame.x1 + self.x1 * frame.width(),
            y1: frame.y1 + self.y1 * frame.height(),
            x2: frame.x1 + self.x2 * frame.width(),
            y2: frame.y1 + self.y2 * frame.height(),
        }
    }

    /// The pixel rectangle `(left, top, right, bottom)` of this box in a `width` x `height` image, rounded as
    /// PIL's `Image.crop` rounds float boxes (Python `round`, ties to even).
    pub fn to_pixels(self, width: u32, height: u32) -> (u32, u32, u32, u32) {
        let (w, h) = (f64::from(width), f64::from(height));
        let px = |v: f64, size: f64| (v * size).round_ties_even().clamp(0.0, size) as u32;
        (
            px(self.x1, w),
            px(self.y1, h),
            px(self.x2, w),
            px(self.y2, h),
        )
    }
}

/// Crops `image` as the official `crop_image_normalized` does (through [`pixel_ops::crop`]): pad `bbox`
/// by [`CROP_PAD`], clamp, round the edges as Pillow does, crop.
///
/// Returns the crop and the normalized region actually cropped. `bbox` must be written as the model
/// writes it: all four values below 1 (a value of 1.0 makes the official tool read the box as pixels).
///
/// # Errors
/// [`Error::Ops`] when the crop is not larger than [`MIN_CROP_SIDE`] on both sides.
pub fn official_crop(image: &RgbImage, bbox: NormBox) -> Result<(RgbImage, NormBox)> {
    let config = pixel_ops::CropConfig::default();
    let plan = pixel_ops::crop::plan_crop_normalized(
        image.dimensions(),
        image.dimensions(),
        bbox.to_array(),
        &config,
    )?;
    let crop = pixel_ops::crop_normalized(image, image.dimensions(), bbox.to_array(), &config)?;
    let [x1, y1, x2, y2] = plan.normalized;
    Ok((crop, NormBox { x1, y1, x2, y2 }))
}

/// `bbox` with `x1, y1` rounded down and `x2, y2` rounded up to `decimals` places, so the written box still
/// covers the region (what a call writes for a reference box).
///
/// Values stay at most `1 - 10^-decimals`: the official tool reads a box as normalized only when all four
/// values are below 1. `decimals` below 1 counts as 1 (no box with 0 decimals is below 1).
pub fn round_outward(bbox: NormBox, decimals: i32) -> NormBox {
    let s = 10f64.powi(decimals.max(1));
    let top = 1.0 - 1.0 / s;
    // Snap values within float noise of a grid point before flooring / ceiling.
    let snap = |v: f64| {
        let r = (v * s).round();
        if ((v * s) - r).abs() < 1e-9 { r } else { v * s }
    };
    NormBox {
        x1: (snap(bbox.x1).floor() / s).clamp(0.0, top - 1.0 / s),
        y1: (snap(bbox.y1).floor() / s).clamp(0.0, top - 1.0 / s),
        x2: (snap(bbox.x2).ceil() / s).clamp(1.0 / s, top),
        y2: (snap(bbox.y2).ceil() / s).clamp(1.0 / s, top),
    }
}

/// Resizes `image` to its [`smart_resize`] size for `min_pixels`/`max_pixels` with Pillow's bicubic
/// ([`pixel_ops::smart_resize_image`]): what the model receives.
///
/// # Errors
/// As [`smart_resize`].
pub fn resize_for_model(image: &RgbImage, min_pixels: u64, max_pixels: u64) -> Result<RgbImage> {
    Ok(pixel_ops::smart_resize_image(
        image,
        pixel_ops::PixelLimits::new(min_pixels, max_pixels),
    )?)
}

/// An inclusive, 1-based window of video frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameWindow {
    /// First frame (1-based).
    pub first: usize,
    /// Last frame (1-based, inclusive).
    pub last: usize,
}

impl FrameWindow {
    /// The frame numbers in the window.
    pub fn frames(self) -> Vec<usize> {
        (self.first..=self.last).collect()
    }

    /// Number of frames.
    pub fn len(self) -> usize {
        self.last + 1 - self.first
    }

    /// Always false for a valid window (kept for clippy's `len_without_is_empty`).
    pub fn is_empty(self) -> bool {
        self.last < self.first
    }
}

/// `smart_resize` of qwen-vl-utils (factor 28, [`pixel_ops::smart_resize`]): the model-input size
/// `(height, width)` of an image.
///
/// # Errors
/// [`Error::Ops`] for an empty image, an aspect ratio above 200 or inverted limits.
pub fn smart_resize(
    height: u32,
    width: u32,
    min_pixels: u64,
    max_pixels: u64,
) -> Result<(u32, u32)> {
    Ok(pixel_ops::smart_resize(
        height,
        width,
        28,
        pixel_ops::PixelLimits::new(min_pixels, max_pixels),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smart_resize_matches_qwen_vl_utils() {
        // qwen_vl_utils.smart_resize(3000, 4000, min_pixels=401408, max_pixels=4014080) == (1708, 2296)
        assert_eq!(
            smart_resize(3000, 4000, 401_408, 4_014_080).unwrap(),
            (1708, 2296)
        );
        // smart_resize(100, 100, min_pixels=401408, max_pixels=4014080) == (644, 644)
        assert_eq!(
            smart_resize(100, 100, 401_408, 4_014_080).unwrap(),
            (644, 644)
        );
        assert!(smart_resize(1, 300, 1, 1 << 30).is_err());
    }

    #[test]
    fn crop_pads_and_rounds_like_pil() {
        let img = RgbImage::new(200, 100);
        let (crop, region) =
            official_crop(&img, NormBox::new(0.4, 0.4, 0.6, 0.6).unwrap()).unwrap();
        assert_eq!(region.to_pixels(200, 100), (60, 30, 140, 70));
        assert_eq!((crop.width(), crop.height()), (80, 40));
        // 0.125 * 100 = 12.5 rounds to 12 (ties to even), as Python's round does.
        assert_eq!(
            NormBox::new(0.125, 0.135, 0.5, 0.5)
                .unwrap()
                .to_pixels(100, 100)
                .0,
            12
        );
        assert!(
            official_crop(
                &RgbImage::new(20, 20),
                NormBox::new(0.1, 0.1, 0.2, 0.2).unwrap()
            )
            .is_err()
        );
    }

    #[test]
    fn boxes_serialize_as_arrays_and_validate() {
        let b = NormBox::new(0.1, 0.2, 0.3, 0.4).unwrap();
        assert_eq!(serde_json::to_string(&b).unwrap(), "[0.1,0.2,0.3,0.4]");
        assert!(serde_json::from_str::<NormBox>("[0.5,0.2,0.3,0.4]").is_err());
        assert!(NormBox::new(0.0, 0.0, 1.0, f64::NAN).is_err());
    }
}
