//! The runner: a benchmark through any [`Engine`], one rollout per question, results appended to a JSONL
//! file as they come.
//!
//! - **Settings**: [`EvalSettings`] (the official ones by default) and the image pipeline's description go
//!   into the header `<name>.meta.json` before the first question.
//! - **Resumable**: a results file that already holds questions is continued: a torn last line is cut off,
//!   the questions present are skipped, the others run; a header written with other settings is refused
//!   ([`EvalError::SettingsMismatch`]), so one file never mixes two configurations. Each result is written
//!   and flushed (and synced) before the next question starts, so a killed run loses at most the question
//!   it was on and redoes nothing.
//! - **Subsets**: [`EvalSettings::shard`] keeps question `i` when `i % n == k` (several processes, or
//!   machines, each run one shard into its own file; `score` and `report` read them together);
//!   [`EvalSettings::limit`] keeps the first questions of the shard.
//! - **Failures**: a question whose media cannot be loaded, or that the engine refuses (a prompt over the
//!   context, a template error, a client error status), is recorded with its error and scored as wrong; an
//!   engine that cannot be reached or answers 5xx / 429 / garbage stops the run (a restart continues it).
//! - **Progress**: a bar with the running official accuracy and the time left, on a terminal only (not
//!   with `PIXEL_PROGRESS=0` or [`EvalSettings::progress`] false).

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};
use pixel_agent::{AgentError, Engine, run_group};

use crate::error::{EvalError, Result, io};
use crate::item::Benchmark;
use crate::media::{MediaPipeline, OfficialPipeline};
use crate::results::{
    EvalSettings, FORMAT, ItemResult, RunHeader, RunStart, append, header_path, read_header,
    read_results, write_header,
};
use crate::score::{Scorer, score_item};

/// What a call of [`run`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// Questions selected (after shard and limit).
    pub selected: usize,
    /// Of those, already in the results file when the run started.
    pub done_before: usize,
    /// Questions run now.
    pub ran: usize,
    /// Of those, recorded with an error.
    pub errors: usize,
    /// Whether a torn last line was cut off the results file.
    pub dropped_torn_line: bool,
    /// Seconds spent.
    pub seconds: f64,
}

/// Runs `benchmark` on `engine` with `settings` and the [`OfficialPipeline`], appending to `out` (see the
/// module docs).
///
/// # Errors
/// As [`run_with`].
pub fn run<E: Engine>(
    engine: &mut E,
    benchmark: &Benchmark,
    settings: &EvalSettings,
    out: &Path,
) -> Result<RunSummary> {
    run_with(
        engine,
        benchmark,
        settings,
        &OfficialPipeline::default(),
        out,
    )
}

