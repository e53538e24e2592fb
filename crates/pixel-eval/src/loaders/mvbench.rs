//! MVBench (`OpenGVLab/MVBench`): 20 tasks of 200 multiple-choice questions about videos. The folder holds
//! `json/<task>.json` (a list of questions per task) and `video/<source>/...` (the videos, or for Episodic
//! Reasoning folders of frames extracted at 3 fps):
//!
//! ```json
//! {"video": "166583.webm", "question": "What is the action performed by the person in the video?", "candidates": ["Not sure", "Scattering something down", "Piling something up"], "answer": "Piling something up"}
//! ```
//!
//! Tasks whose questions are bounded to a clip add `start` and `end` (seconds). [`TASKS`] lists each task's
//! file, its video folder, whether its videos are files or frame folders, and whether it is bounded (the
//! table every MVBench evaluation uses). The question is written with its candidates as `(A) ...` lines;
//! the reference is the letter of `answer` among `candidates`; the category is the task.
//!
//! Frame folders are sampled at load time to 16 frames (the official count), evenly over the clip when
//! bounded (at 3 fps), else over all frames. Video files need the `ffmpeg` feature when the item runs; their
//! clip bounds are kept in [`Media::VideoFile`] but the decoder samples 16 frames over the whole file.
//! The PixelReasoner release evaluates MVBench from its own official file (16 extracted frames per
//! question, [`super::official`]); this loader reads the original benchmark.

use std::path::Path;

use pixel_traces::DatasetRoot;

use super::{Collector, LoadOptions, object, read_dir, read_json, take_text};
use crate::error::{EvalError, Result};
use crate::item::{Benchmark, EvalItem, Media, Metric, json_text, letter, question_with_options};

/// Whether a task's videos are files or frame folders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Video files.
    Video,
    /// Folders of frame images (3 fps).
    Frames,
}

