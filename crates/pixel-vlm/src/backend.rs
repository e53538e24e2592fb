//! The default CPU backend chosen by the crate features, and the device type to go with it.
//!
//! Model code is generic over `B: Backend`; this only names a convenient default for examples, tests and
//! benchmarks: `flex` when that feature is on, else `ndarray`. With only `cuda`, use
//! `burn::backend::Cuda` directly.

/// The default CPU backend (`burn::backend::Flex` with the `flex` feature, else `burn::backend::NdArray`).
#[cfg(feature = "flex")]
pub type CpuBackend = burn::backend::Flex;

/// The default CPU backend (`burn::backend::Flex` with the `flex` feature, else `burn::backend::NdArray`).
#[cfg(all(feature = "ndarray", not(feature = "flex")))]
pub type CpuBackend = burn::backend::NdArray<f32>;
