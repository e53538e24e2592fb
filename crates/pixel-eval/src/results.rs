//! The results of a run: one JSON line per question ([`ItemResult`]) and a header file beside it
//! ([`RunHeader`], `<name>.meta.json`) holding every setting.
//!
//! The JSONL file is appended to and flushed after every question, so a killed run loses at most the
//! questions it was on (one per engine in flight). Reading it back ([`read_results`]) drops a torn last line (a write cut short: no
//! line break at the end, or a last line that is not JSON); a bad line anywhere else is an error naming it.

use std::io::Write;
use std::path::{Path, PathBuf};

use pixel_agent::{OperationRecord, RolloutConfig, RolloutEnd, Trajectory};
use pixel_ops::EpisodeStats;
use pixel_traces::Location;
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result, io};
use crate::item::{EvalItem, Metric};

/// The `format` of headers written by this version.
pub const FORMAT: &str = "pixel-eval/results/1";

/// One question's result: what is needed to score it, without the benchmark's files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemResult {
    /// The question's id.
    pub qid: String,
    /// Its index in the benchmark.
    pub index: usize,
    /// The benchmark's name.
    pub benchmark: String,
    /// The question as asked (without the protocol's guidelines).
    pub question: String,
    /// Reference answers.
    pub answers: Vec<String>,
    /// Multiple-choice options (`A` first).
    #[serde(default)]
    pub options: Vec<String>,
    /// The question's category.
    #[serde(default)]
    pub category: Option<String>,
    /// The standard scorer's metric.
    pub metric: Metric,
    /// Whether the media was a video.
    #[serde(default)]
    pub is_video: bool,
    /// The whole text after the first assistant header, as the official scorer reads it: every assistant
    /// turn, and between two turns the observation as a chat-template user turn (its text, one vision
    /// placeholder per image).
    pub response: String,
    /// The assistant turns as sampled.
    pub turns: Vec<String>,
    /// The executed operations and their observations.
    #[serde(default)]
    pub operations: Vec<OperationRecord>,
    /// Why the rollout ended (`None` when the question failed before or during the rollout).
    pub end: Option<RolloutEnd>,
    /// The episode's counters (tool calls, attempted and failed operations).
    #[serde(default)]
    pub stats: EpisodeStats,
    /// Tokens in the final context (token-exact engines).
    #[serde(default)]
    pub context_tokens: Option<usize>,
    /// Tokens the model sampled (token-exact engines).
    #[serde(default)]
    pub sampled_tokens: Option<usize>,
    /// Wall-clock seconds of the question (media loading and rollout).
    pub seconds: f64,
    /// Why the question has no rollout: its media could not be loaded, or the engine refused it (scored
    /// as wrong).
    #[serde(default)]
    pub error: Option<String>,
}

impl ItemResult {
    /// The result of `item` (index `index` of `benchmark`) from its trajectory.
    pub fn from_trajectory(
        benchmark: &str,
        metric: Metric,
        index: usize,
        item: &EvalItem,
        trajectory: &Trajectory,
        seconds: f64,
    ) -> Self {
        let turns: Vec<String> = trajectory.turns.iter().map(|t| t.text.clone()).collect();
        Self {
            response: official_response(&turns, &trajectory.operations),
            turns,
            operations: trajectory.operations.clone(),
            end: Some(trajectory.end),
            stats: trajectory.stats.clone(),
            context_tokens: trajectory.tokens.as_ref().map(|t| t.len()),
            sampled_tokens: trajectory.tokens.as_ref().map(|t| t.sampled_len()),
            seconds,
            error: None,
            ..Self::empty(benchmark, metric, index, item)
        }
    }

    /// The result of `item` when it failed with `error`.
    pub fn failed(
        benchmark: &str,
        metric: Metric,
        index: usize,
        item: &EvalItem,
        error: String,
        seconds: f64,
    ) -> Self {
        Self {
            error: Some(error),
            seconds,
            ..Self::empty(benchmark, metric, index, item)
        }
    }

    fn empty(benchmark: &str, metric: Metric, index: usize, item: &EvalItem) -> Self {
        Self {
            qid: item.qid.clone(),
            index,
            benchmark: benchmark.to_string(),
            question: item.question.clone(),
            answers: item.answers.clone(),
            options: item.options.clone(),
            category: item.category.clone(),
            metric,
            is_video: item.is_video,
            response: String::new(),
            turns: Vec::new(),
            operations: Vec::new(),
            end: None,
            stats: EpisodeStats::default(),
            context_tokens: None,
            sampled_tokens: None,
            seconds: 0.0,
            error: None,
        }
    }

