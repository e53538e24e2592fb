//! A LoRA adapter of one linear projection (Hu et al. 2021), computed as PEFT's `lora.Linear` computes it.
//!
//! The adapted projection is `base(x) + scaling · B(A(dropout(x)))` with `A: d_in -> rank`,
//! `B: rank -> d_out` and `scaling = alpha / rank` (`alpha / sqrt(rank)` with rsLoRA). The adapter keeps its
//! own dtype (f32) whatever the base's: the input is cast to it, the base output is widened to it before the
//! sum, and the sum is rounded back to the base's dtype once, as PEFT does for a bf16 base with f32
//! adapters. `B` starts at zero (PEFT's default initialisation), so a fresh adapter changes nothing.

use burn::module::{Module, Param};
use burn::nn::{Dropout, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::backend::matmul;

/// The low-rank update of one projection (keys `lora_A`, `lora_B` in PEFT's files).
#[derive(Module, Debug)]
pub struct LoraAdapter<B: Backend> {
    /// `A` in burn's `[d_in, rank]` layout (PEFT stores `lora_A.weight` as `[rank, d_in]`).
    pub lora_a: Param<Tensor<B, 2>>,
    /// `B` in burn's `[rank, d_out]` layout (PEFT stores `lora_B.weight` as `[d_out, rank]`).
    pub lora_b: Param<Tensor<B, 2>>,
    /// The factor of the update: `alpha / rank`, or `alpha / sqrt(rank)` with rsLoRA.
    pub scaling: f64,
    /// Dropout on the adapter's input (PEFT's `lora_dropout`); it only acts under autodiff.
    pub dropout: Dropout,
}

impl<B: Backend> LoraAdapter<B> {
    /// A fresh adapter: `A` drawn as PEFT draws it (`kaiming_uniform_(a = sqrt 5)`, i.e. uniform in
    /// `±1/sqrt(d_in)`) from a seeded ChaCha8 stream, `B` zero, both f32.
    ///
    /// # Panics
    /// If `d_in`, `d_out` or `rank` is zero.
    pub fn init(
        d_in: usize,
        d_out: usize,
        rank: usize,
        scaling: f64,
        dropout: f64,
        seed: u64,
        device: &B::Device,
    ) -> Self {
        assert!(
            d_in > 0 && d_out > 0 && rank > 0,
            "LoraAdapter::init: sizes must be positive, got d_in {d_in}, d_out {d_out}, rank {rank}"
        );
        let bound = 1.0 / (d_in as f32).sqrt();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let a: Vec<f32> = (0..d_in * rank)
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        let a = TensorData::new(a, [d_in, rank]);
        let b = TensorData::new(vec![0.0f32; rank * d_out], [rank, d_out]);
        Self::from_data(a, b, scaling, dropout, device)
    }

    /// An adapter from `A` `[d_in, rank]` and `B` `[rank, d_out]` (burn's layout), kept in their own dtype.
    pub fn from_data(
        a: TensorData,
        b: TensorData,
        scaling: f64,
        dropout: f64,
        device: &B::Device,
    ) -> Self {
        let (a_dtype, b_dtype) = (a.dtype, b.dtype);
        Self {
            lora_a: Param::from_tensor(Tensor::from_data(a, (device, a_dtype))),
            lora_b: Param::from_tensor(Tensor::from_data(b, (device, b_dtype))),
            scaling,
            dropout: Dropout { prob: dropout },
        }
    }

    /// The rank.
    pub fn rank(&self) -> usize {
        self.lora_a.dims()[1]
    }

    /// `base_out + scaling · B(A(dropout(x)))`, computed in the adapter's dtype and returned in `base_out`'s.
    ///
    /// # Shapes
    /// - `base_out`: `[.., d_out]`, the base projection of `x`
    /// - `x`: `[.., d_in]`
    /// - output: `[.., d_out]`
    pub fn apply<const D: usize>(&self, base_out: Tensor<B, D>, x: Tensor<B, D>) -> Tensor<B, D> {
        let out_dtype = base_out.dtype();
        let dtype = self.lora_a.val().dtype();
        let dims = x.dims();
        let d_in = dims[D - 1];
        let rows = dims[..D - 1].iter().product::<usize>();
        let x = self.dropout.forward(x.reshape([rows, d_in]).cast(dtype));
        let delta = matmul(matmul(x, self.lora_a.val()), self.lora_b.val()) * self.scaling; // [rows, d_out]
        let mut shape = dims;
        shape[D - 1] = delta.dims()[1];
        (base_out.cast(dtype) + delta.reshape(shape)).cast(out_dtype)
    }

    /// `weight + scaling · A B` for a base weight in burn's `[d_in, d_out]` layout, summed in the adapter's dtype
    /// and rounded once to the weight's (detached: a merged weight is a new leaf).
    pub fn merged_weight(&self, weight: Tensor<B, 2>) -> Tensor<B, 2> {
        let out_dtype = weight.dtype();
        let dtype = self.lora_a.val().dtype();
        let delta = matmul(self.lora_a.val(), self.lora_b.val()) * self.scaling; // [d_in, d_out]
        (weight.cast(dtype) + delta).cast(out_dtype).detach()
    }

    /// `linear` with this adapter merged into its weight; the weight keeps its id and its gradient setting.
    pub fn merge_into(&self, mut linear: Linear<B>) -> Linear<B> {
        let require_grad = linear.weight.is_require_grad();
        linear.weight = linear
            .weight
            .map(|w| self.merged_weight(w).set_require_grad(require_grad));
        linear
    }
}

/// `base_out`, plus the adapter's update of `x` when there is one.
///
/// # Shapes
/// - `base_out`: `[.., d_out]`; `x`: `[.., d_in]`; output `[.., d_out]`
pub fn adapted<B: Backend, const D: usize>(
    adapter: Option<&LoraAdapter<B>>,
    base_out: Tensor<B, D>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    match adapter {
        Some(adapter) => adapter.apply(base_out, x),
        None => base_out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::tensor::DType;
    use burn::tensor::{Distribution, Tolerance};

    type B = crate::backend::CpuBackend;

    fn linear(d_in: usize, d_out: usize, dtype: DType) -> Linear<B> {
        let device = Default::default();
        let w = Tensor::<B, 2>::random([d_in, d_out], Distribution::Normal(0.0, 0.1), &device);
        let b = Tensor::<B, 1>::random([d_out], Distribution::Normal(0.0, 0.1), &device);
        Linear {
            weight: Param::from_tensor(w.cast(dtype)),
            bias: Some(Param::from_tensor(b.cast(dtype))),
        }
    }

    fn adapter(d_in: usize, d_out: usize, rank: usize) -> LoraAdapter<B> {
        let device = Default::default();
        let a = Tensor::<B, 2>::random([d_in, rank], Distribution::Normal(0.0, 0.3), &device);
        let b = Tensor::<B, 2>::random([rank, d_out], Distribution::Normal(0.0, 0.3), &device);
        LoraAdapter::from_data(a.into_data(), b.into_data(), 0.5, 0.0, &device)
    }

    #[test]
    fn a_fresh_adapter_changes_nothing_and_draws_a_within_the_kaiming_bound() {
        let device = Default::default();
        let layer = linear(16, 8, DType::F32);
        let fresh = LoraAdapter::<B>::init(16, 8, 4, 2.0, 0.0, 7, &device);
        let x = Tensor::<B, 3>::random([2, 3, 16], Distribution::Default, &device);
        let base = layer.forward(x.clone());
        let out = fresh.apply(base.clone(), x);
        assert_eq!(
            out.into_data().to_vec::<f32>().unwrap(),
            base.into_data().to_vec::<f32>().unwrap()
        );
        let a = fresh.lora_a.val().into_data().to_vec::<f32>().unwrap();
        assert!(a.iter().all(|v| v.abs() <= 0.25) && a.iter().any(|v| v.abs() > 0.1));
        assert_eq!(fresh.lora_a.val().dtype(), DType::F32);
    }

    #[test]
    fn the_update_is_scaling_times_x_a_b() {
        let device = Default::default();
        let layer = linear(6, 5, DType::F32);
        let lora = adapter(6, 5, 3);
        let x = Tensor::<B, 2>::random([4, 6], Distribution::Default, &device);
        let want = layer.forward(x.clone())
            + x.clone()
                .matmul(lora.lora_a.val())
                .matmul(lora.lora_b.val())
                .mul_scalar(0.5);
        lora.apply(layer.forward(x.clone()), x)
            .into_data()
            .assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-6));
    }

    #[test]
    fn a_bf16_base_gets_an_f32_update_rounded_once() {
        let device = Default::default();
        let layer = linear(8, 4, DType::BF16);
        let lora = adapter(8, 4, 2);
        let x = Tensor::<B, 2>::random([3, 8], Distribution::Default, &device).cast(DType::BF16);
        let base = layer.forward(x.clone());
        let out = lora.apply(base.clone(), x.clone());
        assert_eq!(out.dtype(), DType::BF16);
        let delta = x
            .cast(DType::F32)
            .matmul(lora.lora_a.val())
            .matmul(lora.lora_b.val())
            .mul_scalar(0.5);
        let want = (base.cast(DType::F32) + delta).cast(DType::BF16);
        assert_eq!(
            out.into_data().convert::<f32>().to_vec::<f32>().unwrap(),
            want.into_data().convert::<f32>().to_vec::<f32>().unwrap()
        );
    }

    #[test]
    fn merging_gives_the_adapted_outputs() {
        let device = Default::default();
        let layer = linear(6, 5, DType::F32);
        let lora = adapter(6, 5, 3);
        let x = Tensor::<B, 2>::random([4, 6], Distribution::Default, &device);
        let adapted_out = lora.apply(layer.forward(x.clone()), x.clone());
        let merged = lora.merge_into(layer.clone());
        assert_eq!(merged.weight.id, layer.weight.id);
        merged
            .forward(x)
            .into_data()
            .assert_approx_eq::<f32>(&adapted_out.into_data(), Tolerance::absolute(1e-5));
    }

    #[test]
    fn gradients_reach_a_and_b_but_not_a_frozen_base() {
        type AB = Autodiff<B>;
        let device = Default::default();
        let w = Tensor::<AB, 2>::random([4, 3], Distribution::Default, &device);
        let base = Linear {
            weight: Param::from_tensor(w),
            bias: None,
        }
        .no_grad();
        let a = Tensor::<B, 2>::random([4, 2], Distribution::Default, &device);
        let b = Tensor::<B, 2>::random([2, 3], Distribution::Default, &device);
        let lora = LoraAdapter::<AB>::from_data(a.into_data(), b.into_data(), 1.0, 0.0, &device);
        let x = Tensor::<AB, 2>::random([5, 4], Distribution::Default, &device);
        let grads = lora.apply(base.forward(x.clone()), x).sum().backward();
        assert!(base.weight.grad(&grads).is_none());
        assert!(lora.lora_a.grad(&grads).is_some());
        assert!(lora.lora_b.grad(&grads).is_some());
    }
}
