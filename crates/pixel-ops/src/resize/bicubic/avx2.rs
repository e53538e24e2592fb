//! AVX2 versions of the passes. The vertical pass is the portable loop compiled with AVX2 enabled
//! (it autovectorises well). The horizontal pass is written with intrinsics: per output pixel, four
//! taps at a time, source bytes are shuffled into 16-bit lanes `[R_t, R_t+1, G_t, G_t+1, B_t, B_t+1,
//! 0, 0]` and multiplied with `pmaddwd`. A 22-bit weight does not fit in 16 bits, so each weight is
//! split exactly as `k = hi * 2^11 + lo` (`lo` in `[0, 2^11)`): `Σ p*k = 2^11 Σ p*hi + Σ p*lo`, two
//! exact integer sums, so the result equals the scalar `i32` arithmetic bit for bit. Torchvision's
//! weights are `int16` already: they go in whole (`HKernel::single`), one `pmaddwd` per group.
//!
//! Everything here requires AVX2 at run time; the caller (`HorizontalSimd` and `vertical_dispatch` in
//! the parent module) checks for it before calling in.

use std::arch::x86_64::*;

use super::weights::Kernel;

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
    /// Rounding offset and shift of the kernel (22 bits for Pillow, per axis for torchvision).
    half: i32,
    precision: u32,
    /// Every weight fits in `i16` (torchvision's): the `hi` vectors hold the whole weights, the `lo`
    /// vectors are zero and skipped.
    single: bool,
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
            half: k.half(),
            precision: k.precision,
            single: (0..n_out).all(|xx| k.taps(xx).1.iter().all(|&w| i16::try_from(w).is_ok())),
        };
        let single = hk.single;
        for xx in 0..n_out {
            let (_, w) = k.taps(xx);
            let groups = w.len().div_ceil(4);
            hk.first_group.push(hk.coeffs.len() / 2);
            hk.groups.push(groups);
            hk.max_groups = hk.max_groups.max(groups);
            for g in 0..groups {
                let tap = |t: usize| w.get(g * 4 + t).copied().unwrap_or(0);
                let split = |v: i32| {
                    if single {
                        (v as i16, 0)
                    } else {
                        ((v >> LO_BITS) as i16, (v & ((1 << LO_BITS) - 1)) as i16)
                    }
                };
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

/// Horizontal pass over rows of `in_w` RGB pixels (see the module docs).
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
    let half = _mm256_set1_epi32(hk.half);
    let shift = _mm_cvtsi32_si128(hk.precision as i32);
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
                    shift,
                );
                let cd = reduce_pair(
                    accumulate(&padded, hk, xx + 2, mask),
                    accumulate(&padded, hk, xx + 3, mask),
                    half,
                    shift,
                );
                store_quad(&mut row_out, xx, ab, cd, compact);
            }
            store_tail(&padded, hk, &mut row_out, out_w, mask, half, shift);
            d0.copy_from_slice(&row_out[..out_w * 3]);
            break;
        };
        padded2[..row_len].copy_from_slice(s1);
        for xx in (0..out_w / 4).map(|q| q * 4) {
            let [a0, a1] = accumulate2(&padded, &padded2, hk, xx, mask);
            let [b0, b1] = accumulate2(&padded, &padded2, hk, xx + 1, mask);
            let ab0 = reduce_pair(a0, b0, half, shift);
            let ab1 = reduce_pair(a1, b1, half, shift);
            let [c0, c1] = accumulate2(&padded, &padded2, hk, xx + 2, mask);
            let [e0, e1] = accumulate2(&padded, &padded2, hk, xx + 3, mask);
            store_quad(
                &mut row_out,
                xx,
                ab0,
                reduce_pair(c0, e0, half, shift),
                compact,
            );
            store_quad(
                &mut row_out2,
                xx,
                ab1,
                reduce_pair(c1, e1, half, shift),
                compact,
            );
        }
        store_tail(&padded, hk, &mut row_out, out_w, mask, half, shift);
        store_tail(&padded2, hk, &mut row_out2, out_w, mask, half, shift);
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
    shift: __m128i,
) {
    for xx in out_w / 4 * 4..out_w {
        let a = accumulate(padded, hk, xx, mask);
        let v = reduce_pair(a, a, half, shift);
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
        // SAFETY: each `[i16; 16]` is 32 bytes; unaligned load.
        let khi = unsafe { _mm256_loadu_si256(c[0].as_ptr().cast()) };
        h0 = _mm256_add_epi32(h0, _mm256_madd_epi16(v0, khi));
        h1 = _mm256_add_epi32(h1, _mm256_madd_epi16(v1, khi));
        if !hk.single {
            // SAFETY: as above.
            let klo = unsafe { _mm256_loadu_si256(c[1].as_ptr().cast()) };
            l0 = _mm256_add_epi32(l0, _mm256_madd_epi16(v0, klo));
            l1 = _mm256_add_epi32(l1, _mm256_madd_epi16(v1, klo));
        }
    }
    if hk.single {
        return [h0, h1];
    }
    [combine(h0, l0), combine(h1, l1)]
}

/// Reduces the lane-spread sums of two output pixels to their final values before packing:
/// lanes `[A_r, A_g, A_b, 0 | B_r, B_g, B_b, 0]` (plus `half`, arithmetic shift right by `shift`).
#[inline]
#[target_feature(enable = "avx2")]
fn reduce_pair(a: __m256i, b: __m256i, half: __m256i, shift: __m128i) -> __m256i {
    let sum = _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(a, b),
        _mm256_permute2x128_si256::<0x31>(a, b),
    );
    _mm256_sra_epi32(_mm256_add_epi32(sum, half), shift)
}

/// `hi * 2^11 + lo`, lane by lane: the exact `Σ pixel * weight` spread over lanes. Shifting before
/// the cross-lane sum is exact (all values stay far inside `i32`) and halves the shuffles.
#[inline]
#[target_feature(enable = "avx2")]
fn combine(hi: __m256i, lo: __m256i) -> __m256i {
    _mm256_add_epi32(_mm256_slli_epi32::<LO_BITS>(hi), lo)
}

/// The exact sum of output pixel `xx`, still spread over lanes (see [`combine`]; whole `i16` weights need
/// no combining).
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
        // SAFETY: each `[i16; 16]` is 32 bytes; unaligned load.
        let khi = unsafe { _mm256_loadu_si256(c[0].as_ptr().cast()) };
        acc_hi = _mm256_add_epi32(acc_hi, _mm256_madd_epi16(v, khi));
        if !hk.single {
            // SAFETY: as above.
            let klo = unsafe { _mm256_loadu_si256(c[1].as_ptr().cast()) };
            acc_lo = _mm256_add_epi32(acc_lo, _mm256_madd_epi16(v, klo));
        }
    }
    if hk.single {
        return acc_hi;
    }
    combine(acc_hi, acc_lo)
}

/// The portable vertical pass compiled with AVX2 enabled (it autovectorises well).
#[target_feature(enable = "avx2")]
pub(super) fn vertical_rows(
    src: &[u8],
    row_len: usize,
    dst: &mut [u8],
    first_row: usize,
    kernel: &Kernel,
) {
    super::portable::vertical_rows(src, row_len, dst, first_row, kernel)
}
