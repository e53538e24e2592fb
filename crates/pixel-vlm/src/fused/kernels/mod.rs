//! The fused operations on plain row-major f32 slices: forward and backward of SiLU-gated products,
//! RMSNorm, softmax over the last dimension and target log-probabilities, each one pass over its rows
//! (two threads through rayon where the tensor is large enough to pay for the split).
//!
//! Every kernel takes `n`, the length of the last dimension; a slice's length is a multiple of it (the
//! callers check shapes). Sums run in eight interleaved partial sums (the order differs from a sequential
//! sum by rounding only), which lets the compiler keep them in vector registers.

mod layout;
mod matmul;
mod norm;
mod silu;
mod softmax;

pub(crate) use layout::permute;
pub(crate) use matmul::{Strided, column_sums, matmul};
pub(crate) use norm::{rms_norm, rms_norm_backward};
pub(crate) use silu::{silu_mul, silu_mul_backward};
pub(crate) use softmax::{
    softmax_scaled_backward, softmax_scaled_masked, target_logprobs, target_logprobs_backward,
};

use rayon::prelude::*;

/// Below this many elements a kernel runs on the calling thread.
const PARALLEL_MIN: usize = 1 << 15;

/// Rows handed to one rayon task: about 16 k elements, at least one row.
fn rows_per_task(n: usize) -> usize {
    (16_384 / n.max(1)).max(1)
}

/// `exp(x)` in f32, branch-free so that loops over it vectorize: `2^k * p(r)` with `k = round(x / ln 2)`,
/// `r = x - k ln 2` (ln 2 split in two for an exact product) and the classic degree-7 minimax polynomial
/// of single-precision `expf` implementations on `|r| <= ln 2 / 2`. Within 2 ulp of the exact value over
/// the normal range (checked against f64 in the tests); 0 below `-87` (where the exact value is below
/// 1.7e-38), `e^88` above 88 (these kernels only exponentiate non-positive shifted values and `-x` of a
/// sigmoid's input, where that saturation is harmless); NaN stays NaN.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding and subtracting it rounds a float of magnitude < 2^22 to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(-87.0, 88.0);
    let shifted = xc * LOG2E + ROUND;
    let k = shifted - ROUND;
    let r = xc - k * LN2_HI - k * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e = (p * r) * r + r + 1.0;
    // `k` is an integer in [-126, 127], and the low bits of `shifted` hold it exactly: the exponent bits of
    // 2^k without a float-to-int conversion (whose saturating semantics keep a loop from vectorizing).
    let k_int = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(k_int.wrapping_add(127) << 23);
    let out = e * scale;
    if x.is_nan() {
        x
    } else if x < -87.0 {
        0.0
    } else {
        out
    }
}

/// The logistic sigmoid through [`exp`].
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// Sum of a slice in eight interleaved partial sums.
#[inline]
pub(crate) fn sum(v: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = v.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] += c[i];
        }
    }
    let mut total = acc.iter().sum::<f32>();
    for &x in tail {
        total += x;
    }
    total
}

/// Dot product in eight interleaved partial sums.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut total = acc.iter().sum::<f32>();
    for (x, y) in ta.iter().zip(tb) {
        total += x * y;
    }
    total
}

/// Largest element (NaN if any is NaN; `-inf` for an empty slice).
#[inline]
fn max(v: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = v.chunks_exact(8);
    let tail = chunks.remainder();
    let mut nan = false;
    for c in chunks {
        for i in 0..8 {
            nan |= c[i].is_nan();
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    let mut m = acc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for &x in tail {
        nan |= x.is_nan();
        m = m.max(x);
    }
    if nan { f32::NAN } else { m }
}

/// Runs `f(first_row, out_rows, ..)` over blocks of rows of `out` (row length `n`), in parallel when large.
fn for_row_blocks<F>(out: &mut [f32], n: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    if n == 0 {
        return;
    }
    let block = rows_per_task(n) * n;
    if out.len() < PARALLEL_MIN {
        f(0, out);
    } else {
        out.par_chunks_mut(block)
            .enumerate()
            .for_each(|(i, chunk)| f(i * block / n, chunk));
    }
}

/// A new output of `len` values in rows of `n`, row `r` written by `f(r, row)` (in blocks of rows, see
/// [`for_row_blocks`]).
fn map_rows<F>(len: usize, n: usize, f: F) -> Vec<f32>
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    let mut out = vec![0.0f32; len];
    for_row_blocks(&mut out, n, |first, block| {
        for (i, row) in block.chunks_exact_mut(n).enumerate() {
            f(first + i, row);
        }
    });
    out
}

/// Two outputs of the same shape, written block by block (see [`for_row_blocks`]).
fn for_row_blocks2<F>(a: &mut [f32], b: &mut [f32], n: usize, f: F)
where
    F: Fn(usize, &mut [f32], &mut [f32]) + Sync + Send,
{
    if n == 0 {
        return;
    }
    let block = rows_per_task(n) * n;
    if a.len() < PARALLEL_MIN {
        f(0, a, b);
    } else {
        a.par_chunks_mut(block)
            .zip(b.par_chunks_mut(block))
            .enumerate()
            .for_each(|(i, (ca, cb))| f(i * block / n, ca, cb));
    }
}

#[cfg(test)]
mod tests;
