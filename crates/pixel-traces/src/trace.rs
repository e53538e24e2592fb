//! The project's own trajectory format: messages whose text spans say whether they are trained.
//!
//! One JSON object per line (JSONL). No system message is stored: the consumer renders the system prompt of
//! the tool set named in [`Trace::tools`] (from `pixel-ops`), so the long tool schema is not repeated per line.

use serde::{Deserialize, Serialize};

use crate::load::FromRecord;
use crate::official::{ContentItem, MessageContent, OfficialMessage, Role, SftRecord, VideoSource};
use crate::paths::DatasetRoot;

/// The tool set of the official Pixel Reasoner protocol (`crop_image_normalized`, `select_frames`).
pub const PIXEL_REASONER_TOOLS: &str = "pixel_reasoner";

/// One part of a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum TracePart {
    /// A span of text; `train` is true for spans the SFT loss covers.
    Text {
        /// The text.
        text: String,
        /// Whether the span is trained (only ever true inside assistant messages).
        #[serde(default)]
        train: bool,
    },
    /// An image, by path relative to the dataset root.
    Image {
        /// The image path.
        image: String,
    },
    /// A video as frame images, by paths relative to the dataset root.
    Video {
        /// The frame paths in order.
        video: Vec<String>,
    },
}

impl TracePart {
    /// An untrained text span.
    pub fn text(text: impl Into<String>) -> Self {
        TracePart::Text {
            text: text.into(),
            train: false,
        }
    }

    /// A trained text span.
    pub fn trained(text: impl Into<String>) -> Self {
        TracePart::Text {
            text: text.into(),
            train: true,
        }
    }
}

/// One message of a trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceMessage {
    /// The speaker: `user` (questions and observations) or `assistant`.
    pub role: Role,
    /// Its parts in order.
    pub content: Vec<TracePart>,
}

