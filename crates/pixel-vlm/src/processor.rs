//! The Qwen2.5-VL processor: images and videos to normalised patches `[N, 1176]` plus `grid_thw`, and
//! prompt text to token ids with each `<|image_pad|>` / `<|video_pad|>` expanded to one pad per merged
//! visual token.
//!
//! The pixel path is the official one, exactly: qwen-vl-utils' `smart_resize` and Pillow's bicubic resize
//! (both from `pixel-ops`, bit-exact with Pillow 13), then `transformers`' `Qwen2VLImageProcessor` on an
//! image that already has its final size (its own resize is then a no-op). That processor rescales and
//! normalises in one fused `f32` step, `(x - mean * 255) / (std * 255)`, which [`ImageProcessor`]
//! reproduces bit for bit, then cuts patches of `temporal x 14 x 14` in the element order of `patchify`:
//! rows ordered by (time, merge block row, merge block column, row in block, column in block), columns by
//! (channel, time, y, x). A still image is repeated to fill the temporal patch.
//!
//! One option departs from it and is off by default: [`PreprocessorConfig::standardize_per_image`]
//! (`"standardize_per_image": true` in `preprocessor_config.json`) standardises each image to zero mean and
//! unit standard deviation before patchifying, for models trained from scratch on synthetic images.
//!
//! Video frames are taken at the size they come in when that size is already what `smart_resize` gives
//! (frames prepared by `pixel_ops::Video::resized`, as qwen-vl-utils prepares them); otherwise they are
//! resized with Pillow's bicubic like images. qwen-vl-utils resizes frames decoded from a video *file*
//! with torchvision instead, which differs by a few levels at sharp edges.
//!
//! ```
//! use pixel_vlm::{chat_template::RenderOptions, processor::Processor};
//!
//! // Any Qwen2.5-VL folder; here the tiny test tokenizer.
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tokenizer");
//! let processor = Processor::from_pretrained(dir)?;
//! let messages = serde_json::json!([{"role": "user", "content": [
//!     {"type": "image"}, {"type": "text", "text": "What is this?"}]}]);
//! let prompt = processor.apply_chat_template(&messages, &RenderOptions::generation())?;
//! let image = image::RgbImage::new(97, 61); // 61x97 -> 56x84: 4x6 patches, 6 tokens
//! let inputs = processor.process(&prompt, &[image], &[])?;
//! assert_eq!(inputs.images.grid_thw, [[1, 4, 6]]);
//! assert_eq!(inputs.images.pixel_values.len(), 24 * 1176);
//! let pads = processor.tokenizer.special().image_pad;
//! assert_eq!(inputs.input_ids.iter().filter(|&&id| id == pads).count(), 6);
//! let positions = inputs.rope_index(&processor.rope_config())?; // [3, seq] + rope_delta
//! assert_eq!(positions.len(), inputs.input_ids.len());
//! # Ok::<(), pixel_vlm::VlmError>(())
//! ```

use std::path::{Path, PathBuf};

use image::RgbImage;
use pixel_ops::resize::{PixelLimits, resize_bicubic, smart_resize};
use pixel_ops::video::Video;
use serde::{Deserialize, Serialize};

use crate::chat_template::{ChatTemplate, RenderOptions};
use crate::error::{Result, VlmError, read_text};
use crate::rope_index::{RopeIndex, RopeIndexConfig, get_rope_index};
use crate::tokenizer::QwenTokenizer;

/// The `size` field of `preprocessor_config.json`: `{shortest_edge, longest_edge}` in the newer layout
/// (pixel counts, despite the names), `{min_pixels, max_pixels}` in some released files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SizeConfig {
    /// Minimum pixel count.
    #[serde(alias = "min_pixels")]
    pub shortest_edge: Option<u64>,
    /// Maximum pixel count.
    #[serde(alias = "max_pixels")]
    pub longest_edge: Option<u64>,
}

