//! Applying rotary position embeddings (`rotate_half` convention) to query/key tensors.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};

use crate::backend::matmul;

/// `x * cos + rotate_half(x) * sin`, where `rotate_half([x1, x2]) = [-x2, x1]` over the last dimension.
///
/// `rotate_half` is a product with a signed permutation matrix (each output is one input, or its negation,
/// plus exact zeros, so the result is the same as slicing): one matrix product forward and one backward,
/// where two slices, a negation and a concatenation cost a CPU backend a strided copy each, and their
/// backward a zero-filled gradient per slice. For speed on CPU, give `cos` and `sin` the full shape of `x`.
///
/// # Shapes
/// - `x`: `[.., head_dim]`
/// - `cos`, `sin`: broadcastable to `x`
/// - output: the shape of `x`
pub fn apply_rotary<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    cos: Tensor<B, D>,
    sin: Tensor<B, D>,
) -> Tensor<B, D> {
    let dims = x.dims();
    let d = dims[D - 1];
    let rows = dims.iter().product::<usize>() / d;
    let rotated = matmul(
        x.clone().reshape([rows, d]),
        rotate_half_matrix(d, &x.device(), x.dtype()),
    )
    .reshape(dims);
    x * cos + rotated * sin
}

/// `R` `[d, d]` with `v @ R = rotate_half(v)`: `-1` at `(j + d/2, j)`, `1` at `(j, j + d/2)`.
fn rotate_half_matrix<B: Backend>(d: usize, device: &B::Device, dtype: DType) -> Tensor<B, 2> {
    let half = d / 2;
    let mut r = vec![0.0f32; d * d];
    for j in 0..half {
        r[(j + half) * d + j] = -1.0;
        r[j * d + j + half] = 1.0;
    }
    Tensor::from_data(TensorData::new(r, [d, d]), (device, dtype))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    type B = crate::backend::CpuBackend;

    #[test]
    fn the_product_is_rotate_half_exactly() {
        let device = Default::default();
        let x = Tensor::<B, 3>::random([3, 5, 8], Distribution::Default, &device);
        let angles = Tensor::<B, 3>::random([3, 5, 8], Distribution::Default, &device);
        let (cos, sin) = (angles.clone().cos(), angles.sin());
        let x1 = x.clone().narrow(2, 0, 4);
        let x2 = x.clone().narrow(2, 4, 4);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 2);
        let want = (x.clone() * cos.clone() + rotated * sin.clone()).into_data();
        let got = apply_rotary(x, cos, sin).into_data();
        assert_eq!(got.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
    }
}
