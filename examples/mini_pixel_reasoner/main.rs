//! A mini Pixel Reasoner trained from scratch on a CPU: a tiny Qwen2.5-VL-architecture model learns to
//! zoom in on a small tag to read its digit.
//!
//! Stages (each with a progress bar and its wall time in the report):
//! - (0) a byte-level BPE tokenizer (merges learned from the protocol's text) and a tiny random checkpoint
//!   in Hugging Face layout;
//! - (a) vision warm-up: auxiliary heads read the digit from the crop around the tag and locate the tag in
//!   the global view, on fresh samples every step; beside it, the data check: a classifier told where the
//!   tag is, reading the digit from the global view (it should fail: the global view must be illegible);
//! - (b) SFT on synthesized traces (self-correction included) mixed with text-only traces;
//! - (c) GRPO with the curiosity bonus, and the control without it, both from the SFT model;
//! - (d) greedy evaluation on held-out samples: the SFT model without tools (a no-operation policy), the
//!   SFT model with tools, and both RL models;
//! - a report folder: `report.md`, PNG charts, three example trajectories with their crops, the trained
//!   checkpoint (HF layout), `summary.json`.
//!
//! `--quick` runs a few steps of each stage (CI: the pipeline runs and writes its files; its numbers mean
//! nothing). Run: `cargo run --release --features vlm --example mini_pixel_reasoner -- --out out/mini`.

mod evaluate;
mod report;
mod warmup;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use clap::Parser;
use pixel_agent::{Media, Query, RolloutConfig};
use pixel_ops::{EpisodeConfig, PixelLimits};
use pixel_reward::RewardConfig;
use pixel_rl::config::{GrpoConfig, SftConfig};
use pixel_rl::data::Task;
use pixel_rl::progress::StageProgress;
use pixel_rl::sft::MaskRule;
use pixel_rl::trainer::sft::build_examples;
use pixel_rl::trainer::{GrpoTrainer, SftTrainer};
use pixel_traces::datasets::NeedleConfig;
use pixel_traces::synth::ImageMix;
use pixel_traces::{SynthConfig, Synthesizer, SyntheticDataset, TemplateNarrator, Visual};
use pixel_vlm::Qwen25Vl;
use pixel_vlm::backend::CpuBackend;
use pixel_vlm::builder::{TinySpec, write_tiny_checkpoint};
use pixel_vlm::processor::Processor;

type AB = Autodiff<CpuBackend>;

#[derive(Parser, Debug)]
#[command(about = "Train a mini Pixel Reasoner from scratch on the CPU and write a report")]
struct Args {
    /// Report folder (created).
    #[arg(long, default_value = "out/mini_pixel_reasoner")]
    out: PathBuf,
    /// A few steps of each stage: checks the pipeline, not the numbers.
    #[arg(long)]
    quick: bool,
    /// Seed of every stage.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Digit heights in pixels on the 448 px canvas, `MIN-MAX`.
    #[arg(long, default_value = "20-26")]
    glyph: String,
    /// Noise amplitude inside the tags (levels).
    #[arg(long, default_value_t = 30)]
    tag_noise: u8,
    /// Vision warm-up steps (default: the plan's).
    #[arg(long)]
    warmup_steps: Option<usize>,
    /// Stop after the vision warm-up and its data check, printing their held-out accuracies (for tuning
    /// the data: the crop must be readable, the global view not).
    #[arg(long)]
    warmup_only: bool,
}

/// Sizes of each stage.
#[derive(Debug, Clone, serde::Serialize)]
struct Plan {
    warmup_steps: usize,
    warmup_batch: usize,
    sft_traces: usize,
    sft_epochs: usize,
    grpo_iterations: usize,
    grpo_queries: usize,
    eval_samples: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                warmup_steps: 3,
                warmup_batch: 4,
                sft_traces: 8,
                sft_epochs: 1,
                grpo_iterations: 1,
                grpo_queries: 2,
                eval_samples: 3,
            }
        } else {
            Self {
                warmup_steps: 1000,
                warmup_batch: 16,
                sft_traces: 256,
                sft_epochs: 3,
                grpo_iterations: 12,
                grpo_queries: 8,
                eval_samples: 50,
            }
        }
    }
}

