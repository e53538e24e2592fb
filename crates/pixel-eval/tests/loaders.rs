//! Every loader on a small sample folder written by the test, the errors that name a file and record, and
//! the embedded images of HR-Bench read back through the image pipeline.

mod common;

use std::path::Path;

use base64::Engine as _;
use common::{png, png_bytes, vstar_folder, write_lines};
use pixel_eval::loaders::{self, mvbench, tallyqa};
use pixel_eval::media::load_image;
use pixel_eval::{
    EvalError, ImageRef, Layout, LoadOptions, Media, MediaPipeline, Metric, OfficialPipeline,
};
use pixel_traces::OnError;
use serde_json::json;

fn skip() -> LoadOptions {
    LoadOptions {
        on_error: OnError::Skip,
        ..LoadOptions::default()
    }
}

#[test]
fn vstar_questions_options_and_categories() {
    let dir = tempfile::tempdir().unwrap();
    vstar_folder(dir.path(), 4);
    let bench = loaders::load(&Layout::VStar, dir.path(), &LoadOptions::default()).unwrap();
    assert_eq!(
        (bench.name.as_str(), bench.len(), bench.metric),
        ("vstar", 4, Metric::Choice)
    );
    let item = &bench.items[1];
    assert_eq!(item.qid, "1");
    assert_eq!(item.answers, ["B"]);
    assert_eq!(item.options, ["red", "blue", "green", "white"]);
    assert_eq!(item.category.as_deref(), Some("direct_attributes"));
    assert!(
        !item.question.contains("Answer with the option's letter"),
        "{}",
        item.question
    );
    assert!(item.question.ends_with("(D) white"));
    assert_eq!(
        item.media,
        Media::Images(vec![ImageRef::File("direct_attributes/img_1.png".into())])
    );
    // The file itself works as well as its folder.
    let again = loaders::vstar::load(
        &dir.path().join("test_questions.jsonl"),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(again.items, bench.items);
}

#[test]
fn a_missing_image_or_bad_line_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    vstar_folder(dir.path(), 2);
    let file = dir.path().join("test_questions.jsonl");
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str("{\"image\": \"direct_attributes/gone.png\", \"text\": \"q\", \"label\": \"A\", \"question_id\": 9}\n");
    text.push_str("{not json\n");
    std::fs::write(&file, text).unwrap();
    let err = loaders::vstar::load(dir.path(), &LoadOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, EvalError::Record { .. }), "{msg}");
    assert!(
        msg.contains("test_questions.jsonl, line 3") && msg.contains("gone.png"),
        "{msg}"
    );
    let skipped = loaders::vstar::load(dir.path(), &skip()).unwrap();
    assert_eq!(skipped.len(), 2);
    assert_eq!(skipped.skipped.len(), 2);
    assert!(
        skipped.skipped[1].contains("line 4: invalid JSON"),
        "{:?}",
        skipped.skipped
    );
    // A folder without the question file says what it looked for.
    let empty = tempfile::tempdir().unwrap();
    let err = loaders::vstar::load(empty.path(), &LoadOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("test_questions.jsonl: missing"),
        "{err}"
    );
}

#[test]
fn paths_leaving_the_root_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_lines(
        &dir.path().join("test_questions.jsonl"),
        &[json!({"image": "../secret.png", "text": "q", "label": "A"}).to_string()],
    );
    let err = loaders::vstar::load(dir.path(), &LoadOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("line 1") && err.to_string().contains(".."),
        "{err}"
    );
}

