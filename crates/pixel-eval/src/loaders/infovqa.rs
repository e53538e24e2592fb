//! InfographicsVQA (`infographicsVQA_val_v1.0_withQT.json` of the Robust Reading Competition): an object whose
//! `data` list holds the questions; images (`image_local_name`) live in one folder.
//!
//! ```json
//! {"dataset_name": "infographicVQA", "dataset_split": "val", "data": [
//!   {"questionId": 65718, "question": "Which social platform has heavy female audience?", "image_local_name": "37313.jpeg",
//!    "answers": ["pinterest"], "answer_type": ["single span"], "evidence": ["text"], "operation/reasoning": [], "ocr_output_file": "37313.json"}]}
//! ```
//!
//! Every answer in `answers` is accepted (ANLS takes the best). The test split has no answers and cannot be
//! scored here; use the validation split (2,801 questions). The category of a question is its first
//! `answer_type`. Images are looked up in the folder given to [`load`], else in an `images/`,
//! `infographicsVQA_val_v1.0_images/` or `infographicVQA_val_v1.0_images/` folder beside the JSON, else
//! beside the JSON itself.

use std::path::{Path, PathBuf};

use pixel_traces::DatasetRoot;

use super::{Collector, LoadOptions, object, parent_dir, read_dir, read_json, take_text};
use crate::error::{EvalError, Result};
use crate::item::{Benchmark, EvalItem, ImageRef, Media, Metric, json_text};

/// Image folder names looked for beside the annotation file.
const IMAGE_DIRS: [&str; 3] = [
    "images",
    "infographicsVQA_val_v1.0_images",
    "infographicVQA_val_v1.0_images",
];

/// Loads the annotation JSON `path` (or the only `*.json` of the folder `path`), images in `images` or
/// found as the module docs say.
///
/// # Errors
/// [`EvalError::Missing`] without an annotation file, [`EvalError::Format`] without a `data` list,
/// [`EvalError::Record`] naming the element of a malformed question, one without answers or a missing
/// image.
pub fn load(path: &Path, images: Option<&Path>, options: &LoadOptions) -> Result<Benchmark> {
    let file = annotation_file(path)?;
    let dir = parent_dir(&file);
    let images: PathBuf = match images {
        Some(p) => p.to_path_buf(),
        None => IMAGE_DIRS
            .iter()
            .map(|d| dir.join(d))
            .find(|d| d.is_dir())
            .unwrap_or_else(|| dir.clone()),
    };
    let root = DatasetRoot::new(images);
    let mut document = read_json(&file)?;
    let Some(serde_json::Value::Array(data)) = document.get_mut("data").map(std::mem::take) else {
        return Err(EvalError::Format {
            path: file,
            message: "no `data` list of questions".into(),
        });
    };
    let mut collector = Collector::new(&file, &root, options);
    for (i, value) in data.into_iter().enumerate() {
        collector.push(pixel_traces::Location::Index(i), item(value))?;
    }
    collector.finish("infovqa", Metric::Anls)
}

fn annotation_file(path: &Path) -> Result<PathBuf> {
    if !path.is_dir() {
        if !path.is_file() {
            return Err(EvalError::Missing {
                path: path.to_path_buf(),
                what: "InfographicsVQA's annotation JSON".into(),
            });
        }
        return Ok(path.to_path_buf());
    }
    let jsons: Vec<PathBuf> = read_dir(path)?
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json") && p.is_file())
        .collect();
    match jsons.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(EvalError::Missing {
            path: path.join("*.json"),
            what: "InfographicsVQA's annotation JSON".into(),
        }),
        _ => Err(EvalError::Invalid(format!(
            "{} holds several JSON files; name the annotation file",
            path.display()
        ))),
    }
}

fn item(value: serde_json::Value) -> std::result::Result<EvalItem, String> {
    let mut map = object(value)?;
    let qid = take_text(&mut map, "questionId")?;
    let question = take_text(&mut map, "question")?;
    let image = take_text(&mut map, "image_local_name")?;
    let answers: Vec<String> = match map.remove("answers") {
        Some(serde_json::Value::Array(list)) => list.iter().filter_map(json_text).collect(),
        Some(other) => return Err(format!("`answers` is not a list: {other}")),
        None => Vec::new(),
    };
    if answers.is_empty() {
        return Err("no `answers` (the test split has none; use the validation split)".into());
    }
    let category = map
        .get("answer_type")
        .and_then(|t| t.as_array())
        .and_then(|t| t.first())
        .and_then(json_text);
    Ok(EvalItem {
        qid,
        question,
        media: Media::Images(vec![ImageRef::File(image)]),
        answers,
        options: Vec::new(),
        category,
        is_video: false,
        extra: map,
    })
}
