//! Data-parallel training: every rank holds the whole model, trains on its own shard of the batch (SFT
//! examples, GRPO prompts), and the gradients are summed across ranks before the optimizer step, so every
//! rank takes the same step and the parameters stay identical.
//!
//! A rank joins with [`DataParallel::join`] (the trainers do it in `with_data_parallel`). Two set-ups:
//!
//! - **threads** ([`DataParallel::threads`]): the ranks are threads of one process (one per GPU, or two on
//!   the CPU in the tests); `burn-collective` 0.21's local all-reduce (`register` + `all_reduce`, a tree or a
//!   ring between the threads' devices) reduces between them;
//! - **processes** ([`DataParallel::processes`]): one rank per process, on one machine (loopback) or several;
//!   rank 0 listens on an address and the ranks reduce through it over TCP (see `tcp.rs` for why not
//!   `burn-collective`'s own multi-process level: in 0.21 it completes only the first all-reduce of a process).
//!
//! Why the sum is the single-device gradient: the trainers normalise each rank's loss by the **global**
//! batch's totals (trained tokens, rows), exchanged with [`Collective::sum`], so the ranks' gradients are
//! the parts of one gradient and their sum is the gradient of the whole batch on one device (up to the
//! order of floating-point additions). That is the gradient *averaged* over the global batch, weighted as
//! the loss aggregation says, whatever the ranks' shard sizes.
//!
//! Gradients are reduced in module order (parameter ids differ between processes: burn draws them at
//! random when a model is loaded), in f32, packed into buckets of [`DataParallel::bucket_elements`] values;
//! a trainable parameter a rank has no gradient for (its shard never reached it) contributes zeros, so all
//! ranks make the same calls. [`Collective::check_identical`] compares the ranks' parameters at joining.

mod grads;
mod tcp;

use std::time::Duration;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
pub use burn_collective::AllReduceStrategy;
use burn_collective::{CollectiveConfig, PeerId, ReduceOperation};

use crate::error::{Result, RlError};
pub use grads::{all_reduce_gradients, parameter_fingerprint};
use tcp::TcpGroup;

/// Default values per all-reduce call when gradients are packed (16 Mi f32: 64 MiB).
pub const DEFAULT_BUCKET_ELEMENTS: usize = 16 << 20;

/// The rank's place in a data-parallel run. All ranks must use the same `world_size`, `local_strategy`,
/// `processes` layout and `bucket_elements`; `rank` is unique.
#[derive(Debug, Clone, PartialEq)]
pub struct DataParallel {
    /// This rank, `0..world_size` (rank 0 writes the run folder).
    pub rank: usize,
    /// Ranks in the whole run.
    pub world_size: usize,
    /// How threads reduce (`burn-collective`'s local level; its default, a binary tree).
    pub local_strategy: AllReduceStrategy,
    /// Where the processes meet; `None` when every rank is a thread of this process.
    pub processes: Option<ProcessGroup>,
    /// Values per all-reduce call: gradients are packed into buckets of this size.
    pub bucket_elements: usize,
}

/// How the processes of a multi-process run meet: rank 0 listens on `address`, the others connect to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessGroup {
    /// `host:port` rank 0 binds (e.g. `127.0.0.1:29500`, or `0.0.0.0:29500` with the others given the
    /// machine's address).
    pub address: String,
    /// How long rank 0 waits for the others to join and the others retry connecting (the processes may
    /// start in any order).
    pub join_timeout: Duration,
}

impl ProcessGroup {
    /// Rank 0 at `address`, joining within 60 s.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            join_timeout: Duration::from_secs(60),
        }
    }
}

impl DataParallel {
    /// Rank `rank` of `world_size` ranks that are threads of this process.
    pub fn threads(rank: usize, world_size: usize) -> Self {
        Self {
            rank,
            world_size,
            local_strategy: AllReduceStrategy::Tree(2),
            processes: None,
            bucket_elements: DEFAULT_BUCKET_ELEMENTS,
        }
    }