#[test]
fn tallyqa_complex_subset_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    png(&dir.path().join("VG_100K/1.jpg"), 32, 32);
    png(&dir.path().join("val2014/2.jpg"), 32, 32);
    let questions = json!([
        {"image": "VG_100K/1.jpg", "question": "How many dogs are left of the car?", "answer": 3, "issimple": false, "data_source": "amt", "image_id": 1, "question_id": 11},
        {"image": "val2014/2.jpg", "question": "How many cats?", "answer": 1, "issimple": true, "data_source": "imported_vqa", "image_id": 2, "question_id": 12},
        {"image": "val2014/2.jpg", "question": "How many red cups are on the table?", "answer": 0, "issimple": false, "data_source": "imported_genome", "image_id": 2, "question_id": 13}
    ]);
    std::fs::write(dir.path().join("test.json"), questions.to_string()).unwrap();
    let complex = loaders::load(
        &Layout::TallyQa(tallyqa::Subset::Complex),
        dir.path(),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(complex.name, "tallyqa_complex");
    assert_eq!(complex.metric, Metric::Integer);
    let qids: Vec<&str> = complex.items.iter().map(|i| i.qid.as_str()).collect();
    assert_eq!(qids, ["11", "13"]);
    assert_eq!(complex.items[1].answers, ["0"]);
    assert_eq!(complex.items[0].category.as_deref(), Some("amt"));
    let simple = loaders::load(
        &Layout::from_name("tallyqa-simple").unwrap(),
        dir.path(),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(simple.len(), 1);
    // A question without `issimple` is named by its element.
    std::fs::write(
        dir.path().join("test.json"),
        json!([{"image": "x", "question": "q", "answer": 1}]).to_string(),
    )
    .unwrap();
    let err = tallyqa::load(
        dir.path(),
        tallyqa::Subset::Complex,
        &LoadOptions::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("test.json, element 0: missing `issimple`"),
        "{err}"
    );
}

#[test]
fn infovqa_answer_lists_and_the_test_split() {
    let dir = tempfile::tempdir().unwrap();
    png(&dir.path().join("images/37313.jpeg"), 40, 80);
    let data = json!({"dataset_name": "infographicVQA", "data": [
        {"questionId": 65718, "question": "Which platform?", "image_local_name": "37313.jpeg", "answers": ["pinterest", "Pinterest"], "answer_type": ["single span"]}
    ]});
    let file = dir.path().join("infographicsVQA_val_v1.0_withQT.json");
    std::fs::write(&file, data.to_string()).unwrap();
    let bench = loaders::load(&Layout::InfoVqa, dir.path(), &LoadOptions::default()).unwrap();
    assert_eq!(
        (bench.name.as_str(), bench.metric),
        ("infovqa", Metric::Anls)
    );
    assert_eq!(bench.items[0].answers, ["pinterest", "Pinterest"]);
    assert_eq!(bench.items[0].category.as_deref(), Some("single span"));
    let test =
        json!({"data": [{"questionId": 1, "question": "q", "image_local_name": "37313.jpeg"}]});
    std::fs::write(&file, test.to_string()).unwrap();
    let err = loaders::infovqa::load(&file, None, &LoadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("element 0: no `answers`"), "{err}");
    std::fs::write(&file, "{\"data\": 3}").unwrap();
    let err = loaders::infovqa::load(&file, None, &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, EvalError::Format { .. }), "{err}");
}

