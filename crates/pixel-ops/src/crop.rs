//! The zoom-in operations: the official `crop_image_normalized` and DeepEyes/verl's `image_zoom_in_tool`.
//!
//! # `crop_image_normalized` (official Pixel Reasoner, [`crop_normalized`])
//! From `CropImageNormalized.call` in the official `experience_maker.py`:
//! 1. if all four values are `< 1` the box is normalized, else it is in pixels of the image the model
//!    sees and is divided by that image's width / height;
//! 2. each side is padded by `0.1` (normalized) and clamped to `[0, 1]`;
//! 3. Pillow's `crop` rejects a box whose right edge is left of its left edge (or lower above upper)
//!    with its own messages, then rounds the edges (Python `round`: ties to even);
//! 4. the crop must be larger than 28x28 (`assert w > 28 and h > 28`), else the error text is
//!    `Cropped image is too small: {w}x{h}`.
//!
//! The official code crops the already-resized model-input image ([`CropSource::ModelInput`], the
//! default). [`CropSource::Original`] cuts the same normalized region out of the full-resolution
//! original instead (what the paper argues for): coordinates are still read against the model-input
//! size, and whether a call is valid is decided there too, so both sources accept the same calls.
//!
//! # `image_zoom_in_tool` (DeepEyes / verl, [`zoom_in`])
//! From verl's `ImageZoomInTool._maybe_resize_bbox`: an absolute box, clamped to the image; rejected if
//! empty, inverted or with an aspect ratio above 100; a box with a side under 28 px is grown about its
//! centre so its shorter side is 28 (shrunk back to fit the image, shifted inside it, then floored /
//! ceiled to whole pixels) and checked again. DeepEyes' own release grows boxes slightly differently and
//! does not move them inside the image: [`ZoomRule::DeepEyes`], [`zoom_in_with`].
//!
//! NaN and infinite values are always typed errors ([`Error::NonFiniteBox`]); negative values are clamped
//! as in the official code unless [`CropConfig::reject_negative`] is set.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Which image a `crop_image_normalized` call cuts its region from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CropSource {
    /// The resized image the model sees (official behaviour).
    #[default]
    ModelInput,
    /// The full-resolution original, with the box read against the model-input size.
    Original,
}

/// Settings of `crop_image_normalized`. Defaults are the official code's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CropConfig {
    /// Padding added on every side, as a fraction of the image (official: `0.1`).
    pub padding: f64,
    /// A crop must be strictly larger than this on both sides (official: `28`, `assert w > 28 and h > 28`).
    pub min_side: u32,
    /// Which image the region is cut from (official: [`CropSource::ModelInput`]). Read by the caller,
    /// which passes that image as `target` to [`crop_normalized`].
    pub source: CropSource,
    /// Reject boxes with a negative value instead of clamping them (official: `false`, clamp).
    pub reject_negative: bool,
}

impl Default for CropConfig {
    fn default() -> Self {
        CropConfig {
            padding: 0.1,
            min_side: 28,
            source: CropSource::ModelInput,
            reject_negative: false,
        }
    }
}

/// A whole-pixel rectangle inside an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PixelRect {
    /// Left edge (inclusive).
    pub x: u32,
    /// Top edge (inclusive).
    pub y: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// Where a `crop_image_normalized` call cuts, computed without touching pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CropPlan {
    /// The padded, clamped box `[x1, y1, x2, y2]` in `[0, 1]`.
    pub normalized: [f64; 4],
    /// The crop in the coordinate frame (the model-input image); this is what is checked against
    /// [`CropConfig::min_side`].
    pub frame_rect: PixelRect,
    /// The crop in the target image (equal to `frame_rect` when the target is the model input).
    pub target_rect: PixelRect,
}

fn check_finite(bbox: [f64; 4]) -> Result<()> {
    if bbox.iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(Error::NonFiniteBox { bbox })
    }
}

/// Python's `min(max(0, v), 1)`.
fn clamp01(v: f64) -> f64 {
    v.clamp(0.0, 1.0)
}

/// Pillow's `crop` box handling: edge order checks on the float box, then Python `round` of each edge.
fn pil_round_box(x0: f64, y0: f64, x1: f64, y1: f64) -> Result<(i64, i64, i64, i64)> {
    if x1 < x0 {
        return Err(Error::CropRightLessThanLeft);
    }
    if y1 < y0 {
        return Err(Error::CropLowerLessThanUpper);
    }
    let r = |v: f64| v.round_ties_even() as i64;
    Ok((r(x0), r(y0), r(x1), r(y1)))
}

