//! The official Pixel Reasoner record formats: SFT `message_list` records and RL / eval records.
//!
//! SFT records (instruction tuning, `instruction_tuning/sft_tooltrainer.py` reads `x["message_list"]`) hold
//! Qwen-agent style messages whose content is a string or a list of `{"type": "text"|"image"|"video", ...}`
//! items. RL / eval records (`curiosity_driven_rl/openrlhf/datasets/prompts_dataset.py`) hold `qid`,
//! `question`, `image` (a path, a list of paths, or empty), `is_video`, and `answer` or `gt_answer`.

use serde::{Deserialize, Serialize};

use crate::load::FromRecord;
use crate::paths::DatasetRoot;

/// Who speaks a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The system prompt.
    System,
    /// The user (questions and tool observations).
    User,
    /// The model.
    Assistant,
    /// A tool result in formats that give tools their own role.
    Tool,
    /// Qwen-agent's older name for a tool result.
    Function,
}

/// A video given as one file or as a list of frame images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VideoSource {
    /// A video file.
    File(String),
    /// Frame images in order.
    Frames(Vec<String>),
}

impl VideoSource {
    /// The paths it names.
    pub fn paths(&self) -> Vec<&str> {
        match self {
            VideoSource::File(p) => vec![p.as_str()],
            VideoSource::Frames(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// One item of a message's content list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ContentItem {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// An image by path (relative to the dataset root).
    Image {
        /// The image path.
        image: String,
        /// Other keys (`min_pixels`, `max_pixels`, ...), kept as given.
        #[serde(flatten)]
        extra: serde_json::Map<String, serde_json::Value>,
    },
    /// A video by path or frame list.
    Video {
        /// The video.
        video: VideoSource,
        /// Other keys (`fps`, `nframes`, ...), kept as given.
        #[serde(flatten)]
        extra: serde_json::Map<String, serde_json::Value>,
    },
}

/// A message's content: a plain string or a list of items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Text, image and video items in order.
    Items(Vec<ContentItem>),
}

/// One official message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OfficialMessage {
    /// The speaker.
    pub role: Role,
    /// The content.
    pub content: MessageContent,
}

impl OfficialMessage {
    /// Every media path in the message, in order.
    pub fn media_paths(&self) -> Vec<&str> {
        match &self.content {
            MessageContent::Text(_) => Vec::new(),
            MessageContent::Items(items) => items
                .iter()
                .flat_map(|item| match item {
                    ContentItem::Text { .. } => Vec::new(),
                    ContentItem::Image { image, .. } => vec![image.as_str()],
                    ContentItem::Video { video, .. } => video.paths(),
                })
                .collect(),
        }
    }
}

/// An official SFT record: a `message_list` plus any other keys of the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SftRecord {
    /// The conversation.
    pub message_list: Vec<OfficialMessage>,
    /// Other keys (`qid`, `answer`, `question_image_path`, ...), kept as given.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl FromRecord for SftRecord {
    fn from_record(value: serde_json::Value, root: &DatasetRoot) -> Result<Self, String> {
        let record: SftRecord =
            serde_json::from_value(value).map_err(|e| format!("not an SFT record: {e}"))?;
        if record.message_list.is_empty() {
            return Err("message_list is empty".into());
        }
        if !record
            .message_list
            .iter()
            .any(|m| m.role == Role::Assistant)
        {
            return Err("message_list has no assistant message".into());
        }
        for message in &record.message_list {
            for path in message.media_paths() {
                root.resolve(path).map_err(|e| e.to_string())?;
            }
        }
        Ok(record)
    }
}

/// An official RL or evaluation record, normalized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RlRecord {
    /// Query id (`qid`; numbers are turned into strings).
    pub qid: String,
    /// The question text.
    pub question: String,
    /// Image paths, or the video's frame paths / file when `is_video` (relative to the dataset root).
    pub media: Vec<String>,
    /// Whether `media` is one video.
    pub is_video: bool,
    /// The reference answer (`answer`, else `gt_answer`; numbers and lists are turned into strings).
    pub answer: String,
    /// Multiple-choice options, if the record has an `options` list or letter-keyed object.
    pub options: Vec<String>,
    /// Other keys, kept as given.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn value_to_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        serde_json::Value::Array(items) => {
            let parts: Option<Vec<String>> = items.iter().map(value_to_text).collect();
            parts.map(|p| p.join(", "))
        }
        _ => None,
    }
}

