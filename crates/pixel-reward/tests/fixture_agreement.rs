//! Agreement with independent Python references on `tests/fixtures/answer_cases.json`
//! (regenerate with `scripts/gen_reward_fixtures.py`): extraction, math_verify, and a reference ANLS.

use pixel_reward::{AnswerKind, Matcher, extract_answer};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    id: usize,
    group: String,
    kind: String,
    response: String,
    references: Vec<String>,
    options: Vec<String>,
    extracted: Option<String>,
    math_verify: f64,
    anls: Option<f64>,
    expected: f64,
    disagreement: Option<String>,
}

fn fixture() -> Fixture {
    let text = include_str!("fixtures/answer_cases.json");
    serde_json::from_str(text).expect("fixture parses")
}

fn matcher(case: &Case) -> Matcher {
    let kind = match case.kind.as_str() {
        "anls" => AnswerKind::Anls,
        "auto" => AnswerKind::Auto,
        other => panic!("case {}: unknown kind {other}", case.id),
    };
    Matcher::new(kind).with_options(case.options.iter().cloned())
}

#[test]
fn fixture_is_large_and_covers_every_kind() {
    let f = fixture();
    // The README and docs/reward.md quote this count; regenerating the fixture means updating all three.
    assert_eq!(f.cases.len(), 453, "cases");
    for group in [
        "mc",
        "mc_option_text",
        "number_thousands",
        "number_decimal",
        "number_words",
        "number_units",
        "multispan",
        "text",
        "extraction",
        "anls",
    ] {
        let n = f.cases.iter().filter(|c| c.group == group).count();
        assert!(n >= 10 || group == "extraction" && n >= 5, "{group}: {n}");
    }
    // Disagreements are the exception and every one is explained.
    let dis = f.cases.iter().filter(|c| c.disagreement.is_some()).count();
    assert!(dis * 4 < f.cases.len(), "{dis} disagreements");
}

#[test]
fn extraction_matches_the_python_reference() {
    for c in fixture().cases {
        let ours = extract_answer(&c.response).map(|e| e.text);
        assert_eq!(
            ours, c.extracted,
            "case {} ({}): {:?}",
            c.id, c.group, c.response
        );
    }
}

#[test]
fn scores_match_math_verify_except_listed_disagreements() {
    let mut agree = 0;
    for c in fixture().cases.iter().filter(|c| c.kind != "anls") {
        let j = matcher(c).judge(&c.response, &c.references);
        assert_eq!(
            j.score, c.expected,
            "case {} ({}): {:?} vs {:?}",
            c.id, c.group, c.extracted, c.references
        );
        match &c.disagreement {
            None => {
                assert_eq!(
                    j.score, c.math_verify,
                    "case {}: unlisted disagreement",
                    c.id
                );
                agree += 1;
            }
            Some(reason) => {
                assert_ne!(
                    c.math_verify, c.expected,
                    "case {}: listed but agrees",
                    c.id
                );
                assert!(!reason.is_empty());
            }
        }
    }
    // docs/reward.md: "our score equals math_verify on 267 of the 348 other" (non-ANLS) cases.
    let scored = fixture().cases.iter().filter(|c| c.kind != "anls").count();
    assert_eq!((agree, scored), (267, 348), "agreements of scored cases");
}

#[test]
fn anls_matches_the_reference_scorer() {
    let mut n = 0;
    for c in fixture().cases.iter().filter(|c| c.kind == "anls") {
        let want = c.anls.expect("anls cases carry the reference score");
        let got = matcher(c).judge(&c.response, &c.references).score;
        assert!((got - want).abs() < 1e-12, "case {}: {got} vs {want}", c.id);
        n += 1;
    }
    // docs/reward.md: "ANLS equal within 1e-12 on all 105 ANLS cases".
    assert_eq!(n, 105, "ANLS cases");
}
