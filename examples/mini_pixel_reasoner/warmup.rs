//! Stage (a): a vision warm-up that stands in for a real model's pretrained vision tower.
//!
//! Auxiliary heads on the vision tower's merged tokens, trained on fresh samples every step:
//! - **read**: the digit of the tag from a crop around it (mean of the crop's tokens → 10 classes); the crops
//!   are the official ones first and jittered from half-way ([`BatchSpec`]);
//! - **reading through the whole model** (on the last steps, [`Reading`]): the answer after an observation
//!   turn showing the crop, so that the text model, not only the tower, reads the digit;
//! - **locate**: which merged token of the global view holds the tag's centre (one logit per token);
//! - **grounding** (optional, through the whole model, on the last steps): the first turns of clean crop
//!   traces on the same canvases (the narration and the call whose box is the tag's) with the SFT loss, and probes
//!   of the text model (each image token's own cell; the tag's cell at the last prompt token and at every
//!   token that writes the call's box: with the probe at the prompt's end only, it knew the cell 98 % of the
//!   time and the box was one constant box). Qwen2.5-VL's tower
//!   has no absolute position embedding and rotary attention moves no position into its values, so the
//!   tower alone cannot say *where* the tag is; the text model can, from the M-RoPE positions of the image
//!   tokens, but only with many images (a real Qwen2.5-VL learns it from its grounding pretraining data).
//!
//! The optimizer is AdamW clipped at a global gradient norm of 1, its rate cosine-decayed to a tenth.
//!
//! The same module also runs the data check of the issue: a classifier *told where the glyph is* (the token
//! of the global view at the tag's centre, its own fresh copy of the tower) trained to read the digit from the
//! global view; if it reads it often, the global view is not illegible and zooming in is not needed.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamWConfig, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use pixel_rl::sft::{SftExample, sft_loss_and_hidden};
use pixel_vlm::processor::Processor;
use pixel_vlm::{Qwen25Vl, VisualInput};

mod step;

use crate::prefetch::prefetch;
pub use crate::samples::{BatchSpec, Draws, Grounding, Jitter, LegibleReads, Reading, Schedule};
pub use step::halves_gradient_gap;
use step::step_gradients;

/// The heads trained on top of the tower.
#[derive(Module, Debug)]
pub struct Heads<B: Backend> {
    read: Linear<B>,
    locate: Linear<B>,
    /// The cell of the tag (the cell the call's box names) from the text model's hidden state at the last
    /// prompt token and at each token that writes the box (a probe of whether the text model knows where
    /// the tag is, trained with the grounding objective).
    locate_lm: Linear<B>,
    /// Each image token's own cell from its final hidden state in the text model (dense supervision of
    /// the position code the locate probe then copies from the tag's token).
    cell_lm: Linear<B>,
    /// The digit from the text model's final hidden states at the crop's tokens (mean), in whole clean
    /// traces ([`Grounding::read_probe`]).
    read_lm: Linear<B>,
    /// The box's four coordinates (each one of [`box_bins`] values) from the text model's hidden state at
    /// each token that writes the box ([`Grounding::box_values`]): the cell says where the tag is to a
    /// quarter of the image, a box must say it to the hundredth.
    box_lm: Linear<B>,
}

/// Values a coordinate with `decimals` places can take (`0, 1/10^d, ..., 1`; at most 1,001).
pub fn box_bins(decimals: i32) -> usize {
    10usize.pow(decimals.clamp(1, 3) as u32) + 1
}

/// A model and its heads, trained together (the text model gets no gradient: it is not on the path).
#[derive(Module, Debug)]
pub struct Warm<B: Backend> {
    pub vlm: Qwen25Vl<B>,
    pub heads: Heads<B>,
}

fn encode<B: Backend>(
    vlm: &Qwen25Vl<B>,
    processor: &Processor,
    images: &[image::RgbImage],
) -> anyhow::Result<(Tensor<B, 2>, Vec<usize>)> {
    let patches = processor.image_processor.preprocess_images(images)?;
    let merge = processor.image_processor.config().merge_size;
    let tokens: Vec<usize> = (0..patches.grid_thw.len())
        .map(|i| patches.tokens_of(i, merge))
        .collect();
    let visual = VisualInput {
        pixel_values: patches.pixel_values,
        grid_thw: patches.grid_thw,
    };
    Ok((vlm.encode_visual(&visual)?, tokens))
}

