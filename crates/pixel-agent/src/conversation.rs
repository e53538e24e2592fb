//! Turns of a conversation as the engines receive them: the system prompt, the question turn with its
//! images or video, and observations (tool results) as user turns.

use image::RgbImage;
use pixel_ops::{Observation, ToolSet, Video};
use serde_json::{Value, json};

/// One part of a user turn, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// Text.
    Text(String),
    /// An image, as the model should see it (engines resize it to their processor's limits).
    Image(RgbImage),
    /// A video as its sampled frames.
    Video(Video),
}

/// A user turn: the question with its media, or an observation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UserTurn {
    /// The parts in order.
    pub parts: Vec<Part>,
}

impl UserTurn {
    /// The question turn of the official protocol: the images (or the video) first, then the question
    /// followed by the tool set's guidelines (`ToolSet::user_text`).
    pub fn question(tools: ToolSet, media: Vec<Part>, question: &str) -> Self {
        Self::with_text(media, tools.user_text(question))
    }

    /// A question turn with its text as given: the media first, then `text`.
    pub fn with_text(media: Vec<Part>, text: String) -> Self {
        let mut parts = media;
        parts.push(Part::Text(text));
        Self { parts }
    }

    /// An observation as the next user turn: its text first, then its images.
    pub fn observation(observation: &Observation) -> Self {
        let mut parts = vec![Part::Text(observation.text.clone())];
        parts.extend(observation.images.iter().cloned().map(Part::Image));
        Self { parts }
    }

    /// The images of the turn, in order.
    pub fn images(&self) -> impl Iterator<Item = &RgbImage> {
        self.parts.iter().filter_map(|p| match p {
            Part::Image(i) => Some(i),
            _ => None,
        })
    }

    /// The videos of the turn, in order.
    pub fn videos(&self) -> impl Iterator<Item = &Video> {
        self.parts.iter().filter_map(|p| match p {
            Part::Video(v) => Some(v),
            _ => None,
        })
    }

    /// The message as a chat template receives it (`{"role": "user", "content": [...]}`, Qwen's content
    /// list with `{"type": "image"}` / `{"type": "video"}` placeholders).
    pub fn to_template_json(&self) -> Value {
        let content: Vec<Value> = self
            .parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => json!({"type": "text", "text": t}),
                Part::Image(_) => json!({"type": "image"}),
                Part::Video(_) => json!({"type": "video"}),
            })
            .collect();
        json!({"role": "user", "content": content})
    }
}

/// A message of the conversation so far, as the chat template receives it.
pub(crate) fn system_json(system: &str) -> Value {
    json!({"role": "system", "content": system})
}

/// An assistant message with its text.
pub(crate) fn assistant_json(text: &str) -> Value {
    json!({"role": "assistant", "content": text})
}