#[test]
fn mvbench_videos_and_frame_folders() {
    let dir = tempfile::tempdir().unwrap();
    let json_dir = dir.path().join("json");
    std::fs::create_dir_all(&json_dir).unwrap();
    std::fs::create_dir_all(dir.path().join("video/ssv2_video")).unwrap();
    std::fs::write(
        dir.path().join("video/ssv2_video/42.webm"),
        b"not decoded at load time",
    )
    .unwrap();
    for k in 0..40 {
        png(
            &dir.path()
                .join(format!("video/tvqa/frames_fps3_hq/clip1/{:05}.jpg", k + 1)),
            16,
            16,
        );
    }
    std::fs::write(
        json_dir.join("action_antonym.json"),
        json!([{"video": "42.webm", "question": "What happens?", "candidates": ["Not sure", "Piling up", "Scattering"], "answer": "Piling up"}]).to_string(),
    )
    .unwrap();
    std::fs::write(
        json_dir.join("episodic_reasoning.json"),
        json!([{"video": "clip1", "question": "Who enters?", "candidates": ["Ann", "Bo"], "answer": "Bo", "start": 2.0, "end": 7.0}]).to_string(),
    )
    .unwrap();
    let bench = mvbench::load_tasks(
        dir.path(),
        &["Action Antonym", "Episodic Reasoning"],
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!((bench.len(), bench.metric), (2, Metric::Choice));
    let video = &bench.items[0];
    assert_eq!(video.qid, "action_antonym_0");
    assert_eq!(video.answers, ["B"]);
    assert_eq!(
        video.question,
        "What happens?\n(A) Not sure\n(B) Piling up\n(C) Scattering"
    );
    assert_eq!(
        video.media,
        Media::VideoFile {
            path: "ssv2_video/42.webm".into(),
            clip: None
        }
    );
    let frames = &bench.items[1];
    let Media::Frames(list) = &frames.media else {
        panic!("{:?}", frames.media)
    };
    assert_eq!(list.len(), 16);
    // Seconds 2..7 at 3 fps are frames 6..21 (0-based).
    assert_eq!(list[0], "tvqa/frames_fps3_hq/clip1/00007.jpg");
    assert_eq!(list[15], "tvqa/frames_fps3_hq/clip1/00022.jpg");
    assert_eq!(frames.category.as_deref(), Some("Episodic Reasoning"));
    // The frames load as one even-length video through the pipeline.
    let query = OfficialPipeline::default()
        .query(&bench.root, frames)
        .unwrap();
    let pixel_agent::Media::Video(v) = &query.media else {
        panic!()
    };
    assert_eq!(v.len(), 16);
    // All 20 tasks are required by `load`; the first missing one is named.
    let err = mvbench::load(dir.path(), &LoadOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("action_sequence.json: missing"),
        "{err}"
    );
    // An answer that is not a candidate names its record.
    std::fs::write(
        json_dir.join("action_antonym.json"),
        json!([{"video": "42.webm", "question": "q", "candidates": ["a", "b"], "answer": "c"}])
            .to_string(),
    )
    .unwrap();
    let err =
        mvbench::load_tasks(dir.path(), &["Action Antonym"], &LoadOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("action_antonym.json, element 0")
            && err.to_string().contains("not one of the candidates"),
        "{err}"
    );
}

fn hrbench_tsv(path: &Path) -> Vec<u8> {
    let image = png_bytes(50, 30);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&image);
    let text = format!(
        "index\tquestion\tanswer\tA\tB\tC\tD\tcategory\tcycle_category\timage\n\
         0\tWhat number is above the door?\tA\t27B\t37B\t27D\t27E\tsingle\tx\t{b64}\n\
         1\t\"Which sign says \"\"STOP\"\"\tand why?\"\tC\tleft\tright\ttop\tbottom\tcross\ty\t{b64}\n"
    );
    std::fs::write(path, text).unwrap();
    image
}

#[test]
fn hrbench_tsv_rows_with_embedded_images() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hr_bench_4k.tsv");
    hrbench_tsv(&path);
    let bench = loaders::load(&Layout::HrBench, &path, &LoadOptions::default()).unwrap();
    assert_eq!((bench.name.as_str(), bench.len()), ("hrbench4k", 2));
    let second = &bench.items[1];
    assert_eq!(second.qid, "1");
    assert_eq!(second.answers, ["C"]);
    assert_eq!(second.options, ["left", "right", "top", "bottom"]);
    assert!(
        second
            .question
            .starts_with("Which sign says \"STOP\"\tand why?\n(A) left"),
        "{:?}",
        second.question
    );
    assert_eq!(second.category.as_deref(), Some("cross"));
    assert_eq!(second.extra["cycle_category"], "y");
    let Media::Images(images) = &second.media else {
        panic!()
    };
    let decoded = load_image(&bench.root, &images[0], &Default::default()).unwrap();
    assert_eq!(decoded.dimensions(), (50, 30));
    // A row with a field missing is named by its line.
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("2\tq\tA\n");
    std::fs::write(&path, text).unwrap();
    let err = loaders::hrbench::load(&path, &LoadOptions::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains("hr_bench_4k.tsv, line 4: 3 fields"),
        "{err}"
    );
    // Without an image column it is not HR-Bench.
    std::fs::write(&path, "index\tquestion\n0\tq\n").unwrap();
    let err = loaders::hrbench::load(&path, &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, EvalError::Format { .. }), "{err}");
}

