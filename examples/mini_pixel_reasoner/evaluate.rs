//! Stage (d): greedy evaluation of a model on held-out needle samples, with the tools or without.

use pixel_agent::{LocalEngine, RolloutConfig, Trajectory, run_group};
use pixel_ops::{ModelTurn, ToolCall, parse_turn};
use pixel_rl::data::Task;
use pixel_rl::reward::CuriosityReward;
use pixel_traces::geometry::NormBox;
use pixel_vlm::Qwen25Vl;
use pixel_vlm::backend::CpuBackend;
use pixel_vlm::processor::Processor;

/// Scores of one model.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct EvalScores {
    pub model: String,
    pub n: usize,
    pub accuracy: f64,
    /// Share of rollouts that used an operation.
    pub rapr: f64,
    /// Of the rollouts that cropped: share whose crop read ([`read_crop`], the last one; the first one
    /// until 2026-11-27 13:00) contains the tag's centre.
    pub crop_hit: f64,
    /// Accuracy over the rollouts whose crop read contains the tag's centre: reading, apart from
    /// finding (accuracy ≈ crop hit × this, when every rollout crops).
    pub accuracy_when_hit: f64,
    pub op_error_rate: f64,
    /// Accuracy over the rollouts that answered without an operation.
    pub accuracy_direct: f64,
    /// Accuracy over the rollouts that used one.
    pub accuracy_with_ops: f64,
}

/// A held-out task and the tag it asks about.
pub struct EvalTask {
    pub task: Task,
    pub reference: NormBox,
}

/// The box of the crop the answer reads, in the canvas's normalized coordinates: the trajectory's last
/// crop call the tool carried out. A crop of a crop (`target_image` > 1, a zoom in two steps) is mapped
/// back through the regions its parents were cut from (each box padded by the official 0.1 per side and
/// clamped). `None` without a successful crop, or when a box is written in pixels (a value ≥ 1).
pub fn read_crop(t: &Trajectory, tools: pixel_ops::ToolSet) -> Option<NormBox> {
    crop_boxes(t, tools)?.pop()
}

/// The box of every crop call the tool carried out, in order, mapped onto the canvas as in [`read_crop`];
/// `None` when a box is written in pixels or names an image this count does not know (the chain is lost).
pub fn crop_boxes(t: &Trajectory, tools: pixel_ops::ToolSet) -> Option<Vec<NormBox>> {
    let whole = NormBox {
        x1: 0.0,
        y1: 0.0,
        x2: 1.0,
        y2: 1.0,
    };
    // The canvas region of every image in the context, the question's first.
    let mut regions = vec![whole];
    let mut boxes = Vec::new();
    for (i, turn) in t.turns.iter().enumerate() {
        let done = t.operations.iter().any(|op| op.turn == i && !op.failed);
        let ModelTurn::ToolCall(Ok(ToolCall::Crop { bbox, target_image })) =
            parse_turn(&turn.text, tools)
        else {
            continue;
        };
        if !done {
            continue;
        }
        let parent = usize::try_from(target_image.saturating_sub(1))
            .ok()
            .and_then(|k| regions.get(k).copied());
        let (Some(parent), true) = (parent, bbox.iter().all(|&v| (0.0..1.0).contains(&v))) else {
            return None;
        };
        let b = NormBox {
            x1: bbox[0],
            y1: bbox[1],
            x2: bbox[2],
            y2: bbox[3],
        };
        regions.push(b.padded(pixel_traces::geometry::CROP_PAD).within(parent));
        boxes.push(b.within(parent));
    }
    Some(boxes)
}

/// Whether `b` holds the centre of `tag`: a crop "hits".
pub fn holds_centre(b: NormBox, tag: NormBox) -> bool {
    let (cx, cy) = ((tag.x1 + tag.x2) / 2.0, (tag.y1 + tag.y2) / 2.0);
    b.x1 <= cx && cx <= b.x2 && b.y1 <= cy && cy <= b.y2
}

/// One task's greedy rollout and what the scores need of it.
struct Scored {
    traj: Trajectory,
    correct: bool,
    /// `Some(hit)` when the rollout read a well-formed crop: whether it holds the tag's centre.
    hit: Option<bool>,
}

