//! One-row products (decoding one sequence) laid out so that a CPU backend spreads them over its threads.
//!
//! Decoding a single sequence multiplies one row by every weight matrix: a matrix-vector product that
//! streams the whole weight from memory. `Flex` hands 2-D products to the `gemm` crate, which runs a
//! matrix-vector product on one thread (measured here: 17 GB/s for the 2048 x 11008 MLP weight, 25 GB/s for
//! the 151936 x 2048 LM head), while it spreads a *batched* product over its threads. Splitting the product
//! into a batch of independent slices, a free reshape of the stored weight, lets the memory stream from every
//! core (31 and 33 GB/s). A few rows (decoding a small batch) hit `gemm`'s small-`m` kernel instead (11 GB/s
//! for 4 rows of the MLP weight); multiplying the transposed weight *view* by the transposed rows streams the
//! weight at 18 GB/s. Both are plain tensor code, so other backends run the same graph.

use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use crate::backend::{linear_forward, matmul};

/// Slices a one-row product is split into.
pub const SPLIT: usize = 4;

/// Smallest reduction length worth splitting (below it the weight is cache-sized).
pub const MIN_SPLIT_LEN: usize = 1024;

/// Most rows computed as `(W^T x^T)^T` (measured faster up to 8 rows; more rows are a real GEMM).
pub const FEW_ROWS: usize = 8;

/// `x @ W + b` of burn's `Linear` (`W: [d_in, d_out]`). With one row in f32, computed as `Σ_s x_s @ W_s` over
/// [`SPLIT`] slices of `d_in` (a batched product); with 2 to [`FEW_ROWS`] rows as `(W^T x^T)^T` on a transposed
/// view (the same dot products); otherwise `layer.forward(x)` on `x` flattened to `[rows, d_in]` (the same
/// products; under autodiff the weight gradient is then one product instead of one per leading index).
///
/// Only f32 is split: the partial products are rounded to the activations' dtype before they are summed,
/// which in bf16 would add roundings that a single product (accumulating in f32) does not have.
///
/// # Shapes
/// - `x`: `[.., d_in]`
/// - output: `[.., d_out]`
pub fn linear<B: Backend, const D: usize>(layer: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    let dims = x.dims();
    let d_in = dims[D - 1];
    let rows: usize = dims[..D - 1].iter().product();
    let split =
        rows == 1 && x.dtype() == DType::F32 && d_in >= MIN_SPLIT_LEN && d_in.is_multiple_of(SPLIT);
    if !split && !(2..=FEW_ROWS).contains(&rows) {
        // As one `[rows, d_in]` matrix: the weight gradient of a `[batch, seq, d_in]` input is otherwise a
        // batched product per row of the batch (short reductions over `seq`) summed over the batch.
        let d_out = layer.weight.dims()[1];
        let mut shape = dims;
        shape[D - 1] = d_out;
        return linear_forward(layer, x.reshape([rows, d_in])).reshape(shape);
    }
    let weight = layer.weight.val(); // [d_in, d_out]
    let d_out = weight.dims()[1];
    let mut out = if split {
        let part = d_in / SPLIT;
        let partial = matmul(
            x.reshape([SPLIT, 1, part]),
            weight.reshape([SPLIT, part, d_out]),
        ); // [SPLIT, 1, d_out]
        partial.sum_dim(0).reshape([1, d_out])
    } else {
        let x = x.reshape([rows, d_in]);
        matmul(weight.transpose(), x.transpose()).transpose() // [rows, d_out]
    };
    if let Some(bias) = &layer.bias {
        out = out + bias.val().unsqueeze();
    }
    let mut shape = dims;
    shape[D - 1] = d_out;
    out.reshape(shape)
}

/// `x @ E^T` for a tied LM head `E: [vocab, hidden]` stored row-major. With one row, `E` is split into
/// [`SPLIT`] blocks of rows multiplied as one batched product (each logit is still one dot product, so the
/// result is the same as the plain product's); otherwise `(E @ x^T)^T`, which keeps the big operand in its
/// stored layout (multiplying by a transposed view of it cost `NdArray` seconds per call).
///
/// # Shapes
/// - `embedding`: `[vocab, hidden]`
/// - `x`: `[rows, hidden]`
/// - output: `[rows, vocab]`
pub fn tied_head<B: Backend>(embedding: Tensor<B, 2>, x: Tensor<B, 2>) -> Tensor<B, 2> {
    let [vocab, hidden] = embedding.dims();
    let [rows, _] = x.dims();
    if rows != 1 || !vocab.is_multiple_of(SPLIT) {
        return matmul(embedding, x.transpose()).transpose();
    }
    let column = x.reshape([1, hidden, 1]).expand([SPLIT, hidden, 1]);
    matmul(embedding.reshape([SPLIT, vocab / SPLIT, hidden]), column) // [SPLIT, vocab / SPLIT, 1]
        .reshape([1, vocab])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::tensor::{Distribution, Tolerance};

    type B = crate::backend::CpuBackend;

    #[test]
    fn split_products_equal_the_plain_ones() {
        let device = Default::default();
        let weight = Tensor::<B, 2>::random([2048, 96], Distribution::Normal(0.0, 0.05), &device);
        let bias = Tensor::<B, 1>::random([96], Distribution::Default, &device);
        let layer = Linear {
            weight: Param::from_tensor(weight),
            bias: Some(Param::from_tensor(bias)),
        };
        // One row (split), a few rows (transposed view), many rows (plain).
        for rows in [1, 3, 12] {
            let x = Tensor::<B, 3>::random([1, rows, 2048], Distribution::Default, &device);
            linear(&layer, x.clone())
                .into_data()
                .assert_approx_eq::<f32>(&layer.forward(x).into_data(), Tolerance::absolute(1e-4));
        }

        let embedding = Tensor::<B, 2>::random([1000, 64], Distribution::Default, &device);
        for rows in [1, 2] {
            let x = Tensor::<B, 2>::random([rows, 64], Distribution::Default, &device);
            let plain = x.clone().matmul(embedding.clone().transpose());
            tied_head(embedding.clone(), x)
                .into_data()
                .assert_approx_eq::<f32>(&plain.into_data(), Tolerance::absolute(1e-4));
        }
    }
}