/// Plans a `crop_image_normalized` call: normalization, padding, clamping, Pillow's rounding and the
/// size check, for a target of `target_size` `(width, height)` whose box is read against `coord_frame`
/// `(width, height)` (the model-input image; equal to `target_size` for the official behaviour).
///
/// # Errors
/// [`Error::NonFiniteBox`], [`Error::NegativeBox`] (only with `reject_negative`), Pillow's
/// [`Error::CropRightLessThanLeft`] / [`Error::CropLowerLessThanUpper`], the official
/// [`Error::CropTooSmall`], and [`Error::ZeroSize`] for an empty frame or target.
pub fn plan_crop_normalized(
    target_size: (u32, u32),
    coord_frame: (u32, u32),
    bbox: [f64; 4],
    cfg: &CropConfig,
) -> Result<CropPlan> {
    check_finite(bbox)?;
    if cfg.reject_negative && bbox.iter().any(|&v| v < 0.0) {
        return Err(Error::NegativeBox { bbox });
    }
    let (fw, fh) = coord_frame;
    let (tw, th) = target_size;
    if fw == 0 || fh == 0 {
        return Err(Error::ZeroSize {
            width: fw,
            height: fh,
        });
    }
    if tw == 0 || th == 0 {
        return Err(Error::ZeroSize {
            width: tw,
            height: th,
        });
    }
    let (fwf, fhf) = (f64::from(fw), f64::from(fh));
    let p = cfg.padding;
    let [a, b, c, d] = bbox;
    let padded = if bbox.iter().all(|&v| v < 1.0) {
        [a - p, b - p, c + p, d + p]
    } else {
        [a / fwf - p, b / fhf - p, c / fwf + p, d / fhf + p]
    };
    let n = padded.map(clamp01);
    let (x0, y0, x1, y1) = pil_round_box(n[0] * fwf, n[1] * fhf, n[2] * fwf, n[3] * fhf)?;
    let (w, h) = (x1 - x0, y1 - y0);
    let min = i64::from(cfg.min_side);
    if w <= min || h <= min {
        return Err(Error::CropTooSmall {
            width: w as u32,
            height: h as u32,
        });
    }
    let frame_rect = PixelRect {
        x: x0 as u32,
        y: y0 as u32,
        width: w as u32,
        height: h as u32,
    };
    let target_rect = if target_size == coord_frame {
        frame_rect
    } else {
        let (twf, thf) = (f64::from(tw), f64::from(th));
        let (x0, y0, x1, y1) = pil_round_box(n[0] * twf, n[1] * thf, n[2] * twf, n[3] * thf)?;
        if x1 <= x0 || y1 <= y0 {
            return Err(Error::CropTooSmall {
                width: (x1 - x0) as u32,
                height: (y1 - y0) as u32,
            });
        }
        PixelRect {
            x: x0 as u32,
            y: y0 as u32,
            width: (x1 - x0) as u32,
            height: (y1 - y0) as u32,
        }
    };
    Ok(CropPlan {
        normalized: n,
        frame_rect,
        target_rect,
    })
}

/// The official `crop_image_normalized`: cuts the region of `bbox` out of `target`.
///
/// `coord_frame` is the `(width, height)` of the image the model sees: absolute coordinates are divided
/// by it and the > 28x28 check is made in it. For the official behaviour pass the model-input image as
/// `target` and its size as `coord_frame`; for [`CropSource::Original`] pass the full-resolution original
/// as `target` and the model-input size as `coord_frame`.
///
/// ```
/// use pixel_ops::crop::{CropConfig, crop_normalized};
/// use pixel_ops::image::RgbImage;
///
/// let img = RgbImage::new(812, 588);
/// let crop = crop_normalized(&img, img.dimensions(), [0.4, 0.35, 0.55, 0.5], &CropConfig::default())?;
/// assert_eq!(crop.dimensions(), (284, 206)); // padded by 0.1 on every side
/// # Ok::<(), pixel_ops::Error>(())
/// ```
///
/// # Errors
/// As [`plan_crop_normalized`]; `Display` of the official cases is the official message.
pub fn crop_normalized(
    target: &RgbImage,
    coord_frame: (u32, u32),
    bbox: [f64; 4],
    cfg: &CropConfig,
) -> Result<RgbImage> {
    let plan = plan_crop_normalized(target.dimensions(), coord_frame, bbox, cfg)?;
    let r = plan.target_rect;
    Ok(crop_filled(
        target,
        i64::from(r.x),
        i64::from(r.y),
        i64::from(r.width),
        i64::from(r.height),
    ))
}

