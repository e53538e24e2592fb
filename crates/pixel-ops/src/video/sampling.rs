//! Which frames of a video the model sees: `smart_nframes`, the frame index rule and the
//! per-frame pixel budget, exactly as `qwen-vl-utils` (`vision_process.py`) computes them.
//!
//! Python rounds ties to even (`round(2.5) == 2`), and the indices come from a float32
//! `torch.linspace(start, end, n).round()`; both are reproduced here bit for bit (checked against
//! fixtures written by `scripts/gen_video_fixtures.py`).

use crate::{Error, Result};

/// Frames per second sampled from a video file by default (`FPS`).
pub const FPS: f64 = 2.0;
/// The frame count is always a multiple of this (`FRAME_FACTOR`): the vision tower packs two
/// frames into one temporal patch.
pub const FRAME_FACTOR: u64 = 2;
/// Fewest frames sampled in fps mode (`FPS_MIN_FRAMES`).
pub const FPS_MIN_FRAMES: u64 = 4;
/// Most frames sampled in fps mode (`FPS_MAX_FRAMES`).
pub const FPS_MAX_FRAMES: u64 = 768;
/// Frames per video in the official Pixel Reasoner data and prompts ("video has 16").
pub const OFFICIAL_NFRAMES: u64 = 16;
/// Side of one merged visual token in pixels (patch 14 × spatial merge 2).
pub const IMAGE_FACTOR: u32 = 28;
/// Default lower bound on the pixels of one video frame (`VIDEO_MIN_TOKEN_NUM * 28 * 28`).
pub const VIDEO_MIN_PIXELS: u64 = 128 * 28 * 28;
/// Default upper bound on the pixels of one video frame (`VIDEO_MAX_TOKEN_NUM * 28 * 28`).
pub const VIDEO_MAX_PIXELS: u64 = 768 * 28 * 28;
/// Default pixel budget of a whole video: `MODEL_SEQ_LEN (128000) * 28 * 28 * 0.9`.
pub const VIDEO_TOTAL_PIXELS: f64 = 128_000.0 * 28.0 * 28.0 * 0.9;
/// Per-frame `max_pixels` the official Pixel Reasoner code sets on every video (`512 * 28 * 28`).
pub const OFFICIAL_VIDEO_MAX_PIXELS: u64 = 512 * 28 * 28;
/// Temporal patch size of the Qwen2.5-VL vision tower (frames per temporal patch).
pub const TEMPORAL_PATCH_SIZE: u64 = 2;

/// How many frames to take from a video: the `nframes` or the `fps` option of `qwen-vl-utils`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum FrameCount {
    /// A fixed number of frames (`ele["nframes"]`), rounded to a multiple of [`FRAME_FACTOR`]
    /// with ties to even. The official Pixel Reasoner setting is `NFrames(16.0)`.
    NFrames(f64),
    /// Sample at `fps` frames per second, clamped to `[min_frames, max_frames]` (the default mode).
    Fps {
        /// Frames per second to sample (default [`FPS`]).
        fps: f64,
        /// Lower bound, rounded up to a multiple of 2 (default [`FPS_MIN_FRAMES`]).
        min_frames: f64,
        /// Upper bound, rounded down to a multiple of 2 (default `min(768, total_frames)`).
        max_frames: Option<f64>,
    },
}

impl Default for FrameCount {
    /// `qwen-vl-utils`' default: 2 fps, at least 4 frames, at most `min(768, total)`.
    fn default() -> Self {
        Self::Fps {
            fps: FPS,
            min_frames: FPS_MIN_FRAMES as f64,
            max_frames: None,
        }
    }
}

impl FrameCount {
    /// The official Pixel Reasoner setting: 16 frames.
    pub const fn official() -> Self {
        Self::NFrames(OFFICIAL_NFRAMES as f64)
    }
}

fn round_by_factor(x: f64, factor: f64) -> f64 {
    (x / factor).round_ties_even() * factor
}

fn ceil_by_factor(x: f64, factor: f64) -> f64 {
    (x / factor).ceil() * factor
}

fn floor_by_factor(x: f64, factor: f64) -> f64 {
    (x / factor).floor() * factor
}

/// Number of frames to sample from a video of `total_frames` frames at `video_fps`
/// (`qwen_vl_utils.smart_nframes`).
///
/// # Errors
/// [`Error::InvalidVideoFps`] when `video_fps` is not a positive finite number (fps mode), and
/// [`Error::NFramesOutOfRange`] when the result is not in `[2, total_frames]` (the Python
/// `ValueError`), e.g. a 1-frame video or `NFrames(20)` on a 10-frame video.
pub fn smart_nframes(count: FrameCount, total_frames: u64, video_fps: f64) -> Result<u64> {
    let factor = FRAME_FACTOR as f64;
    let total = total_frames as f64;
    let nframes = match count {
        FrameCount::NFrames(n) => round_by_factor(n, factor),
        FrameCount::Fps {
            fps,
            min_frames,
            max_frames,
        } => {
            if !(video_fps.is_finite() && video_fps > 0.0) {
                return Err(Error::InvalidVideoFps { fps: video_fps });
            }
            let min_frames = ceil_by_factor(min_frames, factor);
            let max_frames = floor_by_factor(
                max_frames.unwrap_or((FPS_MAX_FRAMES as f64).min(total)),
                factor,
            );
            let n = total / video_fps * fps;
            floor_by_factor(n.max(min_frames).min(max_frames).min(total), factor)
        }
    };
    if !(nframes.is_finite() && factor <= nframes && nframes <= total) {
        return Err(Error::NFramesOutOfRange {
            nframes,
            total_frames,
        });
    }
    Ok(nframes as u64)
}

