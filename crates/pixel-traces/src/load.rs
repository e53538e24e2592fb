//! Reading record files (JSON arrays or JSONL) with per-record error reporting, and reading any file
//! under a size cap.

use std::fs::File;
use std::io::Read;
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

/// The largest record file [`load_records`] reads: 1 GiB.
///
/// A record file is held in memory whole while it is parsed (and the records built from it take a few
/// times its size), so the cap stops a wrong path (a device, a dump, a file still being written) from
/// exhausting memory. The official SFT and RL files are a small fraction of it; 1 GiB is also the most
/// `pixel-ops`' image decoder allocates by default. [`load_records_with_limit`] takes another cap.
pub const DEFAULT_MAX_RECORD_FILE_BYTES: u64 = 1 << 30;

/// Reads `path` (a JSON array, or JSONL with one object per non-empty line), building a `T` per record.
///
/// A file whose first non-blank character is `[` is read as a JSON array; anything else as JSONL. Files
/// over [`DEFAULT_MAX_RECORD_FILE_BYTES`] are refused ([`load_records_with_limit`] takes another cap).
///
/// # Errors
/// [`Error::Io`] if the file cannot be read, [`Error::FileTooLarge`] if it is over the cap,
/// [`Error::FileFormat`] if it is not UTF-8 or a JSON array file is not valid JSON, and with
/// [`OnError::Fail`] the first [`Error::Record`].
pub fn load_records<T: FromRecord>(
    path: &Path,
    root: &DatasetRoot,
    on_error: OnError,
) -> Result<Loaded<T>> {
    load_records_with_limit(path, root, on_error, DEFAULT_MAX_RECORD_FILE_BYTES)
}

/// As [`load_records`], refusing files over `max_bytes` instead of [`DEFAULT_MAX_RECORD_FILE_BYTES`].
///
/// # Errors
/// As [`load_records`], with [`Error::FileTooLarge`] naming `max_bytes`.
pub fn load_records_with_limit<T: FromRecord>(
    path: &Path,
    root: &DatasetRoot,
    on_error: OnError,
    max_bytes: u64,
) -> Result<Loaded<T>> {
    let bytes = read_capped(path, max_bytes)?;
    let text = String::from_utf8(bytes).map_err(|e| Error::FileFormat {
        path: path.to_path_buf(),
        message: format!("not UTF-8: {}", e.utf8_error()),
    })?;
    parse_records(&text, path, root, on_error)
}

/// Reads the whole file at `path`, refusing one of more than `max_bytes`.
///
/// The size is checked twice: from the opened file's metadata before reading (a regular file over the
/// cap is refused without reading it), and while reading, which stops after `max_bytes + 1` bytes, so a
/// file that grows meanwhile, a device such as `/dev/zero` or a pipe cannot make it read or allocate
/// more than the cap.
///
/// # Errors
/// [`Error::Io`] if the file cannot be opened or read, [`Error::FileTooLarge`] if it is over the cap.
pub fn read_capped(path: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    let file = File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_file_capped(file, path, max_bytes)
}

/// [`read_capped`] of a file already open (`path` names it in errors).
pub(crate) fn read_file_capped(file: File, path: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let too_large = || Error::FileTooLarge {
        path: path.to_path_buf(),
        limit: max_bytes,
    };
    // Metadata of the open file, not of the path: the file checked is the file read.
    let meta = file.metadata().map_err(io)?;
    if meta.is_file() && meta.len() > max_bytes {
        return Err(too_large());
    }
    // The reported length is only a hint (0 for devices and pipes); the cap bounds the reservation.
    let hint = usize::try_from(meta.len().min(max_bytes)).unwrap_or(0);
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(hint)
        .map_err(|_| io(std::io::ErrorKind::OutOfMemory.into()))?;
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large());
    }
    Ok(bytes)
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

    #[test]
    fn files_over_the_cap_are_refused_naming_the_file_and_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let root = DatasetRoot::new(dir.path());
        let path = dir.path().join("rl.jsonl");
        let line = "{\"qid\": 1, \"question\": \"q\", \"answer\": \"a\"}\n";
        std::fs::write(&path, line).unwrap();
        let size = line.len() as u64;
        let at_cap =
            load_records_with_limit::<RlRecord>(&path, &root, OnError::Fail, size).unwrap();
        assert_eq!(at_cap.records.len(), 1);
        let err =
            load_records_with_limit::<RlRecord>(&path, &root, OnError::Fail, size - 1).unwrap_err();
        assert!(
            matches!(&err, Error::FileTooLarge { path: p, limit } if p == &path && *limit == size - 1),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("rl.jsonl") && msg.contains(&(size - 1).to_string()),
            "{msg}"
        );
        assert_eq!(DEFAULT_MAX_RECORD_FILE_BYTES, 1 << 30);
    }

    #[test]
    fn a_file_that_grew_after_it_was_opened_is_held_to_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("growing.jsonl");
        std::fs::write(&path, b"0123456789").unwrap();
        let file = File::open(&path).unwrap();
        std::fs::write(&path, vec![b'x'; 4096]).unwrap();
        let err = read_file_capped(file, &path, 100).unwrap_err();
        assert!(
            matches!(err, Error::FileTooLarge { limit: 100, .. }),
            "{err}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn an_endless_device_is_cut_off_at_the_cap() {
        // `/dev/zero` reports a length of 0 and never ends: only the bounded read stops it.
        let zero = Path::new("/dev/zero");
        assert_eq!(std::fs::metadata(zero).unwrap().len(), 0);
        let err = read_capped(zero, 1 << 16).unwrap_err();
        assert!(
            matches!(err, Error::FileTooLarge { limit: 65536, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_record_file_that_is_not_utf8_is_a_format_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.jsonl");
        std::fs::write(&path, b"{\"qid\": \"\xff\"}\n").unwrap();
        let err = load_records::<RlRecord>(&path, &DatasetRoot::new(dir.path()), OnError::Skip)
            .unwrap_err();
        assert!(matches!(err, Error::FileFormat { .. }), "{err}");
    }
}
