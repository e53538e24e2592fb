//! `text-only`: arithmetic word problems answerable without looking at anything.

use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use crate::sample::{AnnotatedSample, Visual};
use crate::{Error, Result};

/// Parameters of the text-only dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextOnlyConfig {
    /// Largest operand. Default 30.
    pub max_operand: u32,
}

impl Default for TextOnlyConfig {
    fn default() -> Self {
        Self { max_operand: 30 }
    }
}

impl TextOnlyConfig {
    /// Generates sample `index` for `seed`.
    ///
    /// # Errors
    /// [`Error::Config`] if `max_operand` is below 2 or above 10,000.
    pub fn generate(&self, seed: u64, index: u64) -> Result<AnnotatedSample> {
        if !(2..=10_000).contains(&self.max_operand) {
            return Err(Error::Config(format!(
                "text-only max_operand {} not in 2..=10000",
                self.max_operand
            )));
        }
        let mut rng = super::sample_rng(seed, index, 4);
        let rng: &mut dyn RngCore = &mut rng;
        let m = i64::from(self.max_operand);
        let a = rng.random_range(2..=m);
        let b = rng.random_range(2..=m);
        let (question, answer) = match rng.random_range(0..4) {
            0 => (
                format!(
                    "A shelf holds {a} books and another holds {b} books. How many books are there in total?"
                ),
                a + b,
            ),
            1 => {
                let c = rng.random_range(0..=a * b);
                (
                    format!(
                        "A shop has {a} boxes with {b} apples each and sells {c} apples. How many apples are left?"
                    ),
                    a * b - c,
                )
            }
            2 => (
                format!(
                    "Tom has {} marbles and gives {b} of them away. How many marbles does he have now?",
                    a + b
                ),
                a,
            ),
            _ => (
                format!(
                    "A train travels {b} km every hour for {a} hours. How many kilometres does it travel?"
                ),
                a * b,
            ),
        };
        Ok(AnnotatedSample {
            id: format!("text-{seed}-{index}"),
            question,
            options: Vec::new(),
            answer: answer.to_string(),
            visual: Visual::None,
        })
    }
}
