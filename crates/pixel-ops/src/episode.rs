//! One query's multi-turn tool use: the running image list, the limits, execution of calls into
//! observations, and what the reward needs to know afterwards.
//!
//! The turn loop follows the official rollout (`_generate_vllm` in `experience_maker.py`):
//! for each model turn, the episode ends if the turn does not call a tool, or if it does but 4 calls were
//! already made, more than 16 images are in play, or the token budget is spent; otherwise the last call is
//! parsed and executed, and its result (or error) becomes the next user turn, unless adding its images
//! would pass 16, which ends the episode.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::crop::{CropConfig, CropSource, crop_normalized, zoom_in};
use crate::observation::Observation;
use crate::parse::{ModelTurn, ToolCall, parse_turn, py_bbox};
use crate::protocol::{IMAGE_ZOOM_IN_TOOL, ToolSet};
use crate::resize::{PixelLimits, smart_resize_image};
use crate::tool_error::ToolCallError;
use crate::video::Video;
use crate::video::select::checked_numbers;

/// Limits and options of an episode. Defaults are the official evaluation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EpisodeConfig {
    /// Which tool protocol the model speaks (default: Pixel Reasoner).
    pub tools: ToolSet,
    /// Tool calls allowed; the next call ends the episode instead of running (official: 4,
    /// `num_toolcalls > 3`).
    pub max_operations: usize,
    /// Images in play before a call runs, and after its result is added (official: 16; a video counts
    /// as one).
    pub max_images: usize,
    /// Prompt + generated tokens after which a call no longer runs (official: `12 * 1024 - 200` =
    /// 12,088; `None`: no budget). Checked only by [`Episode::step_with_tokens`].
    pub max_total_tokens: Option<usize>,
    /// Frames one `select_frames` call may pick (official: 8).
    pub max_frames_per_call: usize,
    /// `crop_image_normalized` settings: padding, minimum side, crop source (official: the model-input
    /// image; [`CropSource::Original`] crops the full-resolution original instead).
    pub crop: CropConfig,
    /// `smart_resize` bounds for a crop before the model sees it (official eval: 256*784 to 5120*784;
    /// training: 4*784 to 1000*784, see [`EpisodeConfig::official_train`]).
    pub crop_resize: PixelLimits,
    /// `smart_resize` bounds for selected frames (official eval: `None`, frames are passed on as decoded
    /// for the video; training: 4*784 to 400*784).
    pub frame_resize: Option<PixelLimits>,
}

impl Default for EpisodeConfig {
    fn default() -> Self {
        Self {
            tools: ToolSet::PixelReasoner,
            max_operations: 4,
            max_images: 16,
            max_total_tokens: Some(12 * 1024 - 200),
            max_frames_per_call: 8,
            crop: CropConfig::default(),
            crop_resize: PixelLimits::OFFICIAL_EVAL_CROP,
            frame_resize: None,
        }
    }
}

impl EpisodeConfig {
    /// The official evaluation settings (the default).
    pub fn official_eval() -> Self {
        Self::default()
    }

    /// The official RL training settings: smaller crops and frames.
    pub fn official_train() -> Self {
        Self {
            crop_resize: PixelLimits::OFFICIAL_TRAIN_CROP,
            frame_resize: Some(PixelLimits::OFFICIAL_TRAIN_FRAME),
            ..Self::default()
        }
    }
}

/// One entry of the episode's image list (1-based `target_image` indexes it).
#[derive(Debug, Clone, PartialEq)]
pub enum Visual {
    /// An image: what the model sees, and optionally a higher-resolution source for
    /// [`CropSource::Original`] crops.
    Image {
        /// The image as the model sees it (after `smart_resize`).
        shown: RgbImage,
        /// The full-resolution source of `shown`, if kept.
        full: Option<RgbImage>,
    },
    /// A video as its sampled frames (official: 16), as the model sees them.
    Video(Vec<RgbImage>),
}

impl Visual {
    /// An image with no separate full-resolution source.
    pub fn image(shown: RgbImage) -> Self {
        Visual::Image { shown, full: None }
    }
}

