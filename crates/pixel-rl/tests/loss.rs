//! `pixel_rl::loss`: advantages, the clipped surrogate, the KL term and the aggregation modes, on
//! hand-computed examples and against TRL's `GRPOTrainer._compute_loss` recorded in
//! `tests/fixtures/grpo_trl.json` (regenerate with `scripts/gen_rl_fixtures.py`).

use burn::backend::Autodiff;
use burn::tensor::{Bool, Tensor, TensorData};
use pixel_rl::RlError;
use pixel_rl::loss::{
    LossAggregation, MiniBatchTotals, PolicyTokens, Surrogate, SurrogateSettings, advantages,
    aggregate, clipped_surrogate,
};
use pixel_vlm::backend::CpuBackend;
use serde_json::Value;

type Ad = Autodiff<CpuBackend>;

const LN2: f32 = std::f32::consts::LN_2;

fn t2(rows: &[Vec<f32>]) -> Tensor<Ad, 2> {
    let s = rows.first().map_or(0, Vec::len);
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), s]), &Default::default())
}

fn t1(v: &[f32]) -> Tensor<Ad, 1> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Default::default())
}

fn mask2(rows: &[Vec<bool>]) -> Tensor<Ad, 2, Bool> {
    let s = rows.first().map_or(0, Vec::len);
    let flat: Vec<bool> = rows.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), s]), &Default::default())
}

fn vals<const D: usize>(t: Tensor<Ad, D>) -> Vec<f32> {
    t.into_data().iter::<f32>().collect()
}

/// `∂loss/∂param` (the parameter a `require_grad` leaf).
fn grad_of(param: &Tensor<Ad, 2>, loss: Tensor<Ad, 1>) -> Vec<f32> {
    let grads = loss.backward();
    param
        .grad(&grads)
        .expect("a gradient")
        .into_data()
        .iter::<f32>()
        .collect()
}

fn close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= tol * w.abs().max(1.0),
            "{got:?} vs {want:?}"
        );
    }
}

/// The hand example: two completions of three tokens, `logp = −1` everywhere, ratios chosen through
/// `old = logp − ln(ratio)`:
///
/// - row 0, A = +1, ratios (1.5, 1.2, 0.5): losses −min(1.5, 1.35) = −1.35 (clipped high), −1.2,
///   −min(0.5, 0.8) = −0.5 (below 1 − ε_low but A > 0: not clipped);
/// - row 1, A = −2, ratios (0.5, 1.5, ·), last token masked with a NaN old log-prob: −min(−1, −1.6) = 1.6
///   (clipped low), −min(−3, −2.7) = 3.0 (above 1 + ε_high but A < 0: not clipped), 0.
struct Hand {
    logp: Tensor<Ad, 2>,
    old: Tensor<Ad, 2>,
    adv: Tensor<Ad, 1>,
    mask: Tensor<Ad, 2, Bool>,
}

fn hand() -> Hand {
    let old = |r: f32| -1.0 - r.ln();
    Hand {
        logp: t2(&[vec![-1.0; 3], vec![-1.0; 3]]).require_grad(),
        old: t2(&[
            vec![old(1.5), old(1.2), old(0.5)],
            vec![old(0.5), old(1.5), f32::NAN],
        ]),
        adv: t1(&[1.0, -2.0]),
        mask: mask2(&[vec![true; 3], vec![true, true, false]]),
    }
}

fn surrogate(h: &Hand, reference: Option<Tensor<Ad, 2>>, beta: f32) -> Surrogate<Ad> {
    let settings = SurrogateSettings {
        kl_beta: beta,
        ..SurrogateSettings::RECIPE
    };
    clipped_surrogate(
        PolicyTokens {
            logp: h.logp.clone(),
            old_logp: h.old.clone(),
            ref_logp: reference,
            advantages: h.adv.clone(),
            mask: h.mask.clone(),
        },
        &settings,
    )
    .unwrap()
}

const HAND_TOTALS: MiniBatchTotals = MiniBatchTotals {
    tokens: 5,
    sequences: 2,
};

