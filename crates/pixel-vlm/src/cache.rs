//! A preallocated key/value cache for batched decoding, with per-slot validity (left padding, finished rows).

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorCreationOptions, TensorData, get_device_settings};

use crate::error::{Result, VlmError};

/// Keys and values of every decoder layer, `[batch, kv_heads, capacity, head_dim]` each, allocated once.
///
/// Slots are appended for all rows together; a slot can be marked invalid for a row (left padding of a
/// shorter prompt, or a row that already finished), and attention never looks at invalid slots.
#[derive(Debug)]
pub struct KvCache<B: Backend> {
    layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    batch: usize,
    capacity: usize,
    len: usize,
    /// `[batch, capacity]` row-major.
    valid: Vec<bool>,
    /// The text position each row continues from (max position so far + 1).
    next_position: Vec<i64>,
}

/// Default memory budget of a KV cache, in bytes (8 GiB): keys and values of every layer, all rows. A
/// Qwen2.5-VL-7B cache in f32 takes 112 KiB per token (28 layers x 2 x 4 KV heads x 128 x 4 bytes), so
/// this holds 8 rows of 9k tokens, or one row of the 3B's whole 128k context in bf16; anything beyond it is
/// a typed error instead of an allocation that kills the process. Raise it with
/// [`crate::generation::Session::with_budget`] or [`crate::Qwen25Vl::new_cache_with_budget`].
pub const DEFAULT_KV_CACHE_BUDGET: u64 = 8 << 30;

/// Bytes of the keys and values of a cache: `2 x num_layers x batch x kv_heads x capacity x head_dim`
/// elements of `elem_bytes` (`DType::size`). `None` if that does not fit in a `u64`.
pub fn kv_cache_bytes(
    num_layers: usize,
    batch: usize,
    kv_heads: usize,
    head_dim: usize,
    capacity: usize,
    elem_bytes: usize,
) -> Option<u64> {
    [num_layers, batch, kv_heads, capacity, head_dim, elem_bytes]
        .into_iter()
        .try_fold(2u64, |acc, x| acc.checked_mul(u64::try_from(x).ok()?))
}

impl<B: Backend> KvCache<B> {
    /// Allocates a cache for `batch` rows of up to `capacity` tokens, on a device and (optionally) in a dtype
    /// (`&device` or `(&device, dtype)`; the model's own cache comes from [`crate::Qwen25Vl::new_cache`]),
    /// after checking it fits in `budget` bytes ([`kv_cache_bytes`]; [`DEFAULT_KV_CACHE_BUDGET`] is the
    /// usual budget).
    ///
    /// # Errors
    /// [`VlmError::CacheOverBudget`] if the keys and values would need more than `budget` bytes.
    pub fn new(
        num_layers: usize,
        batch: usize,
        kv_heads: usize,
        head_dim: usize,
        capacity: usize,
        budget: u64,
        options: impl Into<TensorCreationOptions<B>>,
    ) -> Result<Self> {
        let options = options.into();
        let dtype = options
            .dtype
            .unwrap_or_else(|| get_device_settings::<B>(&options.device).float_dtype.into());
        let bytes = kv_cache_bytes(
            num_layers,
            batch,
            kv_heads,
            head_dim,
            capacity,
            dtype.size(),
        );
        if bytes.is_none_or(|b| b > budget) {
            return Err(VlmError::CacheOverBudget {
                batch,
                capacity,
                bytes,
                budget,
            });
        }
        let layers = (0..num_layers)
            .map(|_| {
                let zeros =
                    || Tensor::zeros([batch, kv_heads, capacity, head_dim], options.clone());
                Some((zeros(), zeros()))
            })
            .collect();
        Ok(Self {
            layers,
            batch,
            capacity,
            len: 0,
            // Within the budget, so `batch * capacity` is far from overflowing.
            valid: vec![false; batch * capacity],
            next_position: vec![0; batch],
        })
    }

    /// Rows.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Slots filled so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was prefilled yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slots available in total.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The text position row `row` continues from (its largest M-RoPE position + 1).
    pub fn next_position(&self, row: usize) -> i64 {
        self.next_position[row]
    }

