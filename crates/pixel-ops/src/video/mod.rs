//! Videos: frames plus where they came from, the qwen-vl-utils frame sampling rules, the
//! `select_frames` operation and (feature `ffmpeg`) decoding video files.
//!
//! A [`Video`] is what a Pixel Reasoner episode shows the model: a short list of frames (officially
//! 16) of one size. It is built
//! * from frame images in memory ([`Video::from_frames`]),
//! * from a list of frame files ([`Video::from_frame_files`]): the official data's form, where a
//!   video is a list of image paths; or
//! * from a video file ([`Video::from_file`], feature `ffmpeg`), sampled to N frames with the
//!   qwen-vl-utils index rules ([`sampling`]).
//!
//! Frames are kept at their decoded size; [`Video::resized`] applies the model-input size rules.
//! Decoding is bounded: each frame's real size is checked before it is converted or loaded, and the
//! kept frames share a byte budget ([`DEFAULT_MAX_TOTAL_FRAME_BYTES`] unless the options say
//! otherwise); going beyond either is a typed error before the allocation.
//!
//! ```
//! use pixel_ops::image::RgbImage;
//! use pixel_ops::video::{FrameCount, FrameSampling, Video};
//!
//! // Which frames qwen-vl-utils reads from a 300-frame, 30 fps video for 16 frames:
//! let plan = FrameSampling::plan(FrameCount::official(), 300, 30.0).unwrap();
//! assert_eq!(&plan.indices[..4], &[0, 20, 40, 60]);
//!
//! let frames: Vec<RgbImage> = (0..16).map(|_| RgbImage::new(56, 28)).collect();
//! let video = Video::from_frames(frames, 2.0).unwrap();
//! let picked = video.select_frames(&[1, 16]).unwrap();
//! assert_eq!(picked.frames.len(), 2);
//! ```

#[cfg(feature = "ffmpeg")]
mod ffmpeg;
pub mod sampling;
pub mod select;

use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::{Deserialize, Serialize};

#[cfg(feature = "ffmpeg")]
pub use ffmpeg::{DecodeOptions, DecodeStrategy, probe_frame_count};
pub use sampling::{
    FrameCount, FrameSampling, VideoPixels, frame_indices, second_per_grid_t, smart_nframes,
};
pub use select::{MAX_SELECTED_FRAMES, SelectedFrames, select_frames, select_frames_with_limit};

use crate::load::{DecodeLimits, load_image_checked};
use crate::resize::{PixelLimits, resize_bicubic, smart_resize};
use crate::{Error, Result, ToolCallError};

/// Per-frame size bounds the official Pixel Reasoner pipeline used for videos given as frame lists:
/// each frame went through qwen-vl-utils' `fetch_image` with the image minimum (4 visual tokens)
/// and the `max_pixels = 512*28*28` the official data processor sets on every video. Use with
/// [`Video::resized`].
pub const OFFICIAL_FRAME_LIST_LIMITS: PixelLimits =
    PixelLimits::new(4 * 28 * 28, sampling::OFFICIAL_VIDEO_MAX_PIXELS);

/// Default byte budget for the frames a video keeps, as 8-bit RGB at source resolution (frames are
/// decoded at the source's size and resized later): the official 16 frames of a 4K (3840x2160)
/// source, `16 * 3840 * 2160 * 3` = 398,131,200 bytes (about 380 MiB); the same budget holds 64
/// frames of 1080p.
pub const DEFAULT_MAX_TOTAL_FRAME_BYTES: u64 = 16 * 3840 * 2160 * 3;

/// Default cap on the files of a frame list: qwen-vl-utils' `FPS_MAX_FRAMES` (768), the most frames
/// it ever samples from a video.
pub const DEFAULT_MAX_FRAME_FILES: usize = sampling::FPS_MAX_FRAMES as usize;

/// Bytes of one frame as 8-bit RGB.
pub(crate) fn rgb_bytes(width: u32, height: u32) -> u64 {
    (u64::from(width) * u64::from(height)).saturating_mul(3)
}

