//! Next-token sampling on one logits row: greedy, temperature, top-k, top-p (combinable), seeded with
//! ChaCha8 so a `(seed, stream)` pair reproduces a run exactly.
//!
//! Every sampled token comes with its log-probability under `log_softmax(logits / temperature)` over the
//! whole vocabulary, *before* top-k/top-p truncation. That is the quantity the RL trainer recomputes from
//! the policy (OpenRLHF divides the logits by the rollout temperature and takes a full log-softmax; vLLM's
//! reported logprobs are likewise taken before truncation), so behaviour and training log-probs agree.
//! Greedy decoding reports `log_softmax(logits)` (temperature 1).
//!
//! Filtering follows `transformers`/vLLM: top-k first (ties at the k-th value broken by lower id), then
//! top-p on the renormalised remainder, keeping the smallest prefix of the descending order whose mass
//! reaches `top_p` (always at least one token).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Result, VlmError};

/// Sampling settings. The defaults are the official RL rollout settings: temperature 1.0, top-p 0.95, no
/// top-k.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// Softmax temperature; `0.0` means greedy (argmax).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; `0` disables.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`; `1.0` disables.
    pub top_p: f32,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.95,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
        }
    }

    /// Plain sampling at `temperature` (no truncation).
    pub fn with_temperature(temperature: f32) -> Self {
        SamplingParams {
            temperature,
            top_k: 0,
            top_p: 1.0,
        }
    }

    /// These settings with top-k.
    pub fn top_k(mut self, k: usize) -> Self {
        self.top_k = k;
        self
    }

    /// These settings with top-p.
    pub fn top_p(mut self, p: f32) -> Self {
        self.top_p = p;
        self
    }

    /// Whether this is greedy decoding.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Checks the ranges.
    ///
    /// # Errors
    /// [`VlmError::Input`] for a negative or non-finite temperature or a `top_p` outside `(0, 1]`.
    pub fn validate(&self) -> Result<()> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(VlmError::Input {
                input: "temperature",
                reason: format!(
                    "must be finite and >= 0 (0 = greedy), got {}",
                    self.temperature
                ),
            });
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(VlmError::Input {
                input: "top_p",
                reason: format!("must be in (0, 1], got {}", self.top_p),
            });
        }
        Ok(())
    }
}

/// A sampled token and its log-probability (see the module docs for which distribution).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampled {
    /// The token id.
    pub token: u32,
    /// `log_softmax(logits / temperature)[token]` over the full vocabulary (temperature 1 when greedy).
    pub logprob: f32,
}

/// A seeded sampler for one sequence.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
    /// Scratch: `exp(logit / T - max)` per id, kept to avoid an allocation per token.
    weights: Vec<f64>,
    /// Scratch: candidates `(weight, id)` for top-k/top-p.
    order: Vec<(f64, u32)>,
    /// Tokens to emit instead of drawing, and how many were emitted ([`Sampler::scripted`]).
    script: Option<(Vec<u32>, usize)>,
}

impl Sampler {
    /// A sampler with `params`, seeded with `seed` (stream 0).
    ///
    /// # Errors
    /// As [`SamplingParams::validate`].
    pub fn new(params: SamplingParams, seed: u64) -> Result<Self> {
        Self::for_sequence(params, seed, 0)
    }

    /// A sampler for sequence `stream` of a batch: the same seed with different ChaCha streams gives
    /// independent, reproducible draws per sequence whatever the batch composition.
    ///
    /// # Errors
    /// As [`SamplingParams::validate`].
    pub fn for_sequence(params: SamplingParams, seed: u64, stream: u64) -> Result<Self> {
        params.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        Ok(Sampler {
            params,
            rng,
            weights: Vec::new(),
            order: Vec::new(),
            script: None,
        })
    }

    /// A sampler that emits `tokens` in order instead of drawing (teacher forcing: replaying a known
    /// answer, scripted policies in tests), each with its log-probability under `params` as
    /// [`Sampler::sample`] reports it. Asking for more tokens than the script holds is an error.
    ///
    /// # Errors
    /// As [`SamplingParams::validate`].
    pub fn scripted(params: SamplingParams, tokens: Vec<u32>) -> Result<Self> {
        let mut sampler = Self::new(params, 0)?;
        sampler.script = Some((tokens, 0));
        Ok(sampler)
    }

