//! The official evaluation files: one file per benchmark (`vstar.parquet`, `mvbench.parquet`, ...) with one
//! record per question: `qid`, `question`, `image` (a list of paths relative to the dataset folder, the
//! frames of the video when `is_video`), `answer` (a string or a list of accepted answers), `is_video`.
//!
//! Parquet files need the `parquet` feature (on by default); the same records as a JSON array or JSONL are
//! read without it. Records are parsed by `pixel_traces::RlRecord` (the RL data loader's rules), so the
//! training and evaluation data are read by one piece of code. The benchmark is named after the file
//! (`vstar.parquet` is `vstar`) and its standard metric is chosen from the name (see [`metric_for`]).

use std::path::Path;

use pixel_traces::load::FromRecord;
use pixel_traces::{DatasetRoot, Location, RlRecord};

use super::{Collector, LoadOptions, jsonl_values, parent_dir, read_capped, stem};
use crate::error::{EvalError, Result};
use crate::item::{Benchmark, EvalItem, ImageRef, Media, Metric, json_text, options_in_text};

/// Video file extensions: an `is_video` record naming one such file is a video file, not a frame list.
const VIDEO_EXTENSIONS: [&str; 7] = ["mp4", "webm", "mkv", "avi", "mov", "m4v", "gif"];

/// Loads an official eval file (`.parquet`, `.json` or `.jsonl`); media paths are relative to its folder.
///
/// # Errors
/// [`EvalError::Missing`] / [`EvalError::Io`] for a file that cannot be read, [`EvalError::Format`] for a
/// file that is not JSON/JSONL/parquet (or parquet without the feature), [`EvalError::Record`] for a
/// malformed record or a missing media file (with [`pixel_traces::OnError::Fail`]).
pub fn load(path: &Path, options: &LoadOptions) -> Result<Benchmark> {
    load_with_root(path, &DatasetRoot::new(parent_dir(path)), options)
}

/// As [`load`], with media paths relative to `root`.
///
/// # Errors
/// As [`load`].
pub fn load_with_root(path: &Path, root: &DatasetRoot, options: &LoadOptions) -> Result<Benchmark> {
    let values = read_values(path)?;
    let mut collector = Collector::new(path, root, options);
    for (location, value) in values {
        let item = value.and_then(|v| item_from_value(v, root));
        collector.push(location, item)?;
    }
    let name = stem(path);
    let metric = metric_for(&name);
    collector.finish(name, metric)
}

/// The records of `path` as JSON values with their locations (rows of a parquet file are 0-based
/// elements).
fn read_values(
    path: &Path,
) -> Result<Vec<(Location, std::result::Result<serde_json::Value, String>)>> {
    let extension = path
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    if extension == "parquet" {
        return parquet_values(path);
    }
    let bytes = read_capped(path)?;
    let start = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if start == Some(&b'[') {
        let values: Vec<serde_json::Value> =
            serde_json::from_slice(&bytes).map_err(|e| EvalError::Format {
                path: path.to_path_buf(),
                message: format!("not a JSON array: {e}"),
            })?;
        return Ok(values
            .into_iter()
            .enumerate()
            .map(|(i, v)| (Location::Index(i), Ok(v)))
            .collect());
    }
    jsonl_values(path)
}

#[cfg(feature = "parquet")]
fn parquet_values(
    path: &Path,
) -> Result<Vec<(Location, std::result::Result<serde_json::Value, String>)>> {
    crate::parquet_rows::read_rows(path)
}

#[cfg(not(feature = "parquet"))]
fn parquet_values(
    path: &Path,
) -> Result<Vec<(Location, std::result::Result<serde_json::Value, String>)>> {
    Err(EvalError::Format {
        path: path.to_path_buf(),
        message: "parquet files need pixel-eval's `parquet` feature (or convert the file to JSONL)"
            .into(),
    })
}

/// One official record as an item.
pub(crate) fn item_from_value(
    value: serde_json::Value,
    root: &DatasetRoot,
) -> std::result::Result<EvalItem, String> {
    // `RlRecord` joins a list of answers into one string; the official scorer tries each answer.
    let answers = value
        .get("answer")
        .filter(|a| !a.is_null())
        .or_else(|| value.get("gt_answer"))
        .and_then(|a| a.as_array())
        .map(|list| list.iter().filter_map(json_text).collect::<Vec<_>>());
    let record = RlRecord::from_record(value, root)?;
    let answers = match answers {
        Some(list) if !list.is_empty() => list,
        _ => vec![record.answer.clone()],
    };
    let media = if record.media.is_empty() {
        Media::None
    } else if record.is_video {
        let single_file = record.media.len() == 1 && is_video_file(&record.media[0]);
        if single_file {
            Media::VideoFile {
                path: record.media[0].clone(),
                clip: None,
            }
        } else {
            Media::Frames(record.media.clone())
        }
    } else {
        Media::Images(record.media.iter().cloned().map(ImageRef::File).collect())
    };
    let category = record
        .extra
        .get("category")
        .and_then(json_text)
        .filter(|c| !c.is_empty());
    let options = if record.options.is_empty() {
        options_in_text(&record.question)
    } else {
        record.options.clone()
    };
    Ok(EvalItem {
        qid: record.qid,
        question: record.question,
        media,
        answers,
        options,
        category,
        is_video: record.is_video,
        extra: record.extra,
    })
}

fn is_video_file(path: &str) -> bool {
    Path::new(path)
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .is_some_and(|e| VIDEO_EXTENSIONS.contains(&e.as_str()))
}

/// The standard metric of a benchmark by its name: multiple choice for V* Bench, HR-Bench and MVBench,
/// integer for TallyQA, ANLS for InfographicsVQA / DocVQA, automatic otherwise.
///
/// ```
/// use pixel_eval::{Metric, loaders::official::metric_for};
/// assert_eq!(metric_for("vstar"), Metric::Choice);
/// assert_eq!(metric_for("tallyqa_complex"), Metric::Integer);
/// assert_eq!(metric_for("infovqa"), Metric::Anls);
/// assert_eq!(metric_for("something"), Metric::Auto);
/// ```
pub fn metric_for(name: &str) -> Metric {
    let name = name.to_ascii_lowercase();
    if ["vstar", "v*", "hrbench", "hr_bench", "hr-bench", "mvbench"]
        .iter()
        .any(|k| name.contains(k))
    {
        Metric::Choice
    } else if name.contains("tally") {
        Metric::Integer
    } else if name.contains("info") || name.contains("docvqa") {
        Metric::Anls
    } else {
        Metric::Auto
    }
}
