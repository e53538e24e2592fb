//! The warm-up's batches drawn ahead of the training on worker threads ([`prefetch`]): drawing 448 px
//! canvases, cropping and tokenizing a step's examples costs about as much as a step of the tower alone.

use anyhow::Context;

use crate::samples::{Batch, Draws, Schedule};

/// The batches of a warm-up, drawn ahead on worker threads ([`prefetch`]), received in step order.
pub struct Prefetch {
    /// Worker `w` draws steps `w, w + n, w + 2n, ...` into `receivers[w]`.
    receivers: Vec<std::sync::mpsc::Receiver<anyhow::Result<Batch>>>,
    next: usize,
}

impl Prefetch {
    /// The next step's batch (an error if its worker failed or stopped).
    pub fn recv(&mut self) -> anyhow::Result<Batch> {
        let n = self.receivers.len().max(1);
        let worker = self
            .receivers
            .get(self.next % n)
            .context("no sample thread")?;
        self.next += 1;
        worker
            .recv()
            .map_err(|_| anyhow::anyhow!("the sample thread stopped"))?
    }
}

/// Batches `0..schedule.steps` of fresh samples, `schedule.batch` each, drawn on `workers` threads while the
/// caller trains (drawing 448 px canvases costs about as much as a step of the tower alone: with one worker
/// the first half of the warm-up, the tower alone, waited on it).
pub fn prefetch(draws: std::sync::Arc<Draws>, schedule: &Schedule, workers: usize) -> Prefetch {
    let workers = workers.max(1);
    let Schedule {
        steps,
        batch,
        globals,
        seed,
        ..
    } = *schedule;
    let mut receivers = Vec::with_capacity(workers);
    for worker in 0..workers {
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        receivers.push(rx);
        let draws = draws.clone();
        std::thread::spawn(move || {
            for step in (worker..steps).step_by(workers) {
                let spec = crate::samples::BatchSpec {
                    globals,
                    ..draws.at_step(step, steps)
                };
                let b = spec.draw(seed, (step * batch) as u64, batch);
                let failed = b.is_err();
                // The receiver is gone (the trainer stopped early): stop drawing.
                if tx.send(b).is_err() || failed {
                    return;
                }
            }
        });
    }
    Prefetch { receivers, next: 0 }
}
