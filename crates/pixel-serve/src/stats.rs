//! Counters of what the server did, readable while it runs ([`crate::Server::stats`], `GET /health`).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Live counters (relaxed atomics: each is exact, a snapshot of several is not atomic).
#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) admitted: AtomicU64,
    pub(crate) rejected_busy: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) abandoned: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) batched_rows: AtomicU64,
    pub(crate) largest_batch: AtomicU64,
    pub(crate) queued: AtomicU64,
    pub(crate) running: AtomicU64,
    pub(crate) generated_tokens: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Requests admitted (given a queue slot).
    pub admitted: u64,
    /// Requests refused with 503 because the queue was full or the server was shutting down.
    pub rejected_busy: u64,
    /// Requests answered in full.
    pub completed: u64,
    /// Admitted requests that failed (a bad image, a prompt over the context, a model error).
    pub failed: u64,
    /// Requests whose client went away before the answer; their generation stopped.
    pub cancelled: u64,
    /// Requests that ran past the time limit.
    pub timed_out: u64,
    /// Jobs the model worker skipped or stopped because nobody waited for them any more (client gone,
    /// time limit passed).
    pub abandoned: u64,
    /// Batches the model ran.
    pub batches: u64,
    /// Rows (choices) over all batches.
    pub batched_rows: u64,
    /// The most rows one batch held.
    pub largest_batch: u64,
    /// Requests waiting for the model now.
    pub queued: u64,
    /// Requests being generated now.
    pub running: u64,
    /// Tokens the model sampled.
    pub generated_tokens: u64,
}

impl Stats {
    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            admitted: get(&self.admitted),
            rejected_busy: get(&self.rejected_busy),
            completed: get(&self.completed),
            failed: get(&self.failed),
            cancelled: get(&self.cancelled),
            timed_out: get(&self.timed_out),
            abandoned: get(&self.abandoned),
            batches: get(&self.batches),
            batched_rows: get(&self.batched_rows),
            largest_batch: get(&self.largest_batch),
            queued: get(&self.queued),
            running: get(&self.running),
            generated_tokens: get(&self.generated_tokens),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn sub(counter: &AtomicU64, n: u64) {
        // Gauges never go below zero, even if a bookkeeping bug would take them there.
        let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(v.saturating_sub(n))
        });
    }

    pub(crate) fn record_batch(&self, rows: usize) {
        Self::add(&self.batches, 1);
        Self::add(&self.batched_rows, rows as u64);
        self.largest_batch.fetch_max(rows as u64, Ordering::Relaxed);
    }
}
