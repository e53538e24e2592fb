//! Stage (a) as the demo runs it: the vision warm-up, its held-out measurements and the data check, the
//! warmed checkpoint written with its report; or (`--from-warmed`) the warmed folder of an earlier run.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use burn::module::AutodiffModule;
use pixel_rl::progress::StageProgress;
use pixel_traces::datasets::NeedleConfig;
use pixel_vlm::Qwen25Vl;
use pixel_vlm::processor::Processor;

use crate::cli::{Args, Plan};
use crate::report::trained_pct;
use crate::{AB, evaluate, rollout_config, warmup};

/// Held-out samples of the warm-up's measurements (reading, locating, the data check): 128 since
/// 2026-11-28 (64 before: ±6 points).
const HELD_OUT_SAMPLES: usize = 128;

/// The warm-up's report in the warmed folder (read back by `--from-warmed`).
pub const WARMUP_REPORT: &str = "warmup_report.json";

/// Copies the files of `from` (a checkpoint folder, no subfolders) into `to` (created).
fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let path = entry?.path();
        if path.is_file()
            && let Some(name) = path.file_name()
        {
            std::fs::copy(&path, to.join(name))
                .with_context(|| format!("copying {}", path.display()))?;
        }
    }
    Ok(())
}

/// The warm-up's reading objective (`None` with `--no-reading`).
pub fn reading(args: &Args, plan: &Plan, base: &Path) -> anyhow::Result<Option<warmup::Reading>> {
    if args.no_reading {
        return Ok(None);
    }
    Ok(Some(warmup::Reading {
        processor: Processor::from_pretrained(base)?,
        per_batch: args.read_batch,
        steps: plan.reading_steps,
        in_context: args.read_in_context,
        digit_only: args.read_digit_only,
        digit_weight: args.read_digit_weight,
        legible: (args.warmup_legible_every > 0)
            .then(|| {
                anyhow::Ok(warmup::LegibleReads {
                    glyph: args.legible_glyph()?,
                    every: args.warmup_legible_every,
                })
            })
            .transpose()?,
    }))
}