#[test]
fn clipped_surrogate_hand_example() {
    let h = hand();
    let out = surrogate(&h, None, 0.0);
    close(&vals(out.loss), &[-1.35, -1.2, -0.5, 1.6, 3.0, 0.0], 1e-6);
    let s = out.stats;
    assert_eq!((s.tokens, s.clipped_low, s.clipped_high), (5, 1, 1));
    assert!(
        (s.clip_low_fraction() - 0.2).abs() < 1e-12 && (s.clip_high_fraction() - 0.2).abs() < 1e-12
    );
    assert!((s.ratio_mean().unwrap() - 1.04).abs() < 1e-6, "{s:?}");
    assert!((s.ratio_min.unwrap() - 0.5).abs() < 1e-6 && (s.ratio_max.unwrap() - 1.5).abs() < 1e-6);
    assert_eq!(s.kl_sum, None);
}

/// Σ = −3.05 + 4.6 = 1.55 over 5 tokens; row means −3.05/3 and 4.6/2.
#[test]
fn aggregation_modes_hand_values() {
    let h = hand();
    let loss = surrogate(&h, None, 0.0).loss;
    let agg = |mode| vals(aggregate(loss.clone(), h.mask.clone(), mode, HAND_TOTALS).unwrap())[0];
    assert!((agg(LossAggregation::TokenMean) - 0.31).abs() < 1e-6);
    let seq = (-3.05 / 3.0 + 2.3) / 2.0;
    assert!((agg(LossAggregation::SequenceMean) - seq).abs() < 1e-6);
    assert!((agg(LossAggregation::ConstantNormalizer(200.0)) - 0.00775).abs() < 1e-8);
    assert_eq!(
        MiniBatchTotals::from_masks([&[true, true, true][..], &[true, true, false][..]]),
        HAND_TOTALS
    );
}

/// ∂loss/∂logp is −A·ratio where the unclipped term is the minimum, 0 where the clipped one is, and 0 at the
/// masked token (whose old log-prob is NaN); token-mean divides by 5, sequence-mean by (row tokens × rows).
#[test]
fn surrogate_gradients_hand_values() {
    let h = hand();
    let cases = [
        (
            LossAggregation::TokenMean,
            [0.0, -1.2 / 5.0, -0.5 / 5.0, 0.0, 3.0 / 5.0, 0.0],
        ),
        (
            LossAggregation::SequenceMean,
            [0.0, -1.2 / 6.0, -0.5 / 6.0, 0.0, 3.0 / 4.0, 0.0],
        ),
        (
            LossAggregation::ConstantNormalizer(2.0),
            [0.0, -0.6, -0.25, 0.0, 1.5, 0.0],
        ),
    ];
    for (mode, want) in cases {
        let loss = aggregate(
            surrogate(&h, None, 0.0).loss,
            h.mask.clone(),
            mode,
            HAND_TOTALS,
        )
        .unwrap();
        let g = grad_of(&h.logp, loss);
        close(&g, &want, 1e-6);
        assert_eq!(g[5], 0.0, "{mode:?}");
    }
}

