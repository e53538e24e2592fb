//! Training data: RL tasks (a query and what the reward judges it by), where they come from, and a
//! resumable, seeded per-epoch order.
//!
//! - [`Task`]: a [`Query`] for the rollouts plus reference answers and options for the reward.
//! - [`TaskSource`]: anything that can hand out task `i` of `len()` — a `Vec<Task>`, [`RlDataset`] over the
//!   official RL records (media loaded when a task is drawn), or a user's own generator.
//! - [`EpochCursor`]: the order in which items are drawn: a fresh permutation each epoch from
//!   `(seed, epoch)`, its position saved in checkpoints so a resumed run draws the same items next.

use pixel_agent::{Media, Query};
use pixel_ops::{DecodeLimits, Video};
use pixel_traces::{DatasetRoot, RlRecord};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Result, RlError};
use crate::sft::TRACE_VIDEO_FPS;

/// One RL training item.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// Its id (the record's `qid`).
    pub id: String,
    /// What the policy is asked, with its images or video.
    pub query: Query,
    /// Reference answers (any one matching counts as correct).
    pub answers: Vec<String>,
    /// Multiple-choice options, when the question has them (letters map to them).
    pub options: Vec<String>,
}

/// Where tasks come from. Implement it for your own data or environment.
pub trait TaskSource {
    /// How many tasks there are.
    fn len(&self) -> usize;

    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Task `index` (`< len()`), media loaded.
    ///
    /// # Errors
    /// Whatever loading it can fail with (a missing or corrupt image names its file).
    fn task(&self, index: usize) -> Result<Task>;
}

impl TaskSource for Vec<Task> {
    fn len(&self) -> usize {
        <[Task]>::len(self)
    }

    fn task(&self, index: usize) -> Result<Task> {
        self.get(index)
            .cloned()
            .ok_or_else(|| RlError::Setting(format!("task {index} of {}", <[Task]>::len(self))))
    }
}

/// The official RL records (`qid`, `question`, `image`, `is_video`, `answer`) under a dataset root; each
/// task's images (or video frames, at 2 fps) are loaded when it is drawn.
#[derive(Debug, Clone)]
pub struct RlDataset {
    /// The records.
    pub records: Vec<RlRecord>,
    /// Where their media paths are resolved (and confined).
    pub root: DatasetRoot,
    /// Limits for decoding each image.
    pub limits: DecodeLimits,
}

impl RlDataset {
    /// Records already loaded (see `pixel_traces::load_records`) under `root`.
    pub fn new(records: Vec<RlRecord>, root: DatasetRoot) -> Self {
        Self {
            records,
            root,
            limits: DecodeLimits::default(),
        }
    }
}

impl TaskSource for RlDataset {
    fn len(&self) -> usize {
        self.records.len()
    }

    fn task(&self, index: usize) -> Result<Task> {
        let record = self
            .records
            .get(index)
            .ok_or_else(|| RlError::Setting(format!("task {index} of {}", self.records.len())))?;
        let images = record
            .media
            .iter()
            .map(|p| self.root.load_image(p, &self.limits))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let media = if record.is_video {
            Media::Video(
                Video::from_frames(images, TRACE_VIDEO_FPS)
                    .map_err(|e| RlError::Data(pixel_traces::Error::Ops(e)))?,
            )
        } else {
            Media::Images(images)
        };
        Ok(Task {
            id: record.qid.clone(),
            query: Query {
                media,
                question: record.question.clone(),
            },
            answers: vec![record.answer.clone()],
            options: record.options.clone(),
        })
    }
}

/// A resumable draw order over `len` items: epoch `e` visits a permutation seeded by `(seed, e)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochCursor {
    /// Items in the data.
    pub len: usize,
    /// The seed of the permutations.
    pub seed: u64,
    /// The current epoch (0-based).
    pub epoch: u64,
    /// Items of the current epoch already drawn.
    pub offset: usize,
    #[serde(skip)]
    order: Vec<usize>,
    /// With [`EpochCursor::with_length_groups`]: each item's length and the window sorted by it.
    #[serde(skip)]
    groups: Option<(std::sync::Arc<[usize]>, usize)>,
}

