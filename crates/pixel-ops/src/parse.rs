//! Parsing a model turn into a typed tool call.
//!
//! The official rule (`experience_maker.py`): remove `<|im_end|>` from the generated text; the turn calls a
//! tool iff what is left ends with `</tool_call>`; the call is the JSON between the last `<tool_call>` and
//! the `</tool_call>` after it. Parsing never panics: every failure is a [`ToolCallError`] whose message
//! goes back to the model.

use serde_json::Value;

use crate::protocol::{
    CROP_IMAGE_NORMALIZED, IMAGE_ZOOM_IN_TOOL, SELECT_FRAMES, TOOL_CALL_END, TOOL_CALL_START,
    ToolSet,
};
use crate::pyjson::{PyValue, py_float_repr};
use crate::tool_error::ToolCallError;

/// The end-of-turn marker the official code strips before looking for `</tool_call>`.
pub const IM_END: &str = "<|im_end|>";

/// Deepest JSON nesting accepted in a call (a real call nests 3 levels). Checked before `serde_json`
/// sees the text, so no input can exhaust the stack.
pub const MAX_JSON_DEPTH: usize = 32;

/// A well-formed tool call.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolCall {
    /// `crop_image_normalized`: zoom into `bbox` (`[x1, y1, x2, y2]`, normalized if all four are `< 1`,
    /// else absolute pixels of the target image) of image `target_image` (1-based; 1 = the original).
    Crop {
        /// The box as written.
        bbox: [f64; 4],
        /// 1-based index into the episode's image list.
        target_image: i64,
    },
    /// `select_frames`: the 1-based frame numbers to look at (at most 8).
    SelectFrames {
        /// Frame numbers as written.
        frames: Vec<i64>,
    },
    /// DeepEyes `image_zoom_in_tool`: an absolute box on the original image with an optional label.
    ZoomIn {
        /// The box in pixels of the original (model-input) image.
        bbox: [f64; 4],
        /// The object's name, if given.
        label: Option<String>,
    },
}

impl ToolCall {
    /// The tool name the call uses.
    pub fn tool_name(&self) -> &'static str {
        match self {
            ToolCall::Crop { .. } => CROP_IMAGE_NORMALIZED,
            ToolCall::SelectFrames { .. } => SELECT_FRAMES,
            ToolCall::ZoomIn { .. } => IMAGE_ZOOM_IN_TOOL,
        }
    }

    /// The call as a JSON value `{"name": ..., "arguments": {...}}` (argument order as in the schema).
    pub fn to_value(&self) -> PyValue {
        let bbox = |b: &[f64; 4]| PyValue::Array(b.iter().map(|&x| PyValue::Float(x)).collect());
        let args = match self {
            ToolCall::Crop {
                bbox: b,
                target_image,
            } => PyValue::object([
                ("bbox_2d", bbox(b)),
                ("target_image", PyValue::Int(*target_image)),
            ]),
            ToolCall::SelectFrames { frames } => PyValue::object([(
                "target_frames",
                PyValue::Array(frames.iter().map(|&f| PyValue::Int(f)).collect()),
            )]),
            ToolCall::ZoomIn { bbox: b, label } => {
                let mut pairs = vec![("bbox_2d", bbox(b))];
                if let Some(l) = label {
                    pairs.push(("label", PyValue::str(l)));
                }
                PyValue::object(pairs)
            }
        };
        PyValue::object([
            ("name", PyValue::str(self.tool_name())),
            ("arguments", args),
        ])
    }

    /// The call as a model writes it: `<tool_call>\n{json}\n</tool_call>`, the JSON written as qwen-agent
    /// writes calls (`json.dumps(call, ensure_ascii=False)`).
    pub fn render(&self) -> String {
        format!(
            "{TOOL_CALL_START}\n{}\n{TOOL_CALL_END}",
            self.to_value().dumps(false)
        )
    }
}

/// What a model turn asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelTurn {
    /// The turn does not end with `</tool_call>`: it is the final answer.
    Answer,
    /// The turn ends with `</tool_call>`: a call, or the reason it cannot be executed.
    ToolCall(Result<ToolCall, ToolCallError>),
}