    /// The settings.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Draws the next token from a logits row.
    ///
    /// # Errors
    /// [`VlmError::Input`] if `logits` is empty, holds a NaN or `+inf`, or is `-inf` everywhere.
    pub fn sample(&mut self, logits: &[f32]) -> Result<Sampled> {
        let max = check_logits(logits)?;
        if let Some((tokens, next)) = &mut self.script {
            let token = *tokens.get(*next).ok_or_else(|| VlmError::Input {
                input: "scripted sampler",
                reason: format!(
                    "asked for token {} of a {}-token script",
                    *next + 1,
                    tokens.len()
                ),
            })?;
            let logit = logits.get(token as usize).ok_or_else(|| VlmError::Input {
                input: "scripted sampler",
                reason: format!("token {token} is outside a vocabulary of {}", logits.len()),
            })?;
            *next += 1;
            let temperature = if self.params.is_greedy() {
                1.0
            } else {
                f64::from(self.params.temperature)
            };
            let log_z = log_sum_exp(logits, temperature, max, &mut self.weights);
            return Ok(Sampled {
                token,
                logprob: (f64::from(*logit) / temperature - log_z) as f32,
            });
        }
        if self.params.is_greedy() {
            // First maximum, as torch.argmax; the log-prob at temperature 1.
            let id = logits.iter().position(|&l| l == max).unwrap_or(0);
            let log_z = log_sum_exp(logits, 1.0, max, &mut self.weights);
            return Ok(Sampled {
                token: id as u32,
                logprob: (f64::from(logits[id]) - log_z) as f32,
            });
        }
        let temperature = f64::from(self.params.temperature);
        let log_z = log_sum_exp(logits, temperature, max, &mut self.weights);
        let u: f64 = self.rng.random::<f64>();
        let id = if !self.params.truncates(logits.len()) {
            // No truncation: walk the vocabulary in id order.
            let total: f64 = self.weights.iter().sum();
            walk(self.weights.iter().copied().zip(0u32..), u * total)
                .unwrap_or_else(|| last_finite(logits) as u32)
        } else {
            let keep = candidates(&self.params, &self.weights, &mut self.order);
            let kept = &self.order[..keep];
            let mass: f64 = kept.iter().map(|c| c.0).sum();
            walk(kept.iter().copied(), u * mass).unwrap_or(kept[keep - 1].1)
        };
        let logprob = (f64::from(logits[id as usize]) / temperature - log_z) as f32;
        Ok(Sampled { token: id, logprob })
    }

    /// The distribution [`Sampler::sample`] draws from: the kept tokens in descending probability (ties by
    /// lower id) with their renormalised probabilities. Greedy gives the argmax with probability 1.
    ///
    /// # Errors
    /// As [`Sampler::sample`].
    pub fn distribution(&self, logits: &[f32]) -> Result<Vec<(u32, f64)>> {
        let max = check_logits(logits)?;
        if self.params.is_greedy() {
            let id = logits.iter().position(|&l| l == max).unwrap_or(0);
            return Ok(vec![(id as u32, 1.0)]);
        }
        let mut weights = Vec::new();
        log_sum_exp(
            logits,
            f64::from(self.params.temperature),
            max,
            &mut weights,
        );
        let mut order = Vec::new();
        let keep = candidates(&self.params, &weights, &mut order);
        order.truncate(keep);
        order.sort_unstable_by(by_weight_then_id);
        order.retain(|c| c.0 > 0.0);
        let mass: f64 = order.iter().map(|c| c.0).sum();
        Ok(order.into_iter().map(|(p, id)| (id, p / mass)).collect())
    }
}

impl SamplingParams {
    /// Whether top-k or top-p remove anything from a vocabulary of `vocab` tokens.
    fn truncates(&self, vocab: usize) -> bool {
        (self.top_k != 0 && self.top_k < vocab) || self.top_p < 1.0
    }
}

/// Rejects empty rows, NaN and `+inf`; returns the maximum (finite).
fn check_logits(logits: &[f32]) -> Result<f32> {
    if logits.is_empty() {
        return Err(VlmError::Input {
            input: "logits",
            reason: "empty logits row".into(),
        });
    }
    if let Some(i) = logits
        .iter()
        .position(|x| x.is_nan() || *x == f32::INFINITY)
    {
        return Err(VlmError::Input {
            input: "logits",
            reason: format!("logit {i} is {}", logits[i]),
        });
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return Err(VlmError::Input {
            input: "logits",
            reason: "every logit is -inf".into(),
        });
    }
    Ok(max)
}