#[test]
fn hrbench_jsonl_with_image_files() {
    let dir = tempfile::tempdir().unwrap();
    png(&dir.path().join("images/0.jpg"), 20, 20);
    let path = dir.path().join("hr_bench_8k.jsonl");
    write_lines(&path, &[json!({"index": 0, "question": "q?", "answer": "B", "A": "x", "B": "y", "category": "single", "image": "images/0.jpg"}).to_string()]);
    let bench = loaders::hrbench::load(&path, &LoadOptions::default()).unwrap();
    assert_eq!(bench.name, "hrbench8k");
    assert_eq!(bench.items[0].options, ["x", "y"]);
    assert_eq!(bench.items[0].question, "q?\n(A) x\n(B) y");
}

fn official_records(dir: &Path) -> Vec<serde_json::Value> {
    png(&dir.join("images/a.png"), 30, 30);
    for k in 0..3 {
        png(&dir.join(format!("images/f{k}.png")), 24, 24);
    }
    vec![
        json!({"qid": "vstar-1", "question": "What color?\n(A) red\n(B) blue", "image": ["images/a.png"], "answer": "B", "is_video": false}),
        json!({"qid": "vstar-2", "question": "Which frame?", "image": ["images/f0.png", "images/f1.png", "images/f2.png"], "answer": ["A", "a"], "is_video": true, "category": "video"}),
    ]
}

#[test]
fn official_jsonl_and_json_records() {
    let dir = tempfile::tempdir().unwrap();
    let records = official_records(dir.path());
    let jsonl = dir.path().join("vstar.jsonl");
    write_lines(
        &jsonl,
        &records.iter().map(ToString::to_string).collect::<Vec<_>>(),
    );
    let bench = loaders::official::load(&jsonl, &LoadOptions::default()).unwrap();
    assert_eq!(
        (bench.name.as_str(), bench.metric),
        ("vstar", Metric::Choice)
    );
    assert_eq!(bench.items[0].options, ["red", "blue"]);
    assert_eq!(bench.items[1].answers, ["A", "a"]);
    assert!(bench.items[1].is_video);
    assert_eq!(
        bench.items[1].media,
        Media::Frames(vec![
            "images/f0.png".into(),
            "images/f1.png".into(),
            "images/f2.png".into()
        ])
    );
    let array = dir.path().join("vstar.json");
    std::fs::write(
        &array,
        serde_json::Value::Array(records.clone()).to_string(),
    )
    .unwrap();
    assert_eq!(
        loaders::official::load(&array, &LoadOptions::default())
            .unwrap()
            .items,
        bench.items
    );
    // Duplicate qids are refused.
    let dup = dir.path().join("dup.jsonl");
    write_lines(&dup, &[records[0].to_string(), records[0].to_string()]);
    let err = loaders::official::load(&dup, &LoadOptions::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains("\"vstar-1\" is used by items 0 and 1"),
        "{err}"
    );
    // A record the RL loader refuses is named.
    let bad = dir.path().join("bad.jsonl");
    write_lines(
        &bad,
        &[json!({"qid": 1, "image": ["images/a.png"], "answer": "A"}).to_string()],
    );
    let err = loaders::official::load(&bad, &LoadOptions::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains("bad.jsonl, line 1: missing `question`"),
        "{err}"
    );
}

#[cfg(feature = "parquet")]
mod parquet_files {
    use std::sync::Arc;

