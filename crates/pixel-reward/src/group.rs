//! Group statistics GRPO needs: mean-centred advantages, optional std scaling, reward-uniform groups.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The released code's uniformity tolerance: a group is uniform when the mean absolute deviation of its
/// rewards is below 0.01.
pub const UNIFORM_TOLERANCE: f64 = 0.01;

/// Summary of one group's rewards.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GroupStats {
    /// Mean reward.
    pub mean: f64,
    /// Population standard deviation (divide by n, as `torch.std(unbiased=False)`/`np.std`).
    pub std: f64,
    /// Mean absolute deviation from the mean.
    pub mean_abs_dev: f64,
}

impl GroupStats {
    /// Computes the statistics of `rewards`.
    ///
    /// # Errors
    /// [`Error::EmptyGroup`] when empty, [`Error::NonFiniteReward`] for a NaN or infinite reward.
    pub fn of(rewards: &[f64]) -> Result<Self> {
        if rewards.is_empty() {
            return Err(Error::EmptyGroup {
                what: "group statistics",
            });
        }
        if let Some((index, &value)) = rewards.iter().enumerate().find(|(_, r)| !r.is_finite()) {
            return Err(Error::NonFiniteReward { index, value });
        }
        let n = rewards.len() as f64;
        let mean = rewards.iter().sum::<f64>() / n;
        let var = rewards.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n;
        let mean_abs_dev = rewards.iter().map(|r| (r - mean).abs()).sum::<f64>() / n;
        Ok(Self {
            mean,
            std: var.sqrt(),
            mean_abs_dev,
        })
    }

    /// Whether the group carries no learning signal: mean absolute deviation below `tolerance`
    /// ([`UNIFORM_TOLERANCE`] in the released code). Such groups are dropped and refilled.
    pub fn is_uniform(&self, tolerance: f64) -> bool {
        self.mean_abs_dev < tolerance
    }
}

/// How advantages are computed from a group's rewards.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdvantageConfig {
    /// Divide by the group's std (GRPO's original normalisation); off in the official recipe (`r - mean`).
    pub scale_by_std: bool,
    /// Added to the std before dividing, so a uniform group gives zeros rather than NaN.
    pub eps: f64,
}

impl Default for AdvantageConfig {
    fn default() -> Self {
        Self {
            scale_by_std: false,
            eps: 1e-6,
        }
    }
}

/// Advantages of one group: `r - mean`, or `(r - mean) / (std + eps)` with std scaling.
///
/// # Errors
/// As [`GroupStats::of`].
///
/// ```
/// use pixel_reward::{advantages, AdvantageConfig};
/// let a = advantages(&[1.0, 0.0, 0.0, 1.0], AdvantageConfig::default()).unwrap();
/// assert_eq!(a, vec![0.5, -0.5, -0.5, 0.5]);
/// ```
pub fn advantages(rewards: &[f64], config: AdvantageConfig) -> Result<Vec<f64>> {
    let stats = GroupStats::of(rewards)?;
    let scale = if config.scale_by_std {
        1.0 / (stats.std + config.eps.max(0.0))
    } else {
        1.0
    };
    Ok(rewards
        .iter()
        .map(|r| {
            let a = (r - stats.mean) * scale;
            if a.is_finite() { a } else { 0.0 }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centred_and_scaled() {
        let r = [1.0875, 0.0, 1.0, 0.0];
        let a = advantages(&r, AdvantageConfig::default()).unwrap();
        assert!(a.iter().sum::<f64>().abs() < 1e-12);
        let s = advantages(
            &r,
            AdvantageConfig {
                scale_by_std: true,
                eps: 0.0,
            },
        )
        .unwrap();
        let var = s.iter().map(|x| x * x).sum::<f64>() / s.len() as f64;
        assert!((var - 1.0).abs() < 1e-12);
    }

    #[test]
    fn uniform_groups() {
        let st = GroupStats::of(&[1.0; 8]).unwrap();
        assert!(st.is_uniform(UNIFORM_TOLERANCE));
        let a = advantages(
            &[1.0; 8],
            AdvantageConfig {
                scale_by_std: true,
                eps: 0.0,
            },
        )
        .unwrap();
        assert_eq!(a, vec![0.0; 8]);
        let mut r = [0.0; 8];
        r[3] = 1.0;
        assert!(!GroupStats::of(&r).unwrap().is_uniform(UNIFORM_TOLERANCE));
    }

    #[test]
    fn empty_and_nan_are_errors() {
        assert!(matches!(GroupStats::of(&[]), Err(Error::EmptyGroup { .. })));
        assert!(matches!(
            advantages(&[0.0, f64::NAN], AdvantageConfig::default()),
            Err(Error::NonFiniteReward { index: 1, value }) if value.is_nan()
        ));
    }
}
