//! `--inspect`: what a stage's model can do, without training it further.

use pixel_traces::datasets::NeedleConfig;
use pixel_vlm::Qwen25Vl;
use pixel_vlm::backend::CpuBackend;
use pixel_vlm::processor::Processor;

use crate::cli::Args;
use crate::data::{self, digit_sample, task_of};
use crate::{evaluate, rollout_config, warmup};

/// The model in `dir` (one a stage wrote): its teacher-forced reading of 64 held-out crops (alone, exact
/// and jittered as in the warm-up; in the trace, the box moved out by up to 0.02, 0.05, 0.1 and 0.15 per
/// side; one call only, skipped with `--coarse-grid`), its teacher-forced answers after the last crop of
/// synthesized zoom-in traces whose boxes are moved out by up to 0-0.12 per side, two greedy held-out
/// rollouts printed turn by turn, then where the crops it reads go (the last of each rollout, on the
/// canvas; their error per coordinate against the tag's box; its accuracy by how much of the tag the box
/// holds and how large it is) and its scores on `--eval-samples` held-out questions.
pub fn inspect(dir: &std::path::Path, needle: &NeedleConfig, args: &Args) -> anyhow::Result<()> {
    let seed = args.seed;
    let device = Default::default();
    let model = Qwen25Vl::<CpuBackend>::from_pretrained(dir, &device)?;
    let processor = Processor::from_pretrained(dir)?;
    // Reading: the answer after held-out crops around the tag (exact, or jittered as in the warm-up),
    // alone (the crop's observation turn) or in the trace's context (global view, question, call, crop).
    // Larger crops (the tag smaller in the 112 px view) are harder to read: the sweep shows how much.
    for (jitter, in_context) in [
        (warmup::Jitter::out(0.0), false),
        (args.jitter(), false),
        (warmup::Jitter::out(0.02), true),
        (warmup::Jitter::out(0.05), true),
        (warmup::Jitter::out(0.1), true),
        (warmup::Jitter::out(0.15), true),
    ] {
        if in_context && args.coarse_grid > 0 {
            // The in-trace sweep writes one call on the moved-out box: not a zoom in two steps.
            continue;
        }
        let reading = warmup::Reading {
            processor: Processor::from_pretrained(dir)?,
            per_batch: 0,
            steps: 0,
            in_context,
            legible: None,
            digit_only: false,
            digit_weight: 0.0,
        };
        let b = warmup::BatchSpec {
            needle,
            boxes: args.boxes(),
            grid: (4, 4),
            grounding: None,
            reading: Some(&reading),
            reads: 64,
            jitter,
            around_written: true,
            reads_digit_only: false,
            globals: 0,
        }
        .draw(seed + 1001, 0, 64)?;
        println!(
            "reads the digit after a crop (teacher-forced, crop jitter {} out, {} cut, {}): {:.1} % of {}",
            jitter.out,
            jitter.cut,
            if in_context { "in the trace" } else { "alone" },
            100.0 * warmup::answers_right(&model, &b.reads)?,
            b.reads.len()
        );
    }
    // Reading in the trace's context, by how far the boxes the traces write are moved out from the tag's
    // (the SFT traces' margin is `--sft-jitter`): the answer after the last crop, teacher-forced.
    for jitter in [0.0, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12] {
        let examples = data::build_traces(needle, 64, seed + 5, args.boxes(), args.direct, jitter)?
            .answer_examples(&processor, usize::MAX)?;
        println!(
            "the answer after the last crop of synthesized zoom-in traces (teacher-forced, boxes moved out by up to {jitter} per side): {:.1} % of {}",
            100.0 * warmup::answers_right(&model, &examples)?,
            examples.len()
        );
    }
    let tasks: Vec<evaluate::EvalTask> = (0..args
        .eval_samples
        .unwrap_or(crate::cli::Plan::new(args.quick).eval_samples)
        as u64)
        .map(|i| {
            let (task, reference) = task_of(&digit_sample(needle, seed + 999, i)?)?;
            Ok(evaluate::EvalTask { task, reference })
        })
        .collect::<anyhow::Result<_>>()?;
    let (scores, trajectories) = evaluate::evaluate(
        "inspect",
        &model,
        &processor,
        &tasks,
        &rollout_config(),
        true,
    )?;
    for (t, traj) in tasks.iter().zip(&trajectories).take(2) {
        println!("## {} (answer {:?})", t.task.query.question, t.task.answers);
        for turn in &traj.turns {
            println!("--- model\n{}", turn.text);
        }
        for op in &traj.operations {
            println!("--- operation: {op:?}");
        }
        println!("--- ended: {:?}", traj.end);
    }
    // Where the crops read go: on the tag's centre, overlapping the tag, or elsewhere; and their size.
    let (mut hit, mut near, mut far, mut none) = (0, 0, 0, 0);
    // Mean signed error of each coordinate against the box the traces write for the tag (negative x1/y1,
    // positive x2/y2: the box is larger).
    let (mut error, mut abs_error) = ([0.0f64; 4], [0.0f64; 4]);
    let (mut area, mut tag_area) = (0.0, 0.0);
    for (t, traj) in tasks.iter().zip(&trajectories) {
        let Some(read) = evaluate::read_crop(traj, rollout_config().episode.tools) else {
            none += 1;
            continue;
        };
        let r = t.reference;
        let b = [read.x1, read.y1, read.x2, read.y2];
        area += (b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0);
        let w = args.boxes().written(r);
        for (k, d) in [b[0] - w.x1, b[1] - w.y1, b[2] - w.x2, b[3] - w.y2]
            .into_iter()
            .enumerate()
        {
            error[k] += d;
            abs_error[k] += d.abs();
        }
        tag_area += (r.x2 - r.x1) * (r.y2 - r.y1);
        if evaluate::holds_centre(read, r) {
            hit += 1;
        } else if b[0] < r.x2 && r.x1 < b[2] && b[1] < r.y2 && r.y1 < b[3] {
            near += 1;
        } else {
            far += 1;
        }
    }
    // Accuracy by the read crop's geometry: how much of the tag the box written holds (a shifted box cuts
    // the digit) and how large it is against the tag (a loose box shows the digit smaller).
    let reward = pixel_rl::reward::CuriosityReward::default();
    let mut buckets = std::collections::BTreeMap::<(&str, &str), (usize, usize)>::new();
    for (t, traj) in tasks.iter().zip(&trajectories) {
        let Some(read) = evaluate::read_crop(traj, rollout_config().episode.tools) else {
            continue;
        };
        let r = t.reference;
        let inter = (read.x2.min(r.x2) - read.x1.max(r.x1)).max(0.0)
            * (read.y2.min(r.y2) - read.y1.max(r.y1)).max(0.0);
        let tag = ((r.x2 - r.x1) * (r.y2 - r.y1)).max(f64::EPSILON);
        let area = (read.x2 - read.x1).max(0.0) * (read.y2 - read.y1).max(0.0);
        let coverage = match inter / tag {
            c if c >= 0.95 => "holds >= 95 % of the tag",
            c if c >= 0.8 => "holds 80-95 %",
            _ => "holds < 80 %",
        };
        let scale = match area / tag {
            a if a < 1.5 => "area < 1.5x the tag's",
            a if a < 2.5 => "1.5-2.5x",
            _ => ">= 2.5x",
        };
        let e = buckets.entry((coverage, scale)).or_default();
        e.0 += 1;
        e.1 += usize::from(reward.outcome(&t.task, traj).correct);
    }
    for ((coverage, scale), (n, right)) in &buckets {
        println!(
            "crops read that {coverage}, {scale}: {n}, answered right {:.0} %",
            100.0 * *right as f64 / *n as f64
        );
    }
    // With a zoom in two steps: how often the first crop (its region, padded as the tool pads it) holds
    // the whole tag, and how often the read crop then holds the tag's centre: finding the cell against
    // placing the box inside it.
    let (mut first_whole, mut then_hit, mut two_step) = (0, 0, 0);
    for (t, traj) in tasks.iter().zip(&trajectories) {
        let Some(boxes) = evaluate::crop_boxes(traj, rollout_config().episode.tools) else {
            continue;
        };
        let (Some(first), Some(last), true) = (boxes.first(), boxes.last(), boxes.len() >= 2)
        else {
            continue;
        };
        two_step += 1;
        let region = first.padded(pixel_traces::geometry::CROP_PAD);
        let r = t.reference;
        if region.contains(r) {
            first_whole += 1;
            then_hit += usize::from(evaluate::holds_centre(*last, r));
        }
    }
    println!(
        "rollouts with two crops or more: {two_step}; the first crop holds the whole tag in {first_whole}, and of those the read crop holds the tag's centre in {then_hit}"
    );
    let cropped = (hit + near + far).max(1) as f64;
    println!(
        "crops read (the last, in the canvas): {hit} hold the tag's centre, {near} overlap the tag without its centre, {far} miss it, {none} rollouts without a well-formed crop; mean box area {:.3} (the tags' {:.3})",
        area / cropped,
        tag_area / cropped
    );
    println!(
        "crops read: error against the box the traces write, mean signed (absolute): x1 {:+.3} ({:.3}), y1 {:+.3} ({:.3}), x2 {:+.3} ({:.3}), y2 {:+.3} ({:.3})",
        error[0] / cropped,
        abs_error[0] / cropped,
        error[1] / cropped,
        abs_error[1] / cropped,
        error[2] / cropped,
        abs_error[2] / cropped,
        error[3] / cropped,
        abs_error[3] / cropped
    );
    println!("{scores:?}");
    Ok(())
}
