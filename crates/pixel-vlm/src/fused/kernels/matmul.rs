//! Matrix products into fresh buffers: `gemm` writes every output element, so the buffer is never
//! zero-filled first, and its `Vec<f32>` becomes the output tensor without a copy.
//!
//! `Flex`'s own product allocates its output as a zero-filled byte vector and then copies it into a
//! 16-byte-aligned one (`FlexTensor::empty`): two passes over memory before `gemm` writes it a third time.
//! In the CPU demo's training steps those passes were a tenth of the samples of a profile
//! (`docs/performance.md`, "Products without the zero-fill").

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// Products of at least this many multiply-adds let `gemm` split one matrix over the threads (`Flex`'s
/// threshold).
const SPLIT_ONE: usize = 192 * 192 * 192;

/// Batches of at least this many multiply-adds in all spread their matrices over the threads.
const SPLIT_BATCH: usize = 128 * 128 * 128;

/// A batch of strided f32 matrices inside one buffer: matrix `i`'s element `(r, c)` is
/// `data[starts[i] + r * row_stride + c * col_stride]`.
#[derive(Debug, Clone)]
pub(crate) struct Strided<'a> {
    pub data: &'a [f32],
    pub starts: Vec<usize>,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> Strided<'a> {
    /// `count` contiguous row-major `rows x cols` matrices one after the other.
    pub fn contiguous(data: &'a [f32], count: usize, rows: usize, cols: usize) -> Self {
        Self {
            data,
            starts: (0..count).map(|i| i * rows * cols).collect(),
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The same matrices transposed (a view: the strides swapped).
    pub fn transposed(&self) -> Self {
        Self {
            data: self.data,
            starts: self.starts.clone(),
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// Whether every element of `rows x cols` matrices lies inside the buffer.
    pub fn fits(&self, rows: usize, cols: usize) -> bool {
        if rows == 0 || cols == 0 {
            return true;
        }
        let span = (rows - 1)
            .checked_mul(self.row_stride)
            .zip((cols - 1).checked_mul(self.col_stride))
            .and_then(|(a, b)| a.checked_add(b));
        let Some(span) = span else {
            return false;
        };
        self.starts.iter().all(|&s| {
            s.checked_add(span)
                .is_some_and(|last| last < self.data.len())
        })
    }
}

/// Shorthand for an isize stride (strides of in-bounds views fit: the buffer's length does).
fn signed(stride: usize) -> isize {
    isize::try_from(stride).unwrap_or(isize::MAX)
}

/// `out[i] = a[i] @ b[i]` for each matrix `i` of the batches, `a[i]`: `[m, k]`, `b[i]`: `[k, n]`, plus
/// `bias` (`[n]`, added to every row) when given; the output is the batch's `[m, n]` matrices, row-major
/// and contiguous. `None` when the batches' sizes differ, a view reaches outside its buffer or the bias
/// is not `n` long.
pub(crate) fn matmul(
    a: &Strided,
    b: &Strided,
    m: usize,
    k: usize,
    n: usize,
    bias: Option<&[f32]>,
) -> Option<Vec<f32>> {
    let count = a.starts.len();
    if b.starts.len() != count || !a.fits(m, k) || !b.fits(k, n) {
        return None;
    }
    if bias.is_some_and(|bias| bias.len() != n) {
        return None;
    }
    let size = m.checked_mul(n)?;
    let len = size.checked_mul(count)?;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    if size > 0 {
        let ops = m.saturating_mul(n).saturating_mul(k);
        let total = ops.saturating_mul(count);
        let by_matrix = count >= 4 && total >= SPLIT_BATCH;
        let dst = &mut out.spare_capacity_mut()[..len];
        if ops >= SPLIT_ONE && !by_matrix {
            // Large matrices: `gemm` splits each over the current pool's threads.
            for (i, d) in dst.chunks_mut(size).enumerate() {
                product(a, b, i, d, (m, k, n), bias, gemm::Parallelism::Rayon(0));
            }
        } else if count > 1 && total >= SPLIT_BATCH {
            // Many small matrices: one per task.
            dst.par_chunks_mut(size)
                .enumerate()
                .for_each(|(i, d)| product(a, b, i, d, (m, k, n), bias, gemm::Parallelism::None));
        } else {
            for (i, d) in dst.chunks_mut(size).enumerate() {
                product(a, b, i, d, (m, k, n), bias, gemm::Parallelism::None);
            }
        }
    }
    // SAFETY: `product` wrote every one of the first `len` elements (each of the `count` chunks of `size`
    // elements), and `len` is within the capacity reserved above.
    unsafe { out.set_len(len) };
    Some(out)
}

/// Writes matrix `i` of the product (and the bias) into `dst` (`m * n` elements, row-major).
fn product(
    a: &Strided,
    b: &Strided,
    i: usize,
    dst: &mut [MaybeUninit<f32>],
    (m, k, n): (usize, usize, usize),
    bias: Option<&[f32]>,
    parallelism: gemm::Parallelism,
) {
    debug_assert_eq!(dst.len(), m * n);
    match bias {
        Some(bias) => {
            for row in dst.chunks_mut(n) {
                for (d, &v) in row.iter_mut().zip(bias) {
                    d.write(v);
                }
            }
        }
        None if k == 0 => dst.fill(MaybeUninit::new(0.0)),
        None => {}
    }
    if k == 0 {
        return;
    }
    // SAFETY: `matmul` checked that matrix `i` of `a` (`m x k`) and of `b` (`k x n`) lie inside their
    // buffers, so every element `gemm` reads through these pointers and strides is in bounds; `dst` is
    // `m * n` elements, written row-major (column stride 1, row stride n). `gemm` reads `dst` only when
    // `read_dst` is true, which is when the bias initialised it above; otherwise it writes every element
    // without reading any.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().cast::<f32>(),
            1,
            signed(n),
            bias.is_some(),
            a.data.as_ptr().add(a.starts[i]),
            signed(a.col_stride),
            signed(a.row_stride),
            b.data.as_ptr().add(b.starts[i]),
            signed(b.col_stride),
            signed(b.row_stride),
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The sums of the columns of row-major `rows x n` `x` (the gradient of a bias added to every row).
pub(crate) fn column_sums(x: &[f32], n: usize) -> Vec<f32> {
    let mut sums = vec![0.0f32; n];
    if n == 0 {
        return sums;
    }
    for row in x.chunks_exact(n) {
        for (s, &v) in sums.iter_mut().zip(row) {
            *s += v;
        }
    }
    sums
}
