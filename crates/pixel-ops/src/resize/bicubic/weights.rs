//! The bicubic weights: Keys' kernel and the fixed-point [`Kernel`] of one separable pass, in two
//! flavours that share everything but their rounding details:
//!
//! * [`Kernel::pillow`]: Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` (22 fractional bits,
//!   Pillow's operation order for the outer lobe of the cubic);
//! * [`Kernel::torchvision`]: PyTorch's `_compute_index_ranges_int16_weights` for the antialiased uint8
//!   bicubic (`aa_filter` with `a = -0.5` in PyTorch's operation order, weights stored as `int16` at the
//!   largest precision, up to 22 bits, under which the axis' largest weight still fits).
//!
//! Every code path (portable and AVX2) reads its weights and its precision from here, which is what keeps
//! them bit-identical.

/// Fractional bits of Pillow's fixed-point weights (`32 - 8 - 2`).
pub(super) const PRECISION_BITS: u32 = 22;
/// Filter support of the bicubic kernel, in source pixels at scale 1.
const SUPPORT: f64 = 2.0;
/// Keys' `a`: -0.5 for Pillow and for PyTorch's antialiased bicubic.
const A: f64 = -0.5;

/// Keys' cubic convolution kernel with `a = -0.5`, evaluated with Pillow's operation order.
#[inline]
fn pillow_cubic(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// The same kernel with PyTorch's operation order (`cubic_convolution1` / `cubic_convolution2` of
/// `ATen/native/UpSample.h`): the outer lobe rounds differently from Pillow's.
#[inline]
fn torch_cubic(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
    } else {
        0.0
    }
}

/// `(int)(±0.5 + v)`: round half away from zero via truncation, as both C sources do.
#[inline]
fn round_away(v: f64) -> i32 {
    if v < 0.0 {
        (v - 0.5) as i32
    } else {
        (v + 0.5) as i32
    }
}

/// Fixed-point weights of one separable pass: output sample `i` reads source samples
/// `start[i] .. start[i] + len[i]` with weights `weights[i * ksize ..][.. len[i]]`; a sum of
/// `pixel * weight` plus [`Kernel::half`] shifted right by `precision` bits is the output.
#[derive(Debug, Clone)]
pub(super) struct Kernel {
    ksize: usize,
    pub(super) start: Vec<usize>,
    pub(super) len: Vec<usize>,
    weights: Vec<i32>,
    /// Fractional bits of `weights`.
    pub(super) precision: u32,
}

/// Normalized `f64` weights of one pass, before they are turned into fixed point.
struct Normalized {
    ksize: usize,
    start: Vec<usize>,
    len: Vec<usize>,
    /// `ksize` per output sample, zero past `len`.
    weights: Vec<f64>,
    /// The largest normalized weight of the samples whose raw weights did not sum to zero.
    max: f64,
}

/// The computation both libraries share (Pillow's `precompute_coeffs`, PyTorch's
/// `_compute_indices_min_size_weights_aa`) over the whole source range `[0, in_size)`.
fn normalized(in_size: u32, out_size: u32, filter: fn(f64) -> f64) -> Normalized {
    let out_n = out_size as usize;
    // Both compute `(double) in / out`; whole numbers are exact.
    let scale = f64::from(in_size) / f64::from(out_size);
    let filterscale = scale.max(1.0);
    let support = SUPPORT * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let inv_filterscale = 1.0 / filterscale;
    let mut start = Vec::with_capacity(out_n);
    let mut len = Vec::with_capacity(out_n);
    let mut weights = vec![0f64; out_n * ksize];
    let mut max = 0f64;
    for (xx, row) in weights.chunks_exact_mut(ksize).enumerate() {
        let center = (xx as f64 + 0.5) * scale;
        // C's `(int)` truncates toward zero; negatives are clamped to 0 right after either way.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(i64::from(in_size));
        let n = (xmax - xmin).clamp(0, ksize as i64) as usize;
        let mut sum = 0.0;
        for (x, wx) in row.iter_mut().enumerate().take(n) {
            let v = filter(((x as i64 + xmin) as f64 - center + 0.5) * inv_filterscale);
            *wx = v;
            sum += v;
        }
        if sum != 0.0 {
            for wx in &mut row[..n] {
                *wx /= sum;
                max = max.max(*wx);
            }
        }
        start.push(xmin as usize);
        len.push(n);
    }
    Normalized {
        ksize,
        start,
        len,
        weights,
        max,
    }
}

