//! The tool protocol a Pixel Reasoner model speaks: tool schemas, the system prompt, the user-turn text.
//!
//! Everything here renders byte-identical to the official code (TIGER-AI-Lab/Pixel-Reasoner,
//! `curiosity_driven_rl/openrlhf/trainer/ppo_utils/experience_maker.py` and
//! `openrlhf/datasets/prompts_dataset.py`) and qwen-agent's `NousFnCallPrompt`; the committed fixtures
//! under `tests/fixtures/protocol/` are written by `scripts/gen_protocol_fixtures.py` from those sources.

use serde::{Deserialize, Serialize};

use crate::pyjson::PyValue;

/// The default system message the official code puts before the tool block.
pub const DEFAULT_SYSTEM_MESSAGE: &str = "You are a helpful assistant.";

/// The official user-turn guideline (`templates["vcot"]` in `prompts_dataset.py`), appended to the question
/// after a further `"\n\n"`.
pub const GUIDELINES: &str = "\n\nGuidelines: Understand the given visual information and the user query. Determine if it is beneficial to employ the given visual operations (tools). For a video, we can look closer by `select_frames`. For an image, we can look closer by `crop_image`. Reason with the visual information step by step, and put your final answer within \\boxed{}.";

/// Name of the official zoom-in tool.
pub const CROP_IMAGE_NORMALIZED: &str = "crop_image_normalized";
/// Name of the official frame-selection tool.
pub const SELECT_FRAMES: &str = "select_frames";
/// Name of the DeepEyes / verl zoom-in tool.
pub const IMAGE_ZOOM_IN_TOOL: &str = "image_zoom_in_tool";

/// Opening tag of a tool call in a model turn.
pub const TOOL_CALL_START: &str = "<tool_call>";
/// Closing tag of a tool call; a turn calls a tool iff it ends with this tag.
pub const TOOL_CALL_END: &str = "</tool_call>";

/// qwen-agent's `FN_CALL_TEMPLATE` (Nous style) with `{tool_descs}` split out.
const FN_CALL_HEAD: &str = "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n";
const FN_CALL_TAIL: &str = "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>";

/// One function a model may call: name, description and a JSON-schema of its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSchema {
    /// The function name the model writes in `"name"`.
    pub name: String,
    /// What the function does, as shown to the model.
    pub description: String,
    /// JSON schema of the arguments (key order is kept when rendered).
    pub parameters: PyValue,
}

impl ToolSchema {
    /// The tool as qwen-agent lists it: `{"type": "function", "function": {name, description, parameters}}`.
    pub fn to_function_value(&self) -> PyValue {
        PyValue::object([
            ("type", PyValue::str("function")),
            (
                "function",
                PyValue::object([
                    ("name", PyValue::str(&self.name)),
                    ("description", PyValue::str(&self.description)),
                    ("parameters", self.parameters.clone()),
                ]),
            ),
        ])
    }
}

/// Which tool protocol an episode speaks. The episode machinery is shared; only the tools differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolSet {
    /// Pixel Reasoner: `crop_image_normalized` (normalized or absolute box, `target_image`) and
    /// `select_frames` (1-based frame numbers). The default.
    #[default]
    PixelReasoner,
    /// DeepEyes / verl: `image_zoom_in_tool` with an absolute `bbox_2d` on the original image and an
    /// optional `label`; boxes smaller than 28 px grow about their centre.
    DeepEyes,
}

impl ToolSet {
    /// The tools of this protocol, in the order the official prompt lists them.
    pub fn tools(self) -> Vec<ToolSchema> {
        match self {
            ToolSet::PixelReasoner => vec![crop_image_normalized_schema(), select_frames_schema()],
            ToolSet::DeepEyes => vec![image_zoom_in_schema()],
        }
    }

    /// The names of this protocol's tools.
    pub fn tool_names(self) -> &'static [&'static str] {
        match self {
            ToolSet::PixelReasoner => &[CROP_IMAGE_NORMALIZED, SELECT_FRAMES],
            ToolSet::DeepEyes => &[IMAGE_ZOOM_IN_TOOL],
        }
    }

    /// The system message: [`DEFAULT_SYSTEM_MESSAGE`], a blank line, then the tool block.
    pub fn system_prompt(self) -> String {
        system_prompt_with(DEFAULT_SYSTEM_MESSAGE, &self.tools())
    }

    /// The text of the first user turn for `question` (the image or video goes before it).
    ///
    /// Pixel Reasoner appends [`GUIDELINES`] after `"\n\n"` as the official data loader does. DeepEyes'
    /// own instruction text is not reproduced: its question is passed through unchanged.
    pub fn user_text(self, question: &str) -> String {
        match self {
            ToolSet::PixelReasoner => format!("{question}\n\n{GUIDELINES}"),
            ToolSet::DeepEyes => question.to_owned(),
        }
    }
}

/// The Nous function-call block for `tools`, as qwen-agent renders it: one
/// `json.dumps(tool, ensure_ascii=False)` per line inside `<tools></tools>`.
///
/// qwen-agent (0.0.18 to 0.0.26 checked) writes non-ASCII characters unescaped; pass through
/// [`render_tools_block_ascii`] for the `ensure_ascii=True` form that `json.dumps` defaults to.
pub fn render_tools_block(tools: &[ToolSchema]) -> String {
    render_block(tools, false)
}

