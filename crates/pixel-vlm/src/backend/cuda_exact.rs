//! Full-f32 matrix products on burn's CUDA backend ([`super::F32Matmul::Exact`]).
//!
//! burn 0.21's `float_matmul` on CUDA goes to cubek-matmul's `Strategy::Auto`, whose first choice
//! (`SimpleCyclicCmma`) stages f32 operands as TF32 (`cubek_matmul::definition::adjust_dtypes`). This calls
//! cubek's `Strategy::SimpleUnit` directly instead, the kernel `Auto` itself falls back to where tensor cores
//! are unavailable (so it handles every layout and broadcast burn passes): operands and accumulator in f32.
//! On `Autodiff<Cuda>` the product is an autodiff operation of its own whose backward products use the
//! same kernel (burn's own matmul backward would go through `float_matmul` again).
//!
//! The generic model code reaches it through a type check: the tensors of `B` are moved into the CUDA
//! types by `Any` downcasting when `B` is `Cuda` (any float element: they share one primitive) or
//! `Autodiff<Cuda>`, so nothing here is unsafe.

use std::any::TypeId;

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, binary};
use burn::backend::{Autodiff, Cuda};
use burn::tensor::backend::{Backend, BackendTypes};
use burn::tensor::ops::FloatTensorOps;
use burn::tensor::{DType, Shape, Tensor, TensorMetadata, TensorPrimitive};
use burn_cubecl::CubeRuntime;
use burn_cubecl::kernel::matmul::init_matmul_output;
use burn_cubecl::tensor::CubeTensor;
use cubek::matmul::definition::{MatmulElems, MatmulGlobalElems};
use cubek::matmul::launch::{Strategy, launch_ref};
use cubek::std::InputBinding;

use super::same;

/// burn's default CUDA backend (f32 floats, i32 ints), named in full for calls of its operations.
type CudaF32 = Cuda<f32, i32>;
/// The float primitive of every `Cuda<F>`: `CubeTensor<CudaRuntime>`.
type CudaPrim = <Cuda as BackendTypes>::FloatTensorPrimitive;
/// The float primitive of `Autodiff<Cuda>`.
type AutodiffPrim = <Autodiff<Cuda> as BackendTypes>::FloatTensorPrimitive;

fn is_cuda<B: Backend>() -> bool {
    TypeId::of::<B::FloatTensorPrimitive>() == TypeId::of::<CudaPrim>()
}

fn is_autodiff_cuda<B: Backend>() -> bool {
    TypeId::of::<B>() == TypeId::of::<Autodiff<Cuda>>()
}

/// Whether `B` is one of the CUDA backends [`matmul`] takes products on.
pub(super) fn handles<B: Backend>() -> bool {
    is_cuda::<B>() || is_autodiff_cuda::<B>()
}

/// `lhs @ rhs` (f32, with burn's broadcasting of leading dimensions) in full f32; `B` must be one of the
/// backends [`handles`] accepts.
pub(super) fn matmul<B: Backend, const D: usize>(
    lhs: Tensor<B, D>,
    rhs: Tensor<B, D>,
) -> Tensor<B, D> {
    let lhs = lhs.into_primitive().tensor();
    let rhs = rhs.into_primitive().tensor();
    let out: B::FloatTensorPrimitive = if is_cuda::<B>() {
        same(product(same::<_, CudaPrim>(lhs), same(rhs)))
    } else {
        assert!(
            is_autodiff_cuda::<B>(),
            "exact f32 matmul on another backend"
        );
        same(autodiff_product(same::<_, AutodiffPrim>(lhs), same(rhs)))
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// One launch of cubek's `SimpleUnit` matmul: f32 operands, stages, registers and accumulator.
fn product<R: CubeRuntime>(lhs: CubeTensor<R>, rhs: CubeTensor<R>) -> CubeTensor<R> {
    assert!(
        lhs.dtype == DType::F32 && rhs.dtype == DType::F32,
        "exact f32 matmul of {:?} x {:?}",
        lhs.dtype,
        rhs.dtype
    );
    let out = init_matmul_output(&lhs, &rhs, DType::F32);
    let client = out.client.clone();
    let f32_type = DType::F32.into();
    // `from_globals` keeps every stage in the global type; only the tensor-core routines narrow f32 to TF32.
    let mut dtypes = MatmulElems::from_globals(&MatmulGlobalElems {
        lhs: f32_type,
        rhs: f32_type,
        out: f32_type,
    });
    launch_ref(
        &Strategy::SimpleUnit(Default::default()),
        &client,
        InputBinding::new(lhs.binding(), f32_type),
        InputBinding::new(rhs.binding(), f32_type),
        out.clone().binding(),
        &mut dtypes,
    )
    .unwrap_or_else(|err| panic!("exact f32 matmul (cubek SimpleUnit): {err:?}"));
    out
}

/// Sums `grad` over the dimensions that `shape` broadcast (size 1 there, larger in `grad`).
fn unbroadcast(mut grad: CudaPrim, shape: &Shape) -> CudaPrim {
    let dims = grad.shape();
    for dim in 0..shape.num_dims() {
        if shape[dim] == 1 && dims[dim] != 1 {
            grad = CudaF32::float_sum_dim(grad, dim);
        }
    }
    grad
}

/// The product as an operation of `Autodiff<Cuda>`: the same forward and backward as burn's `float_matmul`
/// (`d lhs = grad @ rhs^T`, `d rhs = lhs^T @ grad`, summed over broadcast dimensions), every product in f32.
fn autodiff_product(lhs: AutodiffPrim, rhs: AutodiffPrim) -> AutodiffPrim {
    #[derive(Debug)]
    struct ExactMatmul;

    impl Backward<Cuda, 2> for ExactMatmul {
        type State = (Option<NodeId>, Option<NodeId>, Shape, Shape);

        fn backward(
            self,
            ops: Ops<Self::State, 2>,
            grads: &mut Gradients,
            checkpointer: &mut Checkpointer,
        ) {
            let (lhs, rhs, lhs_shape, rhs_shape) = ops.state;
            let lhs: Option<CudaPrim> = lhs.map(|id| checkpointer.retrieve_node_output(id));
            let rhs: Option<CudaPrim> = rhs.map(|id| checkpointer.retrieve_node_output(id));
            binary::<Cuda, _, _>(
                ops.parents,
                ops.node,
                grads,
                |grad| {
                    let rhs = CudaF32::float_transpose(rhs.expect("rhs kept for the lhs gradient"));
                    unbroadcast(product(grad, rhs), &lhs_shape)
                },
                |grad| {
                    let lhs = CudaF32::float_transpose(lhs.expect("lhs kept for the rhs gradient"));
                    unbroadcast(product(lhs, grad), &rhs_shape)
                },
            );
        }
    }

    let lhs_tracked = lhs.is_tracked();
    let rhs_tracked = rhs.is_tracked();
    let shapes = (lhs.primitive.shape(), rhs.primitive.shape());
    match ExactMatmul
        .prepare::<NoCheckpointing>([lhs.node.clone(), rhs.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            // Each operand is kept only if the other one needs a gradient.
            let lhs_state = rhs_tracked.then(|| prep.checkpoint(&lhs));
            let rhs_state = lhs_tracked.then(|| prep.checkpoint(&rhs));
            prep.finish(
                (lhs_state, rhs_state, shapes.0, shapes.1),
                product(lhs.primitive, rhs.primitive),
            )
        }
        OpsKind::UnTracked(prep) => prep.finish(product(lhs.primitive, rhs.primitive)),
    }
}