    /// The last assistant turn (where the answer normally is).
    pub fn final_text(&self) -> &str {
        self.turns.last().map_or("", String::as_str)
    }
}

/// The text the official scorer reads: everything after the first `<|im_start|>assistant\n` of the whole
/// rollout, rebuilt from its turns and observations as the chat template renders them.
pub fn official_response(turns: &[String], operations: &[OperationRecord]) -> String {
    let mut text = String::new();
    for (t, turn) in turns.iter().enumerate() {
        text.push_str(turn);
        if t + 1 == turns.len() {
            break;
        }
        text.push_str("<|im_end|>\n<|im_start|>user\n");
        if let Some(op) = operations.iter().find(|o| o.turn == t) {
            text.push_str(&op.observation);
            for _ in 0..op.images_added {
                text.push_str("<|vision_start|><|image_pad|><|vision_end|>");
            }
        }
        text.push_str("<|im_end|>\n<|im_start|>assistant\n");
    }
    text
}

/// A slice of the benchmark: question `i` is in shard `index` of `count` when `i % count == index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// This shard, from 0.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl Shard {
    /// Parses `i/n` (`0/4` .. `3/4`).
    ///
    /// # Errors
    /// [`EvalError::Invalid`] unless `i < n`.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || EvalError::Invalid(format!("shard {text:?}: expected i/n with i < n"));
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let shard = Shard {
            index: i.trim().parse().map_err(|_| bad())?,
            count: n.trim().parse().map_err(|_| bad())?,
        };
        if shard.index >= shard.count {
            return Err(bad());
        }
        Ok(shard)
    }

    /// Whether question `i` belongs to the shard.
    pub fn contains(&self, i: usize) -> bool {
        i % self.count == self.index
    }
}

/// Every setting of a run. [`EvalSettings::official`] is the official evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSettings {
    /// The model: a checkpoint folder's name or a served model id.
    pub model: String,
    /// The engine, in words (`in-process flex f32`, `http http://host:8000 (vLLM)`, ...).
    pub engine: String,
    /// The git commit of the code that ran, if known.
    pub commit: Option<String>,
    /// Decoding, tool protocol and episode limits.
    pub rollout: RolloutConfig,
    /// At most this many questions (after sharding); `None` runs all.
    pub limit: Option<usize>,
    /// Only this shard of the questions.
    pub shard: Option<Shard>,
    /// Questions in flight at once, each on its own engine ([`crate::run_concurrent`]); 1 runs them one
    /// after the other. Useful with the HTTP engine against a server that batches (vLLM); keep the
    /// in-process engine at 1. May change between the starts of a run (each start records its own).
    #[serde(default = "one")]
    pub concurrency: usize,
    /// Draw a progress bar (on a terminal, unless `PIXEL_PROGRESS=0`).
    pub progress: bool,
    /// Other facts worth keeping with the results (the engine's pixel limits, dtype, ...).
    #[serde(default)]
    pub notes: serde_json::Map<String, serde_json::Value>,
}

impl EvalSettings {
    /// The official evaluation of `model`: greedy decoding on every turn, 2,048 new tokens per turn, at most
    /// 4 executed calls, 16 images and 12,088 tokens (`RolloutConfig::greedy()` with
    /// `EpisodeConfig::official_eval()`).
    pub fn official(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            engine: "unspecified".into(),
            commit: None,
            rollout: RolloutConfig::greedy(),
            limit: None,
            shard: None,
            concurrency: 1,
            progress: true,
            notes: serde_json::Map::new(),
        }
    }
}

/// The header of a results file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunHeader {
    /// [`FORMAT`].
    pub format: String,
    /// The benchmark's name.
    pub benchmark: String,
    /// Where it was read from.
    pub source: PathBuf,
    /// Its questions.
    pub questions: usize,
    /// Its standard metric.
    pub metric: Metric,
    /// The run's settings.
    pub settings: EvalSettings,
    /// The image pipeline's settings.
    pub pipeline: serde_json::Value,
    /// Each start of the run (the first and every resume).
    pub starts: Vec<RunStart>,
}

/// One start of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStart {
    /// Seconds since the Unix epoch.
    pub unix_seconds: u64,
    /// The commit given for this start.
    pub commit: Option<String>,
    /// Questions already in the results file.
    pub done_before: usize,
    /// [`EvalSettings::concurrency`] of this start.
    #[serde(default = "one")]
    pub concurrency: usize,
}