/// As [`run`] with another image pipeline.
///
/// # Errors
/// [`EvalError::SettingsMismatch`] if `out` was written with other settings; [`EvalError::Io`] if the
/// results cannot be written; [`EvalError::Record`] for a results file with a bad line before its last;
/// [`EvalError::Agent`] when the engine cannot be reached or fails (the questions done so far are kept).
pub fn run_with<E: Engine>(
    engine: &mut E,
    benchmark: &Benchmark,
    settings: &EvalSettings,
    pipeline: &dyn MediaPipeline,
    out: &Path,
) -> Result<RunSummary> {
    let started = Instant::now();
    if settings.shard.is_some_and(|s| s.count == 0) {
        return Err(EvalError::Invalid("a shard count of 0".into()));
    }
    let selected: Vec<usize> = (0..benchmark.len())
        .filter(|&i| settings.shard.is_none_or(|s| s.contains(i)))
        .take(settings.limit.unwrap_or(usize::MAX))
        .collect();

    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let existing = read_results(out)?;
    let done: std::collections::HashSet<String> =
        existing.results.iter().map(|r| r.qid.clone()).collect();
    let done_before = selected
        .iter()
        .filter(|&&i| done.contains(&benchmark.items[i].qid))
        .count();

    let header = prepare_header(out, benchmark, settings, pipeline, done_before)?;
    write_header(&header_path(out), &header)?;

    // Cut a torn last line off before appending.
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .map_err(io(out))?;
    if existing.torn {
        file.set_len(existing.intact_len).map_err(io(out))?;
    }

    let pending: Vec<usize> = selected
        .iter()
        .copied()
        .filter(|&i| !done.contains(&benchmark.items[i].qid))
        .collect();
    let bar = progress_bar(settings.progress, pending.len() as u64, &benchmark.name);
    let mut summary = RunSummary {
        selected: selected.len(),
        done_before,
        ran: 0,
        errors: 0,
        dropped_torn_line: existing.torn,
        seconds: 0.0,
    };
    let mut correct = 0usize;
    for &index in &pending {
        let result = run_one(engine, benchmark, settings, pipeline, index)?;
        summary.ran += 1;
        summary.errors += usize::from(result.error.is_some());
        correct += usize::from(score_item(&result, Scorer::Official).correct);
        append(&mut file, out, &result)?;
        bar.set_message(format!(
            "official acc {:.1}% of {}",
            100.0 * correct as f64 / summary.ran as f64,
            summary.ran
        ));
        bar.inc(1);
    }
    bar.finish();
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Runs question `index`; `Err` only for errors that should stop the run.
fn run_one<E: Engine>(
    engine: &mut E,
    benchmark: &Benchmark,
    settings: &EvalSettings,
    pipeline: &dyn MediaPipeline,
    index: usize,
) -> Result<ItemResult> {
    let item = &benchmark.items[index];
    let t = Instant::now();
    let outcome = pipeline
        .query(&benchmark.root, item)
        .and_then(|query| Ok(run_group(engine, &query, 1, &settings.rollout)?));
    let seconds = t.elapsed().as_secs_f64();
    let (name, metric) = (benchmark.name.as_str(), benchmark.metric);
    match outcome {
        Ok(mut rollouts) => match rollouts.pop() {
            Some(trajectory) => Ok(ItemResult::from_trajectory(
                name,
                metric,
                index,
                item,
                &trajectory,
                seconds,
            )),
            None => Err(EvalError::Invalid("the engine returned no rollout".into())),
        },
        Err(e) if stops_the_run(&e) => Err(e),
        Err(e) => Ok(ItemResult::failed(
            name,
            metric,
            index,
            item,
            e.to_string(),
            seconds,
        )),
    }
}

/// Whether an error means the engine (not the question) is at fault, so the run stops and a restart
/// retries the question.
fn stops_the_run(error: &EvalError) -> bool {
    match error {
        EvalError::Agent(agent) => match agent {
            AgentError::Unreachable { .. } | AgentError::BadResponse { .. } => true,
            AgentError::Io { .. } => true,
            AgentError::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            _ => false,
        },
        EvalError::Io { .. } => true,
        _ => false,
    }
}

/// The header of this run, checked against the one already beside `out`.
fn prepare_header(
    out: &Path,
    benchmark: &Benchmark,
    settings: &EvalSettings,
    pipeline: &dyn MediaPipeline,
    done_before: usize,
) -> Result<RunHeader> {
    let path = header_path(out);
    let start = RunStart {
        unix_seconds: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        commit: settings.commit.clone(),
        done_before,
    };
    let mut header = RunHeader {
        format: FORMAT.into(),
        benchmark: benchmark.name.clone(),
        source: benchmark.source.clone(),
        questions: benchmark.len(),
        metric: benchmark.metric,
        settings: settings.clone(),
        pipeline: pipeline.describe(),
        starts: Vec::new(),
    };
    if path.is_file() {
        let previous = read_header(&path)?;
        let differences = previous.differences(&header);
        if !differences.is_empty() {
            return Err(EvalError::SettingsMismatch {
                path,
                differences: differences.join(", "),
            });
        }
        header.starts = previous.starts;
    } else if out.is_file() && std::fs::metadata(out).map_or(0, |m| m.len()) > 0 {
        return Err(EvalError::SettingsMismatch {
            path,
            differences: "the results file has no header".into(),
        });
    }
    header.starts.push(start);
    Ok(header)
}

fn progress_bar(enabled: bool, total: u64, label: &str) -> ProgressBar {
    let on_terminal = std::io::stderr().is_terminal();
    let disabled_by_env = std::env::var("PIXEL_PROGRESS").is_ok_and(|v| v == "0");
    if !enabled || !on_terminal || disabled_by_env {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{prefix} {bar:30} {pos}/{len} [{elapsed_precise} < {eta_precise}] {msg}",
    ) {
        bar.set_style(style);
    }
    bar.set_prefix(label.to_string());
    bar
}
