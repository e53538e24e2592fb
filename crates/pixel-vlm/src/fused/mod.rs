//! Fused forward and backward operations for the CPU backend: SiLU-gated products, RMSNorm, softmax over
//! the last dimension, the log-probability of target tokens, permutations into a contiguous layout, and
//! matrix products (batched, and linear layers with their bias) whose output `gemm` writes into a buffer
//! that is never zero-filled or copied (`Flex`'s own product does both before `gemm` writes it).
//!
//! # Why
//!
//! burn 0.21 builds these from primitive operations: softmax is max / subtract / exp / sum / divide, and
//! under `Autodiff` each of those records a node whose backward is one or two more passes (burn-autodiff has
//! no softmax backward of its own); RMSNorm is seven operations, SiLU a sigmoid and a product whose backward
//! recomputes the sigmoid. On `Flex` each pass is a separate, single-threaded loop, and `exp` and `sigmoid`
//! are scalar. For the CPU demo's model, where products are small, those passes take about as long as the
//! matrix products (`docs/performance.md`, "pixel-vlm: training step (CPU)").
//!
//! Here each operation is one kernel forward and one kernel backward (`fused/kernels/`): a single pass over
//! its rows, on two threads when the tensor is large, with a vectorizable `exp`. On `Autodiff<Flex>` each
//! is one autodiff node (burn's backward-operation API) whose state is what its backward reads: the
//! inputs, or the output for softmax, and per-row statistics.
//!
//! # Where it applies
//!
//! On `Flex` and `Autodiff<Flex>` (no checkpointing or burn's balanced checkpointing), for f32 tensors. Every
//! other backend or dtype runs the composite version, which is also the reference the tests compare
//! against. The model code calls the functions here whatever its backend.
//!
//! [`set_fused`] (or the environment variable [`FUSED_ENV`]`=off`) turns the fused kernels off for the
//! whole process, e.g. to compare the two in a benchmark.

#[cfg(feature = "flex")]
mod kernels;

#[cfg(feature = "flex")]
mod flex;

use std::sync::atomic::{AtomicU8, Ordering};

use burn::nn::Linear;
use burn::tensor::activation::{log_softmax, silu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};

/// Name of the environment variable read when [`set_fused`] was not called: `off`, `0` or `false` runs the
/// composite operations everywhere; anything else, or nothing, uses the fused kernels where they apply.
pub const FUSED_ENV: &str = "PIXEL_VLM_FUSED";

const UNSET: u8 = 0;
const ON: u8 = 1;
const OFF: u8 = 2;

static MODE: AtomicU8 = AtomicU8::new(UNSET);

/// Turns the fused kernels on or off for every model in the process from now on (overrides [`FUSED_ENV`]).
pub fn set_fused(on: bool) {
    MODE.store(if on { ON } else { OFF }, Ordering::Relaxed);
}

/// Whether the fused kernels are on: the last [`set_fused`], else [`FUSED_ENV`] (read once), else on.
pub fn fused() -> bool {
    let mut value = MODE.load(Ordering::Relaxed);
    if value == UNSET {
        let from_env = if crate::env_flag::says_off(FUSED_ENV) {
            OFF
        } else {
            ON
        };
        value = match MODE.compare_exchange(UNSET, from_env, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => from_env,
            Err(set) => set,
        };
    }
    value == ON
}

/// Whether the fused kernels run for `B` (they are on, and `B` is a backend they handle).
#[cfg(feature = "flex")]
fn active<B: Backend>() -> bool {
    fused() && flex::handles::<B>()
}

/// `lhs @ rhs` by the fused product where it applies (f32 on `Flex` or `Autodiff<Flex>`, both operands
/// with the same leading dimensions, each contiguous or a view with non-negative strides); the operands
/// back otherwise, for burn's product. The result is burn's up to the order of the sums (`gemm` in both).
///
/// # Shapes
/// - `lhs`: `[.., m, k]`, `rhs`: `[.., k, n]`
/// - output: `[.., m, n]`
#[cfg_attr(not(feature = "flex"), allow(clippy::extra_unused_type_parameters))]
pub(crate) fn try_matmul<B: Backend, const D: usize>(
    lhs: Tensor<B, D>,
    rhs: Tensor<B, D>,
) -> Result<Tensor<B, D>, (Tensor<B, D>, Tensor<B, D>)> {
    #[cfg(feature = "flex")]
    if active::<B>() && lhs.dtype() == DType::F32 && rhs.dtype() == DType::F32 {
        return flex::matmul(lhs, rhs);
    }
    Err((lhs, rhs))
}