/// `preprocessor_config.json` of a Qwen2.5-VL checkpoint. Defaults are `transformers`' for
/// `Qwen2VLImageProcessor` (`min_pixels` 3,136, `max_pixels` 12,845,056, patch 14, temporal 2, merge 2,
/// CLIP mean/std, rescale 1/255).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PreprocessorConfig {
    /// Smallest pixel count of a resized image.
    pub min_pixels: Option<u64>,
    /// Largest pixel count of a resized image.
    pub max_pixels: Option<u64>,
    /// The newer spelling of the two bounds; `min_pixels`/`max_pixels` win where both are given.
    pub size: Option<SizeConfig>,
    /// Side of a square patch in pixels.
    pub patch_size: usize,
    /// Frames per temporal patch.
    pub temporal_patch_size: usize,
    /// Patches merged per side into one LLM token.
    pub merge_size: usize,
    /// Per-channel mean (RGB), in `[0, 1]` units.
    pub image_mean: Vec<f32>,
    /// Per-channel standard deviation (RGB), in `[0, 1]` units.
    pub image_std: Vec<f32>,
    /// Multiply pixel values by `rescale_factor`.
    pub do_rescale: bool,
    /// The rescale factor (1/255).
    pub rescale_factor: f64,
    /// Subtract the mean and divide by the standard deviation.
    pub do_normalize: bool,
    /// Not a `transformers` option (off by default, where the output is exactly `transformers`'): after
    /// rescaling and normalising, standardise each image to zero mean and unit standard deviation over
    /// all its values (every channel and pixel; each video frame on its own), before patchifying. The
    /// divisor is `max(std, 1 / sqrt(n))` for `n` values, as in TensorFlow's `per_image_standardization`,
    /// so a uniform image becomes all zeros. A model trained from scratch on mostly-white synthetic images
    /// needs it: without it, nearly every input value is the same large positive number.
    pub standardize_per_image: bool,
}

impl Default for PreprocessorConfig {
    fn default() -> Self {
        PreprocessorConfig {
            min_pixels: None,
            max_pixels: None,
            size: None,
            patch_size: 14,
            temporal_patch_size: 2,
            merge_size: 2,
            image_mean: vec![0.481_454_66, 0.457_827_5, 0.408_210_73],
            image_std: vec![0.268_629_54, 0.261_302_6, 0.275_777_1],
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            standardize_per_image: false,
        }
    }
}

impl PreprocessorConfig {
    /// Reads a `preprocessor_config.json`.
    ///
    /// # Errors
    /// [`VlmError::Io`] / [`VlmError::Json`] for an unreadable or malformed file, [`VlmError::Config`]
    /// for values the processor cannot use.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = read_text(path)?;
        let config: PreprocessorConfig =
            serde_json::from_str(&text).map_err(|e| VlmError::Json {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        config.validate()?;
        Ok(config)
    }

    /// The pixel-count bounds of a resized image.
    pub fn limits(&self) -> PixelLimits {
        let default = PixelLimits::new(56 * 56, 28 * 28 * 16384);
        PixelLimits::new(
            self.min_pixels
                .or(self.size.and_then(|s| s.shortest_edge))
                .unwrap_or(default.min_pixels),
            self.max_pixels
                .or(self.size.and_then(|s| s.longest_edge))
                .unwrap_or(default.max_pixels),
        )
    }

    /// Sides of resized images are multiples of this: `patch_size * merge_size` (28).
    pub fn factor(&self) -> usize {
        self.patch_size * self.merge_size
    }

    /// Values per patch row: `3 * temporal_patch_size * patch_size^2` (1,176).
    pub fn patch_dim(&self) -> usize {
        3 * self.temporal_patch_size * self.patch_size * self.patch_size
    }

    /// Checks that the values can be used.
    ///
    /// # Errors
    /// [`VlmError::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, reason: String| {
            Err(VlmError::Config {
                field: field.to_string(),
                reason,
            })
        };
        for (field, v) in [
            ("patch_size", self.patch_size),
            ("temporal_patch_size", self.temporal_patch_size),
            ("merge_size", self.merge_size),
        ] {
            if v == 0 {
                return bad(field, "must be at least 1".into());
            }
        }
        for (field, v) in [
            ("image_mean", &self.image_mean),
            ("image_std", &self.image_std),
        ] {
            if v.len() != 3 || v.iter().any(|x| !x.is_finite()) {
                return bad(field, format!("needs 3 finite values (RGB), got {v:?}"));
            }
        }
        if self.image_std.contains(&0.0) {
            return bad("image_std", "must not be zero".into());
        }
        if !(self.rescale_factor.is_finite() && self.rescale_factor > 0.0) {
            return bad(
                "rescale_factor",
                format!("must be positive, got {}", self.rescale_factor),
            );
        }
        let limits = self.limits();
        if limits.min_pixels > limits.max_pixels {
            return bad(
                "min_pixels",
                format!(
                    "{} is above max_pixels {}",
                    limits.min_pixels, limits.max_pixels
                ),
            );
        }
        Ok(())
    }
}

