//! The fused operations on `Flex` (the kernels of [`super::kernels`] on its f32 buffers) and on
//! `Autodiff<Flex>` (one autodiff node per operation whose backward is one kernel too).
//!
//! The generic model code reaches these through a type check: a tensor of `B` is moved into the `Flex`
//! types by `Any` downcasting when `B` is `Flex` or `Autodiff<Flex>` (no checkpointing, or burn's balanced
//! checkpointing), so nothing here is unsafe. Every entry point gives its inputs back (`Err`) when `B` is
//! another backend, so the caller can run the composite version.

use std::any::TypeId;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::{Backend, BackendTypes};
use burn::tensor::{Shape, Tensor, TensorData, TensorMetadata, TensorPrimitive};
use burn_flex::FlexTensor;

use super::kernels;
use crate::backend::same;

mod matmul;

pub(super) use matmul::{linear, matmul};

/// The float primitive of `Autodiff<Flex, C>` (the same type for every checkpointing strategy).
type AdPrim = <Autodiff<Flex> as BackendTypes>::FloatTensorPrimitive;

/// Which of the handled backends `B` is.
#[derive(Clone, Copy)]
enum Kind {
    /// `Flex` itself (any element types: they share one primitive).
    Inner,
    /// `Autodiff<Flex>` without checkpointing.
    Plain,
    /// `Autodiff<Flex, BalancedCheckpointing>`.
    Balanced,
}

fn kind<B: Backend>() -> Option<Kind> {
    let id = TypeId::of::<B>();
    if TypeId::of::<B::FloatTensorPrimitive>() == TypeId::of::<FlexTensor>() {
        Some(Kind::Inner)
    } else if id == TypeId::of::<Autodiff<Flex, NoCheckpointing>>() {
        Some(Kind::Plain)
    } else if id == TypeId::of::<Autodiff<Flex, BalancedCheckpointing>>() {
        Some(Kind::Balanced)
    } else {
        None
    }
}

/// Whether `B` is one of the backends handled here.
pub(super) fn handles<B: Backend>() -> bool {
    kind::<B>().is_some()
}

fn prim<B: Backend, const D: usize>(t: Tensor<B, D>) -> B::FloatTensorPrimitive {
    t.into_primitive().tensor()
}

fn wrap<B: Backend, const D: usize>(p: B::FloatTensorPrimitive) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

/// `t` with a contiguous f32 buffer (itself when it already has one).
fn dense(t: &FlexTensor) -> FlexTensor {
    if t.as_slice::<f32>().is_some() {
        t.clone()
    } else {
        t.to_contiguous()
    }
}

/// The f32 elements of a [`dense`] tensor.
fn f32s(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().unwrap_or(&[])
}

/// Length of the last dimension (0 for a scalar).
fn last(shape: &Shape) -> usize {
    shape.num_dims().checked_sub(1).map_or(0, |d| shape[d])
}

fn tensor(values: Vec<f32>, shape: Shape) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// Runs `inner` on `Flex` primitives, or `plain` / `balanced` (the same function for the two strategies)
/// on `Autodiff<Flex>` primitives, for the one-input operations.
fn unary<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    inner: impl FnOnce(FlexTensor) -> FlexTensor,
    plain: impl FnOnce(AdPrim) -> AdPrim,
    balanced: impl FnOnce(AdPrim) -> AdPrim,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    let Some(kind) = kind::<B>() else {
        return Err(x);
    };
    let out: B::FloatTensorPrimitive = match kind {
        Kind::Inner => same(inner(same(prim(x)))),
        Kind::Plain => same(plain(same(prim(x)))),
        Kind::Balanced => same(balanced(same(prim(x)))),
    };
    Ok(wrap(out))
}

/// The two-input version of [`unary`].
fn binary<B: Backend, const D1: usize, const D2: usize>(
    a: Tensor<B, D1>,
    b: Tensor<B, D2>,
    inner: impl FnOnce(FlexTensor, FlexTensor) -> FlexTensor,
    plain: impl FnOnce(AdPrim, AdPrim) -> AdPrim,
    balanced: impl FnOnce(AdPrim, AdPrim) -> AdPrim,
) -> Result<Tensor<B, D1>, (Tensor<B, D1>, Tensor<B, D2>)> {
    let Some(kind) = kind::<B>() else {
        return Err((a, b));
    };
    let out: B::FloatTensorPrimitive = match kind {
        Kind::Inner => same(inner(same(prim(a)), same(prim(b)))),
        Kind::Plain => same(plain(same(prim(a)), same(prim(b)))),
        Kind::Balanced => same(balanced(same(prim(a)), same(prim(b)))),
    };
    Ok(wrap(out))
}

