//! `Qwen25Vl` as a burn `Module` (parameter count, `valid()`, an AdamW step) and `save_pretrained`: round
//! trips of both fixture layouts (one file and sharded, f32/bf16/f16), stale files, errors, and the
//! committed folder `tiny_flat_saved` that transformers read (`scripts/gen_vlm_save_fixtures.py`).

use std::path::Path;

use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use half::{bf16, f16};
use pixel_vlm::loading::{CheckpointIndex, checkpoint_shapes};
use pixel_vlm::saving::SaveOptions;
use pixel_vlm::train::Targets;
use pixel_vlm::{FloatDType, Qwen25Vl, VlmError};

mod common;

use common::{B, Fixture, max_abs_diff, model_dir, prompt_input, to_f32};

type AB = Autodiff<B>;

/// Every float parameter's values, in module order.
struct Collect(Vec<Vec<f32>>);

impl<BB: Backend> ModuleVisitor<BB> for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<BB, D>>) {
        self.0.push(
            param
                .val()
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .unwrap(),
        );
    }
}

fn params<BB: Backend>(model: &Qwen25Vl<BB>) -> Vec<Vec<f32>> {
    let mut c = Collect(Vec::new());
    model.visit(&mut c);
    c.0
}

/// Logits of every position of the tiny_flat / tiny_nested `multi_image` prompt (training forward).
fn logits<BB: Backend>(model: &Qwen25Vl<BB>, fixture: &str) -> Vec<f32> {
    let prompt = Fixture::load(fixture, "multi_image").prompt();
    let hidden = model.forward_train(&prompt_input(&prompt)).unwrap();
    model
        .logits(hidden)
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .unwrap()
}

fn load(dir: &Path) -> Qwen25Vl<B> {
    Qwen25Vl::<B>::from_pretrained(dir, &Default::default()).unwrap()
}

#[test]
fn num_params_equals_the_checkpoint_tensor_sizes() {
    let model = load(&model_dir("tiny_flat"));
    let total: usize = checkpoint_shapes(model_dir("tiny_flat"))
        .unwrap()
        .values()
        .map(|s| s.iter().product::<usize>())
        .sum();
    assert_eq!(model.num_params(), total);
    // Tied: the head is the embedding, counted once (a saved `lm_head.weight` is tolerated, not loaded).
    let tied = load(&model_dir("tiny_nested"));
    let total: usize = checkpoint_shapes(model_dir("tiny_nested"))
        .unwrap()
        .iter()
        .filter(|(name, _)| name.as_str() != "lm_head.weight")
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    assert_eq!(tied.num_params(), total);
}

#[test]
fn valid_of_an_autodiff_model_runs_the_same_forward() {
    let device = Default::default();
    let model = Qwen25Vl::<AB>::from_pretrained(model_dir("tiny_flat"), &device).unwrap();
    let inner: Qwen25Vl<B> = model.valid();
    assert_eq!(inner.config, model.config);
    assert_eq!(params(&inner), params(&model));
    // Same parameters exactly; the autodiff graph may order float operations differently.
    let (a, b) = (logits(&model, "tiny_flat"), logits(&inner, "tiny_flat"));
    assert!(max_abs_diff(&a, &b) <= 1e-4, "{}", max_abs_diff(&a, &b));
}

/// Loss: minus the mean log-prob of each next token of the fixture prompt.
fn loss(model: &Qwen25Vl<AB>) -> Tensor<AB, 1> {
    let prompt = Fixture::load("tiny_flat", "multi_image").prompt();
    let hidden = model.forward_train(&prompt_input(&prompt)).unwrap();
    let mut targets: Vec<u32> = prompt.input_ids[1..].to_vec();
    targets.push(0);
    let scores = model
        .target_logprobs(hidden, &Targets::new(&targets))
        .unwrap();
    let n = targets.len();
    scores.logprobs.narrow(1, 0, n - 1).mean().neg()
}

#[test]
fn an_adamw_step_changes_the_trained_parameters_and_lowers_the_loss() {
    let device = Default::default();
    let model = Qwen25Vl::<AB>::from_pretrained(model_dir("tiny_flat"), &device)
        .unwrap()
        .with_frozen_vision();
    let before = params(&model);
    let vision = |m: &Qwen25Vl<AB>| to_f32(m.model.visual.patch_embed.proj.weight.val().inner());
    let embed = |m: &Qwen25Vl<AB>| to_f32(m.model.text.embed_tokens.weight.val().inner());
    let norm = |m: &Qwen25Vl<AB>| to_f32(m.model.text.norm.gamma.val().inner());
    let (vision0, embed0, norm0) = (vision(&model), embed(&model), norm(&model));
    let loss0 = loss(&model);
    let first = to_f32(loss0.clone().inner())[0];
    let grads = GradientsParams::from_grads(loss0.backward(), &model);
    let mut optim = AdamWConfig::new().init::<AB, Qwen25Vl<AB>>();
    let model = optim.step(1e-2, model, grads);
    let after = params(&model);
    assert_eq!(before.len(), after.len());
    assert!(before.iter().zip(&after).any(|(a, b)| a != b));
    // The decoder moves; the frozen vision tower does not.
    assert_ne!(embed(&model), embed0);
    assert_ne!(norm(&model), norm0);
    assert_eq!(vision(&model), vision0);
    let second = to_f32(loss(&model).inner())[0];
    assert!(second < first, "loss {first} -> {second}");
}