impl ModelTurn {
    /// Whether the turn requested a tool (well-formed or not).
    pub fn is_tool_call(&self) -> bool {
        matches!(self, ModelTurn::ToolCall(_))
    }
}

/// The turn with every `<|im_end|>` removed, as the official code does before checking for a call.
pub fn strip_im_end(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains(IM_END) {
        text.replace(IM_END, "").into()
    } else {
        text.into()
    }
}

/// Whether `text` requests a tool: after removing `<|im_end|>`, it ends with `</tool_call>`.
pub fn requests_tool(text: &str) -> bool {
    strip_im_end(text).ends_with(TOOL_CALL_END)
}

/// The JSON text of the last call: between the last `<tool_call>` and the `</tool_call>` after it
/// (Python: `text.split("<tool_call>")[-1].split("</tool_call>")[0]`). `None` without a `<tool_call>`.
pub fn last_tool_call_json(text: &str) -> Option<&str> {
    let start = text.rfind(TOOL_CALL_START)? + TOOL_CALL_START.len();
    let rest = &text[start..];
    Some(rest.find(TOOL_CALL_END).map_or(rest, |end| &rest[..end]))
}

/// Parses a model turn for `tools`.
///
/// ```
/// use pixel_ops::{ModelTurn, ToolCall, ToolSet, parse_turn};
/// let turn = "Let me zoom in.\n<tool_call>\n{\"name\": \"crop_image_normalized\", \
///             \"arguments\": {\"bbox_2d\": [0.1, 0.2, 0.3, 0.4], \"target_image\": 1}}\n</tool_call>";
/// assert_eq!(
///     parse_turn(turn, ToolSet::PixelReasoner),
///     ModelTurn::ToolCall(Ok(ToolCall::Crop { bbox: [0.1, 0.2, 0.3, 0.4], target_image: 1 }))
/// );
/// assert_eq!(parse_turn("The answer is \\boxed{B}.", ToolSet::PixelReasoner), ModelTurn::Answer);
/// ```
pub fn parse_turn(text: &str, tools: ToolSet) -> ModelTurn {
    if !requests_tool(text) {
        return ModelTurn::Answer;
    }
    // The official code looks for the call in the text as generated (`<|im_end|>` is only removed for
    // the end check), so a marker inside the JSON stays there and makes it invalid.
    ModelTurn::ToolCall(match last_tool_call_json(text) {
        None => Err(ToolCallError::MissingStartTag),
        Some(json) => parse_call_json(json, tools),
    })
}

/// [`parse_turn`] for raw bytes (invalid UTF-8 is replaced with U+FFFD, as a lossy decode would).
pub fn parse_turn_bytes(bytes: &[u8], tools: ToolSet) -> ModelTurn {
    parse_turn(&String::from_utf8_lossy(bytes), tools)
}

/// Parses the JSON of one call (the text between the tags) for `tools`.
pub fn parse_call_json(json: &str, tools: ToolSet) -> Result<ToolCall, ToolCallError> {
    check_depth(json)?;
    let value: Value = serde_json::from_str(json).map_err(|e| ToolCallError::Json {
        reason: e.to_string(),
    })?;
    let Value::Object(call) = &value else {
        return Err(shape(format!("got {}", kind_of(&value))));
    };
    let name = match call.get("name") {
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            return Err(shape(format!(
                "\"name\" is {}, not a string",
                kind_of(other)
            )));
        }
        None => return Err(shape("\"name\" is missing".to_owned())),
    };
    if !tools.tool_names().contains(&name) {
        return Err(ToolCallError::UnknownTool {
            name: truncate(name, 80),
            available: tools.tool_names().join(", "),
        });
    }
    let args = match call.get("arguments") {
        Some(Value::Object(args)) => args,
        Some(other) => {
            return Err(shape(format!(
                "\"arguments\" is {}, not an object",
                kind_of(other)
            )));
        }
        None => return Err(shape("\"arguments\" is missing".to_owned())),
    };
    let arg = |key: &str| args.get(key);
    match name {
        CROP_IMAGE_NORMALIZED => Ok(ToolCall::Crop {
            bbox: bbox_arg(name, arg("bbox_2d"))?,
            target_image: integer_arg(name, "target_image", arg("target_image"))?,
        }),
        SELECT_FRAMES => {
            let frames = match arg("target_frames") {
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|v| integer_arg(name, "target_frames", Some(v)))
                    .collect::<Result<Vec<_>, _>>()?,
                other => return Err(bad(name, "target_frames", "an array of integers", other)),
            };
            Ok(ToolCall::SelectFrames { frames })
        }
        _ => {
            let label = match arg("label") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.is_empty() => None,
                Some(Value::String(s)) => Some(s.clone()),
                other => return Err(bad(name, "label", "a string", other)),
            };
            Ok(ToolCall::ZoomIn {
                bbox: bbox_arg(name, arg("bbox_2d"))?,
                label,
            })
        }
    }
}