/// The demo's data: 448 px canvases (a 4x smaller 112 px global view), digits 12-16 px tall, 8 options.
fn needle(args: &Args) -> anyhow::Result<NeedleConfig> {
    let (lo, hi) = args
        .glyph
        .split_once('-')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .context("--glyph takes MIN-MAX, e.g. 12-16")?;
    Ok(NeedleConfig {
        glyph_min: lo,
        glyph_max: hi,
        tag_noise: args.tag_noise,
        ..needle_defaults()
    })
}

fn needle_defaults() -> NeedleConfig {
    NeedleConfig {
        width: 448,
        height: 448,
        glyph_min: 20,
        glyph_max: 26,
        clutter: 40,
        decoys: 2,
        tag_noise: 30,
        num_options: 8,
    }
}

/// The model's view: every image (global view and crops) at 112 x 112 (16 merged tokens).
const VIEW: u64 = 112 * 112;

fn spec(seed: u64) -> TinySpec {
    TinySpec {
        hidden_size: 128,
        intermediate_size: 256,
        num_hidden_layers: 4,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        vision_depth: 4,
        vision_hidden_size: 64,
        vision_intermediate_size: 128,
        vision_num_heads: 2,
        bpe_vocab_size: 4096,
        min_pixels: VIEW,
        max_pixels: VIEW,
        standardize_per_image: true,
        seed,
        ..TinySpec::default()
    }
}

fn rollout_config() -> RolloutConfig {
    RolloutConfig {
        episode: EpisodeConfig {
            crop_resize: PixelLimits {
                min_pixels: VIEW,
                max_pixels: VIEW,
            },
            max_total_tokens: Some(2048),
            ..EpisodeConfig::official_eval()
        },
        max_new_tokens: 96,
        ..RolloutConfig::default()
    }
}

