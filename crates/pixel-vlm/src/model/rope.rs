//! Applying rotary position embeddings (`rotate_half` convention) to query/key tensors.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// `x * cos + rotate_half(x) * sin`, where `rotate_half([x1, x2]) = [-x2, x1]` over the last dimension.
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
    let half = x.dims()[D - 1] / 2;
    let x1 = x.clone().narrow(D - 1, 0, half);
    let x2 = x.clone().narrow(D - 1, half, half);
    let rotated = Tensor::cat(vec![x2.neg(), x1], D - 1);
    x * cos + rotated * sin
}
