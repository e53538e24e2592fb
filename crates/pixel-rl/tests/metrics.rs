//! Metrics files (JSONL sink, resume, reading back) and PNG charts.

use std::io::Write;
use std::path::Path;

use pixel_rl::RlError;
use pixel_rl::metrics::{JsonlSink, MemorySink, MetricRecord, MetricSink, Sinks, read_jsonl};
use pixel_rl::plot::{plot_metrics, plot_series};

fn record(phase: &str, step: u64, loss: f64) -> MetricRecord {
    let mut r = MetricRecord::new(phase, step);
    r.set("loss", loss).set("lr", 1e-6 * step as f64);
    r
}

/// Records equal but for the last bit of a value: the file holds each value's shortest exact form, but
/// serde_json's default float parsing may land one unit in the last place away.
#[track_caller]
fn assert_records(actual: &[MetricRecord], expected: &[MetricRecord]) {
    let same = actual.len() == expected.len()
        && actual.iter().zip(expected).all(|(a, e)| {
            a.phase == e.phase
                && a.step == e.step
                && a.values.keys().eq(e.values.keys())
                && a.values.values().zip(e.values.values()).all(|(&x, &y)| {
                    (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-15 * x.abs().max(y.abs())
                })
        });
    assert!(
        same,
        "records differ:\n  read: {actual:?}\n  want: {expected:?}"
    );
}

fn write_records(path: &Path, records: &[MetricRecord]) {
    let mut sink = JsonlSink::create(path).unwrap();
    for r in records {
        sink.record(r).unwrap();
    }
    sink.flush().unwrap();
}

#[test]
fn jsonl_round_trip_keeps_every_record_and_writes_flat_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/metrics.jsonl");
    let records: Vec<MetricRecord> = (1..=5)
        .map(|s| record(if s <= 2 { "sft" } else { "grpo" }, s, 1.0 / s as f64))
        .collect();
    write_records(&path, &records);
    assert_records(&read_jsonl(&path).unwrap(), &records);

    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 5);
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["phase"], "sft");
    assert_eq!(first["step"], 1);
    assert_eq!(
        first["loss"], 1.0,
        "values sit next to phase and step: {first}"
    );
}

#[test]
fn jsonl_writes_non_finite_values_as_null_and_reads_them_as_nan() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.jsonl");
    let mut r = MetricRecord::new("grpo", 1);
    r.set("grad_norm", f64::INFINITY)
        .set("loss", f64::NAN)
        .set("reward", 0.5);
    write_records(&path, &[r]);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"grad_norm\":null"), "{text}");
    let back = read_jsonl(&path).unwrap();
    assert!(back[0].get("grad_norm").unwrap().is_nan());
    assert!(back[0].get("loss").unwrap().is_nan());
    assert_eq!(back[0].get("reward"), Some(0.5));
}

#[test]
fn resume_drops_lines_after_the_step_and_a_torn_last_line_then_appends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    let records: Vec<MetricRecord> = (1..=6).map(|s| record("grpo", s, s as f64)).collect();
    write_records(&path, &records);
    // The killed run was writing step 7 when it died.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    file.write_all(br#"{"phase":"grpo","step":7,"lo"#).unwrap();
    drop(file);
    // A torn last line is tolerated.
    assert_records(&read_jsonl(&path).unwrap(), &records);

    // Resumed from the checkpoint taken after step 4: steps 5, 6 and the torn 7 go.
    let mut sink = JsonlSink::resume(&path, 4).unwrap();
    assert_records(&read_jsonl(&path).unwrap(), &records[..4]);
    let again: Vec<MetricRecord> = (5..=7).map(|s| record("grpo", s, -(s as f64))).collect();
    for r in &again {
        sink.record(r).unwrap();
    }
    sink.flush().unwrap();

    let mut expected = records[..4].to_vec();
    expected.extend(again);
    assert_records(&read_jsonl(&path).unwrap(), &expected);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.ends_with('\n') && text.lines().count() == 7, "{text}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "metrics.jsonl")
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn resume_keeps_a_complete_last_line_missing_its_newline_and_creates_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    std::fs::write(&path, "{\"phase\":\"sft\",\"step\":1,\"loss\":2.0}").unwrap();
    let mut sink = JsonlSink::resume(&path, 1).unwrap();
    sink.record(&record("sft", 2, 1.5)).unwrap();
    let back = read_jsonl(&path).unwrap();
    assert_eq!(back.len(), 2);
    assert_eq!((back[0].step, back[0].get("loss")), (1, Some(2.0)));
    assert_eq!(back[1].step, 2);

    let fresh = dir.path().join("new/metrics.jsonl");
    let mut sink = JsonlSink::resume(&fresh, 10).unwrap();
    sink.record(&record("sft", 11, 0.1)).unwrap();
    assert_eq!(read_jsonl(&fresh).unwrap().len(), 1);
}

