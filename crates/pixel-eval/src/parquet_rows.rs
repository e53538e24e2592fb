//! Reading the rows of a parquet file as JSON objects (feature `parquet`), with the `parquet` crate's record
//! reader: no arrow. Lists become JSON arrays, strings strings, integers numbers, binary columns base64.

use std::fs::File;
use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use pixel_traces::Location;

use crate::error::{EvalError, Result, io};
use crate::loaders::MAX_RECORD_FILE_BYTES;

/// Every row of the parquet file at `path`, as `(Location::Index(row), Ok(object))`.
///
/// # Errors
/// [`EvalError::Missing`] / [`EvalError::Io`] if the file cannot be opened, [`EvalError::Format`] if it is
/// over [`MAX_RECORD_FILE_BYTES`], is not a parquet file, uses a codec this build lacks (zstd needs the
/// `parquet-zstd` feature) or a row cannot be decoded (the error names the row).
pub(crate) fn read_rows(
    path: &Path,
) -> Result<Vec<(Location, std::result::Result<serde_json::Value, String>)>> {
    let file = File::open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            EvalError::Missing {
                path: path.to_path_buf(),
                what: "the benchmark file".into(),
            }
        } else {
            EvalError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    let len = file.metadata().map_err(io(path))?.len();
    if len > MAX_RECORD_FILE_BYTES {
        return Err(EvalError::Format {
            path: path.to_path_buf(),
            message: format!("{len} bytes, over the limit of {MAX_RECORD_FILE_BYTES}"),
        });
    }
    let format = |message: String| EvalError::Format {
        path: path.to_path_buf(),
        message,
    };
    let reader =
        SerializedFileReader::new(file).map_err(|e| format(format!("not a parquet file: {e}")))?;
    let rows = reader
        .get_row_iter(None)
        .map_err(|e| format(format!("cannot read rows: {e}")))?;
    let mut out = Vec::new();
    for (i, row) in rows.enumerate() {
        let row = row.map_err(|e| format(format!("row {i}: {e}")))?;
        out.push((Location::Index(i), Ok(row.to_json_value())));
    }
    Ok(out)
}
