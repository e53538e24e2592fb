//! The KV cache grows with use: a long greedy decode and forked group rollouts (with a user turn between
//! two generations) give the tokens and log-probs of a cache-free forward over the whole sequence, the
//! result does not depend on how much the cache holds, and the cache allocates in proportion to what it
//! holds, not to its capacity.

mod common;

use burn::tensor::activation::log_softmax;
use common::{B, Fixture, model_dir, to_f32};
use pixel_vlm::cache::KV_CACHE_CHUNK;
use pixel_vlm::generation::{GenerationConfig, SegmentInput, Session};
use pixel_vlm::sampling::{Sampler, SamplingParams};
use pixel_vlm::{ForwardInput, Qwen25Vl};

/// Cache decoding against a cache-free forward (same products, other shapes): f32 rounding only.
const TOLERANCE: f32 = 1e-5;

fn model() -> Qwen25Vl<B> {
    Qwen25Vl::from_pretrained(model_dir("tiny_flat"), &Default::default()).unwrap()
}

fn tokens(n: usize) -> GenerationConfig {
    GenerationConfig {
        max_new_tokens: n,
        ..Default::default()
    }
}

/// `log_softmax` rows of a cache-free forward over `ids` (a fixture prompt, then text at consecutive
/// positions after the prompt's largest): row `i` is the distribution of token `i + 1`.
fn cache_free_logprobs(model: &Qwen25Vl<B>, prompt: &SegmentInput, ids: &[u32]) -> Vec<Vec<f32>> {
    let n = prompt.input_ids.len();
    assert_eq!(&ids[..n], prompt.input_ids.as_slice());
    let prompt_positions = prompt.positions.clone().unwrap();
    let next = prompt_positions.iter().max().unwrap() + 1;
    let mut positions = Vec::with_capacity(3 * ids.len());
    for axis in 0..3 {
        positions.extend_from_slice(&prompt_positions[axis * n..(axis + 1) * n]);
        positions.extend((0..(ids.len() - n) as i64).map(|i| next + i));
    }
    let input = ForwardInput {
        input_ids: ids,
        batch: 1,
        positions: &positions,
        valid: None,
        generated: None,
        images: prompt.images.as_ref(),
        videos: prompt.videos.as_ref(),
    };
    let hidden = model.forward_train(&input).unwrap();
    let vocab = model.config.text.vocab_size;
    to_f32(log_softmax(model.logits(hidden), 2))
        .chunks_exact(vocab)
        .map(<[f32]>::to_vec)
        .collect()
}

/// Asserts that the tokens sampled at `at` (indices into the row's whole sequence) have the log-probs of
/// the cache-free forward, and, for greedy rows, that each is that forward's most likely token.
fn assert_matches_cache_free(
    reference: &[Vec<f32>],
    ids: &[u32],
    at: &[usize],
    logprobs: &[f32],
    greedy: bool,
    what: &str,
) {
    assert_eq!(at.len(), logprobs.len(), "{what}");
    for (&i, &lp) in at.iter().zip(logprobs) {
        let row = &reference[i - 1];
        let want = row[ids[i] as usize];
        assert!(
            (lp - want).abs() <= TOLERANCE,
            "{what}: token {i}: cache {lp} vs cache-free {want}"
        );
        if greedy {
            let best = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert!(
                want >= best - TOLERANCE,
                "{what}: token {i} ({}) is not the cache-free argmax",
                ids[i]
            );
        }
    }
}

#[test]
fn a_long_greedy_decode_equals_a_cache_free_forward_whatever_the_capacity() {
    let model = model();
    let prompt = Fixture::load("tiny_flat", "multi_image").prompt();
    let n = prompt.input_ids.len();
    let new = 400;
    let decode = |capacity: usize| {
        let mut session = Session::new(&model, 1, capacity).unwrap();
        session.append(std::slice::from_ref(&prompt)).unwrap();
        let mut samplers = vec![Sampler::new(SamplingParams::greedy(), 0).unwrap()];
        let out = session
            .generate(&tokens(new), &mut samplers, None, |_, _, _| {})
            .unwrap()
            .remove(0);
        (out, session.cache().len(), session.cache().allocated())
    };
    // Room for the whole context, and exactly what the decode needs.
    let (out, len, allocated) = decode(4096);
    let (tight, _, tight_allocated) = decode(n + new);
    assert_eq!(out.tokens.len(), new);
    // The last token is sampled, not fed.
    assert_eq!(len, n + new - 1);
    assert!(
        allocated >= len && allocated <= 2 * len,
        "{allocated} slots allocated for {len} used (capacity 4096)"
    );
    assert!(tight_allocated <= n + new, "grown past the capacity");
    assert_eq!(out.tokens, tight.tokens, "tokens depend on the allocation");
    assert_eq!(
        out.logprobs, tight.logprobs,
        "log-probs depend on the allocation"
    );

    let mut ids = prompt.input_ids.clone();
    ids.extend_from_slice(&out.tokens);
    let reference = cache_free_logprobs(&model, &prompt, &ids);
    let at: Vec<usize> = (n..n + new).collect();
    assert_matches_cache_free(&reference, &ids, &at, &out.logprobs, true, "greedy");
}

#[test]
fn forked_rollouts_with_a_user_turn_equal_cache_free_forwards() {
    let model = model();
    let prompt = Fixture::load("tiny_flat", "multi_image").prompt();
    let n = prompt.input_ids.len();
    let rows = 4;
    let mut one = Session::new(&model, 1, 4096).unwrap();
    one.append(std::slice::from_ref(&prompt)).unwrap();
    let prefilled = one.cache().allocated();
    assert!(prefilled >= n && prefilled < n + KV_CACHE_CHUNK);
    let mut group = one.fork(0, rows).unwrap();
    assert_eq!(group.cache().allocated(), prefilled);
    let mut samplers: Vec<Sampler> = (0..rows as u64)
        .map(|row| Sampler::for_sequence(SamplingParams::with_temperature(1.0), 11, row).unwrap())
        .collect();
    let first = group
        .generate(&tokens(24), &mut samplers, None, |_, _, _| {})
        .unwrap();
    // A user turn long enough to make the cache grow inside one append.
    let turn = SegmentInput::text(
        (0..2 * KV_CACHE_CHUNK as u32)
            .map(|i| 10 + i % 200)
            .collect(),
    );
    group.append(&vec![turn.clone(); rows]).unwrap();
    let second = group
        .generate(&tokens(24), &mut samplers, None, |_, _, _| {})
        .unwrap();
    let cache = group.cache();
    assert!(
        cache.allocated() >= cache.len() && cache.allocated() <= 2 * cache.len(),
        "{} slots allocated for {} used",
        cache.allocated(),
        cache.len()
    );
    assert!(
        first.iter().any(|r| r.tokens != first[0].tokens),
        "seeded rows sample different continuations"
    );

    for row in 0..rows {
        let ids = group.tokens(row).to_vec();
        assert_eq!(ids.len(), n + 24 + turn.input_ids.len() + 24);
        let reference = cache_free_logprobs(&model, &prompt, &ids);
        let second_start = n + 24 + turn.input_ids.len();
        let at: Vec<usize> = (n..n + 24).chain(second_start..second_start + 24).collect();
        let logprobs: Vec<f32> = first[row]
            .logprobs
            .iter()
            .chain(&second[row].logprobs)
            .copied()
            .collect();
        assert_matches_cache_free(
            &reference,
            &ids,
            &at,
            &logprobs,
            false,
            &format!("row {row}"),
        );
    }
    // The prefilled row is untouched by the group's writes.
    assert_eq!(one.cache().len(), n);
}