    /// Rank `rank` of `world_size` ranks, one per process, meeting through `group`.
    pub fn processes(rank: usize, world_size: usize, group: ProcessGroup) -> Self {
        Self {
            processes: Some(group),
            ..Self::threads(rank, world_size)
        }
    }

    /// The same with `strategy` between the threads.
    pub fn with_local_strategy(mut self, strategy: AllReduceStrategy) -> Self {
        self.local_strategy = strategy;
        self
    }

    /// The same with buckets of `n` values.
    pub fn with_bucket_elements(mut self, n: usize) -> Self {
        self.bucket_elements = n;
        self
    }

    /// Checks the layout.
    ///
    /// # Errors
    /// [`RlError::Setting`] naming what is wrong.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(RlError::Setting(format!("data parallel: {m}")));
        if self.world_size == 0 || self.rank >= self.world_size {
            return bad(format!(
                "rank {} is not in 0..{} (world_size)",
                self.rank, self.world_size
            ));
        }
        if let AllReduceStrategy::Tree(arity) = self.local_strategy
            && arity < 2
        {
            return bad(format!("a tree all-reduce needs arity ≥ 2, not {arity}"));
        }
        if self.bucket_elements == 0 {
            return bad("bucket_elements must be ≥ 1".into());
        }
        if let Some(g) = &self.processes
            && g.address
                .rsplit_once(':')
                .is_none_or(|(_, p)| p.parse::<u16>().is_err())
        {
            return bad(format!("address {:?} is not host:port", g.address));
        }
        Ok(())
    }

    /// The positions `0..n` of a batch this rank trains: every `world_size`-th, from `rank`.
    pub fn shard(&self, n: usize) -> impl Iterator<Item = usize> + '_ {
        (self.rank..n).step_by(self.world_size.max(1))
    }

    /// Joins the run on `device` (of the non-autodiff backend `B`) and waits until every rank has: call it
    /// from all ranks at once (one thread or process each).
    ///
    /// # Errors
    /// [`RlError::Setting`] for an invalid layout; [`RlError::Collective`] when joining fails (ranks with
    /// different settings, a rank joined twice, rank 0 unreachable within the group's timeout).
    pub fn join<B: Backend>(&self, device: &B::Device) -> Result<Collective> {
        self.validate()?;
        let transport = match &self.processes {
            Some(g) => Transport::Tcp(TcpGroup::connect(
                self.rank,
                self.world_size,
                &g.address,
                g.join_timeout,
            )?),
            None => {
                let config = CollectiveConfig::default()
                    .with_num_devices(self.world_size)
                    .with_local_all_reduce_strategy(self.local_strategy);
                let peer = PeerId::from(self.rank);
                burn_collective::register::<B>(peer, device.clone(), config)
                    .map_err(|e| collective("register", e))?;
                Transport::Local {
                    peer,
                    finish: Some(burn_collective::finish_collective::<B>),
                }
            }
        };
        Ok(Collective {
            layout: self.clone(),
            transport,
        })
    }
}

pub(crate) fn collective(what: &str, e: burn_collective::CollectiveError) -> RlError {
    RlError::Collective(format!("{what}: {e:?}"))
}

/// How a thread rank leaves (`burn-collective`'s `finish_collective` for its backend).
type Finish = fn(PeerId) -> std::result::Result<(), burn_collective::CollectiveError>;

#[derive(Debug)]
enum Transport {
    Local {
        peer: PeerId,
        finish: Option<Finish>,
    },
    Tcp(TcpGroup),
}

/// A rank that has joined: the handle the trainers reduce through. Dropping it leaves the run (a thread
/// rank unregisters, so the same ranks can join again later in the process; a process closes its
/// connections).
#[derive(Debug)]
pub struct Collective {
    layout: DataParallel,
    transport: Transport,
}

impl Drop for Collective {
    fn drop(&mut self) {
        if let Transport::Local { peer, finish } = &mut self.transport
            && let Some(finish) = finish.take()
        {
            // Nothing to do about a failure here (the collective is gone already).
            let _ = finish(*peer);
        }
    }
}

impl Collective {
    /// This rank.
    pub fn rank(&self) -> usize {
        self.layout.rank
    }

