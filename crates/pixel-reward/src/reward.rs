//! The curiosity-driven reward of Pixel Reasoner, computed per group of rollouts of one query.
//!
//! Paper (arXiv 2505.15966, eq. 3): `r' = r + alpha * max(H - RaPR(x), 0) * 1[PR(y)] + beta * min(N - n_vo(y), 0)`,
//! where `RaPR(x)` is the share of the query's rollouts that used pixel-space reasoning. The released training
//! code computes a different bonus; it is available as [`RewardVariant::ReleasedCode`].

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which formula computes the reward.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardVariant {
    /// The paper's formula (the default): `r in {0, 1}`, bonus `alpha * max(H - RaPR, 0)` for a rollout that
    /// used a visual operation, penalty `beta * min(N - n_vo, 0)`.
    #[default]
    Paper,
    /// The released `experience_maker.py`: bonus `max(H - RaPR, 0) / 2 / RaPR * 0.25` (divided by 1.5 instead
    /// of 2 for video), a correct answer whose last visual operation errored scores 0, and a response the
    /// matcher cannot parse scores −1. `alpha` is unused. Each rollout's own error flag is used (the
    /// released code reads the flag of the rollout at the same position in the *first* group of the batch).
    ReleasedCode,
}

/// Released code: the bonus for images is `max(H - RaPR, 0) / 2 / RaPR * 0.25`.
pub const RELEASED_IMAGE_DIVISOR: f64 = 2.0;
/// Released code: the bonus divisor for video rollouts (a larger bonus, to encourage `select_frames`).
pub const RELEASED_VIDEO_DIVISOR: f64 = 1.5;
/// Released code: the scale after dividing by RaPR ("the maximum curiosity is 0.25" in its comment).
pub const RELEASED_SCALE: f64 = 0.25;

/// Reward hyper-parameters. Defaults are the paper's (section 3.2).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RewardConfig {
    /// Weight of the curiosity bonus (paper: 0.5).
    pub alpha: f64,
    /// Weight of the operation penalty (paper: 0.05).
    pub beta: f64,
    /// Target RaPR `H`: below it, rollouts that used an operation earn a bonus (paper: 0.3).
    pub h: f64,
    /// Number of visual operations allowed without penalty `N` (paper: 1).
    pub n: u32,
    /// The formula (paper by default).
    pub variant: RewardVariant,
}

impl Default for RewardConfig {
    fn default() -> Self {
        Self {
            alpha: 0.5,
            beta: 0.05,
            h: 0.3,
            n: 1,
            variant: RewardVariant::Paper,
        }
    }
}

/// What the reward needs to know about one rollout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RolloutOutcome {
    /// The final answer matched the reference.
    pub correct: bool,
    /// No answer could be read from the response (only [`RewardVariant::ReleasedCode`] uses it: −1).
    pub parse_failed: bool,
    /// Visual operations the model called (executed or failed): `n_vo(y)`.
    pub ops_attempted: u32,
    /// Of those, the ones that returned an execution error (for logging the op error rate; neither formula
    /// uses it).
    pub ops_failed: u32,
    /// The rollout used pixel-space reasoning, `PR(y)` (normally `ops_attempted > 0`); counts toward RaPR.
    pub used_pixel_reasoning: bool,
    /// The last visual operation errored and the model answered without a successful retry.
    pub last_op_errored: bool,
    /// The input was a video (only the released-code bonus depends on it).
    pub is_video: bool,
}

impl RolloutOutcome {
    /// An outcome with `used_pixel_reasoning = ops_attempted > 0` and no failures.
    pub fn new(correct: bool, ops_attempted: u32) -> Self {
        Self {
            correct,
            ops_attempted,
            used_pixel_reasoning: ops_attempted > 0,
            ..Self::default()
        }
    }
}

/// The reward of one rollout, broken down for logging: `total = correctness + curiosity_bonus + penalty`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RolloutReward {
    /// The correctness term `r`: 1 or 0 (the released code also gives −1 for a parse failure).
    pub correctness: f64,
    /// The curiosity bonus (≥ 0).
    pub curiosity_bonus: f64,
    /// The operation penalty (≤ 0).
    pub penalty: f64,
    /// The shaped reward `r'`.
    pub total: f64,
}

/// The rewards of one group (the rollouts of one query).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupReward {
    /// The share of the group's rollouts that used pixel-space reasoning.
    pub rapr: f64,
    /// One breakdown per rollout, in input order.
    pub rollouts: Vec<RolloutReward>,
}

impl GroupReward {
    /// The shaped rewards (`total`), in order.
    pub fn totals(&self) -> Vec<f64> {
        self.rollouts.iter().map(|r| r.total).collect()
    }
}

impl RewardConfig {
    /// Checks that every weight is finite and non-negative and that `h` is in `[0, 1]`.
    pub fn validate(&self) -> Result<()> {
        let check = |field, value: f64, ok: bool, reason| {
            if ok && value.is_finite() {
                Ok(())
            } else {
                Err(Error::InvalidConfig {
                    field,
                    value,
                    reason,
                })
            }
        };
        check(
            "alpha",
            self.alpha,
            self.alpha >= 0.0,
            "must be finite and >= 0",
        )?;
        check(
            "beta",
            self.beta,
            self.beta >= 0.0,
            "must be finite and >= 0",
        )?;
        check(
            "h",
            self.h,
            (0.0..=1.0).contains(&self.h),
            "a rate: must be in [0, 1]",
        )
    }

