//! A mini Pixel Reasoner trained from scratch on a CPU: a tiny Qwen2.5-VL-architecture model learns to
//! zoom in on a small tag to read its digit.
//!
//! Stages (each with a progress bar and its wall time in the report):
//! - (0) a byte-level BPE tokenizer (merges learned from the protocol's text) and a tiny random checkpoint
//!   in Hugging Face layout;
//! - (a) warm-up: auxiliary heads read the digit from a crop around the tag (jittered from half-way) and
//!   locate the tag in the global view, on fresh samples every step; on the last steps the whole model also
//!   reads crops (the answer after an observation turn) and learns the first call (grounding); beside it,
//!   the data check: a classifier told where the tag is, reading the digit from the global view (it should
//!   fail: the global view must be illegible);
//! - (b) SFT on synthesized traces (self-correction included) mixed with text-only traces;
//! - (c) GRPO with the curiosity bonus, and the control without it, both from the SFT model;
//! - (d) greedy evaluation on held-out samples: the SFT model without tools (a no-operation policy), the
//!   SFT model with tools, and both RL models;
//! - a report folder: `report.md`, PNG charts, three example trajectories with their crops, the trained
//!   checkpoint (HF layout), `summary.json`.
//!
//! `--quick` runs a few steps of each stage (CI: the pipeline runs and writes its files; its numbers mean
//! nothing). Run: `cargo run --release --features vlm --example mini_pixel_reasoner -- --out out/mini`.

mod data;
mod evaluate;
mod inspect;
mod report;
mod samples;
mod warmup;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use clap::Parser;
use data::{SYSTEM, VIEW, VIEW_MIN, digit_sample, needle_defaults, task_of};
use pixel_agent::RolloutConfig;
use pixel_ops::{CropConfig, CropSource, EpisodeConfig, PixelLimits};
use pixel_reward::RewardConfig;
use pixel_rl::config::{GrpoConfig, SftConfig};
use pixel_rl::data::Task;
use pixel_rl::progress::StageProgress;
use pixel_rl::sft::MaskRule;
use pixel_rl::trainer::sft::build_examples_with_system;
use pixel_rl::trainer::{GrpoTrainer, SftTrainer};
use pixel_traces::datasets::NeedleConfig;
use pixel_vlm::Qwen25Vl;
use pixel_vlm::backend::CpuBackend;
use pixel_vlm::builder::{TinySpec, write_tiny_checkpoint};
use pixel_vlm::processor::Processor;
use pixel_vlm::sampling::SamplingParams;

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
    #[arg(long, default_value = "36-42")]
    glyph: String,
    /// Noise amplitude inside the tags (levels).
    #[arg(long, default_value_t = 30)]
    tag_noise: u8,
    /// Vision warm-up steps (default: the plan's).
    #[arg(long)]
    warmup_steps: Option<usize>,
    /// Of the warm-up steps, how many (the last) also train the grounding objective (default: the plan's).
    #[arg(long)]
    grounding_steps: Option<usize>,
    /// Decoy tags (other border colours) per image. At the global view's 4x reduction a 2 px border is
    /// half a pixel wide, so the colour that tells the target from a decoy is not visible there.
    #[arg(long, default_value_t = 0)]
    decoys: u32,
    /// Decimals of the crop boxes in the SFT traces (the model learns to write them).
    #[arg(long, default_value_t = 2)]
    box_decimals: i32,
    /// The boxes the traces write: with 0 the tag's own box (the synthesizer's), or the cell of an N x N
    /// grid holding the tag's centre (8: the global view's 14 px patches; pass `--box-decimals 3`). One
    /// warm-up with 8 (docs/demo.md): the text model's probe found the tag's cell of 64 95.3 % of the time,
    /// but the tag anywhere in a crop made reading harder (the tower read 37.5 % against 81.2 %).
    #[arg(long, default_value_t = 0)]
    box_grid: u32,
    /// Learning rate of the vision warm-up.
    #[arg(long, default_value_t = 2e-3)]
    warmup_lr: f64,
    /// Print, for the model in this folder (one a stage wrote), its teacher-forced reading of held-out
    /// crops (exact and jittered) and of the last turn of synthesized traces, two greedy held-out rollouts,
    /// then its scores on 50 held-out questions, and exit.
    #[arg(long)]
    inspect: Option<PathBuf>,
    /// Stop after the vision warm-up and its data check, printing their held-out accuracies (for tuning
    /// the data: the crop must be readable, the global view not).
    #[arg(long)]
    warmup_only: bool,
    /// Warm up without the grounding objective (clean crop traces through the whole model, and the text
    /// model's locate probes): the comparison that shows why it is there.
    #[arg(long)]
    no_grounding: bool,
    /// Grounding also on the answers after the crop (whole clean traces, the loss on the answer only), to
    /// teach the text model to read the crop before SFT. Off by default: in the run that measured it the
    /// text-model locate probe reached 79.7 % but the first calls' crops held the tag 0 % after the warm-up
    /// and 10 % after SFT (55.8 % of calls malformed), as with whole traces before (docs/demo.md).
    #[arg(long)]
    read_grounding: bool,
    /// Grounding also trains a read probe on the text model (the digit from its hidden states at the crop's
    /// tokens in whole clean traces, no loss on their text unless `--read-grounding`). One run (docs/demo.md):
    /// the probe learned part of the digit, the SFT model still did not read it.
    #[arg(long)]
    read_probe: bool,
    /// Warm up without reading through the whole model (the tower's read head only): the comparison that
    /// shows why it is there.
    #[arg(long)]
    no_reading: bool,
    /// Largest margin (normalized) added to each side of the tag's box for the warm-up's crops (the
    /// tower's read head and the reading objective): crops of varied size with the tag off-centre, as a
    /// trained model's calls make them.
    #[arg(long, default_value_t = 0.05)]
    crop_jitter: f64,
    /// Reading examples per warm-up step (of the batch's samples). 16 against 8 (one run each): the whole
    /// model read 46.9 % of held-out jittered crops after the warm-up against 23.4 %, the warm-up ~100 s
    /// longer.
    #[arg(long, default_value_t = 16)]
    read_batch: usize,
    /// Of every 8 SFT traces, how many needle questions are answered directly, without a call (at most 6;
    /// one is always a text-only question). More make the SFT model call less often, so that GRPO starts
    /// nearer the curiosity threshold H.
    #[arg(long, default_value_t = 1)]
    direct: u64,
    /// Learning rate of both GRPO runs. 2e-4 lowered held-out accuracy in three runs of four (42 → 12 %);
    /// with 5e-5 it rose (22 → 30 %, one run; docs/demo.md).
    #[arg(long, default_value_t = 5e-5)]
    grpo_lr: f64,
    /// SFT traces (default: the plan's).
    #[arg(long)]
    sft_traces: Option<usize>,
    /// SFT epochs (default: the plan's).
    #[arg(long)]
    sft_epochs: Option<usize>,
    /// Rotary base of the text model (Qwen2.5-VL's is 1e6; see `spec`).
    #[arg(long, default_value_t = 5.0)]
    rope_theta: f64,
}