/// k3 with `ref − logp` = (ln 2, −ln 2, 0): (2 − ln 2 − 1, ½ + ln 2 − 1, 0) = (0.306853, 0.193147, 0), mean ⅙;
/// with A = 0 and ratio 1 the policy term vanishes, so the loss is β·k3 and ∂/∂logp = β·(1 − e^(ref−logp)).
#[test]
fn k3_kl_term_hand_values() {
    let logp = t2(&[vec![-1.0; 3]]).require_grad();
    let reference = t2(&[vec![-1.0 + LN2, -1.0 - LN2, -1.0]]);
    let h = Hand {
        logp: logp.clone(),
        old: t2(&[vec![-1.0; 3]]),
        adv: t1(&[0.0]),
        mask: mask2(&[vec![true; 3]]),
    };
    let k3 = [2.0 - LN2 - 1.0, 0.5 + LN2 - 1.0, 0.0];
    let out = surrogate(&h, Some(reference.clone()), 0.1);
    close(&vals(out.loss.clone()), &k3.map(|k| 0.1 * k), 1e-6);
    assert!((out.stats.kl_mean().unwrap() - 0.5 / 3.0).abs() < 1e-6);
    let totals = MiniBatchTotals {
        tokens: 3,
        sequences: 1,
    };
    let loss = aggregate(out.loss, h.mask.clone(), LossAggregation::TokenMean, totals).unwrap();
    let g = grad_of(&logp, loss);
    close(
        &g,
        &[0.1 * (1.0 - 2.0) / 3.0, 0.1 * (1.0 - 0.5) / 3.0, 0.0],
        1e-6,
    );
    // β = 0 with reference log-probs: no KL in the loss, still in the statistics.
    let out = surrogate(&h, Some(reference), 0.0);
    close(&vals(out.loss), &[0.0; 3], 0.0);
    assert!((out.stats.kl_mean().unwrap() - 0.5 / 3.0).abs() < 1e-6);
}

/// Padding holding NaN / ±∞ in every input gets exactly zero gradient and leaves the rest finite.
#[test]
fn masked_tokens_get_zero_gradient_whatever_they_hold() {
    let logp = t2(&[
        vec![-0.5, f32::NAN, -2.0],
        vec![-1.0, -0.3, f32::NEG_INFINITY],
    ])
    .require_grad();
    let h = Hand {
        logp: logp.clone(),
        old: t2(&[
            vec![-0.7, f32::NEG_INFINITY, -1.5],
            vec![-1.2, -0.1, f32::NAN],
        ]),
        adv: t1(&[0.7, -1.3]),
        mask: mask2(&[vec![true, false, true], vec![true, true, false]]),
    };
    let reference = t2(&[vec![-0.6, f32::INFINITY, -1.9], vec![-1.1, -0.2, f32::NAN]]);
    for mode in [
        LossAggregation::TokenMean,
        LossAggregation::SequenceMean,
        LossAggregation::ConstantNormalizer(200.0),
    ] {
        let out = surrogate(&h, Some(reference.clone()), 0.04);
        assert_eq!(vals(out.loss.clone())[1], 0.0);
        assert!(
            out.stats.kl_mean().unwrap().is_finite() && out.stats.ratio_mean().unwrap().is_finite()
        );
        let totals = MiniBatchTotals {
            tokens: 4,
            sequences: 2,
        };
        let loss = aggregate(out.loss, h.mask.clone(), mode, totals).unwrap();
        assert!(vals(loss.clone())[0].is_finite());
        let g = grad_of(&logp, loss);
        assert!(g.iter().all(|x| x.is_finite()), "{mode:?}: {g:?}");
        assert_eq!((g[1], g[5]), (0.0, 0.0), "{mode:?}: {g:?}");
        assert!(g[0] != 0.0 && g[3] != 0.0, "{mode:?}: {g:?}");
    }
}

