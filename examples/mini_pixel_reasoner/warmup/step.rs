//! One warm-up step's gradient, computed in two halves of its batch on two threads and summed
//! ([`step_gradients`]), and `--quick`'s check that the sum is the whole batch's gradient.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use pixel_rl::sft::{SftBatch, SftExample, sft_loss_and_hidden};
use pixel_vlm::processor::Processor;

use super::{Warm, encode, grounding_forward, pooled, read_probe, scalar, tag_tokens};
use crate::ranks::OneCorePools;
use crate::samples::Batch;

/// The whole batch's counts that each half's losses are normalized by, so that the halves' losses (and so
/// their gradients) sum to the whole batch's: the means over samples, traces, box tokens and answers are
/// sums over the half divided by the whole batch's count.
#[derive(Debug, Clone, Copy)]
struct Totals {
    samples: usize,
    globals: usize,
    traces: usize,
    trace_tokens: usize,
    box_positions: usize,
    answers: usize,
    answer_tokens: usize,
    read_tokens: usize,
    read_digit_tokens: usize,
}

impl Totals {
    fn of(b: &Batch) -> Self {
        let tokens = |v: &[SftExample]| v.iter().map(|e| e.trained_tokens()).sum::<usize>();
        Self {
            samples: b.digits.len(),
            globals: b.globals.len(),
            traces: b.traces.len(),
            trace_tokens: tokens(&b.traces),
            // Position `i - 1` writes box token `i` (`grounding_forward`).
            box_positions: b
                .trace_boxes
                .iter()
                .map(|p| p.iter().filter(|&&i| i > 0).count())
                .sum(),
            answers: b.answers.len(),
            answer_tokens: tokens(&b.answers),
            read_tokens: tokens(&b.reads),
            read_digit_tokens: tokens(&b.reads_digit),
        }
    }
}

/// `n / total` (0 for an empty total): a half's share of a mean over the whole batch.
fn share(n: usize, total: usize) -> f32 {
    match total {
        0 => 0.0,
        t => n as f32 / t as f32,
    }
}

/// The parts of a step's loss (each the half's share of the whole batch's: summed over the halves they
/// are the whole batch's values), for the logs.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Parts {
    pub read: f64,
    pub locate: f64,
    pub grounding: Option<(f64, f64)>,
    pub answer: Option<f64>,
    pub read_probe: Option<f64>,
    pub read_lm: Option<f64>,
}

impl Parts {
    fn add(self, o: Parts) -> Parts {
        let sum = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
        };
        let pair = |a: Option<(f64, f64)>, b: Option<(f64, f64)>| match (a, b) {
            (None, None) => None,
            (a, b) => {
                let (a, b) = (a.unwrap_or_default(), b.unwrap_or_default());
                Some((a.0 + b.0, a.1 + b.1))
            }
        };
        Parts {
            read: self.read + o.read,
            locate: self.locate + o.locate,
            grounding: pair(self.grounding, o.grounding),
            answer: sum(self.answer, o.answer),
            read_probe: sum(self.read_probe, o.read_probe),
            read_lm: sum(self.read_lm, o.read_lm),
        }
    }
}

fn detached<B: Backend>(t: &Tensor<B, 1>) -> f64 {
    f64::from(scalar(t.clone().detach()))
}