/// Where a video's frames came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum VideoSource {
    /// Frames given in memory.
    Memory,
    /// A list of frame image files (the official data's form).
    FrameFiles(Vec<PathBuf>),
    /// A video file decoded with FFmpeg.
    File(PathBuf),
}

/// Facts about a video's source and how its frames were sampled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoInfo {
    /// Where the frames came from.
    pub source: VideoSource,
    /// Frames in the source (for frame files: the number of files).
    pub total_frames: u64,
    /// Frame rate of the source (for frame lists: the sample rate, as qwen-vl-utils fakes it).
    pub video_fps: f64,
    /// For each kept frame, its 0-based index in the source.
    pub frame_indices: Vec<u64>,
    /// Frames per second of the kept frames (what `second_per_grid_t` is computed from).
    pub sample_fps: f64,
    /// Frames repeated at the end to reach an even count (qwen-vl-utils pads frame lists).
    pub padded: usize,
    /// Frames the video decoder produced to find the kept ones (0 when nothing was decoded, as
    /// for frame files): shows the work skipping to keyframes saved.
    pub frames_decoded: u64,
}

/// Frames of one size, at least one, with their source info.
#[derive(Debug, Clone, PartialEq)]
pub struct Video {
    frames: Vec<RgbImage>,
    info: VideoInfo,
}

/// Options for [`Video::from_frame_files`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FrameFilesOptions {
    /// Repeat the last frame to reach an even count, as qwen-vl-utils' `fetch_video` does for
    /// frame lists (default `true`).
    pub pad_to_even: bool,
    /// Frames per second the list stands for (qwen-vl-utils `sample_fps`, default 2.0).
    pub sample_fps: f64,
    /// Decode limits for each frame file.
    pub limits: DecodeLimits,
    /// Most files the list may hold (default [`DEFAULT_MAX_FRAME_FILES`], 768, the most frames
    /// qwen-vl-utils samples); a longer list is refused before any file is read.
    pub max_files: usize,
    /// Most bytes the kept frames may take together as 8-bit RGB, the padding frame included
    /// (default [`DEFAULT_MAX_TOTAL_FRAME_BYTES`]); each file's size is checked against what is left
    /// from its header, before its pixels are decoded.
    pub max_total_bytes: u64,
}

impl Default for FrameFilesOptions {
    fn default() -> Self {
        Self {
            pad_to_even: true,
            sample_fps: sampling::FPS,
            limits: DecodeLimits::default(),
            max_files: DEFAULT_MAX_FRAME_FILES,
            max_total_bytes: DEFAULT_MAX_TOTAL_FRAME_BYTES,
        }
    }
}

impl Video {
    /// A video from frames in memory, all of one size, played at `sample_fps`.
    ///
    /// # Errors
    /// [`Error::EmptyVideo`] for no frames, [`Error::FrameSizeMismatch`] for frames of different
    /// sizes, [`Error::InvalidVideoFps`] for a `sample_fps` that is not positive and finite.
    pub fn from_frames(frames: Vec<RgbImage>, sample_fps: f64) -> Result<Self> {
        let n = frames.len() as u64;
        let info = VideoInfo {
            source: VideoSource::Memory,
            total_frames: n,
            video_fps: sample_fps,
            frame_indices: (0..n).collect(),
            sample_fps,
            padded: 0,
            frames_decoded: 0,
        };
        Self::with_info(frames, info, "<memory>")
    }

    /// Frames plus source info, checked: non-empty, one size, a positive `sample_fps`, one index per
    /// frame.
    pub(crate) fn with_info(frames: Vec<RgbImage>, info: VideoInfo, what: &str) -> Result<Self> {
        if !(info.sample_fps.is_finite() && info.sample_fps > 0.0) {
            return Err(Error::InvalidVideoFps {
                fps: info.sample_fps,
            });
        }
        let Some(first) = frames.first() else {
            return Err(Error::EmptyVideo {
                what: what.to_owned(),
            });
        };
        let (fw, fh) = first.dimensions();
        if fw == 0 || fh == 0 {
            return Err(Error::ZeroSize {
                width: fw,
                height: fh,
            });
        }
        if let Some((index, f)) = frames
            .iter()
            .enumerate()
            .find(|(_, f)| f.dimensions() != (fw, fh))
        {
            return Err(Error::FrameSizeMismatch {
                what: what.to_owned(),
                index,
                width: f.width(),
                height: f.height(),
                first_width: fw,
                first_height: fh,
            });
        }
        debug_assert_eq!(info.frame_indices.len(), frames.len());
        Ok(Self { frames, info })
    }

