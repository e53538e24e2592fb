//! Bit-exact bicubic resizing of 8-bit RGB images, in two flavours ([`BicubicKernel`]):
//!
//! * **Pillow** ([`resize_bicubic`]): Pillow 13.0's `libImaging/Resample.c` (`ImagingResample` with the
//!   `BICUBIC` filter, 8 bits per channel), what qwen-vl-utils resizes images with;
//! * **torchvision** ([`resize_bicubic_torchvision`]): `torchvision.transforms.v2.functional.resize` of a
//!   `uint8` tensor with `InterpolationMode.BICUBIC` and `antialias=True`, i.e. PyTorch's
//!   `_upsample_bicubic2d_aa` on uint8 (`aten/src/ATen/native/cpu/UpSampleKernel.cpp` and
//!   `UpSampleKernelAVXAntialias.h`), what transformers' fast image processor and the serving engines
//!   resize with, and what qwen-vl-utils resizes frames of video files with.
//!
//! Both are written anew for Rust and share the algorithm:
//!
//! * the kernel is Keys' cubic with `a = -0.5`, support 2, widened by the scale factor when shrinking
//!   (so downscaling averages, like a box prefilter);
//! * per output sample the weights are computed in `f64` and normalized to sum 1, then turned into
//!   fixed-point integers (rounded half away from zero);
//! * a sample is `clamp((half + Σ pixel * weight) >> bits, 0, 255)` (arithmetic shift: floor);
//! * the image is resized in two separable passes, each rounded to `u8`; an axis whose size does not
//!   change is not resampled.
//!
//! They differ in details that move results by a level here and there (and the pass order by up to ~24
//! levels at sharp edges):
//!
//! | | Pillow 13.0 | torchvision (PyTorch uint8 antialias) |
//! |---|---|---|
//! | fixed point | `i32`, 22 fractional bits | `int16`, per axis the largest precision (at most 22 bits) at which `round(2 * max_weight * 2^bits) < 2^15` |
//! | outer lobe (`1 <= x < 2`) | `(((x - 5) x + 8) x - 4) a` | `((a x - 5a) x + 8a) x - 4a` |
//! | pass order | vertical first when the height shrinks by more than twice as many pixels as the width ([`pass_order`]) | always horizontal first |
//!
//! With Pillow's order, when the horizontal pass runs first it only processes the source rows the
//! vertical pass will read (rows are independent, so this changes nothing but the time).
//!
//! Integer arithmetic is exact, so the order of the sums does not matter: the loops are arranged to
//! vectorise (the vertical pass walks whole rows; an AVX2 build of both loops is picked at run time on
//! x86-64) and large images are split across threads with rayon. The result is identical on every path.
//!
//! # Where things live
//!
//! * this file: the public API ([`resize_bicubic`], [`resize_bicubic_torchvision`], [`BicubicKernel`],
//!   [`pass_order`], [`MAX_RESIZE_BYTES`]), the size checks, the two-pass driver (pass order, row
//!   windows, threads, the scratch buffer between the passes) and the dispatch between code paths;
//! * `weights`: Keys' kernel and the fixed-point `Kernel` of one pass in both flavours, shared by
//!   every path;
//! * `portable`: the passes as plain Rust loops, the reference and the fallback;
//! * `avx2` (x86-64 only): the horizontal pass in AVX2 intrinsics and the portable vertical loop
//!   compiled with AVX2 enabled.
//!
//! # Dispatch
//!
//! The choice is made at run time, per pass, with `is_x86_feature_detected!("avx2")`: on x86-64 with
//! AVX2 both passes take the `avx2` code (the horizontal weights are first re-laid out for it once per
//! pass, in `HorizontalSimd`), everywhere else the `portable` loops. No build flag is needed, and a
//! test checks that the two horizontal passes agree byte for byte.

use image::RgbImage;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

#[cfg(target_arch = "x86_64")]
mod avx2;
mod portable;
mod weights;

use weights::Kernel;

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

/// Whether this CPU can run the `avx2` code (always false off x86-64).
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
    portable::horizontal_rows(src, in_w, dst, kernel)
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

/// Runs the vertical pass on the best code path for this CPU.
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
    portable::vertical_rows(src, row_len, dst, first_row, kernel)
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

/// Which library's bicubic a resize reproduces (see the module docs for how they differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BicubicKernel {
    /// Pillow 13.0's `Image.resize(..., BICUBIC)` ([`resize_bicubic`]): qwen-vl-utils' image path.
    #[default]
    Pillow,
    /// torchvision's antialiased bicubic on `uint8` tensors ([`resize_bicubic_torchvision`]): transformers'
    /// fast image processor, the serving engines, qwen-vl-utils' frames of video files.
    Torchvision,
}

