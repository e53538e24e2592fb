//! The protocol texts a trace contains: the user-turn guideline, tool-call blocks, observation texts.
//!
//! Exact strings of the official code (ARCHITECTURE.md §2). Kept in one place so they can follow
//! `pixel-ops`' protocol module.

/// The guideline the official prompt appends to every question (`templates["vcot"]`).
pub const GUIDELINE: &str = "\n\nGuidelines: Understand the given visual information and the user query. Determine if it is beneficial to employ the given visual operations (tools). For a video, we can look closer by `select_frames`. For an image, we can look closer by `crop_image`. Reason with the visual information step by step, and put your final answer within \\boxed{}.";

/// The user-turn text for a question: `question + "\n\n" + GUIDELINE`, as the official data loader builds it.
pub fn user_text(question: &str) -> String {
    format!("{question}\n\n{GUIDELINE}")
}

/// Formats a float as Python's `json.dumps` does (shortest round-trip repr, `1.0` not `1`).
fn py_float(x: f64) -> String {
    // serde_json uses ryu: the shortest representation that round-trips, like Python's repr.
    serde_json::to_string(&x).unwrap_or_else(|_| "0.0".to_string())
}

/// The `<tool_call>` block for `crop_image_normalized` (Python `json.dumps` spacing).
pub fn crop_call(bbox: [f64; 4], target_image: usize) -> String {
    format!(
        "<tool_call>\n{{\"name\": \"crop_image_normalized\", \"arguments\": {{\"bbox_2d\": [{}, {}, {}, {}], \"target_image\": {target_image}}}}}\n</tool_call>",
        py_float(bbox[0]),
        py_float(bbox[1]),
        py_float(bbox[2]),
        py_float(bbox[3]),
    )
}

/// The `<tool_call>` block for `select_frames` (1-based frame numbers).
pub fn select_frames_call(frames: &[usize]) -> String {
    let list = frames
        .iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "<tool_call>\n{{\"name\": \"select_frames\", \"arguments\": {{\"target_frames\": [{list}]}}}}\n</tool_call>"
    )
}

/// The observation text that precedes a cropped image.
pub fn crop_observation(width: u32, height: u32) -> String {
    format!("\nHere is the cropped image (Image Size: {width}x{height}):")
}

/// The observation text that precedes selected frames (numbered `first` to `last`).
pub fn frames_observation(width: u32, height: u32, first: usize, last: usize) -> String {
    format!(
        "\nHere are the selected frames (Frame Size: {width}x{height}, Numbered {first} to {last}):"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_match_python_json_dumps() {
        // json.dumps({"name": "crop_image_normalized", "arguments": {"bbox_2d": [0.1, 0.25, 0.5, 1.0], "target_image": 1}})
        assert_eq!(
            crop_call([0.1, 0.25, 0.5, 1.0], 1),
            "<tool_call>\n{\"name\": \"crop_image_normalized\", \"arguments\": {\"bbox_2d\": [0.1, 0.25, 0.5, 1.0], \"target_image\": 1}}\n</tool_call>"
        );
        assert_eq!(
            select_frames_call(&[3, 4, 5]),
            "<tool_call>\n{\"name\": \"select_frames\", \"arguments\": {\"target_frames\": [3, 4, 5]}}\n</tool_call>"
        );
        assert!(user_text("Q?").ends_with("within \\boxed{}."));
        assert!(user_text("Q?").starts_with("Q?\n\n\n\nGuidelines: "));
    }
}