/// Why an episode ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The model's turn did not call a tool: it answered.
    Answered,
    /// The model called a tool after [`EpisodeConfig::max_operations`] calls.
    MaxOperations,
    /// Too many images: before a call, or the call's result would pass [`EpisodeConfig::max_images`].
    MaxImages,
    /// The token budget was spent when the model called a tool.
    TokenBudget,
}

/// What the reward and the logs need to know about an episode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpisodeStats {
    /// Turns that requested a tool, including one refused by a limit (official `num_toolcalls`).
    pub tool_calls: usize,
    /// Calls that were parsed and executed (successfully or not).
    pub operations_attempted: usize,
    /// Attempted calls that failed (bad JSON, unknown tool, bad arguments, failed execution).
    pub operations_failed: usize,
    /// Whether the last attempted call failed when the episode ended (official `final_error_flags`:
    /// a correct answer after an unfixed failure gets no reward in the released code).
    pub last_operation_failed: bool,
    /// Why the episode ended (`None` while it runs).
    pub end: Option<EndReason>,
}

impl EpisodeStats {
    /// Whether the episode used pixel-space reasoning (made at least one tool call; official
    /// `ncall > 0`).
    pub fn used_pixel_reasoning(&self) -> bool {
        self.tool_calls > 0
    }
}

/// The result of one model turn.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The call ran (or failed): this is the next user turn.
    Observation(Observation),
    /// The episode is over.
    Finished(EndReason),
}

/// One query's tool-use episode.
///
/// ```
/// use pixel_ops::episode::{Episode, EpisodeConfig, Step};
/// use pixel_ops::image::RgbImage;
///
/// let mut ep = Episode::from_image(RgbImage::new(448, 448), EpisodeConfig::default());
/// let turn = "<tool_call>\n{\"name\": \"crop_image_normalized\", \
///             \"arguments\": {\"bbox_2d\": [0.4, 0.4, 0.6, 0.6], \"target_image\": 1}}\n</tool_call>";
/// let Step::Observation(obs) = ep.step(turn) else { panic!("expected an observation") };
/// assert!(obs.text.starts_with("\nHere is the cropped image (Image Size: "));
/// assert_eq!(ep.images().len(), 2);
/// assert_eq!(ep.step("So the answer is \\boxed{A}."), Step::Finished(pixel_ops::episode::EndReason::Answered));
/// assert!(ep.stats().used_pixel_reasoning());
/// ```
#[derive(Debug, Clone)]
pub struct Episode {
    config: EpisodeConfig,
    visuals: Vec<Visual>,
    stats: EpisodeStats,
}

impl Episode {
    /// An episode over `visuals` (the query's images, or one video).
    pub fn new(visuals: Vec<Visual>, config: EpisodeConfig) -> Self {
        Self {
            config,
            visuals,
            stats: EpisodeStats::default(),
        }
    }

    /// An episode over one image, as the model sees it.
    pub fn from_image(shown: RgbImage, config: EpisodeConfig) -> Self {
        Self::new(vec![Visual::image(shown)], config)
    }

    /// An episode over one image as the model sees it (`shown`) and its full-resolution `original`,
    /// which [`CropSource::Original`] crops from.
    pub fn from_image_with_original(
        shown: RgbImage,
        original: RgbImage,
        config: EpisodeConfig,
    ) -> Self {
        Self::new(
            vec![Visual::Image {
                shown,
                full: Some(original),
            }],
            config,
        )
    }

    /// An episode over a video given as its sampled frames.
    pub fn from_video_frames(frames: Vec<RgbImage>, config: EpisodeConfig) -> Self {
        Self::new(vec![Visual::Video(frames)], config)
    }

    /// An episode over a sampled [`Video`] (its frames are copied).
    pub fn from_video(video: &Video, config: EpisodeConfig) -> Self {
        Self::from_video_frames(video.frames().to_vec(), config)
    }

    /// The configuration.
    pub fn config(&self) -> &EpisodeConfig {
        &self.config
    }