/// Stage (a): the vision warm-up and the data check (a classifier on its own fresh tower, told where the
/// tag is, reading the digit from the global view). Writes the warmed checkpoint to `out/warmed` with its
/// report (`warmup_report.json`, which `--from-warmed` reads back) and returns the report.
#[allow(clippy::too_many_arguments)]
pub fn warm_up(
    args: &Args,
    plan: &Plan,
    needle: &NeedleConfig,
    base: &Path,
    processor: &Processor,
    held_out: &[evaluate::EvalTask],
    out: &Path,
    device: &burn::tensor::Device<AB>,
) -> anyhow::Result<warmup::WarmupReport> {
    let started = Instant::now();
    let grid = (4, 4);
    let model = Qwen25Vl::<AB>::from_pretrained(base, device)?;
    let progress = StageProgress::new("vision warm-up", plan.warmup_steps as u64);
    // What the steps draw; `grounding` differs between training and the held-out measurements.
    let draws =
        |grounding: Option<warmup::Grounding>, reading: Option<warmup::Reading>| -> warmup::Draws {
            warmup::Draws {
                needle: needle.clone(),
                boxes: args.boxes(),
                grid,
                grounding,
                reading,
                jitter: args.jitter(),
            }
        };
    let grounding = |steps: usize, rows: usize, read: bool, read_probe: bool| {
        anyhow::Ok(warmup::Grounding {
            processor: Processor::from_pretrained(base)?,
            boxes: args.boxes(),
            steps,
            rows,
            read,
            read_probe,
            box_values: args.box_values,
            whole: args.grounding_whole,
        })
    };
    let training = (!args.no_grounding)
        .then(|| {
            grounding(
                plan.grounding_steps,
                plan.grounding_rows,
                args.read_grounding,
                args.read_probe,
            )
        })
        .transpose()?;
    let (warm, mut warm_report) = warmup::train(
        warmup::Warm::new(model, args.box_cells(), args.box_decimals, device),
        processor,
        draws(training, reading(args, plan, base)?),
        warmup::Schedule {
            steps: plan.warmup_steps,
            batch: plan.warmup_batch,
            globals: plan.warmup_globals,
            lr: args.warmup_lr,
            seed: args.seed + 1,
        },
        false,
        args.threads,
        &progress,
    )?;
    progress.finish();
    // Held out: every sample's first call written whole, no reading or probe losses.
    let held_out_draws = draws(
        (!args.no_grounding)
            .then(|| grounding(1, usize::MAX, false, false))
            .transpose()?,
        reading(args, plan, base)?,
    );
    if !args.no_grounding {
        // The first 64 held-out questions (±6 points; the 200 took ~19 s of a 15-minute budget).
        let questions = &held_out[..held_out.len().min(64)];
        let (s, _) = evaluate::evaluate(
            "warmed",
            &warm.vlm.valid(),
            processor,
            questions,
            &rollout_config(),
            true,
        )?;
        warm_report.grounding_crop_hit = Some(s.crop_hit);
        warm_report.grounding_questions = Some(questions.len());
    }
    warmup::evaluate(
        &warm,
        processor,
        &held_out_draws,
        HELD_OUT_SAMPLES,
        args.seed + 1001,
        false,
        &mut warm_report,
    )?;
    if args.quick {
        // The check of the two-thread step: one batch's gradient whole on one thread and in two halves on
        // two threads must be the same gradient (up to the order of float additions).
        let gap = warmup::halves_gradient_gap(
            &warm,
            processor,
            || {
                held_out_draws
                    .held_out(plan.warmup_batch)
                    .draw(args.seed + 3, 0, plan.warmup_batch)
            },
            grid.0 * grid.1,
        )?;
        println!(
            "warm-up: one batch's gradient in two halves on two threads differs from the whole batch's by {gap:.1e} (relative)"
        );
        anyhow::ensure!(
            gap < 1e-3,
            "the gradient summed over two halves differs from the whole batch's by {gap:e}"
        );
    }
    let progress = StageProgress::new("data check (global view)", plan.check_steps as u64);
    let check = warmup::Warm::new(
        Qwen25Vl::<AB>::from_pretrained(base, device)?,
        args.box_cells(),
        args.box_decimals,
        device,
    );
    let (check, _) = warmup::train(
        check,
        processor,
        draws(None, None),
        warmup::Schedule {
            steps: plan.check_steps,
            batch: plan.check_batch,
            globals: plan.check_batch,
            lr: args.warmup_lr,
            seed: args.seed + 2,
        },
        true,
        args.threads,
        &progress,
    )?;
    progress.finish();
    warmup::evaluate(
        &check,
        processor,
        &draws(None, None),
        HELD_OUT_SAMPLES,
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
    pixel_rl::checkpoint::copy_processor_files(base, &warmed_dir)?;
    warm_report.seconds = started.elapsed().as_secs_f64();
    // Written whole or not at all (a temporary file renamed): `--from-warmed` reads it back.
    let tmp = warmed_dir.join(format!("{WARMUP_REPORT}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&warm_report)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, warmed_dir.join(WARMUP_REPORT))
        .with_context(|| format!("renaming {}", tmp.display()))?;
    println!(
        "warm-up (held out): the whole model reads the crop {}, a legible canvas shown whole {}",
        trained_pct(warm_report.read_lm_accuracy),
        trained_pct(warm_report.legible_read_accuracy)
    );
    println!(
        "warm-up (held out): reads the crop {:.1} %, locates the tag {:.1} % (tower) / {} (text model; each image token's own cell {}; the box's exact values {}), first calls' crops hold the tag {}; told-where classifier reads the global view {:.1} %",
        100.0 * warm_report.read_accuracy,
        100.0 * warm_report.locate_accuracy,
        trained_pct(warm_report.probe_accuracy),
        trained_pct(warm_report.cell_probe_accuracy),
        trained_pct(warm_report.box_value_probe_accuracy),
        trained_pct(warm_report.grounding_crop_hit),
        100.0 * warm_report.global_read_accuracy
    );
    Ok(warm_report)
}

/// `--from-warmed dir`: copies the warmed folder of an earlier run into `out/warmed` and returns its
/// warm-up report. The tokenizer must be the one this configuration builds in `base`.
pub fn reuse(dir: &Path, base: &Path, out: &Path) -> anyhow::Result<warmup::WarmupReport> {
    let path = dir.join(WARMUP_REPORT);
    let text = std::fs::read(&path).with_context(|| {
        format!(
            "--from-warmed: {} (a warmed folder this demo wrote)",
            path.display()
        )
    })?;
    let report: warmup::WarmupReport = serde_json::from_slice(&text)
        .with_context(|| format!("--from-warmed: parsing {}", path.display()))?;
    let tokenizer = |d: &Path| {
        std::fs::read(d.join("tokenizer.json"))
            .with_context(|| format!("--from-warmed: {}", d.join("tokenizer.json").display()))
    };
    anyhow::ensure!(
        tokenizer(dir)? == tokenizer(base)?,
        "--from-warmed: {} has another tokenizer than this configuration builds (use the --seed, --direct and --box-* of the run that wrote it)",
        dir.display()
    );
    copy_dir(dir, &out.join("warmed"))?;
    Ok(report)
}

/// `--from-sft dir`: copies the SFT model of the earlier run whose output folder is `dir` into `out/sft`
/// and returns its SFT metrics (`runs/sft/metrics.jsonl`) and SFT wall time (from its `summary.json`).
/// The warmed folder is reused apart ([`reuse`], which checks the tokenizer).
pub fn reuse_sft(
    dir: &Path,
    out: &Path,
) -> anyhow::Result<(Vec<pixel_rl::metrics::MetricRecord>, f64)> {
    let metrics_path = dir.join("runs/sft/metrics.jsonl");
    let metrics = pixel_rl::metrics::read_jsonl(&metrics_path)
        .with_context(|| format!("--from-sft: {}", metrics_path.display()))?;
    let summary_path = dir.join("summary.json");
    let summary: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&summary_path)
            .with_context(|| format!("--from-sft: {} (a finished run)", summary_path.display()))?,
    )
    .with_context(|| format!("--from-sft: parsing {}", summary_path.display()))?;
    // `times`: `[name, seconds]` pairs; SFT's is named "SFT" (or "SFT (reused from ...)").
    let seconds = summary["times"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t[0].as_str().is_some_and(|n| n.starts_with("SFT")))
        .and_then(|t| t[1].as_f64())
        .with_context(|| format!("--from-sft: no SFT time in {}", summary_path.display()))?;
    let model = dir.join("sft");
    anyhow::ensure!(
        model.join("config.json").is_file(),
        "--from-sft: {} holds no SFT checkpoint",
        model.display()
    );
    copy_dir(&model, &out.join("sft"))?;
    Ok((metrics, seconds))
}
