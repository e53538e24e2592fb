//! The SFT trainer on the committed tiny checkpoint: it overfits a handful of synthesized traces
//! (self-correction included) with gradient accumulation, and a run stopped after a checkpoint and resumed
//! from disk (fresh parameter ids, optimizer state matched by path) writes the same metrics as one that
//! never stopped.

mod common;

use std::collections::HashMap;
use std::path::Path;

use burn::backend::Autodiff;
use common::checkpoint;
use image::RgbImage;
use pixel_rl::config::SftConfig;
use pixel_rl::metrics::read_jsonl;
use pixel_rl::sft::{MaskRule, SftExample};
use pixel_rl::trainer::SftTrainer;
use pixel_rl::trainer::sft::build_examples;
use pixel_traces::{SynthConfig, Synthesizer, SyntheticDataset, TemplateNarrator, Variant};
use pixel_vlm::Qwen25Vl;
use pixel_vlm::backend::CpuBackend as B;
use pixel_vlm::processor::Processor;

type AB = Autodiff<B>;

/// Three `needle` traces: a clean one, one wrong crop first, coarse-to-fine.
fn examples(source: &Path) -> Vec<SftExample> {
    let processor = Processor::from_pretrained(source).expect("processor");
    let synth = Synthesizer::new(SynthConfig::default(), TemplateNarrator);
    let data = SyntheticDataset::by_name("needle").expect("needle");
    let mut traces = Vec::new();
    let mut images: HashMap<String, RgbImage> = HashMap::new();
    for (k, variant) in [Variant::Clean, Variant::OneWrong, Variant::CoarseToFine]
        .into_iter()
        .enumerate()
    {
        let sample = data.sample(k as u64, 0).expect("sample");
        let made = synth.synthesize_as(&sample, 0, variant).expect("trace");
        images.extend(made.images.iter().cloned());
        traces.push(made.trace);
    }
    let load = |name: &str| images.get(name).cloned().ok_or(format!("no image {name}"));
    let (ok, failed) = build_examples(&processor, &traces, MaskRule::Paper, &load);
    assert!(failed.is_empty(), "{failed:?}");
    ok
}

#[test]
fn sft_overfits_three_traces_to_under_half_a_nat_per_token() {
    let dir = checkpoint();
    let examples = examples(dir.path());
    let model = Qwen25Vl::<AB>::from_pretrained(dir.path(), &Default::default()).expect("model");
    // One step per epoch over all three (accumulated one example at a time), constant lr.
    let config = SftConfig::demo()
        .with_epochs(40)
        .with_batch_size(3)
        .with_micro_batch_size(1)
        .with_learning_rate(1e-2)
        .with_warmup_ratio(0.0)
        .with_min_lr_rate(1.0);
    let mut trainer = SftTrainer::new(model, examples, config).expect("trainer");
    let records = trainer.train().expect("train");
    let first = records[0].get("loss").expect("loss");
    let last = records.last().and_then(|r| r.get("loss")).expect("loss");
    eprintln!(
        "SFT loss {first:.3} -> {last:.3} in {} steps",
        records.len()
    );
    assert_eq!(records.len(), 40);
    assert!(first > 4.0, "from about ln(vocab) per token: {first}");
    assert!(last < 0.5, "after 40 steps: {last} (from {first})");
}

fn sft_run(source: &Path, run_dir: &Path, stop_after: Option<usize>) {
    let model = Qwen25Vl::<AB>::from_pretrained(source, &Default::default()).expect("model");
    let config = SftConfig::demo()
        .with_epochs(3)
        .with_batch_size(2)
        .with_micro_batch_size(1)
        .with_learning_rate(1e-3)
        .with_checkpoint_every(2)
        .with_seed(3);
    let mut trainer = SftTrainer::new(model, examples(source), config)
        .expect("trainer")
        .with_run_dir(run_dir, Some(source))
        .expect("run dir");
    common::train_until(&mut trainer, stop_after);
}

#[test]
fn an_sft_run_resumed_from_its_checkpoint_writes_the_same_metrics() {
    let dir = checkpoint();
    let runs = tempfile::tempdir().expect("temp");
    let (whole, stopped) = (runs.path().join("whole"), runs.path().join("stopped"));
    sft_run(dir.path(), &whole, None);
    // 3 examples in batches of 2: 2 steps per epoch (the second has one example), 6 in all; stop after
    // 3, inside the second epoch, with the step-4 metrics of a lost step written after the checkpoint.
    sft_run(dir.path(), &stopped, Some(3));
    sft_run(dir.path(), &stopped, None);
    let a = read_jsonl(&whole.join("metrics.jsonl")).expect("whole");
    let b = read_jsonl(&stopped.join("metrics.jsonl")).expect("resumed");
    assert_eq!(a.len(), 6);
    assert_eq!(
        a.iter().map(|r| r.get("examples")).collect::<Vec<_>>(),
        [2.0, 1.0, 2.0, 1.0, 2.0, 1.0].map(Some)
    );
    assert_eq!(a, b);
    // The checkpoint is a loadable Hugging Face folder with the processor files beside the weights.
    let last = pixel_rl::checkpoint::latest_checkpoint(&stopped)
        .expect("list")
        .expect("one");
    Processor::from_pretrained(last.join("model")).expect("processor files copied");
    Qwen25Vl::<B>::from_pretrained(last.join("model"), &Default::default()).expect("weights load");
}

