//! A key/value cache for batched decoding that grows with use, with per-slot validity (left padding,
//! finished rows).
//!
//! The keys and values of each layer live in one `[batch, kv_heads, allocated, head_dim]` tensor per
//! kind, where `allocated` grows on demand (to the next multiple of [`KV_CACHE_CHUNK`], at least doubling)
//! up to the cache's capacity: a rollout whose budget allows 8,192 tokens but uses 180 holds 192 slots, not
//! 8,192. Growing copies the filled part once; doubling keeps that to O(1) copies per slot. Attention
//! reads views of the filled slots (no copy); new slots are written in place (on burn's `Flex` through
//! the buffer itself, because its `slice_assign` copies the whole destination on every call: see
//! `flex` below), so a decoded token costs its own keys and values, not the cache's.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorCreationOptions, TensorData, get_device_settings};

use crate::error::{Result, VlmError};

/// Keys and values of every decoder layer, `[batch, kv_heads, allocated, head_dim]` each, grown on demand up
/// to `capacity` slots.
///
/// Slots are appended for all rows together; a slot can be marked invalid for a row (left padding of a
/// shorter prompt, or a row that already finished), and attention never looks at invalid slots.
#[derive(Debug)]
pub struct KvCache<B: Backend> {
    /// `None` before the first slot is reserved (and, for one layer, while [`KvCache::update`] runs).
    layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    batch: usize,
    kv_heads: usize,
    head_dim: usize,
    capacity: usize,
    /// Slots the layers' tensors hold (filled or not); `len <= allocated <= capacity`.
    allocated: usize,
    len: usize,
    device: B::Device,
    dtype: DType,
    /// Per row, the validity of every slot reserved so far.
    valid: Vec<Vec<bool>>,
    /// The text position each row continues from (max position so far + 1).
    next_position: Vec<i64>,
}

