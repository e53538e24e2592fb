//! Scoring, apart from inference: results files in, scores out.
//!
//! Two scorers:
//!
//! - [`Scorer::Official`], the released evaluation's rule: the whole text after the first assistant header
//!   ([`ItemResult::response`]) is matched against the references by `pixel-reward` the way the official
//!   reward calls math_verify (last complete `\boxed{}` wins, else `<answer>`, else `Answer:`; every
//!   reference tried, no options known); a question counts as correct when its match is above 0.5. Scores are
//!   averaged per qid (a qid run several times counts once), then per benchmark. This is the rule behind
//!   the paper's Table 1, InfographicsVQA included (the paper labels it ANLS, the released code scores it
//!   this way).
//! - [`Scorer::Standard`], each benchmark's own metric ([`Metric`]): the choice letter (or option text) for
//!   V* Bench, HR-Bench and MVBench, the integer count for TallyQA, ANLS (graded) for InfographicsVQA.
//!
//! Besides accuracy, every benchmark reports RaPR (the share of questions whose rollout called an
//! operation) and the operation error rate (failed / attempted operations), both from the trajectories, and
//! a 95 % confidence interval ([`crate::stats::Interval`]).

use std::collections::BTreeMap;

use pixel_reward::{AnswerKind, Matcher};
use serde::{Deserialize, Serialize};

use crate::item::Metric;
use crate::results::ItemResult;
use crate::stats::Interval;

/// Which rule scores a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scorer {
    /// The released evaluation's rule (the paper's numbers).
    Official,
    /// Each benchmark's own metric (letter, integer, ANLS).
    Standard,
}

impl Scorer {
    /// Its name as written in reports (`official`, `standard`).
    pub fn name(self) -> &'static str {
        match self {
            Scorer::Official => "official",
            Scorer::Standard => "standard",
        }
    }
}

/// One result's score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemScore {
    /// The question's id.
    pub qid: String,
    /// Its benchmark.
    pub benchmark: String,
    /// Its category.
    pub category: Option<String>,
    /// The score in `[0, 1]` (0 or 1 except for ANLS).
    pub score: f64,
    /// Whether it counts as correct (score above 0.5 officially, at least 0.5 for the standard scorer).
    pub correct: bool,
    /// The extracted answer (`None`: no answer marker, or no rollout).
    pub answer: Option<String>,
    /// Whether the rollout called an operation.
    pub used_operation: bool,
    /// Operations attempted.
    pub operations: usize,
    /// Of those, failed.
    pub failed_operations: usize,
    /// Whether the question was recorded with an error.
    pub errored: bool,
}

/// Scores one result.
pub fn score_item(result: &ItemResult, scorer: Scorer) -> ItemScore {
    let (score, correct, answer) = if result.error.is_some() || result.turns.is_empty() {
        (0.0, false, None)
    } else {
        let matcher = match scorer {
            Scorer::Official => Matcher::default(),
            Scorer::Standard => standard_matcher(result),
        };
        let judgement = matcher.judge(&result.response, &result.answers);
        let correct = match scorer {
            Scorer::Official => judgement.score > 0.5,
            Scorer::Standard => judgement.correct,
        };
        let score = match scorer {
            Scorer::Official => f64::from(u8::from(correct)),
            Scorer::Standard => judgement.score,
        };
        (score, correct, judgement.answer.map(|a| a.text))
    };
    ItemScore {
        qid: result.qid.clone(),
        benchmark: result.benchmark.clone(),
        category: result.category.clone(),
        score,
        correct,
        answer,
        used_operation: result.stats.used_pixel_reasoning(),
        operations: result.stats.operations_attempted,
        failed_operations: result.stats.operations_failed,
        errored: result.error.is_some(),
    }
}

fn standard_matcher(result: &ItemResult) -> Matcher {
    match result.metric {
        Metric::Choice => {
            Matcher::new(AnswerKind::MultipleChoice).with_options(result.options.iter().cloned())
        }
        Metric::Integer => Matcher::new(AnswerKind::Number),
        Metric::Anls => Matcher::new(AnswerKind::Anls),
        Metric::Auto => Matcher::default().with_options(result.options.iter().cloned()),
    }
}

