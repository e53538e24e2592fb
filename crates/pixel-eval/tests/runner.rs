//! The runner with a scripted engine: the official settings, results and header, resuming after an engine
//! failure, after a torn line and after `kill -9` (one question or several in flight), refusing other
//! settings, shards and limits, questions whose media fail, and concurrent runs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{Scripted, vstar_folder};
use pixel_eval::results::read_header;
use pixel_eval::{
    Benchmark, EvalError, EvalSettings, LoadOptions, OfficialPipeline, Scorer, Shard, header_path,
    loaders, read_results, run, run_concurrent, run_with, score,
};

fn bench(dir: &Path, n: usize) -> Benchmark {
    vstar_folder(dir, n);
    loaders::vstar::load(dir, &LoadOptions::default()).unwrap()
}

fn settings() -> EvalSettings {
    let mut s = EvalSettings::official("scripted");
    s.engine = "scripted test engine".into();
    s.progress = false;
    s
}

fn qids(path: &Path) -> Vec<String> {
    read_results(path)
        .unwrap()
        .results
        .into_iter()
        .map(|r| r.qid)
        .collect()
}

/// `(qid, response)` of every result, sorted: a concurrent run writes them in the order they finish.
fn answers(path: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = read_results(path)
        .unwrap()
        .results
        .into_iter()
        .map(|r| (r.qid, r.response))
        .collect();
    out.sort();
    out
}

fn concurrent(n: usize) -> EvalSettings {
    let mut s = settings();
    s.concurrency = n;
    s
}

#[test]
fn the_official_settings_are_the_released_evaluation() {
    let s = EvalSettings::official("m");
    assert_eq!(s.rollout.max_new_tokens, 2048);
    assert_eq!(s.rollout.first_turn.temperature, 0.0);
    assert_eq!(s.rollout.later_turns.temperature, 0.0);
    assert_eq!(s.rollout.episode.max_operations, 4);
    assert_eq!(s.rollout.episode.max_images, 16);
    assert_eq!(s.rollout.episode.max_total_tokens, Some(12_088));
    assert_eq!(s.rollout.episode, pixel_ops::EpisodeConfig::official_eval());
}

#[test]
fn a_run_writes_every_question_and_its_settings() {
    let dir = tempfile::tempdir().unwrap();
    let bench = bench(dir.path(), 6);
    let out = dir.path().join("out/vstar.jsonl");
    let mut engine = Scripted::new();
    let summary = run(&mut engine, &bench, &settings(), &out).unwrap();
    assert_eq!(
        (
            summary.selected,
            summary.ran,
            summary.done_before,
            summary.errors
        ),
        (6, 6, 0, 0)
    );
    let results = read_results(&out).unwrap().results;
    assert_eq!(qids(&out), ["0", "1", "2", "3", "4", "5"]);
    // Even questions zoom in once, then answer; the crop's observation sits between the two turns.
    let zoomed = &results[0];
    assert_eq!(zoomed.turns.len(), 2);
    assert_eq!(zoomed.operations.len(), 1);
    assert!(
        zoomed
            .response
            .contains("<|im_start|>user\n\nHere is the cropped image"),
        "{}",
        zoomed.response
    );
    assert!(zoomed.response.ends_with("\\boxed{A}."));
    assert_eq!(results[1].turns.len(), 1);
    let header = read_header(&header_path(&out)).unwrap();
    assert_eq!(header.settings, settings());
    assert_eq!((header.benchmark.as_str(), header.questions), ("vstar", 6));
    assert_eq!(header.pipeline["name"], "official");
    assert_eq!(
        header.pipeline["image_pre_resize"]["max_pixels"],
        8000 * 784
    );
    let scores = score(&results, Scorer::Official);
    let b = &scores.benchmarks[0];
    assert_eq!(b.accuracy.mean, 1.0);
    assert_eq!(b.rapr, 0.5);
    assert_eq!(b.operation_error_rate, Some(0.0));
}