/// What a warm-up measured.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct WarmupReport {
    pub steps: usize,
    /// Wall time of the warm-up and the data check, seconds.
    pub seconds: f64,
    pub final_read_loss: f64,
    pub final_locate_loss: f64,
    /// Last step's grounding loss (mean over the traces' trained tokens; 0 without grounding).
    pub final_grounding_loss: f64,
    /// Held-out: of the warmed model's greedy first calls, the share whose crop holds the tag's centre.
    pub grounding_crop_hit: Option<f64>,
    /// How many held-out questions [`WarmupReport::grounding_crop_hit`] was measured on (absent in the
    /// reports of runs before 2026-11-28).
    #[serde(default)]
    pub grounding_questions: Option<usize>,
    /// Last step's loss of the text-model locate probe.
    pub final_probe_loss: f64,
    /// Held-out accuracy of the text-model locate probe (the tag's cell from the last prompt token).
    pub probe_accuracy: Option<f64>,
    /// Held-out accuracy of the text model's cell probe (each image token's own cell from its final hidden
    /// state): whether the text model knows where each token of the global view is, which the locate probe
    /// and the call's box need.
    pub cell_probe_accuracy: Option<f64>,
    /// Held-out accuracy of the box probe (each coordinate's exact value at the tokens writing the box;
    /// [`Grounding::box_values`]).
    #[serde(default)]
    pub box_value_probe_accuracy: Option<f64>,
    /// Held-out accuracy of reading the digit from the crop.
    pub read_accuracy: f64,
    /// Held-out accuracy of finding the tag's token in the global view.
    pub locate_accuracy: f64,
    /// Held-out accuracy of the told-where classifier reading the digit from the global view.
    pub global_read_accuracy: f64,
    pub losses: Vec<(f64, f64)>,
    /// Per grounding step: the traces' SFT loss and the text-model probes' loss.
    pub grounding_losses: Vec<(f64, f64)>,
    /// Per grounding step with [`Grounding::read`]: the SFT loss of the answers after the crops.
    pub answer_losses: Vec<f64>,
    /// Per grounding step with [`Grounding::read_probe`]: the text model's read probe loss.
    pub read_probe_losses: Vec<f64>,
    /// Per step with [`Reading`]: the SFT loss of the answers after the jittered crops.
    pub read_lm_losses: Vec<f64>,
    /// Held-out: the share of jittered crops whose answer the whole model writes right (every token of
    /// `The digit is \boxed{d}.` the argmax after the crop and the tokens before it; with
    /// `--read-digit-only`, which trains no other token of the answer, the digit's tokens).
    pub read_lm_accuracy: Option<f64>,
    /// Held out: the whole model reads a legible canvas shown whole (teacher-forced answer), when the
    /// warm-up trained it (`--warmup-legible-every`).
    #[serde(default)]
    pub legible_read_accuracy: Option<f64>,
}

impl<B: AutodiffBackend> Warm<B> {
    /// Fresh heads on `vlm`; the locate probe has `box_cells` classes (the cells a call's box can name),
    /// the box probe [`box_bins`]`(box_decimals)` per coordinate.
    pub fn new(vlm: Qwen25Vl<B>, box_cells: usize, box_decimals: i32, device: &B::Device) -> Self {
        let hidden = vlm.config.text.hidden_size;
        Self {
            vlm,
            heads: Heads {
                read: LinearConfig::new(hidden, 10).init(device),
                locate: LinearConfig::new(hidden, 1).init(device),
                locate_lm: LinearConfig::new(hidden, box_cells).init(device),
                cell_lm: LinearConfig::new(hidden, 16).init(device),
                read_lm: LinearConfig::new(hidden, 10).init(device),
                box_lm: LinearConfig::new(hidden, 4 * box_bins(box_decimals)).init(device),
            },
        }
    }
}

fn scalar<B: Backend>(t: Tensor<B, 1>) -> f32 {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .ok()
        .and_then(|v| v.first().copied())
        .unwrap_or(f32::NAN)
}

/// Mean of each image's tokens: `[n_images, hidden]`.
fn pooled<B: Backend>(features: Tensor<B, 2>, tokens: &[usize]) -> Tensor<B, 2> {
    let mut rows = Vec::new();
    let mut start = 0;
    for &t in tokens {
        rows.push(features.clone().narrow(0, start, t).mean_dim(0));
        start += t;
    }
    Tensor::cat(rows, 0)
}

