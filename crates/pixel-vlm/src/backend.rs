//! The default CPU backend chosen by the crate features, and the device type to go with it.
//!
//! Model code is generic over `B: Backend`; this only names a convenient default for examples, tests and
//! benchmarks: `flex` when that feature is on, else `ndarray`; and, with `cuda`, the CUDA backend.

/// The default CPU backend (`burn::backend::Flex` with the `flex` feature, else `burn::backend::NdArray`).
#[cfg(feature = "flex")]
pub type CpuBackend = burn::backend::Flex;

/// The default CPU backend (`burn::backend::Flex` with the `flex` feature, else `burn::backend::NdArray`).
#[cfg(all(feature = "ndarray", not(feature = "flex")))]
pub type CpuBackend = burn::backend::NdArray<f32>;

/// The CUDA backend (`burn::backend::Cuda`, f32 by default; `Cuda<half::bf16>` computes in bf16).
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Cuda;