#[test]
fn a_run_stopped_by_the_engine_continues_without_redoing_questions() {
    let dir = tempfile::tempdir().unwrap();
    let bench = bench(dir.path(), 7);
    let out = dir.path().join("vstar.jsonl");
    let mut down = Scripted::new();
    down.fail_after = Some(3);
    let err = run(&mut down, &bench, &settings(), &out).unwrap_err();
    assert!(matches!(err, EvalError::Agent(_)), "{err}");
    assert_eq!(qids(&out), ["0", "1", "2"]);
    let mut up = Scripted::new();
    let summary = run(&mut up, &bench, &settings(), &out).unwrap();
    assert_eq!((summary.done_before, summary.ran), (3, 4));
    assert_eq!(
        up.counters.opened.load(Ordering::SeqCst),
        4,
        "only the missing questions ran"
    );
    assert_eq!(qids(&out), ["0", "1", "2", "3", "4", "5", "6"]);
    assert_eq!(read_header(&header_path(&out)).unwrap().starts.len(), 2);
    // A third start finds nothing to do.
    let again = run(&mut Scripted::new(), &bench, &settings(), &out).unwrap();
    assert_eq!((again.done_before, again.ran), (7, 0));
}

#[test]
fn a_torn_last_line_is_dropped_and_its_question_redone() {
    let dir = tempfile::tempdir().unwrap();
    let bench = bench(dir.path(), 4);
    let out = dir.path().join("vstar.jsonl");
    let mut first = settings();
    first.limit = Some(2);
    run(&mut Scripted::new(), &bench, &first, &out).unwrap();
    let whole = std::fs::read(&out).unwrap();
    // The process died while writing question 1's line.
    let cut = whole.len() - 40;
    std::fs::write(&out, &whole[..cut]).unwrap();
    let read = read_results(&out).unwrap();
    assert!(read.torn);
    assert_eq!(read.results.len(), 1);
    let summary = run(&mut Scripted::new(), &bench, &settings(), &out).unwrap();
    assert!(summary.dropped_torn_line);
    assert_eq!((summary.done_before, summary.ran), (1, 3));
    assert_eq!(qids(&out), ["0", "1", "2", "3"]);
    assert!(!read_results(&out).unwrap().torn);
    // A bad line before the last one is not a torn write: it is reported with its line.
    let mut text = std::fs::read_to_string(&out).unwrap();
    text.insert_str(0, "garbage\n");
    std::fs::write(&out, text).unwrap();
    let err = read_results(&out).unwrap_err();
    assert!(err.to_string().contains("vstar.jsonl, line 1"), "{err}");
}

#[test]
fn other_settings_are_refused_for_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let bench = bench(dir.path(), 2);
    let out = dir.path().join("vstar.jsonl");
    run(&mut Scripted::new(), &bench, &settings(), &out).unwrap();
    let mut other = settings();
    other.model = "another".into();
    other.rollout.max_new_tokens = 512;
    let err = run(&mut Scripted::new(), &bench, &other, &out).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, EvalError::SettingsMismatch { .. }), "{msg}");
    assert!(msg.contains("model") && msg.contains("rollout"), "{msg}");
    // The commit and the limit may change between starts.
    let mut later = settings();
    later.commit = Some("abc123".into());
    later.limit = Some(1);
    run(&mut Scripted::new(), &bench, &later, &out).unwrap();
}

#[test]
fn shards_and_limits_select_questions_by_index() {
    let dir = tempfile::tempdir().unwrap();
    let bench = bench(dir.path(), 8);
    let mut s = settings();
    s.shard = Some(Shard::parse("1/3").unwrap());
    s.limit = Some(2);
    let out = dir.path().join("shard1.jsonl");
    let summary = run(&mut Scripted::new(), &bench, &s, &out).unwrap();
    assert_eq!(summary.selected, 2);
    assert_eq!(qids(&out), ["1", "4"]);
    assert!(Shard::parse("3/3").is_err() && Shard::parse("x").is_err());
    // Shards written to their own files score together.
    let mut all = Vec::new();
    for k in 0..3 {
        let mut s = settings();
        s.shard = Some(Shard { index: k, count: 3 });
        let out = dir.path().join(format!("all_{k}.jsonl"));
        run(&mut Scripted::new(), &bench, &s, &out).unwrap();
        all.push(out);
    }
    let results = pixel_eval::read_many(&all).unwrap();
    assert_eq!(results.len(), 8);
    assert_eq!(
        score(&results, Scorer::Official).benchmarks[0]
            .accuracy
            .questions,
        8
    );
}

#[test]
fn a_question_whose_image_is_broken_is_recorded_and_scored_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let bench = bench(dir.path(), 3);
    std::fs::write(dir.path().join("direct_attributes/img_1.png"), b"not a png").unwrap();
    let out = dir.path().join("vstar.jsonl");
    let summary = run(&mut Scripted::new(), &bench, &settings(), &out).unwrap();
    assert_eq!((summary.ran, summary.errors), (3, 1));
    let results = read_results(&out).unwrap().results;
    assert!(
        results[1]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("img_1.png")),
        "{:?}",
        results[1].error
    );
    let scores = score(&results, Scorer::Official);
    assert_eq!(scores.benchmarks[0].errors, 1);
    assert!((scores.benchmarks[0].accuracy.mean - 2.0 / 3.0).abs() < 1e-12);
}

