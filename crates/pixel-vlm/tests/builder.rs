//! The tiny checkpoint builder (a complete folder the processor and the model load) and the processor's
//! per-image standardisation option.

use std::path::Path;

use pixel_ops::image::{Rgb, RgbImage};
use pixel_ops::protocol::ToolSet;
use pixel_vlm::builder::{ADDED_TOKENS, CHAT_TEMPLATE, TinySpec, write_tiny_checkpoint};
use pixel_vlm::chat_template::RenderOptions;
use pixel_vlm::processor::{ImageProcessor, PreprocessorConfig, Processor};
use pixel_vlm::{ForwardInput, Qwen25Vl, VisualInput, VlmError};
use serde_json::json;

mod common;

use common::B;

/// A mostly white 100 x 80 image with a dark square, like the synthetic training images.
fn synthetic_image() -> RgbImage {
    RgbImage::from_fn(100, 80, |x, y| {
        if (20..40).contains(&x) && (30..50).contains(&y) {
            Rgb([10, 20, 200])
        } else {
            Rgb([255, 255, 255])
        }
    })
}

#[test]
fn a_tiny_checkpoint_loads_renders_tokenizes_and_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = TinySpec::default();
    let config = write_tiny_checkpoint(tmp.path(), &spec).unwrap();
    let processor = Processor::from_pretrained(tmp.path()).unwrap();
    let model = Qwen25Vl::<B>::from_pretrained(tmp.path(), &Default::default()).unwrap();

    // The config's token ids are the tokenizer's; the vocabulary is exactly the tokenizer's.
    let tok = &processor.tokenizer;
    let special = tok.special();
    assert_eq!(model.config.image_token_id, special.image_pad);
    assert_eq!(model.config.video_token_id, special.video_pad);
    assert_eq!(model.config.vision_start_token_id, special.vision_start);
    assert_eq!(model.config.vision_end_token_id, Some(special.vision_end));
    assert_eq!(model.config.eos_token_ids, [special.im_end]);
    assert_eq!(model.config.text.vocab_size, tok.vocab_size());
    assert_eq!(config.text, model.config.text);
    assert!(model.config.tie_word_embeddings && model.model.lm_head.is_none());
    // Added tokens: consecutive, in Qwen2.5-VL's order, right after the learned vocabulary.
    let first = tok.token_to_id("<|endoftext|>").unwrap();
    for (i, (content, _)) in ADDED_TOKENS.iter().enumerate() {
        assert_eq!(
            tok.token_to_id(content),
            Some(first + i as u32),
            "{content}"
        );
    }
    assert_eq!(first as usize + ADDED_TOKENS.len(), tok.vocab_size());
    assert!(first > 256, "merges were learned: {first}");
    assert!(processor.image_processor.config().standardize_per_image);

    // The official Pixel Reasoner system prompt, rendered and tokenized, decodes back to itself, and the
    // learned merges make it shorter than its bytes.
    let system = ToolSet::PixelReasoner.system_prompt();
    let messages = json!([
        {"role": "system", "content": system},
        {"role": "user", "content": [
            {"type": "image"},
            {"type": "text", "text": ToolSet::PixelReasoner.user_text("What is the colour of the square?")}]}
    ]);
    let prompt = processor
        .apply_chat_template(&messages, &RenderOptions::generation())
        .unwrap();
    assert!(prompt.starts_with(&format!("<|im_start|>system\n{system}<|im_end|>\n")));
    assert!(prompt.ends_with("<|im_end|>\n<|im_start|>assistant\n"));
    let ids = tok.encode(&prompt).unwrap();
    assert_eq!(tok.decode(&ids, false).unwrap(), prompt);
    let system_ids = tok.encode(&system).unwrap();
    assert!(
        system_ids.len() * 2 < system.len(),
        "{} tokens for {} bytes",
        system_ids.len(),
        system.len()
    );

    // A tool call round trip: `<tool_call>` is one token, and the text comes back exactly.
    let call = "<tool_call>\n{\"name\": \"crop_image_normalized\", \"arguments\": {\"bbox_2d\": [0.25, 0.1, 0.75, 0.6], \"target_image\": 1}}\n</tool_call>";
    let call_ids = tok.encode(call).unwrap();
    assert_eq!(call_ids.first().copied(), special.tool_call_start);
    assert_eq!(call_ids.last().copied(), special.tool_call_end);
    assert_eq!(tok.decode(&call_ids, false).unwrap(), call);
    assert_eq!(tok.decode(&call_ids, true).unwrap(), call);

    // One forward with an image.
    let inputs = processor
        .process(&prompt, &[synthetic_image()], &[])
        .unwrap();
    assert_eq!(inputs.images.grid_thw.len(), 1);
    let rope = inputs.rope_index(&processor.rope_config()).unwrap();
    let images = VisualInput {
        pixel_values: inputs.images.pixel_values.clone(),
        grid_thw: inputs.images.grid_thw.clone(),
    };
    let seq = inputs.input_ids.len();
    let input = ForwardInput {
        input_ids: &inputs.input_ids,
        batch: 1,
        positions: &rope.positions,
        valid: None,
        generated: None,
        images: Some(&images),
        videos: None,
    };
    let mut cache = model.new_cache(1, seq + 1).unwrap();
    let logits = model.forward(&input, &mut cache).unwrap();
    assert_eq!(logits.dims(), [1, seq, tok.vocab_size()]);
    let values = logits.into_data().to_vec::<f32>().unwrap();
    assert!(values.iter().all(|v| v.is_finite()));
}