impl Args {
    fn boxes(&self) -> data::Boxes {
        data::Boxes {
            decimals: self.box_decimals,
            grid: self.box_grid,
        }
    }

    /// Classes of the text model's locate probe: the cells a call's box can name.
    fn box_cells(&self) -> usize {
        match self.box_grid {
            0 => 16,
            n => (n * n) as usize,
        }
    }
}

/// Sizes of each stage.
#[derive(Debug, Clone, serde::Serialize)]
struct Plan {
    warmup_steps: usize,
    grounding_steps: usize,
    reading_steps: usize,
    check_steps: usize,
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
                grounding_steps: 2,
                reading_steps: 2,
                check_steps: 3,
                warmup_batch: 4,
                sft_traces: 8,
                sft_epochs: 1,
                grpo_iterations: 1,
                grpo_queries: 2,
                eval_samples: 3,
            }
        } else {
            Self {
                // 2,000 tower steps read 78 % of held-out crops, 800 read 61 % (one run each, exact crops);
                // a tower step costs ~0.1 s, a grounding step ~0.46 s. 600 grounding steps: the text
                // model's locate probe 34 % and SFT first crops on the tag 34 %, against 22 % and 6 % with
                // 400 (one run each, docs/demo.md).
                warmup_steps: 2000,
                grounding_steps: 600,
                // The second half: the crops have their full jitter from half-way (see `warmup`); a
                // reading step adds ~0.11 s with 8 rows through the whole model, ~0.21 s with 16.
                reading_steps: 1000,
                check_steps: 400,
                warmup_batch: 16,
                sft_traces: 320,
                sft_epochs: 4,
                // 8, not 12, since the calls pay (2026-11-27): rollouts with crops made a GRPO run 50-120 s
                // and the whole demo 15.5 min with 12, 14.1-15.1 min with 10.
                grpo_iterations: 8,
                grpo_queries: 8,
                eval_samples: 50,
            }
        }
    }
}

/// The demo's data: 448 px canvases (a 4x smaller 112 px global view), one tag, digits `--glyph` px tall.
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
        decoys: args.decoys,
        ..needle_defaults()
    })
}

