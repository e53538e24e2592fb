//! Stage (a): a vision warm-up that stands in for a real model's pretrained vision tower.
//!
//! Auxiliary heads on the vision tower's merged tokens, trained on fresh samples every step:
//! - **read**: the digit of the tag from the official crop around it (mean of the crop's tokens → 10 classes);
//! - **locate**: which merged token of the global view holds the tag's centre (one logit per token).
//!
//! The same module also runs the data check of the issue: a classifier *told where the glyph is* (the token
//! of the global view at the tag's centre, its own fresh copy of the tower) trained to read the digit from the
//! global view; if it reads it often, the global view is not illegible and zooming in is not needed.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use pixel_traces::datasets::NeedleConfig;
use pixel_traces::geometry::{official_crop, round_outward};
use pixel_vlm::processor::Processor;
use pixel_vlm::{Qwen25Vl, VisualInput};

/// The heads trained on top of the tower.
#[derive(Module, Debug)]
pub struct Heads<B: Backend> {
    read: Linear<B>,
    locate: Linear<B>,
}

/// A model and its heads, trained together (the text model gets no gradient: it is not on the path).
#[derive(Module, Debug)]
pub struct Warm<B: Backend> {
    pub vlm: Qwen25Vl<B>,
    pub heads: Heads<B>,
}

/// A batch of fresh needle samples: the global views, the crops around the tags, digits and tag cells.
pub struct Batch {
    pub globals: Vec<image::RgbImage>,
    pub crops: Vec<image::RgbImage>,
    pub digits: Vec<i64>,
    /// Index of the merged token of the global view holding the tag's centre (row-major).
    pub cells: Vec<i64>,
}

/// Merged-token grid side of a global view: the processor's fixed square size / 28.
pub fn make_batch(
    needle: &NeedleConfig,
    decimals: i32,
    seed: u64,
    first: u64,
    n: usize,
    grid: (usize, usize),
) -> anyhow::Result<Batch> {
    let mut b = Batch {
        globals: Vec::new(),
        crops: Vec::new(),
        digits: Vec::new(),
        cells: Vec::new(),
    };
    for i in 0..n as u64 {
        let s = needle.generate(seed, first + i)?;
        let pixel_traces::Visual::Image {
            image, reference, ..
        } = &s.sample.visual
        else {
            anyhow::bail!("needle samples are images");
        };
        // The crop a trace's call makes: the tag's box rounded outward as the traces write it.
        let (crop, _) = official_crop(image, round_outward(*reference, decimals))?;
        let (cx, cy) = (
            (reference.x1 + reference.x2) / 2.0,
            (reference.y1 + reference.y2) / 2.0,
        );
        let (gh, gw) = grid;
        let col = ((cx * gw as f64) as usize).min(gw - 1);
        let row = ((cy * gh as f64) as usize).min(gh - 1);
        b.globals.push(image.clone());
        b.crops.push(crop);
        b.digits.push(i64::from(s.digit));
        b.cells.push((row * gw + col) as i64);
    }
    Ok(b)
}