impl EpochCursor {
    /// A cursor at the start of epoch 0.
    ///
    /// # Errors
    /// [`RlError::Setting`] for empty data.
    pub fn new(len: usize, seed: u64) -> Result<Self> {
        if len == 0 {
            return Err(RlError::Setting("the data set is empty".into()));
        }
        Ok(Self {
            len,
            seed,
            epoch: 0,
            offset: 0,
            order: Vec::new(),
            groups: None,
        })
    }

    /// The same cursor drawing each epoch's permutation with every run of `window` consecutive items
    /// sorted by `lengths` (longest first), as transformers' `group_by_length` does with its "mega-batches":
    /// the batches cut from a window then hold items of similar length, so a batch padded to its longest
    /// row wastes less. The epoch still visits every item once, in an order that depends on the seed, the
    /// epoch and the lengths only (a resumed run draws the same). `window` ≤ 1 or lengths that do not
    /// match the data leave the order as it is.
    pub fn with_length_groups(mut self, lengths: &[usize], window: usize) -> Self {
        self.groups = (window > 1 && lengths.len() == self.len).then(|| (lengths.into(), window));
        self.order.clear();
        self
    }

    /// The permutation of `epoch`.
    pub fn permutation(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..len).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ epoch.wrapping_mul(0xA076_1D64_78BD_642F));
        order.shuffle(&mut rng);
        order
    }

    /// The next item's index (moving to the next epoch's permutation at the end of one).
    pub fn next_index(&mut self) -> usize {
        if self.offset >= self.len {
            self.epoch += 1;
            self.offset = 0;
            self.order.clear();
        }
        if self.order.len() != self.len {
            self.order = Self::permutation(self.len, self.seed, self.epoch);
            if let Some((lengths, window)) = &self.groups {
                for run in self.order.chunks_mut(*window) {
                    // Stable: equal lengths keep the permutation's order.
                    run.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
                }
            }
        }
        let index = self.order[self.offset];
        self.offset += 1;
        index
    }

    /// Whether the current epoch has been fully drawn.
    pub fn epoch_done(&self) -> bool {
        self.offset >= self.len
    }
}

/// Splits a batch's rows into micro-batches of at most `max_rows` rows that pad less: the rows sorted by
/// `lengths` and cut into runs so that the tokens computed (each run padded to its longest row) plus
/// `overhead` per run are the fewest (an exact dynamic programme over the cuts; a batch is a few dozen
/// rows at most). Each micro-batch lists indices into `lengths`, shortest rows first; every row appears
/// once. Rows of about one length stay one run (up to `max_rows`); a batch mixing short rows (an answer
/// after a crop) with long ones (whole traces) is cut between them.
///
/// The loss of the micro-batches, each normalized by the whole batch's trained tokens, is the padded
/// batch's: padding is masked, so only the order of float additions changes.
pub fn micro_batches_by_length(
    lengths: &[usize],
    max_rows: usize,
    overhead: usize,
) -> Vec<Vec<usize>> {
    let n = lengths.len();
    let max_rows = max_rows.max(1);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| lengths[i]);
    // cost[i]: the cheapest split of the first i sorted rows; cut[i]: where its last run starts.
    let mut cost = vec![usize::MAX; n + 1];
    let mut cut = vec![0usize; n + 1];
    cost[0] = 0;
    for i in 1..=n {
        let longest = lengths[order[i - 1]];
        for j in i.saturating_sub(max_rows)..i {
            if cost[j] == usize::MAX {
                continue;
            }
            let c = cost[j]
                .saturating_add(longest.saturating_mul(i - j))
                .saturating_add(overhead);
            if c < cost[i] {
                cost[i] = c;
                cut[i] = j;
            }
        }
    }
    let mut runs = Vec::new();
    let mut end = n;
    while end > 0 {
        let start = cut[end];
        runs.push(order[start..end].to_vec());
        end = start;
    }
    runs.reverse();
    runs
}

#[cfg(test)]
mod tests {
    use super::{EpochCursor, micro_batches_by_length};

