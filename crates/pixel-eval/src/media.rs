//! The image pipeline: from an item's media on disk to the [`Query`] an engine receives. It is a pluggable
//! step ([`MediaPipeline`]): the runner calls whichever pipeline it is given and records its
//! [`MediaPipeline::describe`] in the results header.
//!
//! The official evaluation resizes in two stages:
//!
//! 1. **Client side**, [`OfficialPipeline`]: every image is pre-resized with Pillow's bicubic (bit-exact,
//!    `pixel-ops`) to `smart_resize` bounds of [256·784, 8000·784] pixels, and crops are cut from that
//!    copy; video frames are resized to the official frame bounds (at most 512·784): frame lists with
//!    Pillow (qwen-vl-utils loads each frame as an image), frames of video files with torchvision's
//!    antialiased bicubic (qwen-vl-utils' `fetch_video`), both bit-exact.
//! 2. **Engine side**, [`crate::serving`]: the serving engine resizes every image it receives (original,
//!    crops, selected frames) to its processor's bounds, [401,408, 4,014,080] in the official setting,
//!    with torchvision's antialiased bicubic on `uint8`. A vLLM server does it itself; in front of an
//!    engine that resizes otherwise (the in-process engine's processor uses Pillow's kernel),
//!    [`crate::ServingResizeEngine`] does it byte-exactly.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use base64::Engine as _;
use image::RgbImage;
use pixel_agent::{Media as QueryMedia, Query};
use pixel_ops::{BicubicKernel, DecodeLimits, PixelLimits, Video};
use pixel_traces::DatasetRoot;
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result, io};
use crate::item::{EvalItem, ImageRef, Media};

/// Builds the query of an item from its media.
pub trait MediaPipeline: Sync {
    /// Loads `item`'s media (paths relative to `root`) and prepares them as the engine should receive them.
    ///
    /// # Errors
    /// Media that cannot be read, decoded or resized (the runner records the error with the item).
    fn query(&self, root: &DatasetRoot, item: &EvalItem) -> Result<Query>;

    /// The pipeline's settings, written into the results header.
    fn describe(&self) -> serde_json::Value;
}

/// The official evaluation's pre-resize of the original image: at least 256 and at most 8,000 visual
/// tokens of 28x28 pixels (`eval_minpixel = 256`, `eval_maxpixel = 8000` in the released code).
pub const OFFICIAL_PRE_RESIZE: PixelLimits = PixelLimits::new(256 * 784, 8000 * 784);

/// The official first stage (see the module docs). Every field is recorded in the results header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OfficialPipeline {
    /// `smart_resize` bounds of the pre-resize of every image, Pillow bicubic; `None` passes originals on
    /// unchanged. Default [`OFFICIAL_PRE_RESIZE`].
    pub image_pre_resize: Option<PixelLimits>,
    /// Bounds each video frame is resized to (qwen-vl-utils' image rule for frame lists, at most
    /// 512·784 pixels); `None` keeps frames as decoded. Default
    /// [`pixel_ops::video::OFFICIAL_FRAME_LIST_LIMITS`].
    pub frame_resize: Option<PixelLimits>,
    /// Kernel of the frame resize for frames decoded from a video file (qwen-vl-utils resizes those with
    /// torchvision; frame lists always go through Pillow, like images). Default
    /// [`BicubicKernel::Torchvision`].
    pub video_file_kernel: BicubicKernel,
    /// Frames per second a frame list stands for (qwen-vl-utils: 2).
    pub frame_fps: f64,
    /// Frames sampled from a video file (official: 16).
    pub video_frames: usize,
    /// Decode limits of every image and frame.
    pub decode: DecodeLimits,
}

impl Default for OfficialPipeline {
    fn default() -> Self {
        Self {
            image_pre_resize: Some(OFFICIAL_PRE_RESIZE),
            frame_resize: Some(pixel_ops::video::OFFICIAL_FRAME_LIST_LIMITS),
            video_file_kernel: BicubicKernel::Torchvision,
            frame_fps: 2.0,
            video_frames: 16,
            decode: DecodeLimits::default(),
        }
    }
}

impl MediaPipeline for OfficialPipeline {
    fn query(&self, root: &DatasetRoot, item: &EvalItem) -> Result<Query> {
        let media = match &item.media {
            Media::None => QueryMedia::Images(Vec::new()),
            Media::Images(images) => {
                let mut out = Vec::with_capacity(images.len());
                for image in images {
                    let image = load_image(root, image, &self.decode)?;
                    out.push(match self.image_pre_resize {
                        Some(limits) => pixel_ops::smart_resize_image(&image, limits)?,
                        None => image,
                    });
                }
                QueryMedia::Images(out)
            }
            Media::Frames(paths) => {
                let mut frames = paths
                    .iter()
                    .map(|p| Ok(root.load_image(p, &self.decode)?))
                    .collect::<Result<Vec<RgbImage>>>()?;
                // qwen-vl-utils pads a frame list to an even count with its last frame.
                if frames.len() % 2 == 1
                    && let Some(last) = frames.last().cloned()
                {
                    frames.push(last);
                }
                let video = Video::from_frames(frames, self.frame_fps)?;
                QueryMedia::Video(resize_frames(
                    video,
                    self.frame_resize,
                    BicubicKernel::Pillow,
                )?)
            }
            Media::VideoFile { path, .. } => QueryMedia::Video(resize_frames(
                self.decode_video(root, path)?,
                self.frame_resize,
                self.video_file_kernel,
            )?),
        };
        Ok(Query {
            media,
            question: item.question.clone(),
        })
    }

