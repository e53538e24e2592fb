//! Loaders, one module per layout, each returning a [`Benchmark`]. `docs/benchmarks.md` describes every
//! layout with an example record.
//!
//! | layout | module | reads |
//! |---|---|---|
//! | official eval files | [`official`] | one parquet (feature `parquet`), JSON or JSONL file per benchmark: `qid`, `question`, `image` (list of paths), `answer`, `is_video` |
//! | V* Bench | [`vstar`] | `test_questions.jsonl` (`image`, `text`, `category`, `question_id`, `label`) beside the image folders |
//! | TallyQA | [`tallyqa`] | `test.json` (`image`, `question`, `answer`, `issimple`, `data_source`, ...); `issimple: false` is TallyQA-Complex |
//! | InfographicsVQA | [`infovqa`] | `infographicsVQA_val_v1.0_withQT.json` (`data`: `questionId`, `question`, `image_local_name`, `answers`) and the image folder |
//! | MVBench | [`mvbench`] | `json/<task>.json` (`video`, `question`, `candidates`, `answer`) and `video/<source>/...` files or frame folders |
//! | HR-Bench 4K / 8K | [`hrbench`] | `hr_bench_4k.tsv` / `hr_bench_8k.tsv` (`index`, `question`, `answer`, `A`..`D`, `category`, `image` as base64), or JSONL with image paths |
//!
//! Every loader reads under a file size cap, checks that media paths stay inside the root (no absolute
//! paths, `..` or symlinks) and, with [`LoadOptions::check_media`], that the files exist. A malformed record
//! or a missing media file is an error naming the file and the record's line (JSONL), element (JSON) or row
//! (parquet, TSV); with [`OnError::Skip`] such records are skipped and listed in [`Benchmark::skipped`].

use std::path::{Path, PathBuf};

use pixel_traces::{DatasetRoot, Location, OnError};

use crate::error::{EvalError, Result, io};
use crate::item::{Benchmark, EvalItem, Media};

pub mod hrbench;
pub mod infovqa;
pub mod mvbench;
pub mod official;
pub mod tallyqa;
pub mod vstar;

/// The largest record file a loader reads: 1 GiB (as `pixel-traces`). HR-Bench's TSV files hold their images
/// and are read line by line, never whole.
pub const MAX_RECORD_FILE_BYTES: u64 = pixel_traces::DEFAULT_MAX_RECORD_FILE_BYTES;

/// How loaders treat bad records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Stop at the first malformed record ([`OnError::Fail`], the default: a benchmark with a record
    /// missing is another benchmark) or skip it ([`OnError::Skip`], listed in [`Benchmark::skipped`]).
    pub on_error: OnError,
    /// Check while loading that every media file exists (default true), so a missing file is reported with
    /// its record before any inference.
    pub check_media: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            on_error: OnError::Fail,
            check_media: true,
        }
    }
}

/// Which layout to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// An official eval file (`.parquet`, `.json` or `.jsonl`), media relative to the file's folder.
    Official,
    /// V* Bench: the folder holding `test_questions.jsonl`, or the file.
    VStar,
    /// TallyQA: `test.json` (or the folder holding it); images relative to its folder.
    TallyQa(tallyqa::Subset),
    /// InfographicsVQA: the annotation JSON (or a folder holding one `*.json`).
    InfoVqa,
    /// MVBench: the folder holding `json/` and `video/`.
    MvBench,
    /// HR-Bench: `hr_bench_4k.tsv`, `hr_bench_8k.tsv` or a JSONL file.
    HrBench,
}

impl Layout {
    /// The layout named `name`: `official`, `vstar`, `tallyqa` (the complex subset), `tallyqa-simple`,
    /// `tallyqa-all`, `infovqa`, `mvbench`, `hrbench`.
    ///
    /// # Errors
    /// [`EvalError::Invalid`] for another name.
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "official" | "parquet" => Layout::Official,
            "vstar" | "v*" | "vstar-bench" => Layout::VStar,
            "tallyqa" | "tallyqa-complex" => Layout::TallyQa(tallyqa::Subset::Complex),
            "tallyqa-simple" => Layout::TallyQa(tallyqa::Subset::Simple),
            "tallyqa-all" => Layout::TallyQa(tallyqa::Subset::All),
            "infovqa" | "infographicsvqa" => Layout::InfoVqa,
            "mvbench" => Layout::MvBench,
            "hrbench" | "hr-bench" => Layout::HrBench,
            other => {
                return Err(EvalError::Invalid(format!(
                    "unknown layout {other:?} (official, vstar, tallyqa, tallyqa-simple, tallyqa-all, infovqa, mvbench, hrbench)"
                )));
            }
        })
    }
}

/// Loads `path` as `layout`.
///
/// # Errors
/// The layout's loader's errors.
pub fn load(layout: &Layout, path: &Path, options: &LoadOptions) -> Result<Benchmark> {
    match layout {
        Layout::Official => official::load(path, options),
        Layout::VStar => vstar::load(path, options),
        Layout::TallyQa(subset) => tallyqa::load(path, *subset, options),
        Layout::InfoVqa => infovqa::load(path, None, options),
        Layout::MvBench => mvbench::load(path, options),
        Layout::HrBench => hrbench::load(path, options),
    }
}

