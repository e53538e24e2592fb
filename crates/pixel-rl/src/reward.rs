//! Rewards for GRPO: a trait to plug any reward in, and the curiosity-driven reward of the paper.
//!
//! [`Reward::score_group`] sees one task and its group of rollouts at once, because the curiosity bonus
//! depends on the group (RaPR, the share of the group that used a visual operation). [`CuriosityReward`]
//! judges each rollout's answer with `pixel-reward`'s [`Matcher`] and shapes the rewards with
//! [`RewardConfig::group_rewards`]; a custom reward (a learned judge, a task-specific checker, a format
//! bonus) implements the trait and is passed to the trainer instead.

use pixel_agent::Trajectory;
use pixel_reward::{AnswerKind, Matcher, RewardConfig, RolloutOutcome};

use crate::data::Task;
use crate::error::Result;

/// The rewards of one group, with the parts the trainer logs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GroupScore {
    /// The reward of each rollout (what the advantages are computed from).
    pub rewards: Vec<f64>,
    /// Whether each rollout's answer was correct.
    pub correct: Vec<bool>,
    /// The curiosity bonus each rollout earned (0 for rewards without one).
    pub curiosity: Vec<f64>,
    /// The operation penalty each rollout paid (≤ 0).
    pub penalty: Vec<f64>,
}

/// A reward over a group of rollouts of one task.
pub trait Reward {
    /// The rewards of `trajectories`, all rollouts of `task` (row order).
    ///
    /// # Errors
    /// Whatever the reward can fail with; the trainer stops with it.
    fn score_group(&self, task: &Task, trajectories: &[Trajectory]) -> Result<GroupScore>;

    /// Called by the GRPO trainer before the rollouts of each iteration (`iteration` counts from 0), on
    /// every data-parallel rank: a reward that schedules its weights, or tallies its groups per
    /// iteration (by task kind, say), reads the iteration here. Does nothing by default.
    fn begin_iteration(&self, _iteration: usize) {}
}

impl<R: Reward + ?Sized> Reward for &R {
    fn score_group(&self, task: &Task, trajectories: &[Trajectory]) -> Result<GroupScore> {
        (**self).score_group(task, trajectories)
    }

    fn begin_iteration(&self, iteration: usize) {
        (**self).begin_iteration(iteration);
    }
}

impl<R: Reward + ?Sized> Reward for Box<R> {
    fn score_group(&self, task: &Task, trajectories: &[Trajectory]) -> Result<GroupScore> {
        (**self).score_group(task, trajectories)
    }

    fn begin_iteration(&self, iteration: usize) {
        (**self).begin_iteration(iteration);
    }
}

/// Any closure `Fn(&Task, &Trajectory) -> f64` is a reward (per rollout, no group shaping).
pub struct PerRollout<F>(pub F);

impl<F: Fn(&Task, &Trajectory) -> f64> Reward for PerRollout<F> {
    fn score_group(&self, task: &Task, trajectories: &[Trajectory]) -> Result<GroupScore> {
        let rewards: Vec<f64> = trajectories.iter().map(|t| (self.0)(task, t)).collect();
        Ok(GroupScore {
            correct: rewards.iter().map(|&r| r > 0.0).collect(),
            curiosity: vec![0.0; rewards.len()],
            penalty: vec![0.0; rewards.len()],
            rewards,
        })
    }
}

/// The paper's reward: correctness (the last `\boxed{}` of the whole response, matched by answer kind)
/// plus the curiosity bonus and the operation penalty of [`RewardConfig`].
#[derive(Debug, Clone, PartialEq)]
pub struct CuriosityReward {
    /// α, β, H, N and the formula (paper or released code).
    pub config: RewardConfig,
    /// How answers are compared (`Auto`: letters, numbers, multi-span or exact by the reference).
    pub kind: AnswerKind,
}

impl CuriosityReward {
    /// With `config` and automatic answer kinds.
    pub fn new(config: RewardConfig) -> Self {
        Self {
            config,
            kind: AnswerKind::Auto,
        }
    }

    /// What the reward needs to know about one rollout.
    pub fn outcome(&self, task: &Task, trajectory: &Trajectory) -> RolloutOutcome {
        let matcher = Matcher::new(self.kind).with_options(task.options.iter().cloned());
        // The official scorer reads the whole response after the first assistant header: every turn.
        let response: String = trajectory
            .turns
            .iter()
            .map(|t| t.text.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        let judgement = matcher.judge(&response, &task.answers);
        let stats = &trajectory.stats;
        RolloutOutcome {
            correct: judgement.correct,
            parse_failed: judgement.parse_failed(),
            ops_attempted: u32::try_from(stats.operations_attempted).unwrap_or(u32::MAX),
            ops_failed: u32::try_from(stats.operations_failed).unwrap_or(u32::MAX),
            used_pixel_reasoning: stats.used_pixel_reasoning(),
            last_op_errored: stats.last_operation_failed,
            is_video: matches!(task.query.media, pixel_agent::Media::Video(_)),
        }
    }
}

impl Default for CuriosityReward {
    fn default() -> Self {
        Self::new(RewardConfig::default())
    }
}

impl Reward for CuriosityReward {
    fn score_group(&self, task: &Task, trajectories: &[Trajectory]) -> Result<GroupScore> {
        let outcomes: Vec<RolloutOutcome> =
            trajectories.iter().map(|t| self.outcome(task, t)).collect();
        let group = self.config.group_rewards(&outcomes)?;
        Ok(GroupScore {
            rewards: group.totals(),
            correct: outcomes.iter().map(|o| o.correct).collect(),
            curiosity: group.rollouts.iter().map(|r| r.curiosity_bonus).collect(),
            penalty: group.rollouts.iter().map(|r| r.penalty).collect(),
        })
    }
}