/// Patches of several images (or videos), concatenated: `pixel_values` is `[rows, patch_dim]` row-major
/// with `rows = Σ t·h·w` over `grid_thw`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Patches {
    /// Normalised patch rows, row-major.
    pub pixel_values: Vec<f32>,
    /// `[t, h, w]` in patches, one per image/video.
    pub grid_thw: Vec<[usize; 3]>,
    /// Values per row (1,176 for Qwen2.5-VL).
    pub patch_dim: usize,
}

impl Patches {
    /// Number of patch rows.
    pub fn rows(&self) -> usize {
        self.grid_thw.iter().map(|g| g[0] * g[1] * g[2]).sum()
    }

    /// LLM tokens of item `i`: `t·h·w / merge²`.
    pub fn tokens_of(&self, i: usize, merge_size: usize) -> usize {
        let g = self.grid_thw[i];
        g[0] * g[1] * g[2] / (merge_size * merge_size)
    }

    /// Appends another batch of patches (of the same patch size).
    pub fn extend(&mut self, other: Patches) {
        if self.grid_thw.is_empty() {
            self.patch_dim = other.patch_dim;
        }
        self.pixel_values.extend(other.pixel_values);
        self.grid_thw.extend(other.grid_thw);
    }
}

/// Images and video frames to patches (`Qwen2VLImageProcessor` / `Qwen2VLVideoProcessor`).
#[derive(Debug, Clone)]
pub struct ImageProcessor {
    config: PreprocessorConfig,
    /// `u8` value -> normalised `f32`, per channel, in the processor's exact arithmetic.
    lut: [[f32; 256]; 3],
}

impl ImageProcessor {
    /// A processor for `config`.
    ///
    /// # Errors
    /// [`VlmError::Config`] if the config is invalid.
    pub fn new(config: PreprocessorConfig) -> Result<Self> {
        config.validate()?;
        let mut lut = [[0f32; 256]; 3];
        // The fused form of `transformers`' torchvision backend: mean and std are scaled by 1/rescale_factor
        // in f32, then `(x - mean') / std'` in f32.
        let inv = (1.0 / config.rescale_factor) as f32;
        for (c, table) in lut.iter_mut().enumerate() {
            let (mean, std) = (config.image_mean[c], config.image_std[c]);
            for (v, out) in table.iter_mut().enumerate() {
                let x = v as f32;
                *out = match (config.do_rescale, config.do_normalize) {
                    (true, true) => (x - mean * inv) / (std * inv),
                    (false, true) => (x - mean) / std,
                    (true, false) => x * config.rescale_factor as f32,
                    (false, false) => x,
                };
            }
        }
        Ok(ImageProcessor { config, lut })
    }

    /// The config.
    pub fn config(&self) -> &PreprocessorConfig {
        &self.config
    }

    /// The model-input size `(height, width)` of an image: `smart_resize` with the config's bounds.
    ///
    /// # Errors
    /// As [`pixel_ops::resize::smart_resize`] (aspect ratio above 200, zero size).
    pub fn target_size(&self, height: u32, width: u32) -> Result<(u32, u32)> {
        Ok(smart_resize(
            height,
            width,
            self.config.factor() as u32,
            self.config.limits(),
        )?)
    }