/// `x @ W + b` of burn's `Linear` by the fused product (the bias written into the output before the
/// product adds to it) where it applies (f32 on `Flex` or `Autodiff<Flex>`); `x` back otherwise.
///
/// # Shapes
/// - `x`: `[.., d_in]`, the layer's weight `[d_in, d_out]`
/// - output: `[.., d_out]`
pub(crate) fn try_linear<B: Backend, const D: usize>(
    layer: &Linear<B>,
    x: Tensor<B, D>,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    #[cfg(feature = "flex")]
    if active::<B>() && x.dtype() == DType::F32 {
        let dims = x.dims();
        let d_in = dims[D - 1];
        let rows: usize = dims[..D - 1].iter().product();
        let weight = layer.weight.val();
        let [w_in, d_out] = weight.dims();
        if w_in != d_in {
            return Err(x);
        }
        let flat = x.reshape([rows, d_in]);
        let out = match &layer.bias {
            Some(bias) => flex::linear(flat, weight, bias.val()).map_err(|(x, _, _)| x),
            None => flex::matmul(flat, weight).map_err(|(x, _)| x),
        };
        let mut shape = dims;
        shape[D - 1] = d_out;
        return match out {
            Ok(out) => Ok(out.reshape(shape)),
            Err(flat) => Err(flat.reshape(dims)),
        };
    }
    #[cfg(not(feature = "flex"))]
    let _ = layer;
    Err(x)
}

/// `silu(gate) * up` with the activation in f32 and rounded once to the inputs' dtype (as torch's fused
/// kernel does in bf16).
///
/// # Shapes
/// `gate` and `up` of one shape; the output has it too.
pub fn silu_mul<B: Backend, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    let (gate, up) = if active::<B>()
        && gate.dtype() == DType::F32
        && up.dtype() == DType::F32
        && gate.dims() == up.dims()
    {
        match flex::silu_mul(gate, up) {
            Ok(out) => return out,
            Err(inputs) => inputs,
        }
    } else {
        (gate, up)
    };
    composite_silu_mul(gate, up)
}

/// [`silu_mul`] from burn's operations (what runs where the fused kernel does not).
pub(crate) fn composite_silu_mul<B: Backend, const D: usize>(
    gate: Tensor<B, D>,
    up: Tensor<B, D>,
) -> Tensor<B, D> {
    let dtype = gate.dtype();
    silu(gate.cast(DType::F32)).cast(dtype) * up
}

/// RMSNorm as transformers' `Qwen2RMSNorm` computes it: `gamma * (x / sqrt(mean(x²) + eps))`, with the
/// statistics and the normalisation in f32 and the result cast back to the input dtype before the scale.
///
/// # Shapes
/// - `x`: `[.., d_model]`, `gamma`: `[d_model]`
/// - output: the shape of `x`
pub fn rms_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    gamma: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    let (x, gamma) = if active::<B>()
        && x.dtype() == DType::F32
        && gamma.dtype() == DType::F32
        && x.dims()[D - 1] == gamma.dims()[0]
    {
        match flex::rms_norm(x, gamma, eps as f32) {
            Ok(out) => return out,
            Err(inputs) => inputs,
        }
    } else {
        (x, gamma)
    };
    composite_rms_norm(x, gamma, eps)
}

/// [`rms_norm`] from burn's operations.
pub(crate) fn composite_rms_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    gamma: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    let dtype = x.dtype();
    let x = x.cast(DType::F32);
    let inv_rms = (x.clone().square().mean_dim(D - 1) + eps).sqrt().recip();
    (x * inv_rms).cast(dtype) * gamma.unsqueeze()
}

/// Softmax over `dim` (fused over the last dimension of f32 tensors).
pub fn softmax_dim<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    let x = if active::<B>() && dim == D - 1 && x.dtype() == DType::F32 {
        match flex::softmax_scaled_masked(x, 1.0, None) {
            Ok(out) => return out,
            Err((x, _)) => x,
        }
    } else {
        x
    };
    softmax(x, dim)
}

