//! The fused operations on plain row-major f32 slices: forward and backward of SiLU-gated products,
//! RMSNorm, softmax over the last dimension and target log-probabilities, each one pass over its rows
//! (two threads through rayon where the tensor is large enough to pay for the split).
//!
//! Every kernel takes `n`, the length of the last dimension; a slice's length is a multiple of it (the
//! callers check shapes). Sums run in eight interleaved partial sums (the order differs from a sequential
//! sum by rounding only), which lets the compiler keep them in vector registers.

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

/// `silu(gate) * up`, element-wise.
pub(crate) fn silu_mul(gate: &[f32], up: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0f32; gate.len()];
    // Element-wise: any block length works; 4,096 keeps blocks cache-sized.
    for_row_blocks(&mut out, 4096, |start, o| {
        let start = start * 4096;
        let g = &gate[start..start + o.len()];
        let u = &up[start..start + o.len()];
        for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
            *o = g * sigmoid(g) * u;
        }
    });
    out
}

/// Gradients of `silu(gate) * up` given the output's gradient: `(d gate, d up)`, either skipped when not
/// wanted.
pub(crate) fn silu_mul_backward(
    gate: &[f32],
    up: &[f32],
    grad: &[f32],
    want: (bool, bool),
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let len = gate.len();
    let mut dg = vec![0.0f32; if want.0 { len } else { 0 }];
    let mut du = vec![0.0f32; if want.1 { len } else { 0 }];
    match want {
        (true, true) => for_row_blocks2(&mut dg, &mut du, 4096, |start, dg, du| {
            let start = start * 4096;
            let range = start..start + dg.len();
            let (g, u, gr) = (&gate[range.clone()], &up[range.clone()], &grad[range]);
            for i in 0..dg.len() {
                let s = sigmoid(g[i]);
                let silu = g[i] * s;
                dg[i] = gr[i] * u[i] * (s + silu * (1.0 - s));
                du[i] = gr[i] * silu;
            }
        }),
        (true, false) => for_row_blocks(&mut dg, 4096, |start, dg| {
            let start = start * 4096;
            let range = start..start + dg.len();
            let (g, u, gr) = (&gate[range.clone()], &up[range.clone()], &grad[range]);
            for i in 0..dg.len() {
                let s = sigmoid(g[i]);
                dg[i] = gr[i] * u[i] * (s + g[i] * s * (1.0 - s));
            }
        }),
        (false, true) => for_row_blocks(&mut du, 4096, |start, du| {
            let start = start * 4096;
            let range = start..start + du.len();
            let (g, gr) = (&gate[range.clone()], &grad[range]);
            for i in 0..du.len() {
                du[i] = gr[i] * (g[i] * sigmoid(g[i]));
            }
        }),
        (false, false) => {}
    }
    (want.0.then_some(dg), want.1.then_some(du))
}

/// RMSNorm over rows of length `n`: `y = x * r * w` with `r = 1 / sqrt(mean(x²) + eps)` per row. Returns
/// `y` and the `r` of every row.
pub(crate) fn rms_norm(x: &[f32], w: &[f32], eps: f32, n: usize) -> (Vec<f32>, Vec<f32>) {
    let rows = x.len().checked_div(n).unwrap_or(0);
    let mut y = vec![0.0f32; x.len()];
    let mut r = vec![0.0f32; rows];
    if n == 0 {
        return (y, r);
    }
    let inv_n = 1.0 / n as f32;
    let per_task = rows_per_task(n);
    let work = |(block, (y, r)): (usize, (&mut [f32], &mut [f32]))| {
        let first = block * per_task;
        for (i, (y, r)) in y.chunks_exact_mut(n).zip(r.iter_mut()).enumerate() {
            let xr = &x[(first + i) * n..(first + i + 1) * n];
            let inv = 1.0 / (dot(xr, xr) * inv_n + eps).sqrt();
            *r = inv;
            for ((y, &x), &w) in y.iter_mut().zip(xr).zip(w) {
                *y = x * inv * w;
            }
        }
    };
    if x.len() < PARALLEL_MIN {
        y.chunks_mut(per_task * n)
            .zip(r.chunks_mut(per_task))
            .enumerate()
            .for_each(work);
    } else {
        y.par_chunks_mut(per_task * n)
            .zip(r.par_chunks_mut(per_task))
            .enumerate()
            .for_each(work);
    }
    (y, r)
}