/// The warm-up's reading objective (`None` with `--no-reading`).
fn reading(
    args: &Args,
    plan: &Plan,
    base: &std::path::Path,
) -> anyhow::Result<Option<warmup::Reading>> {
    if args.no_reading {
        return Ok(None);
    }
    Ok(Some(warmup::Reading {
        processor: Processor::from_pretrained(base)?,
        per_batch: args.read_batch,
        steps: plan.reading_steps,
    }))
}

fn spec(seed: u64, rope_theta: f64) -> TinySpec {
    TinySpec {
        rope_theta,
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
        min_pixels: VIEW_MIN,
        max_pixels: VIEW,
        standardize_per_image: true,
        seed,
        ..TinySpec::default()
    }
}

fn rollout_config() -> RolloutConfig {
    RolloutConfig {
        system: Some(SYSTEM.to_owned()),
        guidelines: Some(String::new()),
        episode: EpisodeConfig {
            // The official code cuts crops from its pre-resized copy of the image (at least 200,704
            // pixels: this 448 px canvas), not from the model's view; here the view (112 px) is far
            // smaller than that copy, so the episode must keep the canvas to crop from.
            crop: CropConfig {
                source: CropSource::Original,
                ..CropConfig::default()
            },
            crop_resize: PixelLimits {
                min_pixels: VIEW_MIN,
                max_pixels: VIEW,
            },
            max_total_tokens: Some(2048),
            ..EpisodeConfig::official_eval()
        },
        max_new_tokens: 96,
        // The official sampling (T 1.0 on the first turn, 0.9 later) broke 84-100 % of this tiny model's
        // calls after SFT (greedy decoding wrote them well-formed): the demo samples at 0.7.
        first_turn: SamplingParams {
            temperature: 0.7,
            top_k: 40,
            top_p: 0.95,
        },
        later_turns: SamplingParams {
            temperature: 0.7,
            top_k: 40,
            top_p: 0.95,
        },
        ..RolloutConfig::default()
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut plan = Plan::new(args.quick);
    if let Some(steps) = args.warmup_steps {
        plan.warmup_steps = steps;
    }
    if let Some(steps) = args.grounding_steps {
        plan.grounding_steps = steps;
    }
    if let Some(n) = args.sft_traces {
        plan.sft_traces = n;
    }
    if let Some(n) = args.sft_epochs {
        plan.sft_epochs = n;
    }
    plan.grounding_steps = plan.grounding_steps.min(plan.warmup_steps);
    plan.reading_steps = plan.reading_steps.min(plan.warmup_steps);
    if let Some(dir) = &args.inspect {
        return inspect::inspect(dir, &needle(&args)?, &args);
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
    let built = data::build_traces(
        &needle,
        plan.sft_traces,
        args.seed,
        args.boxes(),
        args.direct,
    )?;
    let (traces, images, unsynthesizable) = (built.traces, built.images, built.unsynthesizable);
    let base = out.join("base");
    let mut corpus = spec(args.seed, args.rope_theta).merge_corpus;
    corpus.push(SYSTEM.to_owned());
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
            ..spec(args.seed, args.rope_theta)
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
        warmup::Warm::new(model, args.box_cells(), &device),
        &processor,
        &needle,
        grid,
        plan.warmup_steps,
        plan.warmup_batch,
        args.warmup_lr,
        args.boxes(),
        args.seed + 1,
        false,
        match args.no_grounding {
            true => None,
            false => Some(warmup::Grounding {
                processor: Processor::from_pretrained(&base)?,
                boxes: args.boxes(),
                steps: plan.grounding_steps,
                read: args.read_grounding,
                read_probe: args.read_probe,
            }),
        },
        reading(&args, &plan, &base)?,
        args.crop_jitter,
        &progress,
    )?;
    progress.finish();
    let grounding = warmup::Grounding {
        processor: Processor::from_pretrained(&base)?,
        boxes: args.boxes(),
        steps: 1,
        read: false,
        read_probe: false,
    };
    let held_out: Vec<evaluate::EvalTask> = (0..plan.eval_samples as u64)
        .map(|i| {
            let s = digit_sample(&needle, args.seed + 999, i)?;
            let (task, reference) = task_of(&s)?;
            Ok(evaluate::EvalTask { task, reference })
        })
        .collect::<anyhow::Result<_>>()?;
    if !args.no_grounding {
        let (s, _) = evaluate::evaluate(
            "warmed",
            &warm.vlm.valid(),
            &processor,
            &held_out,
            &rollout_config(),
            true,
        )?;
        warm_report.grounding_crop_hit = Some(s.crop_hit);
    }
    warmup::evaluate(
        &warm,
        &processor,
        &needle,
        grid,
        64,
        args.boxes(),
        args.seed + 1001,
        false,
        (!args.no_grounding).then_some(&grounding),
        reading(&args, &plan, &base)?.as_ref(),
        args.crop_jitter,
        &mut warm_report,
    )?;
    let progress = StageProgress::new("data check (global view)", plan.check_steps as u64);
    let check = warmup::Warm::new(
        Qwen25Vl::<AB>::from_pretrained(&base, &device)?,
        args.box_cells(),
        &device,
    );
    let (check, _) = warmup::train(
        check,
        &processor,
        &needle,
        grid,
        plan.check_steps,
        plan.warmup_batch,
        args.warmup_lr,
        args.boxes(),
        args.seed + 2,
        true,
        None,
        None,
        args.crop_jitter,
        &progress,
    )?;
    progress.finish();
    warmup::evaluate(
        &check,
        &processor,
        &needle,
        grid,
        64,
        args.boxes(),
        args.seed + 1001,
        true,
        None,
        None,
        args.crop_jitter,
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
        "warm-up (held out): the whole model reads the crop {}",
        warm_report
            .read_lm_accuracy
            .map_or("(not trained)".to_string(), |h| format!(
                "{:.1} %",
                100.0 * h
            ))
    );
    println!(
        "warm-up (held out): reads the crop {:.1} %, locates the tag {:.1} % (tower) / {} (text model; each image token's own cell {}), first calls' crops hold the tag {}; told-where classifier reads the global view {:.1} %",
        100.0 * warm_report.read_accuracy,
        100.0 * warm_report.locate_accuracy,
        warm_report
            .probe_accuracy
            .map_or("(not trained)".to_string(), |h| format!(
                "{:.1} %",
                100.0 * h
            )),
        warm_report
            .cell_probe_accuracy
            .map_or("(not trained)".to_string(), |h| format!(
                "{:.1} %",
                100.0 * h
            )),
        warm_report
            .grounding_crop_hit
            .map_or("(not trained)".to_string(), |h| format!(
                "{:.1} %",
                100.0 * h
            )),
        100.0 * warm_report.global_read_accuracy
    );
    if args.warmup_only {
        return Ok(());
    }

    // (b) SFT on the traces synthesized above.
    let t = Instant::now();
    let load = |name: &str| images.get(name).cloned().ok_or(format!("no image {name}"));
    let (examples, failed) =
        build_examples_with_system(&processor, &traces, MaskRule::Paper, Some(SYSTEM), &load);
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
        // Tried once with the tower frozen and lr 5e-4 (after a warm-up on whole traces): first crops
        // holding the tag 10 %, calls malformed 52 %; no better than this.
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
            digit_sample(&needle, args.seed + 11, i)
                .and_then(|s| task_of(&s))
                .map(|(t, _)| t)
        })
        .collect::<anyhow::Result<_>>()?;
    let mut rl_runs = Vec::new();
    let mut grpo_configs = serde_json::Map::new();
    for (name, alpha) in [("curiosity", 0.5), ("no curiosity", 0.0)] {
        let t = Instant::now();
        let config = GrpoConfig::demo(plan.grpo_iterations)
            .with_queries_per_buffer(plan.grpo_queries)
            .with_updates_per_buffer(2.min(plan.grpo_queries))
            .with_micro_batch_rows(8)
            .with_learning_rate(args.grpo_lr)
            .with_reward(RewardConfig {
                alpha,
                ..RewardConfig::default()
            })
            .with_rollout(rollout_config())
            .with_seed(args.seed);
        grpo_configs.insert(name.to_string(), serde_json::to_value(&config)?);
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
    let rollout = rollout_config();
    let sft_model = Qwen25Vl::<CpuBackend>::from_pretrained(&sft_dir, &device)?;
    let mut scores = Vec::new();
    let mut examples_out = Vec::new();
    let (s, _) = evaluate::evaluate(
        "SFT, calls refused (a call ends the rollout)",
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
            v["boxes"] = serde_json::to_value(args.boxes())?;
            v["direct_per_8_traces"] = args.direct.into();
            v["warmup_lr"] = args.warmup_lr.into();
            v["system_prompt"] = SYSTEM.into();
            v["sft"] = serde_json::to_value(&sft_config)?;
            v["grpo"] = grpo_configs.into();
            let m = spec(args.seed, args.rope_theta);
            v["model"] = serde_json::json!({
                "text": {"hidden": m.hidden_size, "mlp": m.intermediate_size, "layers": m.num_hidden_layers,
                         "heads": m.num_attention_heads, "kv_heads": m.num_key_value_heads, "vocab": m.bpe_vocab_size},
                "vision": {"hidden": m.vision_hidden_size, "mlp": m.vision_intermediate_size,
                           "layers": m.vision_depth, "heads": m.vision_num_heads},
                "view_pixels": VIEW,
            });
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
