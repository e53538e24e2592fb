//! Pillow-exact bicubic resizing of 8-bit RGB images.
//!
//! This follows the algorithm of Pillow 13.0's `libImaging/Resample.c` (`ImagingResample` with the
//! `BICUBIC` filter, 8 bits per channel), written anew for Rust:
//!
//! * the kernel is Keys' cubic with `a = -0.5`, support 2, widened by the scale factor when shrinking
//!   (so downscaling averages, like a box prefilter);
//! * per output sample the weights are computed in `f64`, normalized to sum 1, then turned into
//!   fixed-point `i32` with 22 fractional bits (rounded half away from zero);
//! * a sample is `clamp((2^21 + Σ pixel * weight) >> 22, 0, 255)` (arithmetic shift: floor);
//! * the image is resized in two separable passes, each rounded to `u8`. Pillow 13.0 runs the vertical
//!   pass first when the height shrinks by more than twice as many pixels as the width does
//!   (`in_h - out_h > 0 && in_h - out_h > 2 * (in_w - out_w)`), else horizontal first; when the
//!   horizontal pass runs first it only processes the source rows the vertical pass will read. The pass
//!   order changes results by up to ~24 levels, which is why [`pass_order`] is part of the contract.
//!
//! Integer arithmetic is exact, so the order of the sums does not matter: the loops are arranged to
//! vectorise (the vertical pass walks whole rows; an AVX2 build of both loops is picked at run time on
//! x86-64) and large images are split across threads with rayon. The result is identical on every path.

use image::RgbImage;
use rayon::prelude::*;

use crate::{Error, Result};

/// Fractional bits of the fixed-point weights (Pillow: `32 - 8 - 2`).
const PRECISION_BITS: u32 = 22;
/// Rounding offset added to every sum (one half in fixed point).
const HALF: i32 = 1 << (PRECISION_BITS - 1);
/// Filter support of the bicubic kernel, in source pixels at scale 1.
const SUPPORT: f64 = 2.0;
/// Below this many output bytes a pass runs on one thread (thread hand-off costs more than it saves).
const PARALLEL_MIN_BYTES: usize = 96 * 1024;

/// Which separable pass Pillow runs first for a given resize.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PassOrder {
    /// Resize the width first, then the height (Pillow's classic order).
    HorizontalFirst,
    /// Resize the height first, then the width (Pillow 13.0, when the height shrinks much more).
    VerticalFirst,
}

/// The pass order Pillow 13.0 uses to resize `in_w x in_h` to `out_w x out_h`.
pub fn pass_order(in_w: u32, in_h: u32, out_w: u32, out_h: u32) -> PassOrder {
    let dy = i64::from(in_h) - i64::from(out_h);
    let dx = i64::from(in_w) - i64::from(out_w);
    if dy > 0 && dy > dx * 2 {
        PassOrder::VerticalFirst
    } else {
        PassOrder::HorizontalFirst
    }
}

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
struct Kernel {
    ksize: usize,
    start: Vec<usize>,
    len: Vec<usize>,
    weights: Vec<i32>,
}