fn read_all(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn the_builder_is_deterministic_and_honours_the_spec() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let spec = TinySpec {
        merge_corpus: Vec::new(),
        tie_word_embeddings: false,
        standardize_per_image: false,
        num_hidden_layers: 1,
        seed: 7,
        ..TinySpec::default()
    };
    write_tiny_checkpoint(a.path(), &spec).unwrap();
    write_tiny_checkpoint(b.path(), &spec).unwrap();
    let files = read_all(a.path());
    assert_eq!(files, read_all(b.path()));
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "config.json",
            "model.safetensors",
            "preprocessor_config.json",
            "tokenizer.json",
            "tokenizer_config.json"
        ]
    );
    let processor = Processor::from_pretrained(a.path()).unwrap();
    // No corpus: one token per byte.
    assert_eq!(processor.tokenizer.vocab_size(), 256 + ADDED_TOKENS.len());
    assert_eq!(processor.tokenizer.encode("héllo").unwrap().len(), 6);
    assert!(!processor.image_processor.config().standardize_per_image);
    let model = Qwen25Vl::<B>::from_pretrained(a.path(), &Default::default()).unwrap();
    assert!(model.model.lm_head.is_some());
    assert_eq!(model.config.text.num_hidden_layers, 1);
}

#[test]
fn the_chat_template_is_the_tokenizer_fixtures() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tokenizer/chat_template.json"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(json["chat_template"].as_str().unwrap(), CHAT_TEMPLATE);
}

#[test]
fn invalid_specs_name_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    for (spec, field) in [
        (
            TinySpec {
                bpe_vocab_size: 100,
                ..TinySpec::default()
            },
            "bpe_vocab_size",
        ),
        (
            TinySpec {
                num_attention_heads: 3,
                ..TinySpec::default()
            },
            "hidden_size",
        ),
        (
            TinySpec {
                min_pixels: 100_000,
                ..TinySpec::default()
            },
            "min_pixels",
        ),
    ] {
        let err = write_tiny_checkpoint(tmp.path(), &spec).unwrap_err();
        assert!(
            matches!(&err, VlmError::Config { field: f, .. } if f == field),
            "{field}: {err}"
        );
    }
    // Nothing was written.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

/// Mean and standard deviation of the values of each image's patch rows.
fn stats_per_image(processor: &ImageProcessor, images: &[RgbImage]) -> Vec<(f64, f64)> {
    let patches = processor.preprocess_images(images).unwrap();
    let mut start = 0;
    patches
        .grid_thw
        .iter()
        .map(|g| {
            let len = g[0] * g[1] * g[2] * patches.patch_dim;
            let v = &patches.pixel_values[start..start + len];
            start += len;
            let n = v.len() as f64;
            let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
            let var = v
                .iter()
                .map(|&x| (f64::from(x) - mean).powi(2))
                .sum::<f64>()
                / n;
            (mean, var.sqrt())
        })
        .collect()
}

#[test]
fn per_image_standardization_gives_zero_mean_unit_std_per_image() {
    let dark = RgbImage::from_fn(64, 90, |x, y| Rgb([(x * 3) as u8, (y * 2) as u8, 40]));
    let images = [synthetic_image(), dark.clone()];
    let default = ImageProcessor::new(PreprocessorConfig::default()).unwrap();
    // Off (the default): the transformers values, far from standardised for a white image.
    let (white_mean, _) = stats_per_image(&default, &images)[0];
    assert!(white_mean > 1.5, "{white_mean}");
    let on = ImageProcessor::new(PreprocessorConfig {
        standardize_per_image: true,
        ..Default::default()
    })
    .unwrap();
    for (i, (mean, std)) in stats_per_image(&on, &images).into_iter().enumerate() {
        assert!(mean.abs() < 1e-5, "image {i}: mean {mean}");
        assert!((std - 1.0).abs() < 1e-4, "image {i}: std {std}");
    }
    // Each image on its own: the dark image alone gives the same values as in the batch.
    let alone = on.preprocess_images(&[dark]).unwrap();
    let both = on.preprocess_images(&images).unwrap();
    let tail = &both.pixel_values[both.pixel_values.len() - alone.pixel_values.len()..];
    assert_eq!(tail, alone.pixel_values.as_slice());
    // A white image still differs between channels after the per-channel normalisation: standardised.
    let white = RgbImage::from_pixel(56, 56, Rgb([255, 255, 255]));
    let (mean, std) = stats_per_image(&on, std::slice::from_ref(&white))[0];
    assert!(
        mean.abs() < 1e-5 && (std - 1.0).abs() < 1e-4,
        "{mean} {std}"
    );
    // Values that are all equal become zeros, not NaN.
    let flat = ImageProcessor::new(PreprocessorConfig {
        standardize_per_image: true,
        do_normalize: false,
        ..Default::default()
    })
    .unwrap();
    let zeros = flat.preprocess_images(&[white]).unwrap();
    assert!(zeros.pixel_values.iter().all(|&v| v == 0.0));
    // The flag is read from preprocessor_config.json.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("preprocessor_config.json");
    std::fs::write(
        &path,
        r#"{"min_pixels": 3136, "standardize_per_image": true}"#,
    )
    .unwrap();
    assert!(
        PreprocessorConfig::from_file(&path)
            .unwrap()
            .standardize_per_image
    );
    std::fs::write(&path, r#"{"min_pixels": 3136}"#).unwrap();
    assert!(
        !PreprocessorConfig::from_file(&path)
            .unwrap()
            .standardize_per_image
    );
}