/// What one forward of the whole model over the grounding examples gives.
struct GroundingOut<B: Backend> {
    /// The SFT loss of the traces (summed over trained tokens, divided by the normalizer given).
    loss: Tensor<B, 1>,
    /// The text-model locate probe's logits at each row's last prompt token, `[rows, 16]`.
    probe: Tensor<B, 2>,
    /// The cell probe's logits at every image token, `[rows * 16, 16]`, and their cells (raster order).
    cells: Tensor<B, 2>,
    cell_labels: Vec<i64>,
    /// The locate probe's logits at every position that writes a token of the call's box, `[m, cells]`, and
    /// the cell of each (its row's tag).
    box_probe: Option<Tensor<B, 2>>,
    box_cells: Vec<i64>,
    /// The box probe's logits at the same positions, `[m * 4, bins]`, and each coordinate's bin.
    box_values: Option<Tensor<B, 2>>,
    box_value_labels: Vec<i64>,
}

/// The read probe's logits `[rows, 10]`: the mean of the text model's final hidden states at each whole
/// trace's crop (every image token after the global view's 16: a crop's token count follows its aspect
/// ratio); `None` where a trace has no crop.
fn read_probe<B: Backend>(
    warm: &Warm<B>,
    examples: &[SftExample],
    hidden: Tensor<B, 3>,
) -> anyhow::Result<Option<Tensor<B, 2>>> {
    let [b, s, h] = hidden.dims();
    let image_token = warm.vlm.config.image_token_id;
    let mut slots = Vec::new();
    // Row `r` of the pooling matrix averages that trace's crop tokens.
    let mut pool = Vec::new();
    for (row, e) in examples.iter().enumerate() {
        let crop: Vec<usize> = (0..e.len())
            .filter(|&i| e.token_ids[i] == image_token)
            .skip(16)
            .collect();
        if crop.is_empty() {
            return Ok(None);
        }
        let weight = 1.0 / crop.len() as f32;
        for i in crop {
            pool.push((row, slots.len(), weight));
            slots.push((row * s + i) as i64);
        }
    }
    let n = slots.len();
    let mut matrix = vec![0.0f32; b * n];
    for (row, col, w) in pool {
        matrix[row * n + col] = w;
    }
    let device = warm.vlm.device();
    let at = Tensor::<B, 1, Int>::from_data(TensorData::new(slots, [n]), &device);
    let tokens = hidden.reshape([b * s, h]).select(0, at); // [n, h]
    let matrix = Tensor::<B, 2>::from_data(TensorData::new(matrix, [b, n]), &device);
    Ok(Some(warm.heads.read_lm.forward(matrix.matmul(tokens))))
}

/// One forward of the whole model over the grounding examples (the global view's 16 tokens first), the
/// locate probe at each position that writes a box token against its label (`Batch::trace_box_cells`).
fn grounding_forward<B: Backend>(
    vlm: &Qwen25Vl<B>,
    heads: &Heads<B>,
    batch: &crate::samples::Batch,
    normalizer: usize,
) -> anyhow::Result<GroundingOut<B>> {
    let (examples, boxes, box_labels, box_values) = (
        &batch.traces,
        &batch.trace_boxes,
        &batch.trace_box_cells,
        &batch.trace_box_values,
    );
    let b = examples.len();
    // The rows of `hidden` are the examples right-padded to the longest (`sft_loss_and_hidden`).
    let s = examples.iter().map(|e| e.len()).max().unwrap_or(0);
    let mut last_prompt = Vec::with_capacity(b);
    let mut image_slots = Vec::new();
    let mut cell_labels = Vec::new();
    let mut box_slots = Vec::new();
    let mut box_cells = Vec::new();
    let mut box_value_labels = Vec::new();
    for (row, positions) in boxes.iter().enumerate() {
        // Position `i - 1` writes token `i`.
        for (&i, &cell) in positions
            .iter()
            .zip(&box_labels[row])
            .filter(|(i, _)| **i > 0)
        {
            box_slots.push((row * s + i - 1) as i64);
            box_cells.push(cell);
            if let Some(values) = box_values.get(row) {
                box_value_labels.extend(values);
            }
        }
    }
    let image_token = vlm.config.image_token_id;
    for (row, e) in examples.iter().enumerate() {
        // The position whose output is the first trained token: the prompt's last token.
        let first = e.loss_mask.iter().position(|&m| m).unwrap_or(e.len());
        last_prompt.push((row * s + first.saturating_sub(1)) as i64);
        // The global view's 16 tokens (the first image).
        let slots: Vec<usize> = (0..e.len())
            .filter(|&i| e.token_ids[i] == image_token)
            .take(16)
            .collect();
        anyhow::ensure!(
            slots.len() == 16,
            "a grounding example has {} image tokens, not 16",
            slots.len()
        );
        for (k, i) in slots.into_iter().enumerate() {
            image_slots.push((row * s + i) as i64);
            cell_labels.push(k as i64);
        }
    }
    let refs: Vec<&SftExample> = examples.iter().collect();
    let (loss, hidden) = sft_loss_and_hidden(vlm, &refs, normalizer.max(1))?;
    let device = vlm.device();
    let h = hidden.dims()[2];
    let flat = hidden.reshape([b * s, h]);
    let at = Tensor::<B, 1, Int>::from_data(TensorData::new(last_prompt, [b]), &device);
    let probe = heads.locate_lm.forward(flat.clone().select(0, at));
    let slots = image_slots.len();
    let at = Tensor::<B, 1, Int>::from_data(TensorData::new(image_slots, [slots]), &device);
    let cells = heads.cell_lm.forward(flat.clone().select(0, at));
    let m = box_slots.len();
    let at =
        (m > 0).then(|| Tensor::<B, 1, Int>::from_data(TensorData::new(box_slots, [m]), &device));
    let box_hidden = at.map(|at| flat.select(0, at));
    let box_probe = box_hidden.clone().map(|h| heads.locate_lm.forward(h));
    let box_values = box_hidden
        .filter(|_| box_value_labels.len() == 4 * m)
        .map(|h| {
            let logits = heads.box_lm.forward(h);
            let bins = logits.dims()[1] / 4;
            logits.reshape([4 * m, bins])
        });
    Ok(GroundingOut {
        loss,
        probe,
        cells,
        cell_labels,
        box_probe,
        box_cells,
        box_values,
        box_value_labels,
    })
}