/// Slots are allocated in multiples of this many (and at least doubled when the cache grows).
pub const KV_CACHE_CHUNK: usize = 64;

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
    /// A cache for `batch` rows of up to `capacity` tokens, on a device and (optionally) in a dtype
    /// (`&device` or `(&device, dtype)`; the model's own cache comes from [`crate::Qwen25Vl::new_cache`]),
    /// after checking that it fits in `budget` bytes when full ([`kv_cache_bytes`];
    /// [`DEFAULT_KV_CACHE_BUDGET`] is the usual budget). Nothing is allocated until slots are reserved.
    ///
    /// # Errors
    /// [`VlmError::CacheOverBudget`] if the keys and values of a full cache would need more than `budget`
    /// bytes.
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
        Ok(Self {
            layers: (0..num_layers).map(|_| None).collect(),
            batch,
            kv_heads,
            head_dim,
            capacity,
            allocated: 0,
            len: 0,
            device: options.device,
            dtype,
            valid: vec![Vec::new(); batch],
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

    /// Slots available in total (the most the cache grows to).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Slots the keys and values hold now, filled or not: at least [`KvCache::len`], at most
    /// [`KvCache::capacity`], and within a factor of two of the slots used (or one [`KV_CACHE_CHUNK`]).
    pub fn allocated(&self) -> usize {
        self.allocated
    }

    /// The text position row `row` continues from (its largest M-RoPE position + 1).
    pub fn next_position(&self, row: usize) -> i64 {
        self.next_position[row]
    }

    /// Sets the text position row `row` continues from.
    pub(crate) fn set_next_position(&mut self, row: usize, pos: i64) {
        self.next_position[row] = pos;
    }

    /// A cache of `rows` rows, each a copy of row `row` of this one (a shared prompt prefilled once, then
    /// continued independently by every row of a group), with this cache's capacity and its allocation.
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
                    // `repeat_dim` copies into a new buffer (for `rows > 1`), so the fork's writes never
                    // find its buffers shared with this cache.
                    let pick = |t: &Tensor<B, 4>| t.clone().narrow(0, row, 1).repeat_dim(0, rows);
                    (pick(k), pick(v))
                })
            })
            .collect();
        Ok(Self {
            layers,
            batch: rows,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            capacity: self.capacity,
            allocated: self.allocated,
            len: self.len,
            device: self.device.clone(),
            dtype: self.dtype,
            valid: vec![self.valid[row].clone(); rows],
            next_position: vec![self.next_position[row]; rows],
        })
    }

    /// Reserves `seq` new slots with the given validity `[batch, seq]`, before the layers run, growing the
    /// keys and values if they hold fewer than `len + seq` slots.
    pub(crate) fn begin(&mut self, seq: usize, valid: &[bool]) -> Result<()> {
        let need = self.len + seq;
        if need > self.capacity {
            return Err(VlmError::Generation(format!(
                "KV cache full: {} slots used + {seq} new > capacity {}",
                self.len, self.capacity
            )));
        }
        if need > self.allocated {
            self.grow(need);
        }
        for (row, slots) in self.valid.iter_mut().enumerate() {
            // Slots of a step that failed after `begin` are reserved again.
            slots.truncate(self.len);
            slots.extend_from_slice(&valid[row * seq..(row + 1) * seq]);
        }
        Ok(())
    }

    /// Reallocates every layer's keys and values to hold at least `need` slots: the next multiple of
    /// [`KV_CACHE_CHUNK`], at least twice the current allocation, at most the capacity. The filled slots
    /// are copied; the new ones are zeros (never attended before they are written).
    fn grow(&mut self, need: usize) {
        let to = need
            .next_multiple_of(KV_CACHE_CHUNK)
            .max(2 * self.allocated)
            .min(self.capacity);
        let shape = [self.batch, self.kv_heads, to, self.head_dim];
        let (device, dtype, len) = (&self.device, self.dtype, self.len);
        for layer in &mut self.layers {
            let grown = |old: Option<Tensor<B, 4>>| match old {
                Some(old) if len > 0 => {
                    let free = Tensor::<B, 4>::zeros(
                        [shape[0], shape[1], to - len, shape[3]],
                        (device, dtype),
                    );
                    Tensor::cat(vec![old.narrow(2, 0, len), free], 2)
                }
                _ => Tensor::<B, 4>::zeros(shape, (device, dtype)),
            };
            *layer = match layer.take() {
                Some((k, v)) => Some((grown(Some(k)), grown(Some(v)))),
                None => Some((grown(None), grown(None))),
            };
        }
        self.allocated = to;
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
        for (row, slots) in self.valid.iter().enumerate() {
            for q in 0..seq {
                let base = (row * seq + q) * total;
                for (k, &slot) in slots[..total].iter().enumerate() {
                    let allowed = k <= self.len + q && slot;
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

    /// Writes the new keys/values of `layer` after the filled slots (in place: see the module docs) and
    /// returns views of all keys/values so far. Drop the views before the next write.
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
        let end = self.len + k.dims()[2];
        let (kc, vc) = self.layers[layer]
            .take()
            .expect("cache layer allocated by `begin`");
        let kc = write_slots(kc, self.len, k);
        let vc = write_slots(vc, self.len, v);
        let out = (kc.clone().narrow(2, 0, end), vc.clone().narrow(2, 0, end));
        self.layers[layer] = Some((kc, vc));
        out
    }
}

/// `cache` `[b, h, allocated, d]` with `new` `[b, h, s, d]` written at slots `start..start + s`.
fn write_slots<B: Backend>(cache: Tensor<B, 4>, start: usize, new: Tensor<B, 4>) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    let (cache, new) = match flex::write_in_place(cache, start, new) {
        Ok(written) => return written,
        Err(unchanged) => unchanged,
    };
    let [b, h, s, d] = new.dims();
    cache.slice_assign([0..b, 0..h, start..start + s, 0..d], new)
}

/// An in-place slot write for burn's `Flex` backend.
///
/// `Flex` tensors share their buffers copy-on-write, and burn-flex 0.21's `slice_assign` always takes a
/// second handle on the destination before writing (its `to_contiguous` of an already contiguous tensor
/// is a clone of the handle), so every write copies the whole buffer first, however unshared it was: one
/// decoded token copied all of the cache's keys and values (41 % of a GRPO step's time in the trainer
/// benchmark, when the cache was allocated at full capacity). Here the new slots are copied straight into the buffer when this cache holds the only
/// handle on it, which is the case between steps (the views [`KvCache::update`] returns are gone by then).
#[cfg(feature = "flex")]
mod flex {
    use std::any::Any;

    use burn::tensor::backend::Backend;
    use burn::tensor::{DType, Tensor, TensorPrimitive, bf16, f16};
    use burn_flex::FlexTensor;

    type Pair<B> = (Tensor<B, 4>, Tensor<B, 4>);

    /// `new` written into `cache` at slot `start` in place, or both back untouched when `B` is not `Flex`,
    /// the dtype is not a float one, or the buffer is shared or not laid out densely.
    pub(super) fn write_in_place<B: Backend>(
        cache: Tensor<B, 4>,
        start: usize,
        new: Tensor<B, 4>,
    ) -> Result<Tensor<B, 4>, Pair<B>> {
        let wrap =
            |p: B::FloatTensorPrimitive| Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(p));
        let (mut dst, src) = match (cache.into_primitive(), new.into_primitive()) {
            (TensorPrimitive::Float(dst), TensorPrimitive::Float(src)) => (dst, src),
            (dst, src) => return Err((Tensor::from_primitive(dst), Tensor::from_primitive(src))),
        };
        let written = match (
            (&mut dst as &mut dyn Any).downcast_mut::<FlexTensor>(),
            (&src as &dyn Any).downcast_ref::<FlexTensor>(),
        ) {
            (Some(dst), Some(src)) => copy_slots(dst, src, start),
            _ => false,
        };
        if written {
            Ok(wrap(dst))
        } else {
            Err((wrap(dst), wrap(src)))
        }
    }

    fn copy_slots(dst: &mut FlexTensor, src: &FlexTensor, start: usize) -> bool {
        let shape = dst.layout().shape();
        let (rows, allocated, width) = (shape[0] * shape[1], shape[2], shape[3]);
        let fits = src.layout().shape().num_dims() == 4
            && [0, 1, 3].map(|i| src.layout().shape()[i]) == [0, 1, 3].map(|i| shape[i]);
        let dense = fits
            && dst.dtype() == src.dtype()
            && dst.layout().is_contiguous()
            && dst.layout().start_offset() == 0
            && dst.bytes().len() == rows * allocated * width * dst.dtype().size();
        if !dense {
            return false;
        }
        let src = src.to_contiguous();
        let at = Slots {
            rows,
            allocated,
            width,
            start,
        };
        match dst.dtype() {
            DType::F32 => at.copy(dst.try_storage_mut::<f32>(), src.as_slice::<f32>()),
            DType::F16 => at.copy(dst.try_storage_mut::<f16>(), src.as_slice::<f16>()),
            DType::BF16 => at.copy(dst.try_storage_mut::<bf16>(), src.as_slice::<bf16>()),
            _ => false,
        }
    }

    /// Where new slots go in a `[rows, allocated, width]` buffer.
    struct Slots {
        rows: usize,
        allocated: usize,
        width: usize,
        start: usize,
    }

    impl Slots {
        /// Copies `values` `[rows, seq, width]` into `slots` (`None`: the buffer is shared, or not
        /// readable as one slice; nothing is written).
        fn copy<E: Copy>(&self, slots: Option<&mut [E]>, values: Option<&[E]>) -> bool {
            let (Some(slots), Some(values)) = (slots, values) else {
                return false;
            };
            let seq = values.len() / (self.rows * self.width).max(1);
            if seq == 0 || self.start + seq > self.allocated {
                return false;
            }
            for (row, new) in values.chunks_exact(seq * self.width).enumerate() {
                let at = (row * self.allocated + self.start) * self.width;
                slots[at..at + new.len()].copy_from_slice(new);
            }
            true
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use crate::generation::{GenerationConfig, SegmentInput, Session};
    use crate::sampling::{Sampler, SamplingParams};
    use crate::{Qwen25Vl, Qwen25VlConfig};
    use burn::backend::Flex;

    /// Where `t`'s buffer starts.
    fn buffer(t: &Tensor<Flex, 4>) -> usize {
        t.clone().into_primitive().tensor().bytes().as_ptr() as usize
    }

    /// Handles on `t`'s buffer besides `t` itself (`Flex` tensors share buffers copy-on-write: a write
    /// through a handle with others alive copies the whole buffer first).
    fn other_handles(t: &Tensor<Flex, 4>) -> usize {
        let primitive = t.clone().into_primitive().tensor();
        // Minus `t`, its clone, and the `Arc` just made.
        std::sync::Arc::strong_count(&primitive.data_arc()) - 3
    }

    fn tiny_model() -> Qwen25Vl<Flex> {
        let config = Qwen25VlConfig::from_json_str(
            r#"{
            "model_type": "qwen2_5_vl", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 32,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
            "rope_scaling": {"type": "mrope", "mrope_section": [1, 1, 2]}, "tie_word_embeddings": true,
            "image_token_id": 60, "video_token_id": 61, "vision_start_token_id": 62,
            "vision_config": {"depth": 1, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2,
                "out_hidden_size": 32, "fullatt_block_indexes": [0], "window_size": 56}}"#,
        )
        .unwrap();
        Qwen25Vl::random(config, 7, &Default::default()).unwrap()
    }

    #[test]
    fn decoding_writes_the_cache_in_place_and_allocates_what_it_uses() {
        let model = tiny_model();
        let mut one = Session::new(&model, 1, 4000).unwrap();
        one.append(&[SegmentInput::text((1..40).collect())])
            .unwrap();
        assert_eq!(one.cache().allocated(), KV_CACHE_CHUNK);
        let mut group = one.fork(0, 3).unwrap();
        let config = GenerationConfig {
            max_new_tokens: 1,
            ..Default::default()
        };
        let mut samplers: Vec<Sampler> = (0..3)
            .map(|_| Sampler::new(SamplingParams::greedy(), 0).unwrap())
            .collect();
        let buffers = |cache: &KvCache<Flex>| -> Vec<usize> {
            cache
                .layers
                .iter()
                .flatten()
                .flat_map(|(k, v)| [buffer(k), buffer(v)])
                .collect()
        };
        let mut in_place = 0;
        for _ in 0..100 {
            let before = (group.cache().allocated(), buffers(group.cache()));
            group
                .generate(&config, &mut samplers, None, |_, _, _| {})
                .unwrap();
            // Feeds the sampled token: one decode step.
            group.append(&vec![SegmentInput::default(); 3]).unwrap();
            let cache = group.cache();
            if cache.allocated() == before.0 {
                assert_eq!(
                    buffers(cache),
                    before.1,
                    "a step without growth moved the cache"
                );
                in_place += 1;
            }
            for (layer, kv) in cache.layers.iter().enumerate() {
                let (k, v) = kv.as_ref().unwrap();
                assert_eq!(
                    (other_handles(k), other_handles(v)),
                    (0, 0),
                    "layer {layer} at {} slots: a handle outlived the step",
                    cache.len()
                );
            }
            assert!(cache.allocated() >= cache.len());
            assert!(
                cache.allocated() <= (2 * cache.len()).max(KV_CACHE_CHUNK),
                "{} slots allocated for {} used",
                cache.allocated(),
                cache.len()
            );
        }
        assert_eq!(
            in_place, 98,
            "all steps but the two that grew write in place"
        );
        // 39 prompt slots and 100 decode steps: grown 64 -> 128 -> 256.
        assert_eq!(group.cache().len(), 139);
        assert_eq!(group.cache().allocated(), 256);
        // The row the group was forked from is untouched by the group's writes.
        assert_eq!(one.cache().len(), 39);
        for (k, v) in one.cache().layers.iter().flatten() {
            assert_eq!((other_handles(k), other_handles(v)), (0, 0));
        }
    }
}
