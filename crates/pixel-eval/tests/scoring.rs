//! Scoring apart from inference: the official rule against the standard metrics on hand-written results,
//! per-qid averaging, RaPR and operation errors, and the report beside the paper's numbers.

use pixel_agent::OperationRecord;
use pixel_eval::report::{markdown, paper_number};
use pixel_eval::results::official_response;
use pixel_eval::stats::IntervalMethod;
use pixel_eval::{ItemResult, Metric, Scorer, score, score_item};
use pixel_ops::EpisodeStats;

fn result(bench: &str, qid: &str, metric: Metric, answers: &[&str], turns: &[&str]) -> ItemResult {
    let turns: Vec<String> = turns.iter().map(|t| t.to_string()).collect();
    ItemResult {
        qid: qid.into(),
        index: 0,
        benchmark: bench.into(),
        question: "q".into(),
        answers: answers.iter().map(|a| a.to_string()).collect(),
        options: Vec::new(),
        category: None,
        metric,
        is_video: false,
        response: official_response(&turns, &[]),
        turns,
        operations: Vec::new(),
        end: None,
        stats: EpisodeStats::default(),
        context_tokens: None,
        sampled_tokens: None,
        seconds: 0.0,
        error: None,
    }
}

#[test]
fn official_and_standard_rules_differ_where_the_paper_says() {
    // Option text instead of the letter: the official rule never sees the options.
    let mut r = result(
        "vstar",
        "1",
        Metric::Choice,
        &["B"],
        &["It is \\boxed{Sheep}"],
    );
    r.options = vec!["Lion".into(), "Sheep".into()];
    assert!(!score_item(&r, Scorer::Official).correct);
    assert!(score_item(&r, Scorer::Standard).correct);
    // A letter with its option: both accept it.
    let r = result("vstar", "2", Metric::Choice, &["B"], &["\\boxed{B. Sheep}"]);
    assert!(score_item(&r, Scorer::Official).correct && score_item(&r, Scorer::Standard).correct);
    // ANLS is graded in the standard metric and all-or-nothing in the official one.
    let r = result(
        "infovqa",
        "3",
        Metric::Anls,
        &["pinterest", "Pinterest.com"],
        &["\\boxed{pinterst}"],
    );
    let standard = score_item(&r, Scorer::Standard);
    assert!((standard.score - 8.0 / 9.0).abs() < 1e-12, "{standard:?}");
    assert_eq!(score_item(&r, Scorer::Official).score, 0.0);
    // Counts: words and units read as the number for both.
    let r = result(
        "tallyqa_complex",
        "4",
        Metric::Integer,
        &["3"],
        &["\\boxed{three}"],
    );
    assert!(score_item(&r, Scorer::Official).correct && score_item(&r, Scorer::Standard).correct);
    // The last box of the whole response wins, across turns.
    let r = result(
        "vstar",
        "5",
        Metric::Choice,
        &["A"],
        &["maybe \\boxed{B}", "no: \\boxed{A}"],
    );
    assert!(score_item(&r, Scorer::Official).correct);
    assert_eq!(
        score_item(&r, Scorer::Official).answer.as_deref(),
        Some("A")
    );
    // A failed question scores 0 under both.
    let mut r = result("vstar", "6", Metric::Choice, &["A"], &["\\boxed{A}"]);
    r.error = Some("broken image".into());
    assert!(!score_item(&r, Scorer::Official).correct && !score_item(&r, Scorer::Standard).correct);
}

#[test]
fn the_official_response_holds_every_turn_and_observation() {
    let ops = [OperationRecord {
        turn: 0,
        observation: "\nHere is the cropped image (Image Size: 532x392):".into(),
        failed: false,
        images_added: 1,
    }];
    let text = official_response(&["zoom".into(), "\\boxed{C}".into()], &ops);
    assert_eq!(
        text,
        "zoom<|im_end|>\n<|im_start|>user\n\nHere is the cropped image (Image Size: 532x392):\
         <|vision_start|><|image_pad|><|vision_end|><|im_end|>\n<|im_start|>assistant\n\\boxed{C}"
    );
}