    /// A video from a list of frame image files, the official data's form (qwen-vl-utils
    /// `fetch_video` with a list): each file is loaded with decode limits and converted to RGB,
    /// and with [`FrameFilesOptions::pad_to_even`] the last frame is repeated to an even count.
    ///
    /// qwen-vl-utils also resizes each frame with the image rules while loading; here that is a
    /// separate step, [`Video::resized`] with [`OFFICIAL_FRAME_LIST_LIMITS`] for the official
    /// setting. (qwen-vl-utils 0.0.14 differs from the releases the official code was trained with:
    /// it passes 28 as the *patch* size there, so frames are first sized to multiples of 56, then the
    /// stacked frames are resized again with torchvision to the video bounds. This crate follows the
    /// older single-resize rule.)
    ///
    /// # Errors
    /// [`Error::EmptyVideo`] for an empty list; [`Error::TooManyFrameFiles`] for more than
    /// [`FrameFilesOptions::max_files`]; the loader's errors ([`Error::Io`], [`Error::Decode`],
    /// [`Error::ImageTooLarge`], [`Error::ImageAllocTooLarge`], [`Error::FileTooLarge`]) naming the
    /// file; [`Error::FrameBudgetExceeded`] when the frames (with the padding frame) would take more
    /// than [`FrameFilesOptions::max_total_bytes`]; [`Error::FrameSizeMismatch`] when the files
    /// differ in size.
    pub fn from_frame_files<P: AsRef<Path>>(
        paths: &[P],
        options: &FrameFilesOptions,
    ) -> Result<Self> {
        let what = paths.first().map_or_else(
            || "<empty frame list>".to_owned(),
            |p| p.as_ref().display().to_string(),
        );
        if paths.is_empty() {
            return Err(Error::EmptyVideo { what });
        }
        if paths.len() > options.max_files {
            return Err(Error::TooManyFrameFiles {
                what,
                count: paths.len(),
                max_files: options.max_files,
            });
        }
        let paths: Vec<PathBuf> = paths.iter().map(|p| p.as_ref().to_path_buf()).collect();
        let n = paths.len();
        let pad = options.pad_to_even && n % 2 == 1;
        let mut total = 0u64;
        let mut frames = Vec::with_capacity(n + usize::from(pad));
        for (index, path) in paths.iter().enumerate() {
            // The last file fills the padding slot too when the list is padded.
            let copies: u64 = if pad && index + 1 == n { 2 } else { 1 };
            let frame = load_image_checked(path, &options.limits, |w, h| {
                let frame_bytes = rgb_bytes(w, h).saturating_mul(copies);
                let total_bytes = total.saturating_add(frame_bytes);
                if total_bytes > options.max_total_bytes {
                    return Err(Error::FrameBudgetExceeded {
                        what: path.display().to_string(),
                        index: index as u64,
                        frame_bytes,
                        total_bytes,
                        max_total_bytes: options.max_total_bytes,
                    });
                }
                total = total_bytes;
                Ok(())
            })?;
            frames.push(frame);
        }
        let n = n as u64;
        let mut frame_indices: Vec<u64> = (0..n).collect();
        let mut padded = 0;
        if pad {
            frames.push(frames[frames.len() - 1].clone());
            frame_indices.push(n - 1);
            padded = 1;
        }
        let info = VideoInfo {
            source: VideoSource::FrameFiles(paths),
            total_frames: n,
            video_fps: options.sample_fps,
            frame_indices,
            sample_fps: options.sample_fps,
            padded,
            frames_decoded: 0,
        };
        Self::with_info(frames, info, &what)
    }