/// Gradients of [`rms_norm`] given `r` from the forward and the output's gradient: `d x` (when wanted) and
/// `d w` (when wanted).
///
/// With `h = x * r`: `d w = sum over rows of (grad * h)`, `d x = r * (grad * w - h * mean(grad * w * h))`.
pub(crate) fn rms_norm_backward(
    x: &[f32],
    w: &[f32],
    r: &[f32],
    grad: &[f32],
    n: usize,
    want: (bool, bool),
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let mut dx = vec![0.0f32; if want.0 { x.len() } else { 0 }];
    if n == 0 {
        return (want.0.then_some(dx), want.1.then(Vec::new));
    }
    let inv_n = 1.0 / n as f32;
    let per_task = rows_per_task(n);
    // Each block of rows returns its partial sum of `grad * h` for `d w`.
    let block_work = |first: usize, rows: usize, dx: Option<&mut [f32]>| -> Vec<f32> {
        let mut dw = vec![0.0f32; if want.1 { n } else { 0 }];
        let mut dx = dx;
        let mut gw = vec![0.0f32; n];
        for i in 0..rows {
            let row = first + i;
            let (xr, gr) = (&x[row * n..(row + 1) * n], &grad[row * n..(row + 1) * n]);
            let inv = r[row];
            if want.1 {
                for ((d, &g), &x) in dw.iter_mut().zip(gr).zip(xr) {
                    *d += g * x * inv;
                }
            }
            if let Some(dx) = dx.as_deref_mut() {
                for ((gw, &g), &w) in gw.iter_mut().zip(gr).zip(w) {
                    *gw = g * w;
                }
                // mean(grad * w * h) = r * mean(grad * w * x)
                let c = dot(&gw, xr) * inv * inv_n;
                let out = &mut dx[i * n..(i + 1) * n];
                for ((o, &gw), &x) in out.iter_mut().zip(&gw).zip(xr) {
                    *o = inv * (gw - x * inv * c);
                }
            }
        }
        dw
    };
    let rows = x.len() / n;
    let add = |mut a: Vec<f32>, b: Vec<f32>| {
        for (a, b) in a.iter_mut().zip(&b) {
            *a += b;
        }
        a
    };
    let partials: Vec<f32> = if want.0 {
        if x.len() < PARALLEL_MIN {
            block_work(0, rows, Some(&mut dx))
        } else {
            dx.par_chunks_mut(per_task * n)
                .enumerate()
                .map(|(b, dx)| block_work(b * per_task, dx.len() / n, Some(dx)))
                .reduce(|| vec![0.0f32; if want.1 { n } else { 0 }], add)
        }
    } else if x.len() < PARALLEL_MIN {
        block_work(0, rows, None)
    } else {
        let blocks = rows.div_ceil(per_task);
        (0..blocks)
            .into_par_iter()
            .map(|b| block_work(b * per_task, per_task.min(rows - b * per_task), None))
            .reduce(|| vec![0.0f32; if want.1 { n } else { 0 }], add)
    };
    (want.0.then_some(dx), want.1.then_some(partials))
}

/// Softmax over rows of length `n`.
pub(crate) fn softmax(x: &[f32], n: usize) -> Vec<f32> {
    softmax_scaled_masked(x, 1.0, None, n)
}

