//! f32 master weights for full fine-tuning of a model held in bf16 (or f16).
//!
//! An optimizer step on bf16 parameters rounds `w - update` to bf16: at the recipe's learning rate of 1e-6 an
//! Adam update (about `lr` per element) is far below half a bf16 ulp of a typical weight (2^-9 relative: ~4e-5
//! at |w| = 0.02), so almost every weight silently stays where it was. burn 0.21 has no mixed precision;
//! [`MasterWeights`] is the standard remedy (as DeepSpeed's and Megatron's bf16 optimizers): it keeps an f32
//! copy of every trainable parameter, applies the optimizer to the copies with the gradients widened to
//! f32, and casts the copies back to each parameter's dtype for the next forward.
//!
//! ```
//! use burn::backend::Autodiff;
//! use burn::optim::{AdamWConfig, GradientsParams};
//! use pixel_vlm::train::{MasterWeights, Targets};
//! use pixel_vlm::{FloatDType, ForwardInput, Qwen25Vl, backend::CpuBackend};
//! type B = Autodiff<CpuBackend>;
//!
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/models/tiny_flat");
//! let mut model = Qwen25Vl::<B>::from_pretrained_with_dtype(dir, &Default::default(), FloatDType::BF16)?;
//! let mut master = MasterWeights::new(&model);
//! let mut optim = AdamWConfig::new().init::<B, Qwen25Vl<B>>();
//! let ids = [1u32, 2, 3, 4];
//! let positions: Vec<i64> = (0..3).flat_map(|_| 0..4).collect();
//! let input = ForwardInput { input_ids: &ids, batch: 1, positions: &positions, valid: None,
//!                            generated: None, images: None, videos: None };
//! let hidden = model.forward_train(&input)?;
//! let loss = model.target_logprobs(hidden, &Targets::new(&[2, 3, 4, 0]))?.logprobs.mean().neg();
//! let grads = GradientsParams::from_grads(loss.backward(), &model);
//! model = master.step(&mut optim, 1e-6, model, grads); // bf16 again, from the updated f32 copies
//! # Ok::<(), pixel_vlm::VlmError>(())
//! ```
//!
//! Memory per trainable parameter: the model's 2 bytes (bf16) + 4 for the master copy + the optimizer's
//! state (8 for AdamW's two f32 moments) = 14 bytes; a 7B model needs ~107 GB, which is why a 7B policy on
//! one 80 GB GPU trains LoRA adapters ([`crate::lora`]) instead. Frozen parameters are not copied.

use std::collections::HashMap;

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::{GradientsParams, LearningRate, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, Tensor};

use crate::error::{Result, VlmError};

