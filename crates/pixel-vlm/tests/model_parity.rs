//! Parity with transformers 5.24 on tiny random checkpoints (fixtures from `scripts/gen_vlm_model_fixtures.py`):
//! vision features and logits within 1e-4, 20 greedy tokens identical, both config layouts, f32 and bf16,
//! tied and untied heads, single file and sharded.

use pixel_vlm::Qwen25Vl;

mod common;

use common::{B, Fixture, max_abs_diff, model_dir, prompt_input, step, to_f32};

const TOL: f32 = 1e-4;

/// Checks one case; prints every difference (`PARITY` lines) before failing on the first that is too large.
fn check_case(model: &Qwen25Vl<B>, name: &str, case: &str) {
    let exp = Fixture::load(name, case);
    let prompt = exp.prompt();
    let ids = &prompt.input_ids;
    let mut failures = Vec::new();

    for (visual, feat) in [
        (&prompt.images, "image_features"),
        (&prompt.videos, "video_features"),
    ] {
        if let Some(v) = visual {
            let (want, shape) = exp.f32s(feat);
            let got = model.encode_visual(v).unwrap();
            assert_eq!(got.dims().to_vec(), shape, "{name}/{case} {feat} shape");
            let diff = max_abs_diff(&to_f32(got), &want);
            eprintln!("PARITY {name}/{case} {feat}: max abs diff {diff:e}");
            if diff > TOL {
                failures.push(format!("{name}/{case} {feat}: max abs diff {diff}"));
            }
        }
    }

    let input = prompt_input(&prompt);
    let mut cache = model.new_cache(1, ids.len() + 20).unwrap();
    let hidden = model.forward_hidden(&input, &mut cache).unwrap();
    let logits = model.logits(hidden.clone());
    let (want, shape) = exp.f32s("logits");
    assert_eq!(logits.dims()[1..].to_vec(), shape);
    let diff = max_abs_diff(&to_f32(logits), &want);
    eprintln!("PARITY {name}/{case} logits: max abs diff {diff:e}");
    if diff > TOL {
        failures.push(format!("{name}/{case} logits: max abs diff {diff}"));
    }

    // 20 greedy tokens with the KV cache: new tokens continue at max(position) + 1.
    let (greedy, _) = exp.i64s("greedy");
    let seq = ids.len();
    let mut last = model.logits(hidden.slice([0..1, seq - 1..seq]));
    let mut tokens = Vec::new();
    for _ in 0..greedy.len() {
        let token = to_f32(last.clone().argmax(2).float())[0] as u32;
        tokens.push(token as i64);
        last = step(model, &mut cache, token);
    }
    let same = tokens.iter().zip(&greedy).filter(|(a, b)| a == b).count();
    eprintln!(
        "PARITY {name}/{case} greedy: {same}/{} tokens equal",
        greedy.len()
    );
    if tokens != greedy {
        failures.push(format!(
            "{name}/{case} greedy tokens {tokens:?} != {greedy:?}"
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn flat_f32_untied_matches_transformers() {
    let model =
        Qwen25Vl::<B>::from_pretrained(model_dir("tiny_flat"), &Default::default()).unwrap();
    assert!(!model.config.tie_word_embeddings);
    for case in ["multi_image", "video"] {
        check_case(&model, "tiny_flat", case);
    }
}

#[test]
fn nested_bf16_tied_sharded_matches_transformers() {
    let model =
        Qwen25Vl::<B>::from_pretrained(model_dir("tiny_nested"), &Default::default()).unwrap();
    assert!(model.config.tie_word_embeddings);
    for case in ["image_video", "multi_image"] {
        check_case(&model, "tiny_nested", case);
    }
}

/// The processor side's `get_rope_index` (transformers-5 video rule, as the fixtures were made) reproduces
/// the position ids transformers fed the model.
#[test]
fn rope_index_reproduces_fixture_positions() {
    use pixel_vlm::rope_index::{RopeIndexConfig, VideoPositionRule, get_rope_index};
    let seconds = [
        ("tiny_flat", "multi_image", vec![]),
        ("tiny_flat", "video", vec![1.0f32]),
        ("tiny_nested", "image_video", vec![0.5]),
    ];
    for (model, case, second_per_grid_ts) in seconds {
        let exp = Fixture::load(model, case);
        let ids = exp.input_ids();
        let (want, _) = exp.i64s("position_ids");
        let config = RopeIndexConfig {
            rule: VideoPositionRule::Transformers5,
            ..RopeIndexConfig::qwen2_5_vl(652, 653)
        };
        let images = exp.grids("image_grid_thw").unwrap_or_default();
        let videos = exp.grids("video_grid_thw").unwrap_or_default();
        let index = get_rope_index(&config, &ids, &images, &videos, &second_per_grid_ts).unwrap();
        let got: Vec<i64> = (0..3).flat_map(|a| index.axis(a).to_vec()).collect();
        assert_eq!(got, want, "{model}/{case}");
    }
}