#[test]
fn qids_are_averaged_before_benchmarks_and_operations_are_counted() {
    let mut results = vec![
        result("vstar", "1", Metric::Choice, &["A"], &["\\boxed{A}"]),
        result("vstar", "1", Metric::Choice, &["A"], &["\\boxed{B}"]),
        result("vstar", "2", Metric::Choice, &["A"], &["\\boxed{A}"]),
        result("mvbench", "m1", Metric::Choice, &["C"], &["\\boxed{C}"]),
    ];
    results[0].category = Some("direct_attributes".into());
    results[1].category = Some("direct_attributes".into());
    results[2].category = Some("relative_position".into());
    results[2].stats = EpisodeStats {
        tool_calls: 2,
        operations_attempted: 2,
        operations_failed: 1,
        ..EpisodeStats::default()
    };
    let scores = score(&results, Scorer::Official);
    let names: Vec<&str> = scores
        .benchmarks
        .iter()
        .map(|b| b.benchmark.as_str())
        .collect();
    assert_eq!(names, ["mvbench", "vstar"]);
    let v = &scores.benchmarks[1];
    assert_eq!((v.results, v.accuracy.questions), (3, 2));
    assert!(
        (v.accuracy.mean - 0.75).abs() < 1e-12,
        "qid 1 counts 0.5, qid 2 counts 1"
    );
    assert_eq!(v.accuracy.interval.method, IntervalMethod::Normal);
    assert!((v.rapr - 1.0 / 3.0).abs() < 1e-12);
    assert_eq!((v.operations, v.operation_error_rate), (2, Some(0.5)));
    assert_eq!(v.categories["direct_attributes"].mean, 0.5);
    assert_eq!(v.categories["relative_position"].mean, 1.0);
    assert_eq!(scores.benchmarks[0].operation_error_rate, None);
    assert_eq!(
        scores.benchmarks[0].accuracy.interval.method,
        IntervalMethod::Wilson
    );
}

#[test]
fn the_report_sits_beside_the_paper() {
    let mut results = Vec::new();
    for i in 0..191 {
        let answer = if i < 160 { "A" } else { "B" };
        let mut r = result(
            "vstar",
            &i.to_string(),
            Metric::Choice,
            &["A"],
            &[&format!("\\boxed{{{answer}}}")],
        );
        r.category = Some(
            if i % 2 == 0 {
                "direct_attributes"
            } else {
                "relative_position"
            }
            .into(),
        );
        results.push(r);
    }
    results.push(result(
        "mvbench",
        "m1",
        Metric::Choice,
        &["A"],
        &["\\boxed{A}"],
    ));
    results.push(result(
        "hrbench4k",
        "h1",
        Metric::Choice,
        &["A"],
        &["\\boxed{A}"],
    ));
    let report = markdown(
        &score(&results, Scorer::Official),
        &score(&results, Scorer::Standard),
    );
    // 160 / 191 = 83.8 %, Wilson 77.9 .. 88.3, next to the paper's 84.3.
    assert!(
        report.contains("| vstar | 191 | 83.8 (77.9–88.3) | 84.3 | -0.5 |"),
        "{report}"
    );
    assert!(
        report.contains("| mvbench | 1 | 100.0 (20.7–100.0) | n/a | n/a |"),
        "{report}"
    );
    assert!(
        report.contains("| hrbench4k | 1 | 100.0 (20.7–100.0) | — | — |"),
        "{report}"
    );
    assert!(report.contains("### vstar by category"), "{report}");
    assert!(report.contains("MVBench: n/a"), "{report}");
    assert_eq!(paper_number("tallyqa_complex").unwrap().value, Some(74.0));
    assert!(paper_number("tallyqa_simple").is_none());
}
