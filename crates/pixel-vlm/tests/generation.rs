//! Generation: KV-cache decoding equals full recomputation, batched equals unbatched, multi-turn
//! continuation equals a fresh prefill, stop tokens/strings, streaming, seeded sampling.

use burn::tensor::activation::log_softmax;
use pixel_vlm::generation::{FinishReason, GenerationConfig, SegmentInput, Session};
use pixel_vlm::sampling::{Sampler, SamplingParams};
use pixel_vlm::{ForwardInput, Qwen25Vl, VisualInput};

mod common;

use common::{B, Fixture, model_dir, pixel_values};

fn model() -> Qwen25Vl<B> {
    Qwen25Vl::from_pretrained(model_dir("tiny_flat"), &Default::default()).unwrap()
}

/// A fixture prompt as a segment with explicit positions and its images/videos.
fn prompt(case: &str) -> SegmentInput {
    Fixture::load("tiny_flat", case).prompt()
}

fn greedy(n: usize) -> GenerationConfig {
    GenerationConfig {
        max_new_tokens: n,
        ..Default::default()
    }
}

fn greedy_samplers(n: usize) -> Vec<Sampler> {
    (0..n)
        .map(|_| Sampler::new(SamplingParams::greedy(), 0).unwrap())
        .collect()
}

/// Log-probs of `next` tokens from one full forward over `seq` (positions continuing the prompt's).
fn full_logprobs(model: &Qwen25Vl<B>, p: &SegmentInput, generated: &[u32]) -> Vec<f32> {
    let mut ids = p.input_ids.clone();
    ids.extend_from_slice(&generated[..generated.len() - 1]);
    let prompt_pos = p.positions.clone().unwrap();
    let n = p.input_ids.len();
    let next = *prompt_pos.iter().max().unwrap() + 1;
    let mut positions = Vec::new();
    for axis in 0..3 {
        positions.extend_from_slice(&prompt_pos[axis * n..(axis + 1) * n]);
        positions.extend((0..generated.len() as i64 - 1).map(|i| next + i));
    }
    let input = ForwardInput {
        input_ids: &ids,
        batch: 1,
        positions: &positions,
        valid: None,
        generated: None,
        images: p.images.as_ref(),
        videos: p.videos.as_ref(),
    };
    let mut cache = model.new_cache(1, ids.len()).unwrap();
    let logits = model.forward(&input, &mut cache).unwrap(); // [1, seq, vocab]
    let lp = log_softmax(logits, 2).into_data().to_vec::<f32>().unwrap();
    let vocab = model.config.text.vocab_size;
    generated
        .iter()
        .enumerate()
        .map(|(k, &t)| lp[(n - 1 + k) * vocab + t as usize])
        .collect()
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= 1e-4, "{what}[{i}]: {x} vs {y}");
    }
}

#[test]
fn kv_cache_decoding_equals_full_recomputation() {
    let model = model();
    let p = prompt("multi_image");
    let mut session = Session::new(&model, 1, 128).unwrap();
    session.append(std::slice::from_ref(&p)).unwrap();
    let out = session
        .generate(&greedy(10), &mut greedy_samplers(1), None, |_, _, _| {})
        .unwrap();
    assert_eq!(out[0].tokens.len(), 10);
    assert_eq!(out[0].finish, FinishReason::Length);
    assert_close(
        &out[0].logprobs,
        &full_logprobs(&model, &p, &out[0].tokens),
        "logprobs",
    );
}

#[test]
fn batched_generation_equals_unbatched() {
    let model = model();
    let text = SegmentInput::text(vec![641, 100, 200, 300, 642, 198, 641, 400]);
    let rows = [prompt("multi_image"), prompt("video"), text];
    let mut batched = Session::new(&model, 3, 128).unwrap();
    batched.append(&rows).unwrap();
    let together = batched
        .generate(&greedy(8), &mut greedy_samplers(3), None, |_, _, _| {})
        .unwrap();
    for (i, row) in rows.iter().enumerate() {
        let mut alone = Session::new(&model, 1, 128).unwrap();
        alone.append(std::slice::from_ref(row)).unwrap();
        let single = alone
            .generate(&greedy(8), &mut greedy_samplers(1), None, |_, _, _| {})
            .unwrap();
        assert_eq!(together[i].tokens, single[0].tokens, "row {i}");
        assert_close(&together[i].logprobs, &single[0].logprobs, "row logprobs");
    }
}

