//! Matrix products on `Flex` and `Autodiff<Flex>` through [`kernels::matmul`]: batched products of
//! strided views (a transposed operand is read in place) and `x @ W + b` with the bias in the product.
//! The backward products read the saved operands through transposed views too.

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Shape, Tensor};
use burn_flex::FlexTensor;

use super::{AdPrim, Kind, dense, f32s, kind, prim, tensor, wrap};
use crate::backend::same;
use crate::fused::kernels::{self, Strided};

/// A tensor `[.., rows, cols]` as a batch of strided matrices, with its leading dimensions; `None` for
/// another dtype, fewer than two dimensions or a negative stride.
fn view(t: &FlexTensor) -> Option<(Strided<'_>, Vec<usize>, usize, usize)> {
    if t.dtype() != DType::F32 {
        return None;
    }
    let layout = t.layout();
    let shape = layout.shape();
    let rank = shape.num_dims();
    if rank < 2 {
        return None;
    }
    let strides: Vec<usize> = layout
        .strides()
        .iter()
        .map(|&s| usize::try_from(s).ok())
        .collect::<Option<_>>()?;
    let dims: Vec<usize> = (0..rank).map(|d| shape[d]).collect();
    let (lead, matrix) = dims.split_at(rank - 2);
    let count: usize = lead.iter().product();
    let mut starts = Vec::with_capacity(count);
    for mut i in 0..count {
        let mut start = layout.start_offset();
        for d in (0..lead.len()).rev() {
            start = start.checked_add((i % lead[d]).checked_mul(strides[d])?)?;
            i /= lead[d];
        }
        starts.push(start);
    }
    let strided = Strided {
        data: t.storage::<f32>(),
        starts,
        row_stride: strides[rank - 2],
        col_stride: strides[rank - 1],
    };
    Some((strided, lead.to_vec(), matrix[0], matrix[1]))
}

/// `a @ b` for f32 `a` `[.., m, k]` and `b` `[.., k, n]` with the same leading dimensions; `None` where
/// the kernel does not apply (the caller runs burn's product).
fn product(a: &FlexTensor, b: &FlexTensor) -> Option<FlexTensor> {
    let (av, lead, m, k) = view(a)?;
    let (bv, b_lead, k2, n) = view(b)?;
    if lead != b_lead || k != k2 {
        return None;
    }
    let out = kernels::matmul(&av, &bv, m, k, n, None)?;
    let mut dims = lead;
    dims.extend([m, n]);
    Some(tensor(out, Shape::from(dims)))
}

/// The batched product `a @ b` of f32 tensors of one rank with the same leading dimensions (no
/// broadcasting), each operand contiguous or a strided view; the inputs back where it does not apply.
pub(in crate::fused) fn matmul<B: Backend, const D: usize>(
    a: Tensor<B, D>,
    b: Tensor<B, D>,
) -> Result<Tensor<B, D>, (Tensor<B, D>, Tensor<B, D>)> {
    let Some(kind) = kind::<B>() else {
        return Err((a, b));
    };
    let (pa, pb) = (prim(a), prim(b));
    let out: Option<B::FloatTensorPrimitive> = match kind {
        Kind::Inner => product(&same(pa.clone()), &same(pb.clone())).map(same),
        Kind::Plain => {
            matmul_autodiff::<NoCheckpointing>(same(pa.clone()), same(pb.clone())).map(same)
        }
        Kind::Balanced => {
            matmul_autodiff::<BalancedCheckpointing>(same(pa.clone()), same(pb.clone())).map(same)
        }
    };
    match out {
        Some(out) => Ok(wrap(out)),
        None => Err((wrap(pa), wrap(pb))),
    }
}

#[derive(Debug)]
struct MatMul;

impl Backward<Flex, 2> for MatMul {
    /// The two operands as they were multiplied.
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [a_node, b_node] = ops.parents;
        let grad = dense(&grads.consume::<Flex>(&ops.node));
        let (a, b) = ops.state;
        // The forward checked the views, and the gradient has the output's shape.
        let (Some((av, lead, m, k)), Some((bv, _, _, n))) = (view(&a), view(&b)) else {
            unreachable!("the forward product's operands are f32 views");
        };
        let g = Strided::contiguous(f32s(&grad), av.starts.len(), m, n);
        let shape = |rows: usize, cols: usize| {
            let mut dims = lead.clone();
            dims.extend([rows, cols]);
            Shape::from(dims)
        };
        if let Some(node) = a_node {
            // dA = dY @ B^T
            let da = kernels::matmul(&g, &bv.transposed(), m, n, k, None)
                .expect("the gradient and B^T fit the forward's shapes");
            grads.register::<Flex>(node.id, tensor(da, shape(m, k)));
        }
        if let Some(node) = b_node {
            // dB = A^T @ dY
            let db = kernels::matmul(&av.transposed(), &g, k, m, n, None)
                .expect("A^T and the gradient fit the forward's shapes");
            grads.register::<Flex>(node.id, tensor(db, shape(k, n)));
        }
    }
}