/// The index of each image's tag token among the global views' merged tokens (`cells` per image, the
/// images one after the other): the token the told-where classifier reads.
fn tag_tokens(tag_cells: &[i64], cells: usize) -> Vec<i64> {
    tag_cells
        .iter()
        .enumerate()
        .map(|(i, c)| (i * cells) as i64 + c)
        .collect()
}

/// Trains the tower and heads for `schedule.steps` steps of `schedule.batch` fresh samples of `draws`, each
/// step's gradient computed on `threads` threads ([`step_gradients`]); `global_check` instead trains the
/// told-where classifier (the read head on the global view's tag token). Returns the trained model.
pub fn train<B: AutodiffBackend>(
    mut warm: Warm<B>,
    processor: &Processor,
    draws: Draws,
    schedule: Schedule,
    global_check: bool,
    threads: usize,
    progress: &pixel_rl::progress::StageProgress,
) -> anyhow::Result<(Warm<B>, WarmupReport)> {
    let Schedule { steps, lr, .. } = schedule;
    // Clipped at a global norm of 1 and the rate decayed (cosine, to a tenth): with a constant 2e-3 and no
    // clipping, the losses of a run with the grounding probes went back to chance after ~800 steps.
    let rates = pixel_rl::optim::WarmupCosineSchedule::new(lr, 0, steps.max(1), 0.1)?;
    let mut optim = AdamWConfig::new()
        .with_weight_decay(0.0)
        .with_grad_clipping(Some(burn::grad_clipping::GradientClippingConfig::Norm(1.0)))
        .init();
    let mut report = WarmupReport {
        steps,
        ..WarmupReport::default()
    };
    let cells = draws.grid.0 * draws.grid.1;
    let mut batches = prefetch(std::sync::Arc::new(draws), &schedule, threads);
    // Two threads: one pool each, for the whole warm-up.
    let pools = match threads {
        0 | 1 => None,
        _ => Some(crate::ranks::OneCorePools::new(2)?),
    };
    for step in 0..steps {
        let b = batches.recv()?;
        let (grads, parts) =
            step_gradients(&warm, processor, b, pools.as_ref(), cells, global_check)?;
        if let Some((g, p)) = parts.grounding {
            report.final_probe_loss = p;
            report.grounding_losses.push((g, p));
            report.final_grounding_loss = g;
        }
        report.answer_losses.extend(parts.answer);
        report.read_probe_losses.extend(parts.read_probe);
        report.read_lm_losses.extend(parts.read_lm);
        report.losses.push((parts.read, parts.locate));
        warm = optim.step(rates.lr_at(step), warm, grads);
        progress.set_message(format!(
            "read {:.3} (through the model {:.3}) locate {:.3} grounding {:.3} probe {:.3}",
            parts.read,
            report.read_lm_losses.last().copied().unwrap_or(0.0),
            parts.locate,
            report.final_grounding_loss,
            report.final_probe_loss
        ));
        progress.inc(1);
    }
    if let Some(&(r, l)) = report.losses.last() {
        report.final_read_loss = r;
        report.final_locate_loss = l;
    }
    Ok((warm, report))
}