impl TraceMessage {
    /// The message's text with its media left out.
    pub fn text(&self) -> String {
        self.content
            .iter()
            .filter_map(|p| match p {
                TracePart::Text { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// A whole trajectory with its loss mask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    /// Sample id.
    pub id: String,
    /// The tool set whose system prompt precedes the messages ([`PIXEL_REASONER_TOOLS`]).
    pub tools: String,
    /// How the trace was made (`clean`, `one_wrong`, `two_wrong`, `coarse_to_fine`, `video_clean`,
    /// `video_wrong`, `text_only`, `official`).
    pub variant: String,
    /// The reference answer, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// The conversation (no system message).
    pub messages: Vec<TraceMessage>,
}

impl Trace {
    /// All trained text, concatenated in order.
    pub fn trained_text(&self) -> String {
        self.spans(true)
    }

    /// All untrained text, concatenated in order.
    pub fn untrained_text(&self) -> String {
        self.spans(false)
    }

    fn spans(&self, wanted: bool) -> String {
        self.messages
            .iter()
            .flat_map(|m| m.content.iter())
            .filter_map(|p| match p {
                TracePart::Text { text, train } if *train == wanted => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Every media path in the trace, in order.
    pub fn media_paths(&self) -> Vec<&str> {
        self.messages
            .iter()
            .flat_map(|m| m.content.iter())
            .flat_map(|p| match p {
                TracePart::Text { .. } => Vec::new(),
                TracePart::Image { image } => vec![image.as_str()],
                TracePart::Video { video } => video.iter().map(String::as_str).collect(),
            })
            .collect()
    }

    /// Number of `<tool_call>` blocks the assistant writes.
    pub fn num_tool_calls(&self) -> usize {
        self.messages
            .iter()
            .filter(|m| m.role == Role::Assistant)
            .map(|m| m.text().matches("<tool_call>").count())
            .sum()
    }

    /// Checks the structure: user first, roles alternate user/assistant, the last message is the assistant's,
    /// only assistant text is trained, and every media path stays under `root`.
    ///
    /// # Errors
    /// A message naming the first problem.
    pub fn validate(&self, root: &DatasetRoot) -> Result<(), String> {
        if self.messages.is_empty() {
            return Err("trace has no messages".into());
        }
        for (i, message) in self.messages.iter().enumerate() {
            let expected = if i % 2 == 0 {
                Role::User
            } else {
                Role::Assistant
            };
            if message.role != expected {
                return Err(format!(
                    "message {i} is {:?}, expected {expected:?}",
                    message.role
                ));
            }
            if message.role != Role::Assistant
                && message
                    .content
                    .iter()
                    .any(|p| matches!(p, TracePart::Text { train: true, .. }))
            {
                return Err(format!(
                    "message {i} ({:?}) has a trained span",
                    message.role
                ));
            }
        }
        if self.messages.last().map(|m| m.role) != Some(Role::Assistant) {
            return Err("the last message is not the assistant's".into());
        }
        for path in self.media_paths() {
            root.resolve(path).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Converts an official SFT record: system messages are dropped (the tool set supplies its own), every
    /// assistant message is trained, everything else is not.
    ///
    /// The released trainer trains only the last two assistant turns (`create_assistant_response_mask`
    /// looks at the 2nd and 4th `<|im_start|>` from the end); pass `last_two_only` for that behaviour.
    ///
    /// # Errors
    /// A message if a role other than user/assistant remains, or the result fails [`Trace::validate`]'s
    /// structure rules.
    pub fn from_official(
        record: &SftRecord,
        id: impl Into<String>,
        last_two_only: bool,
    ) -> Result<Self, String> {
        let kept: Vec<_> = record
            .message_list
            .iter()
            .filter(|m| m.role != Role::System)
            .collect();
        let assistant_count = kept.iter().filter(|m| m.role == Role::Assistant).count();
        let mut seen_assistant = 0;
        let mut messages = Vec::with_capacity(kept.len());
        for message in kept {
            let role = match message.role {
                Role::User | Role::Tool | Role::Function => Role::User,
                Role::Assistant => Role::Assistant,
                Role::System => unreachable!("filtered above"),
            };
            let train = if role == Role::Assistant {
                seen_assistant += 1;
                !last_two_only || seen_assistant + 2 > assistant_count
            } else {
                false
            };
            let content = match &message.content {
                MessageContent::Text(text) => vec![TracePart::Text {
                    text: text.clone(),
                    train,
                }],
                MessageContent::Items(items) => items
                    .iter()
                    .map(|item| match item {
                        ContentItem::Text { text } => TracePart::Text {
                            text: text.clone(),
                            train,
                        },
                        ContentItem::Image { image, .. } => TracePart::Image {
                            image: image.clone(),
                        },
                        ContentItem::Video { video, .. } => TracePart::Video {
                            video: video.paths().into_iter().map(String::from).collect(),
                        },
                    })
                    .collect(),
            };
            // Consecutive user-side messages (a tool message after a user one) merge into one user turn.
            match messages.last_mut() {
                Some(TraceMessage {
                    role: last_role,
                    content: last,
                }) if *last_role == role && role == Role::User => {
                    last.extend(content);
                }
                _ => messages.push(TraceMessage { role, content }),
            }
        }
        let answer = record
            .extra
            .get("answer")
            .and_then(|v| v.as_str())
            .map(String::from);
        let trace = Trace {
            id: id.into(),
            tools: PIXEL_REASONER_TOOLS.to_string(),
            variant: "official".to_string(),
            answer,
            messages,
        };
        trace.validate(&DatasetRoot::new("."))?;
        Ok(trace)
    }
}

impl Trace {
    /// The trace as an official SFT record (`message_list`), optionally led by a system message (for the
    /// official trainer: `pixel_ops::ToolSet::PixelReasoner.system_prompt()`).
    ///
    /// The official format has no per-span mask: every assistant message is trained there, including
    /// the deliberately wrong calls of self-correction traces. Keep the trace format for training here.
    pub fn to_official(&self, system: Option<&str>) -> SftRecord {
        let mut message_list = Vec::with_capacity(self.messages.len() + 1);
        if let Some(system) = system {
            message_list.push(OfficialMessage {
                role: Role::System,
                content: MessageContent::Text(system.to_string()),
            });
        }
        for message in &self.messages {
            let items = message
                .content
                .iter()
                .map(|part| match part {
                    TracePart::Text { text, .. } => ContentItem::Text { text: text.clone() },
                    TracePart::Image { image } => ContentItem::Image {
                        image: image.clone(),
                        extra: serde_json::Map::new(),
                    },
                    TracePart::Video { video } => ContentItem::Video {
                        video: VideoSource::Frames(video.clone()),
                        extra: serde_json::Map::new(),
                    },
                })
                .collect();
            message_list.push(OfficialMessage {
                role: message.role,
                content: MessageContent::Items(items),
            });
        }
        let mut extra = serde_json::Map::new();
        extra.insert("qid".into(), self.id.clone().into());
        if let Some(answer) = &self.answer {
            extra.insert("answer".into(), answer.clone().into());
        }
        SftRecord {
            message_list,
            extra,
        }
    }
}

impl FromRecord for Trace {
    fn from_record(value: serde_json::Value, root: &DatasetRoot) -> Result<Self, String> {
        let trace: Trace =
            serde_json::from_value(value).map_err(|e| format!("not a trace: {e}"))?;
        trace.validate(root)?;
        Ok(trace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{OnError, parse_records};
    use std::path::Path;

    fn sft() -> SftRecord {
        serde_json::from_str(
            r#"{"message_list": [
              {"role": "system", "content": "sys"},
              {"role": "user", "content": [{"type": "image", "image": "a.png"}, {"type": "text", "text": "Q"}]},
              {"role": "assistant", "content": "first <tool_call>c</tool_call>"},
              {"role": "user", "content": [{"type": "text", "text": "obs"}, {"type": "image", "image": "b.png"}]},
              {"role": "assistant", "content": "second <tool_call>c</tool_call>"},
              {"role": "tool", "content": [{"type": "text", "text": "obs2"}]},
              {"role": "assistant", "content": "\\boxed{A}"}], "answer": "A"}"#,
        )
        .unwrap()
    }

    #[test]
    fn official_records_convert_with_assistant_text_trained() {
        let trace = Trace::from_official(&sft(), "x", false).unwrap();
        assert_eq!(trace.messages.len(), 6);
        assert_eq!(
            trace.trained_text(),
            "first <tool_call>c</tool_call>second <tool_call>c</tool_call>\\boxed{A}"
        );
        assert_eq!(trace.untrained_text(), "Qobsobs2");
        assert_eq!(trace.media_paths(), vec!["a.png", "b.png"]);
        assert_eq!(trace.num_tool_calls(), 2);
        assert_eq!(trace.answer.as_deref(), Some("A"));
        let released = Trace::from_official(&sft(), "x", true).unwrap();
        assert_eq!(
            released.trained_text(),
            "second <tool_call>c</tool_call>\\boxed{A}"
        );
    }

    #[test]
    fn official_export_round_trips_text_and_media() {
        let trace = Trace::from_official(&sft(), "x", false).unwrap();
        let record = trace.to_official(Some("sys"));
        assert_eq!(record.message_list[0].role, Role::System);
        assert_eq!(record.extra["answer"], "A");
        let back = Trace::from_official(&record, "x", false).unwrap();
        assert_eq!(back.messages, trace.messages);
    }

    #[test]
    fn traces_round_trip_and_invalid_ones_are_refused() {
        let trace = Trace::from_official(&sft(), "x", false).unwrap();
        let line = serde_json::to_string(&trace).unwrap();
        let mut bad = trace.clone();
        bad.messages[0].content.push(TracePart::trained("leak"));
        let bad_line = serde_json::to_string(&bad).unwrap();
        let text = format!("{line}\n{bad_line}\n");
        let loaded = parse_records::<Trace>(
            &text,
            Path::new("t.jsonl"),
            &DatasetRoot::new("/r"),
            OnError::Skip,
        )
        .unwrap();
        assert_eq!(loaded.records.len(), 1);
        assert_eq!(loaded.records[0].1, trace);
        assert!(
            loaded.skipped[0]
                .to_string()
                .contains("line 2: message 0 (User) has a trained span")
        );
    }
}
