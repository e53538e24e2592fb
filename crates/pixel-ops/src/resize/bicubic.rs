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
    //! The same loops compiled with AVX2 enabled, so the autovectoriser can use 256-bit integer lanes.
    use super::Kernel;

    #[target_feature(enable = "avx2")]
    pub(super) fn horizontal_rows(src: &[u8], in_w: usize, dst: &mut [u8], kernel: &Kernel) {
        super::horizontal_rows(src, in_w, dst, kernel)
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

fn horizontal_dispatch(src: &[u8], in_w: usize, dst: &mut [u8], kernel: &Kernel) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 (checked at run time just above).
        unsafe { avx2::horizontal_rows(src, in_w, dst, kernel) };
        return;
    }
    horizontal_rows(src, in_w, dst, kernel)
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

/// Horizontal pass: `src` holds `rows` rows of `in_w` pixels; returns `rows` rows of `out_w` pixels.
fn horizontal_pass(src: &[u8], in_w: usize, rows: usize, kernel: &Kernel) -> Vec<u8> {
    let out_row = kernel.start.len() * 3;
    let mut dst = vec![0u8; rows * out_row];
    let chunk = rows_per_task(rows, out_row);
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
            );
        });
    dst
}

/// Vertical pass: `src` holds rows of `row_len` bytes; returns `kernel.start.len()` rows.
fn vertical_pass(src: &[u8], row_len: usize, kernel: &Kernel) -> Vec<u8> {
    let out_rows = kernel.start.len();
    let mut dst = vec![0u8; out_rows * row_len];
    let chunk = rows_per_task(out_rows, row_len);
    dst.par_chunks_mut(chunk * row_len)
        .enumerate()
        .for_each(|(c, d)| {
            vertical_dispatch(src, row_len, d, c * chunk, kernel);
        });
    dst
}

/// Resizes `image` to `width x height` exactly as Pillow 13.0's `Image.resize((width, height),
/// Image.BICUBIC)` does for an RGB image (bit-exact; see the module docs). Same size: a copy.
///
/// # Errors
/// [`Error::ZeroSize`] if the source or the target has a zero side.
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
    let need_h = width != in_w;
    let need_v = height != in_h;
    let src = image.as_raw();
    let (iw, ih, ow) = (in_w as usize, in_h as usize, width as usize);
    let pixels = match pass_order(in_w, in_h, width, height) {
        PassOrder::HorizontalFirst => {
            let kh = Kernel::new(in_w, width);
            let mut kv = Kernel::new(in_h, height);
            let mut tmp_rows = ih;
            let mut tmp: Vec<u8> = Vec::new();
            let mut cur: &[u8] = src;
            if need_h {
                // Only the source rows the vertical pass reads; shift its window to match.
                let first = kv.start.first().copied().unwrap_or(0);
                let last = match (kv.start.last(), kv.len.last()) {
                    (Some(s), Some(l)) => s + l,
                    _ => ih,
                };
                for s in &mut kv.start {
                    *s -= first;
                }
                tmp_rows = last - first;
                tmp = horizontal_pass(&src[first * iw * 3..last * iw * 3], iw, tmp_rows, &kh);
                cur = &tmp;
            }
            if need_v {
                vertical_pass(cur, ow * 3, &kv)
            } else {
                debug_assert_eq!(tmp_rows, ih);
                if tmp.is_empty() { src.to_vec() } else { tmp }
            }
        }
        PassOrder::VerticalFirst => {
            // Only chosen when the height shrinks, so the vertical pass always runs.
            let kv = Kernel::new(in_h, height);
            let tmp = vertical_pass(src, iw * 3, &kv);
            if need_h {
                horizontal_pass(&tmp, iw, height as usize, &Kernel::new(in_w, width))
            } else {
                tmp
            }
        }
    };
    RgbImage::from_raw(width, height, pixels).ok_or(Error::ZeroSize { width, height })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_order_matches_pillow_13() {
        // Measured with Pillow 13.0 (see ARCHITECTURE.md §3).
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