/// Rejects JSON nested deeper than [`MAX_JSON_DEPTH`] without recursing.
fn check_depth(json: &str) -> Result<(), ToolCallError> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for b in json.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(ToolCallError::TooDeep {
                        limit: MAX_JSON_DEPTH,
                    });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn shape(problem: String) -> ToolCallError {
    ToolCallError::Shape { problem }
}

fn bad(tool: &str, argument: &str, expected: &str, got: Option<&Value>) -> ToolCallError {
    ToolCallError::BadArgument {
        tool: tool.to_owned(),
        argument: argument.to_owned(),
        expected: expected.to_owned(),
        got: got.map_or_else(
            || "nothing (missing)".to_owned(),
            |v| truncate(&v.to_string(), 80),
        ),
    }
}

fn bbox_arg(tool: &str, v: Option<&Value>) -> Result<[f64; 4], ToolCallError> {
    const EXPECTED: &str = "an array of 4 finite numbers [x1, y1, x2, y2]";
    let Some(Value::Array(items)) = v else {
        return Err(bad(tool, "bbox_2d", EXPECTED, v));
    };
    if items.len() != 4 {
        return Err(bad(tool, "bbox_2d", EXPECTED, v));
    }
    let mut out = [0.0; 4];
    for (slot, item) in out.iter_mut().zip(items) {
        match item.as_f64() {
            Some(x) if x.is_finite() => *slot = x,
            _ => return Err(bad(tool, "bbox_2d", EXPECTED, v)),
        }
    }
    Ok(out)
}

/// An integer argument; integral floats (`1.0`) are accepted, as the schema's `"number"` allows.
fn integer_arg(tool: &str, argument: &str, v: Option<&Value>) -> Result<i64, ToolCallError> {
    let expected = "an integer";
    match v {
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                return Ok(i);
            }
            match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
                _ => Err(bad(tool, argument, expected, v)),
            }
        }
        _ => Err(bad(tool, argument, expected, v)),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_owned()
    } else {
        let head: String = s.chars().take(max_chars).collect();
        format!("{head}...")
    }
}

/// Formats a box as Python prints a list of numbers: integral values without a fraction (as JSON
/// integers print), others in `repr`.
pub(crate) fn py_bbox(b: &[f64; 4]) -> String {
    let parts: Vec<String> = b
        .iter()
        .map(|&x| {
            if x.fract() == 0.0 && x.abs() < 1e15 {
                format!("{}", x as i64)
            } else {
                py_float_repr(x)
            }
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_call_is_between_last_start_and_next_end() {
        let t = "<tool_call>a</tool_call> x <tool_call>b</tool_call>";
        assert_eq!(last_tool_call_json(t), Some("b"));
        assert_eq!(last_tool_call_json("no tags</tool_call>"), None);
    }

    #[test]
    fn depth_guard_ignores_brackets_in_strings() {
        let deep_in_string = format!("\"{}\"", "[".repeat(1000));
        assert!(check_depth(&deep_in_string).is_ok());
        assert!(check_depth(&"[".repeat(MAX_JSON_DEPTH + 1)).is_err());
    }

    #[test]
    fn bbox_prints_like_python() {
        assert_eq!(py_bbox(&[10.0, 20.0, 30.5, 1e-5]), "[10, 20, 30.5, 1e-05]");
    }
}
