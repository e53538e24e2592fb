//! GRPO's rollouts per question kind: a reward wrapper that tallies, for every group it scores, the
//! iteration, the kind of question (needle or legible, from the task's id) and how many rollouts used an
//! operation and answered right, so that the report can split the training RaPR the trainer logs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use pixel_agent::Trajectory;
use pixel_rl::data::Task;
use pixel_rl::reward::{GroupScore, Reward};

/// One scored group.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Group {
    /// The GRPO iteration, from 1.
    pub iteration: usize,
    /// `"needle"` or `"legible"`.
    pub kind: &'static str,
    pub rollouts: usize,
    pub used_ops: usize,
    pub correct: usize,
}

/// The kind of a task, from its id (`legible-…` or a needle question).
pub fn kind_of(task: &Task) -> &'static str {
    if task.id.starts_with("legible-") {
        "legible"
    } else {
        "needle"
    }
}

/// `inner`, with every group it scores tallied into a log shared by the data-parallel ranks.
pub struct ByKind<R> {
    inner: R,
    iteration: AtomicUsize,
    log: Arc<Mutex<Vec<Group>>>,
}

impl<R> ByKind<R> {
    pub fn new(inner: R, log: Arc<Mutex<Vec<Group>>>) -> Self {
        Self {
            inner,
            iteration: AtomicUsize::new(0),
            log,
        }
    }
}

impl<R: Reward> Reward for ByKind<R> {
    fn score_group(
        &self,
        task: &Task,
        trajectories: &[Trajectory],
    ) -> pixel_rl::Result<GroupScore> {
        let score = self.inner.score_group(task, trajectories)?;
        let group = Group {
            iteration: self.iteration.load(Ordering::Relaxed) + 1,
            kind: kind_of(task),
            rollouts: trajectories.len(),
            used_ops: trajectories
                .iter()
                .filter(|t| t.stats.used_pixel_reasoning())
                .count(),
            correct: score.correct.iter().filter(|&&c| c).count(),
        };
        // A poisoned log (a rank panicked) only loses the tally, never the run.
        if let Ok(mut log) = self.log.lock() {
            log.push(group);
        }
        Ok(score)
    }

    fn begin_iteration(&self, iteration: usize) {
        self.iteration.store(iteration, Ordering::Relaxed);
        self.inner.begin_iteration(iteration);
    }
}

/// One iteration of a kind: `(iteration, RaPR, accuracy, groups)`.
pub type Point = (f64, f64, f64, usize);

/// Per iteration, the [`Point`] of the groups of `kind`.
pub fn curve(groups: &[Group], kind: &str) -> Vec<Point> {
    let last = groups.iter().map(|g| g.iteration).max().unwrap_or(0);
    (1..=last)
        .filter_map(|it| {
            let of: Vec<&Group> = groups
                .iter()
                .filter(|g| g.iteration == it && g.kind == kind)
                .collect();
            let rollouts: usize = of.iter().map(|g| g.rollouts).sum();
            (rollouts > 0).then(|| {
                let n = rollouts as f64;
                (
                    it as f64,
                    of.iter().map(|g| g.used_ops).sum::<usize>() as f64 / n,
                    of.iter().map(|g| g.correct).sum::<usize>() as f64 / n,
                    of.len(),
                )
            })
        })
        .collect()
}
