//! What a loader produces: a [`Benchmark`] of [`EvalItem`]s whose media are still on disk.

use std::collections::HashMap;
use std::path::PathBuf;

use pixel_traces::DatasetRoot;
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};

/// How the standard scorer compares an answer with the references (the metric the benchmark's own papers
/// report). The official scorer ignores it (see [`mod@crate::score`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Multiple choice: the choice letter (or the option text) must name the reference letter.
    Choice,
    /// A count: the answer must read as the reference integer.
    Integer,
    /// ANLS (InfographicsVQA, DocVQA): a graded score in `[0, 1]`, best over the references.
    Anls,
    /// `pixel-reward`'s automatic choice per reference (letters, numbers, multi-span, exact text).
    #[default]
    Auto,
}

/// An image as a record names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageRef {
    /// An image file, relative to the benchmark's root.
    File(String),
    /// A base64-encoded image stored inside a data file (HR-Bench's TSV): `len` bytes of base64 text at byte
    /// `offset` of `file`, read when the item runs (so an 8K benchmark is not held in memory).
    Embedded {
        /// The data file.
        file: PathBuf,
        /// Byte offset of the base64 text.
        offset: u64,
        /// Length of the base64 text in bytes.
        len: u64,
    },
}

/// The visual input of an item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Media {
    /// No image (a text-only record).
    None,
    /// One or more images, in order (`target_image` 1 is the first).
    Images(Vec<ImageRef>),
    /// One video as frame image files in order, relative to the root (the official MVBench data: 16 frames).
    Frames(Vec<String>),
    /// One video file, relative to the root (needs the `ffmpeg` feature), optionally only the clip between
    /// `start` and `end` seconds (recorded; see `docs/benchmarks.md` for how clips are sampled).
    VideoFile {
        /// The file.
        path: String,
        /// `(start, end)` in seconds, if the benchmark bounds the question to a clip.
        clip: Option<(f64, f64)>,
    },
}

impl Media {
    /// Whether the media is a video.
    pub fn is_video(&self) -> bool {
        matches!(self, Media::Frames(_) | Media::VideoFile { .. })
    }

    /// The media paths relative to the root (embedded images name none).
    pub fn paths(&self) -> Vec<&str> {
        match self {
            Media::None => Vec::new(),
            Media::Images(images) => images
                .iter()
                .filter_map(|i| match i {
                    ImageRef::File(p) => Some(p.as_str()),
                    ImageRef::Embedded { .. } => None,
                })
                .collect(),
            Media::Frames(frames) => frames.iter().map(String::as_str).collect(),
            Media::VideoFile { path, .. } => vec![path.as_str()],
        }
    }
}

/// One question of a benchmark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalItem {
    /// Its id, unique within the benchmark (the key a resumed run skips by).
    pub qid: String,
    /// The question as the model receives it (options written into it as the benchmark's format does);
    /// the tool protocol's guidelines are appended when the query is built.
    pub question: String,
    /// The image(s) or video.
    pub media: Media,
    /// Reference answers: the letter for multiple choice, the count for TallyQA, every accepted answer for
    /// InfographicsVQA.
    pub answers: Vec<String>,
    /// Multiple-choice option texts, `A` first; empty for open questions.
    pub options: Vec<String>,
    /// The benchmark's category of the question (V*: `direct_attributes` / `relative_position`, MVBench: the
    /// task, HR-Bench: `single` / `cross`, ...), used for per-category breakdowns.
    pub category: Option<String>,
    /// Whether the media is a video.
    pub is_video: bool,
    /// Other fields of the record, kept as given.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// A loaded benchmark: its items, the folder their media paths are relative to, and the standard metric.
#[derive(Debug, Clone)]
pub struct Benchmark {
    /// Its name (`vstar`, `tallyqa_complex`, `infovqa`, `mvbench`, `hrbench4k`, ... or an official file's stem).
    pub name: String,
    /// The folder media paths are relative to.
    pub root: DatasetRoot,
    /// The file (or folder) it was read from.
    pub source: PathBuf,
    /// The standard scorer's metric for its items.
    pub metric: Metric,
    /// The items in file order.
    pub items: Vec<EvalItem>,
    /// Records that were skipped (each error names its file and location); empty unless loading skipped.
    pub skipped: Vec<String>,
}

impl Benchmark {
    /// A benchmark of `items`, checking that every `qid` is unique and non-empty.
    ///
    /// # Errors
    /// [`EvalError::Format`] naming the first duplicate or empty qid and the indices that hold it.
    pub fn new(
        name: impl Into<String>,
        root: DatasetRoot,
        source: impl Into<PathBuf>,
        metric: Metric,
        items: Vec<EvalItem>,
    ) -> Result<Self> {
        let source = source.into();
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if item.qid.is_empty() {
                return Err(EvalError::Format {
                    path: source.clone(),
                    message: format!("item {i} has an empty qid"),
                });
            }
            if let Some(first) = seen.insert(item.qid.as_str(), i) {
                return Err(EvalError::Format {
                    path: source.clone(),
                    message: format!(
                        "qid {:?} is used by items {first} and {i}; qids must be unique",
                        item.qid
                    ),
                });
            }
        }
        Ok(Self {
            name: name.into(),
            root,
            source,
            metric,
            items,
            skipped: Vec::new(),
        })
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Splits a question whose options are written on their own lines (`(A) red`, `A. red`, `A: red`) into the
/// option texts, `A` first. Returns an empty list unless the lines name `A`, `B`, ... in order.
///
/// ```
/// let q = "What is the color of the cup?\n(A) red\n(B) blue\n(C) green";
/// assert_eq!(pixel_eval::item::options_in_text(q), ["red", "blue", "green"]);
/// assert!(pixel_eval::item::options_in_text("How many cups?").is_empty());
/// ```
pub fn options_in_text(question: &str) -> Vec<String> {
    let mut options = Vec::new();
    for line in question.lines() {
        let line = line.trim();
        let expected = char::from(b'A' + options.len().min(25) as u8);
        let rest = line
            .strip_prefix(&format!("({expected})"))
            .or_else(|| line.strip_prefix(&format!("{expected}.")))
            .or_else(|| line.strip_prefix(&format!("{expected}:")));
        if let Some(rest) = rest {
            options.push(rest.trim().to_string());
        }
    }
    if options.len() < 2 {
        options.clear();
    }
    options
}

/// Writes `question` with `options` as lines `(A) ...`, `(B) ...` (V* Bench's own format, used for the
/// benchmarks that keep options apart from the question).
pub fn question_with_options(question: &str, options: &[String]) -> String {
    let mut text = question.trim_end().to_string();
    for (i, option) in options.iter().enumerate() {
        let letter = char::from(b'A' + (i % 26) as u8);
        text.push_str(&format!("\n({letter}) {option}"));
    }
    text
}

/// The letter of option `index` (0 is `A`).
pub(crate) fn letter(index: usize) -> String {
    char::from(b'A' + (index % 26) as u8).to_string()
}

/// A JSON value as text: strings as they are, numbers and booleans written out; `None` for anything else.
pub(crate) fn json_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