/// The loss of one part `b` of a step's batch (normalized by the whole batch's `totals`) and its parts;
/// `None` when the part is empty. `global_check` trains the told-where classifier instead.
fn part_loss<B: AutodiffBackend>(
    warm: &Warm<B>,
    processor: &Processor,
    b: &Batch,
    totals: &Totals,
    cells: usize,
    global_check: bool,
) -> anyhow::Result<Option<(Tensor<B, 1>, Parts)>> {
    let device = warm.vlm.device();
    let ce = CrossEntropyLossConfig::new().init(&device);
    let int = |v: Vec<i64>| {
        let n = v.len();
        Tensor::<B, 1, Int>::from_data(TensorData::new(v, [n]), &device)
    };
    let mut parts = Parts::default();
    let mut loss: Option<Tensor<B, 1>> = None;
    let mut add = |t: Tensor<B, 1>| {
        loss = Some(match loss.take() {
            Some(l) => l + t,
            None => t,
        })
    };
    let n = b.digits.len();
    if n > 0 {
        let w = share(n, totals.samples);
        let digits = int(b.digits.clone());
        if global_check {
            let (f, _) = encode(&warm.vlm, processor, &b.globals)?;
            let logits = warm
                .heads
                .read
                .forward(f.select(0, int(tag_tokens(&b.cells, cells))));
            let read = ce.forward(logits, digits) * w;
            parts.read = detached(&read);
            add(read);
        } else {
            let (fc, tc) = encode(&warm.vlm, processor, &b.crops)?;
            let read = ce.forward(warm.heads.read.forward(pooled(fc, &tc)), digits) * w;
            parts.read = detached(&read);
            add(read);
            let g = b.globals.len();
            if g > 0 {
                let (fg, _) = encode(&warm.vlm, processor, &b.globals)?;
                let logits = warm.heads.locate.forward(fg).reshape([g, cells]);
                let locate = ce.forward(logits, int(b.cells.clone())) * share(g, totals.globals);
                parts.locate = detached(&locate);
                add(locate);
            }
        }
    }
    if !b.traces.is_empty() {
        let out = grounding_forward(&warm.vlm, &warm.heads, b, totals.trace_tokens)?;
        let w = share(b.traces.len(), totals.traces);
        let mut probe_loss = (ce.forward(out.probe, int(b.trace_cells.clone()))
            + ce.forward(out.cells, int(out.cell_labels)))
            * w;
        // The tag's cell also where the box is written: a probe at the last prompt token only
        // reached 98 % while the warmed model's boxes were one constant box (0 % on the tag; one
        // run): the box tokens, ~40 tokens later, did not read what the prompt's end knew.
        let m = out.box_cells.len();
        let wm = share(m, totals.box_positions);
        if let Some(box_probe) = out.box_probe {
            probe_loss = probe_loss + ce.forward(box_probe, int(out.box_cells)) * wm;
        }
        // And the box's exact values there (`Grounding::box_values`).
        if let Some(values) = out.box_values {
            probe_loss = probe_loss + ce.forward(values, int(out.box_value_labels)) * wm;
        }
        parts.grounding = Some((detached(&out.loss), detached(&probe_loss)));
        add(out.loss + probe_loss);
    }
    if !b.answers.is_empty() {
        let refs: Vec<&SftExample> = b.answers.iter().collect();
        let (answer_loss, hidden) =
            sft_loss_and_hidden(&warm.vlm, &refs, totals.answer_tokens.max(1))?;
        // Without `Grounding::read` the whole traces train no token: only the probe below.
        if totals.answer_tokens > 0 {
            parts.answer = Some(detached(&answer_loss));
            add(answer_loss);
        }
        if let Some(probe) = read_probe(warm, &b.answers, hidden)? {
            let w = share(b.answers.len(), totals.answers);
            let probe_loss = ce.forward(probe, int(b.answer_digits.clone())) * w;
            parts.read_probe = Some(detached(&probe_loss));
            add(probe_loss);
        }
    }
    if !b.reads.is_empty() {
        let refs: Vec<&SftExample> = b.reads.iter().collect();
        let (mut read_lm_loss, hidden) =
            sft_loss_and_hidden(&warm.vlm, &refs, totals.read_tokens.max(1))?;
        if b.reads_digit_weight > 0.0 && b.reads_digit.len() == b.reads.len() {
            // The digit's tokens again (`--read-digit-weight`), from the same forward: `reads_digit`
            // holds the same rows, only their loss masks differ.
            let refs: Vec<&SftExample> = b.reads_digit.iter().collect();
            let digit = SftBatch::new(&refs, totals.read_digit_tokens.max(1))?;
            read_lm_loss = read_lm_loss + digit.loss(&warm.vlm, hidden)? * b.reads_digit_weight;
        }
        parts.read_lm = Some(detached(&read_lm_loss));
        add(read_lm_loss);
    }
    Ok(loss.map(|l| (l, parts)))
}

/// Every float parameter as a fresh autodiff leaf (its id, value and gradient setting kept): a copy of a
/// model whose graph is its own, for a thread of its own. (`valid` then `from_inner` lost the gradient
/// setting of the parameters loaded from a checkpoint: no gradient at all.)
struct FreshLeaves;