/// f32 copies of a model's trainable parameters, stepped by an optimizer (see the module docs).
#[derive(Debug)]
pub struct MasterWeights<B: AutodiffBackend, M: AutodiffModule<B>> {
    /// The model with every trainable parameter in f32 (frozen ones shared with the model, as they were).
    master: Option<M>,
    /// Each parameter's dtype in the model.
    dtypes: HashMap<ParamId, DType>,
    _backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> MasterWeights<B, M> {
    /// f32 copies of `model`'s trainable float parameters, with the same ids (so gradients and optimizer
    /// state keyed by id apply to them). Parameters that are f32 already or frozen are shared, not copied.
    pub fn new(model: &M) -> Self {
        let mut widen = Widen {
            dtypes: HashMap::new(),
        };
        let master = model.clone().map(&mut widen);
        Self {
            master: Some(master),
            dtypes: widen.dtypes,
            _backend: std::marker::PhantomData,
        }
    }

    /// Master weights continued from f32 copies saved earlier (a checkpoint): `master`'s trainable float
    /// parameters become the copies (widened to f32 if they are not), and each parameter takes in the model
    /// the dtype of the parameter at the same place, in module order, of `model` (the model being trained,
    /// of the same architecture). Frozen parameters are cast to that dtype in the copies too (shared, as in
    /// [`MasterWeights::new`]). The ids are `master`'s.
    ///
    /// # Errors
    /// [`VlmError::Input`] when the two modules do not have the same number of float parameters.
    pub fn from_master(master: M, model: &M) -> Result<Self> {
        let mut dtypes = Dtypes(Vec::new());
        model.visit(&mut dtypes);
        let mut count = Dtypes(Vec::new());
        master.visit(&mut count);
        if count.0.len() != dtypes.0.len() {
            return Err(VlmError::Input {
                input: "master",
                reason: format!(
                    "{} float parameters, the model has {}",
                    count.0.len(),
                    dtypes.0.len()
                ),
            });
        }
        let mut adopt = Adopt {
            order: dtypes.0.into_iter(),
            dtypes: HashMap::new(),
        };
        let master = master.map(&mut adopt);
        Ok(Self {
            master: Some(master),
            dtypes: adopt.dtypes,
            _backend: std::marker::PhantomData,
        })
    }

    /// One optimizer step on the f32 copies with `grads` (computed on `model`, widened to f32 here); returns
    /// the model rebuilt from the updated copies in its own dtypes. `model` is dropped first, so its
    /// parameters and the new ones are not held at once.
    pub fn step<O: Optimizer<M, B>>(
        &mut self,
        optim: &mut O,
        lr: LearningRate,
        model: M,
        mut grads: GradientsParams,
    ) -> M {
        drop(model);
        let master = self.master.take().unwrap_or_else(|| unreachable!());
        master.visit(&mut WidenGrads { grads: &mut grads });
        self.master = Some(optim.step(lr, master, grads));
        self.model()
    }

    /// The model in its own dtypes, cast from the f32 copies.
    pub fn model(&self) -> M {
        let mut narrow = Narrow {
            dtypes: &self.dtypes,
        };
        self.master().clone().map(&mut narrow)
    }

    /// The f32 copies (a model whose trainable parameters are f32).
    pub fn master(&self) -> &M {
        self.master.as_ref().unwrap_or_else(|| unreachable!())
    }

    /// The f32 copies, consumed (e.g. to save an f32 checkpoint).
    pub fn into_master(mut self) -> M {
        self.master.take().unwrap_or_else(|| unreachable!())
    }
}

/// A fresh leaf holding `t` cast to `dtype`, with the given gradient setting.
fn recast<B: AutodiffBackend, const D: usize>(
    t: Tensor<B, D>,
    dtype: DType,
    require_grad: bool,
) -> Tensor<B, D> {
    Tensor::from_inner(t.inner().cast(dtype)).set_require_grad(require_grad)
}

/// Trainable parameters to f32; records every parameter's dtype.
struct Widen {
    dtypes: HashMap<ParamId, DType>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Widen {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let dtype = tensor.dtype();
        self.dtypes.insert(id, dtype);
        let tensor = if tensor.is_require_grad() && dtype != DType::F32 {
            recast(tensor, DType::F32, true)
        } else {
            tensor
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// Every float parameter's dtype, in module order.
struct Dtypes(Vec<DType>);

impl<B: AutodiffBackend> ModuleVisitor<B> for Dtypes {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push(param.val().dtype());
    }
}

/// Saved copies to master copies: each parameter takes the next dtype of `order` as its model dtype;
/// trainable ones are widened to f32, frozen ones cast to the model dtype.
struct Adopt {
    order: std::vec::IntoIter<DType>,
    dtypes: HashMap<ParamId, DType>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Adopt {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let dtype = self.order.next().unwrap_or_else(|| tensor.dtype());
        self.dtypes.insert(id, dtype);
        let require_grad = tensor.is_require_grad();
        let keep = if require_grad { DType::F32 } else { dtype };
        let tensor = if tensor.dtype() == keep {
            tensor
        } else {
            recast(tensor, keep, require_grad)
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// Parameters back to the dtypes [`Widen`] recorded.
struct Narrow<'a> {
    dtypes: &'a HashMap<ParamId, DType>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Narrow<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let tensor = match self.dtypes.get(&id) {
            Some(&dtype) if dtype != tensor.dtype() => {
                let require_grad = tensor.is_require_grad();
                recast(tensor, dtype, require_grad)
            }
            _ => tensor,
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// Gradients cast to their master parameter's dtype (f32 for the copies; computed in the model's dtype).
struct WidenGrads<'a> {
    grads: &'a mut GradientsParams,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for WidenGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            let dtype = param.val().dtype();
            let grad = if grad.dtype() == dtype {
                grad
            } else {
                grad.cast(dtype)
            };
            self.grads.register(param.id, grad);
        }
    }
}