    /// Resizes an image to its model-input size (a borrow when it already has it).
    ///
    /// # Errors
    /// As [`ImageProcessor::target_size`].
    pub fn fit<'a>(&self, image: &'a RgbImage) -> Result<std::borrow::Cow<'a, RgbImage>> {
        let (h, w) = self.target_size(image.height(), image.width())?;
        if (h, w) == (image.height(), image.width()) {
            Ok(std::borrow::Cow::Borrowed(image))
        } else {
            Ok(std::borrow::Cow::Owned(resize_bicubic(image, w, h)?))
        }
    }

    /// Patches of several images, in order.
    ///
    /// # Errors
    /// As [`ImageProcessor::target_size`].
    pub fn preprocess_images(&self, images: &[RgbImage]) -> Result<Patches> {
        let mut out = Patches {
            patch_dim: self.config.patch_dim(),
            ..Default::default()
        };
        for image in images {
            let image = self.fit(image)?;
            let frames = vec![image.as_ref(); self.config.temporal_patch_size];
            out.grid_thw
                .push(self.patchify_into(&frames, &mut out.pixel_values)?);
        }
        Ok(out)
    }

    /// Patches of several videos, in order, and their `second_per_grid_ts` (`temporal_patch_size /
    /// sample_fps`, as `f32` like the processor's tensor). A frame count that is not a multiple of the
    /// temporal patch is padded by repeating the last frame.
    ///
    /// # Errors
    /// As [`ImageProcessor::target_size`].
    pub fn preprocess_videos(&self, videos: &[Video]) -> Result<(Patches, Vec<f32>)> {
        let mut out = Patches {
            patch_dim: self.config.patch_dim(),
            ..Default::default()
        };
        let mut second_per_grid_ts = Vec::with_capacity(videos.len());
        for video in videos {
            let fitted: Vec<std::borrow::Cow<'_, RgbImage>> = video
                .frames()
                .iter()
                .map(|f| self.fit(f))
                .collect::<Result<_>>()?;
            let mut frames: Vec<&RgbImage> = fitted.iter().map(|f| f.as_ref()).collect();
            let t = self.config.temporal_patch_size;
            while !frames.len().is_multiple_of(t) {
                frames.push(frames[frames.len() - 1]);
            }
            out.grid_thw
                .push(self.patchify_into(&frames, &mut out.pixel_values)?);
            second_per_grid_ts.push((t as f64 / video.info().sample_fps) as f32);
        }
        Ok((out, second_per_grid_ts))
    }

    /// Patchifies frames that already have their model-input size (sides multiples of
    /// `patch_size * merge_size`, a count that is a multiple of `temporal_patch_size`), appending the rows
    /// to `out` and returning `[t, h, w]` in patches.
    ///
    /// # Errors
    /// [`VlmError::Input`] for no frames, frames of different sizes, or sizes/counts that do not divide.
    pub fn patchify_into(&self, frames: &[&RgbImage], out: &mut Vec<f32>) -> Result<[usize; 3]> {
        let (p, tp, m) = (
            self.config.patch_size,
            self.config.temporal_patch_size,
            self.config.merge_size,
        );
        let Some(first) = frames.first() else {
            return Err(VlmError::Input {
                input: "frames",
                reason: "no frames".into(),
            });
        };
        let (w, h) = (first.width() as usize, first.height() as usize);
        if frames.iter().any(|f| f.dimensions() != first.dimensions()) {
            return Err(VlmError::Input {
                input: "frames",
                reason: "frames differ in size".into(),
            });
        }
        if !h.is_multiple_of(p * m)
            || !w.is_multiple_of(p * m)
            || h == 0
            || w == 0
            || !frames.len().is_multiple_of(tp)
        {
            return Err(VlmError::Input {
                input: "frames",
                reason: format!(
                    "{} frames of {w}x{h}: sides must be positive multiples of {} and the count a multiple of {tp}",
                    frames.len(),
                    p * m
                ),
            });
        }
        let (gt, gh, gw) = (frames.len() / tp, h / p, w / p);
        let dim = self.config.patch_dim();
        let per_t = gh * gw;
        let base = out.len();
        out.resize(base + gt * per_t * dim, 0.0);
        let plane_len = h * w;
        let mut planes: Vec<f32> = Vec::new();
        for t in 0..gt {
            // Normalise the frames of this temporal patch once, as channel planes; a frame repeated (a
            // still image) is normalised once.
            let group = &frames[t * tp..(t + 1) * tp];
            let mut plane_of = Vec::with_capacity(tp);
            planes.clear();
            for (i, frame) in group.iter().enumerate() {
                if let Some(j) = (0..i).find(|&j| std::ptr::eq(group[j], *frame)) {
                    plane_of.push(plane_of[j]);
                    continue;
                }
                plane_of.push(planes.len() / (3 * plane_len));
                let start = planes.len();
                for (c, lut) in self.lut.iter().enumerate() {
                    planes.extend(frame.as_raw().chunks_exact(3).map(|px| lut[px[c] as usize]));
                }
                if self.config.standardize_per_image {
                    standardize(&mut planes[start..]);
                }
            }
            let rows = &mut out[base + t * per_t * dim..base + (t + 1) * per_t * dim];
            for (r, row) in rows.chunks_exact_mut(dim).enumerate() {
                // r = ((bh * gw/m + bw) * m + mh) * m + mw
                let (block, inner) = (r / (m * m), r % (m * m));
                let (bh, bw) = (block / (gw / m), block % (gw / m));
                let (y0, x0) = ((bh * m + inner / m) * p, (bw * m + inner % m) * p);
                let mut k = 0;
                for c in 0..3 {
                    for &f in &plane_of {
                        let plane = &planes[(f * 3 + c) * plane_len..(f * 3 + c + 1) * plane_len];
                        for y in y0..y0 + p {
                            row[k..k + p].copy_from_slice(&plane[y * w + x0..y * w + x0 + p]);
                            k += p;
                        }
                    }
                }
            }
        }
        Ok([gt, gh, gw])
    }
}

