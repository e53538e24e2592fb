//! The runner: a benchmark through any [`Engine`], one rollout per question, results appended to a JSONL
//! file as they come.
//!
//! - **Settings**: [`EvalSettings`] (the official ones by default) and the image pipeline's description go
//!   into the header `<name>.meta.json` before the first question.
//! - **Resumable**: a results file that already holds questions is continued: a torn last line is cut off,
//!   the questions present are skipped, the others run; a header written with other settings is refused
//!   ([`EvalError::SettingsMismatch`]), so one file never mixes two configurations. Each result is written
//!   as one line and flushed (and synced) as soon as its question ends, by one writer, so a killed run
//!   loses at most the questions in flight and redoes nothing.
//! - **Concurrency**: [`run_concurrent`] keeps [`EvalSettings::concurrency`] questions in flight, each on
//!   its own engine in its own thread (several [`pixel_agent::HttpEngine`]s against one batching server);
//!   results land in the file in the order they finish. [`run`] and [`run_with`] run one at a time on one
//!   engine. When a question stops the run, no new question starts and those in flight finish and are
//!   written before the error is returned.
//! - **Subsets**: [`EvalSettings::shard`] keeps question `i` when `i % n == k` (several processes, or
//!   machines, each run one shard into its own file; `score` and `report` read them together);
//!   [`EvalSettings::limit`] keeps the first questions of the shard.
//! - **Failures**: a question whose media cannot be loaded, or that the engine refuses (a prompt over the
//!   context, a template error, a client error status), is recorded with its error and scored as wrong; an
//!   engine that cannot be reached or answers 5xx / 429 / garbage stops the run (a restart continues it).
//! - **Progress**: a bar with the running official accuracy and the time left, on a terminal only (not
//!   with `PIXEL_PROGRESS=0` or [`EvalSettings::progress`] false).

use std::fs::{File, OpenOptions};
use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
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
/// [`EvalError::Agent`] when the engine cannot be reached or fails (the questions done so far are kept);
/// [`EvalError::Invalid`] for a [`EvalSettings::concurrency`] other than 1 (use [`run_concurrent`]).
pub fn run_with<E: Engine>(
    engine: &mut E,
    benchmark: &Benchmark,
    settings: &EvalSettings,
    pipeline: &dyn MediaPipeline,
    out: &Path,
) -> Result<RunSummary> {
    if settings.concurrency != 1 {
        return Err(EvalError::Invalid(format!(
            "concurrency {} needs one engine per question in flight: use run_concurrent",
            settings.concurrency
        )));
    }
    let mut run = Run::start(benchmark, settings, pipeline, out)?;
    for i in 0..run.pending.len() {
        let index = run.pending[i];
        let outcome = run_one(engine, benchmark, settings, pipeline, index);
        run.record(outcome);
        if run.error.is_some() {
            break;
        }
    }
    run.finish()
}

/// As [`run_with`], with [`EvalSettings::concurrency`] questions in flight at once: worker `k` runs its
/// questions on `engines[k]` in its own thread, and the calling thread writes every result as it comes.
///
/// # Errors
/// As [`run_with`]; [`EvalError::Invalid`] for a concurrency of 0 or above `engines.len()`.
pub fn run_concurrent<E: Engine + Send>(
    engines: &mut [E],
    benchmark: &Benchmark,
    settings: &EvalSettings,
    pipeline: &dyn MediaPipeline,
    out: &Path,
) -> Result<RunSummary> {
    let workers = settings.concurrency;
    if workers == 0 || workers > engines.len() {
        return Err(EvalError::Invalid(format!(
            "concurrency {workers} needs between 1 and {} engines (one per question in flight)",
            engines.len()
        )));
    }
    let mut run = Run::start(benchmark, settings, pipeline, out)?;
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let pending = run.pending.clone();
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<Result<ItemResult>>();
        for engine in engines.iter_mut().take(workers) {
            let (tx, next, stop, pending) = (tx.clone(), &next, &stop, &pending);
            scope.spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let Some(&index) = pending.get(next.fetch_add(1, Ordering::SeqCst)) else {
                        break;
                    };
                    let outcome = run_one(engine, benchmark, settings, pipeline, index);
                    if outcome.is_err() {
                        stop.store(true, Ordering::SeqCst);
                    }
                    if tx.send(outcome).is_err() {
                        break;
                    }
                }
            });
        }
        // The workers hold the only senders left: the loop ends when the last one is done.
        drop(tx);
        for outcome in rx {
            run.record(outcome);
            if run.error.is_some() {
                stop.store(true, Ordering::SeqCst);
            }
        }
    });
    run.finish()
}

/// One start of a run: what it selected and still has to do, the open results file, the counters and
/// the progress bar. [`Run::record`] is the single place results are written.
struct Run<'a> {
    out: &'a Path,
    file: File,
    pending: Vec<usize>,
    summary: RunSummary,
    correct: usize,
    bar: ProgressBar,
    started: Instant,
    /// The first error that stopped the run.
    error: Option<EvalError>,
    /// Whether appending to the results file failed (nothing more is written then).
    write_failed: bool,
}

impl<'a> Run<'a> {
    /// Selects the questions, reads what `out` already holds, writes the header and opens `out` for
    /// appending (cutting a torn last line off).
    fn start(
        benchmark: &Benchmark,
        settings: &EvalSettings,
        pipeline: &dyn MediaPipeline,
        out: &'a Path,
    ) -> Result<Self> {
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
        let file = OpenOptions::new()
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
        let summary = RunSummary {
            selected: selected.len(),
            done_before,
            ran: 0,
            errors: 0,
            dropped_torn_line: existing.torn,
            seconds: 0.0,
        };
        Ok(Self {
            out,
            file,
            pending,
            summary,
            correct: 0,
            bar,
            started,
            error: None,
            write_failed: false,
        })
    }

    /// Writes one finished question (or keeps the first error that stops the run).
    fn record(&mut self, outcome: Result<ItemResult>) {
        let result = match outcome {
            Ok(result) => result,
            Err(e) => {
                self.error.get_or_insert(e);
                return;
            }
        };
        if self.write_failed {
            return; // the file failed: write nothing more (a restart redoes the question)
        }
        if let Err(e) = append(&mut self.file, self.out, &result) {
            self.write_failed = true;
            self.error.get_or_insert(e);
            return;
        }
        self.summary.ran += 1;
        self.summary.errors += usize::from(result.error.is_some());
        self.correct += usize::from(score_item(&result, Scorer::Official).correct);
        self.bar.set_message(format!(
            "official acc {:.1}% of {}",
            100.0 * self.correct as f64 / self.summary.ran as f64,
            self.summary.ran
        ));
        self.bar.inc(1);
    }

    fn finish(mut self) -> Result<RunSummary> {
        self.bar.finish();
        match self.error {
            Some(e) => Err(e),
            None => {
                self.summary.seconds = self.started.elapsed().as_secs_f64();
                Ok(self.summary)
            }
        }
    }
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
        concurrency: settings.concurrency,
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