impl BicubicKernel {
    /// Resizes `image` to `width x height` with this kernel.
    ///
    /// # Errors
    /// As [`resize_bicubic`].
    pub fn resize(self, image: &RgbImage, width: u32, height: u32) -> Result<RgbImage> {
        match self {
            BicubicKernel::Pillow => resize_bicubic(image, width, height),
            BicubicKernel::Torchvision => resize_bicubic_torchvision(image, width, height),
        }
    }

    /// The kernel's name as written in settings: `pillow` or `torchvision`.
    pub fn name(self) -> &'static str {
        match self {
            BicubicKernel::Pillow => "pillow",
            BicubicKernel::Torchvision => "torchvision",
        }
    }
}

/// Resizes `image` to `width x height` exactly as Pillow 13.0's `Image.resize((width, height),
/// Image.BICUBIC)` does for an RGB image (bit-exact; see the module docs). Same size: a copy.
///
/// # Errors
/// [`Error::ZeroSize`] if the source or the target has a zero side; [`Error::ResizeTooLarge`] if the
/// resize would allocate more than [`MAX_RESIZE_BYTES`] for one buffer.
pub fn resize_bicubic(image: &RgbImage, width: u32, height: u32) -> Result<RgbImage> {
    resize_separable(image, width, height, BicubicKernel::Pillow)
}

/// Resizes `image` to `width x height` exactly as
/// `torchvision.transforms.v2.functional.resize(t, [height, width], InterpolationMode.BICUBIC,
/// antialias=True)` does for the `uint8` tensor `t` of the image (`3 x H x W`, on the CPU), bit for bit
/// (see the module docs; checked against torchvision on fixtures). Same size: a copy.
///
/// # Errors
/// As [`resize_bicubic`].
pub fn resize_bicubic_torchvision(image: &RgbImage, width: u32, height: u32) -> Result<RgbImage> {
    resize_separable(image, width, height, BicubicKernel::Torchvision)
}

/// The two-pass driver shared by both kernels.
fn resize_separable(
    image: &RgbImage,
    width: u32,
    height: u32,
    flavour: BicubicKernel,
) -> Result<RgbImage> {
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
    let kernel = |i: u32, o: u32| match flavour {
        BicubicKernel::Pillow => Kernel::pillow(i, o),
        BicubicKernel::Torchvision => Kernel::torchvision(i, o),
    };
    let order = match flavour {
        BicubicKernel::Pillow => pass_order(in_w, in_h, width, height),
        BicubicKernel::Torchvision => PassOrder::HorizontalFirst,
    };
    let need_h = width != in_w;
    let need_v = height != in_h;
    let src = image.as_raw();
    let (iw, ih) = (in_w as usize, in_h as usize);
    let (ow, oh) = (width as usize, height as usize);
    let mut out = vec![0u8; ow * oh * 3];
    if !need_v {
        horizontal_pass(src, iw, &kernel(in_w, width), &mut out);
    } else if !need_h {
        vertical_pass(src, iw * 3, &kernel(in_h, height), &mut out);
    } else {
        let kh = kernel(in_w, width);
        let mut kv = kernel(in_h, height);
        match order {
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
    fn constant_image_stays_constant() {
        let img = RgbImage::from_pixel(37, 23, image::Rgb([200, 17, 99]));
        for (w, h) in [(5, 5), (80, 11), (11, 80), (37, 50), (100, 7)] {
            for kernel in [BicubicKernel::Pillow, BicubicKernel::Torchvision] {
                let out = kernel.resize(&img, w, h).unwrap();
                assert_eq!(out.dimensions(), (w, h));
                assert!(
                    out.pixels().all(|p| p.0 == [200, 17, 99]),
                    "{kernel:?} {w}x{h}"
                );
            }
        }
    }

    /// The AVX2 horizontal pass equals the portable one, for both kernels, on sizes that exercise every
    /// tap count.
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
            for k in [
                Kernel::pillow(in_w, out_w),
                Kernel::torchvision(in_w, out_w),
            ] {
                let mut portable = vec![0u8; out_w as usize * 3 * rows];
                portable::horizontal_rows(&src, in_w as usize, &mut portable, &k);
                let mut fast = vec![0u8; out_w as usize * 3 * rows];
                horizontal_dispatch(&src, in_w as usize, &mut fast, &k, &HorizontalSimd::new(&k));
                assert_eq!(portable, fast, "{in_w} -> {out_w} at {} bits", k.precision);
            }
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
        assert!(matches!(
            resize_bicubic_torchvision(&img, 100_000, 100_000),
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