/// Pillow's `Image.crop` with whole-pixel edges: the part outside `image` is black.
fn crop_filled(image: &RgbImage, x: i64, y: i64, width: i64, height: i64) -> RgbImage {
    let (iw, ih) = (i64::from(image.width()), i64::from(image.height()));
    let (w, h) = (width.max(0) as usize, height.max(0) as usize);
    let mut out = vec![0u8; w * h * 3];
    let (sx0, sx1) = (x.clamp(0, iw), (x + width).clamp(0, iw));
    let (sy0, sy1) = (y.clamp(0, ih), (y + height).clamp(0, ih));
    if sx1 > sx0 {
        let src = image.as_raw();
        let row_len = (sx1 - sx0) as usize * 3;
        let dx = (sx0 - x) as usize * 3;
        for sy in sy0..sy1 {
            let s = (sy as usize * iw as usize + sx0 as usize) * 3;
            let d = (sy - y) as usize * w * 3 + dx;
            out[d..d + row_len].copy_from_slice(&src[s..s + row_len]);
        }
    }
    // The buffer has exactly w * h * 3 bytes, so `from_raw` cannot fail.
    RgbImage::from_raw(w as u32, h as u32, out).unwrap_or_default()
}

/// Which implementation's box rule `image_zoom_in_tool` follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZoomRule {
    /// verl's `ImageZoomInTool._maybe_resize_bbox` (the tool as upstreamed into verl): a small box grows
    /// to a 28 px shorter side, is shrunk to fit and shifted inside the image. Errors print verl's message.
    #[default]
    Verl,
    /// DeepEyes' own `VisualToolBoxV5.maybe_resize_bbox` (Visual-Agent/DeepEyes): a small box grows to
    /// half-sides of `ceil(side * 28 / min_side / 2)` about its centre, floored / ceiled, and is not moved
    /// back inside the image (the part outside crops to black, as Pillow's `crop` does). Errors print
    /// `ZOOM IN ARGUMENTS ARE INVALID`.
    DeepEyes,
}

/// Minimum side of a verl `image_zoom_in_tool` crop (`ImageZoomInTool.MIN_DIMENSION`).
pub const ZOOM_MIN_SIDE: u32 = 28;
/// Largest aspect ratio of a verl zoom-in box.
pub const ZOOM_MAX_ASPECT: f64 = 100.0;

/// verl's `_validate_bbox` (DeepEyes checks the same): a non-empty, non-inverted box with an aspect
/// ratio of at most [`ZOOM_MAX_ASPECT`]. (`l < r` already makes `r - l` non-zero in IEEE arithmetic, so
/// verl's separate zero-side check is implied.)
fn zoom_box_valid(l: f64, t: f64, r: f64, b: f64) -> bool {
    if !(l < r && t < b) {
        return false;
    }
    let (h, w) = (b - t, r - l);
    h.max(w) / h.min(w) <= ZOOM_MAX_ASPECT
}

