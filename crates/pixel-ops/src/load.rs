//! Loading images with decode limits, converted to RGB as qwen-vl-utils' `to_rgb` does.
//!
//! Every input goes through [`DecodeLimits`]: the header's size is checked before any pixel buffer is
//! allocated, so a decompression bomb or a header claiming 100000x100000 is an [`Error::ImageTooLarge`],
//! not an allocation. The bytes the decoded pixels and their conversion to RGB need together are checked
//! against [`DecodeLimits::max_alloc`] from the header too ([`Error::ImageAllocTooLarge`]), and a file is
//! read only up to that many bytes ([`Error::FileTooLarge`]). Empty, truncated or non-image bytes are
//! [`Error::Decode`] naming the file.
//!
//! Conversion to [`RgbImage`]:
//! * RGBA is composited on white exactly as qwen-vl-utils (`Image.paste` with the alpha as mask:
//!   `(255 * (255 - a) + c * a) / 255` with Pillow's rounding);
//! * LA and palette images with transparency (which decode to alpha here) are composited the same way;
//!   qwen-vl-utils drops their alpha instead (`convert("RGB")`): a documented difference;
//! * grayscale is replicated to three channels; 16-bit samples are scaled to 8 bits (`round(v / 257)`;
//!   Pillow clips 16-bit grayscale instead, another difference).
//!
//! JPEG is decoded by `image`'s zune-jpeg; Pillow uses libjpeg-turbo. The two IDCTs and chroma upsamplers
//! can differ by a few levels on the same file (measured in the crate's tests), so bit-exactness with the
//! Python pipeline holds from the decoded pixels on, not from the JPEG bytes.

use std::io::{Cursor, Read};
use std::path::Path;

use image::{ColorType, DynamicImage, ImageDecoder, ImageReader, Limits, RgbImage};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Size limits applied before decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecodeLimits {
    /// Largest accepted width.
    pub max_width: u32,
    /// Largest accepted height.
    pub max_height: u32,
    /// Largest accepted `width * height`.
    pub max_pixels: u64,
    /// Most bytes decoding may take: the decoded pixels in the file's colour type plus the buffers
    /// the conversion to 8-bit RGB makes (see [`rgb_conversion_bytes`]), checked from the header
    /// before anything is decoded. Also the most bytes read from one image file, and the allocation
    /// limit handed to the `image` decoders for their own buffers.
    pub max_alloc: u64,
}

impl Default for DecodeLimits {
    /// 32768 per side and Pillow's decompression-bomb error threshold of 178,956,970 pixels
    /// (`2 * Image.MAX_IMAGE_PIXELS`), with at most 1 GiB for the decoded pixels and their RGB copy
    /// (an 8-bit RGB image of the full 178,956,970 pixels takes 537 MB and needs no copy; an 8-bit
    /// RGBA one fits up to 153,391,689 pixels, 7 bytes each).
    fn default() -> Self {
        DecodeLimits {
            max_width: 32768,
            max_height: 32768,
            max_pixels: 178_956_970,
            max_alloc: 1 << 30,
        }
    }
}

/// Decodes an image from `bytes` (PNG, JPEG, WebP, GIF or BMP, sniffed from the content) with the default
/// [`DecodeLimits`], converted to RGB.
///
/// # Errors
/// [`Error::Decode`] for bytes that are not a readable image, [`Error::ImageTooLarge`] for a size beyond
/// the limits, [`Error::ImageAllocTooLarge`] when the pixels and their RGB copy need more than
/// [`DecodeLimits::max_alloc`] bytes.
pub fn decode_image(bytes: &[u8]) -> Result<RgbImage> {
    decode_image_with(bytes, "<memory>", &DecodeLimits::default())
}

/// Reads and decodes the image file at `path` with the default [`DecodeLimits`], converted to RGB.
///
/// # Errors
/// [`Error::Io`] if the file cannot be read, [`Error::FileTooLarge`] if it holds more than
/// [`DecodeLimits::max_alloc`] bytes, else as [`decode_image_with`] (errors name the file).
pub fn load_image(path: impl AsRef<Path>) -> Result<RgbImage> {
    load_image_with(path, &DecodeLimits::default())
}

/// [`load_image`] with explicit limits.
///
/// # Errors
/// As [`load_image`].
pub fn load_image_with(path: impl AsRef<Path>, limits: &DecodeLimits) -> Result<RgbImage> {
    load_image_checked(path.as_ref(), limits, |_, _| Ok(()))
}

