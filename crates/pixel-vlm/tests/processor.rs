//! The processor against `transformers` 5.24's `Qwen2_5_VLProcessor` fed images resized by qwen-vl-utils +
//! Pillow 13: pixel values bit for bit, grids, expanded input ids. Fixtures:
//! `scripts/gen_vlm_processor_fixtures.py`.

use std::path::{Path, PathBuf};

use pixel_ops::image::{self, RgbImage};
use pixel_ops::video::Video;
use pixel_vlm::chat_template::{RenderOptions, json_value};
use pixel_vlm::error::VlmError;
use pixel_vlm::processor::{ImageProcessor, PreprocessorConfig, Processor};
use serde_json::Value as Json;

fn dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(sub)
}

fn case() -> Json {
    serde_json::from_str(
        &std::fs::read_to_string(dir("processor").join("processor_case.json")).unwrap(),
    )
    .unwrap()
}

fn reference(name: &str) -> Vec<f32> {
    let bytes = std::fs::read(dir("processor").join("pixel_values.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::F32);
    t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn image_names() -> Vec<String> {
    case()["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

fn processor() -> Processor {
    Processor::from_pretrained(dir("tokenizer")).unwrap()
}

fn video() -> Video {
    let meta = &case()["videos"][0];
    let (t, h) = (
        meta["frames"].as_u64().unwrap() as u32,
        meta["height"].as_u64().unwrap() as u32,
    );
    let stacked = pixel_ops::load_image(dir("processor").join("vid_a_frames.png")).unwrap();
    let frames: Vec<RgbImage> = (0..t)
        .map(|i| image::imageops::crop_imm(&stacked, 0, i * h, stacked.width(), h).to_image())
        .collect();
    Video::from_frames(frames, meta["fps"].as_f64().unwrap()).unwrap()
}

/// Asserts bit equality and reports the first difference.
fn assert_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        let max = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        panic!(
            "{what}: first difference at {i}: {} vs {} (max abs diff {max})",
            got[i], want[i]
        );
    }
}

#[test]
fn patchify_of_pil_resized_images_is_bit_exact() {
    let p = processor();
    let images: Vec<RgbImage> = image_names()
        .iter()
        .map(|n| pixel_ops::load_image(dir("processor").join(format!("{n}_resized.png"))).unwrap())
        .collect();
    let out = p.image_processor.preprocess_images(&images).unwrap();
    let want_grids: Vec<[usize; 3]> =
        serde_json::from_value(case()["image_grid_thw"].clone()).unwrap();
    assert_eq!(out.grid_thw, want_grids);
    assert_eq!(out.patch_dim, 1176);
    assert_eq!(out.rows() * 1176, out.pixel_values.len());
    assert_bits(
        &out.pixel_values,
        &reference("pixel_values"),
        "pixel_values",
    );
}

#[test]
fn full_image_pipeline_from_source_files_is_bit_exact() {
    // Source files (odd sizes, one RGBA) through pixel-ops' loader (RGBA over white), smart_resize and
    // Pillow-exact bicubic, then patchify: the whole qwen-vl-utils + transformers path.
    let p = processor();
    let images: Vec<RgbImage> = image_names()
        .iter()
        .map(|n| pixel_ops::load_image(dir("processor").join(format!("{n}.png"))).unwrap())
        .collect();
    let sizes: Vec<(u32, u32)> = images.iter().map(|i| (i.height(), i.width())).collect();
    assert_eq!(sizes, [(61, 97), (150, 200), (30, 41), (45, 70)]);
    let out = p.image_processor.preprocess_images(&images).unwrap();
    assert_bits(
        &out.pixel_values,
        &reference("pixel_values"),
        "pixel_values from source images",
    );
}

#[test]
fn video_patches_and_time_scale_match() {
    let p = processor();
    let (out, spg) = p.video_processor.preprocess_videos(&[video()]).unwrap();
    let want_grids: Vec<[usize; 3]> =
        serde_json::from_value(case()["video_grid_thw"].clone()).unwrap();
    assert_eq!(out.grid_thw, want_grids);
    let want_spg: Vec<f32> = case()["second_per_grid_ts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(spg, want_spg);
    assert_bits(
        &out.pixel_values,
        &reference("pixel_values_videos"),
        "pixel_values_videos",
    );
}

#[test]
fn odd_frame_counts_repeat_the_last_frame() {
    let p = processor();
    let frames = video().into_frames();
    let three = Video::from_frames(frames[..3].to_vec(), 2.0).unwrap();
    let four = Video::from_frames(
        vec![
            frames[0].clone(),
            frames[1].clone(),
            frames[2].clone(),
            frames[2].clone(),
        ],
        2.0,
    )
    .unwrap();
    let (a, spg) = p.video_processor.preprocess_videos(&[three]).unwrap();
    let (b, _) = p.video_processor.preprocess_videos(&[four]).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.grid_thw, [[2, 4, 4]]);
    assert_eq!(spg, [1.0]);
}

#[test]
fn prompt_with_images_and_video_matches_transformers_ids() {
    let p = processor();
    let c = case();
    let messages = json_value(&c["messages"].to_string()).unwrap();
    let text = p
        .apply_chat_template(&messages, &RenderOptions::generation())
        .unwrap();
    assert_eq!(text, c["rendered"].as_str().unwrap());

    let images: Vec<RgbImage> = image_names()
        .iter()
        .map(|n| pixel_ops::load_image(dir("processor").join(format!("{n}.png"))).unwrap())
        .collect();
    let out = p.process(&text, &images, &[video()]).unwrap();
    let want: Vec<u32> = serde_json::from_value(c["input_ids"].clone()).unwrap();
    assert_eq!(out.input_ids, want);
    let s = p.tokenizer.special();
    let pads = |id: u32| out.input_ids.iter().filter(|&&x| x == id).count();
    assert_eq!(pads(s.image_pad), out.images.rows() / 4);
    assert_eq!(pads(s.video_pad), out.videos.rows() / 4);

    // The positions of this prompt agree with the rope fixture (both rules coincide here).
    let rope = out.rope_index(&p.rope_config()).unwrap();
    let fixture: Json = serde_json::from_str(
        &std::fs::read_to_string(dir("processor").join("rope_cases.json")).unwrap(),
    )
    .unwrap();
    let want = &fixture["v4"]["processor_case"];
    assert_eq!(rope.rope_delta, want["rope_delta"].as_i64().unwrap());
    let want_axis0: Vec<i64> = serde_json::from_value(want["position_ids"][0].clone()).unwrap();
    assert_eq!(rope.axis(0), want_axis0.as_slice());
}

#[test]
fn placeholder_expansion_and_its_errors() {
    let p = processor();
    let text = "a<|image_pad|>b<|video_pad|>c<|image_pad|>";
    let out = p.expand_placeholders(text, &[2, 1], &[3]).unwrap();
    assert_eq!(
        out,
        "a<|image_pad|><|image_pad|>b<|video_pad|><|video_pad|><|video_pad|>c<|image_pad|>"
    );
    let err = p.expand_placeholders(text, &[2], &[3]).unwrap_err();
    assert!(
        matches!(
            err,
            VlmError::PlaceholderCount {
                kind: "image",
                placeholders: 2,
                items: 1,
                ..
            }
        ),
        "{err}"
    );
    let err = p
        .process("no placeholders", &[RgbImage::new(56, 56)], &[])
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("0 `<|image_pad|>` placeholders but 1 images"),
        "{err}"
    );
}

#[test]
fn config_layouts_and_errors() {
    // The newer layout spells the bounds as `size`.
    let newer: PreprocessorConfig =
        serde_json::from_str(r#"{"size": {"shortest_edge": 3136, "longest_edge": 9408}}"#).unwrap();
    let older =
        PreprocessorConfig::from_file(dir("tokenizer").join("preprocessor_config.json")).unwrap();
    assert_eq!(newer.limits(), older.limits());
    // Some released files spell `size` with min_pixels/max_pixels, next to other processor keys.
    let released: PreprocessorConfig = serde_json::from_str(
        r#"{"do_convert_rgb": true, "resample": 3, "rescale_factor": 0.00392156862745098,
            "size": {"min_pixels": 3136, "max_pixels": 9408}, "image_processor_type": "Qwen2VLImageProcessor"}"#,
    )
    .unwrap();
    assert_eq!(released.limits(), older.limits());
    assert_eq!(older.patch_dim(), 1176);

    let bad = PreprocessorConfig {
        image_std: vec![0.2, 0.0, 0.3],
        ..Default::default()
    };
    assert!(
        matches!(ImageProcessor::new(bad), Err(VlmError::Config { field, .. }) if field == "image_std")
    );
    let bad = PreprocessorConfig {
        min_pixels: Some(100),
        max_pixels: Some(10),
        ..Default::default()
    };
    assert!(matches!(bad.validate(), Err(VlmError::Config { field, .. }) if field == "min_pixels"));

    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("preprocessor_config.json");
    std::fs::write(&path, "{ not json").unwrap();
    assert!(matches!(
        PreprocessorConfig::from_file(&path),
        Err(VlmError::Json { .. })
    ));
    let missing = Processor::from_pretrained(tmp.path().join("nope")).unwrap_err();
    assert!(
        matches!(missing, VlmError::NotACheckpoint { .. }),
        "{missing}"
    );
    // A folder without tokenizer.json names the file.
    let err = Processor::from_pretrained(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");

    // An extreme aspect ratio is the typed pixel-ops error.
    let p = processor();
    let err = p
        .image_processor
        .preprocess_images(&[RgbImage::new(402, 2)])
        .unwrap_err();
    assert!(matches!(err, VlmError::Image(_)), "{err}");
}