    /// Computes the reward of every rollout of one query's group.
    ///
    /// # Errors
    /// [`Error::EmptyGroup`] for an empty group (RaPR is undefined), [`Error::InvalidConfig`] from
    /// [`validate`](Self::validate).
    ///
    /// ```
    /// use pixel_reward::{RewardConfig, RolloutOutcome};
    /// // 8 rollouts, one of which zoomed in once and was right: RaPR = 1/8.
    /// let mut group = vec![RolloutOutcome::new(false, 0); 8];
    /// group[0] = RolloutOutcome::new(true, 1);
    /// let g = RewardConfig::default().group_rewards(&group).unwrap();
    /// assert_eq!(g.rapr, 0.125);
    /// assert!((g.rollouts[0].curiosity_bonus - 0.0875).abs() < 1e-12);
    /// assert!((g.rollouts[0].total - 1.0875).abs() < 1e-12);
    /// ```
    pub fn group_rewards(&self, outcomes: &[RolloutOutcome]) -> Result<GroupReward> {
        self.validate()?;
        if outcomes.is_empty() {
            return Err(Error::EmptyGroup {
                what: "RaPR (the group's rate of pixel-space reasoning)",
            });
        }
        let users = outcomes.iter().filter(|o| o.used_pixel_reasoning).count();
        let rapr = users as f64 / outcomes.len() as f64;
        let rollouts = outcomes
            .iter()
            .map(|o| self.rollout_reward(o, rapr))
            .collect();
        Ok(GroupReward { rapr, rollouts })
    }