/// The serde default of the concurrency fields (files written before they existed ran one at a time).
fn one() -> usize {
    1
}

impl RunHeader {
    /// The settings that must match for a run to continue another: benchmark, model, engine, decoding and
    /// limits, shard, notes and pipeline (the limit, commit, concurrency and progress may differ). Returns the names of
    /// those that differ.
    pub fn differences(&self, other: &RunHeader) -> Vec<&'static str> {
        let mut out = Vec::new();
        let (a, b) = (&self.settings, &other.settings);
        let checks: [(&'static str, bool); 8] = [
            ("benchmark", self.benchmark == other.benchmark),
            ("questions", self.questions == other.questions),
            ("model", a.model == b.model),
            ("engine", a.engine == b.engine),
            ("rollout", a.rollout == b.rollout),
            ("shard", a.shard == b.shard),
            ("notes", a.notes == b.notes),
            ("pipeline", self.pipeline == other.pipeline),
        ];
        for (name, same) in checks {
            if !same {
                out.push(name);
            }
        }
        out
    }
}

/// The header file of the results file `results`: `x.jsonl` -> `x.meta.json`.
pub fn header_path(results: &Path) -> PathBuf {
    results.with_extension("meta.json")
}

/// Reads a header file.
///
/// # Errors
/// [`EvalError::Io`] / [`EvalError::Format`].
pub fn read_header(path: &Path) -> Result<RunHeader> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    serde_json::from_slice(&bytes).map_err(|e| EvalError::Format {
        path: path.to_path_buf(),
        message: format!("not a results header: {e}"),
    })
}

/// Writes a header file atomically (a temporary file renamed over it).
///
/// # Errors
/// [`EvalError::Io`].
pub fn write_header(path: &Path, header: &RunHeader) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let json = serde_json::to_vec_pretty(header).map_err(|e| EvalError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    std::fs::write(&tmp, json).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// The results read from a file, and whether a torn last line was dropped.
#[derive(Debug, Clone, Default)]
pub struct ReadResults {
    /// The results in file order.
    pub results: Vec<ItemResult>,
    /// Byte length of the intact part (where the next result is appended).
    pub intact_len: u64,
    /// Whether a torn last line was found after it.
    pub torn: bool,
}

/// Reads a results JSONL file (a missing file reads as empty).
///
/// # Errors
/// [`EvalError::Io`] if it cannot be read, [`EvalError::Record`] naming a line that is not a result
/// (other than a torn last line).
pub fn read_results(path: &Path) -> Result<ReadResults> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ReadResults::default()),
        Err(e) => return Err(io(path)(e)),
    };
    let mut out = ReadResults::default();
    let mut start = 0usize;
    let mut line_no = 0usize;
    while start < bytes.len() {
        line_no += 1;
        let Some(nl) = bytes[start..].iter().position(|&b| b == b'\n') else {
            out.torn = true; // no line break: the write was cut short
            break;
        };
        let line = &bytes[start..start + nl];
        let end = start + nl + 1;
        let is_last = end == bytes.len();
        if !line.iter().all(u8::is_ascii_whitespace) {
            match serde_json::from_slice::<ItemResult>(line) {
                Ok(r) => out.results.push(r),
                Err(_) if is_last => {
                    out.torn = true;
                    break;
                }
                Err(e) => {
                    return Err(EvalError::Record {
                        path: path.to_path_buf(),
                        location: Location::Line(line_no),
                        message: format!("not a result: {e}"),
                    });
                }
            }
        }
        start = end;
        out.intact_len = end as u64;
    }
    Ok(out)
}

/// Reads and concatenates several results files (shards of one run, or several benchmarks).
///
/// # Errors
/// As [`read_results`].
pub fn read_many(paths: &[PathBuf]) -> Result<Vec<ItemResult>> {
    let mut all = Vec::new();
    for path in paths {
        if !path.is_file() {
            return Err(EvalError::Missing {
                path: path.clone(),
                what: "a results file".into(),
            });
        }
        all.extend(read_results(path)?.results);
    }
    Ok(all)
}

/// Appends one result as a JSON line and flushes it to the operating system (and to disk).
///
/// # Errors
/// [`EvalError::Io`].
pub(crate) fn append(file: &mut std::fs::File, path: &Path, result: &ItemResult) -> Result<()> {
    let mut line = serde_json::to_vec(result).map_err(|e| EvalError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    line.push(b'\n');
    file.write_all(&line).map_err(io(path))?;
    file.flush().map_err(io(path))?;
    file.sync_data().map_err(io(path))
}
