//! The image pipeline: from an item's media on disk to the [`Query`] an engine receives. It is a pluggable
//! step ([`MediaPipeline`]): the runner calls whichever pipeline it is given and records its
//! [`MediaPipeline::describe`] in the results header.
//!
//! [`OfficialPipeline`] is the first of the official evaluation's two stages: every image is pre-resized
//! with Pillow's bicubic (bit-exact, `pixel-ops`) to `smart_resize` bounds of [256·784, 8000·784] pixels,
//! and crops are cut from that copy; video frames are resized to the official frame bounds (at most
//! 512·784). The second stage is the engine's: a server (vLLM) resizes every image it receives to its
//! processor's bounds ([401,408, 4,014,080] in the official setting), and so does
//! [`pixel_agent::LocalEngine`] through its processor. The official engine resizes with torchvision's
//! antialiased bicubic; the in-process engine uses the Pillow kernel. A pipeline reproducing the
//! torchvision stage (when `pixel-ops` has that kernel) plugs in here without touching the runner.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use base64::Engine as _;
use image::RgbImage;
use pixel_agent::{Media as QueryMedia, Query};
use pixel_ops::{DecodeLimits, PixelLimits, Video};
use pixel_traces::DatasetRoot;
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result, io};
use crate::item::{EvalItem, ImageRef, Media};

/// Builds the query of an item from its media.
pub trait MediaPipeline {
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
                self.resize_video(Video::from_frames(frames, self.frame_fps)?)?
            }
            Media::VideoFile { path, .. } => self.resize_video(self.decode_video(root, path)?)?,
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
                "pillow bicubic (pixel-ops, bit-exact); the engine's own resize follows".into(),
            );
        }
        value
    }
}

impl OfficialPipeline {
    fn resize_video(&self, video: Video) -> Result<QueryMedia> {
        Ok(QueryMedia::Video(match self.frame_resize {
            Some(limits) => video.resized(limits)?,
            None => video,
        }))
    }

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
