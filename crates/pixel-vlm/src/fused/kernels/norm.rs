//! RMSNorm over rows and its gradients.

use rayon::prelude::*;

use super::{PARALLEL_MIN, dot, rows_per_task};

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
