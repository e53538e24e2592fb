//! The protocol texts a trace contains, taken from `pixel-ops` so traces and rollouts speak alike:
//! the user-turn text, tool-call blocks and observation texts (`docs/protocol.md`, sections 1-3).

use pixel_ops::observation::{crop_text, frames_text};
use pixel_ops::{ToolCall, ToolSet};

/// The first user turn's text for `question`: `question + "\n\n" + GUIDELINES` (the official data loader).
pub fn user_text(question: &str) -> String {
    ToolSet::PixelReasoner.user_text(question)
}

/// The `<tool_call>` block for `crop_image_normalized` on image `target_image` (1-based).
pub fn crop_call(bbox: [f64; 4], target_image: usize) -> String {
    ToolCall::Crop {
        bbox,
        target_image: i64::try_from(target_image).unwrap_or(i64::MAX),
    }
    .render()
}

/// The `<tool_call>` block for `select_frames` (1-based frame numbers).
pub fn select_frames_call(frames: &[usize]) -> String {
    let frames = frames
        .iter()
        .map(|&f| i64::try_from(f).unwrap_or(i64::MAX))
        .collect();
    ToolCall::SelectFrames { frames }.render()
}

/// The observation text that precedes a cropped image of `width` x `height`.
pub fn crop_observation(width: u32, height: u32) -> String {
    crop_text(width, height)
}

/// The observation text that precedes selected frames numbered `first` to `last`.
pub fn frames_observation(width: u32, height: u32, first: usize, last: usize) -> String {
    frames_text(width, height, first, last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_match_python_json_dumps() {
        // json.dumps({"name": "crop_image_normalized", "arguments": {"bbox_2d": [0.1, 0.25, 0.5, 0.999], "target_image": 1}})
        assert_eq!(
            crop_call([0.1, 0.25, 0.5, 0.999], 1),
            "<tool_call>\n{\"name\": \"crop_image_normalized\", \"arguments\": {\"bbox_2d\": [0.1, 0.25, 0.5, 0.999], \"target_image\": 1}}\n</tool_call>"
        );
        assert_eq!(
            select_frames_call(&[3, 4, 5]),
            "<tool_call>\n{\"name\": \"select_frames\", \"arguments\": {\"target_frames\": [3, 4, 5]}}\n</tool_call>"
        );
        assert!(user_text("Q?").ends_with("within \\boxed{}."));
        assert!(user_text("Q?").starts_with("Q?\n\n\n\nGuidelines: "));
        assert_eq!(
            crop_observation(4, 3),
            "\nHere is the cropped image (Image Size: 4x3):"
        );
    }
}