/// Accuracy (or mean ANLS) of a set of questions with its interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    /// Distinct questions.
    pub questions: usize,
    /// Mean of the per-question scores, in `[0, 1]`.
    pub mean: f64,
    /// Its 95 % confidence interval.
    pub interval: Interval,
}

impl Accuracy {
    /// The accuracy of per-question scores.
    pub fn of(scores: &[f64]) -> Self {
        let n = scores.len();
        let mean = if n == 0 {
            0.0
        } else {
            scores.iter().sum::<f64>() / n as f64
        };
        Self {
            questions: n,
            mean,
            interval: Interval::of_scores(scores),
        }
    }
}

/// One benchmark's scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchmarkScore {
    /// The benchmark.
    pub benchmark: String,
    /// The metric of the standard scorer.
    pub metric: Metric,
    /// Results read (a qid run twice counts twice here, once in the accuracy).
    pub results: usize,
    /// Accuracy over distinct questions.
    pub accuracy: Accuracy,
    /// Share of results whose rollout called an operation (RaPR).
    pub rapr: f64,
    /// Operations attempted in all results.
    pub operations: usize,
    /// Failed operations / attempted operations (`None` without operations).
    pub operation_error_rate: Option<f64>,
    /// Results recorded with an error.
    pub errors: usize,
    /// Accuracy per category (sorted by name).
    pub categories: BTreeMap<String, Accuracy>,
}

/// All scores of a set of results under one scorer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// The scorer.
    pub scorer: Scorer,
    /// Per result, in input order.
    pub items: Vec<ItemScore>,
    /// Per benchmark, sorted by name.
    pub benchmarks: Vec<BenchmarkScore>,
}

/// Scores `results` (from one or several files) with `scorer`.
pub fn score(results: &[ItemResult], scorer: Scorer) -> Scores {
    let items: Vec<ItemScore> = results.iter().map(|r| score_item(r, scorer)).collect();
    let mut by_bench: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, r) in results.iter().enumerate() {
        by_bench.entry(r.benchmark.as_str()).or_default().push(i);
    }
    let benchmarks = by_bench
        .into_iter()
        .map(|(name, indices)| benchmark_score(name, &indices, results, &items))
        .collect();
    Scores {
        scorer,
        items,
        benchmarks,
    }
}

fn benchmark_score(
    name: &str,
    indices: &[usize],
    results: &[ItemResult],
    items: &[ItemScore],
) -> BenchmarkScore {
    // Per qid: the mean over its results, and its category.
    let mut per_qid: BTreeMap<&str, (f64, usize, Option<&str>)> = BTreeMap::new();
    for &i in indices {
        let entry =
            per_qid
                .entry(items[i].qid.as_str())
                .or_insert((0.0, 0, items[i].category.as_deref()));
        entry.0 += items[i].score;
        entry.1 += 1;
    }
    let scores: Vec<f64> = per_qid.values().map(|(s, n, _)| s / *n as f64).collect();
    let mut per_category: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (s, n, category) in per_qid.values() {
        let key = category.unwrap_or("(none)").to_string();
        per_category.entry(key).or_default().push(s / *n as f64);
    }
    let operations: usize = indices.iter().map(|&i| items[i].operations).sum();
    let failed: usize = indices.iter().map(|&i| items[i].failed_operations).sum();
    let used = indices.iter().filter(|&&i| items[i].used_operation).count();
    BenchmarkScore {
        benchmark: name.to_string(),
        metric: results[indices[0]].metric,
        results: indices.len(),
        accuracy: Accuracy::of(&scores),
        rapr: used as f64 / indices.len().max(1) as f64,
        operations,
        operation_error_rate: (operations > 0).then(|| failed as f64 / operations as f64),
        errors: indices.iter().filter(|&&i| items[i].errored).count(),
        categories: per_category
            .into_iter()
            .map(|(k, v)| (k, Accuracy::of(&v)))
            .collect(),
    }
}
