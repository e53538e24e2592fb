//! `--inspect`: what a stage's model can do, without training it further.

use pixel_rl::sft::MaskRule;
use pixel_rl::trainer::sft::build_examples_with_system;
use pixel_traces::datasets::NeedleConfig;
use pixel_vlm::Qwen25Vl;
use pixel_vlm::backend::CpuBackend;
use pixel_vlm::processor::Processor;

use crate::data::{self, SYSTEM, digit_sample, task_of};
use crate::{Args, evaluate, rollout_config, warmup};

/// The model in `dir` (one a stage wrote): its teacher-forced reading of 64 held-out crops (exact, then
/// jittered as in the warm-up) and of the last turn of 24 synthesized traces, two greedy held-out rollouts
/// printed turn by turn, then its scores on 50 held-out questions.
pub fn inspect(dir: &std::path::Path, needle: &NeedleConfig, args: &Args) -> anyhow::Result<()> {
    let seed = args.seed;
    let device = Default::default();
    let model = Qwen25Vl::<CpuBackend>::from_pretrained(dir, &device)?;
    let processor = Processor::from_pretrained(dir)?;
    // Reading alone: the answer after held-out crops around the tag (jittered as in the warm-up).
    let reading = warmup::Reading {
        processor: Processor::from_pretrained(dir)?,
        per_batch: 0,
        steps: 0,
    };
    for jitter in [0.0, args.crop_jitter] {
        let b = warmup::make_batch(
            needle,
            args.boxes(),
            seed + 1001,
            0,
            64,
            (4, 4),
            None,
            Some(&reading),
            64,
            jitter,
            true,
        )?;
        println!(
            "reads the digit after a crop (teacher-forced, crop jitter {jitter}): {:.1} %",
            100.0 * warmup::answers_right(&model, &b.reads)?
        );
    }
    {
        let built = data::build_traces(needle, 24, seed + 5, args.boxes(), args.direct)?;
        let load = |name: &str| {
            built
                .images
                .get(name)
                .cloned()
                .ok_or(format!("no image {name}"))
        };
        let (mut examples, _) = build_examples_with_system(
            &processor,
            &built.traces,
            MaskRule::Paper,
            Some(SYSTEM),
            &load,
        );
        examples.iter_mut().for_each(warmup::train_last_turn_only);
        println!(
            "the last turn of 24 synthesized traces (teacher-forced, every token right): {:.1} % of {}",
            100.0 * warmup::answers_right(&model, &examples)?,
            examples.len()
        );
    }
    let tasks: Vec<evaluate::EvalTask> = (0..50)
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
    println!("{scores:?}");
    Ok(())
}