/// [`load_image_with`] that also hands the header's size to `check` before anything is decoded, so
/// the caller can refuse the image (e.g. over a budget of its own) before its pixels are allocated.
pub(crate) fn load_image_checked(
    path: &Path,
    limits: &DecodeLimits,
    check: impl FnOnce(u32, u32) -> Result<()>,
) -> Result<RgbImage> {
    let bytes = read_capped(path, limits.max_alloc)?;
    decode(&bytes, &path.display().to_string(), limits, true, check).map(to_rgb)
}

/// The file's bytes, or [`Error::FileTooLarge`] after reading `max_bytes + 1` of them (a special
/// file such as `/dev/zero` never ends, so the size on disk cannot be trusted).
fn read_capped(path: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let hint = file.metadata().map_or(0, |m| m.len()).min(max_bytes);
    let mut bytes = Vec::with_capacity(usize::try_from(hint).unwrap_or(0));
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(Error::FileTooLarge {
            path: path.to_path_buf(),
            max_bytes,
        });
    }
    Ok(bytes)
}

/// [`decode_image`] with explicit limits; `what` names the source in errors (a path or `<memory>`).
///
/// # Errors
/// As [`decode_image`], and [`Error::ImageAllocTooLarge`] when the decoded pixels plus their
/// conversion to RGB would need more than [`DecodeLimits::max_alloc`] bytes.
pub fn decode_image_with(bytes: &[u8], what: &str, limits: &DecodeLimits) -> Result<RgbImage> {
    decode(bytes, what, limits, true, |_, _| Ok(())).map(to_rgb)
}

/// Decodes without converting, after checking the header against `limits` (the decoded pixels alone
/// must fit in [`DecodeLimits::max_alloc`]).
///
/// # Errors
/// As [`decode_image_with`].
pub fn decode_dynamic(bytes: &[u8], what: &str, limits: &DecodeLimits) -> Result<DynamicImage> {
    decode(bytes, what, limits, false, |_, _| Ok(()))
}

/// Bytes of the buffers [`to_rgb`] makes for an image of `color` and `width x height`, on top of the
/// decoded image itself: none for 8-bit RGB; one RGB buffer for other types without alpha and for
/// 8-bit RGBA; an 8-bit RGBA copy plus the RGB buffer for other types with alpha.
pub fn rgb_conversion_bytes(color: ColorType, width: u32, height: u32) -> u64 {
    let pixels = u64::from(width) * u64::from(height);
    match color {
        ColorType::Rgb8 => 0,
        ColorType::Rgba8 => 3 * pixels,
        c if c.has_alpha() => (4 + 3) * pixels,
        _ => 3 * pixels,
    }
}

/// Decodes after checking the header against `limits` (with the RGB conversion's buffers counted
/// when `rgb`) and against the caller's `check`.
fn decode(
    bytes: &[u8],
    what: &str,
    limits: &DecodeLimits,
    rgb: bool,
    check: impl FnOnce(u32, u32) -> Result<()>,
) -> Result<DynamicImage> {
    let decode_err = |reason: String| Error::Decode {
        what: what.to_owned(),
        reason,
    };
    if bytes.is_empty() {
        return Err(decode_err("the input is empty (0 bytes)".to_owned()));
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| decode_err(e.to_string()))?;
    match reader.format() {
        None => {
            let msg = "not a recognised image format (PNG, JPEG, WebP, GIF, BMP)";
            return Err(decode_err(msg.to_owned()));
        }
        // zune-jpeg fills a truncated scan with grey instead of failing; Pillow raises "image file is
        // truncated". Require the end-of-image marker after the last start-of-scan.
        Some(image::ImageFormat::Jpeg) if !jpeg_has_eoi(bytes) => {
            let msg = "truncated JPEG: no end-of-image marker after the scan data";
            return Err(decode_err(msg.to_owned()));
        }
        Some(_) => {}
    }
    let mut lim = Limits::default();
    lim.max_image_width = Some(limits.max_width);
    lim.max_image_height = Some(limits.max_height);
    lim.max_alloc = Some(limits.max_alloc);
    reader.limits(lim);
    let decoder = reader
        .into_decoder()
        .map_err(|e| limit_or_decode(e, what, limits, bytes))?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if width > limits.max_width || height > limits.max_height || pixels > limits.max_pixels {
        return Err(too_large(what, width, height, limits));
    }
    if pixels == 0 {
        return Err(decode_err(format!("the image is {width}x{height}")));
    }
    let decoded_bytes = decoder.total_bytes();
    let conversion_bytes = if rgb {
        rgb_conversion_bytes(decoder.color_type(), width, height)
    } else {
        0
    };
    if decoded_bytes.saturating_add(conversion_bytes) > limits.max_alloc {
        return Err(Error::ImageAllocTooLarge {
            what: what.to_owned(),
            width,
            height,
            decoded_bytes,
            conversion_bytes,
            max_alloc: limits.max_alloc,
        });
    }
    check(width, height)?;
    DynamicImage::from_decoder(decoder).map_err(|e| limit_or_decode(e, what, limits, bytes))
}

