//! Any model output is survivable and no request allocates without bound: a sampled special token is
//! fed back as text, and KV caches beyond the context or the memory budget are typed errors.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};
use pixel_vlm::cache::{DEFAULT_KV_CACHE_BUDGET, KvCache};
use pixel_vlm::generation::{GenerationConfig, RowOutput, SegmentInput, Session};
use pixel_vlm::sampling::{Sampler, SamplingParams};
use pixel_vlm::{Qwen25Vl, VlmError};

mod common;

use common::{B, model_dir};

fn model() -> Qwen25Vl<B> {
    Qwen25Vl::from_pretrained(model_dir("tiny_flat"), &Default::default()).unwrap()
}

/// `<|im_start|>user ... <|im_end|>\n<|im_start|>assistant` in the tiny vocabulary.
fn text_prompt() -> SegmentInput {
    SegmentInput::text(vec![641, 100, 200, 300, 642, 198, 641, 400])
}

fn sample(
    session: &mut Session<'_, B>,
    seed: u64,
    max_new_tokens: usize,
) -> Result<RowOutput, VlmError> {
    let mut samplers = vec![Sampler::new(SamplingParams::with_temperature(1.0), seed)?];
    let config = GenerationConfig {
        max_new_tokens,
        ..Default::default()
    };
    Ok(session
        .generate(&config, &mut samplers, None, |_, _, _| {})?
        .remove(0))
}

/// Log-probs (temperature 1) of `generated` after `prompt`, from one forward over embedding-table rows
/// looked up by hand: every token, the pads included, as an ordinary token.
fn ordinary_logprobs(model: &Qwen25Vl<B>, prompt: &[u32], generated: &[u32]) -> Vec<f32> {
    let mut ids: Vec<u32> = prompt.to_vec();
    ids.extend_from_slice(&generated[..generated.len() - 1]);
    let n = ids.len();
    let device = model.device();
    let index = Tensor::<B, 1, Int>::from_data(
        TensorData::new(ids.iter().map(|&i| i64::from(i)).collect(), [n]),
        &device,
    );
    let hidden_size = model.config.text.hidden_size;
    let embeds = model
        .model
        .text
        .embed_tokens
        .weight
        .val()
        .select(0, index)
        .reshape([1, n, hidden_size]);
    let positions: Vec<i64> = (0..3).flat_map(|_| 0..n as i64).collect();
    let mut cache = model.new_cache(1, n).unwrap();
    let hidden = model
        .model
        .text
        .forward(embeds, &positions, &vec![true; n], &mut cache)
        .unwrap();
    let lp = log_softmax(model.logits(hidden), 2)
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let vocab = model.config.text.vocab_size;
    generated
        .iter()
        .enumerate()
        .map(|(k, &t)| lp[(prompt.len() - 1 + k) * vocab + t as usize])
        .collect()
}

/// The tiny model's random weights make sampling at temperature 1 nearly uniform over its 672 tokens, so
/// some seed draws `<|image_pad|>` or `<|video_pad|>` mid-answer. Before, feeding it back ended
/// generation with "image placeholders: the input has 1 pad tokens but grid_thw gives 0".
#[test]
fn a_sampled_pad_token_is_fed_back_as_an_ordinary_token() {
    let model = model();
    let pads = [model.config.image_token_id, model.config.video_token_id];
    let prompt = text_prompt();
    let (seed, out, at) = (0..400)
        .find_map(|seed| {
            let mut session = Session::new(&model, 1, 64).unwrap();
            session.append(std::slice::from_ref(&prompt)).unwrap();
            let out =
                sample(&mut session, seed, 40).expect("a sampled token never fails generation");
            let at = out.tokens.iter().position(|t| pads.contains(t))?;
            (at + 2 < out.tokens.len()).then_some((seed, out, at))
        })
        .expect("some seed samples a pad token before the end");
    assert_eq!(out.tokens.len(), 40, "generation went on after the pad");

    // What followed the pad was computed from its ordinary embedding row.
    let want = ordinary_logprobs(&model, &prompt.input_ids, &out.tokens);
    for (k, (got, want)) in out.logprobs.iter().zip(&want).enumerate() {
        assert!(
            (got - want).abs() <= 1e-4,
            "token {k} (pad at {at}): {got} vs {want}"
        );
    }

    // A turn that ends on the pad leaves it pending; the next user turn feeds it first, as text.
    let mut session = Session::new(&model, 1, 96).unwrap();
    session.append(std::slice::from_ref(&prompt)).unwrap();
    let first = sample(&mut session, seed, at + 1).unwrap();
    assert_eq!(first.tokens, out.tokens[..=at]);
    assert_eq!(session.pending(0), Some(out.tokens[at]));
    session
        .append(&[SegmentInput::text(vec![642, 198, 641, 100, 642])])
        .unwrap();
    sample(&mut session, seed, 4).unwrap();

    // A pad in the input itself, with no image, is still the caller's mistake.
    let mut session = Session::new(&model, 1, 16).unwrap();
    let err = session
        .append(&[SegmentInput::text(vec![641, pads[0], 642])])
        .unwrap_err();
    assert!(
        matches!(
            err,
            VlmError::PlaceholderMismatch {
                kind: "image",
                tokens: 1,
                expected: 0,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn kv_caches_beyond_the_context_or_the_budget_are_typed_errors() {
    let model = model();
    let max = model.config.text.max_position_embeddings;
    assert_eq!(max, 4096);
    let err = Session::new(&model, 1, max + 1).err().unwrap();
    assert!(
        matches!(
            err,
            VlmError::CacheBeyondContext {
                capacity: 4097,
                max_position_embeddings: 4096
            }
        ),
        "{err}"
    );

    // 2 (keys, values) x 2 layers x 2 KV heads x 12 (head_dim) x 4 bytes per token.
    let need = model.kv_cache_bytes(1, 100).unwrap();
    assert_eq!(need, 2 * 2 * 2 * 12 * 4 * 100);
    let err = Session::with_budget(&model, 1, 100, need - 1)
        .err()
        .unwrap();
    assert!(
        matches!(err, VlmError::CacheOverBudget { batch: 1, capacity: 100, bytes: Some(b), budget }
            if b == need && budget == need - 1),
        "{err}"
    );
    assert!(Session::with_budget(&model, 1, 100, need).is_ok());
    assert_eq!(model.max_cache_capacity(1, need), 100);
    assert_eq!(model.max_cache_capacity(1, DEFAULT_KV_CACHE_BUDGET), max);

    // Sizes no machine holds are refused before anything is allocated.
    let err = Session::new(&model, usize::MAX, max).err().unwrap();
    assert!(
        matches!(err, VlmError::CacheOverBudget { bytes: None, .. }),
        "{err}"
    );
    assert!(matches!(
        model.new_cache(1 << 40, max),
        Err(VlmError::CacheOverBudget { bytes: Some(_), .. })
    ));
    let device = Default::default();
    let err = KvCache::<B>::new(
        80,
        1 << 20,
        8,
        128,
        1 << 20,
        DEFAULT_KV_CACHE_BUDGET,
        &device,
    )
    .err()
    .unwrap();
    assert!(matches!(err, VlmError::CacheOverBudget { .. }), "{err}");
}