    use parquet::data_type::{BoolType, ByteArray, ByteArrayType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;

    use super::*;

    /// Writes the official columns as pyarrow does: `image` a three-level list of strings.
    fn write(path: &Path, rows: &[(&str, &str, Vec<&str>, &str, bool)]) {
        let schema = Arc::new(
            parse_message_type(
                "message schema {
                   optional binary qid (STRING);
                   optional binary question (STRING);
                   optional group image (LIST) { repeated group list { optional binary element (STRING); } }
                   optional binary answer (STRING);
                   optional boolean is_video;
                 }",
            )
            .unwrap(),
        );
        let props = Arc::new(
            WriterProperties::builder()
                .set_compression(parquet::basic::Compression::SNAPPY)
                .build(),
        );
        let file = std::fs::File::create(path).unwrap();
        let mut writer = SerializedFileWriter::new(file, schema, props).unwrap();
        let mut group = writer.next_row_group().unwrap();
        let ones = vec![1i16; rows.len()];
        let qids: Vec<ByteArray> = rows.iter().map(|r| ByteArray::from(r.0)).collect();
        let questions: Vec<ByteArray> = rows.iter().map(|r| ByteArray::from(r.1)).collect();
        let answers: Vec<ByteArray> = rows.iter().map(|r| ByteArray::from(r.3)).collect();
        for column in [&qids, &questions] {
            let mut c = group.next_column().unwrap().unwrap();
            c.typed::<ByteArrayType>()
                .write_batch(column, Some(&ones), None)
                .unwrap();
            c.close().unwrap();
        }
        let (mut values, mut def, mut rep) = (Vec::new(), Vec::new(), Vec::new());
        for r in rows {
            for (k, p) in r.2.iter().enumerate() {
                values.push(ByteArray::from(*p));
                def.push(3i16);
                rep.push(i16::from(k > 0));
            }
        }
        let mut c = group.next_column().unwrap().unwrap();
        c.typed::<ByteArrayType>()
            .write_batch(&values, Some(&def), Some(&rep))
            .unwrap();
        c.close().unwrap();
        let mut c = group.next_column().unwrap().unwrap();
        c.typed::<ByteArrayType>()
            .write_batch(&answers, Some(&ones), None)
            .unwrap();
        c.close().unwrap();
        let flags: Vec<bool> = rows.iter().map(|r| r.4).collect();
        let mut c = group.next_column().unwrap().unwrap();
        c.typed::<BoolType>()
            .write_batch(&flags, Some(&ones), None)
            .unwrap();
        c.close().unwrap();
        group.close().unwrap();
        writer.close().unwrap();
    }

    #[test]
    fn official_parquet_rows() {
        let dir = tempfile::tempdir().unwrap();
        official_records(dir.path());
        let path = dir.path().join("mvbench.parquet");
        write(
            &path,
            &[
                (
                    "mvbench-1",
                    "Which frame?\n(A) first\n(B) last",
                    vec!["images/f0.png", "images/f1.png", "images/f2.png"],
                    "B",
                    true,
                ),
                (
                    "mvbench-2",
                    "What color?",
                    vec!["images/a.png"],
                    "red",
                    false,
                ),
            ],
        );
        let bench = loaders::official::load(&path, &LoadOptions::default()).unwrap();
        assert_eq!(
            (bench.name.as_str(), bench.len(), bench.metric),
            ("mvbench", 2, Metric::Choice)
        );
        assert_eq!(
            bench.items[0].media,
            Media::Frames(vec![
                "images/f0.png".into(),
                "images/f1.png".into(),
                "images/f2.png".into()
            ])
        );
        assert_eq!(bench.items[0].options, ["first", "last"]);
        assert_eq!(
            bench.items[1].media,
            Media::Images(vec![ImageRef::File("images/a.png".into())])
        );
        // A missing image is named with its row.
        let bad = dir.path().join("bad.parquet");
        write(&bad, &[("x-1", "q", vec!["images/none.png"], "A", false)]);
        let err = loaders::official::load(&bad, &LoadOptions::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains("bad.parquet, element 0: media file \"images/none.png\" is missing"),
            "{err}"
        );
        // A file that is not parquet says so.
        std::fs::write(&bad, b"PAR1 but no").unwrap();
        let err = loaders::official::load(&bad, &LoadOptions::default()).unwrap_err();
        assert!(matches!(err, EvalError::Format { .. }), "{err}");
    }
}
