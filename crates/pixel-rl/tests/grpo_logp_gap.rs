//! The trainer's `logp_gap` metric (mean |training - rollout| log-prob of the sampled tokens before any
//! update): measured on the first training forward when the old log-probs come from the rollout (no extra
//! forward pass), on the recomputation pass otherwise; reported and small either way.

mod common;

use burn::backend::Autodiff;
use common::{checkpoint, short_rollout, text_tasks};
use pixel_agent::Trajectory;
use pixel_rl::config::GrpoConfig;
use pixel_rl::data::Task;
use pixel_rl::reward::PerRollout;
use pixel_rl::trainer::GrpoTrainer;
use pixel_vlm::Qwen25Vl;
use pixel_vlm::backend::CpuBackend as B;
use pixel_vlm::processor::Processor;

type AB = Autodiff<B>;

fn first_gap(recompute_old_logprobs: bool) -> f64 {
    let dir = checkpoint();
    let processor = Processor::from_pretrained(dir.path()).expect("processor");
    let model = Qwen25Vl::<AB>::from_pretrained(dir.path(), &Default::default()).expect("model");
    let mut config = GrpoConfig::demo(1)
        .with_queries_per_buffer(1)
        .with_updates_per_buffer(1)
        .with_micro_batch_rows(8)
        .with_rollout(short_rollout(4));
    config.recompute_old_logprobs = recompute_old_logprobs;
    // Half the rows rewarded: the group is trained.
    let reward = PerRollout(|_: &Task, t: &Trajectory| (t.row % 2) as f64);
    let mut trainer =
        GrpoTrainer::new(model, processor, text_tasks(1), reward, config).expect("trainer");
    let records = trainer.iterate().expect("iteration");
    assert_eq!(records[0].get("groups_trained"), Some(1.0), "{records:?}");
    records[0]
        .get("logp_gap")
        .expect("logp_gap on the first step")
}

#[test]
fn the_logp_gap_is_reported_and_small_with_and_without_recomputed_old_logprobs() {
    // On-policy it comes from the training forward (autodiff), else from the recomputation pass
    // (inference, whose fused softmax rounds differently): both are the rollout's f32 rounding away.
    for recompute in [false, true] {
        let gap = first_gap(recompute);
        assert!((0.0..1e-5).contains(&gap), "recompute {recompute}: {gap}");
    }
}