/// Like [`render_tools_block`], with non-ASCII characters escaped (`json.dumps` default `ensure_ascii=True`).
pub fn render_tools_block_ascii(tools: &[ToolSchema]) -> String {
    render_block(tools, true)
}

fn render_block(tools: &[ToolSchema], ensure_ascii: bool) -> String {
    let descs: Vec<String> = tools
        .iter()
        .map(|t| t.to_function_value().dumps(ensure_ascii))
        .collect();
    format!("{FN_CALL_HEAD}{}{FN_CALL_TAIL}", descs.join("\n"))
}

/// A system message `system` followed by `"\n\n"` and the tool block for `tools` (qwen-agent appends the
/// block to an existing system message this way).
pub fn system_prompt_with(system: &str, tools: &[ToolSchema]) -> String {
    format!("{system}\n\n{}", render_tools_block(tools))
}

fn number_array(description: &str) -> PyValue {
    PyValue::object([
        ("type", PyValue::str("array")),
        ("description", PyValue::str(description)),
        ("items", PyValue::object([("type", PyValue::str("number"))])),
    ])
}

/// The official `crop_image_normalized` schema (`CropImageNormalized` in `experience_maker.py`).
pub fn crop_image_normalized_schema() -> ToolSchema {
    ToolSchema {
        name: CROP_IMAGE_NORMALIZED.to_owned(),
        description: "Zoom in on the image based on the bounding box coordinates. It is useful when the object or text in the image is too small to be seen.".to_owned(),
        parameters: PyValue::object([
            ("type", PyValue::str("object")),
            (
                "properties",
                PyValue::object([
                    (
                        "bbox_2d",
                        number_array(
                            "coordinates for bounding box of the area you want to zoom in. Values should be within [0.0,1.0].",
                        ),
                    ),
                    (
                        "target_image",
                        PyValue::object([
                            ("type", PyValue::str("number")),
                            (
                                "description",
                                PyValue::str(
                                    "The index of the image to crop. Index from 1 to the number of images. Choose 1 to operate on original image.",
                                ),
                            ),
                        ]),
                    ),
                ]),
            ),
            ("required", PyValue::Array(vec![PyValue::str("bbox_2d"), PyValue::str("target_image")])),
        ]),
    }
}

/// The official `select_frames` schema (`SelectFrames` in `experience_maker.py`).
pub fn select_frames_schema() -> ToolSchema {
    ToolSchema {
        name: SELECT_FRAMES.to_owned(),
        description: "Select frames from a video.".to_owned(),
        parameters: PyValue::object([
            ("type", PyValue::str("object")),
            (
                "properties",
                PyValue::object([(
                    "target_frames",
                    PyValue::object([
                        ("type", PyValue::str("array")),
                        (
                            "description",
                            PyValue::str(
                                "List of frame indices to select from the video (no more than 8 frames in total).",
                            ),
                        ),
                        (
                            "items",
                            PyValue::object([
                                ("type", PyValue::str("integer")),
                                ("description", PyValue::str("Frame index from 1 to 16.")),
                            ]),
                        ),
                    ]),
                )]),
            ),
            (
                "required",
                PyValue::Array(vec![PyValue::str("target_frames")]),
            ),
        ]),
    }
}

/// The DeepEyes / verl `image_zoom_in_tool` schema (key order as in verl's
/// `examples/sglang_multiturn/config/tool_config/image_zoom_in_tool_config.yaml`).
pub fn image_zoom_in_schema() -> ToolSchema {
    ToolSchema {
        name: IMAGE_ZOOM_IN_TOOL.to_owned(),
        description: "Zoom in on a specific region of an image by cropping it based on a bounding box (bbox) and an optional object label.".to_owned(),
        parameters: PyValue::object([
            ("type", PyValue::str("object")),
            (
                "properties",
                PyValue::object([
                    (
                        "bbox_2d",
                        PyValue::object([
                            ("type", PyValue::str("array")),
                            ("items", PyValue::object([("type", PyValue::str("number"))])),
                            ("minItems", PyValue::Int(4)),
                            ("maxItems", PyValue::Int(4)),
                            (
                                "description",
                                PyValue::str(
                                    "The bounding box of the region to zoom in, as [x1, y1, x2, y2], where (x1, y1) is the top-left corner and (x2, y2) is the bottom-right corner.",
                                ),
                            ),
                        ]),
                    ),
                    (
                        "label",
                        PyValue::object([
                            ("type", PyValue::str("string")),
                            (
                                "description",
                                PyValue::str("The name or label of the object in the specified bounding box (optional)."),
                            ),
                        ]),
                    ),
                ]),
            ),
            ("required", PyValue::Array(vec![PyValue::str("bbox_2d")])),
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_prompt_has_one_tool_per_line() {
        let p = ToolSet::PixelReasoner.system_prompt();
        assert!(p.starts_with("You are a helpful assistant.\n\n# Tools\n"));
        let inside = p
            .split("<tools>\n")
            .nth(1)
            .and_then(|s| s.split("\n</tools>").next())
            .unwrap_or("");
        assert_eq!(inside.lines().count(), 2);
        assert!(p.ends_with("</tool_call>"));
    }

    #[test]
    fn user_text_puts_four_newlines_before_guidelines() {
        let t = ToolSet::PixelReasoner.user_text("Q?");
        assert!(t.starts_with("Q?\n\n\n\nGuidelines: "));
    }
}