impl Kernel {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the whole source range `[0, in_size)`.
    fn new(in_size: u32, out_size: u32) -> Kernel {
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
    fn taps(&self, i: usize) -> (usize, &[i32]) {
        let off = i * self.ksize;
        (self.start[i], &self.weights[off..off + self.len[i]])
    }
}

#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Horizontal pass over `rows` source rows of `in_w` RGB pixels into rows of `kernel.start.len()` pixels.
#[inline(always)]
fn horizontal_rows(src: &[u8], in_w: usize, dst: &mut [u8], kernel: &Kernel) {
    let out_w = kernel.start.len();
    for (src_row, dst_row) in src
        .chunks_exact(in_w * 3)
        .zip(dst.chunks_exact_mut(out_w * 3))
    {
        for (xx, out) in dst_row.chunks_exact_mut(3).enumerate() {
            let (s, k) = kernel.taps(xx);
            let window = &src_row[s * 3..(s + k.len()) * 3];
            let (mut r, mut g, mut b) = (HALF, HALF, HALF);
            for (px, &kw) in window.chunks_exact(3).zip(k) {
                r = r.wrapping_add(i32::from(px[0]).wrapping_mul(kw));
                g = g.wrapping_add(i32::from(px[1]).wrapping_mul(kw));
                b = b.wrapping_add(i32::from(px[2]).wrapping_mul(kw));
            }
            out[0] = clip8(r);
            out[1] = clip8(g);
            out[2] = clip8(b);
        }
    }
}

/// Bytes of a row processed at once by the vertical pass (the accumulators stay in registers).
const VCHUNK: usize = 64;

/// Vertical pass: output rows `first_row ..` of `dst` (rows of `row_len` bytes) from `src`.
#[inline(always)]
fn vertical_rows(src: &[u8], row_len: usize, dst: &mut [u8], first_row: usize, kernel: &Kernel) {
    for (i, dst_row) in dst.chunks_exact_mut(row_len).enumerate() {
        let (s, k) = kernel.taps(first_row + i);
        let rows = &src[s * row_len..(s + k.len()) * row_len];
        let mut x = 0;
        while x + VCHUNK <= row_len {
            let mut acc = [HALF; VCHUNK];
            for (t, &kw) in k.iter().enumerate() {
                let line = &rows[t * row_len + x..t * row_len + x + VCHUNK];
                for (a, &p) in acc.iter_mut().zip(line) {
                    *a = a.wrapping_add(i32::from(p).wrapping_mul(kw));
                }
            }
            for (o, &a) in dst_row[x..x + VCHUNK].iter_mut().zip(&acc) {
                *o = clip8(a);
            }
            x += VCHUNK;
        }
        for (xi, o) in dst_row.iter_mut().enumerate().skip(x) {
            let mut a = HALF;
            for (t, &kw) in k.iter().enumerate() {
                a = a.wrapping_add(i32::from(rows[t * row_len + xi]).wrapping_mul(kw));
            }
            *o = clip8(a);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! AVX2 versions of the passes. The vertical pass is the portable loop compiled with AVX2 enabled
    //! (it autovectorises well). The horizontal pass is written with intrinsics: per output pixel, four
    //! taps at a time, source bytes are shuffled into 16-bit lanes `[R_t, R_t+1, G_t, G_t+1, B_t, B_t+1,
    //! 0, 0]` and multiplied with `pmaddwd`. A 22-bit weight does not fit in 16 bits, so each weight is
    //! split exactly as `k = hi * 2^11 + lo` (`lo` in `[0, 2^11)`): `Σ p*k = 2^11 Σ p*hi + Σ p*lo`, two
    //! exact integer sums, so the result equals the scalar `i32` arithmetic bit for bit.
    use std::arch::x86_64::*;

    use super::{HALF, Kernel, PRECISION_BITS};

    /// Bits of the low part of a split weight.
    const LO_BITS: i32 = 11;

    /// Horizontal weights laid out for the AVX2 loop.
    pub(super) struct HKernel {
        /// Source pixel of the first tap, per output pixel.
        start: Vec<usize>,
        /// Index of the first group in `coeffs`, per output pixel (groups of four taps).
        first_group: Vec<usize>,
        /// Number of groups, per output pixel.
        groups: Vec<usize>,
        /// Per group: the `hi` vector then the `lo` vector, 16 lanes each, laid out as the shuffled
        /// source (`[k0, k1, k0, k1, k0, k1, 0, 0 | k2, k3, k2, k3, k2, k3, 0, 0]`).
        coeffs: Vec<[i16; 16]>,
        /// Largest number of groups of any output pixel.
        max_groups: usize,
    }

    impl HKernel {
        pub(super) fn new(k: &Kernel) -> HKernel {
            let n_out = k.start.len();
            let mut hk = HKernel {
                start: k.start.clone(),
                first_group: Vec::with_capacity(n_out),
                groups: Vec::with_capacity(n_out),
                coeffs: Vec::new(),
                max_groups: 0,
            };
            for xx in 0..n_out {
                let (_, w) = k.taps(xx);
                let groups = w.len().div_ceil(4);
                hk.first_group.push(hk.coeffs.len() / 2);
                hk.groups.push(groups);
                hk.max_groups = hk.max_groups.max(groups);
                for g in 0..groups {
                    let tap = |t: usize| w.get(g * 4 + t).copied().unwrap_or(0);
                    let split = |v: i32| ((v >> LO_BITS) as i16, (v & ((1 << LO_BITS) - 1)) as i16);
                    let mut hi = [0i16; 16];
                    let mut lo = [0i16; 16];
                    for (lane, t) in [(0usize, 0usize), (8, 2)] {
                        let (h0, l0) = split(tap(t));
                        let (h1, l1) = split(tap(t + 1));
                        for c in 0..3 {
                            hi[lane + 2 * c] = h0;
                            hi[lane + 2 * c + 1] = h1;
                            lo[lane + 2 * c] = l0;
                            lo[lane + 2 * c + 1] = l1;
                        }
                    }
                    hk.coeffs.push(hi);
                    hk.coeffs.push(lo);
                }
            }
            hk
        }
    }

    /// Horizontal pass over rows of `in_w` RGB pixels (see the module docs of `avx2`).
    #[target_feature(enable = "avx2")]
    pub(super) fn horizontal_rows(src: &[u8], in_w: usize, dst: &mut [u8], hk: &HKernel) {
        let out_w = hk.start.len();
        let row_len = in_w * 3;
        // Room for the last group's 16-byte load past the row end (its extra taps weigh 0).
        let mut padded = vec![0u8; (in_w + hk.max_groups * 4 + 8) * 3 + 16];
        let mut row_out = vec![0u8; out_w * 3 + 16];
        let compact = _mm_setr_epi8(
            0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -128, -128, -128, -128,
        );
        const Z: i8 = -128; // pshufb: zero the byte
        let mask = _mm256_setr_epi8(
            0, Z, 3, Z, 1, Z, 4, Z, 2, Z, 5, Z, Z, Z, Z, Z, //
            6, Z, 9, Z, 7, Z, 10, Z, 8, Z, 11, Z, Z, Z, Z, Z,
        );
        let half = _mm256_set1_epi32(HALF);
        let mut padded2 = padded.clone();
        let mut row_out2 = row_out.clone();
        let mut src_rows = src.chunks_exact(row_len);
        let mut dst_rows = dst.chunks_exact_mut(out_w * 3);
        // Two rows per step share the weight loads and the per-pixel bookkeeping.
        while let (Some(s0), Some(d0)) = (src_rows.next(), dst_rows.next()) {
            padded[..row_len].copy_from_slice(s0);
            let Some((s1, d1)) = src_rows.next().zip(dst_rows.next()) else {
                // A last single row.
                for xx in (0..out_w / 4).map(|q| q * 4) {
                    let ab = reduce_pair(
                        accumulate(&padded, hk, xx, mask),
                        accumulate(&padded, hk, xx + 1, mask),
                        half,
                    );
                    let cd = reduce_pair(
                        accumulate(&padded, hk, xx + 2, mask),
                        accumulate(&padded, hk, xx + 3, mask),
                        half,
                    );
                    store_quad(&mut row_out, xx, ab, cd, compact);
                }
                store_tail(&padded, hk, &mut row_out, out_w, mask, half);
                d0.copy_from_slice(&row_out[..out_w * 3]);
                break;
            };
            padded2[..row_len].copy_from_slice(s1);
            for xx in (0..out_w / 4).map(|q| q * 4) {
                let [a0, a1] = accumulate2(&padded, &padded2, hk, xx, mask);
                let [b0, b1] = accumulate2(&padded, &padded2, hk, xx + 1, mask);
                let ab0 = reduce_pair(a0, b0, half);
                let ab1 = reduce_pair(a1, b1, half);
                let [c0, c1] = accumulate2(&padded, &padded2, hk, xx + 2, mask);
                let [e0, e1] = accumulate2(&padded, &padded2, hk, xx + 3, mask);
                store_quad(&mut row_out, xx, ab0, reduce_pair(c0, e0, half), compact);
                store_quad(&mut row_out2, xx, ab1, reduce_pair(c1, e1, half), compact);
            }
            store_tail(&padded, hk, &mut row_out, out_w, mask, half);
            store_tail(&padded2, hk, &mut row_out2, out_w, mask, half);
            d0.copy_from_slice(&row_out[..out_w * 3]);
            d1.copy_from_slice(&row_out2[..out_w * 3]);
        }
    }

    /// Packs four reduced pixels (`ab` = pixels `xx, xx+1`, `cd` = `xx+2, xx+3`) to 12 bytes and stores
    /// them with one 16-byte store at pixel `xx` of `row_out` (the next quad overwrites the spare bytes).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn store_quad(row_out: &mut [u8], xx: usize, ab: __m256i, cd: __m256i, compact: __m128i) {
        // Lanes: [A C | B D] as i16, then as u8 in each lane's first 8 bytes.
        let v = _mm256_packus_epi16(_mm256_packs_epi32(ab, cd), _mm256_setzero_si256());
        // Dwords A (0), B (4), C (1), D (5) to the bottom, then drop every fourth byte.
        let v = _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 0, 0, 0, 0));
        let v = _mm_shuffle_epi8(_mm256_castsi256_si128(v), compact);
        let at = xx * 3;
        assert!(at + 16 <= row_out.len());
        // SAFETY: `at + 16 <= row_out.len()`, checked just above.
        unsafe { _mm_storeu_si128(row_out.as_mut_ptr().add(at).cast(), v) };
    }