/// Collects items record by record, applying [`LoadOptions::on_error`].
pub(crate) struct Collector<'a> {
    path: &'a Path,
    options: &'a LoadOptions,
    root: &'a DatasetRoot,
    pub(crate) items: Vec<EvalItem>,
    pub(crate) skipped: Vec<String>,
}

impl<'a> Collector<'a> {
    pub(crate) fn new(path: &'a Path, root: &'a DatasetRoot, options: &'a LoadOptions) -> Self {
        Self {
            path,
            options,
            root,
            items: Vec::new(),
            skipped: Vec::new(),
        }
    }

    /// Adds the item built from the record at `location`, or handles its error.
    pub(crate) fn push(
        &mut self,
        location: Location,
        item: std::result::Result<EvalItem, String>,
    ) -> Result<()> {
        let checked = item.and_then(|item| {
            if self.options.check_media {
                check_media(self.root, &item.media)?;
            }
            Ok(item)
        });
        match checked {
            Ok(item) => self.items.push(item),
            Err(message) => {
                let err = EvalError::Record {
                    path: self.path.to_path_buf(),
                    location,
                    message,
                };
                match self.options.on_error {
                    OnError::Fail => return Err(err),
                    OnError::Skip => self.skipped.push(err.to_string()),
                }
            }
        }
        Ok(())
    }

    /// Handles an error of a whole record (not JSON, wrong shape).
    pub(crate) fn fail(&mut self, location: Location, message: String) -> Result<()> {
        self.push(location, Err(message))
    }

    /// The benchmark of the collected items.
    pub(crate) fn finish(
        self,
        name: impl Into<String>,
        metric: crate::item::Metric,
    ) -> Result<Benchmark> {
        let (root, source) = (self.root.clone(), self.path.to_path_buf());
        let mut bench = Benchmark::new(name, root, source, metric, self.items)?;
        bench.skipped = self.skipped;
        Ok(bench)
    }
}

/// Checks that every media path of `media` resolves under `root` and names an existing file.
pub(crate) fn check_media(root: &DatasetRoot, media: &Media) -> std::result::Result<(), String> {
    for rel in media.paths() {
        let path = root.resolve(rel).map_err(|e| e.to_string())?;
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => return Err(format!("media {rel:?} is not a file ({})", path.display())),
            Err(_) => {
                return Err(format!(
                    "media file {rel:?} is missing ({})",
                    path.display()
                ));
            }
        }
    }
    Ok(())
}

/// Reads a whole JSON file under [`MAX_RECORD_FILE_BYTES`].
pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value> {
    let bytes = read_capped(path)?;
    serde_json::from_slice(&bytes).map_err(|e| EvalError::Format {
        path: path.to_path_buf(),
        message: format!("not JSON: {e}"),
    })
}

/// Reads a whole file under [`MAX_RECORD_FILE_BYTES`].
pub(crate) fn read_capped(path: &Path) -> Result<Vec<u8>> {
    match pixel_traces::load::read_capped(path, MAX_RECORD_FILE_BYTES) {
        Ok(bytes) => Ok(bytes),
        Err(pixel_traces::Error::Io { path, source })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Err(EvalError::Missing {
                path,
                what: "the benchmark file".into(),
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// The lines of a JSONL file, each with its 1-based line number, blank lines left out.
pub(crate) fn jsonl_values(
    path: &Path,
) -> Result<Vec<(Location, std::result::Result<serde_json::Value, String>)>> {
    let bytes = read_capped(path)?;
    let text = String::from_utf8(bytes).map_err(|e| EvalError::Format {
        path: path.to_path_buf(),
        message: format!("not UTF-8: {}", e.utf8_error()),
    })?;
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            (
                Location::Line(i + 1),
                serde_json::from_str(l).map_err(|e| format!("invalid JSON: {e}")),
            )
        })
        .collect())
}

/// `path` if it is a file, else `path/name` (which must exist).
pub(crate) fn file_in(path: &Path, name: &str, what: &str) -> Result<PathBuf> {
    let file = if path.is_dir() {
        path.join(name)
    } else {
        path.to_path_buf()
    };
    if !file.is_file() {
        return Err(EvalError::Missing {
            path: file,
            what: what.to_string(),
        });
    }
    Ok(file)
}

/// The folder of `file` (`.` for a bare file name).
pub(crate) fn parent_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The file stem of `path`, lower-cased.
pub(crate) fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default()
}

/// Takes a required string field out of a record object.
pub(crate) fn take_text(
    map: &mut serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> std::result::Result<String, String> {
    match map.remove(key) {
        Some(v) => crate::item::json_text(&v)
            .ok_or_else(|| format!("`{key}` is not text or a number: {v}")),
        None => Err(format!("missing `{key}`")),
    }
}

/// A record as a JSON object, or the error saying it is not one.
pub(crate) fn object(
    value: serde_json::Value,
) -> std::result::Result<serde_json::Map<String, serde_json::Value>, String> {
    match value {
        serde_json::Value::Object(map) => Ok(map),
        other => Err(format!(
            "record is not a JSON object: {}",
            truncate(&other.to_string(), 80)
        )),
    }
}

/// At most `max` characters of `s`.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// The error of a path that cannot be listed.
pub(crate) fn read_dir(path: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(path).map_err(io(path))?;
    let mut out = Vec::new();
    for entry in entries {
        out.push(entry.map_err(io(path))?.path());
    }
    out.sort();
    Ok(out)
}
