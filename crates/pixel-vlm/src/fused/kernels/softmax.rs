//! Softmax over rows (scaled, with a broadcast mask) and the log-probabilities of target tokens, with
//! their gradients.

use rayon::prelude::*;

use super::{PARALLEL_MIN, dot, exp, map_rows, max, sum};

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
    map_rows(x.len(), n, |row, y| {
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
    })
}

/// Gradient of [`softmax_scaled_masked`] with respect to `x`: `scale * y * (grad - sum(grad * y))`.
pub(crate) fn softmax_scaled_backward(y: &[f32], grad: &[f32], scale: f32, n: usize) -> Vec<f32> {
    map_rows(y.len(), n, |row, dx| {
        let range = row * n..(row + 1) * n;
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
    })
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
    map_rows(z.len(), n, |row, dz| {
        let zr = &z[row * n..(row + 1) * n];
        let s = inv_temp.map_or(1.0, |t| t[row]);
        let (g, l) = (grad[row] * s, lse[row]);
        for (d, &z) in dz.iter_mut().zip(zr) {
            *d = -g * exp(z * s - l);
        }
        dz[targets[row]] += g;
    })
}
