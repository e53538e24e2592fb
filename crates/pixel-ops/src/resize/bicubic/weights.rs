//! The bicubic weights: Keys' kernel and the fixed-point [`Kernel`] of one separable pass, computed
//! exactly as Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` do. Every code path (portable and
//! AVX2) reads its weights from here, which is what keeps them bit-identical.

/// Fractional bits of the fixed-point weights (Pillow: `32 - 8 - 2`).
pub(super) const PRECISION_BITS: u32 = 22;
/// Rounding offset added to every sum (one half in fixed point).
pub(super) const HALF: i32 = 1 << (PRECISION_BITS - 1);
/// Filter support of the bicubic kernel, in source pixels at scale 1.
const SUPPORT: f64 = 2.0;

/// Keys' cubic convolution kernel with `a = -0.5`, evaluated with Pillow's operation order.
#[inline]
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Fixed-point weights of one separable pass: output sample `i` reads source samples
/// `start[i] .. start[i] + len[i]` with weights `weights[i * ksize ..][.. len[i]]`.
#[derive(Debug, Clone)]
pub(super) struct Kernel {
    ksize: usize,
    pub(super) start: Vec<usize>,
    pub(super) len: Vec<usize>,
    weights: Vec<i32>,
}

impl Kernel {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the whole source range `[0, in_size)`.
    pub(super) fn new(in_size: u32, out_size: u32) -> Kernel {
        let out_n = out_size as usize;
        // Pillow computes `(double)(in1 - in0) / outSize` with float box edges; whole numbers are exact.
        let scale = f64::from(in_size) / f64::from(out_size);
        let filterscale = scale.max(1.0);
        let support = SUPPORT * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let inv_filterscale = 1.0 / filterscale;
        let mut start = Vec::with_capacity(out_n);
        let mut len = Vec::with_capacity(out_n);
        let mut weights = vec![0i32; out_n * ksize];
        let mut w = vec![0f64; ksize];
        for xx in 0..out_n {
            let center = (xx as f64 + 0.5) * scale;
            // C's `(int)` truncates toward zero; negatives are clamped to 0 right after either way.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(i64::from(in_size));
            let n = (xmax - xmin).clamp(0, ksize as i64) as usize;
            let mut sum = 0.0;
            for (x, wx) in w.iter_mut().enumerate().take(n) {
                let v = bicubic(((x as i64 + xmin) as f64 - center + 0.5) * inv_filterscale);
                *wx = v;
                sum += v;
            }
            let row = &mut weights[xx * ksize..(xx + 1) * ksize];
            for (dst, &v) in row.iter_mut().zip(&w[..n]) {
                let v = if sum != 0.0 { v / sum } else { v };
                let scaled = v * f64::from(1u32 << PRECISION_BITS);
                // `(int)(±0.5 + x)`: round half away from zero via truncation.
                *dst = if v < 0.0 {
                    (scaled - 0.5) as i32
                } else {
                    (scaled + 0.5) as i32
                };
            }
            start.push(xmin as usize);
            len.push(n);
        }
        Kernel {
            ksize,
            start,
            len,
            weights,
        }
    }

    #[inline]
    pub(super) fn taps(&self, i: usize) -> (usize, &[i32]) {
        let off = i * self.ksize;
        (self.start[i], &self.weights[off..off + self.len[i]])
    }
}

/// A fixed-point sum (rounding offset included) to its `u8` sample.
#[inline]
pub(super) fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(10u32, 7u32), (7, 10), (1000, 3), (3, 1000), (1, 5)] {
            let k = Kernel::new(i, o);
            for xx in 0..o as usize {
                let (_, w) = k.taps(xx);
                let s: i64 = w.iter().map(|&v| i64::from(v)).sum();
                assert!(
                    (s - (1 << PRECISION_BITS)).abs() <= w.len() as i64,
                    "{i}->{o} sample {xx}: {s}"
                );
            }
        }
    }
}