/// Every tensor of the two folders, by canonical name, as f32.
fn tensors(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let index = CheckpointIndex::open_dir(dir).unwrap();
    let names: Vec<String> = index.names().map(str::to_string).collect();
    names
        .into_iter()
        .map(|n| {
            let v = index.read_f32(&n).unwrap().unwrap();
            (n, v)
        })
        .collect()
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn round_trips_both_layouts_one_file_and_sharded() {
    for name in ["tiny_flat", "tiny_nested"] {
        let original = load(&model_dir(name));
        let want_logits = logits(&original, name);
        let mut want = tensors(&model_dir(name));
        if original.config.tie_word_embeddings {
            want.retain(|(n, _)| n != "lm_head.weight");
        }
        for max_shard_bytes in [u64::MAX, 100_000] {
            let tmp = tempfile::tempdir().unwrap();
            let options = SaveOptions::new(FloatDType::F32).with_max_shard_bytes(max_shard_bytes);
            original.save_pretrained_with(tmp.path(), &options).unwrap();
            let listing = files(tmp.path());
            if max_shard_bytes == u64::MAX {
                assert_eq!(listing, ["config.json", "model.safetensors"], "{name}");
            } else {
                assert!(listing.contains(&"model.safetensors.index.json".to_string()));
                assert!(!listing.contains(&"model.safetensors".to_string()));
                let shards = listing.iter().filter(|f| f.starts_with("model-")).count();
                assert!(shards >= 3, "{name}: {listing:?}");
                assert!(listing.contains(&format!("model-00001-of-{shards:05}.safetensors")));
            }
            // Same tensors, same values (the flat key layout whatever was loaded).
            let saved = tensors(tmp.path());
            assert_eq!(saved, want, "{name} tensors");
            let index = CheckpointIndex::open_dir(tmp.path()).unwrap();
            assert!(index.names().all(|n| n.starts_with("model.")
                || n.starts_with("visual.")
                || n == "lm_head.weight"));
            let back = load(tmp.path());
            assert_eq!(back.config.text, original.config.text, "{name}");
            assert_eq!(back.config.vision, original.config.vision, "{name}");
            assert_eq!(back.config.image_token_id, original.config.image_token_id);
            assert_eq!(back.config.video_token_id, original.config.video_token_id);
            assert_eq!(
                back.config.vision_start_token_id,
                original.config.vision_start_token_id
            );
            assert_eq!(
                back.config.vision_end_token_id,
                original.config.vision_end_token_id
            );
            assert_eq!(back.config.eos_token_ids, original.config.eos_token_ids);
            assert_eq!(
                back.config.tie_word_embeddings,
                original.config.tie_word_embeddings
            );
            assert_eq!(back.config.torch_dtype, Some(FloatDType::F32));
            assert_eq!(params(&back), params(&original), "{name} parameters");
            assert_eq!(logits(&back, name), want_logits, "{name} logits");
        }
    }
}

#[test]
fn half_precision_saves_reload_as_the_rounded_weights() {
    let original = load(&model_dir("tiny_flat"));
    let want = tensors(&model_dir("tiny_flat"));
    for (dtype, round) in [
        (
            FloatDType::BF16,
            (|x: f32| bf16::from_f32(x).to_f32()) as fn(f32) -> f32,
        ),
        (FloatDType::F16, |x: f32| f16::from_f32(x).to_f32()),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        original.save_pretrained(tmp.path(), dtype).unwrap();
        let saved = tensors(tmp.path());
        assert_eq!(saved.len(), want.len());
        for ((name, got), (_, orig)) in saved.iter().zip(&want) {
            let rounded: Vec<f32> = orig.iter().map(|&x| round(x)).collect();
            assert_eq!(got, &rounded, "{dtype:?} {name}");
        }
        let back = load(tmp.path());
        assert_eq!(back.config.torch_dtype, Some(dtype));
        // A bf16 model saved in bf16 is saved exactly.
        if dtype == FloatDType::BF16 {
            let bf = Qwen25Vl::<B>::from_pretrained_with_dtype(
                tmp.path(),
                &Default::default(),
                FloatDType::BF16,
            )
            .unwrap();
            let again = tempfile::tempdir().unwrap();
            bf.save_pretrained(again.path(), FloatDType::BF16).unwrap();
            for file in ["config.json", "model.safetensors"] {
                assert_eq!(
                    std::fs::read(tmp.path().join(file)).unwrap(),
                    std::fs::read(again.path().join(file)).unwrap(),
                    "{file}"
                );
            }
        }
    }
}

#[test]
fn saving_again_replaces_stale_weight_files_and_keeps_others() {
    let model = load(&model_dir("tiny_flat"));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nested/out");
    let sharded = SaveOptions::new(FloatDType::F32).with_max_shard_bytes(100_000);
    model.save_pretrained_with(&dir, &sharded).unwrap();
    std::fs::write(dir.join("tokenizer.json"), "{}").unwrap();
    std::fs::write(dir.join("model-notes.txt"), "keep").unwrap();
    model.save_pretrained(&dir, FloatDType::F32).unwrap();
    assert_eq!(
        files(&dir),
        [
            "config.json",
            "model-notes.txt",
            "model.safetensors",
            "tokenizer.json"
        ]
    );
    model.save_pretrained_with(&dir, &sharded).unwrap();
    let listing = files(&dir);
    assert!(!listing.contains(&"model.safetensors".to_string()));
    assert!(listing.contains(&"tokenizer.json".to_string()));
    assert!(!listing.iter().any(|f| f.contains(".tmp")), "{listing:?}");
    load(&dir);
}

#[test]
fn unsavable_models_are_typed_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let mut model = load(&model_dir("tiny_flat"));
    let err = model
        .save_pretrained(tmp.path(), FloatDType::F64)
        .unwrap_err();
    assert!(matches!(err, VlmError::Save(_)), "{err}");
    // Parameters that no longer match the config: one decoder layer dropped.
    model.model.text.layers.pop();
    let err = model
        .save_pretrained(tmp.path(), FloatDType::F32)
        .unwrap_err();
    assert!(
        matches!(&err, VlmError::Save(m) if m.contains("model.layers.1.mlp.down_proj.weight")),
        "{err}"
    );
    // Nothing was written.
    assert!(files(tmp.path()).is_empty());
    // A folder that cannot be created.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let model = load(&model_dir("tiny_flat"));
    let err = model
        .save_pretrained(file.join("sub"), FloatDType::F32)
        .unwrap_err();
    assert!(matches!(err, VlmError::Write { .. }), "{err}");
}