    fn epochs(mut c: EpochCursor, n: usize) -> Vec<Vec<usize>> {
        (0..n)
            .map(|_| (0..c.len).map(|_| c.next_index()).collect())
            .collect()
    }

    #[test]
    fn length_groups_sort_each_window_and_still_visit_every_item_once() {
        let lengths: Vec<usize> = (0..23).map(|i| (i * 7919) % 41).collect();
        let plain = EpochCursor::new(23, 5).expect("cursor");
        let grouped = plain.clone().with_length_groups(&lengths, 8);
        for (e, (p, g)) in epochs(plain, 3).iter().zip(epochs(grouped, 3)).enumerate() {
            let mut seen = g.clone();
            seen.sort_unstable();
            assert_eq!(
                seen,
                (0..23).collect::<Vec<_>>(),
                "epoch {e}: each item once"
            );
            // The same items in each window as the plain permutation, sorted longest first.
            for (pw, gw) in p.chunks(8).zip(g.chunks(8)) {
                let mut want = pw.to_vec();
                want.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
                assert_eq!(gw, want.as_slice(), "epoch {e}");
            }
            assert_ne!(p, &g, "epoch {e}: grouping changed the order");
        }
    }

    #[test]
    fn a_resumed_grouped_cursor_draws_what_the_uninterrupted_one_draws() {
        let lengths: Vec<usize> = (0..10).map(|i| 10 - i).collect();
        let mut a = EpochCursor::new(10, 1)
            .expect("cursor")
            .with_length_groups(&lengths, 4);
        for _ in 0..13 {
            a.next_index();
        }
        // Written to a checkpoint (the lengths are not), read back, given the lengths again.
        let saved = serde_json::to_string(&a).expect("save");
        let mut b = serde_json::from_str::<EpochCursor>(&saved)
            .expect("load")
            .with_length_groups(&lengths, 4);
        let rest_a: Vec<usize> = (0..9).map(|_| a.next_index()).collect();
        let rest_b: Vec<usize> = (0..9).map(|_| b.next_index()).collect();
        assert_eq!(rest_a, rest_b);
    }

    #[test]
    fn length_groups_of_one_item_or_mismatched_lengths_leave_the_order() {
        let plain = EpochCursor::new(12, 3).expect("cursor");
        let want = epochs(plain.clone(), 2);
        let lengths: Vec<usize> = (0..12).collect();
        assert_eq!(
            epochs(plain.clone().with_length_groups(&lengths, 1), 2),
            want
        );
        assert_eq!(epochs(plain.with_length_groups(&lengths[..5], 4), 2), want);
    }

    #[test]
    fn micro_batches_by_length_cut_short_rows_from_long_ones_and_keep_every_row_once() {
        // Two answers after a crop (~50 tokens) and two whole traces (~250), in a shuffled order.
        let lengths = [250, 48, 260, 52];
        let runs = micro_batches_by_length(&lengths, 4, 64);
        assert_eq!(runs, vec![vec![1, 3], vec![0, 2]]);
        // Padded to the longest: 4 x 260 = 1,040 tokens; cut: 2 x 52 + 2 x 260 = 624 (+ 64 for the cut).
        let mut all: Vec<usize> = runs.concat();
        all.sort_unstable();
        assert_eq!(all, vec![0, 1, 2, 3]);
    }

    #[test]
    fn micro_batches_by_length_keep_similar_rows_together_and_respect_the_row_limit() {
        // Rows of near-equal length: a cut saves fewer tokens than it costs.
        assert_eq!(
            micro_batches_by_length(&[100, 104, 98, 101], 4, 64),
            vec![vec![2, 0, 3, 1]]
        );
        // At most two rows per run, even when one run would pad nothing.
        let runs = micro_batches_by_length(&[10, 10, 10, 10, 10], 2, 0);
        assert!(runs.iter().all(|r| r.len() <= 2), "{runs:?}");
        assert_eq!(runs.concat().len(), 5);
        // Nothing in, nothing out; a row limit of 0 is read as 1.
        assert!(micro_batches_by_length(&[], 4, 64).is_empty());
        assert_eq!(
            micro_batches_by_length(&[5, 7], 0, 0),
            vec![vec![0], vec![1]]
        );
    }
}
