//! Handing each layer its parameters ([`ParamLoader`]) and the host tensors they are converted from.

use std::collections::BTreeSet;

use burn::module::Param;
use burn::nn::{Embedding, Linear, RmsNorm};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor, TensorData};
use half::{bf16, f16};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::index::CheckpointIndex;
use crate::error::{Result, VlmError};

/// One tensor's elements on the host, row-major, in the type the checkpoint stores (converted only when
/// uploaded, to the model's dtype, so a bf16 checkpoint loaded as bf16 is never widened).
#[derive(Debug, Clone, PartialEq)]
pub enum HostTensor {
    /// f32 elements.
    F32(Vec<f32>),
    /// f16 elements.
    F16(Vec<f16>),
    /// bf16 elements.
    BF16(Vec<bf16>),
}

impl HostTensor {
    /// The elements widened to f32.
    pub fn into_f32(self) -> Vec<f32> {
        match self {
            Self::F32(v) => v,
            Self::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            Self::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
        }
    }

    /// Burn tensor data of the given shape (same element type).
    pub fn into_data(self, shape: Vec<usize>) -> TensorData {
        match self {
            Self::F32(v) => TensorData::new(v, shape),
            Self::F16(v) => TensorData::new(v, shape),
            Self::BF16(v) => TensorData::new(v, shape),
        }
    }

    /// The `[rows, cols]` matrix transposed to `[cols, rows]`, same element type.
    pub fn transpose(self, rows: usize, cols: usize) -> Self {
        match self {
            Self::F32(v) => Self::F32(transpose(&v, rows, cols)),
            Self::F16(v) => Self::F16(transpose(&v, rows, cols)),
            Self::BF16(v) => Self::BF16(transpose(&v, rows, cols)),
        }
    }
}

/// Row-major `[rows, cols]` to row-major `[cols, rows]`.
fn transpose<T: Copy + Default>(m: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut out = vec![T::default(); m.len()];
    for (r, row) in m.chunks_exact(cols.max(1)).take(rows).enumerate() {
        for (c, &x) in row.iter().enumerate() {
            out[c * rows + r] = x;
        }
    }
    out
}

/// How a parameter is initialised when it is not loaded from a checkpoint.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Init {
    /// All ones (norm scales).
    Ones,
    /// All zeros (biases).
    Zeros,
    /// Normal with mean 0 and this standard deviation.
    Normal(f64),
}

enum Source {
    Checkpoint(CheckpointIndex),
    Random(Box<ChaCha8Rng>),
}

/// Hands each layer its parameters by name, from a checkpoint or from a seeded random initialiser, and
/// collects every problem so that [`ParamLoader::finish`] reports them together.
pub(crate) struct ParamLoader<'a, B: Backend> {
    device: &'a B::Device,
    /// The dtype every parameter is uploaded as.
    dtype: FloatDType,
    source: Source,
    used: BTreeSet<String>,
    missing: Vec<String>,
    mismatched: Vec<String>,
    /// Names the model may leave unused without an error (a saved `lm_head` of a tied model).
    tolerated: BTreeSet<String>,
    io_error: Option<VlmError>,
    /// Every parameter asked for, with its shape (tests compare it with [`TensorPlan`](super::TensorPlan)).
    #[cfg(test)]
    pub(crate) requested: Vec<(String, Vec<usize>)>,
}

impl<'a, B: Backend> ParamLoader<'a, B> {
    pub(crate) fn from_checkpoint(
        index: CheckpointIndex,
        device: &'a B::Device,
        dtype: FloatDType,
    ) -> Self {
        Self::new(Source::Checkpoint(index), device, dtype)
    }

    /// A seeded random source in the device's default float dtype (benchmarks, tests, layer configs' `init`).
    pub(crate) fn random(seed: u64, device: &'a B::Device) -> Self {
        let dtype = burn::tensor::get_device_settings::<B>(device).float_dtype;
        Self::new(
            Source::Random(Box::new(ChaCha8Rng::seed_from_u64(seed))),
            device,
            dtype,
        )
    }

    fn new(source: Source, device: &'a B::Device, dtype: FloatDType) -> Self {
        Self {
            device,
            dtype,
            source,
            used: BTreeSet::new(),
            missing: Vec::new(),
            mismatched: Vec::new(),
            tolerated: BTreeSet::new(),
            io_error: None,
            #[cfg(test)]
            requested: Vec::new(),
        }
    }

    /// Lets `name` be present in the checkpoint without being used.
    pub(crate) fn tolerate(&mut self, name: &str) {
        self.tolerated.insert(name.to_string());
    }

