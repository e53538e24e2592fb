//! Half precision: a bf16 checkpoint built as bf16 keeps its weights in bf16 and computes like transformers
//! does in bf16 (fixtures from `scripts/gen_vlm_bf16_fixtures.py`: the same inputs as the f32 parity fixtures,
//! run by transformers 5.24 with `dtype=torch.bfloat16`).
//!
//! Tolerance: bf16 keeps 8 significant bits, and two correct bf16 implementations round at different places
//! (fused kernels such as torch's `addmm` with its bias, accumulation order), so exact agreement is not
//! expected. The yardstick is transformers' own bf16 error, its bf16 logits against its f32 logits on the same
//! inputs: our bf16 logits must be within 1.5x that error of the f32 logits (RMS over all logits; measured:
//! 1.18x), at least a quarter of it (an f32 computation would be at ~0), and no logit may differ from
//! transformers-bf16 by more than twice transformers' largest bf16 error. Greedy tokens must agree wherever
//! transformers' top-2 margin is clear of bf16 rounding.

use std::path::PathBuf;

use burn::tensor::{DType, FloatDType, Tensor};
use pixel_vlm::{ForwardInput, Qwen25Vl, VisualInput, VlmError};
use safetensors::SafeTensors;

type B = pixel_vlm::backend::CpuBackend;

fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny_nested")
}

/// The generator's deterministic patches (as in `model_parity.rs`).
fn pixel_values(n_patches: usize, seed: i64) -> Vec<f32> {
    (0..(n_patches * 1176) as i64)
        .map(|i| (((i * 7919 + seed * 13 + 17) % 509) - 254) as f32 / 256.0)
        .collect()
}

fn read(file: &str) -> Vec<u8> {
    std::fs::read(model_dir().join(file)).unwrap()
}