// ---- kill -9 and resume ----

const CHILD_ENV: &str = "PIXEL_EVAL_TEST_CHILD_DIR";

#[test]
#[ignore = "the child process of a_run_killed_with_sigkill_resumes_where_it_stopped"]
fn child_slow_run() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let bench = loaders::vstar::load(&dir, &LoadOptions::default()).unwrap();
    let mut engine = Scripted::new();
    engine.delay = Duration::from_millis(60);
    run(&mut engine, &bench, &settings(), &dir.join("killed.jsonl")).unwrap();
}

#[test]
fn a_run_killed_with_sigkill_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let bench = bench(dir.path(), 12);
    let whole = dir.path().join("whole.jsonl");
    run(&mut Scripted::new(), &bench, &settings(), &whole).unwrap();

    let killed = dir.path().join("killed.jsonl");
    let before = kill_child_after("child_slow_run", dir.path(), &killed, 3);
    assert!(
        (3..12).contains(&before),
        "killed mid-run after {before} questions"
    );

    let mut engine = Scripted::new();
    let summary = run(&mut engine, &bench, &settings(), &killed).unwrap();
    assert_eq!(summary.done_before + summary.ran, 12);
    assert_eq!(
        engine.counters.opened.load(Ordering::SeqCst),
        12 - summary.done_before
    );
    let strip = |path: &Path| -> Vec<(String, String)> {
        read_results(path)
            .unwrap()
            .results
            .into_iter()
            .map(|r| (r.qid, r.response))
            .collect()
    };
    assert_eq!(
        strip(&killed),
        strip(&whole),
        "same questions, same answers, each once"
    );
}

// ---- concurrency ----

#[test]
fn a_concurrent_run_answers_each_question_once_like_a_sequential_one() {
    let dir = tempfile::tempdir().unwrap();
    let bench = bench(dir.path(), 12);
    let whole = dir.path().join("whole.jsonl");
    run(&mut Scripted::new(), &bench, &settings(), &whole).unwrap();

    let out = dir.path().join("concurrent.jsonl");
    let mut engines = Scripted::pool(4, Duration::from_millis(20));
    let pipeline = OfficialPipeline::default();
    let summary = run_concurrent(&mut engines, &bench, &concurrent(4), &pipeline, &out).unwrap();
    assert_eq!((summary.selected, summary.ran, summary.errors), (12, 12, 0));
    assert_eq!(answers(&out), answers(&whole));
    assert_eq!(qids(&out).len(), 12, "each question once");
    let counters = &engines[0].counters;
    assert_eq!(counters.opened.load(Ordering::SeqCst), 12);
    assert!(
        counters.most_generating.load(Ordering::SeqCst) >= 2,
        "questions were in flight together"
    );
    let header = read_header(&header_path(&out)).unwrap();
    assert_eq!(header.settings.concurrency, 4);
    assert_eq!(header.starts[0].concurrency, 4);
    // The concurrency may change between starts; each start records its own.
    let again = run(&mut Scripted::new(), &bench, &settings(), &out).unwrap();
    assert_eq!((again.done_before, again.ran), (12, 0));
    let header = read_header(&header_path(&out)).unwrap();
    let starts: Vec<usize> = header.starts.iter().map(|s| s.concurrency).collect();
    assert_eq!(starts, [4, 1]);
}

#[test]
fn concurrency_needs_one_engine_per_question_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let bench = bench(dir.path(), 2);
    let out = dir.path().join("vstar.jsonl");
    let pipeline = OfficialPipeline::default();
    let err = run(&mut Scripted::new(), &bench, &concurrent(2), &out).unwrap_err();
    assert!(err.to_string().contains("run_concurrent"), "{err}");
    let mut one = Scripted::pool(1, Duration::ZERO);
    for n in [0, 2] {
        let err = run_concurrent(&mut one, &bench, &concurrent(n), &pipeline, &out).unwrap_err();
        assert!(matches!(err, EvalError::Invalid(_)), "{n}: {err}");
    }
    assert!(!out.exists(), "nothing was started");
    // More engines than the concurrency: the extra ones stay idle.
    let mut three = Scripted::pool(3, Duration::ZERO);
    run_concurrent(&mut three, &bench, &concurrent(2), &pipeline, &out).unwrap();
    assert_eq!(qids(&out).len(), 2);
    assert_eq!(three[2].counters.opened.load(Ordering::SeqCst), 2);
    // A sequential run through run_with is the same as run.
    let other = dir.path().join("other.jsonl");
    run_with(&mut Scripted::new(), &bench, &settings(), &pipeline, &other).unwrap();
    assert_eq!(answers(&other), answers(&out));
}

