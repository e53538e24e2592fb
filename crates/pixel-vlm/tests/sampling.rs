//! The sampler: its truncated distributions against `transformers`' temperature / top-k / top-p warpers,
//! log-probs against a float64 log-softmax, empirical frequencies, and seeded reproducibility.

use std::path::Path;

use pixel_vlm::sampling::{Sampler, SamplingParams};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    logits: Vec<Option<f32>>,
    temperature: f32,
    top_k: usize,
    top_p: f32,
    kept: Vec<u32>,
    probs: Vec<f64>,
    logprobs: Vec<Option<f64>>,
}

fn cases() -> Vec<Case> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/processor/sampling_cases.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn logits(case: &Case) -> Vec<f32> {
    case.logits
        .iter()
        .map(|l| l.unwrap_or(f32::NEG_INFINITY))
        .collect()
}

fn params(case: &Case) -> SamplingParams {
    SamplingParams {
        temperature: case.temperature,
        top_k: case.top_k,
        top_p: case.top_p,
    }
}

#[test]
fn truncated_distribution_matches_transformers_warpers() {
    for (n, case) in cases().iter().enumerate() {
        let sampler = Sampler::new(params(case), 0).unwrap();
        let mut dist = sampler.distribution(&logits(case)).unwrap();
        dist.sort_by_key(|d| d.0);
        let ids: Vec<u32> = dist.iter().map(|d| d.0).collect();
        assert_eq!(ids, case.kept, "case {n}: kept tokens");
        for ((_, p), want) in dist.iter().zip(&case.probs) {
            assert!(
                (p - want).abs() < 1e-6,
                "case {n}: probability {p} vs {want}"
            );
        }
    }
}

#[test]
fn logprobs_are_full_log_softmax_of_tempered_logits() {
    for (n, case) in cases().iter().enumerate() {
        let row = logits(case);
        let mut sampler = Sampler::new(params(case), 11).unwrap();
        for _ in 0..50 {
            let s = sampler.sample(&row).unwrap();
            assert!(
                case.kept.contains(&s.token),
                "case {n}: drew {} outside the kept set",
                s.token
            );
            let want = case.logprobs[s.token as usize].unwrap();
            assert!(
                (f64::from(s.logprob) - want).abs() < 1e-5,
                "case {n}: logprob {} vs {want}",
                s.logprob
            );
        }
    }
}

#[test]
fn empirical_frequencies_follow_the_distribution() {
    const DRAWS: usize = 20_000;
    for (n, case) in cases().iter().enumerate().filter(|(n, _)| n % 2 == 0) {
        let row = logits(case);
        let mut sampler = Sampler::new(params(case), 1234 + n as u64).unwrap();
        let mut counts = vec![0usize; row.len()];
        for _ in 0..DRAWS {
            counts[sampler.sample(&row).unwrap().token as usize] += 1;
        }
        for (id, &count) in counts.iter().enumerate() {
            let p = case
                .kept
                .iter()
                .position(|&k| k as usize == id)
                .map_or(0.0, |i| case.probs[i]);
            let freq = count as f64 / DRAWS as f64;
            // Five standard deviations of a binomial proportion (plus a floor for tiny p).
            let tol = 5.0 * (p * (1.0 - p) / DRAWS as f64).sqrt() + 1e-4;
            assert!(
                (freq - p).abs() <= tol,
                "case {n} token {id}: frequency {freq} vs probability {p}"
            );
        }
    }
}

#[test]
fn greedy_ignores_the_seed() {
    let case = &cases()[0];
    let row = logits(case);
    let argmax = (0..row.len())
        .max_by(|&a, &b| row[a].total_cmp(&row[b]))
        .unwrap() as u32;
    for seed in 0..5 {
        let mut s = Sampler::new(SamplingParams::greedy(), seed).unwrap();
        let out = s.sample(&row).unwrap();
        assert_eq!(out.token, argmax);
        // Greedy reports log_softmax at temperature 1, which is the first case's temperature.
        assert!((f64::from(out.logprob) - case.logprobs[argmax as usize].unwrap()).abs() < 1e-5);
    }
}

#[test]
fn seeded_runs_reproduce_exact_tokens() {
    let case = &cases()[3]; // temperature 1.3, top-k 10, top-p 0.8
    let row = logits(case);
    let draw = |seed: u64, stream: u64| -> Vec<u32> {
        let mut s = Sampler::for_sequence(params(case), seed, stream).unwrap();
        (0..12).map(|_| s.sample(&row).unwrap().token).collect()
    };
    let a = draw(42, 0);
    assert_eq!(a, draw(42, 0), "same seed and stream");
    assert_ne!(a, draw(42, 1), "another stream");
    assert_ne!(a, draw(43, 0), "another seed");
    // Pinned: ChaCha8 (rand_chacha 0.9) from seed 42, stream 0. A change here changes every seeded run.
    assert_eq!(a, PINNED);
}

const PINNED: [u32; 12] = [0, 37, 38, 0, 23, 23, 23, 20, 20, 23, 38, 37];