/// Batches `first_step..first_step + steps` of fresh samples, made on a second thread while the caller
/// trains (drawing 448 px canvases costs about as much as a warm-up step; on two cores the two overlap).
fn prefetch(
    needle: &NeedleConfig,
    decimals: i32,
    seed: u64,
    steps: usize,
    batch: usize,
    grid: (usize, usize),
) -> std::sync::mpsc::Receiver<anyhow::Result<Batch>> {
    let (tx, rx) = std::sync::mpsc::sync_channel(2);
    let needle = needle.clone();
    std::thread::spawn(move || {
        for step in 0..steps {
            let b = make_batch(&needle, decimals, seed, (step * batch) as u64, batch, grid);
            let failed = b.is_err();
            // The receiver is gone (the trainer stopped early): stop drawing.
            if tx.send(b).is_err() || failed {
                return;
            }
        }
    });
    rx
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
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WarmupReport {
    pub steps: usize,
    pub final_read_loss: f64,
    pub final_locate_loss: f64,
    /// Held-out accuracy of reading the digit from the crop.
    pub read_accuracy: f64,
    /// Held-out accuracy of finding the tag's token in the global view.
    pub locate_accuracy: f64,
    /// Held-out accuracy of the told-where classifier reading the digit from the global view.
    pub global_read_accuracy: f64,
    pub losses: Vec<(f64, f64)>,
}

impl<B: AutodiffBackend> Warm<B> {
    pub fn new(vlm: Qwen25Vl<B>, device: &B::Device) -> Self {
        let hidden = vlm.config.text.hidden_size;
        Self {
            vlm,
            heads: Heads {
                read: LinearConfig::new(hidden, 10).init(device),
                locate: LinearConfig::new(hidden, 1).init(device),
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

/// Trains the tower and heads for `steps` steps of `batch` fresh samples; `global_check` instead trains
/// the told-where classifier (the read head on the global view's tag token). Returns the trained model.
#[allow(clippy::too_many_arguments)]
pub fn train<B: AutodiffBackend>(
    mut warm: Warm<B>,
    processor: &Processor,
    needle: &NeedleConfig,
    grid: (usize, usize),
    steps: usize,
    batch: usize,
    lr: f64,
    decimals: i32,
    seed: u64,
    global_check: bool,
    progress: &pixel_rl::progress::StageProgress,
) -> anyhow::Result<(Warm<B>, WarmupReport)> {
    let device = warm.vlm.device();
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).init();
    let ce = CrossEntropyLossConfig::new().init(&device);
    let mut report = WarmupReport {
        steps,
        ..WarmupReport::default()
    };
    let cells = grid.0 * grid.1;
    let batches = prefetch(needle, decimals, seed, steps, batch, grid);
    for _ in 0..steps {
        let b = batches
            .recv()
            .map_err(|_| anyhow::anyhow!("the sample thread stopped"))??;
        let digits =
            Tensor::<B, 1, Int>::from_data(TensorData::new(b.digits.clone(), [batch]), &device);
        let (read_loss, locate_loss): (Tensor<B, 1>, Option<Tensor<B, 1>>) = if global_check {
            let (f, _) = encode(&warm.vlm, processor, &b.globals)?;
            let idx: Vec<i64> = b
                .cells
                .iter()
                .enumerate()
                .map(|(i, c)| (i * cells) as i64 + c)
                .collect();
            let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [batch]), &device);
            let tag_tokens = f.select(0, idx);
            let logits = warm.heads.read.forward(tag_tokens);
            (ce.forward(logits, digits), None)
        } else {
            let (fc, tc) = encode(&warm.vlm, processor, &b.crops)?;
            let read = ce.forward(warm.heads.read.forward(pooled(fc, &tc)), digits);
            let (fg, _) = encode(&warm.vlm, processor, &b.globals)?;
            let logits = warm.heads.locate.forward(fg).reshape([batch, cells]);
            let cells_t =
                Tensor::<B, 1, Int>::from_data(TensorData::new(b.cells.clone(), [batch]), &device);
            (read, Some(ce.forward(logits, cells_t)))
        };
        let loss = match locate_loss.clone() {
            Some(l) => read_loss.clone() + l,
            None => read_loss.clone(),
        };
        let r = scalar(read_loss.detach());
        let l = locate_loss.map_or(0.0, |t| scalar(t.detach()));
        report.losses.push((f64::from(r), f64::from(l)));
        let grads = GradientsParams::from_grads(loss.backward(), &warm);
        warm = optim.step(lr, warm, grads);
        progress.set_message(format!("read {r:.3} locate {l:.3}"));
        progress.inc(1);
    }
    if let Some(&(r, l)) = report.losses.last() {
        report.final_read_loss = r;
        report.final_locate_loss = l;
    }
    Ok((warm, report))
}

/// Held-out accuracies of a warmed model (`n` samples from a seed the training never drew).
#[allow(clippy::too_many_arguments)]
pub fn evaluate<B: AutodiffBackend>(
    warm: &Warm<B>,
    processor: &Processor,
    needle: &NeedleConfig,
    grid: (usize, usize),
    n: usize,
    decimals: i32,
    seed: u64,
    global_check: bool,
    report: &mut WarmupReport,
) -> anyhow::Result<()> {
    use burn::module::AutodiffModule;
    let valid = warm.valid();
    let b = make_batch(needle, decimals, seed, 0, n, grid)?;
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
        let idx: Vec<i64> = b
            .cells
            .iter()
            .enumerate()
            .map(|(i, c)| (i * cells) as i64 + c)
            .collect();
        let idx = Tensor::<B::InnerBackend, 1, Int>::from_data(TensorData::new(idx, [n]), &device);
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
    }
    Ok(())
}