/// verl's `_maybe_resize_bbox`: the box `image_zoom_in_tool` actually crops, `[left, top, right, bottom]`
/// in pixels of an image of `image_size` `(width, height)`.
///
/// # Errors
/// [`Error::NonFiniteBox`]; [`Error::ZoomBoxInvalid`] (verl's message) when the box is empty, inverted,
/// too elongated, or still under 28 px after growing.
pub fn zoom_in_box(image_size: (u32, u32), bbox: [f64; 4]) -> Result<[f64; 4]> {
    check_finite(bbox)?;
    let invalid = Error::ZoomBoxInvalid {
        bbox,
        min: ZOOM_MIN_SIDE,
    };
    let (iw, ih) = (f64::from(image_size.0), f64::from(image_size.1));
    let min_dim = f64::from(ZOOM_MIN_SIDE);
    let left = bbox[0].max(0.0);
    let top = bbox[1].max(0.0);
    let right = bbox[2].min(iw);
    let bottom = bbox[3].min(ih);
    if !zoom_box_valid(left, top, right, bottom) {
        return Err(invalid);
    }
    let (height, width) = (bottom - top, right - left);
    let mut current = [left, top, right, bottom];
    if height < min_dim || width < min_dim {
        let cx = (left + right) / 2.0;
        let cy = (top + bottom) / 2.0;
        let ratio = min_dim / height.min(width);
        let mut tw = width * ratio;
        let mut th = height * ratio;
        if tw > iw {
            let s = iw / tw;
            tw = iw;
            th *= s;
        }
        if th > ih {
            let s = ih / th;
            th = ih;
            tw *= s;
        }
        let mut nl = cx - tw / 2.0;
        let mut nt = cy - th / 2.0;
        if nl < 0.0 {
            nl = 0.0;
        }
        if nt < 0.0 {
            nt = 0.0;
        }
        if nl + tw > iw {
            nl = iw - tw;
        }
        if nt + th > ih {
            nt = ih - th;
        }
        current = [nl.floor(), nt.floor(), (nl + tw).ceil(), (nt + th).ceil()];
    }
    let [l, t, r, b] = current;
    if !zoom_box_valid(l, t, r, b) {
        return Err(invalid);
    }
    if b.floor() - t.floor() < min_dim || r.floor() - l.floor() < min_dim {
        return Err(invalid);
    }
    Ok(current)
}

/// DeepEyes' `maybe_resize_bbox` ([`ZoomRule::DeepEyes`]).
///
/// # Errors
/// [`Error::NonFiniteBox`]; [`Error::ZoomArgumentsInvalid`] when the clamped or the grown box is empty,
/// inverted or has an aspect ratio above 100.
pub fn zoom_in_box_deepeyes(image_size: (u32, u32), bbox: [f64; 4]) -> Result<[f64; 4]> {
    check_finite(bbox)?;
    let (iw, ih) = (f64::from(image_size.0), f64::from(image_size.1));
    let left = bbox[0].max(0.0);
    let top = bbox[1].max(0.0);
    let right = bbox[2].min(iw);
    let bottom = bbox[3].min(ih);
    if !zoom_box_valid(left, top, right, bottom) {
        return Err(Error::ZoomArgumentsInvalid);
    }
    let (height, width) = (bottom - top, right - left);
    let min_dim = f64::from(ZOOM_MIN_SIDE);
    if height >= min_dim && width >= min_dim {
        return Ok([left, top, right, bottom]);
    }
    let (cx, cy) = ((left + right) / 2.0, (top + bottom) / 2.0);
    let ratio = min_dim / height.min(width);
    let half_h = (height * ratio * 0.5).ceil();
    let half_w = (width * ratio * 0.5).ceil();
    let grown = [
        (cx - half_w).floor(),
        (cy - half_h).floor(),
        (cx + half_w).ceil(),
        (cy + half_h).ceil(),
    ];
    if !zoom_box_valid(grown[0], grown[1], grown[2], grown[3]) {
        return Err(Error::ZoomArgumentsInvalid);
    }
    Ok(grown)
}

/// `image_zoom_in_tool` under `rule`: crops the absolute box `bbox`, grown as the rule says, out of
/// `image` with Pillow's `crop` rounding (parts outside the image are black).
///
/// # Errors
/// As [`zoom_in_box`] or [`zoom_in_box_deepeyes`].
pub fn zoom_in_with(image: &RgbImage, bbox: [f64; 4], rule: ZoomRule) -> Result<RgbImage> {
    let [l, t, r, b] = match rule {
        ZoomRule::Verl => zoom_in_box(image.dimensions(), bbox)?,
        ZoomRule::DeepEyes => zoom_in_box_deepeyes(image.dimensions(), bbox)?,
    };
    let (x0, y0, x1, y1) = pil_round_box(l, t, r, b)?;
    Ok(crop_filled(image, x0, y0, x1 - x0, y1 - y0))
}

