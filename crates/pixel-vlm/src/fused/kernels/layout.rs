//! Permutations into a contiguous row-major layout.

use super::for_row_blocks;

/// Copies a row-major tensor of `dims` into the row-major layout of its permutation `axes` (output
/// dimension `i` is input dimension `axes[i]`). Runs along the last output dimension are copied as slices
/// where that is also the input's last dimension.
///
/// Callers check that `axes` is a permutation of `0..dims.len()` and that `x` has `dims`' element count.
pub(crate) fn permute(x: &[f32], dims: &[usize], axes: &[usize]) -> Vec<f32> {
    let rank = dims.len();
    let mut out = vec![0.0f32; x.len()];
    if rank == 0 || x.is_empty() {
        out.copy_from_slice(x);
        return out;
    }
    let mut in_strides = vec![1usize; rank];
    for d in (0..rank.saturating_sub(1)).rev() {
        in_strides[d] = in_strides[d + 1] * dims[d + 1];
    }
    let out_dims: Vec<usize> = axes.iter().map(|&a| dims[a]).collect();
    let strides: Vec<usize> = axes.iter().map(|&a| in_strides[a]).collect();
    let inner = out_dims[rank - 1];
    let inner_stride = strides[rank - 1];
    // One task per block of output rows (all dimensions but the last).
    for_row_blocks(&mut out, inner, |first_row, block| {
        // The input offset of the first row of the block, by the mixed-radix digits of its index.
        let mut digits = vec![0usize; rank - 1];
        let mut rest = first_row;
        for d in (0..rank - 1).rev() {
            digits[d] = rest % out_dims[d];
            rest /= out_dims[d];
        }
        let mut offset: usize = (0..rank - 1).map(|d| digits[d] * strides[d]).sum();
        for row in block.chunks_exact_mut(inner) {
            if inner_stride == 1 {
                row.copy_from_slice(&x[offset..offset + inner]);
            } else {
                for (j, o) in row.iter_mut().enumerate() {
                    *o = x[offset + j * inner_stride];
                }
            }
            // Next row: increment the digits from the right, carrying.
            for d in (0..rank - 1).rev() {
                digits[d] += 1;
                offset += strides[d];
                if digits[d] < out_dims[d] {
                    break;
                }
                offset -= digits[d] * strides[d];
                digits[d] = 0;
            }
        }
    });
    out
}