// ---------------------------------------------------------------------------------------------------------
// silu(gate) * up

/// `silu(gate) * up` for f32 tensors of one shape.
pub(super) fn silu_mul<B: Backend, const D: usize>(
    gate: Tensor<B, D>,
    up: Tensor<B, D>,
) -> Result<Tensor<B, D>, (Tensor<B, D>, Tensor<B, D>)> {
    binary(
        gate,
        up,
        |g, u| silu_mul_forward(&dense(&g), &dense(&u)),
        silu_mul_autodiff::<NoCheckpointing>,
        silu_mul_autodiff::<BalancedCheckpointing>,
    )
}

fn silu_mul_forward(g: &FlexTensor, u: &FlexTensor) -> FlexTensor {
    tensor(kernels::silu_mul(f32s(g), f32s(u)), g.shape())
}

#[derive(Debug)]
struct SiluMul;

impl Backward<Flex, 2> for SiluMul {
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [gate_node, up_node] = ops.parents;
        let grad = dense(&grads.consume::<Flex>(&ops.node));
        let (g, u) = ops.state;
        let want = (gate_node.is_some(), up_node.is_some());
        let (dg, du) = kernels::silu_mul_backward(f32s(&g), f32s(&u), f32s(&grad), want);
        if let (Some(node), Some(dg)) = (gate_node, dg) {
            grads.register::<Flex>(node.id, tensor(dg, g.shape()));
        }
        if let (Some(node), Some(du)) = (up_node, du) {
            grads.register::<Flex>(node.id, tensor(du, u.shape()));
        }
    }
}

