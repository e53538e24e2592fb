//! Selective sample replay: earlier non-uniform groups kept to top up short rollout buffers.
//!
//! VL-Rethinker's SSR (used by Pixel Reasoner's RL) replays samples with probability proportional to
//! their |advantage|, so a buffer emptied by reward-uniform groups still trains on informative samples.
//! Here the unit is a group (its rollouts share a task and their advantages sum to 0); its weight is the
//! mean |advantage| of its rollouts; a group is drawn at most once per buffer. The buffer is saved with
//! checkpoints (trajectories as JSON, their images as PNG: lossless, so a resumed run replays the same
//! pixels).

use std::collections::VecDeque;
use std::fs;
use std::path::Path;

use pixel_agent::Trajectory;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{bad, io, write_synced};
use crate::error::Result;

/// One group of rollouts with the advantages it was trained with.
#[derive(Debug, Clone)]
pub struct ReplayGroup {
    /// The task's id.
    pub task_id: String,
    /// The rollouts (token records and images included).
    pub trajectories: Vec<Trajectory>,
    /// One advantage per rollout.
    pub advantages: Vec<f32>,
}

impl ReplayGroup {
    /// The replay weight: the mean |advantage|.
    pub fn weight(&self) -> f64 {
        if self.advantages.is_empty() {
            return 0.0;
        }
        self.advantages
            .iter()
            .map(|a| f64::from(a.abs()))
            .sum::<f64>()
            / self.advantages.len() as f64
    }
}

#[derive(Serialize, Deserialize)]
struct Entry {
    task_id: String,
    advantages: Vec<f32>,
    images: Vec<usize>,
}

/// A bounded buffer of groups (the oldest leave first).
#[derive(Debug, Clone, Default)]
pub struct ReplayBuffer {
    groups: VecDeque<ReplayGroup>,
    capacity: usize,
}

impl ReplayBuffer {
    /// An empty buffer holding at most `capacity` groups.
    pub fn new(capacity: usize) -> Self {
        Self {
            groups: VecDeque::new(),
            capacity,
        }
    }

    /// Groups held.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Adds a group with a non-zero weight (a uniform group is never replayed), evicting the oldest.
    pub fn push(&mut self, group: ReplayGroup) {
        if self.capacity == 0 || group.weight() <= 0.0 {
            return;
        }
        while self.groups.len() >= self.capacity {
            self.groups.pop_front();
        }
        self.groups.push_back(group);
    }

    /// Drops the `n` newest groups.
    pub fn truncate_newest(&mut self, n: usize) {
        let keep = self.groups.len().saturating_sub(n);
        self.groups.truncate(keep);
    }

    /// Draws up to `k` distinct groups with probability proportional to their weight.
    pub fn sample(&self, k: usize, rng: &mut ChaCha8Rng) -> Vec<ReplayGroup> {
        let mut weights: Vec<f64> = self.groups.iter().map(ReplayGroup::weight).collect();
        let mut out = Vec::new();
        while out.len() < k {
            let total: f64 = weights.iter().sum();
            if total <= 0.0 {
                break;
            }
            let mut pick = rng.random::<f64>() * total;
            let mut chosen = weights.len() - 1;
            for (i, w) in weights.iter().enumerate() {
                if *w > 0.0 && pick < *w {
                    chosen = i;
                    break;
                }
                pick -= w;
            }
            if weights[chosen] <= 0.0 {
                // Rounding left `pick` past the end: take the last group still available.
                match weights.iter().rposition(|w| *w > 0.0) {
                    Some(i) => chosen = i,
                    None => break,
                }
            }
            weights[chosen] = 0.0;
            out.push(self.groups[chosen].clone());
        }
        out
    }

    /// Writes the buffer into `dir` (`replay.json` + one folder per trajectory).
    ///
    /// # Errors
    /// [`crate::RlError::Io`] when a file cannot be written.
    pub fn save(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let mut entries = Vec::new();
        for (g, group) in self.groups.iter().enumerate() {
            for (r, t) in group.trajectories.iter().enumerate() {
                let sub = dir.join(format!("{g}-{r}"));
                t.save(&sub).map_err(|e| bad(&sub, e.to_string()))?;
            }
            entries.push(Entry {
                task_id: group.task_id.clone(),
                advantages: group.advantages.clone(),
                images: group.trajectories.iter().map(|t| t.images.len()).collect(),
            });
        }
        let path = dir.join("replay.json");
        let json = serde_json::to_vec(&entries).map_err(|e| bad(&path, e.to_string()))?;
        write_synced(&path, &json)
    }

    /// Reads a buffer written by [`ReplayBuffer::save`].
    ///
    /// # Errors
    /// [`crate::RlError::Checkpoint`] for a missing or malformed file.
    pub fn load(dir: &Path, capacity: usize) -> Result<Self> {
        let path = dir.join("replay.json");
        let bytes = fs::read(&path).map_err(io(&path))?;
        let entries: Vec<Entry> =
            serde_json::from_slice(&bytes).map_err(|e| bad(&path, e.to_string()))?;
        let mut groups = VecDeque::new();
        for (g, entry) in entries.into_iter().enumerate() {
            let mut trajectories = Vec::new();
            for (r, &n_images) in entry.images.iter().enumerate() {
                let sub = dir.join(format!("{g}-{r}"));
                let file = sub.join("trajectory.json");
                let bytes = fs::read(&file).map_err(io(&file))?;
                let mut t: Trajectory =
                    serde_json::from_slice(&bytes).map_err(|e| bad(&file, e.to_string()))?;
                for k in 1..=n_images {
                    let p = sub.join(format!("image_{k}.png"));
                    let image = image::open(&p).map_err(|e| bad(&p, e.to_string()))?;
                    t.images.push(image.to_rgb8());
                }
                trajectories.push(t);
            }
            if trajectories.len() != entry.advantages.len() {
                return Err(bad(
                    &path,
                    format!(
                        "group {g}: {} trajectories, {} advantages",
                        trajectories.len(),
                        entry.advantages.len()
                    ),
                ));
            }
            groups.push_back(ReplayGroup {
                task_id: entry.task_id,
                trajectories,
                advantages: entry.advantages,
            });
        }
        Ok(Self { groups, capacity })
    }
}