#[test]
fn multi_turn_continuation_equals_fresh_prefill() {
    let model = model();
    let p = prompt("video");
    let mut session = Session::new(&model, 1, 160).unwrap();
    session.append(std::slice::from_ref(&p)).unwrap();
    let turn1 = session
        .generate(&greedy(5), &mut greedy_samplers(1), None, |_, _, _| {})
        .unwrap();
    assert_eq!(session.pending(0), turn1[0].tokens.last().copied());

    // Second user turn with a new 4x4-patch image (2x2 merged tokens), positions given explicitly.
    // The pending token of turn 1 is fed first at `next_position - 1`; the new tokens follow it.
    let before = session.next_position(0);
    let mut ids = vec![642, 198, 641, 649];
    let img_start = before + ids.len() as i64;
    ids.extend([652; 4]);
    ids.extend([650, 300, 301, 642, 198, 641, 400]);
    let n = ids.len();
    let (mut t, mut h, mut w) = (vec![0i64; n], vec![0i64; n], vec![0i64; n]);
    for i in 0..n {
        let (pt, ph, pw) = match i {
            0..4 => (before + i as i64, before + i as i64, before + i as i64),
            4..8 => (
                img_start,
                img_start + (i as i64 - 4) / 2,
                img_start + (i as i64 - 4) % 2,
            ),
            _ => {
                let p = img_start + 2 + (i - 8) as i64;
                (p, p, p)
            }
        };
        (t[i], h[i], w[i]) = (pt, ph, pw);
    }
    let pos = [t, h, w];
    let image = VisualInput {
        pixel_values: pixel_values(16, 5),
        grid_thw: vec![[1, 4, 4]],
    };
    let turn2 = SegmentInput {
        input_ids: ids.clone(),
        positions: Some(pos.concat()),
        images: Some(image.clone()),
        videos: None,
    };
    session.append(std::slice::from_ref(&turn2)).unwrap();
    let cont = session
        .generate(&greedy(4), &mut greedy_samplers(1), None, |_, _, _| {})
        .unwrap();

    // The same conversation prefilled at once.
    let mut all_ids = p.input_ids.clone();
    all_ids.extend(&turn1[0].tokens);
    all_ids.extend(&ids);
    let n1 = p.input_ids.len();
    let p_pos = p.positions.clone().unwrap();
    let first_gen = p_pos.iter().max().unwrap() + 1;
    let mut all_pos = Vec::new();
    for axis in 0..3 {
        all_pos.extend_from_slice(&p_pos[axis * n1..(axis + 1) * n1]);
        all_pos.extend((0..turn1[0].tokens.len() as i64).map(|i| first_gen + i));
        all_pos.extend_from_slice(&pos[axis]);
    }
    let fresh = SegmentInput {
        input_ids: all_ids,
        positions: Some(all_pos),
        images: Some(image),
        videos: p.videos.clone(),
    };
    // Images and videos are matched to their own pad tokens in order, so one of each is unambiguous.
    let mut fresh_session = Session::new(&model, 1, 160).unwrap();
    fresh_session.append(std::slice::from_ref(&fresh)).unwrap();
    let again = fresh_session
        .generate(&greedy(4), &mut greedy_samplers(1), None, |_, _, _| {})
        .unwrap();
    assert_eq!(cont[0].tokens, again[0].tokens);
    assert_close(
        &cont[0].logprobs,
        &again[0].logprobs,
        "continuation logprobs",
    );
    assert_eq!(session.tokens(0), fresh_session.tokens(0));
}

