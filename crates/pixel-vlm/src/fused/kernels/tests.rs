//! The kernels against f64 formulas and index arithmetic.

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
        let y = softmax_scaled_masked(&x, 1.0, None, n);
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
        let dx = softmax_scaled_backward(&y, &gr, 1.0, n);
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

#[test]
fn matmul_rejects_views_outside_their_buffer_and_mismatched_batches() {
    let data = vec![1.0f32; 12];
    let ok = super::Strided::contiguous(&data, 2, 2, 3);
    assert!(ok.fits(2, 3));
    assert!(
        !ok.fits(3, 3),
        "a third row of the second matrix is past the end"
    );
    let b = super::Strided::contiguous(&data, 1, 3, 4);
    assert!(
        super::matmul(&ok, &b, 2, 3, 4, None).is_none(),
        "2 matrices against 1"
    );
    let b2 = super::Strided::contiguous(&data, 2, 3, 2);
    assert!(
        super::matmul(&ok, &b2, 2, 3, 2, Some(&[1.0])).is_none(),
        "bias of the wrong length"
    );
    let huge = super::Strided {
        data: &data,
        starts: vec![0],
        row_stride: usize::MAX / 2,
        col_stride: 1,
    };
    assert!(
        !huge.fits(3, 1),
        "a stride that overflows is rejected, not wrapped"
    );
}

#[test]
fn matmul_with_an_empty_reduction_is_zero_or_the_bias() {
    let none: [f32; 0] = [];
    let a = super::Strided::contiguous(&none, 1, 2, 0);
    let b = super::Strided::contiguous(&none, 1, 0, 3);
    assert_eq!(super::matmul(&a, &b, 2, 0, 3, None), Some(vec![0.0; 6]));
    assert_eq!(
        super::matmul(&a, &b, 2, 0, 3, Some(&[1.0, 2.0, 3.0])),
        Some(vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0])
    );
}

#[test]
fn matmul_of_strided_views_with_a_bias_is_the_naive_product() {
    // a: [2, 3] read as the transpose of a [3, 2] buffer; b: [3, 2] contiguous; bias [2].
    let a_buf = [1.0f32, 4.0, 2.0, 5.0, 3.0, 6.0]; // rows of a^T
    let a = super::Strided::contiguous(&a_buf, 1, 3, 2).transposed();
    let b_buf = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    let b = super::Strided::contiguous(&b_buf, 1, 3, 2);
    let out = super::matmul(&a, &b, 2, 3, 2, Some(&[0.5, -0.5])).unwrap();
    // a = [[1, 2, 3], [4, 5, 6]]; a @ b = [[22, 28], [49, 64]].
    assert_eq!(out, vec![22.5, 27.5, 49.5, 63.5]);
    assert_eq!(super::column_sums(&out, 2), vec![72.0, 91.0]);
}
