//! The mechanism of the paper's Figure 5 on a toy policy, with this crate's reward shaping, advantages,
//! clipped surrogate, aggregation and AdamW.
//!
//! The policy is one decision per rollout: look closer (a visual operation) or answer directly, with
//! probability `σ(θ)`. Operations neither help nor hurt the answer: whether a rollout is correct depends on
//! its query only (half the queries are answered correctly by every rollout). But looking closer sometimes
//! takes two operations (half the time), which the paper's penalty `β·min(N − n_vo, 0)` charges (N = 1,
//! β = 0.05). So the operation path starts out slightly worse than answering directly — the learning trap:
//!
//! - without the curiosity bonus (α = 0) GRPO learns to stop using operations: RaPR decays towards 0;
//! - with it (α = 0.5, H = 0.3) a rollout that used an operation earns `α·(H − RaPR)` while its query's
//!   RaPR is below H, which outweighs the expected penalty (0.025) until RaPR ≈ H − 0.05: RaPR settles near
//!   H instead of collapsing.

use burn::backend::Autodiff;
use burn::module::{Module, Param};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::activation::log_sigmoid;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor, TensorData};
use pixel_reward::{RewardConfig, RolloutOutcome};
use pixel_rl::loss::{
    LossAggregation, MiniBatchTotals, PolicyTokens, SurrogateSettings, advantages, aggregate,
    clipped_surrogate,
};
use pixel_vlm::backend::CpuBackend as B;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type AB = Autodiff<B>;

#[derive(Module, Debug)]
struct Toy<B: Backend> {
    /// The logit of using an operation.
    theta: Param<Tensor<B, 1>>,
}

const QUERIES: usize = 8;
const GROUP: usize = 8;

/// RaPR per step of a run of `steps` GRPO steps with curiosity weight `alpha`.
fn run(alpha: f64, steps: usize, seed: u64) -> Vec<f64> {
    let device = Default::default();
    let mut policy = Toy::<AB> {
        theta: Param::from_tensor(Tensor::zeros([1], &device)),
    };
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).init();
    let reward = RewardConfig {
        alpha,
        ..RewardConfig::default()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut rapr = Vec::new();
    for _ in 0..steps {
        let p_use = 1.0 / (1.0 + (-policy.theta.val().into_scalar() as f64).exp());
        let mut used = Vec::new();
        let mut rewards = Vec::new();
        for q in 0..QUERIES {
            let outcomes: Vec<RolloutOutcome> = (0..GROUP)
                .map(|_| {
                    let look = rng.random::<f64>() < p_use;
                    used.push(look);
                    let ops = if look {
                        1 + u32::from(rng.random::<bool>())
                    } else {
                        0
                    };
                    RolloutOutcome::new(q % 2 == 0, ops)
                })
                .collect();
            let group = reward.group_rewards(&outcomes).expect("rewards");
            rewards.extend(group.totals().iter().map(|&r| r as f32));
        }
        rapr.push(used.iter().filter(|&&u| u).count() as f64 / used.len() as f64);
        let adv = advantages(&rewards, GROUP, false).expect("advantages");
        let n = used.len();
        // One sampled "token" per rollout: the decision, with log σ(θ) or log σ(−θ).
        let sign: Vec<f32> = used.iter().map(|&u| if u { 1.0 } else { -1.0 }).collect();
        let sign = Tensor::<AB, 2>::from_data(TensorData::new(sign, [n, 1]), &device);
        let logp = log_sigmoid(policy.theta.val().reshape([1, 1]).expand([n, 1]) * sign);
        let tokens = PolicyTokens {
            old_logp: logp.clone().detach(),
            logp,
            ref_logp: None,
            advantages: Tensor::from_data(TensorData::new(adv, [n]), &device),
            mask: Tensor::<AB, 2, Bool>::from_data(TensorData::new(vec![true; n], [n, 1]), &device),
        };
        let mask = tokens.mask.clone();
        let surrogate = clipped_surrogate(tokens, &SurrogateSettings::RECIPE).expect("surrogate");
        let totals = MiniBatchTotals {
            tokens: n,
            sequences: n,
        };
        let loss =
            aggregate(surrogate.loss, mask, LossAggregation::TokenMean, totals).expect("loss");
        let grads = GradientsParams::from_grads(loss.backward(), &policy);
        policy = optim.step(0.02, policy, grads);
    }
    rapr
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

#[test]
fn with_curiosity_rapr_stays_near_h_and_without_it_rapr_decays() {
    let steps = 400;
    for seed in [1, 2] {
        let curious = run(0.5, steps, seed);
        let control = run(0.0, steps, seed);
        let (c_end, k_end) = (mean(&curious[steps - 50..]), mean(&control[steps - 50..]));
        eprintln!(
            "seed {seed}: RaPR start {:.2}; last 50 steps: curiosity {c_end:.3}, no curiosity {k_end:.3}",
            mean(&curious[..10])
        );
        assert!(
            (0.4..0.6).contains(&mean(&curious[..10])),
            "starts near 0.5"
        );
        assert!(
            (0.15..0.4).contains(&c_end),
            "with the bonus RaPR settles near H = 0.3: {c_end}"
        );
        assert!(k_end < 0.08, "without it RaPR decays: {k_end}");
        assert!(
            mean(&control[150..200]) > k_end,
            "and keeps decaying (the trap)"
        );
    }
}