#[test]
fn stop_tokens_strings_and_streaming() {
    let model = model();
    let p = prompt("video");
    let mut reference = Session::new(&model, 1, 96).unwrap();
    reference.append(std::slice::from_ref(&p)).unwrap();
    let free = reference
        .generate(&greedy(8), &mut greedy_samplers(1), None, |_, _, _| {})
        .unwrap();
    let stop = free[0].tokens[2];
    let first = free[0].tokens.iter().position(|&t| t == stop).unwrap();

    let mut session = Session::new(&model, 1, 96).unwrap();
    session.append(std::slice::from_ref(&p)).unwrap();
    let mut streamed = Vec::new();
    let config = GenerationConfig {
        max_new_tokens: 8,
        stop_token_ids: vec![stop],
        ..Default::default()
    };
    let out = session
        .generate(&config, &mut greedy_samplers(1), None, |row, t, lp| {
            streamed.push((row, t, lp))
        })
        .unwrap();
    assert_eq!(out[0].tokens, free[0].tokens[..=first].to_vec());
    assert_eq!(out[0].finish, FinishReason::StopToken(stop));
    assert_eq!(
        streamed.iter().map(|s| s.1).collect::<Vec<_>>(),
        out[0].tokens
    );
    assert_eq!(
        streamed.iter().map(|s| s.2).collect::<Vec<_>>(),
        out[0].logprobs
    );

    let detok = |ids: &[u32]| ids.iter().map(|t| format!("<{t}>")).collect::<String>();
    let stop_string = format!("<{}><{}>", free[0].tokens[3], free[0].tokens[4]);
    let mut session = Session::new(&model, 1, 96).unwrap();
    session.append(std::slice::from_ref(&p)).unwrap();
    let config = GenerationConfig {
        max_new_tokens: 8,
        stop_strings: vec![stop_string.clone()],
        ..Default::default()
    };
    let out = session
        .generate(&config, &mut greedy_samplers(1), Some(&detok), |_, _, _| {})
        .unwrap();
    assert!(detok(&out[0].tokens).ends_with(&stop_string));
    assert_eq!(out[0].finish, FinishReason::StopString(stop_string));
    assert!(
        session
            .generate(&config, &mut greedy_samplers(1), None, |_, _, _| {})
            .is_err(),
        "needs a detokenizer"
    );
}

#[test]
fn seeded_sampling_is_reproducible_and_errors_are_typed() {
    let model = model();
    let p = prompt("video");
    let run = |seed| {
        let mut s = Session::new(&model, 1, 96).unwrap();
        s.append(std::slice::from_ref(&p)).unwrap();
        let mut samplers =
            vec![Sampler::new(SamplingParams::with_temperature(1.0).top_p(0.95), seed).unwrap()];
        s.generate(&greedy(12), &mut samplers, None, |_, _, _| {})
            .unwrap()
            .remove(0)
    };
    let (a, b) = (run(7), run(7));
    assert_eq!(a, b);
    assert!(a.logprobs.iter().all(|lp| lp.is_finite() && *lp <= 0.0));

    // Wrong placeholder count, full cache, generate before append.
    let mut bad = p.clone();
    let first_pad = bad.input_ids.iter().position(|&t| t == 653).unwrap();
    bad.input_ids[first_pad] = 300;
    let mut s = Session::new(&model, 1, 96).unwrap();
    assert!(matches!(
        s.append(std::slice::from_ref(&bad)),
        Err(pixel_vlm::VlmError::PlaceholderMismatch { .. })
    ));
    assert!(
        s.generate(&greedy(2), &mut greedy_samplers(1), None, |_, _, _| {})
            .is_err()
    );
    let mut small = Session::new(&model, 1, 10).unwrap();
    assert!(matches!(
        small.append(std::slice::from_ref(&p)),
        Err(pixel_vlm::VlmError::Generation(_))
    ));
}