/// Softmax of `x * scale + mask` over rows of length `n`, where row `r` of `x` adds the mask row that
/// starts at `mask.1[r]` in `mask.0` (a mask broadcast over heads is one row per query, shared).
///
/// Callers check that every mask row lies within the mask.
pub(crate) fn softmax_scaled_masked(
    x: &[f32],
    scale: f32,
    mask: Option<(&[f32], &[usize])>,
    n: usize,
) -> Vec<f32> {
    let mut y = vec![0.0f32; x.len()];
    for_row_blocks(&mut y, n, |first, y| {
        for (i, y) in y.chunks_exact_mut(n).enumerate() {
            let row = first + i;
            let xr = &x[row * n..(row + 1) * n];
            match mask {
                Some((mask, starts)) => {
                    let mr = &mask[starts[row]..starts[row] + n];
                    for ((y, &x), &m) in y.iter_mut().zip(xr).zip(mr) {
                        *y = x * scale + m;
                    }
                }
                None if scale != 1.0 => {
                    for (y, &x) in y.iter_mut().zip(xr) {
                        *y = x * scale;
                    }
                }
                None => y.copy_from_slice(xr),
            }
            let m = max(y);
            for y in y.iter_mut() {
                *y = exp(*y - m);
            }
            let inv = 1.0 / sum(y);
            for y in y.iter_mut() {
                *y *= inv;
            }
        }
    });
    y
}

/// Gradient of [`softmax`] from its output `y`: `d x = y * (grad - sum(grad * y))` per row.
pub(crate) fn softmax_backward(y: &[f32], grad: &[f32], n: usize) -> Vec<f32> {
    softmax_scaled_backward(y, grad, 1.0, n)
}

/// Gradient of [`softmax_scaled_masked`] with respect to `x`: `scale * y * (grad - sum(grad * y))`.
pub(crate) fn softmax_scaled_backward(y: &[f32], grad: &[f32], scale: f32, n: usize) -> Vec<f32> {
    let mut dx = vec![0.0f32; y.len()];
    for_row_blocks(&mut dx, n, |first, dx| {
        for (i, dx) in dx.chunks_exact_mut(n).enumerate() {
            let range = (first + i) * n..(first + i + 1) * n;
            let (yr, gr) = (&y[range.clone()], &grad[range]);
            let c = dot(yr, gr);
            if scale == 1.0 {
                for ((d, &y), &g) in dx.iter_mut().zip(yr).zip(gr) {
                    *d = y * (g - c);
                }
            } else {
                for ((d, &y), &g) in dx.iter_mut().zip(yr).zip(gr) {
                    *d = scale * y * (g - c);
                }
            }
        }
    });
    dx
}

/// `log_softmax(z * s)[target]` per row of length `n` (`s` the row's inverse temperature, 1 when absent),
/// and each row's `log(sum(exp(z * s)))`.
///
/// Callers check that every target is below `n`.
pub(crate) fn target_logprobs(
    z: &[f32],
    targets: &[usize],
    inv_temp: Option<&[f32]>,
    n: usize,
) -> (Vec<f32>, Vec<f32>) {
    let rows = targets.len();
    let mut out = vec![0.0f32; rows];
    let mut lse = vec![0.0f32; rows];
    let row = |i: usize| -> (f32, f32) {
        let zr = &z[i * n..(i + 1) * n];
        let s = inv_temp.map_or(1.0, |t| t[i]);
        let m = max(zr) * s;
        let mut acc = [0.0f32; 8];
        let chunks = zr.chunks_exact(8);
        let tail = chunks.remainder();
        for c in chunks {
            for k in 0..8 {
                acc[k] += exp(c[k] * s - m);
            }
        }
        let mut total = acc.iter().sum::<f32>();
        for &v in tail {
            total += exp(v * s - m);
        }
        let l = m + total.ln();
        (zr[targets[i]] * s - l, l)
    };
    let work = |(i, (o, l)): (usize, (&mut f32, &mut f32))| {
        (*o, *l) = row(i);
    };
    if z.len() < PARALLEL_MIN {
        out.iter_mut()
            .zip(lse.iter_mut())
            .enumerate()
            .for_each(work);
    } else {
        out.par_iter_mut()
            .zip(lse.par_iter_mut())
            .enumerate()
            .for_each(work);
    }
    (out, lse)
}