fn matmul_autodiff<C: CheckpointStrategy>(a: AdPrim, b: AdPrim) -> Option<AdPrim> {
    let out = product(&a.primitive, &b.primitive)?;
    Some(
        match MatMul
            .prepare::<C>([a.node.clone(), b.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((a.primitive.clone(), b.primitive.clone()), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        },
    )
}

// ---------------------------------------------------------------------------------------------------------
// x @ W + b

/// `x @ w + bias` for f32 `x` `[rows, d_in]`, `w` `[d_in, d_out]`, `bias` `[d_out]`.
fn affine(x: &FlexTensor, w: &FlexTensor, bias: &FlexTensor) -> Option<FlexTensor> {
    let (xv, x_lead, rows, d_in) = view(x)?;
    let (wv, w_lead, d_in2, d_out) = view(w)?;
    if !x_lead.is_empty() || !w_lead.is_empty() || d_in != d_in2 || bias.dtype() != DType::F32 {
        return None;
    }
    let bias = dense(bias);
    let out = kernels::matmul(&xv, &wv, rows, d_in, d_out, Some(f32s(&bias)))?;
    Some(tensor(out, Shape::new([rows, d_out])))
}

/// The input, weight and bias of [`linear`], given back when it does not apply.
type LinearInputs<B> = (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 1>);

/// `x @ w + bias` of burn's `Linear` for f32 `x` `[rows, d_in]`; the inputs back where it does not apply.
pub(in crate::fused) fn linear<B: Backend>(
    x: Tensor<B, 2>,
    w: Tensor<B, 2>,
    bias: Tensor<B, 1>,
) -> Result<Tensor<B, 2>, LinearInputs<B>> {
    let Some(kind) = kind::<B>() else {
        return Err((x, w, bias));
    };
    let (px, pw, pb) = (prim(x), prim(w), prim(bias));
    let out: Option<B::FloatTensorPrimitive> = match kind {
        Kind::Inner => affine(&same(px.clone()), &same(pw.clone()), &same(pb.clone())).map(same),
        Kind::Plain => {
            linear_autodiff::<NoCheckpointing>(same(px.clone()), same(pw.clone()), same(pb.clone()))
                .map(same)
        }
        Kind::Balanced => linear_autodiff::<BalancedCheckpointing>(
            same(px.clone()),
            same(pw.clone()),
            same(pb.clone()),
        )
        .map(same),
    };
    match out {
        Some(out) => Ok(wrap(out)),
        None => Err((wrap(px), wrap(pw), wrap(pb))),
    }
}

#[derive(Debug)]
struct Linear;

impl Backward<Flex, 3> for Linear {
    /// The input and the weight as they were multiplied.
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node, w_node, b_node] = ops.parents;
        let grad = dense(&grads.consume::<Flex>(&ops.node));
        let (x, w) = ops.state;
        let (Some((xv, _, rows, d_in)), Some((wv, _, _, d_out))) = (view(&x), view(&w)) else {
            unreachable!("the forward product's operands are f32 views");
        };
        let g = Strided::contiguous(f32s(&grad), 1, rows, d_out);
        if let Some(node) = x_node {
            // dx = dY @ W^T
            let dx = kernels::matmul(&g, &wv.transposed(), rows, d_out, d_in, None)
                .expect("the gradient and W^T fit the forward's shapes");
            grads.register::<Flex>(node.id, tensor(dx, Shape::new([rows, d_in])));
        }
        if let Some(node) = w_node {
            // dW = x^T @ dY
            let dw = kernels::matmul(&xv.transposed(), &g, d_in, rows, d_out, None)
                .expect("x^T and the gradient fit the forward's shapes");
            grads.register::<Flex>(node.id, tensor(dw, Shape::new([d_in, d_out])));
        }
        if let Some(node) = b_node {
            let db = kernels::column_sums(f32s(&grad), d_out);
            grads.register::<Flex>(node.id, tensor(db, Shape::new([d_out])));
        }
    }
}

fn linear_autodiff<C: CheckpointStrategy>(x: AdPrim, w: AdPrim, b: AdPrim) -> Option<AdPrim> {
    let out = affine(&x.primitive, &w.primitive, &b.primitive)?;
    Some(
        match Linear
            .prepare::<C>([x.node.clone(), w.node.clone(), b.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((x.primitive.clone(), w.primitive.clone()), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        },
    )
}
