//! The default CPU backend chosen by the crate features, the CUDA backend, and the precision of f32 matrix
//! products on CUDA.
//!
//! Model code is generic over `B: Backend`; this only names a convenient default for examples, tests and
//! benchmarks: `flex` when that feature is on, else `ndarray`; and, with `cuda`, the CUDA backend.
//!
//! # f32 matrix products on CUDA
//!
//! burn 0.21's CUDA backend (without its `autotune` feature, as built here) sends every matrix product to
//! cubek-matmul's `Strategy::Auto`, which tries a tensor-core kernel first (`SimpleCyclicCmma`) and falls
//! back to a plain FMA kernel (`SimpleUnit`) only where that is unavailable. For f32 operands, the tensor-core
//! kernels stage both operands as TF32 (10 mantissa bits instead of 23) wherever the device lists TF32 as a
//! type, and cubecl-cuda lists it on every CUDA device; burn and cubecl have no setting to turn it off
//! (`docs/performance-cuda.md`, *CUDA parity*, cites the lines). On the tiny parity checkpoints that puts f32
//! logits ~2e-2 away from transformers (which runs f32 products in full f32 by default).
//!
//! [`F32Matmul::Exact`] makes this crate run every f32 product of the model (linear layers, attention,
//! rotary) with cubek's `SimpleUnit` kernel instead: f32 operands, f32 FMA accumulation, on the `Cuda`
//! backend and on `Autodiff<Cuda>` (forward and backward products). It is off by default (the tensor-core
//! path is faster); turn it on with [`set_f32_matmul`] before the model runs, or with the environment
//! variable `PIXEL_VLM_F32_MATMUL=exact` (read once, at the first product). Other backends and dtypes are
//! unaffected: CPU backends compute f32 products in f32 anyway, and bf16/f16 products keep the tensor cores
//! (bf16 operands, f32 accumulation, as torch).

use std::sync::atomic::{AtomicU8, Ordering};

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

#[cfg(feature = "cuda")]
mod cuda_exact;

/// The default CPU backend (`burn::backend::Flex` with the `flex` feature, else `burn::backend::NdArray`).
#[cfg(feature = "flex")]
pub type CpuBackend = burn::backend::Flex;

/// The default CPU backend (`burn::backend::Flex` with the `flex` feature, else `burn::backend::NdArray`).
#[cfg(all(feature = "ndarray", not(feature = "flex")))]
pub type CpuBackend = burn::backend::NdArray<f32>;

/// The CUDA backend (`burn::backend::Cuda`, f32 by default; `Cuda<half::bf16>` computes in bf16).
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Cuda;

/// How f32 matrix products of the model run (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum F32Matmul {
    /// Whatever the backend does: on CUDA, tensor-core kernels with TF32 operands where available.
    #[default]
    Backend,
    /// Full f32 on CUDA (`Cuda` and `Autodiff<Cuda>`): cubek's `SimpleUnit` FMA kernel, f32 accumulation.
    Exact,
}

/// Name of the environment variable read when [`set_f32_matmul`] was not called: `exact`, or `backend` /
/// `tf32` (the default).
pub const F32_MATMUL_ENV: &str = "PIXEL_VLM_F32_MATMUL";

const UNSET: u8 = 0;
const BACKEND: u8 = 1;
const EXACT: u8 = 2;

static MODE: AtomicU8 = AtomicU8::new(UNSET);

/// Sets how f32 matrix products run from now on, for every model in the process (overrides
/// [`F32_MATMUL_ENV`]).
pub fn set_f32_matmul(mode: F32Matmul) {
    let value = match mode {
        F32Matmul::Backend => BACKEND,
        F32Matmul::Exact => EXACT,
    };
    MODE.store(value, Ordering::Relaxed);
}

/// The current setting: the last [`set_f32_matmul`], else [`F32_MATMUL_ENV`] (read once), else
/// [`F32Matmul::Backend`].
///
/// # Panics
/// If the environment variable holds something other than `exact`, `backend` or `tf32`.
pub fn f32_matmul() -> F32Matmul {
    let mut value = MODE.load(Ordering::Relaxed);
    if value == UNSET {
        let from_env = match std::env::var(F32_MATMUL_ENV) {
            Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
                "exact" => EXACT,
                "backend" | "tf32" | "" => BACKEND,
                other => panic!("{F32_MATMUL_ENV}={other}: expected `exact`, `backend` or `tf32`"),
            },
            Err(_) => BACKEND,
        };
        // A concurrent `set_f32_matmul` wins over the environment.
        value = match MODE.compare_exchange(UNSET, from_env, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => from_env,
            Err(set) => set,
        };
    }
    if value == EXACT {
        F32Matmul::Exact
    } else {
        F32Matmul::Backend
    }
}