    /// Ranks in the run.
    pub fn world_size(&self) -> usize {
        self.layout.world_size
    }

    /// The layout joined with.
    pub fn layout(&self) -> &DataParallel {
        &self.layout
    }

    /// The element-wise sum of `values` over all ranks (every rank passes as many), in f32 on `device`
    /// (integers up to 2^24 stay exact).
    ///
    /// # Errors
    /// [`RlError::Collective`] when the all-reduce fails (a rank passed another length, a rank is gone).
    pub fn sum<B: Backend>(&self, values: &[f64], device: &B::Device) -> Result<Vec<f64>> {
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let data: Vec<f32> = values.iter().map(|&v| v as f32).collect();
        let t = Tensor::<B, 1>::from_data(TensorData::new(data, [values.len()]), device);
        let v = read_f32(self.all_reduce_sum::<B>(t)?)?;
        Ok(v.into_iter().map(f64::from).collect())
    }

    /// Every rank's `value`, indexed by rank.
    ///
    /// # Errors
    /// As [`Collective::sum`].
    pub fn gather<B: Backend>(&self, value: f64, device: &B::Device) -> Result<Vec<f64>> {
        let mut v = vec![0.0; self.world_size()];
        v[self.rank()] = value;
        self.sum::<B>(&v, device)
    }

    /// The sum over all ranks of an f32 vector.
    pub(crate) fn all_reduce_sum<B: Backend>(&self, t: Tensor<B, 1>) -> Result<Tensor<B, 1>> {
        match &self.transport {
            Transport::Local { peer, .. } => {
                let out = burn_collective::all_reduce::<B>(
                    *peer,
                    t.into_primitive().tensor(),
                    ReduceOperation::Sum,
                )
                .map_err(|e| collective("all-reduce", e))?;
                Ok(Tensor::from_primitive(TensorPrimitive::Float(out)))
            }
            Transport::Tcp(group) => {
                let device = t.device();
                let summed = group.all_reduce(&read_f32(t)?)?;
                let n = summed.len();
                Ok(Tensor::from_data(TensorData::new(summed, [n]), &device))
            }
        }
    }

    /// Leaves the run, reporting a failure that dropping would ignore.
    ///
    /// # Errors
    /// [`RlError::Collective`] when `burn-collective` refuses.
    pub fn leave(mut self) -> Result<()> {
        match &mut self.transport {
            Transport::Local { peer, finish } => match finish.take() {
                Some(finish) => finish(*peer).map_err(|e| collective("finish", e)),
                None => Ok(()),
            },
            Transport::Tcp(_) => Ok(()),
        }
    }
}

fn read_f32<B: Backend>(t: Tensor<B, 1>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| RlError::Collective(format!("reading values back from the device: {e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_layouts_are_refused_with_the_reason() {
        let group = ProcessGroup::new("127.0.0.1:29500");
        let cases = [
            (DataParallel::threads(2, 2), "rank 2"),
            (DataParallel::threads(0, 0), "rank 0"),
            (
                DataParallel::threads(0, 2).with_local_strategy(AllReduceStrategy::Tree(1)),
                "arity",
            ),
            (
                DataParallel::threads(0, 2).with_bucket_elements(0),
                "bucket",
            ),
            (
                DataParallel::processes(0, 2, ProcessGroup::new("localhost")),
                "host:port",
            ),
        ];
        for (dp, want) in cases {
            let err = dp.validate().expect_err(want).to_string();
            assert!(err.contains(want), "{err} (wanted {want})");
        }
        assert!(DataParallel::processes(1, 2, group).validate().is_ok());
    }

    #[test]
    fn shards_cover_a_batch_once() {
        let mut seen: Vec<usize> = (0..3)
            .flat_map(|r| DataParallel::threads(r, 3).shard(8).collect::<Vec<_>>())
            .collect();
        assert_eq!(
            DataParallel::threads(1, 3).shard(8).collect::<Vec<_>>(),
            [1, 4, 7]
        );
        seen.sort_unstable();
        assert_eq!(seen, (0..8).collect::<Vec<_>>());
    }
}