fn silu_mul_autodiff<C: CheckpointStrategy>(gate: AdPrim, up: AdPrim) -> AdPrim {
    let (g, u) = (dense(&gate.primitive), dense(&up.primitive));
    let out = silu_mul_forward(&g, &u);
    match SiluMul
        .prepare::<C>([gate.node.clone(), up.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((g, u), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

// ---------------------------------------------------------------------------------------------------------
// RMSNorm

/// `x * rsqrt(mean(x², last) + eps) * w` for f32 `x` `[.., n]` and `w` `[n]`.
pub(super) fn rms_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    w: Tensor<B, 1>,
    eps: f32,
) -> Result<Tensor<B, D>, (Tensor<B, D>, Tensor<B, 1>)> {
    binary(
        x,
        w,
        |x, w| rms_norm_forward(&dense(&x), &dense(&w), eps).0,
        |x, w| rms_norm_autodiff::<NoCheckpointing>(x, w, eps),
        |x, w| rms_norm_autodiff::<BalancedCheckpointing>(x, w, eps),
    )
}

fn rms_norm_forward(x: &FlexTensor, w: &FlexTensor, eps: f32) -> (FlexTensor, Vec<f32>) {
    let shape = x.shape();
    let n = last(&shape);
    let (y, r) = kernels::rms_norm(f32s(x), f32s(w), eps, n);
    (tensor(y, shape), r)
}

#[derive(Debug)]
struct RmsNormOp;

impl Backward<Flex, 2> for RmsNormOp {
    /// The input, the scale and each row's `1 / rms`.
    type State = (FlexTensor, FlexTensor, Vec<f32>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node, w_node] = ops.parents;
        let grad = dense(&grads.consume::<Flex>(&ops.node));
        let (x, w, r) = ops.state;
        let (x_shape, w_shape) = (x.shape(), w.shape());
        let n = last(&x_shape);
        let want = (x_node.is_some(), w_node.is_some());
        let (dx, dw) = kernels::rms_norm_backward(f32s(&x), f32s(&w), &r, f32s(&grad), n, want);
        if let (Some(node), Some(dx)) = (x_node, dx) {
            grads.register::<Flex>(node.id, tensor(dx, x_shape));
        }
        if let (Some(node), Some(dw)) = (w_node, dw) {
            grads.register::<Flex>(node.id, tensor(dw, w_shape));
        }
    }
}

fn rms_norm_autodiff<C: CheckpointStrategy>(x: AdPrim, w: AdPrim, eps: f32) -> AdPrim {
    let (xd, wd) = (dense(&x.primitive), dense(&w.primitive));
    let (out, r) = rms_norm_forward(&xd, &wd, eps);
    match RmsNormOp
        .prepare::<C>([x.node.clone(), w.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((xd, wd, r), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

// ---------------------------------------------------------------------------------------------------------
// softmax(x * scale + mask) over the last dimension

/// The inputs of [`softmax_scaled_masked`], given back when `B` is not handled here.
type ScoresAndMask<B, const D: usize> = (Tensor<B, D>, Option<Tensor<B, D>>);

/// Softmax of f32 `x * scale + mask` over the last dimension; `mask` (no gradient) has `x`'s last
/// dimension and, elsewhere, `x`'s sizes or 1 (broadcast). The caller checks the shapes.
pub(super) fn softmax_scaled_masked<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    scale: f32,
    mask: Option<Tensor<B, D>>,
) -> Result<Tensor<B, D>, ScoresAndMask<B, D>> {
    let Some(kind) = kind::<B>() else {
        return Err((x, mask));
    };
    let out: B::FloatTensorPrimitive = match kind {
        Kind::Inner => {
            let mask = mask.map(|m| dense(&same::<_, FlexTensor>(prim(m))));
            same(masked_forward(&dense(&same(prim(x))), scale, mask.as_ref()))
        }
        Kind::Plain | Kind::Balanced => {
            let x: AdPrim = same(prim(x));
            let mask = mask.map(|m| dense(&same::<_, AdPrim>(prim(m)).primitive));
            let out = masked_forward(&dense(&x.primitive), scale, mask.as_ref());
            let out = if matches!(kind, Kind::Plain) {
                masked_autodiff::<NoCheckpointing>(x, scale, out)
            } else {
                masked_autodiff::<BalancedCheckpointing>(x, scale, out)
            };
            same(out)
        }
    };
    Ok(wrap(out))
}

/// The start of the mask row that each row of `x` adds (see [`softmax_scaled_masked`]).
fn mask_row_starts(x: &Shape, mask: &Shape) -> Vec<usize> {
    let rank = x.num_dims();
    let n = last(x);
    let rows: usize = (0..rank.saturating_sub(1)).map(|d| x[d]).product();
    // Stride (in mask rows) of each leading dimension, 0 where the mask broadcasts.
    let mut strides = vec![0usize; rank.saturating_sub(1)];
    let mut stride = 1;
    for d in (0..rank.saturating_sub(1)).rev() {
        strides[d] = if mask[d] == 1 { 0 } else { stride };
        stride *= mask[d];
    }
    (0..rows)
        .map(|mut r| {
            let mut start = 0;
            for d in (0..rank - 1).rev() {
                start += (r % x[d]) * strides[d];
                r /= x[d];
            }
            start * n
        })
        .collect()
}

fn masked_forward(x: &FlexTensor, scale: f32, mask: Option<&FlexTensor>) -> FlexTensor {
    let shape = x.shape();
    let starts = mask.map(|m| mask_row_starts(&shape, &m.shape()));
    let mask = mask.zip(starts.as_deref()).map(|(m, s)| (f32s(m), s));
    tensor(
        kernels::softmax_scaled_masked(f32s(x), scale, mask, last(&shape)),
        shape,
    )
}

#[derive(Debug)]
struct SoftmaxScaled;

impl Backward<Flex, 1> for SoftmaxScaled {
    /// The output and the scale.
    type State = (FlexTensor, f32);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [Some(node)] = ops.parents else {
            return;
        };
        let grad = dense(&grads.consume::<Flex>(&ops.node));
        let (y, scale) = ops.state;
        let shape = y.shape();
        let dx = kernels::softmax_scaled_backward(f32s(&y), f32s(&grad), scale, last(&shape));
        grads.register::<Flex>(node.id, tensor(dx, shape));
    }
}

fn masked_autodiff<C: CheckpointStrategy>(x: AdPrim, scale: f32, out: FlexTensor) -> AdPrim {
    match SoftmaxScaled
        .prepare::<C>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((out.clone(), scale), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

// ---------------------------------------------------------------------------------------------------------
// target log-probabilities

/// Per-row target data of [`target_logprobs`]: the targets, the inverse temperatures and each row's
/// log-sum-exp.
#[derive(Clone, Debug)]
struct TargetState {
    logits: FlexTensor,
    targets: Vec<usize>,
    inv_temp: Option<Vec<f32>>,
    lse: Vec<f32>,
}

/// `log_softmax(z * s)[target]` for f32 `z` `[rows, n]`; callers check targets and lengths.
pub(super) fn target_logprobs<B: Backend>(
    z: Tensor<B, 2>,
    targets: &[usize],
    inv_temp: Option<&[f32]>,
) -> Result<Tensor<B, 1>, Tensor<B, 2>> {
    let Some(kind) = kind::<B>() else {
        return Err(z);
    };
    let owned = || (targets.to_vec(), inv_temp.map(<[f32]>::to_vec));
    let out: B::FloatTensorPrimitive = match kind {
        Kind::Inner => {
            let z = dense(&same::<_, FlexTensor>(prim(z)));
            same(target_forward(z, owned().0, owned().1).0)
        }
        Kind::Plain => {
            let (t, s) = owned();
            same(target_autodiff::<NoCheckpointing>(same(prim(z)), t, s))
        }
        Kind::Balanced => {
            let (t, s) = owned();
            same(target_autodiff::<BalancedCheckpointing>(
                same(prim(z)),
                t,
                s,
            ))
        }
    };
    Ok(wrap(out))
}

fn target_forward(
    logits: FlexTensor,
    targets: Vec<usize>,
    inv_temp: Option<Vec<f32>>,
) -> (FlexTensor, TargetState) {
    let n = last(&logits.shape());
    let (out, lse) = kernels::target_logprobs(f32s(&logits), &targets, inv_temp.as_deref(), n);
    let rows = out.len();
    let state = TargetState {
        logits,
        targets,
        inv_temp,
        lse,
    };
    (tensor(out, Shape::new([rows])), state)
}

#[derive(Debug)]
struct TargetLogprobs;

impl Backward<Flex, 1> for TargetLogprobs {
    type State = TargetState;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [Some(node)] = ops.parents else {
            return;
        };
        let grad = dense(&grads.consume::<Flex>(&ops.node));
        let s = ops.state;
        let shape = s.logits.shape();
        let n = last(&shape);
        let dz = kernels::target_logprobs_backward(
            f32s(&s.logits),
            &s.targets,
            s.inv_temp.as_deref(),
            &s.lse,
            f32s(&grad),
            n,
        );
        grads.register::<Flex>(node.id, tensor(dz, shape));
    }
}

fn target_autodiff<C: CheckpointStrategy>(
    z: AdPrim,
    targets: Vec<usize>,
    inv_temp: Option<Vec<f32>>,
) -> AdPrim {
    let (out, state) = target_forward(dense(&z.primitive), targets, inv_temp);
    match TargetLogprobs
        .prepare::<C>([z.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(state, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

// ---------------------------------------------------------------------------------------------------------
// permutation into a contiguous layout

/// `x.permute(axes)` laid out contiguously (callers check that `axes` is a permutation of the dimensions).
pub(super) fn permute<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    axes: [usize; D],
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    unary(
        x,
        |x| permute_forward(&dense(&x), &axes),
        |x| permute_autodiff::<NoCheckpointing>(x, axes.to_vec()),
        |x| permute_autodiff::<BalancedCheckpointing>(x, axes.to_vec()),
    )
}

fn permute_forward(x: &FlexTensor, axes: &[usize]) -> FlexTensor {
    let shape = x.shape();
    let dims: Vec<usize> = (0..shape.num_dims()).map(|d| shape[d]).collect();
    let out_dims: Vec<usize> = axes.iter().map(|&a| dims[a]).collect();
    tensor(
        kernels::permute(f32s(x), &dims, axes),
        Shape::from(out_dims),
    )
}

#[derive(Debug)]
struct Permute;

impl Backward<Flex, 1> for Permute {
    /// The permutation.
    type State = Vec<usize>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [Some(node)] = ops.parents else {
            return;
        };
        let grad = dense(&grads.consume::<Flex>(&ops.node));
        let axes = ops.state;
        let mut inverse = vec![0usize; axes.len()];
        for (i, &a) in axes.iter().enumerate() {
            inverse[a] = i;
        }
        grads.register::<Flex>(node.id, permute_forward(&grad, &inverse));
    }
}

fn permute_autodiff<C: CheckpointStrategy>(x: AdPrim, axes: Vec<usize>) -> AdPrim {
    let out = permute_forward(&dense(&x.primitive), &axes);
    match Permute
        .prepare::<C>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(axes, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}
