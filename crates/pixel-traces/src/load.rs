//! Reading record files (JSON arrays or JSONL) with per-record error reporting.

use std::path::{Path, PathBuf};

use crate::error::Location;
use crate::paths::DatasetRoot;
use crate::{Error, Result};

/// What to do with a malformed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Skip it, count it, keep going (the error lands in [`Loaded::skipped`]).
    #[default]
    Skip,
    /// Stop at the first malformed record with its error.
    Fail,
}

/// A record type that can be read from one JSON value, with its media paths checked against a root.
pub trait FromRecord: Sized {
    /// Builds the record from its JSON value, or says what is wrong with it.
    ///
    /// # Errors
    /// A message naming the problem (the loader adds file and location).
    fn from_record(
        value: serde_json::Value,
        root: &DatasetRoot,
    ) -> std::result::Result<Self, String>;
}

/// The records read from one file and the ones skipped.
#[derive(Debug)]
pub struct Loaded<T> {
    /// Records in file order, each with its location.
    pub records: Vec<(Location, T)>,
    /// One [`Error::Record`] per skipped record (empty with [`OnError::Fail`]).
    pub skipped: Vec<Error>,
}

impl<T> Loaded<T> {
    /// Number of skipped records.
    pub fn skipped_count(&self) -> usize {
        self.skipped.len()
    }

    /// The records without their locations.
    pub fn into_records(self) -> Vec<T> {
        self.records.into_iter().map(|(_, r)| r).collect()
    }
}

/// Reads `path` (a JSON array, or JSONL with one object per non-empty line), building a `T` per record.
///
/// A file whose first non-blank character is `[` is read as a JSON array; anything else as JSONL.
///
/// # Errors
/// [`Error::Io`] if the file cannot be read, [`Error::FileFormat`] if a JSON array file is not valid JSON,
/// and with [`OnError::Fail`] the first [`Error::Record`].
pub fn load_records<T: FromRecord>(
    path: &Path,
    root: &DatasetRoot,
    on_error: OnError,
) -> Result<Loaded<T>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_records(&text, path, root, on_error)
}

/// As [`load_records`], from text already in memory (`path` is only used in error messages).
///
/// # Errors
/// As [`load_records`].
pub fn parse_records<T: FromRecord>(
    text: &str,
    path: &Path,
    root: &DatasetRoot,
    on_error: OnError,
) -> Result<Loaded<T>> {
    let mut loaded = Loaded {
        records: Vec::new(),
        skipped: Vec::new(),
    };
    let record_error = |location, message| Error::Record {
        path: PathBuf::from(path),
        location,
        message,
    };
    let mut handle = |location: Location,
                      parsed: std::result::Result<serde_json::Value, String>|
     -> Result<()> {
        match parsed.and_then(|value| T::from_record(value, root)) {
            Ok(record) => loaded.records.push((location, record)),
            Err(message) => {
                let err = record_error(location, message);
                match on_error {
                    OnError::Fail => return Err(err),
                    OnError::Skip => loaded.skipped.push(err),
                }
            }
        }
        Ok(())
    };
    if text.trim_start().starts_with('[') {
        let values: Vec<serde_json::Value> =
            serde_json::from_str(text).map_err(|e| Error::FileFormat {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        for (i, value) in values.into_iter().enumerate() {
            handle(Location::Index(i), Ok(value))?;
        }
    } else {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let parsed = serde_json::from_str::<serde_json::Value>(line)
                .map_err(|e| format!("invalid JSON: {e}"));
            handle(Location::Line(i + 1), parsed)?;
        }
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::official::RlRecord;

    #[test]
    fn files_are_read_and_file_level_problems_are_typed() {
        let dir = tempfile::tempdir().unwrap();
        let root = DatasetRoot::new(dir.path());
        let good = dir.path().join("rl.jsonl");
        std::fs::write(
            &good,
            "{\"qid\": 1, \"question\": \"q\", \"answer\": \"a\"}\n\n{\"qid\": 2}\n",
        )
        .unwrap();
        let loaded = load_records::<RlRecord>(&good, &root, OnError::Skip).unwrap();
        assert_eq!((loaded.records.len(), loaded.skipped_count()), (1, 1));
        assert_eq!(loaded.records[0].0, Location::Line(1));
        let msg = loaded.skipped[0].to_string();
        assert!(
            msg.contains("rl.jsonl, line 3: missing `question`"),
            "{msg}"
        );

        let missing = load_records::<RlRecord>(&dir.path().join("none.json"), &root, OnError::Skip)
            .unwrap_err();
        assert!(matches!(missing, Error::Io { .. }), "{missing}");
        let broken = dir.path().join("broken.json");
        std::fs::write(&broken, "[{\"qid\": 1,").unwrap();
        let err = load_records::<RlRecord>(&broken, &root, OnError::Skip).unwrap_err();
        assert!(matches!(err, Error::FileFormat { .. }), "{err}");
    }
}
