//! Where GRPO's rollouts come from ([`Environment`], in-process by default) and what one iteration's
//! rollouts measured.

use burn::tensor::backend::Backend;
use pixel_agent::{LocalEngine, RolloutConfig, RolloutEnd, Trajectory, run_group};
use pixel_ops::EndReason;
use pixel_vlm::Qwen25Vl;
use pixel_vlm::processor::Processor;

use crate::data::Task;
use crate::error::Result;
use crate::metrics::MetricRecord;
use crate::reward::GroupScore;

/// Where rollouts come from. The default, [`AgentEnvironment`], runs `pixel-agent`'s loop with the visual
/// operations on the policy in-process; implement it to roll out in another environment (other tools, a
/// simulator) without forking the trainer.
pub trait Environment<B: Backend> {
    /// `n` rollouts of `task` on `policy` (row order), token-exact (each trajectory needs its
    /// `TokenRecord` to be trained on).
    ///
    /// # Errors
    /// Whatever the environment fails with; the trainer stops with it.
    fn rollouts(
        &mut self,
        policy: &Qwen25Vl<B>,
        processor: &Processor,
        task: &Task,
        n: usize,
        config: &RolloutConfig,
    ) -> Result<Vec<Trajectory>>;
}

/// `pixel-agent`'s multi-turn loop on an in-process engine: the prompt prefilled once and forked into `n`
/// rows, each row's KV cache allowed the episode's token budget plus one turn (it is allocated as the
/// rollout grows, not at that size).
#[derive(Debug, Clone, Copy, Default)]
pub struct AgentEnvironment;

impl<B: Backend> Environment<B> for AgentEnvironment {
    fn rollouts(
        &mut self,
        policy: &Qwen25Vl<B>,
        processor: &Processor,
        task: &Task,
        n: usize,
        config: &RolloutConfig,
    ) -> Result<Vec<Trajectory>> {
        let budget = config.episode.max_total_tokens.unwrap_or(12_088);
        let most = policy.max_cache_capacity(n, pixel_vlm::cache::DEFAULT_KV_CACHE_BUDGET);
        let capacity = (budget + config.max_new_tokens).min(most);
        let mut engine = LocalEngine::new(policy, processor, capacity);
        Ok(run_group(&mut engine, &task.query, n, config)?)
    }
}

/// One group of the current buffer.
pub(crate) struct BufferGroup {
    pub trajectories: Vec<Trajectory>,
    pub advantages: Vec<f32>,
}

/// What the rollouts of one iteration measured.
#[derive(Default)]
pub(crate) struct RolloutStats {
    groups_drawn: usize,
    uniform: usize,
    rollouts: usize,
    correct: usize,
    used_ops: usize,
    curiosity: f64,
    penalty: f64,
    reward: f64,
    ops_attempted: usize,
    ops_failed: usize,
    sampled_tokens: usize,
    truncated: usize,
}

impl RolloutStats {
    /// The counts and sums as numbers (to be summed over data-parallel ranks).
    pub fn to_values(&self) -> Vec<f64> {
        vec![
            self.groups_drawn as f64,
            self.uniform as f64,
            self.rollouts as f64,
            self.correct as f64,
            self.used_ops as f64,
            self.curiosity,
            self.penalty,
            self.reward,
            self.ops_attempted as f64,
            self.ops_failed as f64,
            self.sampled_tokens as f64,
            self.truncated as f64,
        ]
    }

    /// Stats from [`RolloutStats::to_values`]'s numbers (summed).
    pub fn from_values(v: &[f64]) -> Self {
        let at = |k: usize| v.get(k).copied().unwrap_or(0.0);
        let n = |k: usize| at(k).round().max(0.0) as usize;
        Self {
            groups_drawn: n(0),
            uniform: n(1),
            rollouts: n(2),
            correct: n(3),
            used_ops: n(4),
            curiosity: at(5),
            penalty: at(6),
            reward: at(7),
            ops_attempted: n(8),
            ops_failed: n(9),
            sampled_tokens: n(10),
            truncated: n(11),
        }
    }

    pub fn add(&mut self, trajectories: &[Trajectory], score: &GroupScore, uniform: bool) {
        self.groups_drawn += 1;
        self.uniform += usize::from(uniform);
        for (i, t) in trajectories.iter().enumerate() {
            self.rollouts += 1;
            self.correct += usize::from(score.correct[i]);
            self.used_ops += usize::from(t.stats.used_pixel_reasoning());
            self.curiosity += score.curiosity[i];
            self.penalty += score.penalty[i];
            self.reward += score.rewards[i];
            self.ops_attempted += t.stats.operations_attempted;
            self.ops_failed += t.stats.operations_failed;
            self.sampled_tokens += t.tokens.as_ref().map_or(0, |r| r.sampled_len());
            self.truncated += usize::from(is_truncated(t));
        }
    }

    pub fn write(&self, m: &mut MetricRecord) {
        let n = self.rollouts.max(1) as f64;
        m.set("accuracy", self.correct as f64 / n)
            .set("rapr", self.used_ops as f64 / n)
            .set("curiosity_bonus", self.curiosity / n)
            .set("penalty", self.penalty / n)
            .set("reward", self.reward / n)
            .set(
                "op_error_rate",
                if self.ops_attempted == 0 {
                    0.0
                } else {
                    self.ops_failed as f64 / self.ops_attempted as f64
                },
            )
            .set(
                "uniform_share",
                self.uniform as f64 / self.groups_drawn.max(1) as f64,
            )
            .set("groups_drawn", self.groups_drawn as f64)
            .set("response_length", self.sampled_tokens as f64 / n)
            .set("truncated_share", self.truncated as f64 / n);
    }
}

/// Whether the rollout ran out of tokens rather than answering or hitting a call/image limit.
pub fn is_truncated(t: &Trajectory) -> bool {
    matches!(
        t.end,
        RolloutEnd::TurnLength
            | RolloutEnd::ObservationTooLong
            | RolloutEnd::Episode(EndReason::TokenBudget)
    )
}
