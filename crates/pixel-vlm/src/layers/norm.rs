//! RMSNorm as transformers' `Qwen2RMSNorm` computes it, in any dtype.

use burn::nn::RmsNorm;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// `gamma * (x / sqrt(mean(x²) + eps))`, with the statistics and the normalisation in f32 and the result cast
/// back to the input dtype before the scale, as `Qwen2RMSNorm` does (burn's `RmsNorm::forward` divides in the
/// input dtype, which rounds differently in bf16). In f32 the two agree.
///
/// # Shapes
/// - `x`: `[.., d_model]`
/// - output: the shape of `x`
pub fn rms_norm<B: Backend, const D: usize>(norm: &RmsNorm<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    crate::fused::rms_norm(x, norm.gamma.val(), norm.epsilon)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::tensor::DType;
    use burn::tensor::TensorData;

    type B = crate::backend::CpuBackend;

    #[test]
    fn matches_the_formula_in_f32() {
        let device = Default::default();
        let norm = RmsNorm::<B> {
            gamma: Param::from_tensor(Tensor::from_data([1.0f32, 2.0, 0.5], &device)),
            epsilon: 1e-6,
        };
        let x = Tensor::<B, 2>::from_data([[1.0f32, -2.0, 3.0], [0.0, 0.5, 0.25]], &device);
        let got = rms_norm(&norm, x).into_data().to_vec::<f32>().unwrap();
        let rows = [[1.0f32, -2.0, 3.0], [0.0, 0.5, 0.25]];
        let gamma = [1.0f32, 2.0, 0.5];
        for (r, row) in rows.iter().enumerate() {
            let ms = row.iter().map(|v| v * v).sum::<f32>() / 3.0;
            let inv = 1.0 / (ms + 1e-6).sqrt();
            for c in 0..3 {
                let want = row[c] * inv * gamma[c];
                assert!((got[r * 3 + c] - want).abs() < 1e-6, "{r},{c}");
            }
        }
    }

    #[test]
    fn keeps_the_input_dtype() {
        let device = Default::default();
        let norm = RmsNorm::<B> {
            gamma: Param::from_tensor(Tensor::from_data(
                TensorData::new(vec![1.0f32; 4], [4]),
                (&device, DType::BF16),
            )),
            epsilon: 1e-6,
        };
        let x = Tensor::<B, 2>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [1, 4]),
            (&device, DType::BF16),
        );
        assert_eq!(rms_norm(&norm, x).dtype(), DType::BF16);
    }
}
