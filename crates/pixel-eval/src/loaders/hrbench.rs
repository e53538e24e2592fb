//! HR-Bench 4K / 8K (`DreamMr/HR-Bench`): `hr_bench_4k.tsv` and `hr_bench_8k.tsv`, 800 multiple-choice
//! questions each, the image inside the row as base64 (the VLMEvalKit TSV format). Columns:
//!
//! `index`, `question`, `answer` (the letter), `A`, `B`, `C`, `D` (the options), `category` (`single` or
//! `cross`: one object or several), `cycle_category`, `image` (base64 JPEG).
//!
//! The file is read line by line; each image stays in the file and is read (and decoded) only when its
//! question runs ([`crate::ImageRef::Embedded`]), so an 8K benchmark is never held in memory. Fields may be
//! quoted as pandas writes them (`"` around a field holding a tab, a quote or a line break, quotes doubled).
//!
//! The same questions as JSONL (one object per line: `index` or `qid`, `question`, `answer`, the options as
//! `A`..`D` or an `options` list, `category`, `image` a path relative to the file's folder) are read too.
//! The question is written with its options as `(A) ...` lines.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use pixel_traces::{DatasetRoot, Location};

use super::{Collector, LoadOptions, jsonl_values, object, parent_dir, stem, take_text};
use crate::error::{EvalError, Result, io};
use crate::item::{Benchmark, EvalItem, ImageRef, Media, Metric, json_text, question_with_options};

/// Option columns, in order.
const OPTION_COLUMNS: [&str; 8] = ["A", "B", "C", "D", "E", "F", "G", "H"];

/// The longest TSV record read (one row with its image): 512 MiB.
pub const MAX_RECORD_BYTES: u64 = 512 << 20;

/// Loads an HR-Bench TSV or JSONL file.
///
/// # Errors
/// [`EvalError::Missing`] / [`EvalError::Io`] if the file cannot be read, [`EvalError::Format`] for a TSV
/// without the required columns, an unterminated quote or a row over [`MAX_RECORD_BYTES`],
/// [`EvalError::Record`] naming the line of a malformed row.
pub fn load(path: &Path, options: &LoadOptions) -> Result<Benchmark> {
    if !path.is_file() {
        return Err(EvalError::Missing {
            path: path.to_path_buf(),
            what: "the HR-Bench TSV or JSONL file".into(),
        });
    }
    let root = DatasetRoot::new(parent_dir(path));
    let stem = stem(path);
    let name = if stem.contains("4k") {
        "hrbench4k"
    } else if stem.contains("8k") {
        "hrbench8k"
    } else {
        "hrbench"
    };
    let mut collector = Collector::new(path, &root, options);
    let is_jsonl = path
        .extension()
        .is_some_and(|e| e == "jsonl" || e == "json");
    if is_jsonl {
        for (location, value) in jsonl_values(path)? {
            collector.push(location, value.and_then(jsonl_item))?;
        }
    } else {
        read_tsv(path, &mut collector)?;
    }
    collector.finish(name, Metric::Choice)
}

/// One field of a TSV record: its text, and where its content starts in the file and how long it is.
struct Field {
    text: String,
    offset: u64,
    len: u64,
}

fn read_tsv(path: &Path, collector: &mut Collector<'_>) -> Result<()> {
    let file = File::open(path).map_err(io(path))?;
    let mut reader = BufReader::new(file);
    let format = |message: String| EvalError::Format {
        path: path.to_path_buf(),
        message,
    };
    let mut offset = 0u64;
    let mut line = 1usize;
    let Some((header, lines)) = next_record(&mut reader, &mut offset, path)? else {
        return Err(format("empty file".into()));
    };
    line += lines;
    let names: Vec<String> = header.into_iter().map(|f| f.text).collect();
    let column = |name: &str| names.iter().position(|n| n == name);
    let (Some(question), Some(answer), Some(image)) =
        (column("question"), column("answer"), column("image"))
    else {
        return Err(format(format!(
            "an HR-Bench TSV needs the columns `question`, `answer` and `image`; it has {names:?}"
        )));
    };
    let index = column("index");
    let category = column("category");
    let option_columns: Vec<usize> = OPTION_COLUMNS.iter().filter_map(|c| column(c)).collect();
    let mut row = 0usize;
    while let Some((fields, lines)) = next_record(&mut reader, &mut offset, path)? {
        let location = Location::Line(line);
        line += lines;
        if fields.len() == 1 && fields[0].text.trim().is_empty() {
            continue;
        }
        let item = tsv_item(
            &fields,
            &names,
            [question, answer, image],
            index,
            category,
            &option_columns,
            row,
            path,
        );
        collector.push(location, item)?;
        row += 1;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn tsv_item(
    fields: &[Field],
    names: &[String],
    [question, answer, image]: [usize; 3],
    index: Option<usize>,
    category: Option<usize>,
    option_columns: &[usize],
    row: usize,
    path: &Path,
) -> std::result::Result<EvalItem, String> {
    if fields.len() != names.len() {
        return Err(format!(
            "{} fields, the header has {}",
            fields.len(),
            names.len()
        ));
    }
    let text = |i: usize| fields[i].text.trim().to_string();
    let options: Vec<String> = option_columns
        .iter()
        .map(|&c| text(c))
        .take_while(|o| !o.is_empty())
        .collect();
    let answer = text(answer);
    if answer.is_empty() {
        return Err("empty `answer`".into());
    }
    let question = text(question);
    if question.is_empty() {
        return Err("empty `question`".into());
    }
    let image = &fields[image];
    if image.len == 0 {
        return Err("empty `image`".into());
    }
    let qid = index.map_or_else(|| row.to_string(), text);
    let mut extra = serde_json::Map::new();
    for (i, name) in names.iter().enumerate() {
        let known = ["index", "question", "answer", "image", "category"];
        if !known.contains(&name.as_str()) && !OPTION_COLUMNS.contains(&name.as_str()) {
            extra.insert(name.clone(), serde_json::Value::String(text(i)));
        }
    }
    Ok(EvalItem {
        qid,
        question: question_with_options(&question, &options),
        media: Media::Images(vec![ImageRef::Embedded {
            file: path.to_path_buf(),
            offset: image.offset,
            len: image.len,
        }]),
        answers: vec![answer],
        options,
        category: category.map(text).filter(|c| !c.is_empty()),
        is_video: false,
        extra,
    })
}

/// Reads the next TSV record (one line, or several when a quoted field holds line breaks) at `*offset`,
/// advancing it. Returns the fields and the number of lines read, `None` at the end of the file.
fn next_record(
    reader: &mut impl BufRead,
    offset: &mut u64,
    path: &Path,
) -> Result<Option<(Vec<Field>, usize)>> {
    let start = *offset;
    let mut buf: Vec<u8> = Vec::new();
    let mut lines = 0usize;
    loop {
        let limit = MAX_RECORD_BYTES + 1 - buf.len() as u64;
        let n = std::io::Read::take(&mut *reader, limit)
            .read_until(b'\n', &mut buf)
            .map_err(io(path))?;
        *offset += n as u64;
        if n == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            break;
        }
        lines += 1;
        if buf.len() as u64 > MAX_RECORD_BYTES {
            return Err(EvalError::Format {
                path: path.to_path_buf(),
                message: format!("a record at byte {start} is over {MAX_RECORD_BYTES} bytes"),
            });
        }
        // A record ends at a line break outside quotes: an even number of quotes so far.
        if buf.iter().filter(|&&b| b == b'"').count() % 2 == 0 || !buf.ends_with(b"\n") {
            break;
        }
    }
    while buf.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
        buf.pop();
    }
    let fields = split_fields(&buf, start).map_err(|message| EvalError::Format {
        path: path.to_path_buf(),
        message: format!("record at byte {start}: {message}"),
    })?;
    Ok(Some((fields, lines.max(1))))
}

