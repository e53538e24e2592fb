//! Gradients summed across ranks in module order, packed into buckets; the parameter fingerprint compared
//! at joining.

use std::collections::HashSet;

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{FloatDType, Tensor};

use super::Collective;
use crate::error::{Result, RlError};

/// Takes the gradient of every trainable parameter out of `grads`, flattened, in module order (zeros where
/// this rank has none).
struct Take<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    seen: HashSet<ParamId>,
    out: Vec<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Take<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val();
        if !value.is_require_grad() || !self.seen.insert(param.id) {
            return;
        }
        let grad = self
            .grads
            .remove::<B::InnerBackend, D>(param.id)
            .unwrap_or_else(|| Tensor::zeros(value.shape(), &value.device()));
        let n = grad.shape().num_elements();
        self.out.push(grad.cast(FloatDType::F32).reshape([n]));
    }
}

/// Puts the reduced gradients back, in the same order.
struct Put<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    seen: HashSet<ParamId>,
    reduced: std::vec::IntoIter<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Put<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val();
        if !value.is_require_grad() || !self.seen.insert(param.id) {
            return;
        }
        if let Some(flat) = self.reduced.next() {
            let grad = flat
                .reshape(value.shape())
                .cast(FloatDType::from(value.dtype()));
            self.grads.register::<B::InnerBackend, D>(param.id, grad);
        }
    }
}

/// `grads` (this rank's gradients of `model`) summed over all ranks of `collective`: every trainable
/// parameter's gradient, in module order, packed into buckets of the layout's `bucket_elements` values per
/// all-reduce call (a parameter larger than a bucket goes alone). A trainable parameter without a gradient
/// here counts as zeros, so every rank makes the same calls; the result holds a gradient for every trainable
/// parameter. Every rank gets the same values.
///
/// # Errors
/// [`RlError::Collective`] when an all-reduce fails (ranks with models of different shapes).
pub fn all_reduce_gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    mut grads: GradientsParams,
    collective: &Collective,
) -> Result<GradientsParams> {
    let mut take = Take::<B> {
        grads: &mut grads,
        seen: HashSet::new(),
        out: Vec::new(),
    };
    model.visit(&mut take);
    let flats = take.out;
    let sizes: Vec<usize> = flats.iter().map(|t| t.dims()[0]).collect();
    let mut reduced = Vec::with_capacity(flats.len());
    let mut bucket: Vec<Tensor<B::InnerBackend, 1>> = Vec::new();
    let mut filled = 0usize;
    let limit = collective.layout().bucket_elements;
    let flush = |bucket: &mut Vec<Tensor<B::InnerBackend, 1>>, reduced: &mut Vec<_>| {
        if bucket.is_empty() {
            return Ok::<(), RlError>(());
        }
        let lens: Vec<usize> = bucket.iter().map(|t| t.dims()[0]).collect();
        let packed = Tensor::cat(std::mem::take(bucket), 0);
        let summed = collective.all_reduce_sum::<B::InnerBackend>(packed)?;
        let mut at = 0;
        for len in lens {
            reduced.push(summed.clone().slice(at..at + len));
            at += len;
        }
        Ok(())
    };
    for (flat, n) in flats.into_iter().zip(sizes) {
        if filled + n > limit {
            flush(&mut bucket, &mut reduced)?;
            filled = 0;
        }
        bucket.push(flat);
        filled += n;
    }
    flush(&mut bucket, &mut reduced)?;
    let mut put = Put::<B> {
        grads: &mut grads,
        seen: HashSet::new(),
        reduced: reduced.into_iter(),
    };
    model.visit(&mut put);
    Ok(grads)
}

/// Sums each float parameter (and the sum of its squares), in module order: two numbers per parameter that
/// differ between ranks whose parameters differ.
struct Fingerprint {
    seen: HashSet<ParamId>,
    out: Vec<f64>,
}

impl<B: Backend> ModuleVisitor<B> for Fingerprint {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !self.seen.insert(param.id) {
            return;
        }
        let v = param.val().float_cast_f32_flat();
        self.out
            .push(crate::trainer::scalar(v.clone().sum()).into());
        self.out
            .push(crate::trainer::scalar(v.powi_scalar(2).sum()).into());
    }
}

/// A tensor's values as an f32 vector tensor (any float dtype).
trait FlatF32<B: Backend> {
    fn float_cast_f32_flat(self) -> Tensor<B, 1>;
}

impl<B: Backend, const D: usize> FlatF32<B> for Tensor<B, D> {
    fn float_cast_f32_flat(self) -> Tensor<B, 1> {
        let n = self.shape().num_elements();
        self.cast(burn::tensor::FloatDType::F32).reshape([n])
    }
}

/// Two numbers per float parameter of `module` (its sum and its sum of squares, in f32), in module order.
pub fn parameter_fingerprint<B: Backend, M: burn::module::Module<B>>(module: &M) -> Vec<f64> {
    let mut f = Fingerprint {
        seen: HashSet::new(),
        out: Vec::new(),
    };
    module.visit(&mut f);
    f.out
}

impl Collective {
    /// Checks that every rank holds the same parameters as this one (by [`parameter_fingerprint`], to
    /// a relative 1e-5): ranks that loaded different checkpoints, or seeded adapters differently, are
    /// refused before they train.
    ///
    /// # Errors
    /// [`RlError::Collective`] naming the first parameter (in module order) that differs, or when the
    /// all-reduce fails (models of different structure).
    pub fn check_identical<B: Backend, M: burn::module::Module<B>>(
        &self,
        module: &M,
        device: &B::Device,
    ) -> Result<()> {
        let mine = parameter_fingerprint::<B, M>(module);
        let all = self.sum::<B>(&mine, device)?;
        let w = self.world_size() as f64;
        for (k, (m, s)) in mine.iter().zip(&all).enumerate() {
            let want = m * w;
            if (s - want).abs() > 1e-5 * want.abs().max(1.0) {
                return Err(RlError::Collective(format!(
                    "rank {}: parameter {} (in module order) differs between ranks ({} here, {} summed over \
                     {} ranks): every rank must start from the same weights",
                    self.rank(),
                    k / 2,
                    m,
                    s,
                    self.world_size()
                )));
            }
        }
        Ok(())
    }
}
