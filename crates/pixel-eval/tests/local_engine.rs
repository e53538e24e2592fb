//! The runner on the in-process engine: the committed tiny Qwen2.5-VL checkpoint answers two V* questions
//! (nonsense, but through the whole path: pipeline, chat template, processor, generation, results with the
//! token counts a token-exact engine reports), and a restart finds nothing left to do; the same behind the
//! serving engine's torchvision resize.

mod common;

use std::path::Path;

use common::vstar_folder;
use pixel_agent::{Engine, LocalEngine};
use pixel_eval::{
    EvalSettings, LoadOptions, Scorer, ServingResize, ServingResizeEngine, loaders, read_results,
    run, score,
};
use pixel_ops::image::{Rgb, RgbImage};
use pixel_ops::{BicubicKernel, resize_bicubic_torchvision, smart_resize};
use pixel_vlm::Qwen25Vl;
use pixel_vlm::backend::CpuBackend as B;
use pixel_vlm::processor::Processor;

/// The committed tiny checkpoint as one folder (`pixel-testkit`).
fn checkpoint() -> tempfile::TempDir {
    pixel_testkit::tiny_checkpoint()
}

#[test]
fn the_tiny_checkpoint_runs_a_benchmark_in_process() {
    let ckpt = checkpoint();
    let model = Qwen25Vl::<B>::from_pretrained(ckpt.path(), &Default::default()).unwrap();
    let processor = Processor::from_pretrained(ckpt.path()).unwrap();
    let data = tempfile::tempdir().unwrap();
    vstar_folder(data.path(), 2);
    let bench = loaders::vstar::load(data.path(), &LoadOptions::default()).unwrap();
    let mut settings = EvalSettings::official("tiny_flat");
    settings.engine = "in-process flex f32".into();
    settings.rollout.max_new_tokens = 6;
    settings.progress = false;
    let out = data.path().join("tiny.jsonl");
    let mut engine = LocalEngine::new(&model, &processor, 4096);
    let summary = run(&mut engine, &bench, &settings, &out).unwrap();
    assert_eq!((summary.ran, summary.errors), (2, 0));
    let results = read_results(&out).unwrap().results;
    for r in &results {
        assert_eq!(r.turns.len(), 1, "{r:?}");
        let context = r
            .context_tokens
            .expect("token-exact engines report their context");
        let sampled = r.sampled_tokens.unwrap();
        assert!(
            (1..=6).contains(&sampled) && context > sampled,
            "{context} {sampled}"
        );
    }
    assert_eq!(
        score(&results, Scorer::Official).benchmarks[0]
            .accuracy
            .questions,
        2
    );
    let again = run(&mut engine, &bench, &settings, &out).unwrap();
    assert_eq!((again.done_before, again.ran), (2, 0));
}

#[test]
fn the_in_process_engine_behind_the_torchvision_stage_sees_torchvision_pixels() {
    let ckpt = checkpoint();
    let model = Qwen25Vl::<B>::from_pretrained(ckpt.path(), &Default::default()).unwrap();
    let processor = Processor::from_pretrained(ckpt.path()).unwrap();
    let limits = processor.image_processor.config().limits();
    let stage = ServingResize {
        limits,
        kernel: BicubicKernel::Torchvision,
    };
    let mut bare = LocalEngine::new(&model, &processor, 4096);
    let mut staged = ServingResizeEngine::new(LocalEngine::new(&model, &processor, 4096), stage);
    assert!(staged.is_token_exact());

    // What crops are cut from: torchvision's resize, where the bare engine's processor uses Pillow's.
    let image = RgbImage::from_fn(150, 90, |x, y| {
        Rgb([((x / 3 + y / 3) % 2 * 255) as u8, (x * 5 % 256) as u8, 90])
    });
    let (h, w) = smart_resize(90, 150, 28, limits).unwrap();
    let want = resize_bicubic_torchvision(&image, w, h).unwrap();
    assert_eq!(staged.model_view(&image).unwrap(), want);
    let pillow = bare.model_view(&image).unwrap();
    assert_eq!(pillow.dimensions(), want.dimensions());
    assert_ne!(pillow, want, "the kernels differ on this image");

    // A whole run: same prompts (the images keep their model-input size), nothing fails.
    let data = tempfile::tempdir().unwrap();
    vstar_folder(data.path(), 2);
    let bench = loaders::vstar::load(data.path(), &LoadOptions::default()).unwrap();
    let mut settings = EvalSettings::official("tiny_flat");
    settings.rollout.max_new_tokens = 4;
    settings.progress = false;
    let prompts = |path: &Path| -> Vec<usize> {
        read_results(path)
            .unwrap()
            .results
            .iter()
            .map(|r| r.context_tokens.unwrap() - r.sampled_tokens.unwrap())
            .collect()
    };
    let plain = data.path().join("plain.jsonl");
    run(&mut bare, &bench, &settings, &plain).unwrap();
    let out = data.path().join("staged.jsonl");
    let summary = run(&mut staged, &bench, &settings, &out).unwrap();
    assert_eq!((summary.ran, summary.errors), (2, 0));
    assert_eq!(prompts(&out), prompts(&plain));
}