    /// The last `out_w % 4` pixels of a row, one at a time.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn store_tail(
        padded: &[u8],
        hk: &HKernel,
        row_out: &mut [u8],
        out_w: usize,
        mask: __m256i,
        half: __m256i,
    ) {
        for xx in out_w / 4 * 4..out_w {
            let a = accumulate(padded, hk, xx, mask);
            let v = reduce_pair(a, a, half);
            let v = _mm256_packus_epi16(_mm256_packs_epi32(v, v), v);
            let px = (_mm_cvtsi128_si32(_mm256_castsi256_si128(v)) as u32).to_le_bytes();
            row_out[xx * 3..xx * 3 + 3].copy_from_slice(&px[..3]);
        }
    }

    /// [`accumulate`] for the same output pixel of two rows, sharing the weight loads.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn accumulate2(p0: &[u8], p1: &[u8], hk: &HKernel, xx: usize, mask: __m256i) -> [__m256i; 2] {
        let s = hk.start[xx];
        let first = hk.first_group[xx];
        let z = _mm256_setzero_si256();
        let (mut h0, mut l0, mut h1, mut l1) = (z, z, z, z);
        for g in 0..hk.groups[xx] {
            let off = (s + g * 4) * 3;
            assert!(off + 16 <= p0.len() && off + 16 <= p1.len());
            // SAFETY: checked just above (always true, see `accumulate`).
            let (v0, v1) = unsafe {
                (
                    _mm_loadu_si128(p0.as_ptr().add(off).cast()),
                    _mm_loadu_si128(p1.as_ptr().add(off).cast()),
                )
            };
            let v0 = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(v0), mask);
            let v1 = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(v1), mask);
            let c = &hk.coeffs[(first + g) * 2..(first + g) * 2 + 2];
            // SAFETY: each `[i16; 16]` is 32 bytes; unaligned loads.
            let (khi, klo) = unsafe {
                (
                    _mm256_loadu_si256(c[0].as_ptr().cast()),
                    _mm256_loadu_si256(c[1].as_ptr().cast()),
                )
            };
            h0 = _mm256_add_epi32(h0, _mm256_madd_epi16(v0, khi));
            l0 = _mm256_add_epi32(l0, _mm256_madd_epi16(v0, klo));
            h1 = _mm256_add_epi32(h1, _mm256_madd_epi16(v1, khi));
            l1 = _mm256_add_epi32(l1, _mm256_madd_epi16(v1, klo));
        }
        [combine(h0, l0), combine(h1, l1)]
    }

    /// Reduces the lane-spread sums of two output pixels to their final values before packing:
    /// lanes `[A_r, A_g, A_b, 0 | B_r, B_g, B_b, 0]`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn reduce_pair(a: __m256i, b: __m256i, half: __m256i) -> __m256i {
        let sum = _mm256_add_epi32(
            _mm256_permute2x128_si256::<0x20>(a, b),
            _mm256_permute2x128_si256::<0x31>(a, b),
        );
        _mm256_srai_epi32::<{ PRECISION_BITS as i32 }>(_mm256_add_epi32(sum, half))
    }

    /// `hi * 2^11 + lo`, lane by lane: the exact `Σ pixel * weight` spread over lanes. Shifting before
    /// the cross-lane sum is exact (all values stay far inside `i32`) and halves the shuffles.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn combine(hi: __m256i, lo: __m256i) -> __m256i {
        _mm256_add_epi32(_mm256_slli_epi32::<LO_BITS>(hi), lo)
    }

    /// The exact sum of output pixel `xx`, still spread over lanes (see [`combine`]).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn accumulate(padded: &[u8], hk: &HKernel, xx: usize, mask: __m256i) -> __m256i {
        let s = hk.start[xx];
        let first = hk.first_group[xx];
        let mut acc_hi = _mm256_setzero_si256();
        let mut acc_lo = _mm256_setzero_si256();
        for g in 0..hk.groups[xx] {
            let off = (s + g * 4) * 3;
            assert!(off + 16 <= padded.len());
            // SAFETY: checked just above (always true: `s + 4 * groups <= in_w + 4 * max_groups`,
            // and `padded` has `(in_w + 4 * max_groups + 8) * 3 + 16` bytes).
            let v = unsafe { _mm_loadu_si128(padded.as_ptr().add(off).cast()) };
            let v = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(v), mask);
            let c = &hk.coeffs[(first + g) * 2..(first + g) * 2 + 2];
            // SAFETY: each `[i16; 16]` is 32 bytes; unaligned loads.
            let (khi, klo) = unsafe {
                (
                    _mm256_loadu_si256(c[0].as_ptr().cast()),
                    _mm256_loadu_si256(c[1].as_ptr().cast()),
                )
            };
            acc_hi = _mm256_add_epi32(acc_hi, _mm256_madd_epi16(v, khi));
            acc_lo = _mm256_add_epi32(acc_lo, _mm256_madd_epi16(v, klo));
        }
        combine(acc_hi, acc_lo)
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn vertical_rows(
        src: &[u8],
        row_len: usize,
        dst: &mut [u8],
        first_row: usize,
        kernel: &Kernel,
    ) {
        super::vertical_rows(src, row_len, dst, first_row, kernel)
    }
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Runs the horizontal pass on the best code path for this CPU.
fn horizontal_dispatch(
    src: &[u8],
    in_w: usize,
    dst: &mut [u8],
    kernel: &Kernel,
    simd: &HorizontalSimd,
) {
    #[cfg(target_arch = "x86_64")]
    if let HorizontalSimd::Avx2(hk) = simd {
        // SAFETY: `HorizontalSimd::Avx2` is only built after detecting AVX2 at run time.
        unsafe { avx2::horizontal_rows(src, in_w, dst, hk) };
        return;
    }
    let _ = simd;
    horizontal_rows(src, in_w, dst, kernel)
}