/// Splits one record into fields, unquoting quoted ones; offsets are file offsets (`start` + position).
fn split_fields(record: &[u8], start: u64) -> std::result::Result<Vec<Field>, String> {
    let mut fields = Vec::new();
    let mut i = 0;
    loop {
        if record.get(i) == Some(&b'"') {
            let mut text = Vec::new();
            let mut j = i + 1;
            loop {
                match record.get(j) {
                    None => return Err("unterminated quoted field".into()),
                    Some(b'"') if record.get(j + 1) == Some(&b'"') => {
                        text.push(b'"');
                        j += 2;
                    }
                    Some(b'"') => break,
                    Some(&b) => {
                        text.push(b);
                        j += 1;
                    }
                }
            }
            fields.push(Field {
                text: String::from_utf8_lossy(&text).into_owned(),
                offset: start + i as u64 + 1,
                len: (j - i - 1) as u64,
            });
            i = j + 1;
            match record.get(i) {
                None => break,
                Some(b'\t') => i += 1,
                Some(_) => return Err("text after a closing quote".into()),
            }
        } else {
            let end = record[i..]
                .iter()
                .position(|&b| b == b'\t')
                .map_or(record.len(), |p| i + p);
            fields.push(Field {
                text: String::from_utf8_lossy(&record[i..end]).into_owned(),
                offset: start + i as u64,
                len: (end - i) as u64,
            });
            if end == record.len() {
                break;
            }
            i = end + 1;
        }
    }
    Ok(fields)
}

fn jsonl_item(value: serde_json::Value) -> std::result::Result<EvalItem, String> {
    let mut map = object(value)?;
    let question = take_text(&mut map, "question")?;
    let answer = take_text(&mut map, "answer")?;
    let image = take_text(&mut map, "image")?;
    if image.len() > 4096 {
        return Err("`image` must be a path in JSONL (base64 images belong in the TSV)".into());
    }
    let qid = match map.remove("qid").or_else(|| map.remove("index")) {
        Some(v) => json_text(&v).ok_or_else(|| format!("the qid is not text or a number: {v}"))?,
        None => return Err("missing `index` / `qid`".into()),
    };
    let options: Vec<String> = match map.remove("options") {
        Some(serde_json::Value::Array(list)) => list.iter().filter_map(json_text).collect(),
        _ => OPTION_COLUMNS
            .iter()
            .map_while(|c| map.remove(*c).as_ref().and_then(json_text))
            .collect(),
    };
    let category = map.remove("category").as_ref().and_then(json_text);
    Ok(EvalItem {
        qid,
        question: question_with_options(&question, &options),
        media: Media::Images(vec![ImageRef::File(image)]),
        answers: vec![answer],
        options,
        category,
        is_video: false,
        extra: map,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields_and_offsets() {
        let record = b"1\t\"say \"\"hi\"\"\tnow\"\tQUJD";
        let fields = split_fields(record, 100).unwrap();
        let texts: Vec<&str> = fields.iter().map(|f| f.text.as_str()).collect();
        assert_eq!(texts, ["1", "say \"hi\"\tnow", "QUJD"]);
        assert_eq!((fields[2].offset, fields[2].len), (100 + 19, 4));
        assert_eq!(&record[19..23], b"QUJD");
        assert!(split_fields(b"\"open", 0).is_err());
        assert!(split_fields(b"\"a\"b", 0).is_err());
        let empty = split_fields(b"a\t\tb", 0).unwrap();
        assert_eq!(empty[1].text, "");
    }
}
