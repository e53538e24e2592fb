//! The wire format of the OpenAI chat completions API: request bodies, user messages with images as PNG
//! `data:` URLs, and the parsing of a completion, all checked (an answer that is not a chat completion is a
//! reason string, never a panic).

use std::io::{Cursor, Read};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ImageEncoder, RgbImage};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::{END_OF_TURN, ERROR_BODY_CHARS};
use crate::conversation::{Part, UserTurn};
use crate::engine::TurnEnd;
use crate::error::{AgentError, Result};

/// What a chat completion said.
pub(super) struct Completion {
    pub(super) text: String,
    pub(super) logprobs: Vec<f32>,
    pub(super) end: TurnEnd,
    /// `usage.prompt_tokens + usage.completion_tokens`, when reported.
    pub(super) total_tokens: Option<usize>,
}

/// A request body: `model` and `messages` borrowed, then the sampling fields.
#[derive(Serialize)]
pub(super) struct ChatRequest<'a> {
    pub(super) model: &'a str,
    pub(super) messages: &'a [Value],
    #[serde(flatten)]
    pub(super) fields: Map<String, Value>,
}

/// The seed of `row`: `seed + row`, wrapped into `0..=i64::MAX` (vLLM validates seeds as signed 64-bit).
pub(super) fn row_seed(seed: u64, row: usize) -> u64 {
    seed.wrapping_add(row as u64) & (i64::MAX as u64)
}

/// The start of an error body, lossily decoded; never fails.
pub(super) fn body_snippet(body: &mut ureq::Body) -> String {
    let mut bytes = Vec::new();
    // An unreadable body leaves what was read (possibly nothing).
    let _ = body
        .as_reader()
        .take(4 * ERROR_BODY_CHARS as u64)
        .read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let mut snippet: String = text.chars().take(ERROR_BODY_CHARS).collect();
    if snippet.len() < text.len() {
        snippet.push('…');
    }
    snippet
}

/// `image` as an `image_url` content part with a PNG data URL.
pub(super) fn image_part(image: &RgbImage) -> Result<Value> {
    let mut png = Vec::new();
    PngEncoder::new_with_quality(
        Cursor::new(&mut png),
        CompressionType::Fast,
        FilterType::Adaptive,
    )
    .write_image(
        image.as_raw(),
        image.width(),
        image.height(),
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| {
        AgentError::Request(format!(
            "cannot encode a {}x{} image as PNG: {e}",
            image.width(),
            image.height()
        ))
    })?;
    let url = format!("data:image/png;base64,{}", BASE64.encode(&png));
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// `turn` as an OpenAI user message: text parts and images (video frames as images), in order.
pub(super) fn user_message(turn: &UserTurn) -> Result<Value> {
    let mut content = Vec::with_capacity(turn.parts.len());
    for part in &turn.parts {
        match part {
            Part::Text(t) => content.push(json!({"type": "text", "text": t})),
            Part::Image(i) => content.push(image_part(i)?),
            Part::Video(v) => {
                for frame in v.frames() {
                    content.push(image_part(frame)?);
                }
            }
        }
    }
    Ok(json!({"role": "user", "content": content}))
}

/// Parses a chat completion body; the error is the reason it is not one.
pub(super) fn parse_completion(bytes: &[u8]) -> std::result::Result<Completion, String> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("body is not JSON ({e})"))?;
    let Some(object) = value.as_object() else {
        return Err("body is not a JSON object".into());
    };
    let choice = match object.get("choices") {
        Some(Value::Array(choices)) => choices
            .first()
            .ok_or_else(|| "`choices` is empty".to_owned())?,
        Some(_) => return Err("`choices` is not an array".into()),
        None => {
            return Err(match object.get("error") {
                Some(error) => format!("no `choices`; error: {}", clip(&error.to_string())),
                None => "no `choices`".into(),
            });
        }
    };
    let content = match choice.get("message").and_then(|m| m.get("content")) {
        Some(Value::String(s)) => s,
        Some(Value::Null) | None => {
            return Err("`choices[0].message.content` is missing or null".into());
        }
        Some(_) => return Err("`choices[0].message.content` is not a string".into()),
    };
    let end = match choice.get("finish_reason") {
        Some(Value::String(r)) if r == "stop" => TurnEnd::Stop,
        Some(Value::String(r)) if r == "length" => TurnEnd::Length,
        Some(Value::String(r)) => {
            return Err(format!("unexpected `finish_reason` {:?}", clip(r)));
        }
        _ => return Err("`choices[0].finish_reason` is missing or not a string".into()),
    };
    let mut text = content.as_str();
    for token in END_OF_TURN {
        text = text.strip_suffix(token).unwrap_or(text);
    }
    let logprobs = choice
        .get("logprobs")
        .and_then(|l| l.get("content"))
        .and_then(Value::as_array)
        .and_then(|entries| {
            entries
                .iter()
                .map(|e| e.get("logprob").and_then(Value::as_f64).map(|l| l as f32))
                .collect::<Option<Vec<f32>>>()
        })
        .unwrap_or_default();
    let usage = object.get("usage");
    let count = |key: &str| usage.and_then(|u| u.get(key)).and_then(Value::as_u64);
    let total_tokens = match (count("prompt_tokens"), count("completion_tokens")) {
        (Some(p), Some(c)) => usize::try_from(p.saturating_add(c)).ok(),
        _ => None,
    };
    Ok(Completion {
        text: text.to_owned(),
        logprobs,
        end,
        total_tokens,
    })
}

/// The first characters of `s`, for error messages.
pub(super) fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(ERROR_BODY_CHARS).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}