fn score_task(
    model: &Qwen25Vl<CpuBackend>,
    processor: &Processor,
    t: &EvalTask,
    config: &RolloutConfig,
) -> anyhow::Result<Scored> {
    let budget = config.episode.max_total_tokens.unwrap_or(12_088);
    let mut engine = LocalEngine::new(model, processor, budget + config.max_new_tokens);
    let out = run_group(&mut engine, &t.task.query, 1, config)?;
    let traj = out
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no rollout"))?;
    let correct = CuriosityReward::default().outcome(&t.task, &traj).correct;
    let hit = read_crop(&traj, config.episode.tools).map(|b| holds_centre(b, t.reference));
    Ok(Scored { traj, correct, hit })
}

/// Greedy rollouts of every task; `tools: false` refuses every call (a no-operation policy). The tasks
/// are shared out to two threads in two contiguous halves (a rollout decodes one token at a time, which
/// keeps about one core busy); each task's rollout is its own, so the scores and trajectories are the
/// ones of one thread, in the tasks' order.
pub fn evaluate(
    name: &str,
    model: &Qwen25Vl<CpuBackend>,
    processor: &Processor,
    tasks: &[EvalTask],
    rollout: &RolloutConfig,
    tools: bool,
) -> anyhow::Result<(EvalScores, Vec<Trajectory>)> {
    let mut config = RolloutConfig {
        first_turn: pixel_vlm::sampling::SamplingParams::greedy(),
        later_turns: pixel_vlm::sampling::SamplingParams::greedy(),
        ..rollout.clone()
    };
    if !tools {
        config.episode.max_operations = 0;
    }
    let mut s = EvalScores {
        model: name.to_string(),
        n: tasks.len(),
        ..EvalScores::default()
    };
    let half = tasks.len().div_ceil(2).max(1);
    let scored: Vec<Scored> = std::thread::scope(|scope| {
        let config = &config;
        let parts: Vec<&[EvalTask]> = tasks.chunks(half).collect();
        let split = parts.len() > 1;
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| {
                scope.spawn(move || {
                    let score = || {
                        part.iter()
                            .map(|t| score_task(model, processor, t, config))
                            .collect::<anyhow::Result<Vec<_>>>()
                    };
                    // Two halves side by side: each with a pool of its own (`ranks::on_one_core`).
                    match split {
                        true => crate::ranks::on_one_core(score),
                        false => score(),
                    }
                })
            })
            .collect();
        let mut all = Vec::with_capacity(tasks.len());
        for h in handles {
            let part = h
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("an evaluation thread panicked")))?;
            all.extend(part);
        }
        anyhow::Ok(all)
    })?;
    let (mut correct, mut used, mut cropped, mut hits, mut attempted, mut failed) =
        (0, 0, 0, 0, 0, 0);
    let mut correct_when_hit = 0;
    let mut correct_with_ops = 0;
    let mut trajectories = Vec::with_capacity(scored.len());
    for r in scored {
        correct += usize::from(r.correct);
        let with_ops = r.traj.stats.used_pixel_reasoning();
        used += usize::from(with_ops);
        correct_with_ops += usize::from(with_ops && r.correct);
        attempted += r.traj.stats.operations_attempted;
        failed += r.traj.stats.operations_failed;
        if let Some(hit) = r.hit {
            cropped += 1;
            hits += usize::from(hit);
            correct_when_hit += usize::from(hit && r.correct);
        }
        trajectories.push(r.traj);
    }
    let n = tasks.len().max(1) as f64;
    s.accuracy = correct as f64 / n;
    s.rapr = used as f64 / n;
    // `k` of `of`, NaN when there are none.
    let share = |k: usize, of: usize| {
        if of == 0 {
            f64::NAN
        } else {
            k as f64 / of as f64
        }
    };
    s.accuracy_with_ops = share(correct_with_ops, used);
    s.accuracy_direct = share(correct - correct_with_ops, tasks.len() - used);
    s.crop_hit = share(hits, cropped);
    s.accuracy_when_hit = share(correct_when_hit, hits);
    s.op_error_rate = if attempted == 0 {
        0.0
    } else {
        failed as f64 / attempted as f64
    };
    Ok((s, trajectories))
}