impl FromRecord for RlRecord {
    fn from_record(value: serde_json::Value, root: &DatasetRoot) -> Result<Self, String> {
        let serde_json::Value::Object(mut map) = value else {
            return Err("record is not a JSON object".into());
        };
        let mut take = |key: &str| map.remove(key);
        let qid = match take("qid") {
            Some(v) => value_to_text(&v).ok_or("`qid` is not a string or number")?,
            None => return Err("missing `qid`".into()),
        };
        let question = match take("question") {
            Some(serde_json::Value::String(q)) if !q.trim().is_empty() => q,
            Some(serde_json::Value::String(_)) => return Err("`question` is empty".into()),
            Some(_) => return Err("`question` is not a string".into()),
            None => return Err("missing `question`".into()),
        };
        let media: Vec<String> = match take("image") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::String(s)) if s.is_empty() => Vec::new(),
            Some(serde_json::Value::String(s)) => vec![s],
            Some(serde_json::Value::Array(items)) => items
                .into_iter()
                .map(|v| match v {
                    serde_json::Value::String(s) => Ok(s),
                    other => Err(format!("`image` list holds a non-string: {other}")),
                })
                .filter(|p| !matches!(p, Ok(s) if s.is_empty()))
                .collect::<Result<_, _>>()?,
            Some(other) => return Err(format!("`image` is neither a path nor a list: {other}")),
        };
        let is_video = match take("is_video") {
            None | Some(serde_json::Value::Null) => false,
            Some(serde_json::Value::Bool(b)) => b,
            Some(other) => return Err(format!("`is_video` is not a boolean: {other}")),
        };
        if is_video && media.is_empty() {
            return Err("`is_video` is true but `image` names no video".into());
        }
        let answer_value = match (take("answer"), take("gt_answer")) {
            (Some(a), _) if !a.is_null() => a,
            (_, Some(g)) if !g.is_null() => g,
            _ => return Err("missing `answer` / `gt_answer`".into()),
        };
        let answer = value_to_text(&answer_value)
            .ok_or("`answer` is not text, a number or a list of them")?;
        let options = match take("options") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(value_to_text)
                .collect::<Option<Vec<_>>>()
                .ok_or("`options` holds a non-text item")?,
            Some(serde_json::Value::Object(obj)) => {
                // serde_json keeps keys sorted, so letter keys come out in A, B, C order.
                obj.values()
                    .map(value_to_text)
                    .collect::<Option<Vec<_>>>()
                    .ok_or("`options` holds a non-text item")?
            }
            Some(other) => {
                return Err(format!(
                    "`options` is neither a list nor an object: {other}"
                ));
            }
        };
        for path in &media {
            root.resolve(path).map_err(|e| e.to_string())?;
        }
        Ok(RlRecord {
            qid,
            question,
            media,
            is_video,
            answer,
            options,
            extra: map,
        })
    }
}

