//! Training metrics: one [`MetricRecord`] per optimizer step, sent to a [`MetricSink`].
//!
//! - [`JsonlSink`] writes one JSON object per line, e.g. `{"phase":"grpo","step":12,"loss":0.31,"reward":0.5}`
//!   (the values sit next to `phase` and `step`, so `pandas.read_json(path, lines=True)` reads it as a table).
//!   Each line goes to the OS in one write as soon as it is recorded, and [`MetricSink::flush`] fsyncs the
//!   file, so a run that is killed loses at most the line being written. [`JsonlSink::resume`] continues such
//!   a file after a checkpoint: lines written after that checkpoint and a torn last line are dropped first.
//! - [`read_jsonl`] reads a metrics file back; [`crate::plot::plot_metrics`] charts it.
//! - [`MemorySink`] keeps records in memory; [`Sinks`] fans out to several sinks; users implement
//!   [`MetricSink`] for their own (wandb, tensorboard, ...).
//!
//! JSON has no NaN or infinity: a non-finite value is written as `null` and read back as NaN. Finite values
//! are written in their shortest exact form; reading them back may land one unit in the last place away
//! (serde_json's default float parsing is best-effort, not exactly round-trip), which no chart can show.
//! [`JsonlSink::resume`] keeps the lines it does not drop byte for byte.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, RlError};

/// One step's metrics: phase ("sft", "grpo", or anything a user picks), the optimizer step (1-based), and named values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRecord {
    /// The training phase ("sft", "grpo", ...); one line per phase on a chart.
    pub phase: String,
    /// The optimizer step, counted from 1 within the run.
    pub step: u64,
    /// The named values (loss, reward, learning rate, ...), written next to `phase` and `step`.
    #[serde(flatten, with = "null_as_nan")]
    pub values: BTreeMap<String, f64>,
}

impl MetricRecord {
    /// A record with no values yet.
    pub fn new(phase: impl Into<String>, step: u64) -> Self {
        Self {
            phase: phase.into(),
            step,
            values: BTreeMap::new(),
        }
    }

    /// Sets `key` to `value` (replacing an earlier value); chainable.
    ///
    /// # Panics
    ///
    /// If `key` is `"phase"` or `"step"`: those names are the record's own fields in the JSON line.
    pub fn set(&mut self, key: &str, value: f64) -> &mut Self {
        assert!(
            key != "phase" && key != "step",
            "metric name {key:?} is reserved (it is a field of every record)"
        );
        self.values.insert(key.to_string(), value);
        self
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<f64> {
        self.values.get(key).copied()
    }
}

/// Non-finite values as `null` in JSON, and `null` back as NaN.
mod null_as_nan {
    use std::collections::BTreeMap;

    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        values: &BTreeMap<String, f64>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(values.len()))?;
        for (key, value) in values {
            if value.is_finite() {
                map.serialize_entry(key, value)?;
            } else {
                map.serialize_entry(key, &None::<f64>)?;
            }
        }
        map.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<String, f64>, D::Error> {
        let raw = BTreeMap::<String, Option<f64>>::deserialize(deserializer)?;
        Ok(raw
            .into_iter()
            .map(|(key, value)| (key, value.unwrap_or(f64::NAN)))
            .collect())
    }
}

/// Where metrics go; users implement it for their own sinks (wandb, tensorboard, ...).
pub trait MetricSink {
    /// Takes one step's record.
    fn record(&mut self, record: &MetricRecord) -> Result<()>;

    /// Makes what was recorded durable (a checkpoint calls it before it is taken as done).
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

impl<S: MetricSink + ?Sized> MetricSink for Box<S> {
    fn record(&mut self, record: &MetricRecord) -> Result<()> {
        (**self).record(record)
    }

    fn flush(&mut self) -> Result<()> {
        (**self).flush()
    }
}

impl<S: MetricSink + ?Sized> MetricSink for &mut S {
    fn record(&mut self, record: &MetricRecord) -> Result<()> {
        (**self).record(record)
    }