/// Weights prepared for a vectorised horizontal pass, when the CPU has one.
enum HorizontalSimd {
    /// The portable loop.
    Portable,
    /// AVX2 intrinsics (x86-64 with AVX2 detected at run time).
    #[cfg(target_arch = "x86_64")]
    Avx2(avx2::HKernel),
}

impl HorizontalSimd {
    fn new(kernel: &Kernel) -> HorizontalSimd {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            return HorizontalSimd::Avx2(avx2::HKernel::new(kernel));
        }
        let _ = kernel;
        HorizontalSimd::Portable
    }
}

fn vertical_dispatch(
    src: &[u8],
    row_len: usize,
    dst: &mut [u8],
    first_row: usize,
    kernel: &Kernel,
) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 (checked at run time just above).
        unsafe { avx2::vertical_rows(src, row_len, dst, first_row, kernel) };
        return;
    }
    vertical_rows(src, row_len, dst, first_row, kernel)
}

/// Rows per parallel task so that each task has a useful amount of work.
fn rows_per_task(out_rows: usize, row_bytes: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let total = out_rows * row_bytes;
    if total < PARALLEL_MIN_BYTES || threads == 1 {
        return out_rows.max(1);
    }
    out_rows.div_ceil(threads * 4).max(1)
}

/// Horizontal pass: `src` holds rows of `in_w` pixels; fills `dst` with as many rows of
/// `kernel.start.len()` pixels.
fn horizontal_pass(src: &[u8], in_w: usize, kernel: &Kernel, dst: &mut [u8]) {
    let out_row = kernel.start.len() * 3;
    let rows = dst.len() / out_row;
    let chunk = rows_per_task(rows, out_row);
    let simd = HorizontalSimd::new(kernel);
    dst.par_chunks_mut(chunk * out_row)
        .enumerate()
        .for_each(|(c, d)| {
            let first = c * chunk;
            let n = d.len() / out_row;
            horizontal_dispatch(
                &src[first * in_w * 3..(first + n) * in_w * 3],
                in_w,
                d,
                kernel,
                &simd,
            );
        });
}