fn tensor_i64(st: &SafeTensors<'_>, name: &str) -> Vec<i64> {
    st.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn tensor_f32(st: &SafeTensors<'_>, name: &str) -> Vec<f32> {
    st.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn visual(st: &SafeTensors<'_>, grid: &str, seed: i64) -> Option<VisualInput> {
    st.names().contains(&grid).then(|| {
        let grid_thw: Vec<[usize; 3]> = tensor_i64(st, grid)
            .chunks_exact(3)
            .map(|c| [c[0] as usize, c[1] as usize, c[2] as usize])
            .collect();
        let n = grid_thw.iter().map(|g| g[0] * g[1] * g[2]).sum();
        VisualInput {
            pixel_values: pixel_values(n, seed),
            grid_thw,
        }
    })
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn rms_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let sum: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    (sum / a.len() as f64).sqrt() as f32
}

fn to_f32<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

fn check_case(model: &Qwen25Vl<B>, case: &str) {
    let inputs = read(&format!("expected_{case}.safetensors"));
    let inputs = SafeTensors::deserialize(&inputs).unwrap();
    let expected = read(&format!("expected_{case}_bf16.safetensors"));
    let expected = SafeTensors::deserialize(&expected).unwrap();

    let ids: Vec<u32> = tensor_i64(&inputs, "input_ids")
        .iter()
        .map(|&i| i as u32)
        .collect();
    let positions = tensor_i64(&inputs, "position_ids");
    let images = visual(&inputs, "image_grid_thw", 0);
    let videos = visual(&inputs, "video_grid_thw", 1_000_003);

    for (v, feat) in [(&images, "image_features"), (&videos, "video_features")] {
        if let Some(v) = v {
            let got = model.encode_visual(v).unwrap();
            assert_eq!(got.dtype(), DType::BF16, "{case} {feat} dtype");
            let got = to_f32(got);
            let want = tensor_f32(&expected, feat);
            let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            let diff = max_abs_diff(&got, &want);
            // A few bf16 ulps of the largest feature.
            assert!(
                diff <= scale / 32.0,
                "{case} {feat}: diff {diff}, scale {scale}"
            );
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
    assert_eq!(logits.dtype(), DType::BF16);
    let got = to_f32(logits);
    let hf_bf16 = tensor_f32(&expected, "logits");
    let hf_f32 = tensor_f32(&expected, "logits_f32");
    // Error against the f32 result, ours and transformers' own bf16 run (RMS over every logit), and the
    // largest single difference to transformers' bf16 logits.
    let ours_error = rms_diff(&got, &hf_f32);
    let hf_error = rms_diff(&hf_bf16, &hf_f32);
    let to_hf_bf16 = max_abs_diff(&got, &hf_bf16);
    let hf_max_error = max_abs_diff(&hf_bf16, &hf_f32);
    eprintln!(
        "{case}: RMS error vs f32: ours {ours_error}, transformers-bf16 {hf_error}; max |ours - transformers-bf16| \
         {to_hf_bf16}, max |transformers bf16 - f32| {hf_max_error}"
    );
    assert!(
        ours_error <= 1.5 * hf_error,
        "{case}: our bf16 logits are {ours_error} (RMS) from f32, transformers' bf16 logits {hf_error}"
    );
    assert!(
        ours_error >= 0.25 * hf_error,
        "{case}: {ours_error} from f32 is too close to be a bf16 computation"
    );
    assert!(
        to_hf_bf16 <= 2.0 * hf_max_error,
        "{case}: max |ours - transformers-bf16| {to_hf_bf16} vs transformers' own max bf16 error {hf_max_error}"
    );

    // Decoding with the KV cache, fed transformers' bf16 greedy tokens: every step's logits stay within the
    // same bound, each of transformers' choices is within that bound of our best logit, and wherever its top-2
    // margin is clear of the bound our argmax is the same token.
    let greedy = tensor_i64(&expected, "greedy");
    let margins = tensor_f32(&expected, "greedy_margin");
    let step_logits = tensor_f32(&expected, "greedy_logits");
    let vocab = model.config.text.vocab_size;
    let bound = 2.0 * hf_max_error;
    let seq = ids.len();
    let mut last = model.logits(hidden.slice([0..1, seq - 1..seq]));
    let mut same_argmax = 0;
    for (step, &token) in greedy.iter().enumerate() {
        let ours = to_f32(last.clone());
        let want = &step_logits[step * vocab..(step + 1) * vocab];
        let diff = max_abs_diff(&ours, want);
        assert!(
            diff <= bound,
            "{case}: step {step} logits differ by {diff} > {bound}"
        );
        let (argmax, best) =
            ours.iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |(i, m), (j, &x)| if x > m { (j, x) } else { (i, m) },
                );
        let chosen = ours[token as usize];
        assert!(
            best - chosen <= bound,
            "{case}: step {step}: transformers' token {token} is {} below our best",
            best - chosen
        );
        if margins[step] > 2.0 * bound {
            assert_eq!(
                argmax as i64, token,
                "{case}: step {step}, clear margin {}",
                margins[step]
            );
        }
        same_argmax += usize::from(argmax as i64 == token);
        let pos = cache.next_position(0);
        let next = ForwardInput {
            input_ids: &[token as u32],
            batch: 1,
            positions: &[pos, pos, pos],
            valid: None,
            images: None,
            videos: None,
        };
        last = model.forward(&next, &mut cache).unwrap();
    }
    eprintln!(
        "{case}: same argmax as transformers-bf16 at {same_argmax}/{} steps",
        greedy.len()
    );
}

#[test]
fn bf16_checkpoint_kept_in_bf16_matches_transformers_bf16() {
    let device = Default::default();
    let model =
        Qwen25Vl::<B>::from_pretrained_with_dtype(model_dir(), &device, FloatDType::BF16).unwrap();
    assert_eq!(model.config.torch_dtype, None);
    assert_eq!(model.dtype(), DType::BF16);
    let head = &model.model.visual.blocks[0].attn.qkv.weight;
    assert_eq!(head.val().dtype(), DType::BF16, "weights are not widened");
    for case in ["multi_image", "image_video"] {
        check_case(&model, case);
    }
}

#[test]
fn unsupported_dtype_is_a_clear_error() {
    // Flex computes in f64/f32/f16/bf16; `Flex32` (a GPU storage format) is not one of them.
    let err = Qwen25Vl::<B>::from_pretrained_with_dtype(
        model_dir(),
        &Default::default(),
        FloatDType::Flex32,
    )
    .unwrap_err();
    assert!(matches!(err, VlmError::UnsupportedDtype { .. }), "{err}");
    assert!(err.to_string().contains("Flex32"), "{err}");
}

#[test]
fn f16_is_closer_to_f32_than_bf16() {
    // f16 keeps 3 more mantissa bits than bf16: on these small activations its logits must be several times
    // closer to transformers' f32 logits than transformers' own bf16 logits are.
    let device = Default::default();
    let model =
        Qwen25Vl::<B>::from_pretrained_with_dtype(model_dir(), &device, FloatDType::F16).unwrap();
    assert_eq!(model.dtype(), DType::F16);
    let inputs = read("expected_multi_image.safetensors");
    let inputs = SafeTensors::deserialize(&inputs).unwrap();
    let expected = read("expected_multi_image_bf16.safetensors");
    let expected = SafeTensors::deserialize(&expected).unwrap();
    let ids: Vec<u32> = tensor_i64(&inputs, "input_ids")
        .iter()
        .map(|&i| i as u32)
        .collect();
    let positions = tensor_i64(&inputs, "position_ids");
    let images = visual(&inputs, "image_grid_thw", 0);
    let input = ForwardInput {
        input_ids: &ids,
        batch: 1,
        positions: &positions,
        valid: None,
        images: images.as_ref(),
        videos: None,
    };
    let mut cache = model.new_cache(1, ids.len());
    let got = to_f32(model.forward(&input, &mut cache).unwrap());
    let hf_f32 = tensor_f32(&expected, "logits_f32");
    let hf_bf16 = tensor_f32(&expected, "logits");
    let f16_error = rms_diff(&got, &hf_f32);
    let bf16_error = rms_diff(&hf_bf16, &hf_f32);
    eprintln!("RMS error vs f32: ours f16 {f16_error}, transformers bf16 {bf16_error}");
    assert!(
        f16_error > 0.0 && f16_error <= bf16_error / 3.0,
        "{f16_error} vs {bf16_error}"
    );
}