    /// The reward of one rollout given its group's RaPR. `rapr` must be the group's rate (in `(0, 1]` when
    /// this rollout used pixel reasoning); [`group_rewards`](Self::group_rewards) guarantees that.
    fn rollout_reward(&self, o: &RolloutOutcome, rapr: f64) -> RolloutReward {
        // beta * min(N - n_vo, 0): with the default N = 1 that is -0.05 per operation beyond the first.
        let excess = f64::from(o.ops_attempted) - f64::from(self.n);
        let penalty = if excess > 0.0 {
            -self.beta * excess
        } else {
            0.0
        };
        let gap = (self.h - rapr).max(0.0);
        let (correctness, curiosity_bonus) = match self.variant {
            RewardVariant::Paper => {
                let r = if o.correct { 1.0 } else { 0.0 };
                let bonus = if o.used_pixel_reasoning {
                    self.alpha * gap
                } else {
                    0.0
                };
                (r, bonus)
            }
            RewardVariant::ReleasedCode => {
                let r = if o.parse_failed {
                    -1.0
                } else if o.correct && !o.last_op_errored {
                    1.0
                } else {
                    0.0
                };
                let bonus = if o.used_pixel_reasoning && rapr > 0.0 {
                    let divisor = if o.is_video {
                        RELEASED_VIDEO_DIVISOR
                    } else {
                        RELEASED_IMAGE_DIVISOR
                    };
                    gap / divisor / rapr * RELEASED_SCALE
                } else {
                    0.0
                };
                (r, bonus)
            }
        };
        RolloutReward {
            correctness,
            curiosity_bonus,
            penalty,
            total: correctness + curiosity_bonus + penalty,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(users: usize, size: usize) -> Vec<RolloutOutcome> {
        (0..size)
            .map(|i| RolloutOutcome::new(i % 2 == 0, u32::from(i < users)))
            .collect()
    }

    #[test]
    fn paper_bonus_at_one_eighth() {
        let g = RewardConfig::default().group_rewards(&group(1, 8)).unwrap();
        assert_eq!(g.rapr, 0.125);
        let r = g.rollouts[0];
        assert!((r.curiosity_bonus - 0.0875).abs() < 1e-12, "{r:?}");
        assert_eq!(r.penalty, 0.0);
        assert!((r.total - 1.0875).abs() < 1e-12);
        // Rollouts without an operation get no bonus.
        assert!(g.rollouts[1..].iter().all(|r| r.curiosity_bonus == 0.0));
    }

    /// The table of docs/reward.md: (users of an op in 8, RaPR, bonus, total with 1 op, total with 3 ops).
    #[test]
    fn worked_numbers_of_the_docs() {
        for (users, rapr, bonus, one, three) in [
            (1, 0.125, 0.0875, 1.0875, 0.9875),
            (2, 0.25, 0.025, 1.025, 0.925),
            (3, 0.375, 0.0, 1.0, 0.9),
        ] {
            let mut outcomes = vec![RolloutOutcome::new(false, 0); 8];
            for o in outcomes.iter_mut().take(users) {
                *o = RolloutOutcome::new(true, 1);
            }
            outcomes[0].ops_attempted = 3;
            let g = RewardConfig::default().group_rewards(&outcomes).unwrap();
            assert!((g.rapr - rapr).abs() < 1e-12);
            assert!((g.rollouts[0].curiosity_bonus - bonus).abs() < 1e-12);
            assert!(
                (g.rollouts[0].total - three).abs() < 1e-12,
                "{:?}",
                g.rollouts[0]
            );
            outcomes[0].ops_attempted = 1;
            let g = RewardConfig::default().group_rewards(&outcomes).unwrap();
            assert!((g.rollouts[0].total - one).abs() < 1e-12);
        }
    }

    #[test]
    fn no_bonus_at_or_above_h() {
        for users in [3, 4, 8] {
            // RaPR 3/8 = 0.375 > 0.3.
            let g = RewardConfig::default()
                .group_rewards(&group(users, 8))
                .unwrap();
            assert!(g.rollouts.iter().all(|r| r.curiosity_bonus == 0.0));
        }
        // Exactly H: 3 of 10.
        let g = RewardConfig::default()
            .group_rewards(&group(3, 10))
            .unwrap();
        assert!((g.rapr - 0.3).abs() < 1e-15);
        assert!(g.rollouts[0].curiosity_bonus.abs() < 1e-15);
    }

    #[test]
    fn penalty_per_extra_operation() {
        let cfg = RewardConfig::default();
        for (ops, want) in [(0u32, 0.0), (1, 0.0), (2, -0.05), (3, -0.10), (4, -0.15)] {
            let g = cfg
                .group_rewards(&[RolloutOutcome::new(false, ops)])
                .unwrap();
            assert!((g.rollouts[0].penalty - want).abs() < 1e-12, "{ops}");
        }
        let cfg = RewardConfig { n: 2, ..cfg };
        let g = cfg.group_rewards(&[RolloutOutcome::new(false, 3)]).unwrap();
        assert!((g.rollouts[0].penalty + 0.05).abs() < 1e-12);
    }

    #[test]
    fn released_code_formula() {
        let cfg = RewardConfig {
            variant: RewardVariant::ReleasedCode,
            ..RewardConfig::default()
        };
        let mut outcomes = group(1, 8);
        let g = cfg.group_rewards(&outcomes).unwrap();
        // (0.3 - 0.125) / 2 / 0.125 * 0.25 = 0.175: twice the paper's bonus at this RaPR.
        assert!((g.rollouts[0].curiosity_bonus - 0.175).abs() < 1e-12);
        outcomes[0].is_video = true;
        let g = cfg.group_rewards(&outcomes).unwrap();
        assert!((g.rollouts[0].curiosity_bonus - 0.175 * 2.0 / 1.5).abs() < 1e-12);
        // At RaPR = 1/4 the two formulas agree (0.025).
        let g = cfg.group_rewards(&group(2, 8)).unwrap();
        let p = RewardConfig::default().group_rewards(&group(2, 8)).unwrap();
        assert!((g.rollouts[0].curiosity_bonus - p.rollouts[0].curiosity_bonus).abs() < 1e-12);
    }

    #[test]
    fn released_code_error_and_parse_rules() {
        let cfg = RewardConfig {
            variant: RewardVariant::ReleasedCode,
            ..RewardConfig::default()
        };
        let errored = RolloutOutcome {
            last_op_errored: true,
            ops_failed: 1,
            ..RolloutOutcome::new(true, 1)
        };
        let unparsed = RolloutOutcome {
            parse_failed: true,
            ..RolloutOutcome::new(false, 0)
        };
        let fine = RolloutOutcome::new(true, 0);
        let g = cfg.group_rewards(&[errored, unparsed, fine]).unwrap();
        assert_eq!(g.rollouts[0].correctness, 0.0);
        assert_eq!(g.rollouts[1].correctness, -1.0);
        assert_eq!(g.rollouts[2].correctness, 1.0);
        // The paper ignores both flags.
        let p = RewardConfig::default()
            .group_rewards(&[errored, unparsed])
            .unwrap();
        assert_eq!(p.rollouts[0].correctness, 1.0);
        assert_eq!(p.rollouts[1].correctness, 0.0);
    }

    #[test]
    fn errors_instead_of_panics() {
        let cfg = RewardConfig::default();
        assert!(matches!(
            cfg.group_rewards(&[]),
            Err(Error::EmptyGroup { .. })
        ));
        for bad in [
            RewardConfig {
                alpha: f64::NAN,
                ..cfg
            },
            RewardConfig { beta: -1.0, ..cfg },
            RewardConfig { h: 1.5, ..cfg },
        ] {
            assert!(matches!(
                bad.group_rewards(&group(1, 8)),
                Err(Error::InvalidConfig { .. })
            ));
        }
    }

    #[test]
    fn serde_defaults_are_the_paper() {
        let cfg: RewardConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg, RewardConfig::default());
        let cfg: RewardConfig = serde_json::from_str(r#"{"variant":"released_code"}"#).unwrap();
        assert_eq!(cfg.variant, RewardVariant::ReleasedCode);
        assert_eq!((cfg.alpha, cfg.beta, cfg.h, cfg.n), (0.5, 0.05, 0.3, 1));
    }
}