/// Standardises values in place to zero mean and unit standard deviation (population statistics in f64),
/// dividing by `max(std, 1 / sqrt(n))` so that a constant input becomes zeros instead of dividing by zero.
fn standardize(values: &mut [f32]) {
    if values.is_empty() {
        return;
    }
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = values
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    let scale = var.sqrt().max(1.0 / n.sqrt());
    for v in values.iter_mut() {
        *v = ((f64::from(*v) - mean) / scale) as f32;
    }
}

/// Everything the model needs for one prompt.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessorOutput {
    /// Token ids with the visual placeholders expanded.
    pub input_ids: Vec<u32>,
    /// Image patches and grids, in prompt order.
    pub images: Patches,
    /// Video patches and grids, in prompt order.
    pub videos: Patches,
    /// Seconds per temporal patch, one per video.
    pub second_per_grid_ts: Vec<f32>,
}

/// Tokenizer, chat template and image processor of one checkpoint.
#[derive(Debug)]
pub struct Processor {
    /// The tokenizer.
    pub tokenizer: QwenTokenizer,
    /// The checkpoint's chat template.
    pub template: ChatTemplate,
    /// Images (`preprocessor_config.json`).
    pub image_processor: ImageProcessor,
    /// Videos (`video_preprocessor_config.json` where present, else the image config).
    pub video_processor: ImageProcessor,
}