    /// The running image list: the query's visuals, then every crop and selected frame, in order.
    pub fn images(&self) -> &[Visual] {
        &self.visuals
    }

    /// Counters for rewards and logs.
    pub fn stats(&self) -> &EpisodeStats {
        &self.stats
    }

    /// Whether the episode has ended.
    pub fn is_finished(&self) -> bool {
        self.stats.end.is_some()
    }

    /// Whether the query is a video (the first entry of the image list).
    pub fn has_video(&self) -> bool {
        matches!(self.visuals.first(), Some(Visual::Video(_)))
    }

    /// Handles one model turn without a token budget check. See [`Episode::step_with_tokens`].
    pub fn step(&mut self, turn: &str) -> Step {
        self.advance(turn, None)
    }

    /// Handles one model turn; `total_tokens` is the conversation's prompt + generated token count so far,
    /// checked against [`EpisodeConfig::max_total_tokens`].
    ///
    /// A turn after the end returns the same `Finished` again and changes nothing.
    pub fn step_with_tokens(&mut self, turn: &str, total_tokens: usize) -> Step {
        self.advance(turn, Some(total_tokens))
    }

    fn advance(&mut self, turn: &str, total_tokens: Option<usize>) -> Step {
        if let Some(end) = self.stats.end {
            return Step::Finished(end);
        }
        let parsed = parse_turn(turn, self.config.tools);
        let ModelTurn::ToolCall(call) = parsed else {
            return self.finish(EndReason::Answered);
        };
        self.stats.tool_calls += 1;
        let over_tokens =
            matches!((total_tokens, self.config.max_total_tokens), (Some(t), Some(max)) if t > max);
        if self.stats.tool_calls > self.config.max_operations {
            return self.finish(EndReason::MaxOperations);
        }
        if self.visuals.len() > self.config.max_images {
            return self.finish(EndReason::MaxImages);
        }
        if over_tokens {
            return self.finish(EndReason::TokenBudget);
        }
        self.stats.operations_attempted += 1;
        let result = call.and_then(|c| self.run(&c));
        let (observation, added) = match result {
            Ok((obs, added)) => {
                self.stats.last_operation_failed = false;
                (obs, added)
            }
            Err(e) => {
                self.stats.operations_failed += 1;
                self.stats.last_operation_failed = true;
                (Observation::error(e), Vec::new())
            }
        };
        if self.visuals.len() + added.len() > self.config.max_images {
            return self.finish(EndReason::MaxImages);
        }
        self.visuals.extend(added);
        Step::Observation(observation)
    }

    fn finish(&mut self, reason: EndReason) -> Step {
        self.stats.end = Some(reason);
        Step::Finished(reason)
    }

    /// Executes a parsed call against the current image list without the turn bookkeeping or limits:
    /// the observation, and the entries it would add to the image list.
    ///
    /// # Errors
    /// A [`ToolCallError`] with the official message when the call cannot run.
    pub fn run(&self, call: &ToolCall) -> Result<(Observation, Vec<Visual>), ToolCallError> {
        match call {
            ToolCall::Crop { bbox, target_image } => self.run_crop(*bbox, *target_image),
            ToolCall::SelectFrames { frames } => self.run_select_frames(frames),
            ToolCall::ZoomIn { bbox, label } => self.run_zoom_in(*bbox, label.as_deref()),
        }
    }

    /// The image `target_image` (1-based) names for a crop, with its full-resolution source if any.
    fn crop_target(&self, target: i64) -> Result<(&RgbImage, Option<&RgbImage>), ToolCallError> {
        let n = self.visuals.len();
        if let Some(Visual::Video(frames)) = self.visuals.first() {
            if n == 1 {
                // Only the video so far: `target_image` picks one of its frames.
                let frame = index0(target).and_then(|i| frames.get(i));
                return frame
                    .map(|f| (f, None))
                    .ok_or(ToolCallError::TargetFrameOutOfRange {
                        target,
                        frames: frames.len(),
                    });
            }
            let entry = index0(target)
                .filter(|&i| i >= 1)
                .and_then(|i| self.visuals.get(i));
            return match entry {
                Some(Visual::Image { shown, full }) => Ok((shown, full.as_ref())),
                _ => Err(ToolCallError::TargetImageIsVideo {
                    target,
                    available: n,
                }),
            };
        }
        match index0(target).and_then(|i| self.visuals.get(i)) {
            Some(Visual::Image { shown, full }) => Ok((shown, full.as_ref())),
            _ => Err(ToolCallError::TargetImageOutOfRange {
                target,
                available: n,
            }),
        }
    }