/// Four completions split into micro-batches of 1 and 3 rows with different token counts: with the
/// mini-batch totals, the micro-batch losses add up to the one-shot loss and their gradients to the one-shot
/// gradient, in every mode (while each micro-batch's own token mean would not).
#[test]
fn micro_batches_with_mini_batch_totals_equal_one_shot() {
    let rows = vec![
        vec![-0.2, -1.1, -0.4, -2.0],
        vec![-0.9, -0.3, -1.5, -0.8],
        vec![-1.7, -0.6, -0.1, -1.2],
        vec![-0.5, -0.5, -0.9, -0.4],
    ];
    let old_rows = [
        vec![-0.5, -0.8, -0.9, -1.0],
        vec![-0.7, -0.6, -1.1, -0.2],
        vec![-1.2, -0.9, -0.6, -1.9],
        vec![-0.1, -0.8, -0.4, -0.6],
    ];
    let masks = [
        vec![true, true, true, true],
        vec![true, false, false, false],
        vec![true, true, false, false],
        vec![false, true, true, true],
    ];
    let adv = [1.2f32, -0.4, 0.3, -0.9];
    let totals = MiniBatchTotals::from_masks(masks.iter().map(Vec::as_slice));
    assert_eq!(
        totals,
        MiniBatchTotals {
            tokens: 10,
            sequences: 4
        }
    );
    let part = |logp: &Tensor<Ad, 2>, range: std::ops::Range<usize>, mode, totals| {
        let out = clipped_surrogate(
            PolicyTokens {
                logp: logp.clone().slice([range.clone(), 0..4]),
                old_logp: t2(&old_rows[range.clone()]),
                ref_logp: Some(t2(&old_rows[range.clone()]).add_scalar(0.1)),
                advantages: t1(&adv[range.clone()]),
                mask: mask2(&masks[range.clone()]),
            },
            &SurrogateSettings {
                kl_beta: 0.04,
                ..SurrogateSettings::RECIPE
            },
        )
        .unwrap();
        aggregate(out.loss, mask2(&masks[range]), mode, totals).unwrap()
    };
    for mode in [
        LossAggregation::TokenMean,
        LossAggregation::SequenceMean,
        LossAggregation::ConstantNormalizer(200.0),
    ] {
        let one = t2(&rows).require_grad();
        let whole = part(&one, 0..4, mode, totals);
        let whole_value = vals(whole.clone())[0];
        let g_whole = grad_of(&one, whole);

        let split = t2(&rows).require_grad();
        let first = part(&split, 0..1, mode, totals);
        let second = part(&split, 1..4, mode, totals);
        let sum = vals(first.clone())[0] + vals(second.clone())[0];
        assert!(
            (sum - whole_value).abs() < 1e-6,
            "{mode:?}: {sum} vs {whole_value}"
        );
        let g1 = grad_of(&split, first);
        let g2 = grad_of(&split, second);
        let accumulated: Vec<f32> = g1.iter().zip(&g2).map(|(a, b)| a + b).collect();
        close(&accumulated, &g_whole, 1e-6);

        if mode == LossAggregation::TokenMean {
            // Each micro-batch normalised by its own tokens (4 and 6) gives a different, wrong sum.
            let own = |range: std::ops::Range<usize>| {
                let n = masks[range.clone()]
                    .iter()
                    .flatten()
                    .filter(|&&m| m)
                    .count();
                let rows = range.len();
                vals(part(
                    &split,
                    range,
                    mode,
                    MiniBatchTotals {
                        tokens: n,
                        sequences: rows,
                    },
                ))[0]
            };
            let naive = own(0..1) + own(1..4);
            assert!(
                (naive - whole_value).abs() > 1e-3,
                "{naive} vs {whole_value}"
            );
        }
    }
}

/// Rewards (1, 0, 1, 0 | ½, ½, ½, ½ | 3): means ½, ½, 3; unbiased std of the first group √(1/3).
#[test]
fn advantages_hand_values() {
    let rewards = [1.0, 0.0, 1.0, 0.0, 0.5, 0.5, 0.5, 0.5];
    let a = 0.865_875_4_f32; // 0.5 / (√(1/3) + 1e-4)
    close(
        &advantages(&rewards, 4, true).unwrap(),
        &[a, -a, a, -a, 0.0, 0.0, 0.0, 0.0],
        1e-6,
    );
    close(
        &advantages(&rewards, 4, false).unwrap(),
        &[0.5, -0.5, 0.5, -0.5, 0.0, 0.0, 0.0, 0.0],
        1e-7,
    );
    assert_eq!(advantages(&[3.0, 1.0], 1, true).unwrap(), [0.0, 0.0]);
    assert_eq!(advantages(&[], 4, true).unwrap(), Vec::<f32>::new());
}