    fn flush(&mut self) -> Result<()> {
        (**self).flush()
    }
}

/// Writes one JSON line per record, flushed (and fsync'd at `flush`) so a killed run loses at most the line being written.
#[derive(Debug)]
pub struct JsonlSink {
    path: PathBuf,
    file: File,
}

impl JsonlSink {
    /// Creates (truncates) `path`, and its folder if missing.
    pub fn create(path: &Path) -> Result<Self> {
        create_parent(path)?;
        let file = File::create(path).map_err(|e| io_error(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Opens `path` to continue a run resumed from a checkpoint taken after `step`: lines with a step above `step`
    /// (written after that checkpoint by the run that was killed) and a torn last line are dropped — the file is
    /// rewritten atomically (temp file in the same folder + rename) — then appends.
    ///
    /// Every line counts, whatever its phase: this is for a file that holds one run's step counter. For a file
    /// shared by phases that count steps each from 1 (SFT then GRPO), use [`JsonlSink::resume_phase`]. A
    /// missing file is created. A bad line other than the last is an error, and the file is left as it was.
    pub fn resume(path: &Path, step: u64) -> Result<Self> {
        Self::resume_filtered(path, None, step)
    }

    /// Like [`JsonlSink::resume`], but drops only the lines of `phase` with a step above `step` (and a torn
    /// last line); other phases' lines are kept.
    pub fn resume_phase(path: &Path, phase: &str, step: u64) -> Result<Self> {
        Self::resume_filtered(path, Some(phase), step)
    }

    fn resume_filtered(path: &Path, phase: Option<&str>, step: u64) -> Result<Self> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Self::create(path),
            Err(e) => return Err(io_error(path, e)),
        };
        let parsed = parse_lines(path, &bytes)?;
        let keep = |line: &Line<'_>| {
            line.record.step <= step || phase.is_some_and(|p| line.record.phase != p)
        };
        let dropped = parsed.lines.iter().any(|line| !keep(line));
        if dropped || parsed.needs_rewrite {
            let mut kept = Vec::with_capacity(bytes.len());
            for line in parsed.lines.iter().filter(|line| keep(line)) {
                kept.extend_from_slice(line.raw);
                kept.push(b'\n');
            }
            write_atomically(path, &kept)?;
        }
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| io_error(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl MetricSink for JsonlSink {
    fn record(&mut self, record: &MetricRecord) -> Result<()> {
        let mut line = serde_json::to_string(record)
            .map_err(|e| RlError::Metrics(format!("step {}: {e}", record.step)))?;
        line.push('\n');
        // One write of the whole line, no user-space buffer: the OS has it as soon as this returns.
        self.file
            .write_all(line.as_bytes())
            .map_err(|e| io_error(&self.path, e))
    }

    fn flush(&mut self) -> Result<()> {
        self.file.sync_data().map_err(|e| io_error(&self.path, e))
    }
}

/// Reads a metrics file (tolerates a torn last line; any other bad line is an error naming the line number).
///
/// Blank lines are skipped.
pub fn read_jsonl(path: &Path) -> Result<Vec<MetricRecord>> {
    let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
    Ok(parse_lines(path, &bytes)?
        .lines
        .into_iter()
        .map(|line| line.record)
        .collect())
}

/// Fan-out to several sinks.
///
/// Every sink gets every record (and every flush) even when one of them fails; the first error is returned.
pub struct Sinks(pub Vec<Box<dyn MetricSink>>);

impl MetricSink for Sinks {
    fn record(&mut self, record: &MetricRecord) -> Result<()> {
        let mut first = Ok(());
        for sink in &mut self.0 {
            let result = sink.record(record);
            if first.is_ok() {
                first = result;
            }
        }
        first
    }

    fn flush(&mut self) -> Result<()> {
        let mut first = Ok(());
        for sink in &mut self.0 {
            let result = sink.flush();
            if first.is_ok() {
                first = result;
            }
        }
        first
    }
}

/// Keeps records in memory (tests, notebooks).
#[derive(Debug, Default)]
pub struct MemorySink {
    /// The records, in the order recorded.
    pub records: Vec<MetricRecord>,
}

impl MetricSink for MemorySink {
    fn record(&mut self, record: &MetricRecord) -> Result<()> {
        self.records.push(record.clone());
        Ok(())
    }
}

/// One good line of a metrics file: its bytes (no newline) and its record.
struct Line<'a> {
    raw: &'a [u8],
    record: MetricRecord,
}

struct Parsed<'a> {
    lines: Vec<Line<'a>>,
    /// The file does not end with a newline (a torn line, or a last line without its newline), or has blank
    /// lines: appending needs it rewritten first.
    needs_rewrite: bool,
}

fn parse_lines<'a>(path: &Path, bytes: &'a [u8]) -> Result<Parsed<'a>> {
    let mut pieces: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    // After the last newline: empty when the file ends with one, else a line that may be torn.
    let tail = pieces.pop().unwrap_or_default();
    let mut lines = Vec::with_capacity(pieces.len());
    let mut needs_rewrite = !tail.is_empty();
    for (index, piece) in pieces.into_iter().enumerate() {
        let raw = trim_ascii(piece);
        if raw.is_empty() {
            needs_rewrite = true;
            continue;
        }
        let record = serde_json::from_slice(raw).map_err(|e| RlError::MetricsLine {
            path: path.to_path_buf(),
            line: index + 1,
            message: e.to_string(),
        })?;
        lines.push(Line { raw, record });
    }
    let raw = trim_ascii(tail);
    if !raw.is_empty() {
        // A complete record that only lacks its newline is kept; anything else there is a torn write.
        if let Ok(record) = serde_json::from_slice(raw) {
            lines.push(Line { raw, record });
        }
    }
    Ok(Parsed {
        lines,
        needs_rewrite,
    })
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

pub(crate) fn io_error(path: &Path, source: std::io::Error) -> RlError {
    RlError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn create_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))
        }
        _ => Ok(()),
    }
}

/// Replaces `path` with `bytes` so that a reader (or a crash) sees the old file or the new one, never a part:
/// a temporary file in the same folder, fsync'd, then renamed over `path`. Creates the folder if missing.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    create_parent(path)?;
    let name = path
        .file_name()
        .ok_or_else(|| RlError::Metrics(format!("{} names no file", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    // Unique per process and call, so concurrent writers never share a temporary file.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tmp_name.push(format!(".tmp{}-{n}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let written = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error(&tmp, e));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error(path, e));
    }
    // Make the rename itself durable where the OS allows syncing a folder (best effort).
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(dir) = File::open(dir)
    {
        let _ = dir.sync_all();
    }
    Ok(())
}
