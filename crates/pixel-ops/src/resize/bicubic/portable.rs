//! The portable passes: plain Rust loops over `i32` accumulators, arranged so the compiler vectorises
//! them (the vertical pass walks whole rows in chunks of [`VCHUNK`] bytes). They are the reference
//! for the AVX2 code and run wherever AVX2 is missing; the AVX2 vertical pass is this same loop
//! compiled with AVX2 enabled.

use super::weights::Kernel;

/// Horizontal pass over `rows` source rows of `in_w` RGB pixels into rows of `kernel.start.len()` pixels.
#[inline(always)]
pub(super) fn horizontal_rows(src: &[u8], in_w: usize, dst: &mut [u8], kernel: &Kernel) {
    let out_w = kernel.start.len();
    let half = kernel.half();
    for (src_row, dst_row) in src
        .chunks_exact(in_w * 3)
        .zip(dst.chunks_exact_mut(out_w * 3))
    {
        for (xx, out) in dst_row.chunks_exact_mut(3).enumerate() {
            let (s, k) = kernel.taps(xx);
            let window = &src_row[s * 3..(s + k.len()) * 3];
            let (mut r, mut g, mut b) = (half, half, half);
            for (px, &kw) in window.chunks_exact(3).zip(k) {
                r = r.wrapping_add(i32::from(px[0]).wrapping_mul(kw));
                g = g.wrapping_add(i32::from(px[1]).wrapping_mul(kw));
                b = b.wrapping_add(i32::from(px[2]).wrapping_mul(kw));
            }
            out[0] = kernel.clip8(r);
            out[1] = kernel.clip8(g);
            out[2] = kernel.clip8(b);
        }
    }
}

/// Bytes of a row processed at once by the vertical pass (the accumulators stay in registers).
const VCHUNK: usize = 64;

/// Vertical pass: output rows `first_row ..` of `dst` (rows of `row_len` bytes) from `src`.
#[inline(always)]
pub(super) fn vertical_rows(
    src: &[u8],
    row_len: usize,
    dst: &mut [u8],
    first_row: usize,
    kernel: &Kernel,
) {
    let half = kernel.half();
    for (i, dst_row) in dst.chunks_exact_mut(row_len).enumerate() {
        let (s, k) = kernel.taps(first_row + i);
        let rows = &src[s * row_len..(s + k.len()) * row_len];
        let mut x = 0;
        while x + VCHUNK <= row_len {
            let mut acc = [half; VCHUNK];
            for (t, &kw) in k.iter().enumerate() {
                let line = &rows[t * row_len + x..t * row_len + x + VCHUNK];
                for (a, &p) in acc.iter_mut().zip(line) {
                    *a = a.wrapping_add(i32::from(p).wrapping_mul(kw));
                }
            }
            for (o, &a) in dst_row[x..x + VCHUNK].iter_mut().zip(&acc) {
                *o = kernel.clip8(a);
            }
            x += VCHUNK;
        }
        for (xi, o) in dst_row.iter_mut().enumerate().skip(x) {
            let mut a = half;
            for (t, &kw) in k.iter().enumerate() {
                a = a.wrapping_add(i32::from(rows[t * row_len + xi]).wrapping_mul(kw));
            }
            *o = kernel.clip8(a);
        }
    }
}