impl<B: AutodiffBackend> burn::module::ModuleMapper<B> for FreshLeaves {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<Tensor<B, D>>,
    ) -> burn::module::Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let fresh = Tensor::from_inner(tensor.inner()).set_require_grad(require_grad);
        burn::module::Param::from_mapped_value(id, fresh, mapper)
    }
}

/// The gradients of a step's loss on `batch`: with `pools` (two of them) in two halves on two threads, each
/// half in its own pool and on its own autodiff copy of `warm` (the parameters shared, not copied), summed:
/// the gradient of the whole batch's loss, up to the order of floating-point additions (the halves' losses
/// are normalized by the whole batch's counts); without, whole on this thread. On this 2-core machine one
/// thread kept ~1.4 cores busy (the matrix products are parallel, most of the rest is not); two kept both
/// (docs/demo.md).
pub(super) fn step_gradients<B: AutodiffBackend>(
    warm: &Warm<B>,
    processor: &Processor,
    batch: Batch,
    pools: Option<&OneCorePools>,
    cells: usize,
    global_check: bool,
) -> anyhow::Result<(GradientsParams, Parts)> {
    let totals = Totals::of(&batch);
    let parts: Vec<Batch> = match pools {
        None => vec![batch],
        Some(_) => batch.halves().into(),
    };
    let results: Vec<anyhow::Result<Option<(GradientsParams, Parts)>>> = std::thread::scope(|s| {
        let handles: Vec<_> = parts
            .into_iter()
            .enumerate()
            .map(|(i, part)| {
                let replica = warm.clone().map(&mut FreshLeaves);
                let totals = &totals;
                s.spawn(move || {
                    let run = || {
                        let Some((loss, parts)) =
                            part_loss(&replica, processor, &part, totals, cells, global_check)?
                        else {
                            return Ok(None);
                        };
                        let grads = GradientsParams::from_grads(loss.backward(), &replica);
                        Ok(Some((grads, parts)))
                    };
                    match pools {
                        None => run(),
                        Some(pools) => pools.install(i, run),
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a warm-up thread panicked")))
            })
            .collect()
    });
    let mut accumulator = GradientsAccumulator::<Warm<B>>::new();
    let mut parts = Parts::default();
    for r in results {
        if let Some((grads, p)) = r? {
            accumulator.accumulate(warm, grads);
            parts = parts.add(p);
        }
    }
    Ok((accumulator.grads(), parts))
}

/// The largest difference between the gradients of `a` and `b` over `warm`'s parameters, relative to the
/// largest gradient value (a check that the halves' gradients sum to the whole batch's).
struct GradDiff<'a> {
    a: &'a GradientsParams,
    b: &'a GradientsParams,
    diff: f32,
    scale: f32,
    params: usize,
    compared: usize,
}

impl<B: AutodiffBackend> burn::module::ModuleVisitor<B> for GradDiff<'_> {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
        self.params += 1;
        let (Some(a), Some(b)) = (
            self.a.get::<B::InnerBackend, D>(param.id),
            self.b.get::<B::InnerBackend, D>(param.id),
        ) else {
            return;
        };
        self.compared += 1;
        let max = |t: Tensor<B::InnerBackend, D>| scalar(t.abs().max().reshape([1]));
        self.scale = self.scale.max(max(a.clone()));
        self.diff = self.diff.max(max(a - b));
    }
}

/// `--quick`'s check of [`step_gradients`]: the relative difference between the gradients of one batch
/// computed whole on one thread and in two halves on two threads.
pub fn halves_gradient_gap<B: AutodiffBackend>(
    warm: &Warm<B>,
    processor: &Processor,
    batch: impl Fn() -> anyhow::Result<Batch>,
    cells: usize,
) -> anyhow::Result<f32> {
    let (whole, _) = step_gradients(warm, processor, batch()?, None, cells, false)?;
    let pools = OneCorePools::new(2)?;
    let (halves, _) = step_gradients(warm, processor, batch()?, Some(&pools), cells, false)?;
    let mut visitor = GradDiff {
        a: &whole,
        b: &halves,
        diff: 0.0,
        scale: 0.0,
        params: 0,
        compared: 0,
    };
    warm.visit(&mut visitor);
    anyhow::ensure!(
        visitor.scale > 0.0,
        "the batch gave no gradient ({} of {} parameters with one, largest {})",
        visitor.compared,
        visitor.params,
        visitor.scale
    );
    Ok(visitor.diff / visitor.scale)
}