impl Kernel {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the whole source range `[0, in_size)`.
    pub(super) fn pillow(in_size: u32, out_size: u32) -> Kernel {
        let n = normalized(in_size, out_size, pillow_cubic);
        let one = f64::from(1u32 << PRECISION_BITS);
        Kernel {
            ksize: n.ksize,
            start: n.start,
            len: n.len,
            weights: n.weights.iter().map(|&w| round_away(w * one)).collect(),
            precision: PRECISION_BITS,
        }
    }

    /// PyTorch's `HelperInterpCubic::compute_index_ranges_int16_weights` with `antialias=True`,
    /// `align_corners=False` and no scale factor (torchvision passes the output size).
    pub(super) fn torchvision(in_size: u32, out_size: u32) -> Kernel {
        let n = normalized(in_size, out_size, torch_cubic);
        // The largest precision (at most 22) at which twice the largest weight still rounds below 2^15.
        let mut precision = 0u32;
        while precision < 22 {
            let next = (0.5 + n.max * f64::from(1u32 << (precision + 1))) as i32;
            if next >= 1 << 15 {
                break;
            }
            precision += 1;
        }
        let one = f64::from(1u32 << precision);
        Kernel {
            ksize: n.ksize,
            start: n.start,
            len: n.len,
            // C stores `(int)` into an `int16_t`: wrap like it (the values fit; see the tests).
            weights: n
                .weights
                .iter()
                .map(|&w| i32::from(round_away(w * one) as i16))
                .collect(),
            precision,
        }
    }

    #[inline]
    pub(super) fn taps(&self, i: usize) -> (usize, &[i32]) {
        let off = i * self.ksize;
        (self.start[i], &self.weights[off..off + self.len[i]])
    }

    /// The rounding offset added to every sum (one half in fixed point).
    #[inline]
    pub(super) fn half(&self) -> i32 {
        1 << (self.precision.max(1) - 1)
    }

    /// A fixed-point sum (rounding offset included) to its `u8` sample: arithmetic shift (floor), clamp.
    #[inline]
    pub(super) fn clip8(&self, acc: i32) -> u8 {
        (acc >> self.precision).clamp(0, 255) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(10u32, 7u32), (7, 10), (1000, 3), (3, 1000), (1, 5)] {
            for k in [Kernel::pillow(i, o), Kernel::torchvision(i, o)] {
                for xx in 0..o as usize {
                    let (_, w) = k.taps(xx);
                    let s: i64 = w.iter().map(|&v| i64::from(v)).sum();
                    assert!(
                        (s - (1 << k.precision)).abs() <= w.len() as i64,
                        "{i}->{o} sample {xx} at {} bits: {s}",
                        k.precision
                    );
                }
            }
        }
    }

    #[test]
    fn torchvision_precision_keeps_weights_in_int16() {
        // Upscaling: the largest weight is ~1, so 2^15 > 2 * w * 2^p forces p = 14.
        assert_eq!(Kernel::torchvision(10, 37).precision, 14);
        // Shrinking 4x spreads the weights: more bits fit.
        let k = Kernel::torchvision(400, 100);
        assert!(k.precision > 14, "{}", k.precision);
        for (i, o) in [(1u32, 9u32), (9, 1), (3000, 7), (7, 3000), (1, 1)] {
            let k = Kernel::torchvision(i, o);
            assert!((1..=22).contains(&k.precision), "{i}->{o}: {}", k.precision);
            assert!(k.weights.iter().all(|&w| w.abs() < 1 << 15), "{i}->{o}");
        }
    }

    #[test]
    fn the_two_cubics_agree_up_to_rounding() {
        for i in 0..=400 {
            let x = f64::from(i) / 100.0 - 2.0;
            assert!((pillow_cubic(x) - torch_cubic(x)).abs() < 1e-15, "{x}");
        }
    }
}