    /// Marks every slot of `row` invalid from now on (used when a row finished; its later slots are
    /// written with `valid = false` by the caller too).
    pub(crate) fn set_next_position(&mut self, row: usize, pos: i64) {
        self.next_position[row] = pos;
    }

    /// A cache of `rows` rows, each a copy of row `row` of this one (a shared prompt prefilled once, then
    /// continued independently by every row of a group).
    ///
    /// # Errors
    /// [`VlmError::Input`] if `row` is out of range or `rows` is 0.
    pub fn fork_row(&self, row: usize, rows: usize) -> Result<Self> {
        if row >= self.batch || rows == 0 {
            return Err(VlmError::Input {
                input: "fork",
                reason: format!("row {row} of {} into {rows} rows", self.batch),
            });
        }
        let layers = self
            .layers
            .iter()
            .map(|layer| {
                layer.as_ref().map(|(k, v)| {
                    let pick = |t: &Tensor<B, 4>| {
                        let [_, h, c, d] = t.dims();
                        t.clone()
                            .slice([row..row + 1, 0..h, 0..c, 0..d])
                            .repeat_dim(0, rows)
                    };
                    (pick(k), pick(v))
                })
            })
            .collect();
        let one = &self.valid[row * self.capacity..(row + 1) * self.capacity];
        Ok(Self {
            layers,
            batch: rows,
            capacity: self.capacity,
            len: self.len,
            valid: one.repeat(rows),
            next_position: vec![self.next_position[row]; rows],
        })
    }

    /// Reserves `seq` new slots with the given validity `[batch, seq]`, before the layers run.
    pub(crate) fn begin(&mut self, seq: usize, valid: &[bool]) -> Result<()> {
        if self.len + seq > self.capacity {
            return Err(VlmError::Generation(format!(
                "KV cache full: {} slots used + {seq} new > capacity {}",
                self.len, self.capacity
            )));
        }
        for row in 0..self.batch {
            for i in 0..seq {
                self.valid[row * self.capacity + self.len + i] = valid[row * seq + i];
            }
        }
        Ok(())
    }

    /// Commits the `seq` slots reserved by [`KvCache::begin`].
    pub(crate) fn commit(&mut self, seq: usize) {
        self.len += seq;
    }

    /// Additive attention mask `[batch, 1, 1, seq, len + seq]` for `seq` new queries: 0 where the key slot is
    /// valid and not in the future, a large negative number elsewhere. Always f32: it is added to the scores
    /// after they are widened for the softmax.
    pub(crate) fn attention_mask(&self, seq: usize, device: &B::Device) -> Tensor<B, 5> {
        let total = self.len + seq;
        let mut mask = vec![0.0f32; self.batch * seq * total];
        for row in 0..self.batch {
            for q in 0..seq {
                let base = (row * seq + q) * total;
                for k in 0..total {
                    let allowed = k <= self.len + q && self.valid[row * self.capacity + k];
                    if !allowed {
                        mask[base + k] = -1e30;
                    }
                }
            }
        }
        Tensor::from_data(
            TensorData::new(mask, [self.batch, 1, 1, seq, total]),
            (device, DType::F32),
        )
    }

    /// Writes the new keys/values of `layer` after the filled slots and returns all keys/values so far.
    ///
    /// # Shapes
    /// - `k`, `v`: `[batch, kv_heads, seq, head_dim]`
    /// - output: two `[batch, kv_heads, len + seq, head_dim]`
    pub(crate) fn update(
        &mut self,
        layer: usize,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let [b, h, s, d] = k.dims();
        let (start, end) = (self.len, self.len + s);
        let (kc, vc) = self.layers[layer]
            .take()
            .expect("cache layer present between updates");
        let kc = kc.slice_assign([0..b, 0..h, start..end, 0..d], k);
        let vc = vc.slice_assign([0..b, 0..h, start..end, 0..d], v);
        let out = (
            kc.clone().slice([0..b, 0..h, 0..end, 0..d]),
            vc.clone().slice([0..b, 0..h, 0..end, 0..d]),
        );
        self.layers[layer] = Some((kc, vc));
        out
    }
}