impl Processor {
    /// Loads `tokenizer.json`, the chat template, `preprocessor_config.json` and (optional)
    /// `video_preprocessor_config.json` from a checkpoint folder.
    ///
    /// # Errors
    /// [`VlmError::NotACheckpoint`] if `dir` is not a folder, else the errors of the parts.
    pub fn from_pretrained(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(VlmError::NotACheckpoint {
                path: dir.to_path_buf(),
                reason: "not a folder".into(),
            });
        }
        let tokenizer = QwenTokenizer::from_dir(dir)?;
        let template = ChatTemplate::from_dir(dir)?;
        let image_config = PreprocessorConfig::from_file(dir.join("preprocessor_config.json"))?;
        let video_path: PathBuf = dir.join("video_preprocessor_config.json");
        let video_config = if video_path.is_file() {
            PreprocessorConfig::from_file(&video_path)?
        } else {
            image_config.clone()
        };
        Ok(Processor {
            tokenizer,
            template,
            image_processor: ImageProcessor::new(image_config)?,
            video_processor: ImageProcessor::new(video_config)?,
        })
    }

    /// Renders messages with the chat template.
    ///
    /// # Errors
    /// As [`ChatTemplate::render`].
    pub fn apply_chat_template<M: Serialize + ?Sized>(
        &self,
        messages: &M,
        options: &RenderOptions,
    ) -> Result<String> {
        self.template.render(messages, options)
    }

    /// Replaces the `k`-th `<|image_pad|>` of `text` with `image_tokens[k]` pads, and likewise videos.
    ///
    /// # Errors
    /// [`VlmError::PlaceholderCount`] if the text has a different number of placeholders.
    pub fn expand_placeholders(
        &self,
        text: &str,
        image_tokens: &[usize],
        video_tokens: &[usize],
    ) -> Result<String> {
        const IMAGE: &str = "<|image_pad|>";
        const VIDEO: &str = "<|video_pad|>";
        for (kind, token, items) in [
            ("image", IMAGE, image_tokens.len()),
            ("video", VIDEO, video_tokens.len()),
        ] {
            let placeholders = text.matches(token).count();
            if placeholders != items {
                return Err(VlmError::PlaceholderCount {
                    kind,
                    token: token.into(),
                    placeholders,
                    items,
                });
            }
        }
        let extra: usize = image_tokens.iter().map(|n| n * IMAGE.len()).sum::<usize>()
            + video_tokens.iter().map(|n| n * VIDEO.len()).sum::<usize>();
        let mut out = String::with_capacity(text.len() + extra);
        let (mut images, mut videos) = (image_tokens.iter(), video_tokens.iter());
        let mut rest = text;
        loop {
            let next_image = rest.find(IMAGE);
            let next_video = rest.find(VIDEO);
            let (at, token, count) = match (next_image, next_video) {
                (Some(i), Some(v)) if v < i => (v, VIDEO, videos.next()),
                (Some(i), _) => (i, IMAGE, images.next()),
                (None, Some(v)) => (v, VIDEO, videos.next()),
                (None, None) => break,
            };
            out.push_str(&rest[..at]);
            for _ in 0..count.copied().unwrap_or(1) {
                out.push_str(token);
            }
            rest = &rest[at + token.len()..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Preprocesses images and videos and tokenizes `text` (a rendered prompt with one
    /// `<|image_pad|>`/`<|video_pad|>` per image/video) with the placeholders expanded.
    ///
    /// # Errors
    /// [`VlmError::PlaceholderCount`], and the errors of image preprocessing and tokenization.
    pub fn process(
        &self,
        text: &str,
        images: &[RgbImage],
        videos: &[Video],
    ) -> Result<ProcessorOutput> {
        let image_patches = self.image_processor.preprocess_images(images)?;
        let (video_patches, second_per_grid_ts) = self.video_processor.preprocess_videos(videos)?;
        let mi = self.image_processor.config().merge_size;
        let mv = self.video_processor.config().merge_size;
        let image_tokens: Vec<usize> = (0..image_patches.grid_thw.len())
            .map(|i| image_patches.tokens_of(i, mi))
            .collect();
        let video_tokens: Vec<usize> = (0..video_patches.grid_thw.len())
            .map(|i| video_patches.tokens_of(i, mv))
            .collect();
        let expanded = self.expand_placeholders(text, &image_tokens, &video_tokens)?;
        let input_ids = self.tokenizer.encode(&expanded)?;
        Ok(ProcessorOutput {
            input_ids,
            images: image_patches,
            videos: video_patches,
            second_per_grid_ts,
        })
    }

    /// The M-RoPE config of this checkpoint's tokens (Qwen2.5-VL's merge and time scale, the original
    /// video rule); adjust fields for other configs.
    pub fn rope_config(&self) -> RopeIndexConfig {
        let s = self.tokenizer.special();
        RopeIndexConfig {
            spatial_merge_size: self.image_processor.config().merge_size,
            ..RopeIndexConfig::qwen2_5_vl(s.image_pad, s.video_pad)
        }
    }
}

impl ProcessorOutput {
    /// M-RoPE position ids of these inputs.
    ///
    /// # Errors
    /// As [`get_rope_index`].
    pub fn rope_index(&self, config: &RopeIndexConfig) -> Result<RopeIndex> {
        get_rope_index(
            config,
            &self.input_ids,
            &self.images.grid_thw,
            &self.videos.grid_thw,
            &self.second_per_grid_ts,
        )
    }
}