fn task_of(
    sample: &pixel_traces::AnnotatedSample,
) -> anyhow::Result<(Task, pixel_traces::NormBox)> {
    let Visual::Image {
        image, reference, ..
    } = &sample.visual
    else {
        anyhow::bail!("needle samples are images");
    };
    Ok((
        Task {
            id: sample.id.clone(),
            query: Query {
                media: Media::Images(vec![image.clone()]),
                question: sample.question.clone(),
            },
            answers: vec![sample.answer.clone()],
            options: sample.options.clone(),
        },
        *reference,
    ))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut plan = Plan::new(args.quick);
    if let Some(steps) = args.warmup_steps {
        plan.warmup_steps = steps;
    }
    let out = args.out.clone();
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let device = Default::default();
    let mut times: Vec<(String, f64)> = Vec::new();
    let started = Instant::now();

    // (0) Tokenizer and checkpoint.
    let t = Instant::now();
    let needle = needle(&args)?;
    // Traces first: their text also teaches the tokenizer its merges.
    let synth = Synthesizer::new(
        SynthConfig {
            seed: args.seed,
            image_mix: ImageMix {
                clean: 0.5,
                one_wrong: 0.2,
                two_wrong: 0.0,
                coarse_to_fine: 0.3,
            },
            observation_min_pixels: VIEW,
            observation_max_pixels: VIEW,
            ..SynthConfig::default()
        },
        TemplateNarrator,
    );
    let text_only = SyntheticDataset::by_name("text-only").context("text-only dataset")?;
    let mut traces = Vec::new();
    let mut images: HashMap<String, image::RgbImage> = HashMap::new();
    let mut unsynthesizable = 0usize;
    for i in 0..plan.sft_traces as u64 {
        // One in four traces is a text-only question answered without operations.
        let sample = if i % 4 == 3 {
            text_only.sample(args.seed + 7, i)?
        } else {
            needle.generate(args.seed + 7, i)?.sample
        };
        // A self-correction variant whose refined crop would be under the tool's 28 px minimum is skipped.
        let made = match synth.synthesize(&sample, i) {
            Ok(made) => made,
            Err(e) => {
                unsynthesizable += 1;
                if unsynthesizable == 1 {
                    eprintln!("skipping traces that cannot be synthesized; first: {e}");
                }
                continue;
            }
        };
        images.extend(made.images.iter().cloned());
        traces.push(made.trace);
    }
    let base = out.join("base");
    let mut corpus = spec(args.seed).merge_corpus;
    corpus.extend(traces.iter().take(64).map(|t| {
        t.messages
            .iter()
            .map(|m| m.text())
            .collect::<Vec<_>>()
            .join("\n")
    }));
    write_tiny_checkpoint(
        &base,
        &TinySpec {
            merge_corpus: corpus,
            ..spec(args.seed)
        },
    )?;
    let processor = Processor::from_pretrained(&base)?;
    times.push((
        "traces + tokenizer + checkpoint".into(),
        t.elapsed().as_secs_f64(),
    ));
    let grid = (4, 4);

    // (a) Vision warm-up, and the data check with its own fresh tower.
    let t = Instant::now();
    let model = Qwen25Vl::<AB>::from_pretrained(&base, &device)?;
    let progress = StageProgress::new("vision warm-up", plan.warmup_steps as u64);
    let (warm, mut warm_report) = warmup::train(
        warmup::Warm::new(model, &device),
        &processor,
        &needle,
        grid,
        plan.warmup_steps,
        plan.warmup_batch,
        1e-3,
        args.seed + 1,
        false,
        &progress,
    )?;
    progress.finish();
    warmup::evaluate(
        &warm,
        &processor,
        &needle,
        grid,
        64,
        args.seed + 1001,
        false,
        &mut warm_report,
    )?;
    let progress = StageProgress::new("data check (global view)", plan.warmup_steps as u64);
    let check = warmup::Warm::new(Qwen25Vl::<AB>::from_pretrained(&base, &device)?, &device);
    let (check, _) = warmup::train(
        check,
        &processor,
        &needle,
        grid,
        plan.warmup_steps,
        plan.warmup_batch,
        1e-3,
        args.seed + 2,
        true,
        &progress,
    )?;
    progress.finish();
    warmup::evaluate(
        &check,
        &processor,
        &needle,
        grid,
        64,
        args.seed + 1001,
        true,
        &mut warm_report,
    )?;
    drop(check);
    let warmed = warm.vlm;
    let warmed_dir = out.join("warmed");
    warmed
        .valid()
        .save_pretrained(&warmed_dir, burn::tensor::FloatDType::F32)?;
    pixel_rl::checkpoint::copy_processor_files(&base, &warmed_dir)?;
    times.push((
        "vision warm-up + data check".into(),
        t.elapsed().as_secs_f64(),
    ));
    println!(
        "warm-up (held out): reads the crop {:.1} %, locates the tag {:.1} %; told-where classifier reads the global view {:.1} %",
        100.0 * warm_report.read_accuracy,
        100.0 * warm_report.locate_accuracy,
        100.0 * warm_report.global_read_accuracy
    );
    if args.warmup_only {
        return Ok(());
    }

    // (b) SFT on the traces synthesized above.
    let t = Instant::now();
    let load = |name: &str| images.get(name).cloned().ok_or(format!("no image {name}"));
    let (examples, failed) = build_examples(&processor, &traces, MaskRule::Paper, &load);
    let failed_examples = failed.len();
    if !failed.is_empty() {
        eprintln!(
            "{} traces could not be built; first: {:?}",
            failed.len(),
            failed[0]
        );
    }
    let sft_config = SftConfig::demo()
        .with_epochs(plan.sft_epochs)
        .with_batch_size(8)
        .with_micro_batch_size(4)
        .with_learning_rate(1e-3)
        .with_freeze_vision(false)
        .with_checkpoint_every(0)
        .with_seed(args.seed);
    let sft_model = Qwen25Vl::<AB>::from_pretrained(&warmed_dir, &device)?;
    let mut sft = SftTrainer::new(sft_model, examples, sft_config.clone())?
        .with_run_dir(out.join("runs/sft"), Some(&base))?;
    let sft_metrics = sft.train()?;
    let sft_dir = out.join("sft");
    sft.model()
        .valid()
        .save_pretrained(&sft_dir, burn::tensor::FloatDType::F32)?;
    pixel_rl::checkpoint::copy_processor_files(&base, &sft_dir)?;
    drop(sft);
    times.push(("SFT".into(), t.elapsed().as_secs_f64()));

    // (c) GRPO with and without curiosity, from the SFT model.
    let tasks: Vec<Task> = (0..(plan.grpo_iterations * plan.grpo_queries * 2) as u64)
        .map(|i| {
            needle
                .generate(args.seed + 11, i)
                .map_err(anyhow::Error::from)
                .and_then(|s| task_of(&s.sample))
                .map(|(t, _)| t)
        })
        .collect::<anyhow::Result<_>>()?;
    let mut rl_runs = Vec::new();
    for (name, alpha) in [("curiosity", 0.5), ("no curiosity", 0.0)] {
        let t = Instant::now();
        let config = GrpoConfig::demo(plan.grpo_iterations)
            .with_queries_per_buffer(plan.grpo_queries)
            .with_updates_per_buffer(2.min(plan.grpo_queries))
            .with_micro_batch_rows(8)
            .with_learning_rate(2e-4)
            .with_reward(RewardConfig {
                alpha,
                ..RewardConfig::default()
            })
            .with_rollout(rollout_config())
            .with_seed(args.seed);
        let model = Qwen25Vl::<AB>::from_pretrained(&sft_dir, &device)?;
        let dir = out.join(format!("runs/grpo-{}", name.replace(' ', "-")));
        let mut trainer = GrpoTrainer::curious(
            model,
            Processor::from_pretrained(&base)?,
            tasks.clone(),
            config,
        )?
        .with_run_dir(&dir, Some(&base))?;
        let metrics = trainer.train()?;
        let model_dir = out.join(format!("grpo-{}", name.replace(' ', "-")));
        trainer
            .model()
            .valid()
            .save_pretrained(&model_dir, burn::tensor::FloatDType::F32)?;
        pixel_rl::checkpoint::copy_processor_files(&base, &model_dir)?;
        times.push((format!("GRPO ({name})"), t.elapsed().as_secs_f64()));
        rl_runs.push((name.to_string(), metrics, model_dir));
    }

    // (d) Evaluation on held-out samples.
    let t = Instant::now();
    let held_out: Vec<evaluate::EvalTask> = (0..plan.eval_samples as u64)
        .map(|i| {
            let s = needle.generate(args.seed + 999, i)?;
            let (task, reference) = task_of(&s.sample)?;
            Ok(evaluate::EvalTask { task, reference })
        })
        .collect::<anyhow::Result<_>>()?;
    let rollout = rollout_config();
    let sft_model = Qwen25Vl::<CpuBackend>::from_pretrained(&sft_dir, &device)?;
    let mut scores = Vec::new();
    let mut examples_out = Vec::new();
    let (s, _) = evaluate::evaluate(
        "SFT, tools refused (no operation)",
        &sft_model,
        &processor,
        &held_out,
        &rollout,
        false,
    )?;
    scores.push(s);
    let (s, _) = evaluate::evaluate("SFT", &sft_model, &processor, &held_out, &rollout, true)?;
    scores.push(s);
    for (name, _, dir) in &rl_runs {
        let model = Qwen25Vl::<CpuBackend>::from_pretrained(dir, &device)?;
        let (s, trajectories) = evaluate::evaluate(
            &format!("GRPO, {name}"),
            &model,
            &processor,
            &held_out,
            &rollout,
            true,
        )?;
        if name == "curiosity" {
            examples_out = trajectories.into_iter().take(3).collect();
        }
        scores.push(s);
    }
    times.push(("evaluation".into(), t.elapsed().as_secs_f64()));
    times.push(("total".into(), started.elapsed().as_secs_f64()));

    report::write(&report::Inputs {
        out: &out,
        quick: args.quick,
        seed: args.seed,
        plan: {
            let mut v = serde_json::to_value(&plan)?;
            v["traces_not_synthesizable"] = unsynthesizable.into();
            v["sft_examples_failed"] = failed_examples.into();
            v
        },
        needle: serde_json::to_value(&needle)?,
        warmup: &warm_report,
        sft_metrics: &sft_metrics,
        rl_runs: &rl_runs
            .iter()
            .map(|(n, m, _)| (n.clone(), m.clone()))
            .collect::<Vec<_>>(),
        scores: &scores,
        examples: &examples_out,
        times: &times,
    })?;
    println!("report: {}", out.join("report.md").display());
    Ok(())
}