/// Vertical pass: `src` holds rows of `row_len` bytes; fills `dst` with `kernel.start.len()` rows.
fn vertical_pass(src: &[u8], row_len: usize, kernel: &Kernel, dst: &mut [u8]) {
    let out_rows = kernel.start.len();
    let chunk = rows_per_task(out_rows, row_len);
    dst.par_chunks_mut(chunk * row_len)
        .enumerate()
        .for_each(|(c, d)| {
            vertical_dispatch(src, row_len, d, c * chunk, kernel);
        });
}

/// Largest intermediate buffer kept per thread between calls (bigger ones are freed after use).
const SCRATCH_KEEP: usize = 16 << 20;

thread_local! {
    /// The intermediate image between the two passes, reused: a fresh multi-megabyte allocation per
    /// resize costs page faults comparable to a pass (Pillow keeps a block cache for the same reason).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on a scratch buffer of `len` bytes (contents unspecified).
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH.with(|cell| {
        let mut buf = cell.take();
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let r = f(&mut buf[..len]);
        if buf.capacity() <= SCRATCH_KEEP {
            cell.replace(buf);
        }
        r
    })
}

/// Most bytes one resize may allocate for an image or for one axis' weights (a guard against absurd target
/// sizes, which would otherwise abort the process on allocation failure).
pub const MAX_RESIZE_BYTES: u64 = 1 << 32;