    fn describe(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let serde_json::Value::Object(map) = &mut value {
            map.insert("name".into(), "official".into());
            map.insert(
                "kernel".into(),
                "pillow bicubic for images and frame lists, the video_file_kernel for video files \
                 (pixel-ops, bit-exact); the engine's own resize follows"
                    .into(),
            );
        }
        value
    }
}

/// Every frame of `video` resized with `kernel` to the model size under `limits` (`None`: as it is).
fn resize_frames(
    video: Video,
    limits: Option<PixelLimits>,
    kernel: BicubicKernel,
) -> Result<Video> {
    let Some(limits) = limits else {
        return Ok(video);
    };
    match kernel {
        BicubicKernel::Pillow => Ok(video.resized(limits)?),
        BicubicKernel::Torchvision => {
            let (h, w) = video.model_size(limits)?;
            if (w, h) == (video.width(), video.height()) {
                return Ok(video);
            }
            let fps = video.info().sample_fps;
            let frames = video
                .frames()
                .iter()
                .map(|f| pixel_ops::resize_bicubic_torchvision(f, w, h))
                .collect::<pixel_ops::Result<Vec<_>>>()?;
            // Only the frames and their rate reach the engine; the source facts are not kept.
            Ok(Video::from_frames(frames, fps)?)
        }
    }
}

impl OfficialPipeline {
    #[cfg(feature = "ffmpeg")]
    fn decode_video(&self, root: &DatasetRoot, rel: &str) -> Result<Video> {
        let file = root.open(rel)?;
        let options = pixel_ops::video::DecodeOptions {
            count: pixel_ops::video::FrameCount::NFrames(self.video_frames as f64),
            max_frame_pixels: self.decode.max_pixels,
            ..Default::default()
        };
        Ok(Video::from_file(&file.path, &options)?)
    }

    #[cfg(not(feature = "ffmpeg"))]
    fn decode_video(&self, _root: &DatasetRoot, rel: &str) -> Result<Video> {
        Err(EvalError::Invalid(format!(
            "{rel}: video files need pixel-eval's `ffmpeg` feature (or use frame lists)"
        )))
    }
}

/// Loads one image of an item under `limits`.
///
/// # Errors
/// [`EvalError::Traces`] for a file outside the root or unreadable, [`EvalError::Ops`] for bytes that are
/// not an image within `limits`, [`EvalError::Format`] for an embedded image that is not base64.
pub fn load_image(root: &DatasetRoot, image: &ImageRef, limits: &DecodeLimits) -> Result<RgbImage> {
    match image {
        ImageRef::File(rel) => Ok(root.load_image(rel, limits)?),
        ImageRef::Embedded { file, offset, len } => {
            let bytes = read_embedded(file, *offset, *len, limits)?;
            let what = format!("{}@{offset}", file.display());
            Ok(pixel_ops::load::decode_image_with(&bytes, &what, limits)?)
        }
    }
}

/// Reads and base64-decodes `len` bytes at `offset` of `file`, refusing more than the decoder may allocate.
fn read_embedded(file: &Path, offset: u64, len: u64, limits: &DecodeLimits) -> Result<Vec<u8>> {
    let max = limits.max_alloc.saturating_mul(4) / 3 + 4;
    if len > max {
        return Err(EvalError::Format {
            path: file.to_path_buf(),
            message: format!("embedded image at byte {offset} is {len} bytes, over {max}"),
        });
    }
    let mut f = std::fs::File::open(file).map_err(io(file))?;
    f.seek(SeekFrom::Start(offset)).map_err(io(file))?;
    let mut text = vec![0u8; len as usize];
    f.read_exact(&mut text).map_err(io(file))?;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim_ascii())
        .map_err(|e| EvalError::Format {
            path: file.to_path_buf(),
            message: format!("embedded image at byte {offset} is not base64: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn frames(n: usize) -> Vec<RgbImage> {
        (0..n)
            .map(|k| {
                RgbImage::from_fn(300, 170, |x, y| {
                    Rgb([
                        (x * 5 + k as u32) as u8,
                        ((x ^ y) & 255) as u8,
                        (y * 9) as u8,
                    ])
                })
            })
            .collect()
    }

    #[test]
    fn video_file_frames_take_the_torchvision_kernel_and_frame_lists_pillow() {
        let limits = PixelLimits::new(4 * 784, 40 * 784);
        let video = Video::from_frames(frames(2), 2.0).unwrap();
        let (h, w) = video.model_size(limits).unwrap();
        let tv = resize_frames(video.clone(), Some(limits), BicubicKernel::Torchvision).unwrap();
        let pil = resize_frames(video.clone(), Some(limits), BicubicKernel::Pillow).unwrap();
        for (k, src) in video.frames().iter().enumerate() {
            let want_tv = pixel_ops::resize_bicubic_torchvision(src, w, h).unwrap();
            let want_pil = pixel_ops::resize_bicubic(src, w, h).unwrap();
            assert_eq!(tv.frames()[k], want_tv);
            assert_eq!(pil.frames()[k], want_pil);
            assert_ne!(want_tv, want_pil, "the kernels differ on this frame");
        }
        assert_eq!(tv.second_per_grid_t(), video.second_per_grid_t());
        let kept = resize_frames(video.clone(), None, BicubicKernel::Torchvision).unwrap();
        assert_eq!(kept, video);
        assert_eq!(
            OfficialPipeline::default().video_file_kernel,
            BicubicKernel::Torchvision
        );
    }
}