#[test]
fn advantages_refuse_bad_input() {
    assert!(matches!(
        advantages(&[1.0; 7], 4, true),
        Err(RlError::GroupSize {
            len: 7,
            group_size: 4
        })
    ));
    assert!(matches!(
        advantages(&[1.0; 4], 0, true),
        Err(RlError::GroupSize { .. })
    ));
    assert!(matches!(
        advantages(&[1.0, f32::NAN, 0.0, 1.0], 2, false),
        Err(RlError::NonFiniteReward { index: 1, .. })
    ));
}

#[test]
fn surrogate_and_aggregate_refuse_bad_input() {
    let h = hand();
    let call = |adv: Tensor<Ad, 1>, mask: Tensor<Ad, 2, Bool>, settings: SurrogateSettings| {
        clipped_surrogate(
            PolicyTokens {
                logp: h.logp.clone(),
                old_logp: h.old.clone(),
                ref_logp: None,
                advantages: adv,
                mask,
            },
            &settings,
        )
    };
    let recipe = SurrogateSettings::RECIPE;
    assert!(matches!(
        call(t1(&[1.0]), h.mask.clone(), recipe),
        Err(RlError::Shape(_))
    ));
    assert!(matches!(
        call(
            h.adv.clone(),
            mask2(&[vec![true; 2], vec![true; 2]]),
            recipe
        ),
        Err(RlError::Shape(_))
    ));
    for bad in [
        SurrogateSettings {
            epsilon_low: 1.0,
            ..recipe
        },
        SurrogateSettings {
            epsilon_high: -0.1,
            ..recipe
        },
        SurrogateSettings {
            kl_beta: f32::NAN,
            ..recipe
        },
    ] {
        assert!(matches!(
            call(h.adv.clone(), h.mask.clone(), bad),
            Err(RlError::Setting(_))
        ));
    }
    let loss = surrogate(&h, None, 0.0).loss;
    let agg = |mask, mode, totals| aggregate(loss.clone(), mask, mode, totals);
    assert!(matches!(
        agg(
            mask2(&[vec![true; 3]]),
            LossAggregation::TokenMean,
            HAND_TOTALS
        ),
        Err(RlError::Shape(_))
    ));
    let too_few = MiniBatchTotals {
        tokens: 5,
        sequences: 1,
    };
    assert!(matches!(
        agg(h.mask.clone(), LossAggregation::SequenceMean, too_few),
        Err(RlError::Shape(_))
    ));
    for c in [0.0, -1.0, f32::INFINITY] {
        assert!(matches!(
            agg(
                h.mask.clone(),
                LossAggregation::ConstantNormalizer(c),
                HAND_TOTALS
            ),
            Err(RlError::Setting(_))
        ));
    }
}

fn floats(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(items) => items.iter().flat_map(floats).collect(),
        Value::Number(n) => vec![n.as_f64().expect("number") as f32],
        other => panic!("not a number: {other}"),
    }
}

fn matrix(v: &Value) -> Vec<Vec<f32>> {
    v.as_array().unwrap().iter().map(floats).collect()
}

