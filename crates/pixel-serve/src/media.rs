//! Loading the images of a request under the server's limits: base64 `data:` URLs, and files inside the
//! operator's image folder. Every image's header is checked against the per-image and the remaining
//! per-request pixel budget before its pixels are allocated.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use image::RgbImage;
use pixel_ops::DecodeLimits;

use crate::config::ServeConfig;
use crate::error::ApiError;
use crate::request::ImageSource;

/// Longest side accepted (the decoder's own limit).
const MAX_SIDE: u32 = 32_768;

/// Loads images one after the other, keeping the request's running pixel total.
pub struct ImageLoader<'a> {
    config: &'a ServeConfig,
    root: Option<PathBuf>,
    pixels_left: u64,
}

impl<'a> ImageLoader<'a> {
    /// A loader for one request; `root` is the canonical [`ServeConfig::image_root`], if any.
    pub fn new(config: &'a ServeConfig, root: Option<PathBuf>) -> Self {
        Self {
            config,
            root,
            pixels_left: config.max_request_pixels,
        }
    }

    /// Loads one image; `param` names it in errors.
    ///
    /// # Errors
    /// 400 for bad base64, bytes that are not an image, an image over the limits, a path without an image
    /// folder, outside it, or unreadable.
    pub fn load(&mut self, source: &ImageSource, param: &str) -> Result<RgbImage, ApiError> {
        let max_pixels = self.config.max_image_pixels.min(self.pixels_left);
        let limits = DecodeLimits {
            max_width: MAX_SIDE,
            max_height: MAX_SIDE,
            max_pixels,
            // RGBA at 16 bits per channel plus the RGB copy is the worst case, 11 bytes a pixel.
            max_alloc: max_pixels.saturating_mul(11).max(1 << 20),
        };
        let image = match source {
            ImageSource::Data(data) => {
                let bytes = decode_base64(data).map_err(|m| ApiError::invalid(param, m))?;
                pixel_ops::load::decode_image_with(&bytes, "image", &limits)
            }
            ImageSource::Path(path) => {
                let path = self
                    .resolve(path)
                    .map_err(|m| ApiError::invalid(param, m))?;
                pixel_ops::load::load_image_with(&path, &limits)
            }
        }
        .map_err(|e| ApiError::invalid(param, image_error(&e, max_pixels, self.config)))?;
        self.pixels_left = self
            .pixels_left
            .saturating_sub(u64::from(image.width()) * u64::from(image.height()));
        Ok(image)
    }

    /// The file `path` names inside the image folder.
    fn resolve(&self, path: &str) -> Result<PathBuf, String> {
        let Some(root) = &self.root else {
            return Err(
                "image paths are not accepted by this server (no image folder): send a data: URL"
                    .into(),
            );
        };
        let given = Path::new(path);
        let joined = if given.is_absolute() {
            given.to_path_buf()
        } else {
            root.join(given)
        };
        // Canonical paths resolve `..` and symbolic links, so the prefix test is the real location.
        let real = joined
            .canonicalize()
            .map_err(|_| format!("no image file {path:?} in the image folder"))?;
        if !real.starts_with(root) {
            return Err(format!("the image path {path:?} leaves the image folder"));
        }
        if !real.is_file() {
            return Err(format!("{path:?} is not a file"));
        }
        Ok(real)
    }
}

/// Base64 with or without padding; whitespace (line breaks of MIME encoders) is skipped.
fn decode_base64(data: &str) -> Result<Vec<u8>, String> {
    let compact: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    STANDARD
        .decode(&compact)
        .or_else(|_| STANDARD_NO_PAD.decode(&compact))
        .map_err(|e| format!("the data URL is not valid base64: {e}"))
}

/// An image error in words, without server paths.
fn image_error(e: &pixel_ops::Error, max_pixels: u64, config: &ServeConfig) -> String {
    match e {
        pixel_ops::Error::ImageTooLarge { .. } | pixel_ops::Error::ImageAllocTooLarge { .. } => {
            format!(
                "the image is over the size limit ({max_pixels} pixels left of {} per image and {} \
                 per request, {MAX_SIDE} per side)",
                config.max_image_pixels, config.max_request_pixels
            )
        }
        pixel_ops::Error::FileTooLarge { .. } => "the image file is too large".into(),
        pixel_ops::Error::Io { .. } => "the image file cannot be read".into(),
        _ => "the bytes are not a readable image (PNG, JPEG, WebP, GIF or BMP)".into(),
    }
}