/// Fills `weights` with `exp(l / T - max / T)` (in f64, so log-probs stay accurate over 150k tokens) and
/// returns `log Σ exp(l / T)`.
fn log_sum_exp(logits: &[f32], temperature: f64, max: f32, weights: &mut Vec<f64>) -> f64 {
    let max_scaled = f64::from(max) / temperature;
    weights.clear();
    weights.extend(
        logits
            .iter()
            .map(|&l| (f64::from(l) / temperature - max_scaled).exp()),
    );
    max_scaled + weights.iter().sum::<f64>().ln()
}

/// The first candidate at which the running weight passes `target` (`None` if rounding leaves the walk
/// short of it).
fn walk(candidates: impl Iterator<Item = (f64, u32)>, target: f64) -> Option<u32> {
    let mut acc = 0.0;
    for (w, id) in candidates {
        acc += w;
        if acc > target {
            return Some(id);
        }
    }
    None
}

/// Descending weight, ties by lower id: a total order, so partial selection and sorting agree.
fn by_weight_then_id(a: &(f64, u32), b: &(f64, u32)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Fills `order` with the top-k candidates `(weight, id)`, applies top-p, and returns how many leading
/// entries are kept (at least one); those leading entries are sorted by [`by_weight_then_id`].
///
/// Top-p does not sort the whole vocabulary: it selects the best 256, 1024, ... candidates (linear time
/// each) until their mass reaches the threshold, and sorts only those.
fn candidates(params: &SamplingParams, weights: &[f64], order: &mut Vec<(f64, u32)>) -> usize {
    order.clear();
    order.extend(weights.iter().copied().zip(0u32..));
    let k = if params.top_k == 0 {
        order.len()
    } else {
        params.top_k.min(order.len())
    };
    if k < order.len() {
        order.select_nth_unstable_by(k - 1, by_weight_then_id);
        order.truncate(k);
    }
    if params.top_p >= 1.0 {
        order.sort_unstable_by(by_weight_then_id);
        return order.len();
    }
    let threshold = f64::from(params.top_p) * order.iter().map(|c| c.0).sum::<f64>();
    let mut m = 256.min(order.len());
    loop {
        if m < order.len() {
            order.select_nth_unstable_by(m - 1, by_weight_then_id);
        }
        let head_mass: f64 = order[..m].iter().map(|c| c.0).sum();
        if head_mass >= threshold || m == order.len() {
            break;
        }
        m = (m * 4).min(order.len());
    }
    let head = &mut order[..m];
    head.sort_unstable_by(by_weight_then_id);
    let mut acc = 0.0;
    for (n, c) in head.iter().enumerate() {
        acc += c.0;
        if acc >= threshold {
            return n + 1;
        }
    }
    m.max(1)
}

/// The last id with a finite logit (the fallback when rounding leaves the walk just short of the total).
fn last_finite(logits: &[f32]) -> usize {
    logits.iter().rposition(|l| l.is_finite()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum_and_reports_log_softmax() {
        let mut s = Sampler::new(SamplingParams::greedy(), 0).unwrap();
        let out = s.sample(&[1.0, 3.0, 3.0, -2.0]).unwrap();
        assert_eq!(out.token, 1);
        let z = (1f64.exp() + 2.0 * 3f64.exp() + (-2f64).exp()).ln();
        assert!((f64::from(out.logprob) - (3.0 - z)).abs() < 1e-6);
    }

    #[test]
    fn invalid_inputs_are_errors() {
        assert!(Sampler::new(SamplingParams::with_temperature(-1.0), 0).is_err());
        assert!(Sampler::new(SamplingParams::default().top_p(0.0), 0).is_err());
        let mut s = Sampler::new(SamplingParams::default(), 0).unwrap();
        assert!(s.sample(&[]).is_err());
        assert!(s.sample(&[0.0, f32::NAN]).is_err());
        assert!(s.sample(&[f32::NEG_INFINITY; 3]).is_err());
    }
}
