//! 95 % confidence intervals for accuracies.
//!
//! A benchmark is a sample of questions, so an accuracy measured on it is uncertain: on V* Bench's 191
//! questions an accuracy of 84 % has a 95 % interval of about ±5 points, which is the size of the gaps
//! papers compare. Scores that are all 0 or 1 get the Wilson score interval (good near 0 and 1 and for small
//! samples); graded scores (ANLS, or a qid averaged over several runs) the normal approximation
//! `mean ± 1.96 · s / √n`, clipped to `[0, 1]`.

use serde::{Deserialize, Serialize};

/// The normal quantile of a two-sided 95 % interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// A confidence interval on a proportion or mean in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
    /// `wilson`, `normal`, or `none` (no data: the whole range).
    pub method: IntervalMethod,
}

/// How an [`Interval`] was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntervalMethod {
    /// Wilson score interval of a proportion.
    Wilson,
    /// Normal approximation of a mean.
    Normal,
    /// No data.
    None,
}

impl Interval {
    /// The Wilson 95 % interval of `successes` out of `n`.
    ///
    /// ```
    /// use pixel_eval::stats::Interval;
    /// // V* Bench: 160 of 191 (83.8 %) is 77.9 % .. 88.4 %, about ±5 points.
    /// let i = Interval::wilson(160, 191);
    /// assert!((i.low - 0.779).abs() < 1e-3 && (i.high - 0.884).abs() < 1e-3);
    /// ```
    pub fn wilson(successes: usize, n: usize) -> Self {
        if n == 0 {
            return Self::none();
        }
        let n = n as f64;
        let p = successes.min(n as usize) as f64 / n;
        let z2 = Z95 * Z95;
        let denom = 1.0 + z2 / n;
        let center = (p + z2 / (2.0 * n)) / denom;
        let half = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
        Self {
            low: (center - half).max(0.0),
            high: (center + half).min(1.0),
            method: IntervalMethod::Wilson,
        }
    }

    /// The normal-approximation 95 % interval of the mean of `values`, clipped to `[0, 1]`.
    pub fn normal(values: &[f64]) -> Self {
        let n = values.len();
        if n == 0 {
            return Self::none();
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let var = if n > 1 {
            values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        let half = Z95 * (var / n as f64).sqrt();
        Self {
            low: (mean - half).max(0.0),
            high: (mean + half).min(1.0),
            method: IntervalMethod::Normal,
        }
    }

    /// Wilson when every value is 0 or 1, else the normal approximation.
    pub fn of_scores(values: &[f64]) -> Self {
        if values.iter().all(|&v| v == 0.0 || v == 1.0) {
            let successes = values.iter().filter(|&&v| v == 1.0).count();
            Self::wilson(successes, values.len())
        } else {
            Self::normal(values)
        }
    }

    /// The whole range (no data).
    pub fn none() -> Self {
        Self {
            low: 0.0,
            high: 1.0,
            method: IntervalMethod::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_the_closed_form_and_stays_in_range() {
        // 84 % of 191: ±5.2 points around a centre pulled slightly towards 0.5.
        let i = Interval::wilson(160, 191);
        let p = 160.0 / 191.0;
        assert!(i.low < p && p < i.high);
        assert!(((i.high - i.low) / 2.0 - 0.052).abs() < 0.002, "{i:?}");
        let all = Interval::wilson(10, 10);
        assert!(all.high > 0.9999);
        assert!(all.low > 0.69 && all.low < 0.73, "{all:?}");
        assert_eq!(Interval::wilson(0, 0).method, IntervalMethod::None);
    }

    #[test]
    fn graded_scores_use_the_normal_interval() {
        let i = Interval::of_scores(&[0.5, 0.75, 1.0, 0.25]);
        assert_eq!(i.method, IntervalMethod::Normal);
        assert!(i.low < 0.625 && 0.625 < i.high);
        assert_eq!(
            Interval::of_scores(&[1.0, 0.0]).method,
            IntervalMethod::Wilson
        );
        let constant = Interval::normal(&[0.4, 0.4]);
        assert_eq!((constant.low, constant.high), (0.4, 0.4));
    }
}
