//! The SwiGLU MLP shared by the vision blocks (with biases) and the text decoder (without).

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use crate::loading::ParamLoader;
use crate::model::linear::linear;

/// `down(silu(gate(x)) * up(x))`: keys `{prefix}.gate_proj`, `{prefix}.up_proj`, `{prefix}.down_proj`.
#[derive(Module, Debug)]
pub struct SwiGlu<B: Backend> {
    /// `hidden -> intermediate`, gated by SiLU.
    pub gate_proj: Linear<B>,
    /// `hidden -> intermediate`.
    pub up_proj: Linear<B>,
    /// `intermediate -> hidden`.
    pub down_proj: Linear<B>,
}

impl<B: Backend> SwiGlu<B> {
    pub(crate) fn load(
        p: &mut ParamLoader<'_, B>,
        prefix: &str,
        hidden: usize,
        inter: usize,
        bias: bool,
    ) -> Self {
        let std = 0.02;
        Self {
            gate_proj: p.linear(&format!("{prefix}.gate_proj"), hidden, inter, bias, std),
            up_proj: p.linear(&format!("{prefix}.up_proj"), hidden, inter, bias, std),
            down_proj: p.linear(&format!("{prefix}.down_proj"), inter, hidden, bias, std),
        }
    }

    /// Applies the MLP.
    ///
    /// # Shapes
    /// - `x`: `[.., hidden]`
    /// - output: `[.., hidden]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        // The activation in f32 and rounded once, as torch's fused kernel does in bf16.
        let gate = linear(&self.gate_proj, x.clone()); // [.., inter]
        let dtype = gate.dtype();
        let gate = silu(gate.cast(DType::F32)).cast(dtype);
        linear(&self.down_proj, gate * linear(&self.up_proj, x))
    }
}
