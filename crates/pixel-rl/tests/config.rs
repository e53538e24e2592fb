//! The trainer configs: presets differ exactly where `docs/training.md` says, round-trip through JSON, and
//! out-of-range fields are refused by name.

use burn::config::Config;
use pixel_reward::RewardVariant;
use pixel_rl::config::{GrpoConfig, SftConfig};
use pixel_rl::loss::LossAggregation;
use pixel_rl::sft::MaskRule;

#[test]
fn grpo_presets_differ_where_documented() {
    let paper = GrpoConfig::paper(10);
    assert_eq!(paper, GrpoConfig::new(10));
    assert_eq!(
        (
            paper.group_size,
            paper.queries_per_buffer,
            paper.updates_per_buffer
        ),
        (8, 512, 16)
    );
    assert_eq!(paper.learning_rate, 1e-6);
    assert_eq!((paper.warmup_ratio, paper.min_lr_rate), (0.03, 0.5));
    assert_eq!(paper.adamw.beta_2, 0.95);
    assert_eq!(paper.adamw.weight_decay, 0.0);
    assert_eq!(
        (
            paper.surrogate.epsilon_low,
            paper.surrogate.epsilon_high,
            paper.surrogate.kl_beta
        ),
        (0.2, 0.35, 0.0)
    );
    assert_eq!(paper.reward.variant, RewardVariant::Paper);
    assert_eq!(paper.aggregation, LossAggregation::TokenMean);
    assert!(paper.recompute_old_logprobs && paper.drop_uniform_groups && paper.selective_replay);
    assert!(paper.train_vision && !paper.scale_advantages_by_std && !paper.mask_truncated);

    let official = GrpoConfig::official(10);
    assert_eq!(official.reward.variant, RewardVariant::ReleasedCode);
    assert_eq!(
        official.aggregation,
        LossAggregation::ConstantNormalizer(200.0)
    );
    let same = GrpoConfig {
        reward: paper.reward,
        aggregation: paper.aggregation,
        ..official.clone()
    };
    assert_eq!(
        same, paper,
        "official differs in reward and aggregation only"
    );

    let demo = GrpoConfig::demo(10);
    assert_eq!((demo.queries_per_buffer, demo.updates_per_buffer), (8, 2));
    assert_eq!(demo.learning_rate, 1e-4);
    assert!(!demo.recompute_old_logprobs && !demo.selective_replay);
    assert_eq!(demo.rollout.max_new_tokens, 64);
}

#[test]
fn sft_presets_differ_in_the_mask_rule() {
    assert_eq!(SftConfig::paper().mask_rule, MaskRule::Paper);
    assert_eq!(
        SftConfig::official().mask_rule,
        MaskRule::ReleasedLastTwoTurns
    );
    let paper = SftConfig::paper();
    assert_eq!(
        (
            paper.learning_rate,
            paper.warmup_ratio,
            paper.min_lr_rate,
            paper.batch_size,
            paper.epochs
        ),
        (1e-6, 0.1, 0.0, 16, 5)
    );
    assert!(paper.freeze_vision);
}

#[test]
fn configs_round_trip_through_json_files() {
    let dir = tempfile::tempdir().expect("temp");
    let config = GrpoConfig::official(7).with_seed(42);
    let path = dir.path().join("grpo.json");
    config.save(&path).expect("save");
    assert_eq!(GrpoConfig::load(&path).expect("load"), config);
    let sft = SftConfig::demo().with_max_grad_norm(None);
    let path = dir.path().join("sft.json");
    sft.save(&path).expect("save");
    assert_eq!(SftConfig::load(&path).expect("load"), sft);
}

#[test]
fn out_of_range_fields_are_refused_by_name() {
    for (config, field) in [
        (GrpoConfig::paper(1).with_group_size(1), "group_size"),
        (GrpoConfig::paper(0), "iterations"),
        (
            GrpoConfig::paper(1).with_learning_rate(-1.0),
            "learning_rate",
        ),
        (
            GrpoConfig::paper(1).with_max_draw_factor(0.5),
            "max_draw_factor",
        ),
        (
            GrpoConfig::demo(1).with_updates_per_buffer(9),
            "updates_per_buffer",
        ),
    ] {
        let err = config.validate().expect_err(field).to_string();
        assert!(err.contains(field), "{field}: {err}");
    }
    let err = SftConfig::paper()
        .with_warmup_ratio(1.5)
        .validate()
        .expect_err("warmup");
    assert!(err.to_string().contains("warmup_ratio"));
}