/// Refuses resizes whose output, intermediate image or weight tables would exceed [`MAX_RESIZE_BYTES`].
fn check_budget(in_w: u32, in_h: u32, width: u32, height: u32) -> Result<()> {
    let (iw, ih, ow, oh) = (
        u64::from(in_w),
        u64::from(in_h),
        u64::from(width),
        u64::from(height),
    );
    // Products of two u32 and a small factor fit in u128; weights take `out * ksize * 4` bytes.
    let weights =
        |i: u64, o: u64| u128::from(o) * u128::from((2 * i).div_ceil(o).max(2) * 2 + 3) * 4;
    let area = |a: u64, b: u64| u128::from(a) * u128::from(b) * 3;
    let bytes = [
        area(ow, oh),
        area(ow, ih),
        area(iw, oh),
        weights(iw, ow),
        weights(ih, oh),
    ];
    let need = bytes.into_iter().max().unwrap_or(0);
    if need > u128::from(MAX_RESIZE_BYTES) {
        let bytes = u64::try_from(need).unwrap_or(u64::MAX);
        return Err(Error::ResizeTooLarge {
            width,
            height,
            bytes,
            limit: MAX_RESIZE_BYTES,
        });
    }
    Ok(())
}

/// Resizes `image` to `width x height` exactly as Pillow 13.0's `Image.resize((width, height),
/// Image.BICUBIC)` does for an RGB image (bit-exact; see the module docs). Same size: a copy.
///
/// # Errors
/// [`Error::ZeroSize`] if the source or the target has a zero side; [`Error::ResizeTooLarge`] if the
/// resize would allocate more than [`MAX_RESIZE_BYTES`] for one buffer.
pub fn resize_bicubic(image: &RgbImage, width: u32, height: u32) -> Result<RgbImage> {
    let (in_w, in_h) = image.dimensions();
    if in_w == 0 || in_h == 0 {
        return Err(Error::ZeroSize {
            width: in_w,
            height: in_h,
        });
    }
    if width == 0 || height == 0 {
        return Err(Error::ZeroSize { width, height });
    }
    if (in_w, in_h) == (width, height) {
        return Ok(image.clone());
    }
    check_budget(in_w, in_h, width, height)?;
    let need_h = width != in_w;
    let need_v = height != in_h;
    let src = image.as_raw();
    let (iw, ih) = (in_w as usize, in_h as usize);
    let (ow, oh) = (width as usize, height as usize);
    let mut out = vec![0u8; ow * oh * 3];
    if !need_v {
        horizontal_pass(src, iw, &Kernel::new(in_w, width), &mut out);
    } else if !need_h {
        vertical_pass(src, iw * 3, &Kernel::new(in_h, height), &mut out);
    } else {
        let kh = Kernel::new(in_w, width);
        let mut kv = Kernel::new(in_h, height);
        match pass_order(in_w, in_h, width, height) {
            PassOrder::HorizontalFirst => {
                // Only the source rows the vertical pass reads; shift its window to match.
                let first = kv.start.first().copied().unwrap_or(0);
                let last = match (kv.start.last(), kv.len.last()) {
                    (Some(s), Some(l)) => s + l,
                    _ => ih,
                };
                for s in &mut kv.start {
                    *s -= first;
                }
                with_scratch((last - first) * ow * 3, |tmp| {
                    horizontal_pass(&src[first * iw * 3..last * iw * 3], iw, &kh, tmp);
                    vertical_pass(tmp, ow * 3, &kv, &mut out);
                });
            }
            PassOrder::VerticalFirst => with_scratch(iw * oh * 3, |tmp| {
                vertical_pass(src, iw * 3, &kv, tmp);
                horizontal_pass(tmp, iw, &kh, &mut out);
            }),
        }
    }
    RgbImage::from_raw(width, height, out).ok_or(Error::ZeroSize { width, height })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_order_matches_pillow_13() {
        // Measured with Pillow 13.0, which picks the pass order by size (docs/performance.md).
        assert_eq!(pass_order(300, 200, 308, 196), PassOrder::VerticalFirst);
        assert_eq!(pass_order(1000, 750, 644, 476), PassOrder::HorizontalFirst);
        assert_eq!(pass_order(10, 10, 20, 20), PassOrder::HorizontalFirst);
    }

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

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_pixel(37, 23, image::Rgb([200, 17, 99]));
        for (w, h) in [(5, 5), (80, 11), (11, 80), (37, 50), (100, 7)] {
            let out = resize_bicubic(&img, w, h).unwrap();
            assert_eq!(out.dimensions(), (w, h));
            assert!(out.pixels().all(|p| p.0 == [200, 17, 99]), "{w}x{h}");
        }
    }

    /// The AVX2 horizontal pass equals the portable one on sizes that exercise every tap count.
    #[test]
    fn simd_horizontal_pass_matches_portable() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for (in_w, out_w) in [
            (1u32, 5u32),
            (5, 1),
            (61, 97),
            (97, 61),
            (804, 812),
            (300, 37),
            (37, 300),
            (1000, 7),
        ] {
            let rows = 3;
            let src: Vec<u8> = (0..in_w as usize * 3 * rows).map(|_| rnd() as u8).collect();
            let k = Kernel::new(in_w, out_w);
            let mut portable = vec![0u8; out_w as usize * 3 * rows];
            horizontal_rows(&src, in_w as usize, &mut portable, &k);
            let mut fast = vec![0u8; out_w as usize * 3 * rows];
            horizontal_dispatch(&src, in_w as usize, &mut fast, &k, &HorizontalSimd::new(&k));
            assert_eq!(portable, fast, "{in_w} -> {out_w}");
        }
    }

    #[test]
    fn absurd_sizes_are_errors_not_aborts() {
        let img = RgbImage::new(4, 4);
        assert!(matches!(
            resize_bicubic(&img, u32::MAX, u32::MAX),
            Err(Error::ResizeTooLarge { .. })
        ));
        assert!(matches!(
            resize_bicubic(&img, 100_000, 100_000),
            Err(Error::ResizeTooLarge { .. })
        ));
        let wide = RgbImage::new(3_000_000, 1);
        assert!(resize_bicubic(&wide, 1, 1).is_ok());
    }

    #[test]
    fn zero_sizes_are_errors() {
        let img = RgbImage::new(4, 4);
        assert!(matches!(
            resize_bicubic(&img, 0, 4),
            Err(Error::ZeroSize { .. })
        ));
        assert!(matches!(
            resize_bicubic(&RgbImage::new(0, 3), 4, 4),
            Err(Error::ZeroSize { .. })
        ));
    }
}