    fn run_crop(
        &self,
        bbox: [f64; 4],
        target: i64,
    ) -> Result<(Observation, Vec<Visual>), ToolCallError> {
        let (shown, full) = self.crop_target(target)?;
        let source = match (self.config.crop.source, full) {
            (CropSource::Original, Some(full)) => full,
            _ => shown,
        };
        let cropped = crop_normalized(source, shown.dimensions(), bbox, &self.config.crop)
            .map_err(op_error)?;
        let resized = smart_resize_image(&cropped, self.config.crop_resize).map_err(op_error)?;
        let full = (!std::ptr::eq(source, shown)).then_some(cropped);
        Ok((
            Observation::crop(resized.clone()),
            vec![Visual::Image {
                shown: resized,
                full,
            }],
        ))
    }

    fn run_select_frames(
        &self,
        selection: &[i64],
    ) -> Result<(Observation, Vec<Visual>), ToolCallError> {
        let Some(Visual::Video(frames)) = self.visuals.first() else {
            return Err(ToolCallError::SelectFramesOnImage);
        };
        let numbers = checked_numbers(frames.len(), selection, self.config.max_frames_per_call)?;
        let picked = numbers.iter().map(|&n| &frames[n - 1]);
        // Resized frames are made from the video's frames directly, without copying them first.
        let shown = match self.config.frame_resize {
            Some(limits) => picked
                .map(|f| smart_resize_image(f, limits).map_err(op_error))
                .collect::<Result<Vec<_>, _>>()?,
            None => picked.cloned().collect(),
        };
        // Official numbering: from the image-list length before the frames are added.
        let first = self.visuals.len();
        let added = shown.iter().cloned().map(Visual::image).collect();
        Ok((Observation::frames(shown, first), added))
    }

    fn run_zoom_in(
        &self,
        bbox: [f64; 4],
        label: Option<&str>,
    ) -> Result<(Observation, Vec<Visual>), ToolCallError> {
        let image = match self.visuals.first() {
            Some(Visual::Image { shown, .. }) => shown,
            _ => {
                return Err(ToolCallError::ImageToolOnVideo {
                    tool: IMAGE_ZOOM_IN_TOOL.to_owned(),
                });
            }
        };
        let as_written = py_bbox(&bbox);
        let invalid = |e: Error| match e {
            Error::ZoomBoxInvalid { min, .. } => ToolCallError::ZoomBoxInvalid {
                bbox: as_written.clone(),
                min,
            },
            other => op_error(other),
        };
        let cropped = zoom_in(image, bbox).map_err(invalid)?;
        let resized = smart_resize_image(&cropped, self.config.crop_resize).map_err(op_error)?;
        Ok((
            Observation::zoom_in(resized.clone(), &as_written, label),
            vec![Visual::image(resized)],
        ))
    }
}

/// A 1-based index as written by the model, as a 0-based index (`None` below 1).
fn index0(one_based: i64) -> Option<usize> {
    usize::try_from(one_based).ok()?.checked_sub(1)
}

/// Turns an image-operation error into the message the model sees (official texts pass through).
fn op_error(e: Error) -> ToolCallError {
    match e {
        Error::CropTooSmall { width, height } => ToolCallError::CropTooSmall { width, height },
        Error::CropRightLessThanLeft => ToolCallError::RightLessThanLeft,
        Error::CropLowerLessThanUpper => ToolCallError::LowerLessThanUpper,
        other => ToolCallError::Operation(other.to_string()),
    }
}