    /// Host data of parameter `name` with the given shape (row-major), in the checkpoint's element type.
    pub(crate) fn host(&mut self, name: &str, shape: &[usize], init: Init) -> HostTensor {
        #[cfg(test)]
        self.requested.push((name.to_string(), shape.to_vec()));
        // Representable: the config was validated (`Qwen25VlConfig::validate` checks every parameter's
        // element count) before any layer asks for its parameters.
        let numel: usize = shape.iter().product();
        let zeros = || HostTensor::F32(vec![0.0; numel]);
        match &mut self.source {
            Source::Random(rng) => HostTensor::F32(match init {
                Init::Ones => vec![1.0; numel],
                Init::Zeros => vec![0.0; numel],
                Init::Normal(std) => (0..numel)
                    .map(|_| {
                        // Box–Muller: enough for benchmark and test weights.
                        let u1: f64 = rng.random::<f64>().max(1e-12);
                        let u2: f64 = rng.random::<f64>();
                        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos() * std) as f32
                    })
                    .collect(),
            }),
            Source::Checkpoint(index) => {
                self.used.insert(name.to_string());
                match index.shape(name) {
                    None => {
                        self.missing.push(name.to_string());
                        zeros()
                    }
                    Some(found) if found != shape => {
                        self.mismatched
                            .push(format!("{name}: expected {shape:?}, found {found:?}"));
                        zeros()
                    }
                    Some(_) => match index.read(name) {
                        Ok(Some(data)) => data,
                        Ok(None) => zeros(),
                        Err(err) => {
                            self.io_error.get_or_insert(err);
                            zeros()
                        }
                    },
                }
            }
        }
    }

    /// Uploads host data as a tensor of the model's dtype (converting the element type on the way).
    fn upload<const D: usize>(&self, data: HostTensor, shape: [usize; D]) -> Tensor<B, D> {
        Tensor::from_data(
            data.into_data(shape.to_vec()),
            (self.device, DType::from(self.dtype)),
        )
    }

    /// Parameter `name` as a tensor of the given shape.
    pub(crate) fn tensor<const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
        init: Init,
    ) -> Tensor<B, D> {
        let data = self.host(name, &shape, init);
        self.upload(data, shape)
    }

    /// A `torch.nn.Linear` stored as `{prefix}.weight` `[d_out, d_in]` (+ `{prefix}.bias`), transposed into
    /// burn's `[d_in, d_out]` layout.
    pub(crate) fn linear(
        &mut self,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        std: f64,
    ) -> Linear<B> {
        let weight = self.host(
            &format!("{prefix}.weight"),
            &[d_out, d_in],
            Init::Normal(std),
        );
        self.linear_from_rows(prefix, weight, d_in, d_out, bias)
    }

    /// A linear layer from a `[d_out, d_in]` row-major weight already read (e.g. a reshaped conv kernel).
    pub(crate) fn linear_from_rows(
        &mut self,
        prefix: &str,
        weight: HostTensor,
        d_in: usize,
        d_out: usize,
        bias: bool,
    ) -> Linear<B> {
        let weight = self.upload(weight.transpose(d_out, d_in), [d_in, d_out]);
        let bias = bias.then(|| {
            Param::from_tensor(self.tensor(&format!("{prefix}.bias"), [d_out], Init::Zeros))
        });
        Linear {
            weight: Param::from_tensor(weight),
            bias,
        }
    }

    /// An RMSNorm with scale `{prefix}.weight`.
    pub(crate) fn rms_norm(&mut self, prefix: &str, dim: usize, eps: f64) -> RmsNorm<B> {
        RmsNorm {
            gamma: Param::from_tensor(self.tensor(&format!("{prefix}.weight"), [dim], Init::Ones)),
            epsilon: eps,
        }
    }

    /// An embedding table `{prefix}.weight` `[n, dim]`.
    pub(crate) fn embedding(
        &mut self,
        prefix: &str,
        n: usize,
        dim: usize,
        std: f64,
    ) -> Embedding<B> {
        Embedding {
            weight: Param::from_tensor(self.tensor(
                &format!("{prefix}.weight"),
                [n, dim],
                Init::Normal(std),
            )),
        }
    }

    /// Ends loading: any missing, unexpected or mis-shaped tensor (or a failed read) is an error.
    pub(crate) fn finish(self) -> Result<()> {
        if let Some(err) = self.io_error {
            return Err(err);
        }
        let unexpected: Vec<String> = match &self.source {
            Source::Random(_) => Vec::new(),
            Source::Checkpoint(index) => index
                .names()
                .filter(|n| !self.used.contains(*n) && !self.tolerated.contains(*n))
                .map(str::to_string)
                .collect(),
        };
        if self.missing.is_empty() && unexpected.is_empty() && self.mismatched.is_empty() {
            Ok(())
        } else {
            Err(VlmError::Weights {
                missing: self.missing,
                unexpected,
                mismatched: self.mismatched,
                // Unreadable dtypes are reported by `CheckpointIndex::check` before loading.
                unsupported_dtype: Vec::new(),
            })
        }
    }
}