/// The frame indices `torch.linspace(start, end, n).round().long()` that `qwen-vl-utils` reads,
/// computed in float32 as torch's CPU kernel does (first half counted up from `start`, second half
/// down from `end`) and rounded with ties to even.
///
/// For a whole video `start = 0` and `end = total_frames - 1`. `n == 1` gives `[start]`; `n == 0`
/// gives `[]`.
pub fn frame_indices(start: u64, end: u64, n: u64) -> Vec<u64> {
    let (s, e) = (start as f32, end as f32);
    if n == 0 {
        return Vec::new();
    }
    if n == 1 {
        return vec![start];
    }
    let step = (e - s) / (n - 1) as f32;
    let halfway = n / 2;
    (0..n)
        .map(|i| {
            let v = if i < halfway {
                s + step * i as f32
            } else {
                e - step * (n - 1 - i) as f32
            };
            // Values are within [start, end], so the cast cannot saturate.
            v.round_ties_even().max(0.0) as u64
        })
        .collect()
}

/// What a processor needs to know about sampled frames: how many, which, and the time per
/// temporal patch.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FrameSampling {
    /// Frames in the source video.
    pub total_frames: u64,
    /// Frame rate of the source video.
    pub video_fps: f64,
    /// 0-based indices of the sampled frames, in order (may repeat for very short videos).
    pub indices: Vec<u64>,
    /// Frames per second of the sampled sequence: `nframes / total_frames * video_fps`.
    pub sample_fps: f64,
}

impl FrameSampling {
    /// Plan which frames to read from a whole video (`start = 0`, `end = total_frames - 1`).
    ///
    /// # Errors
    /// As [`smart_nframes`].
    pub fn plan(count: FrameCount, total_frames: u64, video_fps: f64) -> Result<Self> {
        let n = smart_nframes(count, total_frames, video_fps)?;
        let indices = frame_indices(0, total_frames.saturating_sub(1), n);
        let sample_fps = n as f64 / (total_frames as f64).max(1e-6) * video_fps;
        Ok(Self {
            total_frames,
            video_fps,
            indices,
            sample_fps,
        })
    }

    /// Seconds covered by one temporal patch: `temporal_patch_size / sample_fps`
    /// (the processor's `second_per_grid_t`).
    pub fn second_per_grid_t(&self) -> f64 {
        second_per_grid_t(self.sample_fps)
    }
}

/// Seconds covered by one temporal patch of [`TEMPORAL_PATCH_SIZE`] frames sampled at
/// `sample_fps`: `temporal_patch_size / fps`, the `second_per_grid_t` the Qwen2.5-VL processor
/// passes to M-RoPE.
pub fn second_per_grid_t(sample_fps: f64) -> f64 {
    TEMPORAL_PATCH_SIZE as f64 / sample_fps
}

/// Pixel bounds for the frames of a video read from a file (`fetch_video`'s `min_pixels`,
/// `max_pixels`, `total_pixels` options).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VideoPixels {
    /// Lower bound per frame (default [`VIDEO_MIN_PIXELS`]).
    pub min_pixels: u64,
    /// The caller's upper bound per frame (`ele["max_pixels"]`); `None` uses the computed limit.
    /// The official Pixel Reasoner code sets [`OFFICIAL_VIDEO_MAX_PIXELS`].
    pub max_pixels: Option<u64>,
    /// Budget for all frames together (default [`VIDEO_TOTAL_PIXELS`]).
    pub total_pixels: f64,
}

impl Default for VideoPixels {
    fn default() -> Self {
        Self {
            min_pixels: VIDEO_MIN_PIXELS,
            max_pixels: None,
            total_pixels: VIDEO_TOTAL_PIXELS,
        }
    }
}

impl VideoPixels {
    /// The bounds the official Pixel Reasoner code uses for videos (`max_pixels = 512*28*28`).
    pub fn official() -> Self {
        Self {
            max_pixels: Some(OFFICIAL_VIDEO_MAX_PIXELS),
            ..Self::default()
        }
    }

    /// Effective `(min_pixels, max_pixels)` per frame for `nframes` frames:
    /// `max(min(VIDEO_MAX_PIXELS, total / nframes * 2), int(min * 1.05))`, then capped by
    /// [`Self::max_pixels`].
    pub fn bounds(&self, nframes: u64) -> (u64, u64) {
        let per_frame = (VIDEO_MAX_PIXELS as f64)
            .min(self.total_pixels / nframes.max(1) as f64 * FRAME_FACTOR as f64);
        let floor = (self.min_pixels as f64 * 1.05).trunc();
        let limit = per_frame.max(floor);
        let max = match self.max_pixels {
            Some(m) => (m as f64).min(limit),
            None => limit,
        };
        // `smart_resize` compares `h*w` (an integer) with max_pixels; floor keeps that comparison.
        (self.min_pixels, max.floor() as u64)
    }
}
