//! Answer matching and the curiosity-driven reward of Pixel Reasoner (arXiv 2505.15966).
//!
//! - [`extract_answer`] finds the final answer of a response (last `\boxed{}`, else `<answer>`, else `Answer:`).
//! - [`Matcher`] compares it with reference answers by [`AnswerKind`]: multiple choice, numbers, multi-span,
//!   ANLS, exact; [`score`] is the one-call form.
//! - [`RewardConfig::group_rewards`] shapes the rewards of one query's rollouts:
//!   `r' = r + alpha * max(H - RaPR, 0) * 1[PR] + beta * min(N - n_vo, 0)` (the paper), or the released
//!   code's formula ([`RewardVariant::ReleasedCode`]).
//! - [`advantages`] and [`GroupStats`] give GRPO its group-relative advantages and uniform-group test.
//!
//! See `docs/reward.md` for the formulas with worked numbers and where the released code differs.
//!
//! ```
//! use pixel_reward::{AdvantageConfig, Matcher, RewardConfig, RolloutOutcome, advantages};
//!
//! // Score 8 rollouts of one multiple-choice query; only the first zoomed in (once).
//! let responses = [r"I zoom in ... the sign shows a sheep. \boxed{B}", r"\boxed{A}"];
//! let matcher = Matcher::default().with_options(["Lion", "Sheep", "Tiger", "Elephant"]);
//! let mut outcomes = Vec::new();
//! for i in 0..8 {
//!     let j = matcher.judge(responses[i.min(1)], &["B"]);
//!     outcomes.push(RolloutOutcome { parse_failed: j.parse_failed(), ..RolloutOutcome::new(j.correct, u32::from(i == 0)) });
//! }
//! let group = RewardConfig::default().group_rewards(&outcomes)?;
//! assert_eq!(group.rapr, 0.125);
//! assert!((group.rollouts[0].total - 1.0875).abs() < 1e-12); // 1 + 0.5 * (0.3 - 0.125)
//! let adv = advantages(&group.totals(), AdvantageConfig::default())?;
//! assert!(adv[0] > 0.0 && adv[1] < 0.0);
//! # Ok::<(), pixel_reward::Error>(())
//! ```

#![warn(missing_docs)]

mod anls;
mod error;
mod extract;
mod group;
mod matcher;
mod normalize;
mod number;
mod reward;

pub use anls::{ANLS_THRESHOLD, anls, levenshtein, normalized_levenshtein};
pub use error::{Error, Result};
pub use extract::{AnswerSource, Extracted, extract_answer, last_boxed};
pub use group::{AdvantageConfig, GroupStats, UNIFORM_TOLERANCE, advantages};
pub use matcher::{AnswerKind, Judgement, Matcher, score};
pub use normalize::normalize_answer;
pub use number::{Number, numbers_match, parse_number};
pub use reward::{
    GroupReward, RELEASED_IMAGE_DIVISOR, RELEASED_SCALE, RELEASED_VIDEO_DIVISOR, RewardConfig,
    RewardVariant, RolloutOutcome, RolloutReward,
};

/// The README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
