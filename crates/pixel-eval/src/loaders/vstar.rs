//! V* Bench (`craigwu/vstar_bench`): a folder with `test_questions.jsonl` and the image folders
//! `direct_attributes/` and `relative_position/`. One line per question:
//!
//! ```json
//! {"image": "direct_attributes/sa_4690.jpg", "text": "What is the material of the glove?\n(A) rubber\n(B) cotton\n(C) kevlar\n(D) leather\nAnswer with the option's letter from the given choices directly.", "category": "direct_attributes", "question_id": 0, "label": "A"}
//! ```
//!
//! 191 questions: 115 `direct_attributes`, 76 `relative_position`. The question keeps its option lines;
//! the closing instruction "Answer with the option's letter ..." is dropped, because the tool protocol's
//! guidelines (reason step by step, answer in `\boxed{}`) follow every question.

use std::path::Path;

use pixel_traces::DatasetRoot;

use super::{Collector, LoadOptions, file_in, jsonl_values, object, parent_dir, take_text};
use crate::error::Result;
use crate::item::{Benchmark, EvalItem, ImageRef, Media, Metric, json_text, options_in_text};

/// The question file's name.
pub const FILE: &str = "test_questions.jsonl";

/// The instruction V* writes after its options; dropped (see the module docs).
pub const ANSWER_INSTRUCTION: &str =
    "Answer with the option's letter from the given choices directly.";

/// Loads V* Bench from its folder (or its `test_questions.jsonl`); images are relative to that folder.
///
/// # Errors
/// [`crate::EvalError::Missing`] without `test_questions.jsonl`; [`crate::EvalError::Record`] naming the line
/// of a malformed question or a missing image.
pub fn load(path: &Path, options: &LoadOptions) -> Result<Benchmark> {
    let file = file_in(path, FILE, "V* Bench's question file")?;
    let root = DatasetRoot::new(parent_dir(&file));
    let mut collector = Collector::new(&file, &root, options);
    for (index, (location, value)) in jsonl_values(&file)?.into_iter().enumerate() {
        let item = value.and_then(|v| item(v, index));
        collector.push(location, item)?;
    }
    collector.finish("vstar", Metric::Choice)
}

fn item(value: serde_json::Value, index: usize) -> std::result::Result<EvalItem, String> {
    let mut map = object(value)?;
    let image = take_text(&mut map, "image")?;
    let text = take_text(&mut map, "text")?;
    let label = take_text(&mut map, "label")?;
    let qid = match map.remove("question_id") {
        Some(v) => {
            json_text(&v).ok_or_else(|| format!("`question_id` is not text or a number: {v}"))?
        }
        None => index.to_string(),
    };
    let category = map.remove("category").as_ref().and_then(json_text);
    let question = text
        .trim_end()
        .strip_suffix(ANSWER_INSTRUCTION)
        .unwrap_or(&text)
        .trim_end()
        .to_string();
    if question.is_empty() {
        return Err("`text` is empty".into());
    }
    let options = options_in_text(&question);
    Ok(EvalItem {
        qid,
        question,
        media: Media::Images(vec![ImageRef::File(image)]),
        answers: vec![label.trim().to_string()],
        options,
        category,
        is_video: false,
        extra: map,
    })
}