/// Held-out accuracies of a warmed model (`n` samples of `draws` from a seed the training never drew).
pub fn evaluate<B: AutodiffBackend>(
    warm: &Warm<B>,
    processor: &Processor,
    draws: &Draws,
    n: usize,
    seed: u64,
    global_check: bool,
    report: &mut WarmupReport,
) -> anyhow::Result<()> {
    use burn::module::AutodiffModule;
    let valid = warm.valid();
    let mut b = draws.held_out(n).draw(seed, 0, n)?;
    let grid = draws.grid;
    let cells = grid.0 * grid.1;
    let argmax = |t: Tensor<B::InnerBackend, 2>| -> Vec<i64> {
        t.argmax(1)
            .into_data()
            .convert::<i64>()
            .to_vec()
            .unwrap_or_default()
    };
    let hits = |pred: &[i64], want: &[i64]| {
        pred.iter().zip(want).filter(|(a, b)| a == b).count() as f64 / want.len().max(1) as f64
    };
    let device = valid.vlm.device();
    if global_check {
        let (f, _) = encode(&valid.vlm, processor, &b.globals)?;
        let idx = Tensor::<B::InnerBackend, 1, Int>::from_data(
            TensorData::new(tag_tokens(&b.cells, cells), [n]),
            &device,
        );
        let pred = argmax(valid.heads.read.forward(f.select(0, idx)));
        report.global_read_accuracy = hits(&pred, &b.digits);
    } else {
        let (fc, tc) = encode(&valid.vlm, processor, &b.crops)?;
        report.read_accuracy = hits(
            &argmax(valid.heads.read.forward(pooled(fc, &tc))),
            &b.digits,
        );
        let (fg, _) = encode(&valid.vlm, processor, &b.globals)?;
        let logits = valid.heads.locate.forward(fg).reshape([n, cells]);
        report.locate_accuracy = hits(&argmax(logits), &b.cells);
        if !b.traces.is_empty() {
            let out = grounding_forward(
                &valid.vlm,
                &valid.heads,
                &b,
                b.traces.iter().map(|e| e.trained_tokens()).sum(),
            )?;
            report.probe_accuracy = Some(hits(&argmax(out.probe.clone()), &b.trace_cells));
            report.cell_probe_accuracy = Some(hits(&argmax(out.cells), &out.cell_labels));
            if let Some(values) = out.box_values {
                report.box_value_probe_accuracy =
                    Some(hits(&argmax(values), &out.box_value_labels));
            }
        }
        // The legible canvases' reading rows apart from the crops' (ids `read-legible-…`).
        let (legible, crops): (Vec<_>, Vec<_>) = std::mem::take(&mut b.reads)
            .into_iter()
            .partition(|e| e.id.starts_with("read-legible-"));
        if !crops.is_empty() {
            report.read_lm_accuracy = Some(answers_right(&valid.vlm, &crops)?);
        }
        if !legible.is_empty() {
            report.legible_read_accuracy = Some(answers_right(&valid.vlm, &legible)?);
        }
    }
    Ok(())
}

/// The share of `examples` whose every trained token is the model's argmax given the tokens before it.
pub fn answers_right<B: Backend>(
    vlm: &Qwen25Vl<B>,
    examples: &[SftExample],
) -> anyhow::Result<f64> {
    let refs: Vec<&SftExample> = examples.iter().collect();
    let (_, hidden) = sft_loss_and_hidden(vlm, &refs, 1)?;
    let [_, s, _] = hidden.dims();
    let best: Vec<i64> = vlm
        .logits(hidden)
        .argmax(2)
        .into_data()
        .convert::<i64>()
        .to_vec()
        .map_err(|e| anyhow::anyhow!("argmax: {e:?}"))?;
    let right = examples
        .iter()
        .enumerate()
        .filter(|(row, e)| {
            // Position `i - 1` predicts token `i`.
            (1..e.len())
                .filter(|&i| e.loss_mask[i])
                .all(|i| best[row * s + i - 1] == i64::from(e.token_ids[i]))
        })
        .count();
    Ok(right as f64 / examples.len().max(1) as f64)
}
