//! TallyQA (`test.json` of `tallyqa.zip`): a JSON array of counting questions about Visual Genome and COCO
//! images.
//!
//! ```json
//! {"image": "VG_100K_2/2410408.jpg", "question": "How many headlights does the black bus have?", "answer": 4, "issimple": false, "data_source": "imported_genome", "image_id": 92410408, "question_id": 30095774}
//! ```
//!
//! `issimple: false` marks the complex questions: TallyQA-Complex, the paper's benchmark, is that subset.
//! Images are relative to the folder of `test.json` (put `VG_100K/`, `VG_100K_2/` and `val2014/` there) or
//! to the folder given to [`load_with_images`]. The category of a question is its `data_source`.

use std::path::Path;

use pixel_traces::DatasetRoot;

use super::{Collector, LoadOptions, file_in, object, parent_dir, read_json, take_text};
use crate::error::{EvalError, Result};
use crate::item::{Benchmark, EvalItem, ImageRef, Media, Metric, json_text};

/// Which questions to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Subset {
    /// `issimple: false` (TallyQA-Complex, the default).
    #[default]
    Complex,
    /// `issimple: true`.
    Simple,
    /// Every question.
    All,
}

impl Subset {
    /// The benchmark's name for the subset.
    pub fn name(self) -> &'static str {
        match self {
            Subset::Complex => "tallyqa_complex",
            Subset::Simple => "tallyqa_simple",
            Subset::All => "tallyqa",
        }
    }
}

/// Loads `test.json` (or the folder holding it), images relative to its folder.
///
/// # Errors
/// [`EvalError::Missing`] without the file, [`EvalError::Format`] if it is not a JSON array,
/// [`EvalError::Record`] naming the element of a malformed question or a missing image.
pub fn load(path: &Path, subset: Subset, options: &LoadOptions) -> Result<Benchmark> {
    let file = file_in(path, "test.json", "TallyQA's test questions")?;
    let images = parent_dir(&file);
    load_with_images(&file, &images, subset, options)
}

/// As [`load`], images relative to `images`.
///
/// # Errors
/// As [`load`].
pub fn load_with_images(
    file: &Path,
    images: &Path,
    subset: Subset,
    options: &LoadOptions,
) -> Result<Benchmark> {
    let root = DatasetRoot::new(images);
    let serde_json::Value::Array(values) = read_json(file)? else {
        return Err(EvalError::Format {
            path: file.to_path_buf(),
            message: "not a JSON array of questions".into(),
        });
    };
    let mut collector = Collector::new(file, &root, options);
    for (i, value) in values.into_iter().enumerate() {
        let location = pixel_traces::Location::Index(i);
        match keep(&value, subset) {
            Ok(false) => continue,
            Ok(true) => collector.push(location, item(value))?,
            Err(message) => collector.fail(location, message)?,
        }
    }
    collector.finish(subset.name(), Metric::Integer)
}

fn keep(value: &serde_json::Value, subset: Subset) -> std::result::Result<bool, String> {
    if subset == Subset::All {
        return Ok(true);
    }
    let simple = match value.get("issimple") {
        Some(serde_json::Value::Bool(b)) => *b,
        Some(other) => return Err(format!("`issimple` is not a boolean: {other}")),
        None => return Err("missing `issimple`".into()),
    };
    Ok(simple == (subset == Subset::Simple))
}

fn item(value: serde_json::Value) -> std::result::Result<EvalItem, String> {
    let mut map = object(value)?;
    let image = take_text(&mut map, "image")?;
    let question = take_text(&mut map, "question")?;
    let answer = take_text(&mut map, "answer")?;
    let qid = take_text(&mut map, "question_id")?;
    let category = map.get("data_source").and_then(json_text);
    Ok(EvalItem {
        qid,
        question,
        media: Media::Images(vec![ImageRef::File(image)]),
        answers: vec![answer],
        options: Vec::new(),
        category,
        is_video: false,
        extra: map,
    })
}
