//! Parity with transformers 5.24 on tiny random checkpoints (fixtures from `scripts/gen_vlm_model_fixtures.py`):
//! vision features and logits within 1e-4, 20 greedy tokens identical, both config layouts, f32 and bf16,
//! tied and untied heads, single file and sharded.

use std::path::PathBuf;

use burn::tensor::Tensor;
use pixel_vlm::{ForwardInput, Qwen25Vl, VisualInput};
use safetensors::SafeTensors;

type B = pixel_vlm::backend::CpuBackend;

const TOL: f32 = 1e-4;

fn model_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
}

/// The generator's deterministic patches: `((i*7919 + seed*13 + 17) % 509 - 254) / 256`.
fn pixel_values(n_patches: usize, seed: i64) -> Vec<f32> {
    (0..(n_patches * 1176) as i64)
        .map(|i| (((i * 7919 + seed * 13 + 17) % 509) - 254) as f32 / 256.0)
        .collect()
}

struct Expected {
    bytes: Vec<u8>,
}

impl Expected {
    fn load(model: &str, case: &str) -> Self {
        Self {
            bytes: std::fs::read(model_dir(model).join(format!("expected_{case}.safetensors")))
                .unwrap(),
        }
    }
    fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).unwrap()
    }
    fn has(&self, name: &str) -> bool {
        self.tensors().names().contains(&name)
    }
    fn i64s(&self, name: &str) -> (Vec<i64>, Vec<usize>) {
        let st = self.tensors();
        let t = st.tensor(name).unwrap();
        (
            t.data()
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            t.shape().to_vec(),
        )
    }
    fn f32s(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        let st = self.tensors();
        let t = st.tensor(name).unwrap();
        (
            t.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            t.shape().to_vec(),
        )
    }
    fn grids(&self, name: &str) -> Option<Vec<[usize; 3]>> {
        self.has(name).then(|| {
            let (v, _) = self.i64s(name);
            v.chunks_exact(3)
                .map(|c| [c[0] as usize, c[1] as usize, c[2] as usize])
                .collect()
        })
    }
    fn visual(&self, grid_name: &str, seed: i64) -> Option<VisualInput> {
        self.grids(grid_name).map(|grid_thw| {
            let n = grid_thw.iter().map(|g| g[0] * g[1] * g[2]).sum();
            VisualInput {
                pixel_values: pixel_values(n, seed),
                grid_thw,
            }
        })
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn to_vec<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

fn check_case(model: &Qwen25Vl<B>, name: &str, case: &str) {
    let exp = Expected::load(name, case);
    let (ids, _) = exp.i64s("input_ids");
    let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
    let (positions, _) = exp.i64s("position_ids");
    let images = exp.visual("image_grid_thw", 0);
    let videos = exp.visual("video_grid_thw", 1_000_003);

    for (visual, feat) in [(&images, "image_features"), (&videos, "video_features")] {
        if let Some(v) = visual {
            let (want, shape) = exp.f32s(feat);
            let got = model.encode_visual(v).unwrap();
            assert_eq!(got.dims().to_vec(), shape, "{name}/{case} {feat} shape");
            let diff = max_abs_diff(&to_vec(got), &want);
            assert!(diff <= TOL, "{name}/{case} {feat}: max abs diff {diff}");
        }
    }

    let input = ForwardInput {
        input_ids: &ids,
        batch: 1,
        positions: &positions,
        valid: None,
        images: images.as_ref(),
        videos: videos.as_ref(),
    };
    let mut cache = model.new_cache(1, ids.len() + 20);
    let hidden = model.forward_hidden(&input, &mut cache).unwrap();
    let logits = model.logits(hidden.clone());
    let (want, shape) = exp.f32s("logits");
    assert_eq!(logits.dims()[1..].to_vec(), shape);
    let diff = max_abs_diff(&to_vec(logits), &want);
    assert!(diff <= TOL, "{name}/{case} logits: max abs diff {diff}");

    // 20 greedy tokens with the KV cache: new tokens continue at max(position) + 1.
    let (greedy, _) = exp.i64s("greedy");
    let seq = ids.len();
    let mut last = model.logits(hidden.slice([0..1, seq - 1..seq]));
    let mut tokens = Vec::new();
    for _ in 0..greedy.len() {
        let token = to_vec(last.clone().argmax(2).float())[0] as u32;
        tokens.push(token as i64);
        let pos = cache.next_position(0);
        let step = ForwardInput {
            input_ids: &[token],
            batch: 1,
            positions: &[pos, pos, pos],
            valid: None,
            images: None,
            videos: None,
        };
        last = model.forward(&step, &mut cache).unwrap();
    }
    assert_eq!(tokens, greedy, "{name}/{case} greedy tokens");
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
        let exp = Expected::load(model, case);
        let (ids, _) = exp.i64s("input_ids");
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
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