#[test]
fn resume_phase_drops_only_that_phases_later_steps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    let mut records: Vec<MetricRecord> = (1..=5).map(|s| record("sft", s, 1.0)).collect();
    records.extend((1..=4).map(|s| record("grpo", s, 2.0)));
    write_records(&path, &records);
    drop(JsonlSink::resume_phase(&path, "grpo", 2).unwrap());
    // All of sft, and grpo steps 1-2, stay.
    assert_records(&read_jsonl(&path).unwrap(), &records[..7]);
}

#[test]
fn read_jsonl_names_the_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    std::fs::write(
        &path,
        "{\"phase\":\"sft\",\"step\":1,\"loss\":1}\nnot json\n{\"phase\":\"sft\",\"step\":3}\n",
    )
    .unwrap();
    match read_jsonl(&path) {
        Err(RlError::MetricsLine { line, path: p, .. }) => {
            assert_eq!(line, 2);
            assert_eq!(p, path);
        }
        other => panic!("expected a bad-line error, got {other:?}"),
    }
    let message = read_jsonl(&path).unwrap_err().to_string();
    assert!(message.contains("line 2"), "{message}");

    // A wrong type is a bad line too, and resuming on such a file fails and leaves it as it was.
    std::fs::write(
        &path,
        "{\"phase\":\"sft\",\"step\":1,\"loss\":\"high\"}\n{\"phase\":\"sft\",\"step\":2}\n",
    )
    .unwrap();
    let before = std::fs::read(&path).unwrap();
    assert!(matches!(
        read_jsonl(&path),
        Err(RlError::MetricsLine { line: 1, .. })
    ));
    assert!(JsonlSink::resume(&path, 1).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

fn record_via<S: MetricSink>(mut sink: S, record: &MetricRecord) {
    sink.record(record).unwrap();
}

#[test]
fn sinks_fan_out_to_every_sink() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.jsonl");
    let mut sinks = Sinks(vec![
        Box::new(MemorySink::default()),
        Box::new(JsonlSink::create(&path).unwrap()),
    ]);
    let mut memory = MemorySink::default();
    for s in 1..=3 {
        let r = record("sft", s, 0.5);
        sinks.record(&r).unwrap();
        // Through the forwarding impl for `&mut S`.
        record_via(&mut memory, &r);
    }
    sinks.flush().unwrap();
    assert_records(&read_jsonl(&path).unwrap(), &memory.records);
    assert_eq!(memory.records.len(), 3);
}

#[test]
#[should_panic(expected = "reserved")]
fn setting_a_reserved_name_panics() {
    MetricRecord::new("sft", 1).set("step", 2.0);
}

/// Decodes a PNG and checks its size and that it is not one flat colour.
fn assert_chart(path: &Path) {
    let image = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    assert_eq!(image.dimensions(), (960, 540), "{}", path.display());
    let first = image.get_pixel(0, 0);
    let distinct = image.pixels().filter(|p| *p != first).count();
    assert!(
        distinct > 1000,
        "{}: nearly one colour ({distinct} other pixels)",
        path.display()
    );
}

#[test]
fn plot_metrics_writes_valid_pngs_and_skips_a_key_with_no_finite_value() {
    let dir = tempfile::tempdir().unwrap();
    let mut records = Vec::new();
    for s in 1..=20u64 {
        let mut r = MetricRecord::new(if s <= 8 { "sft" } else { "grpo" }, s);
        r.set("loss", 2.0 / s as f64).set("empty", f64::NAN);
        if s % 2 == 0 {
            r.set("reward/mean", s as f64 / 20.0);
        }
        records.push(r);
    }
    let out = dir.path().join("charts");
    let written =
        plot_metrics(&records, &["loss", "reward/mean", "empty", "absent"], &out).unwrap();
    assert_eq!(
        written,
        vec![out.join("loss.png"), out.join("reward_mean.png")]
    );
    for path in &written {
        assert_chart(path);
    }
    assert!(!out.join("empty.png").exists() && !out.join("absent.png").exists());
    let names: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names.len(),
        2,
        "only the charts, no temporary files: {names:?}"
    );
}

#[test]
fn plot_series_draws_two_series_in_their_colours() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rapr.png");
    let curiosity: Vec<(f64, f64)> = (0..30).map(|i| (i as f64, 0.1 + 0.02 * i as f64)).collect();
    let control: Vec<(f64, f64)> = (0..30)
        .map(|i| (i as f64, 0.3 - 0.008 * i as f64))
        .collect();
    plot_series(
        "RaPR",
        "RaPR",
        &[("curiosity", curiosity), ("control", control)],
        &path,
    )
    .unwrap();
    assert_chart(&path);
    let image = image::open(&path).unwrap().to_rgb8();
    // The two series get the first two colours of the palette.
    for rgb in [[31u8, 119, 180], [214, 39, 40]] {
        let n = image.pixels().filter(|p| p.0 == rgb).count();
        assert!(n > 100, "colour {rgb:?} drawn on only {n} pixels");
    }
}

#[test]
fn plot_series_with_no_finite_point_still_writes_a_chart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.png");
    plot_series("nothing", "v", &[("a", vec![(1.0, f64::NAN)])], &path).unwrap();
    let image = image::open(&path).unwrap();
    assert_eq!((image.width(), image.height()), (960, 540));
}