#[test]
fn a_concurrent_run_stopped_by_the_engine_keeps_what_finished_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let bench = bench(dir.path(), 10);
    let out = dir.path().join("vstar.jsonl");
    let pipeline = OfficialPipeline::default();
    // The server goes down after 4 questions were opened (counted across the engines).
    let mut down = Scripted::pool(3, Duration::from_millis(10));
    for e in &mut down {
        e.fail_after = Some(4);
    }
    let err = run_concurrent(&mut down, &bench, &concurrent(3), &pipeline, &out).unwrap_err();
    assert!(matches!(err, EvalError::Agent(_)), "{err}");
    let kept = qids(&out);
    assert_eq!(
        kept.len(),
        4,
        "every opened question finished and was written: {kept:?}"
    );
    let mut up = Scripted::pool(3, Duration::ZERO);
    let summary = run_concurrent(&mut up, &bench, &concurrent(3), &pipeline, &out).unwrap();
    assert_eq!((summary.done_before, summary.ran), (4, 6));
    assert_eq!(up[0].counters.opened.load(Ordering::SeqCst), 6);
    let whole = dir.path().join("whole.jsonl");
    run(&mut Scripted::new(), &bench, &settings(), &whole).unwrap();
    assert_eq!(answers(&out), answers(&whole));
    assert_eq!(qids(&out).len(), 10, "each question once");
}

#[test]
#[ignore = "the child process of a_concurrent_run_killed_with_sigkill_resumes_without_loss_or_duplicates"]
fn child_slow_concurrent_run() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let bench = loaders::vstar::load(&dir, &LoadOptions::default()).unwrap();
    let mut engines = Scripted::pool(3, Duration::from_millis(60));
    let out = dir.join("killed_concurrent.jsonl");
    let pipeline = OfficialPipeline::default();
    run_concurrent(&mut engines, &bench, &concurrent(3), &pipeline, &out).unwrap();
}

#[test]
fn a_concurrent_run_killed_with_sigkill_resumes_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let bench = bench(dir.path(), 18);
    let whole = dir.path().join("whole.jsonl");
    run(&mut Scripted::new(), &bench, &settings(), &whole).unwrap();

    let killed = dir.path().join("killed_concurrent.jsonl");
    let before = kill_child_after("child_slow_concurrent_run", dir.path(), &killed, 4);
    assert!(
        (4..18).contains(&before),
        "killed mid-run after {before} questions"
    );

    let mut engines = Scripted::pool(3, Duration::ZERO);
    let pipeline = OfficialPipeline::default();
    let summary = run_concurrent(&mut engines, &bench, &concurrent(3), &pipeline, &killed).unwrap();
    assert_eq!(summary.done_before + summary.ran, 18);
    assert_eq!(
        engines[0].counters.opened.load(Ordering::SeqCst),
        18 - summary.done_before,
        "only the missing questions ran"
    );
    let got = qids(&killed);
    let mut unique = got.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), got.len(), "no question twice: {got:?}");
    assert_eq!(
        answers(&killed),
        answers(&whole),
        "same questions, same answers"
    );
}

/// Runs the ignored test `child` in a child process (its folder in [`CHILD_ENV`]), SIGKILLs it once
/// `results` holds at least `min` results, and returns how many it holds then.
fn kill_child_after(child: &str, dir: &Path, results: &Path, min: usize) -> usize {
    let mut process = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", child, "--ignored", "--nocapture"])
        .env(CHILD_ENV, dir)
        .spawn()
        .expect("spawn the child run");
    let deadline = Instant::now() + Duration::from_secs(60);
    while read_results(results).map_or(0, |r| r.results.len()) < min {
        assert!(Instant::now() < deadline, "the child wrote no results");
        assert!(
            process.try_wait().unwrap().is_none(),
            "the child ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    process.kill().expect("SIGKILL");
    process.wait().unwrap();
    read_results(results).unwrap().results.len()
}
