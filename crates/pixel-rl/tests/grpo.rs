//! GRPO end to end on the committed tiny checkpoint: rollouts from `pixel-agent`, the clipped surrogate
//! on the policy's log-probs, AdamW. On a prompt whose reward is 1 for one of the two answers the rollout
//! samples (top-k 2), the probability of that answer goes from under a half to above 0.9.

mod common;

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::activation::log_softmax;
use common::checkpoint;
use pixel_agent::{LocalEngine, Media, Query, RolloutConfig, Trajectory, run_group};
use pixel_rl::grpo::policy_tokens;
use pixel_rl::loss::{
    LossAggregation, MiniBatchTotals, SurrogateSettings, advantages, aggregate, clipped_surrogate,
};
use pixel_vlm::backend::CpuBackend as B;
use pixel_vlm::processor::Processor;
use pixel_vlm::sampling::SamplingParams;
use pixel_vlm::{ForwardInput, Qwen25Vl};

type AB = Autodiff<B>;

fn inference(model: &Qwen25Vl<AB>) -> Qwen25Vl<B> {
    Qwen25Vl {
        model: model.model.valid(),
        config: model.config.clone(),
    }
}

/// Next-token log-probs after `prompt` (ids and positions of a rollout's prompt).
fn next_logprobs(model: &Qwen25Vl<B>, ids: &[u32], positions: &[Vec<i64>; 3]) -> Vec<f32> {
    let positions = positions.concat();
    let input = ForwardInput {
        input_ids: ids,
        batch: 1,
        positions: &positions,
        valid: None,
        generated: None,
        images: None,
        videos: None,
    };
    let hidden = model.forward_train(&input).expect("forward");
    let n = ids.len();
    let logits = model.logits(hidden.narrow(1, n - 1, 1));
    log_softmax(logits, 2)
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32")
}

#[test]
fn grpo_raises_the_probability_of_the_rewarded_answer_above_0_9() {
    let dir = checkpoint();
    let processor = Processor::from_pretrained(dir.path()).expect("processor");
    let device = Default::default();
    let mut model = Qwen25Vl::<AB>::from_pretrained(dir.path(), &device).expect("tiny model");
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).init();
    let query = Query {
        media: Media::Images(Vec::new()),
        question: "Pick one.".into(),
    };
    let mut rollout = RolloutConfig {
        first_turn: SamplingParams::with_temperature(1.0).top_k(2),
        max_new_tokens: 1,
        // A short prompt keeps the test fast (the tool block is ~800 tokens with the test tokenizer).
        system: Some("You are a helpful assistant.".into()),
        ..RolloutConfig::default()
    };
    let group = 8;

    // The prompt, and the two answers top-k 2 samples from; the rewarded one is the less likely.
    let prompt = {
        let policy = inference(&model);
        let mut engine = LocalEngine::new(&policy, &processor, 256);
        let out = run_group(&mut engine, &query, 1, &rollout).expect("rollout");
        let r = out[0].tokens.clone().expect("record");
        let n = r.len() - 1;
        (
            r.token_ids[..n].to_vec(),
            std::array::from_fn::<Vec<i64>, 3, _>(|a| r.positions[a][..n].to_vec()),
        )
    };
    let (rewarded, other) = {
        let lp = next_logprobs(&inference(&model), &prompt.0, &prompt.1);
        let mut order: Vec<u32> = (0..lp.len() as u32).collect();
        order.sort_by(|&a, &b| lp[b as usize].total_cmp(&lp[a as usize]));
        (order[1], order[0])
    };
    let share = |model: &Qwen25Vl<AB>| -> f32 {
        let lp = next_logprobs(&inference(model), &prompt.0, &prompt.1);
        let (a, b) = (lp[rewarded as usize].exp(), lp[other as usize].exp());
        a / (a + b)
    };
    let start = share(&model);
    assert!(
        start <= 0.5,
        "the rewarded answer starts as the less likely: {start}"
    );

    let mut end = start;
    let mut updates = 0;
    for step in 0..60 {
        rollout.seed = step;
        let policy = inference(&model);
        let mut engine = LocalEngine::new(&policy, &processor, 256);
        let trajectories: Vec<Trajectory> =
            run_group(&mut engine, &query, group, &rollout).expect("rollouts");
        let rewards: Vec<f32> = trajectories
            .iter()
            .map(|t| f32::from(u8::from(t.turns[0].tokens.first() == Some(&rewarded))))
            .collect();
        let adv = advantages(&rewards, group, false).expect("advantages");
        if adv.iter().all(|a| *a == 0.0) {
            continue; // a reward-uniform group teaches nothing
        }
        let refs: Vec<&Trajectory> = trajectories.iter().collect();
        let tokens = policy_tokens(&model, &processor, &refs, &adv, &rollout).expect("tokens");
        let masks: Vec<&[bool]> = refs
            .iter()
            .map(|t| &t.tokens.as_ref().expect("record").loss_mask[1..])
            .collect();
        let totals = MiniBatchTotals::from_masks(masks);
        let mask = tokens.mask.clone();
        let surrogate = clipped_surrogate(tokens, &SurrogateSettings::RECIPE).expect("surrogate");
        let loss =
            aggregate(surrogate.loss, mask, LossAggregation::TokenMean, totals).expect("aggregate");
        let grads = GradientsParams::from_grads(loss.backward(), &model.model);
        model.model = optim.step(3e-5, model.model, grads);
        updates += 1;
        end = share(&model);
        if end > 0.95 {
            break;
        }
    }
    eprintln!("rewarded answer's share: {start:.3} -> {end:.3} in {updates} updates");
    assert!(
        updates >= 3,
        "{updates} updates: learning must take several steps to be a test"
    );
    assert!(
        end > 0.9,
        "the rewarded answer's share went from {start} to {end}"
    );
}