#[test]
fn the_official_sft_format_and_trace_jsonl_load_and_train() {
    use pixel_rl::trainer::sft::{SftFormat, load_sft_traces};
    use pixel_traces::{DatasetRoot, OnError};
    let dir = checkpoint();
    let data = tempfile::tempdir().expect("temp");
    for (name, shade) in [("a.png", 40u8), ("b.png", 200)] {
        RgbImage::from_pixel(56, 56, image::Rgb([shade, 90, 160]))
            .save(data.path().join(name))
            .expect("image");
    }
    // The official record layout, unchanged (a JSON list; the second record is malformed).
    let official = r#"[
      {"message_list": [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "image", "image": "a.png"}, {"type": "text", "text": "What colour?"}]},
        {"role": "assistant", "content": "<tool_call>\n{\"name\": \"crop_image_normalized\", \"arguments\": {\"bbox_2d\": [0.1, 0.1, 0.6, 0.6], \"target_image\": 1}}\n</tool_call>"},
        {"role": "user", "content": [{"type": "text", "text": "Here is the cropped image:"}, {"type": "image", "image": "b.png"}]},
        {"role": "assistant", "content": "It is blue. \\boxed{blue}"}], "answer": "blue"},
      {"message_list": "not a list"}
    ]"#;
    std::fs::write(data.path().join("sft.json"), official).expect("write");
    let root = DatasetRoot::new(data.path());
    let (traces, skipped) = load_sft_traces(
        &data.path().join("sft.json"),
        &root,
        SftFormat::Official,
        OnError::Skip,
    )
    .expect("load");
    assert_eq!((traces.len(), skipped.len()), (1, 1));
    // The project's JSONL: the same trace written out and read back.
    let line = serde_json::to_string(&traces[0]).expect("json");
    std::fs::write(data.path().join("traces.jsonl"), format!("{line}\n")).expect("write");
    let (again, _) = load_sft_traces(
        &data.path().join("traces.jsonl"),
        &root,
        SftFormat::Traces,
        OnError::Fail,
    )
    .expect("load");
    assert_eq!(again, traces);

    let processor = Processor::from_pretrained(dir.path()).expect("processor");
    let limits = pixel_ops::DecodeLimits::default();
    let load = |p: &str| root.load_image(p, &limits).map_err(|e| e.to_string());
    let (examples, failed) = build_examples(&processor, &traces, MaskRule::Paper, &load);
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(
        examples[0].images.grid_thw.len(),
        2,
        "both images are in the example"
    );
    let model = Qwen25Vl::<AB>::from_pretrained(dir.path(), &Default::default()).expect("model");
    let mut trainer =
        SftTrainer::new(model, examples, SftConfig::demo().with_epochs(1)).expect("trainer");
    let records = trainer.train().expect("train");
    assert_eq!(records.len(), 1);
    assert!(
        records[0]
            .get("loss")
            .is_some_and(|l| l.is_finite() && l > 0.0)
    );
}

/// Micro-batches cut by length (`SftConfig::micro_batch_by_length`) train as the batch cut in drawing
/// order: the same loss at every step (padding is masked and each micro-batch is normalized by the whole
/// batch's trained tokens), from fewer padded tokens.
#[test]
fn micro_batches_cut_by_length_give_the_padded_batchs_losses_from_fewer_tokens() {
    let dir = checkpoint();
    let mut examples = examples(dir.path());
    // A short example beside the traces: a text-only question answered directly.
    let processor = Processor::from_pretrained(dir.path()).expect("processor");
    let synth = Synthesizer::new(SynthConfig::default(), TemplateNarrator);
    let text = SyntheticDataset::by_name("text").expect("text-only");
    let made = synth
        .synthesize_as(&text.sample(9, 0).expect("sample"), 0, Variant::TextOnly)
        .expect("trace");
    let load = |name: &str| Err(format!("no image {name}"));
    let (short, failed) = build_examples(&processor, &[made.trace], MaskRule::Paper, &load);
    assert!(failed.is_empty(), "{failed:?}");
    examples.extend(short);
    let run = |by_length: bool| {
        let model =
            Qwen25Vl::<AB>::from_pretrained(dir.path(), &Default::default()).expect("model");
        let config = SftConfig::demo()
            .with_epochs(2)
            .with_batch_size(4)
            .with_micro_batch_size(4)
            .with_micro_batch_by_length(by_length)
            .with_learning_rate(1e-3)
            .with_warmup_ratio(0.0);
        let mut trainer = SftTrainer::new(model, examples.clone(), config).expect("trainer");
        trainer.train().expect("train")
    };
    let (drawn, cut) = (run(false), run(true));
    assert_eq!(drawn.len(), cut.len());
    for (a, b) in drawn.iter().zip(&cut) {
        let (la, lb) = (a.get("loss").expect("loss"), b.get("loss").expect("loss"));
        assert!(
            (la - lb).abs() <= 1e-4 * la.abs().max(1.0),
            "loss {la} against {lb}"
        );
        let (pa, pb) = (
            a.get("padded_tokens").expect("padded"),
            b.get("padded_tokens").expect("padded"),
        );
        assert!(
            pb < pa,
            "padded tokens {pb} cut by length, {pa} in drawing order"
        );
        assert!(b.get("micro_batches").expect("count") >= 2.0);
        assert_eq!(a.get("micro_batches"), Some(1.0));
    }
}