/// How `tiny_flat_saved` was written: tiny_flat in bf16, in shards of at most 200 kB.
fn saved_fixture_options() -> SaveOptions {
    SaveOptions::new(FloatDType::BF16).with_max_shard_bytes(200_000)
}

/// Our save of tiny_flat is byte-identical to the committed `tiny_flat_saved`, which transformers 5.24 loaded
/// (no missing, unexpected or mis-shaped key; `scripts/gen_vlm_save_fixtures.py`) and ran: our logits on the
/// reloaded folder equal transformers' within 1e-4.
///
/// `PIXEL_VLM_WRITE_SAVE_FIXTURE=1` rewrites the committed folder's weights and config instead.
#[test]
fn saved_folder_matches_the_committed_fixture_and_transformers_logits() {
    let model = load(&model_dir("tiny_flat"));
    let fixture = model_dir("tiny_flat_saved");
    if std::env::var_os("PIXEL_VLM_WRITE_SAVE_FIXTURE").is_some() {
        model
            .save_pretrained_with(&fixture, &saved_fixture_options())
            .unwrap();
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    model
        .save_pretrained_with(tmp.path(), &saved_fixture_options())
        .unwrap();
    let ours = files(tmp.path());
    assert!(ours.len() >= 4, "sharded: {ours:?}");
    for file in &ours {
        assert!(
            std::fs::read(tmp.path().join(file)).unwrap()
                == std::fs::read(fixture.join(file)).unwrap(),
            "{file} differs from the committed fixture"
        );
    }
    let committed: Vec<String> = files(&fixture)
        .into_iter()
        .filter(|f| !f.starts_with("expected_"))
        .collect();
    assert_eq!(committed, ours);

    let back = load(tmp.path());
    let exp = Fixture::load("tiny_flat_saved", "transformers");
    let prompt = exp.prompt();
    let hidden = back.forward_train(&prompt_input(&prompt)).unwrap();
    let got = to_f32(back.logits(hidden));
    let (want, shape) = exp.f32s("logits");
    assert_eq!(shape, [prompt.input_ids.len(), back.config.text.vocab_size]);
    let diff = max_abs_diff(&got, &want);
    assert!(diff <= 1e-4, "max abs diff {diff}");
}