/// TRL's `_compute_loss` on a random batch (8 completions, 2 groups): advantages, per-micro-batch losses
/// ("dapo" ↔ token-mean, "grpo" ↔ sequence-mean, with and without the KL term, one or two micro-batches),
/// clip-ratio and KL metrics, and the accumulated gradient with respect to the log-probs.
#[test]
fn agrees_with_trl_grpo_trainer() {
    let fx: Value = serde_json::from_str(include_str!("fixtures/grpo_trl.json")).unwrap();
    let rewards = floats(&fx["rewards"]);
    let group = fx["group_size"].as_u64().unwrap() as usize;
    let adv = advantages(&rewards, group, true).unwrap();
    close(&adv, &floats(&fx["advantages_std"]), 2e-6);
    close(
        &advantages(&rewards, group, false).unwrap(),
        &floats(&fx["advantages_plain"]),
        1e-6,
    );

    let logp = matrix(&fx["logp"]);
    let old = matrix(&fx["old_logp"]);
    let reference = matrix(&fx["ref_logp"]);
    let masks: Vec<Vec<bool>> = matrix(&fx["mask"])
        .iter()
        .map(|r| r.iter().map(|&m| m != 0.0).collect())
        .collect();
    let totals = MiniBatchTotals::from_masks(masks.iter().map(Vec::as_slice));
    let b = logp.len();
    for case in fx["cases"].as_array().unwrap() {
        let beta = case["beta"].as_f64().unwrap() as f32;
        let micro = case["micro_batches"].as_u64().unwrap() as usize;
        let mode = match case["loss_type"].as_str().unwrap() {
            "dapo" => LossAggregation::TokenMean,
            "grpo" => LossAggregation::SequenceMean,
            other => panic!("{other}"),
        };
        let settings = SurrogateSettings {
            epsilon_low: fx["epsilon_low"].as_f64().unwrap() as f32,
            epsilon_high: fx["epsilon_high"].as_f64().unwrap() as f32,
            kl_beta: beta,
        };
        let param = t2(&logp).require_grad();
        let mut grad = vec![0.0f32; b * logp[0].len()];
        let rows = b / micro;
        for k in 0..micro {
            let r = k * rows..(k + 1) * rows;
            let out = clipped_surrogate(
                PolicyTokens {
                    logp: param.clone().slice([r.clone(), 0..logp[0].len()]),
                    old_logp: t2(&old[r.clone()]),
                    ref_logp: (beta != 0.0).then(|| t2(&reference[r.clone()])),
                    advantages: t1(&adv[r.clone()]),
                    mask: mask2(&masks[r.clone()]),
                },
                &settings,
            )
            .unwrap();
            let loss = aggregate(out.loss, mask2(&masks[r]), mode, totals).unwrap();
            let want = case["losses"][k].as_f64().unwrap() as f32;
            let got = vals(loss.clone())[0];
            assert!(
                (got - want).abs() < 2e-6,
                "{case:?} micro {k}: {got} vs {want}"
            );
            let metrics = &case["metrics"][k];
            let s = out.stats;
            assert!((s.clip_low_fraction() - metrics["clip_low"].as_f64().unwrap()).abs() < 1e-6);
            assert!((s.clip_high_fraction() - metrics["clip_high"].as_f64().unwrap()).abs() < 1e-6);
            match metrics["kl"].as_f64() {
                Some(kl) => assert!((s.kl_mean().unwrap() - kl).abs() < 1e-6, "{s:?} vs {kl}"),
                None => assert_eq!(s.kl_sum, None),
            }
            for (acc, g) in grad.iter_mut().zip(grad_of(&param, loss)) {
                *acc += g;
            }
        }
        close(&grad, &floats(&case["grad"]), 1e-6);
    }
}

/// Merged micro-batch statistics equal the statistics of the batch in one piece.
#[test]
fn stats_merge_across_micro_batches() {
    let h = hand();
    let whole = surrogate(&h, Some(h.logp.clone().add_scalar(0.2)), 0.0).stats;
    let piece = |r: std::ops::Range<usize>| {
        clipped_surrogate(
            PolicyTokens {
                logp: h.logp.clone().slice([r.clone(), 0..3]),
                old_logp: h.old.clone().slice([r.clone(), 0..3]),
                ref_logp: Some(h.logp.clone().slice([r.clone(), 0..3]).add_scalar(0.2)),
                advantages: h.adv.clone().slice([r.clone()]),
                mask: h.mask.clone().slice([r, 0..3]),
            },
            &SurrogateSettings::RECIPE,
        )
        .unwrap()
        .stats
    };
    let mut merged = piece(0..1);
    merged.merge(&piece(1..2));
    assert_eq!(
        (merged.tokens, merged.clipped_low, merged.clipped_high),
        (5, 1, 1)
    );
    assert_eq!(
        (merged.ratio_min, merged.ratio_max),
        (whole.ratio_min, whole.ratio_max)
    );
    assert!((merged.ratio_sum - whole.ratio_sum).abs() < 1e-6);
    assert!((merged.kl_mean().unwrap() - whole.kl_mean().unwrap()).abs() < 1e-7);
}
