//! The SwiGLU MLP shared by the vision blocks (with biases) and the text decoder (without).

use burn::config::Config;
use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::layers::linear::linear;
use crate::layers::lora::{LoraAdapter, adapted};
use crate::loading::ParamLoader;

/// `down(silu(gate(x)) * up(x))`: keys `{prefix}.gate_proj`, `{prefix}.up_proj`, `{prefix}.down_proj`.
#[derive(Module, Debug)]
pub struct SwiGlu<B: Backend> {
    /// `hidden -> intermediate`, gated by SiLU.
    pub gate_proj: Linear<B>,
    /// `hidden -> intermediate`.
    pub up_proj: Linear<B>,
    /// `intermediate -> hidden`.
    pub down_proj: Linear<B>,
    /// LoRA adapter of `gate_proj` ([`crate::lora`]); `None` without one.
    pub gate_proj_lora: Option<LoraAdapter<B>>,
    /// LoRA adapter of `up_proj`.
    pub up_proj_lora: Option<LoraAdapter<B>>,
    /// LoRA adapter of `down_proj`.
    pub down_proj_lora: Option<LoraAdapter<B>>,
}

/// Construction of a [`SwiGlu`].
#[derive(Config, Debug)]
pub struct SwiGluConfig {
    /// Model width.
    pub hidden_size: usize,
    /// Inner width.
    pub intermediate_size: usize,
    /// Whether the three projections have biases (the vision blocks' do, the decoder's do not).
    #[config(default = false)]
    pub bias: bool,
}

impl SwiGluConfig {
    /// A SwiGLU with seeded random weights (normal, std 0.02) in the device's default float dtype.
    ///
    /// # Panics
    /// If a width is zero.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SwiGlu<B> {
        assert!(
            self.hidden_size > 0 && self.intermediate_size > 0,
            "SwiGluConfig: widths must be positive, got {self:?}"
        );
        self.load(&mut ParamLoader::random(0, device), "mlp")
    }

    /// Reads `{prefix}.{gate,up,down}_proj` from the loader.
    pub(crate) fn load<B: Backend>(&self, p: &mut ParamLoader<'_, B>, prefix: &str) -> SwiGlu<B> {
        let (hidden, inter, bias, std) =
            (self.hidden_size, self.intermediate_size, self.bias, 0.02);
        SwiGlu {
            gate_proj: p.linear(&format!("{prefix}.gate_proj"), hidden, inter, bias, std),
            up_proj: p.linear(&format!("{prefix}.up_proj"), hidden, inter, bias, std),
            down_proj: p.linear(&format!("{prefix}.down_proj"), inter, hidden, bias, std),
            gate_proj_lora: None,
            up_proj_lora: None,
            down_proj_lora: None,
        }
    }
}

impl<B: Backend> SwiGlu<B> {
    /// Applies the MLP.
    ///
    /// # Shapes
    /// - `x`: `[.., hidden]`
    /// - output: `[.., hidden]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        // The activation in f32 and rounded once, as torch's fused kernel does in bf16 (`fused::silu_mul`).
        let gate = adapted(
            self.gate_proj_lora.as_ref(),
            linear(&self.gate_proj, x.clone()),
            x.clone(),
        ); // [.., inter]
        let up = adapted(
            self.up_proj_lora.as_ref(),
            linear(&self.up_proj, x.clone()),
            x,
        );
        let inner = crate::fused::silu_mul(gate, up);
        adapted(
            self.down_proj_lora.as_ref(),
            linear(&self.down_proj, inner.clone()),
            inner,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData, Tolerance};

    type B = crate::backend::CpuBackend;

    fn host<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    /// `x @ W + b` on the host, `W: [d_in, d_out]` row-major.
    fn affine(x: &[f32], w: &[f32], b: Option<&[f32]>, d_in: usize, d_out: usize) -> Vec<f64> {
        (0..d_out)
            .map(|o| {
                let dot: f64 = (0..d_in)
                    .map(|i| f64::from(x[i]) * f64::from(w[i * d_out + o]))
                    .sum();
                dot + b.map_or(0.0, |b| f64::from(b[o]))
            })
            .collect()
    }

    #[test]
    fn forward_matches_a_host_computation() {
        let device = Default::default();
        let mlp = SwiGluConfig::new(8, 12).with_bias(true).init::<B>(&device);
        let x = Tensor::<B, 2>::random([1, 8], Distribution::Default, &device);
        let got = mlp.forward(x.clone());

        let x = host(x);
        let weight = |l: &Linear<B>| host(l.weight.val());
        let bias = |l: &Linear<B>| l.bias.as_ref().map(|b| host(b.val()));
        let gate = affine(
            &x,
            &weight(&mlp.gate_proj),
            bias(&mlp.gate_proj).as_deref(),
            8,
            12,
        );
        let up = affine(
            &x,
            &weight(&mlp.up_proj),
            bias(&mlp.up_proj).as_deref(),
            8,
            12,
        );
        let inner: Vec<f32> = gate
            .iter()
            .zip(&up)
            .map(|(g, u)| (g / (1.0 + (-g).exp()) * u) as f32)
            .collect();
        let want = affine(
            &inner,
            &weight(&mlp.down_proj),
            bias(&mlp.down_proj).as_deref(),
            12,
            8,
        );
        let want: Vec<f32> = want.iter().map(|&v| v as f32).collect();
        got.into_data()
            .assert_approx_eq::<f32>(&TensorData::new(want, [1, 8]), Tolerance::absolute(1e-5));
    }

    #[test]
    #[should_panic(expected = "widths must be positive")]
    fn zero_width_panics() {
        let _ = SwiGluConfig::new(8, 0).init::<B>(&Default::default());
    }
}