/// Moves `value` into type `U`, which must be its own type (the callers check `TypeId`s first): how generic
/// model code hands a tensor to a backend-specific kernel (`cuda_exact`, `crate::fused`) without `unsafe`.
#[cfg(any(feature = "flex", feature = "cuda"))]
pub(crate) fn same<T: 'static, U: 'static>(value: T) -> U {
    let mut slot = Some(value);
    (&mut slot as &mut dyn std::any::Any)
        .downcast_mut::<Option<U>>()
        .and_then(Option::take)
        .expect("the same type")
}

/// Whether `B` is burn's CUDA backend or `Autodiff` over it (never without the `cuda` feature).
#[cfg_attr(not(feature = "cuda"), allow(clippy::extra_unused_type_parameters))]
fn on_cuda<B: Backend>() -> bool {
    #[cfg(feature = "cuda")]
    {
        cuda_exact::handles::<B>()
    }
    #[cfg(not(feature = "cuda"))]
    {
        false
    }
}

/// Whether products of `dtype` on `B` take the exact f32 kernel.
fn exact_on<B: Backend>(dtype: DType) -> bool {
    dtype == DType::F32 && on_cuda::<B>() && f32_matmul() == F32Matmul::Exact
}

/// `lhs.matmul(rhs)`, in full f32 on CUDA under [`F32Matmul::Exact`], by the fused product on `Flex`
/// ([`crate::fused`]).
pub(crate) fn matmul<B: Backend, const D: usize>(
    lhs: Tensor<B, D>,
    rhs: Tensor<B, D>,
) -> Tensor<B, D> {
    #[cfg(feature = "cuda")]
    {
        if rhs.dtype() == DType::F32 && exact_on::<B>(lhs.dtype()) {
            return cuda_exact::matmul(lhs, rhs);
        }
    }
    match crate::fused::try_matmul(lhs, rhs) {
        Ok(out) => out,
        Err((lhs, rhs)) => lhs.matmul(rhs),
    }
}

/// `layer.forward(x)` of a burn `Linear` (`x @ W + b`), in full f32 on CUDA under [`F32Matmul::Exact`], by
/// the fused product on `Flex` ([`crate::fused`]).
pub(crate) fn linear_forward<B: Backend, const D: usize>(
    layer: &burn::nn::Linear<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    if !exact_on::<B>(x.dtype()) {
        return match crate::fused::try_linear(layer, x) {
            Ok(out) => out,
            Err(x) => layer.forward(x),
        };
    }
    let dims = x.dims();
    let d_in = dims[D - 1];
    let rows = dims[..D - 1].iter().product::<usize>();
    let weight = layer.weight.val();
    let d_out = weight.dims()[1];
    let mut out = matmul(x.reshape([rows, d_in]), weight);
    if let Some(bias) = &layer.bias {
        out = out + bias.val().unsqueeze();
    }
    let mut shape = dims;
    shape[D - 1] = d_out;
    out.reshape(shape)
}

/// GELU (erf form), `x * (1 + erf(x / sqrt 2)) / 2`.
///
/// burn's `gelu` computes this, but its backward is the backend's `gelu_backward`, and burn 0.21's CUDA backend
/// has none of its own: burn's default is the derivative of the *tanh approximation*
/// (`burn-backend-0.21.0/src/backend/ops/activation.rs:98-127`), up to ~1e-3 off, which put the vision-tower
/// gradients 3e-3 from torch's on CUDA. There the function is composed from `erf`, whose backward is exact;
/// other backends keep burn's `gelu` (`Flex` has an exact `gelu_backward`).
pub(crate) fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if on_cuda::<B>() {
        return (x.clone().div_scalar(std::f64::consts::SQRT_2).erf() + 1.0) * x * 0.5;
    }
    burn::tensor::activation::gelu(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_round_trips() {
        // Only this test in the crate's unit tests touches the setting.
        set_f32_matmul(F32Matmul::Exact);
        assert_eq!(f32_matmul(), F32Matmul::Exact);
        set_f32_matmul(F32Matmul::Backend);
        assert_eq!(f32_matmul(), F32Matmul::Backend);
    }
}