/// `x.permute(axes)`; on the fused backends laid out contiguously, forward and backward (one copy that
/// moves whole rows where the last dimension stays last, instead of burn's element-by-element walk of a
/// permuted view when a later reshape or element-wise operation needs it contiguous).
///
/// # Panics
/// If `axes` is not a permutation of `0..D` (a programming error of the caller, as in burn's `permute`).
pub fn permute<B: Backend, const D: usize>(x: Tensor<B, D>, axes: [usize; D]) -> Tensor<B, D> {
    let mut seen = [false; D];
    for &a in &axes {
        assert!(a < D && !seen[a], "permute: {axes:?} is not a permutation");
        seen[a] = true;
    }
    #[cfg(feature = "flex")]
    let x = if active::<B>() && x.dtype() == DType::F32 {
        match flex::permute(x, axes) {
            Ok(out) => return out,
            Err(x) => x,
        }
    } else {
        x
    };
    x.permute(axes)
}

/// Softmax over the last dimension of `x * scale + mask` (attention probabilities from raw scores), in f32
/// whatever `x`'s dtype: `(x * scale)` in `x`'s dtype, widened, plus the mask, as transformers' eager
/// attention computes it. The mask gets no gradient (it is a constant of the batch).
///
/// # Shapes
/// - `x`: `[.., n]`
/// - `mask`: f32, `n` last and, in every other dimension, `x`'s size or 1 (broadcast)
/// - output: the shape of `x`, f32
pub fn softmax_scaled_masked<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    scale: f64,
    mask: Option<Tensor<B, D>>,
) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    let (x, mask) = if active::<B>()
        && x.dtype() == DType::F32
        && mask.as_ref().is_none_or(|m| {
            let (xd, md) = (x.dims(), m.dims());
            m.dtype() == DType::F32
                && md[D - 1] == xd[D - 1]
                && xd.iter().zip(&md).all(|(&a, &b)| b == a || b == 1)
        }) {
        match flex::softmax_scaled_masked(x, scale as f32, mask) {
            Ok(out) => return out,
            Err(inputs) => inputs,
        }
    } else {
        (x, mask)
    };
    let scores = (x * scale).cast(DType::F32);
    let scores = match mask {
        Some(mask) => scores + mask,
        None => scores,
    };
    softmax(scores, D - 1)
}

/// `log_softmax(logits / temperature)[target]` per row, f32.
///
/// # Shapes
/// - `logits`: `[rows, vocab]`
/// - `targets`: `rows` ids, each below `vocab` (the caller checks)
/// - `temperature`: `rows` positive temperatures, or none (1; the caller checks)
/// - output: `[rows]`
pub(crate) fn target_logprobs<B: Backend>(
    logits: Tensor<B, 2>,
    targets: &[u32],
    temperature: Option<&[f32]>,
) -> Tensor<B, 1> {
    #[cfg(feature = "flex")]
    let logits = if active::<B>() && logits.dtype() == DType::F32 {
        let ids: Vec<usize> = targets.iter().map(|&t| t as usize).collect();
        let inv: Option<Vec<f32>> = temperature.map(|t| t.iter().map(|t| 1.0 / t).collect());
        match flex::target_logprobs(logits, &ids, inv.as_deref()) {
            Ok(out) => return out,
            Err(logits) => logits,
        }
    } else {
        logits
    };
    composite_target_logprobs(logits, targets, temperature)
}

/// [`target_logprobs`] from burn's operations.
pub(crate) fn composite_target_logprobs<B: Backend>(
    logits: Tensor<B, 2>,
    targets: &[u32],
    temperature: Option<&[f32]>,
) -> Tensor<B, 1> {
    let [rows, _] = logits.dims();
    let device = logits.device();
    let logits = logits.cast(DType::F32);
    let logits = match temperature {
        Some(t) => {
            let t = Tensor::<B, 2>::from_data(
                TensorData::new(t.to_vec(), [rows, 1]),
                (&device, DType::F32),
            );
            logits / t
        }
        None => logits,
    };
    let ids: Vec<i64> = targets.iter().map(|&t| i64::from(t)).collect();
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [rows, 1]), &device);
    log_softmax(logits, 1).gather(1, ids).reshape([rows])
}

#[cfg(all(test, feature = "flex"))]
mod tests;
