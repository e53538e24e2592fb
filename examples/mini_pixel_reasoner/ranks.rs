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
                let result = std::panic::catch_unwind(AssertUnwindSafe(|| match n {
                    0 | 1 => work(rank),
                    _ => on_one_core(|| work(rank)),
                }))
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

/// One-thread pools for threads that work side by side, built once and reused (a warm-up builds them once
/// for its 2,000 steps): each thread's matrix products and fused kernels split their work over its own pool
/// (rayon's) instead of the one shared pool. Without them both threads hand pieces of every product to the
/// one shared two-thread pool and wait on each other's pieces; with them each runs its products whole.
/// Measured on this 2-core machine (docs/demo.md, "Two threads"): tower-only warm-up steps 20 % faster, the
/// whole demo 18.6 -> 14.9 min. A short run gives the shared pool's numbers to the last printed digit; a
/// whole warm-up's losses parted from them in the third digit, and two identical runs side by side (a
/// loaded machine) can differ, which with the shared pool they did not (docs/demo.md, "Results"): the price
/// of the time target, until the cause is found.
pub struct OneCorePools(Vec<rayon::ThreadPool>);

impl OneCorePools {
    /// `n` pools of one thread each.
    pub fn new(n: usize) -> anyhow::Result<Self> {
        (0..n)
            .map(|_| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .build()
                    .context("a one-thread pool")
            })
            .collect::<anyhow::Result<_>>()
            .map(Self)
    }

    /// Runs `work` in pool `i` (the calling thread waits for it); an error when there is no pool `i`.
    pub fn install<T: Send>(
        &self,
        i: usize,
        work: impl FnOnce() -> anyhow::Result<T> + Send,
    ) -> anyhow::Result<T> {
        self.0
            .get(i)
            .with_context(|| format!("no pool {i} of {}", self.0.len()))?
            .install(work)
    }
}

/// Runs `work` in a one-thread pool of its own ([`OneCorePools`]), built for this call: for work that runs
/// beside another thread doing the same for a whole stage (the demo's two ranks, two evaluation halves).
pub fn on_one_core<T: Send>(work: impl FnOnce() -> anyhow::Result<T> + Send) -> anyhow::Result<T> {
    OneCorePools::new(1)?.install(0, work)
}