    /// Decodes a video file with FFmpeg and keeps the frames qwen-vl-utils would sample
    /// ([`FrameSampling::plan`] with `options.count`; officially 16 frames).
    ///
    /// Only the groups of pictures that hold a wanted frame are decoded (see [`DecodeStrategy`]), in
    /// parallel, and only kept frames are converted to RGB; the frames are the ones a
    /// decode-all reader (PyAV, decord, torchcodec) returns for the same indices.
    ///
    /// Every decoded frame's real size is checked before it is converted (a stream can change size
    /// after its header), and the kept frames share the byte budget
    /// [`DecodeOptions::max_total_bytes`]; FFmpeg's own decoders get twice the pixel limit as a
    /// backstop, so they refuse to allocate frames far beyond it.
    ///
    /// # Errors
    /// [`Error::VideoDecode`] when FFmpeg cannot open or decode the file (zero bytes, truncated,
    /// not a video, or frames the decoder refused as larger than the limit),
    /// [`Error::NoVideoStream`], [`Error::ImageTooLarge`] for a header or a decoded frame beyond
    /// `options.max_frame_pixels`, [`Error::FrameBudgetExceeded`] when the kept frames would take
    /// more than `options.max_total_bytes`, and [`smart_nframes`]' errors (e.g. a 1-frame video).
    #[cfg(feature = "ffmpeg")]
    pub fn from_file(path: impl AsRef<Path>, options: &DecodeOptions) -> Result<Self> {
        ffmpeg::decode_file(path.as_ref(), options)
    }

    /// The frames, in order.
    pub fn frames(&self) -> &[RgbImage] {
        &self.frames
    }

    /// Takes the frames out.
    pub fn into_frames(self) -> Vec<RgbImage> {
        self.frames
    }

    /// Number of frames (at least 1).
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Always `false`: a video has at least one frame. (Present for API symmetry with `len`.)
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Frame width.
    pub fn width(&self) -> u32 {
        self.frames[0].width()
    }

    /// Frame height.
    pub fn height(&self) -> u32 {
        self.frames[0].height()
    }

    /// Source and sampling facts.
    pub fn info(&self) -> &VideoInfo {
        &self.info
    }

    /// Seconds per temporal patch for M-RoPE: `2 / sample_fps`.
    pub fn second_per_grid_t(&self) -> f64 {
        second_per_grid_t(self.info.sample_fps)
    }

    /// `select_frames` on this video with the official rules (see [`select`]).
    ///
    /// # Errors
    /// As [`select_frames`].
    pub fn select_frames(
        &self,
        target_frames: &[i64],
    ) -> std::result::Result<SelectedFrames, ToolCallError> {
        select_frames(&self.frames, target_frames)
    }

    /// The model-input frame size `(height, width)` for these frames: qwen-vl-utils'
    /// `smart_resize` with factor 28 and `limits`.
    ///
    /// For frames read from a video file, qwen-vl-utils uses [`VideoPixels::limits`] for the
    /// frame count ([`VideoPixels::official`] in the official code); for frame lists the official
    /// pipeline resized each frame with the image rules: [`OFFICIAL_FRAME_LIST_LIMITS`].
    ///
    /// # Errors
    /// As [`smart_resize`].
    pub fn model_size(&self, limits: PixelLimits) -> Result<(u32, u32)> {
        smart_resize(self.height(), self.width(), sampling::IMAGE_FACTOR, limits)
    }

    /// A copy with every frame resized (Pillow-exact bicubic) to [`Video::model_size`].
    ///
    /// # Errors
    /// As [`smart_resize`].
    pub fn resized(&self, limits: PixelLimits) -> Result<Self> {
        let (h, w) = self.model_size(limits)?;
        let frames = self
            .frames
            .iter()
            .map(|f| resize_bicubic(f, w, h))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            frames,
            info: self.info.clone(),
        })
    }
}

impl VideoPixels {
    /// [`VideoPixels::bounds`] as [`PixelLimits`] for `nframes` frames.
    pub fn limits(&self, nframes: u64) -> PixelLimits {
        let (min_pixels, max_pixels) = self.bounds(nframes);
        PixelLimits::new(min_pixels, max_pixels)
    }
}