/// Gradient of [`target_logprobs`] with respect to `z`: `grad * s * (onehot(target) - softmax(z * s))` per
/// row, from the forward's `lse`.
pub(crate) fn target_logprobs_backward(
    z: &[f32],
    targets: &[usize],
    inv_temp: Option<&[f32]>,
    lse: &[f32],
    grad: &[f32],
    n: usize,
) -> Vec<f32> {
    let mut dz = vec![0.0f32; z.len()];
    for_row_blocks(&mut dz, n, |first, dz| {
        for (i, dz) in dz.chunks_exact_mut(n).enumerate() {
            let row = first + i;
            let zr = &z[row * n..(row + 1) * n];
            let s = inv_temp.map_or(1.0, |t| t[row]);
            let (g, l) = (grad[row] * s, lse[row]);
            for (d, &z) in dz.iter_mut().zip(zr) {
                *d = -g * exp(z * s - l);
            }
            dz[targets[row]] += g;
        }
    });
    dz
}

/// Copies a row-major tensor of `dims` into the row-major layout of its permutation `axes` (output
/// dimension `i` is input dimension `axes[i]`). Runs along the last output dimension are copied as slices
/// where that is also the input's last dimension.
///
/// Callers check that `axes` is a permutation of `0..dims.len()` and that `x` has `dims`' element count.
pub(crate) fn permute(x: &[f32], dims: &[usize], axes: &[usize]) -> Vec<f32> {
    let rank = dims.len();
    let mut out = vec![0.0f32; x.len()];
    if rank == 0 || x.is_empty() {
        out.copy_from_slice(x);
        return out;
    }
    let mut in_strides = vec![1usize; rank];
    for d in (0..rank.saturating_sub(1)).rev() {
        in_strides[d] = in_strides[d + 1] * dims[d + 1];
    }
    let out_dims: Vec<usize> = axes.iter().map(|&a| dims[a]).collect();
    let strides: Vec<usize> = axes.iter().map(|&a| in_strides[a]).collect();
    let inner = out_dims[rank - 1];
    let inner_stride = strides[rank - 1];
    // One task per block of output rows (all dimensions but the last).
    for_row_blocks(&mut out, inner, |first_row, block| {
        // The input offset of the first row of the block, by the mixed-radix digits of its index.
        let mut digits = vec![0usize; rank - 1];
        let mut rest = first_row;
        for d in (0..rank - 1).rev() {
            digits[d] = rest % out_dims[d];
            rest /= out_dims[d];
        }
        let mut offset: usize = (0..rank - 1).map(|d| digits[d] * strides[d]).sum();
        for row in block.chunks_exact_mut(inner) {
            if inner_stride == 1 {
                row.copy_from_slice(&x[offset..offset + inner]);
            } else {
                for (j, o) in row.iter_mut().enumerate() {
                    *o = x[offset + j * inner_stride];
                }
            }
            // Next row: increment the digits from the right, carrying.
            for d in (0..rank - 1).rev() {
                digits[d] += 1;
                offset += strides[d];
                if digits[d] < out_dims[d] {
                    break;
                }
                offset -= digits[d] * strides[d];
                digits[d] = 0;
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in `[-scale, scale)`.
    fn values(len: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }

    fn close(got: &[f32], want: &[f64], tol: f64) {
        assert_eq!(got.len(), want.len());
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (f64::from(g) - w).abs() <= tol * (1.0 + w.abs()),
                "element {i}: {g} vs {w}"
            );
        }
    }

    #[test]
    fn permute_matches_index_arithmetic() {
        for (dims, axes) in [
            (vec![2usize, 3, 4, 5], vec![0usize, 2, 1, 3]),
            (vec![2, 3, 4, 5], vec![0, 2, 3, 1]),
            (vec![3, 70, 4, 48], vec![0, 2, 1, 3]),
            (vec![6, 7], vec![1, 0]),
            (vec![5], vec![0]),
        ] {
            let len: usize = dims.iter().product();
            let x: Vec<f32> = (0..len).map(|i| i as f32).collect();
            let got = permute(&x, &dims, &axes);
            let rank = dims.len();
            let out_dims: Vec<usize> = axes.iter().map(|&a| dims[a]).collect();
            for (flat, &value) in got.iter().enumerate() {
                // Output index -> input index.
                let mut rest = flat;
                let mut index = vec![0usize; rank];
                for d in (0..rank).rev() {
                    index[axes[d]] = rest % out_dims[d];
                    rest /= out_dims[d];
                }
                let src = index.iter().zip(&dims).fold(0, |acc, (&i, &n)| acc * n + i);
                assert_eq!(value, src as f32, "{dims:?} {axes:?} at {flat}");
            }
        }
    }

    #[test]
    fn exp_is_within_two_ulp_over_the_normal_range() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let want = f64::from(x).exp();
            let got = f64::from(exp(x));
            let ulp = f64::from(f32::EPSILON) * want;
            worst = worst.max((got - want).abs() / ulp);
            x += 0.001_3;
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
    }

    #[test]
    fn exp_saturates_and_keeps_nan() {
        assert_eq!(exp(-88.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-f32::MAX), 0.0);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(100.0).is_finite());
    }

    #[test]
    fn silu_mul_and_its_gradients_match_f64() {
        // Large enough to take the parallel path.
        let len = 40_000;
        let (g, u, gr) = (
            values(len, 1, 12.0),
            values(len, 2, 2.0),
            values(len, 3, 1.0),
        );
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        let out = silu_mul(&g, &u);
        let want: Vec<f64> = (0..len)
            .map(|i| f64::from(g[i]) * sig(f64::from(g[i])) * f64::from(u[i]))
            .collect();
        close(&out, &want, 1e-6);
        let (dg, du) = silu_mul_backward(&g, &u, &gr, (true, true));
        let dg_want: Vec<f64> = (0..len)
            .map(|i| {
                let (x, s) = (f64::from(g[i]), sig(f64::from(g[i])));
                f64::from(gr[i]) * f64::from(u[i]) * (s + x * s * (1.0 - s))
            })
            .collect();
        let du_want: Vec<f64> = (0..len)
            .map(|i| f64::from(gr[i]) * f64::from(g[i]) * sig(f64::from(g[i])))
            .collect();
        close(dg.as_deref().unwrap(), &dg_want, 1e-6);
        close(du.as_deref().unwrap(), &du_want, 1e-6);
        // One gradient alone equals the same gradient of the pair.
        let (dg_only, none) = silu_mul_backward(&g, &u, &gr, (true, false));
        assert!(none.is_none());
        assert_eq!(dg_only, dg);
        let (none, du_only) = silu_mul_backward(&g, &u, &gr, (false, true));
        assert!(none.is_none());
        assert_eq!(du_only, du);
    }

    #[test]
    fn rms_norm_and_its_gradients_match_f64() {
        for (rows, n) in [(3, 5), (400, 96)] {
            let (x, w, gr) = (
                values(rows * n, 4, 3.0),
                values(n, 5, 1.5),
                values(rows * n, 6, 1.0),
            );
            let eps = 1e-6f64;
            let (y, r) = rms_norm(&x, &w, eps as f32, n);
            let mut y_want = Vec::new();
            let mut dx_want = Vec::new();
            let mut dw_want = vec![0.0f64; n];
            for row in 0..rows {
                let xr: Vec<f64> = x[row * n..(row + 1) * n]
                    .iter()
                    .map(|&v| v.into())
                    .collect();
                let g: Vec<f64> = gr[row * n..(row + 1) * n]
                    .iter()
                    .map(|&v| v.into())
                    .collect();
                let inv = 1.0 / (xr.iter().map(|v| v * v).sum::<f64>() / n as f64 + eps).sqrt();
                assert!((f64::from(r[row]) - inv).abs() < 1e-6 * inv);
                // d/dx_j of sum_k g_k w_k x_k inv: inv * g_j w_j - x_j inv^3 / n * sum_k g_k w_k x_k
                let s: f64 = (0..n).map(|k| g[k] * f64::from(w[k]) * xr[k]).sum();
                for j in 0..n {
                    y_want.push(xr[j] * inv * f64::from(w[j]));
                    dx_want.push(inv * g[j] * f64::from(w[j]) - xr[j] * inv.powi(3) / n as f64 * s);
                    dw_want[j] += g[j] * xr[j] * inv;
                }
            }
            close(&y, &y_want, 1e-6);
            let (dx, dw) = rms_norm_backward(&x, &w, &r, &gr, n, (true, true));
            close(dx.as_deref().unwrap(), &dx_want, 1e-5);
            close(dw.as_deref().unwrap(), &dw_want, 1e-4);
            let (none, dw_only) = rms_norm_backward(&x, &w, &r, &gr, n, (false, true));
            assert!(none.is_none());
            close(dw_only.as_deref().unwrap(), &dw_want, 1e-4);
            let (dx_only, none) = rms_norm_backward(&x, &w, &r, &gr, n, (true, false));
            assert!(none.is_none());
            assert_eq!(dx_only, dx);
        }
    }

    #[test]
    fn softmax_and_its_gradient_match_f64_including_masked_entries() {
        for (rows, n) in [(2, 7), (700, 80)] {
            let mut x = values(rows * n, 7, 20.0);
            // Masked entries as transformers writes them (the dtype's minimum), and a fully masked row.
            x[1] = f32::MIN;
            x[n..2 * n].fill(f32::MIN);
            let gr = values(rows * n, 8, 1.0);
            let y = softmax(&x, n);
            let mut y_want = Vec::new();
            let mut dx_want = Vec::new();
            for row in 0..rows {
                let xr: Vec<f64> = x[row * n..(row + 1) * n]
                    .iter()
                    .map(|&v| v.into())
                    .collect();
                let m = xr.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = xr.iter().map(|v| (v - m).exp()).collect();
                let total: f64 = e.iter().sum();
                let p: Vec<f64> = e.iter().map(|v| v / total).collect();
                let c: f64 = (0..n).map(|k| p[k] * f64::from(gr[row * n + k])).sum();
                for k in 0..n {
                    y_want.push(p[k]);
                    dx_want.push(p[k] * (f64::from(gr[row * n + k]) - c));
                }
            }
            close(&y, &y_want, 1e-6);
            assert_eq!(y[1], 0.0);
            let dx = softmax_backward(&y, &gr, n);
            close(&dx, &dx_want, 1e-6);
        }
    }

    #[test]
    fn target_logprobs_and_their_gradient_match_f64() {
        for (rows, n, temp) in [(3, 10, false), (64, 1024, true)] {
            let z = values(rows * n, 9, 8.0);
            let targets: Vec<usize> = (0..rows).map(|i| (i * 7919) % n).collect();
            let inv_temp: Vec<f32> = (0..rows).map(|i| 1.0 / (0.5 + 0.1 * i as f32)).collect();
            let s = temp.then_some(inv_temp.as_slice());
            let gr = values(rows, 10, 1.0);
            let (lp, lse) = target_logprobs(&z, &targets, s, n);
            let dz = target_logprobs_backward(&z, &targets, s, &lse, &gr, n);
            let mut lp_want = Vec::new();
            let mut dz_want = Vec::new();
            for row in 0..rows {
                let t = if temp { f64::from(inv_temp[row]) } else { 1.0 };
                let zr: Vec<f64> = z[row * n..(row + 1) * n]
                    .iter()
                    .map(|&v| f64::from(v) * t)
                    .collect();
                let m = zr.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let l = m + zr.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
                lp_want.push(zr[targets[row]] - l);
                for (k, v) in zr.iter().enumerate() {
                    let onehot = if k == targets[row] { 1.0 } else { 0.0 };
                    dz_want.push(f64::from(gr[row]) * t * (onehot - (v - l).exp()));
                }
            }
            close(&lp, &lp_want, 1e-5);
            close(&dz, &dz_want, 1e-6);
        }
    }
}