#[test]
fn a_forked_prompt_generates_what_a_separate_prefill_generates() {
    let model = model();
    let p = prompt("multi_image");
    let mut one = Session::new(&model, 1, 128).unwrap();
    one.append(std::slice::from_ref(&p)).unwrap();
    let mut forked = one.fork(0, 3).unwrap();
    assert_eq!(forked.batch(), 3);
    assert_eq!(forked.tokens(2), p.input_ids.as_slice());
    let out = forked
        .generate(&greedy(6), &mut greedy_samplers(3), None, |_, _, _| {})
        .unwrap();
    let mut alone = Session::new(&model, 1, 128).unwrap();
    alone.append(std::slice::from_ref(&p)).unwrap();
    let want = alone
        .generate(&greedy(6), &mut greedy_samplers(1), None, |_, _, _| {})
        .unwrap();
    for row in &out {
        assert_eq!(row.tokens, want[0].tokens);
        assert_close(&row.logprobs, &want[0].logprobs, "forked log-probs");
    }
    // A fork beyond the memory budget is refused before anything is copied.
    assert!(one.fork_with_budget(0, 3, 1).is_err());
    assert!(one.fork(1, 2).is_err(), "row out of range");
}

#[test]
fn idle_rows_are_neither_sampled_nor_fed() {
    let model = model();
    let p = prompt("multi_image");
    let mut session = Session::new(&model, 2, 128).unwrap();
    session.append(&[p.clone(), p.clone()]).unwrap();
    let first = session
        .generate(&greedy(3), &mut greedy_samplers(2), None, |_, _, _| {})
        .unwrap();
    // Row 1 ends its turn; row 0 gets a new user turn and goes on alone.
    let more = SegmentInput::text(vec![20, 21, 22]);
    session.append_rows(&[Some(&more), None]).unwrap();
    let row1_tokens = session.tokens(1).to_vec();
    let mut seen = Vec::new();
    let out = session
        .generate_rows(
            &greedy(4),
            &[true, false],
            &mut greedy_samplers(2),
            None,
            |row, _, _| seen.push(row),
        )
        .unwrap();
    assert!(seen.iter().all(|&r| r == 0), "only row 0 was sampled");
    assert_eq!(out[0].tokens.len(), 4);
    assert!(out[1].tokens.is_empty());
    assert_eq!(session.tokens(1), row1_tokens.as_slice(), "row 1 untouched");
    assert_eq!(
        session.pending(1),
        first[1].tokens.last().copied(),
        "row 1's last token never fed"
    );

    // Row 0 continued exactly as a session that never had row 1.
    let mut alone = Session::new(&model, 1, 128).unwrap();
    alone.append(std::slice::from_ref(&p)).unwrap();
    alone
        .generate(&greedy(3), &mut greedy_samplers(1), None, |_, _, _| {})
        .unwrap();
    alone.append(std::slice::from_ref(&more)).unwrap();
    let want = alone
        .generate(&greedy(4), &mut greedy_samplers(1), None, |_, _, _| {})
        .unwrap();
    assert_eq!(out[0].tokens, want[0].tokens);
    assert_close(&out[0].logprobs, &want[0].logprobs, "row 0 log-probs");
}

#[test]
fn a_scripted_sampler_emits_its_tokens_with_their_logprobs_and_then_refuses() {
    let logits = [0.0f32, 1.0, 2.0, 3.0];
    let mut s = Sampler::scripted(SamplingParams::with_temperature(0.5), vec![1, 3]).unwrap();
    let lz = logits
        .iter()
        .map(|l| f64::from(*l / 0.5).exp())
        .sum::<f64>()
        .ln();
    let a = s.sample(&logits).unwrap();
    assert_eq!(a.token, 1);
    assert!((f64::from(a.logprob) - (2.0 - lz)).abs() < 1e-6);
    assert_eq!(s.sample(&logits).unwrap().token, 3);
    assert!(s.sample(&logits).is_err(), "the script is spent");
    let mut outside = Sampler::scripted(SamplingParams::greedy(), vec![9]).unwrap();
    assert!(outside.sample(&logits).is_err(), "id outside the logits");
}
