//! Property tests: extraction, normalisation and matching accept arbitrary text without panicking, and the
//! reward accepts arbitrary groups and numbers without panicking.

use pixel_reward::{
    AdvantageConfig, AnswerKind, Matcher, RewardConfig, RewardVariant, RolloutOutcome, advantages,
    extract_answer, normalize_answer, parse_number,
};
use proptest::prelude::*;

/// Text biased toward the syntax the parsers look at.
fn answerish() -> impl Strategy<Value = String> {
    let atoms = prop::sample::select(vec![
        r"\boxed",
        r"\fbox",
        "{",
        "}",
        r"\{",
        r"\}",
        "\\",
        "<answer>",
        "</answer>",
        "Answer:",
        r"\text",
        r"\frac",
        r"\dfrac",
        "%",
        "$",
        ",",
        ".",
        "(",
        ")",
        "B",
        "a",
        " ",
        "\n",
        "1",
        "0",
        "-",
        "/",
        "é",
        "≈",
        "°",
        "<|im_end|>",
        "twenty",
        "cm",
        "option",
        "**",
    ]);
    prop::collection::vec(
        prop_oneof![atoms.prop_map(str::to_string), any::<String>()],
        0..24,
    )
    .prop_map(|v| v.concat())
}

fn kind() -> impl Strategy<Value = AnswerKind> {
    prop::sample::select(vec![
        AnswerKind::Auto,
        AnswerKind::MultipleChoice,
        AnswerKind::Number,
        AnswerKind::MultiSpan,
        AnswerKind::Anls,
        AnswerKind::Exact,
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn matching_never_panics(
        response in answerish(),
        refs in prop::collection::vec(answerish(), 0..3),
        options in prop::collection::vec(answerish(), 0..3),
        kind in kind(),
    ) {
        let _ = extract_answer(&response);
        let _ = normalize_answer(&response);
        let _ = parse_number(&response);
        let j = Matcher::new(kind).with_options(options).judge(&response, &refs);
        prop_assert!((0.0..=1.0).contains(&j.score));
    }

    #[test]
    fn an_answer_matches_itself(answer in "[a-zA-Z0-9 ,.%]{1,20}") {
        prop_assume!(!answer.trim().is_empty());
        let response = format!(r"\boxed{{{answer}}}");
        prop_assert_eq!(Matcher::default().judge(&response, &[answer.as_str()]).score, 1.0);
    }

    #[test]
    fn reward_never_panics(
        flags in prop::collection::vec((any::<bool>(), any::<bool>(), 0u32..6, any::<bool>(), any::<bool>(), any::<bool>()), 0..12),
        alpha in prop_oneof![Just(f64::NAN), -1.0f64..2.0],
        h in -0.5f64..1.5,
        released in any::<bool>(),
    ) {
        let outcomes: Vec<_> = flags
            .iter()
            .map(|&(correct, parse_failed, ops, used, last_err, video)| RolloutOutcome {
                correct,
                parse_failed,
                ops_attempted: ops,
                ops_failed: ops.min(u32::from(last_err)),
                used_pixel_reasoning: used,
                last_op_errored: last_err,
                is_video: video,
            })
            .collect();
        let variant = if released { RewardVariant::ReleasedCode } else { RewardVariant::Paper };
        let cfg = RewardConfig { alpha, h, variant, ..RewardConfig::default() };
        if let Ok(g) = cfg.group_rewards(&outcomes) {
            prop_assert!((0.0..=1.0).contains(&g.rapr));
            for r in &g.rollouts {
                prop_assert!(r.total.is_finite());
                prop_assert!(r.curiosity_bonus >= 0.0 && r.penalty <= 0.0);
            }
            let adv = advantages(&g.totals(), AdvantageConfig { scale_by_std: true, eps: 0.0 });
            prop_assert!(adv.is_ok_and(|a| a.iter().all(|x| x.is_finite())));
        }
    }
}