/// One MVBench task: name, question file under `json/`, video folder under `video/`, source kind, and
/// whether its questions carry `start` / `end`.
pub type Task = (&'static str, &'static str, &'static str, Source, bool);

/// The 20 tasks.
pub const TASKS: [Task; 20] = [
    (
        "Action Sequence",
        "action_sequence.json",
        "star/Charades_v1_480/",
        Source::Video,
        true,
    ),
    (
        "Action Prediction",
        "action_prediction.json",
        "star/Charades_v1_480/",
        Source::Video,
        true,
    ),
    (
        "Action Antonym",
        "action_antonym.json",
        "ssv2_video/",
        Source::Video,
        false,
    ),
    (
        "Fine-grained Action",
        "fine_grained_action.json",
        "Moments_in_Time_Raw/videos/",
        Source::Video,
        false,
    ),
    (
        "Unexpected Action",
        "unexpected_action.json",
        "FunQA_test/test/",
        Source::Video,
        false,
    ),
    (
        "Object Existence",
        "object_existence.json",
        "clevrer/video_validation/",
        Source::Video,
        false,
    ),
    (
        "Object Interaction",
        "object_interaction.json",
        "star/Charades_v1_480/",
        Source::Video,
        true,
    ),
    (
        "Object Shuffle",
        "object_shuffle.json",
        "perception/videos/",
        Source::Video,
        false,
    ),
    (
        "Moving Direction",
        "moving_direction.json",
        "clevrer/video_validation/",
        Source::Video,
        false,
    ),
    (
        "Action Localization",
        "action_localization.json",
        "sta/sta_video/",
        Source::Video,
        true,
    ),
    (
        "Scene Transition",
        "scene_transition.json",
        "scene_qa/video/",
        Source::Video,
        false,
    ),
    (
        "Action Count",
        "action_count.json",
        "perception/videos/",
        Source::Video,
        false,
    ),
    (
        "Moving Count",
        "moving_count.json",
        "clevrer/video_validation/",
        Source::Video,
        false,
    ),
    (
        "Moving Attribute",
        "moving_attribute.json",
        "clevrer/video_validation/",
        Source::Video,
        false,
    ),
    (
        "State Change",
        "state_change.json",
        "perception/videos/",
        Source::Video,
        false,
    ),
    (
        "Fine-grained Pose",
        "fine_grained_pose.json",
        "nturgbd/",
        Source::Video,
        false,
    ),
    (
        "Character Order",
        "character_order.json",
        "perception/videos/",
        Source::Video,
        false,
    ),
    (
        "Egocentric Navigation",
        "egocentric_navigation.json",
        "vlnqa/",
        Source::Video,
        false,
    ),
    (
        "Episodic Reasoning",
        "episodic_reasoning.json",
        "tvqa/frames_fps3_hq/",
        Source::Frames,
        true,
    ),
    (
        "Counterfactual Inference",
        "counterfactual_inference.json",
        "clevrer/video_validation/",
        Source::Video,
        false,
    ),
];

/// Frames kept per question from a frame folder (the official count).
pub const FRAMES: usize = 16;

/// Frame rate of the frame folders.
pub const FRAME_FOLDER_FPS: f64 = 3.0;

/// Loads all 20 tasks from the MVBench folder.
///
/// # Errors
/// [`EvalError::Missing`] for a missing `json/` folder or task file (each named),
/// [`EvalError::Record`] naming the task file and element of a malformed question, an answer that is not
/// one of its candidates, or a missing video / frame folder.
pub fn load(path: &Path, options: &LoadOptions) -> Result<Benchmark> {
    let names: Vec<&str> = TASKS.iter().map(|t| t.0).collect();
    load_tasks(path, &names, options)
}

/// Loads the tasks named `tasks` (names as in [`TASKS`]).
///
/// # Errors
/// As [`load`], and [`EvalError::Invalid`] for an unknown task name.
pub fn load_tasks(path: &Path, tasks: &[&str], options: &LoadOptions) -> Result<Benchmark> {
    let json_dir = path.join("json");
    if !json_dir.is_dir() {
        return Err(EvalError::Missing {
            path: json_dir,
            what: "MVBench's question files".into(),
        });
    }
    let root = DatasetRoot::new(path.join("video"));
    let mut items = Vec::new();
    let mut skipped = Vec::new();
    for name in tasks {
        let task = TASKS
            .iter()
            .find(|t| t.0 == *name)
            .ok_or_else(|| EvalError::Invalid(format!("unknown MVBench task {name:?}")))?;
        let file = json_dir.join(task.1);
        if !file.is_file() {
            return Err(EvalError::Missing {
                path: file,
                what: format!("the questions of {}", task.0),
            });
        }
        let serde_json::Value::Array(values) = read_json(&file)? else {
            return Err(EvalError::Format {
                path: file,
                message: "not a JSON array of questions".into(),
            });
        };
        let mut collector = Collector::new(&file, &root, options);
        for (i, value) in values.into_iter().enumerate() {
            let item = item(value, task, i, &root);
            collector.push(pixel_traces::Location::Index(i), item)?;
        }
        items.append(&mut collector.items);
        skipped.append(&mut collector.skipped);
    }
    let mut bench = Benchmark::new("mvbench", root, path, Metric::Choice, items)?;
    bench.skipped = skipped;
    Ok(bench)
}

fn item(
    value: serde_json::Value,
    task: &Task,
    index: usize,
    root: &DatasetRoot,
) -> std::result::Result<EvalItem, String> {
    let (name, file, prefix, source, bounded) = *task;
    let mut map = object(value)?;
    let video = take_text(&mut map, "video")?;
    let question = take_text(&mut map, "question")?;
    let answer = take_text(&mut map, "answer")?;
    let candidates: Vec<String> = match map.remove("candidates") {
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .map(|c| json_text(c).ok_or_else(|| format!("a candidate is not text: {c}")))
            .collect::<std::result::Result<_, _>>()?,
        _ => return Err("missing `candidates` list".into()),
    };
    let position = candidates
        .iter()
        .position(|c| c == &answer)
        .ok_or_else(|| format!("`answer` {answer:?} is not one of the candidates"))?;
    let clip = if bounded {
        let number = |key: &str| map.get(key).and_then(serde_json::Value::as_f64);
        number("start").zip(number("end"))
    } else {
        None
    };
    let rel = format!("{prefix}{video}");
    let media = match source {
        Source::Video => Media::VideoFile { path: rel, clip },
        Source::Frames => Media::Frames(sample_frames(root, &rel, clip)?),
    };
    let stem = file.trim_end_matches(".json");
    Ok(EvalItem {
        qid: format!("{stem}_{index}"),
        question: question_with_options(&question, &candidates),
        media,
        answers: vec![letter(position)],
        options: candidates,
        category: Some(name.to_string()),
        is_video: true,
        extra: map,
    })
}

/// [`FRAMES`] frames of the frame folder `rel`, evenly spread over the clip (3 fps) or over all frames.
fn sample_frames(
    root: &DatasetRoot,
    rel: &str,
    clip: Option<(f64, f64)>,
) -> std::result::Result<Vec<String>, String> {
    let dir = root.resolve(rel).map_err(|e| e.to_string())?;
    if !dir.is_dir() {
        return Err(format!(
            "frame folder {rel:?} is missing ({})",
            dir.display()
        ));
    }
    let files: Vec<String> = read_dir(&dir)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|p| p.is_file())
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    if files.is_empty() {
        return Err(format!("frame folder {rel:?} holds no frames"));
    }
    let last = files.len() - 1;
    let (first, end) = match clip {
        Some((start, stop)) => {
            let first = ((start * FRAME_FOLDER_FPS).round().max(0.0) as usize).min(last);
            let end = ((stop * FRAME_FOLDER_FPS).round().max(0.0) as usize).clamp(first, last);
            (first, end)
        }
        None => (0, last),
    };
    Ok(linspace(first, end, FRAMES)
        .into_iter()
        .map(|i| format!("{}/{}", rel.trim_end_matches('/'), files[i]))
        .collect())
}

/// `n` indices from `first` to `last` inclusive, evenly spaced and rounded (numpy's `linspace(...).round()`).
pub(crate) fn linspace(first: usize, last: usize, n: usize) -> Vec<usize> {
    if n <= 1 || last <= first {
        return vec![first; n.max(1)];
    }
    let step = (last - first) as f64 / (n - 1) as f64;
    (0..n)
        .map(|k| (first as f64 + step * k as f64).round_ties_even() as usize)
        .collect()
}