/// verl's `image_zoom_in_tool` ([`ZoomRule::Verl`]): crops the absolute box `bbox` (grown to at least
/// 28 px about its centre, see [`zoom_in_box`]) out of `image` with Pillow's `crop` rounding.
///
/// # Errors
/// As [`zoom_in_box`].
pub fn zoom_in(image: &RgbImage, bbox: [f64; 4]) -> Result<RgbImage> {
    zoom_in_with(image, bbox, ZoomRule::Verl)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
        })
    }

    #[test]
    fn normalized_and_absolute_boxes_agree() {
        let img = gradient(1000, 500);
        let cfg = CropConfig::default();
        let a = crop_normalized(&img, (1000, 500), [0.2, 0.2, 0.4, 0.6], &cfg).unwrap();
        let b = crop_normalized(&img, (1000, 500), [200.0, 100.0, 400.0, 300.0], &cfg).unwrap();
        assert_eq!(a.dimensions(), (400, 300));
        assert_eq!(a, b);
        // The crop starts at (100, 50) of the source.
        assert_eq!(a.get_pixel(0, 0).0, [100, 50, 150]);
    }

    #[test]
    fn official_error_messages() {
        let cfg = CropConfig::default();
        let e =
            plan_crop_normalized((100, 100), (100, 100), [0.5, 0.5, 0.5, 0.5], &cfg).unwrap_err();
        assert_eq!(e.to_string(), "Cropped image is too small: 20x20");
        let e =
            plan_crop_normalized((100, 100), (100, 100), [0.9, 0.1, 0.1, 0.9], &cfg).unwrap_err();
        assert_eq!(e.to_string(), "Coordinate 'right' is less than 'left'");
        let e =
            plan_crop_normalized((100, 100), (100, 100), [0.1, 0.9, 0.9, 0.1], &cfg).unwrap_err();
        assert_eq!(e.to_string(), "Coordinate 'lower' is less than 'upper'");
        let e = plan_crop_normalized((100, 100), (100, 100), [f64::NAN, 0.1, 0.9, 0.9], &cfg)
            .unwrap_err();
        assert!(matches!(e, Error::NonFiniteBox { .. }));
    }

    #[test]
    fn negative_values_clamp_unless_rejected() {
        let mut cfg = CropConfig::default();
        let p = plan_crop_normalized((100, 100), (100, 100), [-0.2, 0.0, 0.5, 0.5], &cfg).unwrap();
        assert_eq!(
            p.frame_rect,
            PixelRect {
                x: 0,
                y: 0,
                width: 60,
                height: 60
            }
        );
        cfg.reject_negative = true;
        assert!(matches!(
            plan_crop_normalized((100, 100), (100, 100), [-0.2, 0.0, 0.5, 0.5], &cfg),
            Err(Error::NegativeBox { .. })
        ));
    }

    #[test]
    fn original_source_maps_the_same_region() {
        let original = gradient(400, 200);
        let cfg = CropConfig {
            source: CropSource::Original,
            ..CropConfig::default()
        };
        let p =
            plan_crop_normalized((400, 200), (200, 100), [50.0, 25.0, 150.0, 75.0], &cfg).unwrap();
        assert_eq!(
            p.frame_rect,
            PixelRect {
                x: 30,
                y: 15,
                width: 140,
                height: 70
            }
        );
        assert_eq!(
            p.target_rect,
            PixelRect {
                x: 60,
                y: 30,
                width: 280,
                height: 140
            }
        );
        let c = crop_normalized(&original, (200, 100), [50.0, 25.0, 150.0, 75.0], &cfg).unwrap();
        assert_eq!(c.dimensions(), (280, 140));
        assert_eq!(c.get_pixel(0, 0).0, [60, 30, 90]);
    }

    #[test]
    fn zoom_in_grows_small_boxes_about_the_centre() {
        // A 10x20 box centred at (105, 60): the shorter side becomes 28, the longer 56.
        assert_eq!(
            zoom_in_box((200, 100), [100.0, 50.0, 110.0, 70.0]).unwrap(),
            [91.0, 32.0, 119.0, 88.0]
        );
        // Near the corner the grown box is shifted inside the image.
        assert_eq!(
            zoom_in_box((200, 100), [0.0, 0.0, 10.0, 10.0]).unwrap(),
            [0.0, 0.0, 28.0, 28.0]
        );
        let img = gradient(200, 100);
        assert_eq!(
            zoom_in(&img, [100.0, 50.0, 110.0, 70.0])
                .unwrap()
                .dimensions(),
            (28, 56)
        );
        let e = zoom_in_box((200, 100), [50.0, 50.0, 40.0, 60.0]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Error: The specified bounding box [50, 50, 40, 60] is invalid or results in a crop smaller than the minimum size of 28x28."
        );
        // Aspect ratio above 100.
        assert!(zoom_in_box((2000, 100), [0.0, 0.0, 1500.0, 10.0]).is_err());
    }
}