impl RlRecord {
    /// The first user message as the official RL data loader (`PromptDataset.preprocess_data` with the
    /// `vcot` prompt) builds it: the images (or the video as one item) first, then
    /// `question + "\n\n" + GUIDELINES`.
    ///
    /// The loader's one quirk is not reproduced: with `is_video` and `image` given as a single string it
    /// emits an `image` item; here a video is always a `video` item holding the list of its paths.
    pub fn prompt_message(&self) -> OfficialMessage {
        let mut items: Vec<ContentItem> = if self.is_video {
            let video = VideoSource::Frames(self.media.clone());
            vec![ContentItem::Video {
                video,
                extra: serde_json::Map::new(),
            }]
        } else {
            self.media
                .iter()
                .map(|p| ContentItem::Image {
                    image: p.clone(),
                    extra: serde_json::Map::new(),
                })
                .collect()
        };
        items.push(ContentItem::Text {
            text: crate::protocol_text::user_text(&self.question),
        });
        OfficialMessage {
            role: Role::User,
            content: MessageContent::Items(items),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use crate::error::Location;
    use crate::load::{OnError, parse_records};
    use std::path::Path;

    const SFT: &str = r#"[
 {"message_list": [
   {"role": "system", "content": "You are a helpful assistant."},
   {"role": "user", "content": [{"type": "image", "image": "imgs/a.jpg", "max_pixels": 1000}, {"type": "text", "text": "Q"}]},
   {"role": "assistant", "content": [{"type": "text", "text": "look <tool_call>x</tool_call>"}]},
   {"role": "user", "content": [{"type": "text", "text": "\nHere is the cropped image (Image Size: 40x40):"}, {"type": "image", "image": "imgs/a_crop.jpg"}]},
   {"role": "assistant", "content": "\\boxed{B}"}
 ], "qid": 7},
 {"message_list": [{"role": "user", "content": [{"type": "video", "video": ["v/1.jpg", "../../etc/x.jpg"]}]},
                   {"role": "assistant", "content": "a"}]},
 {"message_list": []},
 {"nothing": 1}
]"#;

    #[test]
    fn sft_records_parse_and_bad_ones_are_located() {
        let root = DatasetRoot::new("/d");
        let loaded =
            parse_records::<SftRecord>(SFT, Path::new("sft.json"), &root, OnError::Skip).unwrap();
        assert_eq!(loaded.records.len(), 1);
        assert_eq!(loaded.skipped_count(), 3);
        let (loc, rec) = &loaded.records[0];
        assert_eq!(*loc, Location::Index(0));
        assert_eq!(rec.message_list.len(), 5);
        assert_eq!(rec.message_list[1].media_paths(), vec!["imgs/a.jpg"]);
        assert_eq!(rec.extra["qid"], 7);
        // Extra keys of an item survive a round trip.
        let again: SftRecord = serde_json::from_str(&serde_json::to_string(rec).unwrap()).unwrap();
        assert_eq!(&again, rec);
        match &loaded.skipped[0] {
            Error::Record {
                location, message, ..
            } => {
                assert_eq!(*location, Location::Index(1));
                assert!(message.contains("'..'"), "{message}");
            }
            other => panic!("unexpected {other}"),
        }
        let err = parse_records::<SftRecord>(SFT, Path::new("sft.json"), &root, OnError::Fail)
            .unwrap_err();
        assert!(err.to_string().starts_with("sft.json, element 1:"), "{err}");
    }

    #[test]
    fn rl_records_normalize_fields() {
        let text = concat!(
            r#"{"qid": "q1", "question": "How many?", "image": ["a.jpg", ""], "answer": 3}"#,
            "\n\n",
            r#"{"qid": 2, "question": "Which?", "image": "v/f.mp4", "is_video": true, "gt_answer": "B", "options": {"A": "cat", "B": "dog"}}"#,
            "\n",
            r#"{"qid": 3, "question": "", "answer": "x"}"#,
            "\n",
            r#"{"qid": 4, "question": "t", "image": "/abs.jpg", "answer": "x"}"#,
            "\n",
            "not json\n",
            r#"{"qid": 5, "question": "text only", "image": null, "answer": ["a", "b"], "source": "s"}"#,
        );
        let root = DatasetRoot::new("/d");
        let loaded =
            parse_records::<RlRecord>(text, Path::new("rl.jsonl"), &root, OnError::Skip).unwrap();
        let lines: Vec<_> = loaded
            .skipped
            .iter()
            .map(|e| match e {
                Error::Record {
                    location: Location::Line(n),
                    ..
                } => *n,
                other => panic!("unexpected {other}"),
            })
            .collect();
        assert_eq!(lines, vec![4, 5, 6]);
        let recs = loaded.into_records();
        assert_eq!(recs.len(), 3);
        assert_eq!((recs[0].media.len(), recs[0].answer.as_str()), (1, "3"));
        assert!(recs[1].is_video);
        assert_eq!(recs[1].options, vec!["cat", "dog"]);
        assert_eq!((recs[1].qid.as_str(), recs[1].answer.as_str()), ("2", "B"));
        assert!(recs[2].media.is_empty());
        assert_eq!(recs[2].answer, "a, b");
        assert_eq!(recs[2].extra["source"], "s");
    }
}
