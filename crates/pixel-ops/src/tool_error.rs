//! Why a tool call failed: the message becomes the model's error observation.
//!
//! Variants marked *official* print the exact message of the official `execute_tool` /
//! `crop_image_normalized` (TIGER-AI-Lab/Pixel-Reasoner, `experience_maker.py`) or of verl's
//! `ImageZoomInTool`. The official code lets Python exceptions (`KeyError`, `JSONDecodeError`, ...)
//! through as their bare `str(e)`; for those cases the messages here say what was wrong instead.

use crate::pyjson::py_int_list;

/// A tool call that could not be parsed or executed. `Display` is the text shown to the model inside
/// `"\nExecution error:\n{message}\n"`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ToolCallError {
    /// The turn ends with `</tool_call>` but has no `<tool_call>` before it.
    #[error("Invalid tool call: `</tool_call>` without a preceding `<tool_call>`.")]
    MissingStartTag,
    /// The text between the tags is not valid JSON.
    #[error(
        "Invalid tool call: the text inside <tool_call></tool_call> is not valid JSON ({reason})."
    )]
    Json {
        /// The JSON parser's message (line and column).
        reason: String,
    },
    /// The JSON nests deeper than the parser allows.
    #[error("Invalid tool call: the JSON nests deeper than {limit} levels.")]
    TooDeep {
        /// The nesting limit.
        limit: usize,
    },
    /// The call is valid JSON but not an object with `name` and `arguments`.
    #[error(
        "Invalid tool call: expected {{\"name\": <function-name>, \"arguments\": <args-json-object>}}, {problem}."
    )]
    Shape {
        /// What is wrong (e.g. `"name" is missing`).
        problem: String,
    },
    /// The named tool is not one of the tool set's tools.
    #[error("Unknown tool `{name}`. Available tools: {available}.")]
    UnknownTool {
        /// The name the model wrote.
        name: String,
        /// The tool set's tool names, comma separated.
        available: String,
    },
    /// An argument is missing or has the wrong type.
    #[error("Invalid argument `{argument}` for `{tool}`: expected {expected}, got {got}.")]
    BadArgument {
        /// The tool.
        tool: String,
        /// The argument name.
        argument: String,
        /// What the schema asks for.
        expected: String,
        /// What the model wrote (JSON, truncated).
        got: String,
    },
    /// *Official*: `select_frames` in an episode without a video.
    #[error(
        "Execution Error: You attempted to `select_frames` from **image** not **video**. You should use `crop_image_normalized` instead for inspecting **image**."
    )]
    SelectFramesOnImage,
    /// *Official*: more than 8 frames selected.
    #[error(
        "Execution Error: You have selected {count} frames in total. Think again which frames you need to check in details (no more than {max} frames)"
    )]
    TooManyFrames {
        /// How many frames were asked for.
        count: usize,
        /// The limit (official: 8).
        max: usize,
    },
    /// *Official*: a frame number outside `[1, n]` (the official code only checks the upper end;
    /// numbers below 1 get the same message here instead of Python's negative indexing).
    #[error(
        "Execution Error: There are {available} frames numbered in range [1,{available}]. Your selection `target_frames={}` is out of range.",
        py_int_list(frames)
    )]
    FramesOutOfRange {
        /// The selection as written.
        frames: Vec<i64>,
        /// Frames in the video.
        available: usize,
    },
    /// An empty `target_frames` list (Python fails with `max() arg is an empty sequence`).
    #[error(
        "Execution Error: `target_frames` is empty. Select at least one frame (no more than {max} frames)."
    )]
    NoFramesSelected {
        /// The limit (official: 8).
        max: usize,
    },
    /// *Official*: `target_image` outside `[1, n]` in an image episode.
    #[error(
        "Execution Error: Incorrect `target_image` argument in `crop_image_normalized` operation. You can only pick an image within [1,{available}]"
    )]
    TargetImageOutOfRange {
        /// The index as written.
        target: i64,
        /// Images available.
        available: usize,
    },
    /// *Official*: cropping a video episode with only the video: `target_image` picks a frame.
    #[error(
        "Execution Error: Incorrect `target_image` argument in `crop_image_normalized` operation. You can only pick an image **from** the video within [1,{frames}], but the current argument `target_image={target}`."
    )]
    TargetFrameOutOfRange {
        /// The index as written.
        target: i64,
        /// Frames in the video.
        frames: usize,
    },
    /// *Official*: cropping a video episode after frames were selected: `target_image` must pick one of
    /// the images after the video (2 and up).
    #[error(
        "Execution Error: Incorrect `target_image` argument in `crop_image_normalized` operation. You can only pick an image within range [2,{available}], but the current argument `target_image={target}`."
    )]
    TargetImageIsVideo {
        /// The index as written.
        target: i64,
        /// Entries in the image list (the video counts as one).
        available: usize,
    },
    /// *Official* (Pillow): the padded box has its right edge left of its left edge.
    #[error("Coordinate 'right' is less than 'left'")]
    RightLessThanLeft,
    /// *Official* (Pillow): the padded box has its lower edge above its upper edge.
    #[error("Coordinate 'lower' is less than 'upper'")]
    LowerLessThanUpper,
    /// *Official*: the crop is not larger than 28x28.
    #[error("Cropped image is too small: {width}x{height}")]
    CropTooSmall {
        /// Crop width in pixels of the image the model sees.
        width: u32,
        /// Crop height in pixels.
        height: u32,
    },
    /// *Official* (verl): the DeepEyes box is invalid or too small even after growing.
    #[error(
        "Error: The specified bounding box {bbox} is invalid or results in a crop smaller than the minimum size of {min}x{min}."
    )]
    ZoomBoxInvalid {
        /// The box as written, `[x1, y1, x2, y2]`.
        bbox: String,
        /// The minimum side (28).
        min: u32,
    },
    /// A tool of the other modality: `image_zoom_in_tool` in a video episode.
    #[error("Execution Error: `{tool}` works on images only; this query has a video.")]
    ImageToolOnVideo {
        /// The tool.
        tool: String,
    },
    /// The operation itself failed (an image operation returned an error).
    #[error("Execution Error: {0}")]
    Operation(String),
}

impl ToolCallError {
    /// Whether the error comes from parsing the call (as opposed to executing a well-formed call).
    pub fn is_parse_error(&self) -> bool {
        matches!(
            self,
            ToolCallError::MissingStartTag
                | ToolCallError::Json { .. }
                | ToolCallError::TooDeep { .. }
                | ToolCallError::Shape { .. }
                | ToolCallError::UnknownTool { .. }
                | ToolCallError::BadArgument { .. }
        )
    }
}
