//! Training on several threads of this process as the ranks of a data-parallel run (pixel-rl's
//! `DataParallel::threads`): on the 2-core machine the demo targets, one training thread kept ~1.4 cores
//! busy (the matrix products are parallel, most of the rest is not), two kept both.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::mpsc;

use anyhow::Context;

/// Runs `work(rank)` for ranks `0..n`, each on a thread of its own, and returns rank 0's result once
/// every rank has finished; or the first error (a panic included) of any rank, without waiting for the
/// others: a rank whose peer failed may stay blocked in a collective, and the demo then ends with the
/// error instead of hanging.
pub fn on_ranks<T: Send + 'static>(
    n: usize,
    work: impl Fn(usize) -> anyhow::Result<T> + Send + Sync + 'static,
) -> anyhow::Result<T> {
    let work = Arc::new(work);
    let (tx, rx) = mpsc::channel();
    for rank in 0..n.max(1) {
        let (work, tx) = (Arc::clone(&work), tx.clone());
        std::thread::Builder::new()
            .name(format!("rank-{rank}"))
            .spawn(move || {
                let result = std::panic::catch_unwind(AssertUnwindSafe(|| work(rank)))
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("the thread panicked")));
                // The receiver is gone only when another rank failed first: nothing to report to.
                let _ = tx.send((rank, result));
            })
            .context("starting a training thread")?;
    }
    drop(tx);
    let mut first = None;
    for _ in 0..n.max(1) {
        let (rank, result) = rx
            .recv()
            .context("a training thread stopped without a result")?;
        match result {
            Err(e) => return Err(e.context(format!("rank {rank} of {n}"))),
            Ok(v) if rank == 0 => first = Some(v),
            Ok(_) => {}
        }
    }
    first.context("rank 0 gave no result")
}