/// Whether an end-of-image marker (`FF D9`) follows the last start-of-scan marker (`FF DA`): there is a
/// start of scan, and none after the last end of image. Entropy-coded data stuffs every `FF` byte as
/// `FF 00`, so neither marker appears inside a scan by accident. Only the header and the tail after the
/// last EOI are scanned (an embedded EXIF thumbnail ends with its own EOI, but the main image's scan
/// comes after it, so a truncated main image is still caught).
fn jpeg_has_eoi(bytes: &[u8]) -> bool {
    let is = |w: &[u8], m: u8| w[0] == 0xFF && w[1] == m;
    let Some(eoi) = bytes.windows(2).rposition(|w| is(w, 0xD9)) else {
        return false;
    };
    let sos_before = bytes[..eoi].windows(2).any(|w| is(w, 0xDA));
    let sos_after = bytes[eoi..].windows(2).any(|w| is(w, 0xDA));
    sos_before && !sos_after
}

fn too_large(what: &str, width: u32, height: u32, limits: &DecodeLimits) -> Error {
    Error::ImageTooLarge {
        what: what.to_owned(),
        width,
        height,
        pixels: u64::from(width) * u64::from(height),
        max_width: limits.max_width,
        max_height: limits.max_height,
        max_pixels: limits.max_pixels,
    }
}

/// Maps an `image` error: a limit error becomes [`Error::ImageTooLarge`] with the header's size.
fn limit_or_decode(e: image::ImageError, what: &str, limits: &DecodeLimits, bytes: &[u8]) -> Error {
    if let image::ImageError::Limits(_) = e {
        // Re-read the header only (no limits on dimensions, nothing decoded) to report the claimed size.
        let dims = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .ok()
            .and_then(|r| r.into_dimensions().ok());
        if let Some((w, h)) = dims {
            return too_large(what, w, h, limits);
        }
    }
    Error::Decode {
        what: what.to_owned(),
        reason: e.to_string(),
    }
}

/// Pillow's `DIV255`: `(v + 128 + ((v + 128) >> 8)) >> 8`, exact `round(v / 255)` for the blend range.
#[inline]
fn div255(v: u32) -> u8 {
    let t = v + 128;
    (((t >> 8) + t) >> 8) as u8
}

/// Pillow's `paste(..., mask=alpha)` of colour `c` with alpha `a` over white.
#[inline]
fn over_white(c: u8, a: u8) -> u8 {
    div255(255 * u32::from(255 - a) + u32::from(c) * u32::from(a))
}

/// Converts any decoded image to 8-bit RGB the way the model pipeline expects (see the module docs).
/// The buffers it makes are the ones [`rgb_conversion_bytes`] counts.
pub fn to_rgb(image: DynamicImage) -> RgbImage {
    if !image.color().has_alpha() {
        return match image {
            DynamicImage::ImageRgb8(rgb) => rgb,
            other => other.to_rgb8(),
        };
    }
    let rgba = match image {
        DynamicImage::ImageRgba8(rgba) => rgba,
        other => other.to_rgba8(),
    };
    let (w, h) = rgba.dimensions();
    let mut out = Vec::with_capacity(w as usize * h as usize * 3);
    for p in rgba.as_raw().chunks_exact(4) {
        let a = p[3];
        out.extend_from_slice(&[
            over_white(p[0], a),
            over_white(p[1], a),
            over_white(p[2], a),
        ]);
    }
    // `out` has exactly w * h * 3 bytes.
    RgbImage::from_raw(w, h, out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn div255_is_rounding_division() {
        for v in 0..=255u32 * 255 {
            assert_eq!(u32::from(div255(v)), (v * 2 + 255) / 510, "{v}");
        }
    }

    #[test]
    fn alpha_composites_on_white() {
        let mut img = image::RgbaImage::new(3, 1);
        img.put_pixel(0, 0, image::Rgba([0, 0, 0, 0]));
        img.put_pixel(1, 0, image::Rgba([0, 100, 200, 255]));
        img.put_pixel(2, 0, image::Rgba([0, 0, 0, 128]));
        let rgb = to_rgb(DynamicImage::ImageRgba8(img));
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(rgb.get_pixel(1, 0).0, [0, 100, 200]);
        assert_eq!(rgb.get_pixel(2, 0).0, [127, 127, 127]);
    }

    #[test]
    fn empty_and_garbage_are_decode_errors() {
        assert!(matches!(decode_image(&[]), Err(Error::Decode { .. })));
        assert!(matches!(
            decode_image(b"hello, not an image"),
            Err(Error::Decode { .. })
        ));
    }
}
