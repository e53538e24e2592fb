//! The command line and the sizes of each stage.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

use crate::data;

#[derive(Parser, Debug)]
#[command(about = "Train a mini Pixel Reasoner from scratch on the CPU and write a report")]
pub struct Args {
    /// Report folder (created).
    #[arg(long, default_value = "out/mini_pixel_reasoner")]
    pub out: PathBuf,
    /// A few steps of each stage: checks the pipeline, not the numbers.
    #[arg(long)]
    pub quick: bool,
    /// Seed of every stage.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Digit heights in pixels on the 448 px canvas, `MIN-MAX`.
    #[arg(long, default_value = "36-42")]
    pub glyph: String,
    /// The thinnest stroke of a digit, a share of its 5 x 7 font cell (strokes are drawn from this to 1.0;
    /// thin ones draw the digit as separate dots). 0.8 since 2026-11-28 (0.55, the dataset's default,
    /// before): warm-ups without grounding (seed 0, 128 held-out crops moved out by up to 0.15), the
    /// tower / the whole model reading: 0.55 → 77 / 81 %, 0.8 → 88 / 84 % at a rate of 2e-3; 88 / 88 % and
    /// 92 / 93 % at 3e-3. The told-where classifier read the global view 8-11 % with either.
    #[arg(long, default_value_t = 0.8)]
    pub stroke_min: f32,
    /// Noise amplitude inside the tags (levels).
    #[arg(long, default_value_t = 30)]
    pub tag_noise: u8,
    /// Vision warm-up steps (default: the plan's).
    #[arg(long)]
    pub warmup_steps: Option<usize>,
    /// Of the warm-up steps, how many (the last) also train the grounding objective (default: the plan's).
    #[arg(long)]
    pub grounding_steps: Option<usize>,
    /// Of the warm-up steps, how many (the last) also train reading through the whole model (default: the
    /// plan's, 1,000).
    #[arg(long)]
    pub reading_steps: Option<usize>,
    /// Decoy tags (other border colours) per image. At the global view's 4x reduction a 2 px border is
    /// half a pixel wide, so the colour that tells the target from a decoy is not visible there.
    #[arg(long, default_value_t = 0)]
    pub decoys: u32,
    /// Decimals of the crop boxes in the SFT traces (the model learns to write them).
    #[arg(long, default_value_t = 2)]
    pub box_decimals: i32,
    /// The boxes the traces write: with 0 the tag's own box (the synthesizer's), or the cell of an N x N
    /// grid holding the tag's centre (8: the global view's 14 px patches; pass `--box-decimals 3`). One
    /// warm-up with 8 (docs/demo.md): the text model's probe found the tag's cell of 64 95.3 % of the time,
    /// but the tag anywhere in a crop made reading harder (the tower read 37.5 % against 81.2 %).
    #[arg(long, default_value_t = 0)]
    pub box_grid: u32,
    /// Zoom in two steps: first the cell of a 4 x 4 grid holding the tag's centre (one merged token of
    /// the global view), then the tag's own box inside that crop (docs/demo.md). 0: one call on the tag's
    /// box (the default until 2026-11-27 13:00). `--box-grid`, `--box-values` and `--read-in-context` need 0.
    #[arg(long, default_value_t = 4)]
    pub coarse_grid: u32,
    /// With `--coarse-grid`: the second box is the cell of a 4 x 4 grid of the first crop holding the
    /// tag's centre (the class the text model's box probe learns), not the tag's own box (0). With
    /// `--sft-jitter 0` (full runs, seeds 0 / 1; docs/demo.md): GRPO 63.5 / 66.0 %, crop hit 56 / 64.5 %
    /// (the model names a neighbouring cell of the first crop 4 times in 10).
    #[arg(long, default_value_t = 0)]
    pub fine_grid: u32,
    /// Learning rate of the vision warm-up (cosine-decayed to a tenth). 3e-3 since 2026-11-28 (2e-3
    /// before): warm-ups without grounding (seed 0, strokes from 0.8, 128 held-out crops), the tower / the
    /// whole model reading: 2e-3 → 88 / 84 %, 3e-3 → 92 / 93 %, 5e-3 → 91 / 87 %.
    #[arg(long, default_value_t = 3e-3)]
    pub warmup_lr: f64,
    /// Print, for the model in this folder (one a stage wrote), its teacher-forced reading of held-out
    /// crops (alone, and in the trace with the box moved out by 0.02 to 0.15 per side) and of the last turn
    /// of synthesized traces, two greedy held-out rollouts, then where the crops it reads go (and their error
    /// per coordinate) and its scores on `--eval-samples` (200) held-out questions, and exit.
    #[arg(long)]
    pub inspect: Option<PathBuf>,
    /// Stop after the vision warm-up and its data check, printing their held-out accuracies (for tuning
    /// the data: the crop must be readable, the global view not).
    #[arg(long)]
    pub warmup_only: bool,
    /// Warm up without the grounding objective (clean crop traces through the whole model, and the text
    /// model's locate probes): the comparison that shows why it is there.
    #[arg(long)]
    pub no_grounding: bool,
    /// Grounding also on the answers after the crop (whole clean traces, the loss on the answer only), to
    /// teach the text model to read the crop before SFT. Off by default: in the run that measured it the
    /// text-model locate probe reached 79.7 % but the first calls' crops held the tag 0 % after the warm-up
    /// and 10 % after SFT (55.8 % of calls malformed), as with whole traces before (docs/demo.md).
    #[arg(long)]
    pub read_grounding: bool,
    /// Grounding also trains a read probe on the text model (the digit from its hidden states at the crop's
    /// tokens in whole clean traces, no loss on their text unless `--read-grounding`). One run (docs/demo.md):
    /// the probe learned part of the digit, the SFT model still did not read it.
    #[arg(long)]
    pub read_probe: bool,
    /// Warm up without reading through the whole model (the tower's read head only): the comparison that
    /// shows why it is there.
    #[arg(long)]
    pub no_reading: bool,
    /// Largest margin (normalized) added to each side of the tag's box for the warm-up's crops (the
    /// tower's read head and the reading objective): crops of varied size with the tag off-centre, as a
    /// trained model's calls make them. 0.15 since 2026-11-27 21:00 (0.05 before): the SFT model's boxes
    /// are 2-3x the tag's area and it read 23 % of the crops at 2.5x or more; from one seed (docs/demo.md)
    /// GRPO's held-out accuracy went from 40 % (0.05) to 52.5 % (0.1) and 55 % (0.15).
    #[arg(long, default_value_t = 0.15)]
    pub crop_jitter: f64,
    /// Largest share of the tag's width (height) by which each side of a warm-up crop's box moves *in*
    /// (0 to 0.45), besides `--crop-jitter` out: the crops then sometimes cut off the tag's edge, as a
    /// quarter of a trained model's crops do. At 0.25 (full runs, seeds 0 / 1; docs/demo-findings.md, "Where the
    /// second box goes"): GRPO 72.0 / 71.0 % against 75.0 / 66.5 % without, within one run's spread.
    #[arg(long, default_value_t = 0.0)]
    pub crop_cut: f64,
    /// Warm up with a box probe: the box's exact coordinates (each one of 101 values) from the text
    /// model's hidden states at the tokens that write it, beside the cell probe there. One run, seed 2
    /// (docs/demo.md): the probe found 6.8 % of held-out values, the warmed model's first crops held the
    /// tag 4 % (12 % without), the SFT model's 52 % (64-74 % without).
    #[arg(long)]
    pub box_values: bool,
    /// Read the warm-up's crops in the trace's context (global view, question, the call asking for the
    /// crop, the crop, the answer; the loss on the answer) instead of alone (the crop's observation turn,
    /// then the answer). One run, seed 2 (docs/demo.md): the whole model read 53.1 % of held-out crops
    /// in traces after the warm-up (68.8 % when trained alone), SFT 22 %, and the warm-up took 1,009 s
    /// (599 s).
    #[arg(long)]
    pub read_in_context: bool,
    /// Samples per warm-up step: a crop each for the tower's read head (default: the plan's, 32; 16 until
    /// 2026-11-28 23:30: docs/demo.md, "32 samples per warm-up step").
    #[arg(long)]
    pub warmup_batch: Option<usize>,
    /// Of each warm-up step's samples, how many also give their global view to the tower's locate head
    /// (default: the plan's, 16, at most `--warmup-batch`). 24 samples of which 8 with their global view
    /// read 88.3 % of held-out crops against 89.8 % with 16 and 16 (the tower alone, seed 0; docs/demo.md,
    /// "What limits reading").
    #[arg(long)]
    pub warmup_globals: Option<usize>,
    /// The warm-up's reading rows train only the tokens that write the digit, not the whole answer `The
    /// digit is \boxed{d}.` (the same in every row but for the digit, and predicted after a few hundred
    /// steps: a mean over its tokens gave the digit a tenth of the row's loss), until the grounding steps
    /// begin (seed 1, docs/demo.md, "What limits reading"): the whole model read 78.1 % of held-out crops
    /// (76.6 % without), the warmed model's first crops held the tag 18.4 % of the time (75.0 %), needle
    /// accuracy 24.5-27.0 %: not the default. Throughout the reading steps the first crops held it 8.9 %.
    #[arg(long)]
    pub read_digit_only: bool,
    /// Weight of an extra loss on the digit's tokens of the warm-up's reading rows, beside the whole
    /// answer's mean (0: none). In that mean the digit is one token of ~12; `--read-digit-only` (the
    /// digit alone) read better and cost the box. At 0.25 (seeds 1 and 4, 2026-11-29; docs/demo.md) the
    /// warmed model read 91.4 % of held-out crops on both (86.7 / 79.7 % without), its first crops held the
    /// tag 51.6 / 58.3 % (63.5 / 73.0 %), and SFT's answers after a crop were right no more often.
    #[arg(long, default_value_t = 0.0)]
    pub read_digit_weight: f32,
    /// Reading examples per warm-up step (of the batch's samples). 16 against 8 (one run each): the whole
    /// model read 46.9 % of held-out jittered crops after the warm-up against 23.4 %, the warm-up ~100 s
    /// longer.
    #[arg(long, default_value_t = 16)]
    pub read_batch: usize,
    /// Of every 8 SFT traces, how many needle questions are answered directly, without a call (at most 6;
    /// one is always a text-only question). More make the SFT model call less often, so that GRPO starts
    /// nearer the curiosity threshold H.
    #[arg(long, default_value_t = 1)]
    pub direct: u64,
    /// Legible questions added to the SFT traces (`data::legible_sample`: the same question about a tag
    /// large enough to read in the global view), some answered directly and `--legible-zoom` of them by
    /// zooming in as on a small tag: the questions a direct answer gets right and the learned zoom does
    /// not, which the learning trap needs (docs/demo.md, "The learning trap").
    #[arg(long, default_value_t = 128)]
    pub legible_traces: usize,
    /// Reading examples of legible canvases added to SFT: the whole canvas shown as an observation turn,
    /// then `The digit is \boxed{d}.` (the format of `--sft-reads`). They teach reading a large digit
    /// anywhere in an image, as a pretrained model can, without teaching when to answer directly: that
    /// comes from the few legible traces. From the seed-0 warmed model with 128 legible traces (half
    /// zooming), the SFT model answered legible questions right directly / with a call: 320 → 67 / 29 %,
    /// 640 → 81 / 40 %; with GRPO on three quarters legible questions at 5e-5 the control then stopped
    /// calling on 28.5 % of needle questions after 640, on none after 320 (one run each; docs/demo.md,
    /// "The learning trap").
    #[arg(long, default_value_t = 640)]
    pub legible_reads: usize,
    /// One reading row in this many of the warm-up's (those through the whole model) shows a legible
    /// canvas whole instead of a crop (0: none): the warm-up stands in for pretraining, and a pretrained
    /// model reads a large digit anywhere in an image; 8 puts 2 of the 16 rows per step at no extra time.
    /// Not the default: one full run with 8 (seed 0, docs/demo.md, "The learning trap"), the whole model
    /// read 81 % of legible canvases after the warm-up, but the SFT model answered 44 % of legible
    /// questions right directly and 60.5 % of needle questions (the warmed model's crops held the tag 65.5 %
    /// against 80.6 % without): `--legible-reads` in SFT it is.
    #[arg(long, default_value_t = 0)]
    pub warmup_legible_every: usize,
    /// The share of the legible SFT traces that zoom in (0 to 1; the others answer directly).
    #[arg(long, default_value_t = 0.5)]
    pub legible_zoom: f64,
    /// The share of GRPO's questions that are legible (0 to 1; the others are needle questions).
    #[arg(long, default_value_t = 0.75)]
    pub grpo_legible: f64,
    /// Digit heights of the legible questions on the 448 px canvas, `MIN-MAX` (140-170: 35-42 px in the
    /// 112 px global view, the size the model reads in its crops).
    #[arg(long, default_value = "140-170")]
    pub legible_glyph: String,
    /// Held-out legible questions per evaluated model (default: the plan's, 100).
    #[arg(long)]
    pub eval_legible: Option<usize>,
    /// Learning rate of both GRPO runs: 5e-5 (1e-4 from 2026-11-28 01:00 to 03:30, 2.5e-5 from 06:30 to
    /// 09:00). After 3 SFT epochs, from the warmed models of seeds 0 and 1 (200 held-out questions),
    /// 1e-4 gave 75.0 / 66.5 % against 71.0 / 61.5 % at 5e-5; after 4 SFT epochs (the default since),
    /// 66.0 / 69.0 % against **72.5 / 72.5 %** (docs/demo-findings.md, "Where the second box goes"). 2e-4
    /// lowered held-out accuracy in three runs of four before the zoom in two steps (42 → 12 %). 2.5e-5
    /// since 2026-11-28 06:30, with `--sft-reads 640`: from the warmed models of seeds 0 / 1 / 2, GRPO
    /// 81.0 / 71.5 / 62.0 % (SFT 80.5 / 71.0 / 59.0 %); at 5e-5 the same SFT models gave 72.0 % on seed
    /// 0 (crop hit 97 → 90 %), and a KL term to the SFT model (β 0.04) 75.0 % (docs/demo-findings.md, "SFT's
    /// reading examples"). 5e-5 again since 2026-11-28 09:00, with legible questions three quarters of
    /// GRPO's: at 2.5e-5 the runs hardly moved in 8 iterations (the control still called on 96 % of
    /// needle questions), at 5e-5 the learning trap shows (docs/demo.md, "The learning trap").
    #[arg(long, default_value_t = 5e-5)]
    pub grpo_lr: f64,
    /// Weight α of the curiosity bonus in the curiosity run (the paper's 0.5; the control's is 0).
    #[arg(long, default_value_t = 0.5)]
    pub curiosity_alpha: f64,
    /// Weight β of GRPO's k3 KL term to the SFT model (pixel-rl's `SurrogateSettings::kl_beta`; 0, the
    /// recipe's, loads no reference model).
    #[arg(long, default_value_t = 0.0)]
    pub grpo_kl: f32,
    /// GRPO iterations of each run (default: the plan's, 8).
    #[arg(long)]
    pub grpo_iterations: Option<usize>,
    /// GRPO questions per iteration (default: the plan's, 8).
    #[arg(long)]
    pub grpo_queries: Option<usize>,
    /// GRPO rollouts per question (the paper's 8): the group the advantage and the curiosity bonus's RaPR
    /// are computed over.
    #[arg(long, default_value_t = 8)]
    pub grpo_group: usize,
    /// SFT traces (default: the plan's).
    #[arg(long)]
    pub sft_traces: Option<usize>,
    /// Largest margin (normalized) added to each side of the box a SFT trace's call writes (its crop
    /// follows): the synthesizer's exact boxes alone taught reading of one crop geometry, as in the
    /// warm-up (docs/demo.md), and the boxes to write hold the tag with a margin. From the warmed model of
    /// `--crop-jitter 0.15` (seed 0, 200 questions), SFT / GRPO accuracy and GRPO's crop hit: 0.03 → 43.5 /
    /// 55 %, 96 %; 0.02 → 45.5 / 47 %, 92 %; 0.01 → 53 / 51 %, 85 %. With strokes from 0.8 and the warm-up
    /// at 3e-3 (GRPO at 5e-5): 0.03 → 67.5 / 71 %, 97 %; 0.02 → 68 / 67.5 %, 92 %; 0.01 → 72 / 69.5 %,
    /// 90.5 %; 0.04 → 65 / 71 %, 89 %.
    #[arg(long, default_value_t = 0.03)]
    pub sft_jitter: f64,
    /// Reading examples added to the SFT traces: the warm-up's (a crop's observation turn, then
    /// `The digit is \boxed{d}.`) on fresh canvases, so that SFT keeps the reading the warm-up taught (the
    /// warmed model read ~80 % of held-out crops teacher-forced, the SFT model ~47 % without them). From one
    /// warmed model (seed 0, 50 questions, one run each; docs/demo.md), SFT / GRPO accuracy: none 38 / 36 %,
    /// 160 → 36 / 42 %, 320 → 42 / 48 %, 320 with 3 epochs → 48 / 36 %, 640 → 48 / 44 %, 1280 → 36 / 40 %.
    /// 640 since 2026-11-28 06:30 (320 before): with 4 epochs, from the warmed models of seeds 0 / 1 / 2
    /// (200 questions), SFT 80.0 / 70.5 / 62.5 % against 72.0 / 69.5 / 57.0 % (a lent 16-core Xeon), 80.5 %
    /// against 70.0 % on seed 0 here; SFT ~22 s longer (docs/demo-findings.md, "SFT's reading examples").
    #[arg(long, default_value_t = 640)]
    pub sft_reads: usize,
    /// The largest margin out of the SFT reading examples' crops (the warm-up's `--crop-jitter` is 0.15).
    /// SFT's reads alone, so that the warm-up (and the box it teaches) stays as it is. 0.25 since
    /// 2026-11-28 (the warm-up's 0.15 before): a third of the SFT model's crops have 2.5x the tag's area or
    /// more and were read 57 % right. From two warmed models (seed 0; a lent 16-core Xeon, 200 questions;
    /// docs/demo.md, "Reading loose crops"): SFT 69.5 / 69.5 % -> 77.0 / 75.0 %, the curiosity run 65.5 /
    /// 67.5 % -> 74.5 / 67.5 %.
    #[arg(long, default_value_t = 0.25)]
    pub sft_read_jitter: f64,
    /// The largest cut into the SFT reading examples' crops, a share of the tag's size (default: the
    /// warm-up's `--crop-cut`): the model's crops that cut the tag are read worst (docs/demo.md).
    #[arg(long)]
    pub sft_read_cut: Option<f64>,
    /// Reading examples in the trace's context added to SFT: whole synthesized traces of fresh canvases
    /// (zooming in, their boxes moved out by up to `--sft-trace-read-jitter`) with the SFT loss on the
    /// answer after the last crop only. SFT's reading examples (`--sft-reads`) show a crop alone; in a
    /// trace the answer also sees the global view and the first crop, and the SFT models of 2026-11-29
    /// read loose crops there far worse than alone. 320 since 2026-11-29 (0 before): from the warmed
    /// models of seeds 2 / 1 / 0 (200 questions, docs/demo.md, "Reading loose crops in the trace"),
    /// the curiosity run 81.0 / 81.0 / 82.5 % against 75.5 / 81.5 / 79.0 %, SFT ~26 s longer. Tried
    /// before with the SFT boxes' margin (0.03) in an older configuration: worse (docs/demo-findings.md).
    #[arg(long, default_value_t = 320)]
    pub sft_trace_reads: usize,
    /// The largest margin (normalized, per side) by which the boxes of the `--sft-trace-reads` traces are
    /// moved out (`--sft-jitter` is the SFT traces'). Only their answer is trained, so looser boxes teach reading
    /// looser crops in the trace's context without teaching to write them: teacher-forced, the SFT models
    /// of 2026-11-29 answered 81-88 % of traces with boxes moved out by up to 0.05, 52-69 % at 0.08 and
    /// 29-48 % at 0.12, and a sixth to a fifth of their own crops are 2.5x the tag's area or more
    /// (docs/demo.md).
    #[arg(long, default_value_t = 0.10)]
    pub sft_trace_read_jitter: f64,
    /// The warm-up's grounding rows hold the whole clean trace (the last crop and the answer too, every
    /// assistant turn trained), not its first turns up to the last call. One run per seed (200 questions;
    /// docs/demo.md): SFT / GRPO 37 / 37.5 % (seed 0, 42 / 40 % without), 32 / 30 % (seed 1): not the default.
    #[arg(long)]
    pub grounding_whole: bool,
    /// SFT batches of similar length (pixel-rl's `SftConfig::length_group_batches`: each epoch's order
    /// sorted by length within windows of this many batches; 0: off). With `--sft-reads 320` and windows of
    /// 4 batches SFT took 91 s instead of ~125 s, but the reading examples then came in batches of their
    /// own and the SFT model answered 96 % of held-out questions without a call (one run, docs/demo.md).
    #[arg(long, default_value_t = 0)]
    pub sft_length_groups: usize,
    /// Freeze the vision tower in SFT (the official recipe does; the demo trains it by default).
    #[arg(long)]
    pub sft_freeze_vision: bool,
    /// SFT epochs (default: the plan's).
    #[arg(long)]
    pub sft_epochs: Option<usize>,
    /// Held-out questions per evaluated model (default: the plan's, 200; ~0.04 s each per model).
    #[arg(long)]
    pub eval_samples: Option<usize>,
    /// Rotary base of the text model (Qwen2.5-VL's is 1e6; see `spec`).
    #[arg(long, default_value_t = 5.0)]
    pub rope_theta: f64,
    /// Threads that train: the warm-up computes each step's gradient in this many parts of its batch, SFT
    /// and GRPO run as this many data-parallel ranks (pixel-rl's `DataParallel::threads`). 1 or 2. On this
    /// 2-core machine one thread kept ~1.4 cores busy; two run concurrently finished in ~1.5x less time than
    /// one after the other (docs/demo.md). The result is the same up to the order of float additions.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Skip stage (a): start SFT from the `warmed` folder of an earlier run (the same `--seed`, `--direct`,
    /// `--box-*`, so that the tokenizer is the same; checked). For tuning the later stages: the report then
    /// carries that run's warm-up figures and wall time, and says so.
    #[arg(long)]
    pub from_warmed: Option<PathBuf>,
    /// Skip stages (a) and (b): start GRPO from the SFT model of an earlier run, `DIR` being that run's
    /// output folder (its `warmed`, `sft`, `runs/sft/metrics.jsonl` and `summary.json` are read; the same
    /// `--seed`, `--direct`, `--box-*`, so that the tokenizer is the same; checked). For tuning GRPO on one
    /// SFT model: the report carries that run's warm-up and SFT figures and wall times, and says so.
    #[arg(long, conflicts_with = "from_warmed")]
    pub from_sft: Option<PathBuf>,
    /// The seed of GRPO's sampling and question order (default: `--seed`): several GRPO draws from one
    /// SFT model (`--from-sft`).
    #[arg(long)]
    pub grpo_seed: Option<u64>,
}

impl Args {
    pub fn boxes(&self) -> data::Boxes {
        data::Boxes {
            decimals: self.box_decimals,
            grid: self.box_grid,
            coarse_grid: self.coarse_grid,
            fine_grid: self.fine_grid,
        }
    }

    /// The warm-up's crop jitter (`--crop-jitter`, `--crop-cut`).
    pub fn jitter(&self) -> crate::warmup::Jitter {
        crate::warmup::Jitter {
            out: self.crop_jitter,
            cut: self.crop_cut,
        }
    }

    /// The crop jitter of SFT's reading examples (`--sft-read-jitter`; `--sft-read-cut`, the warm-up's
    /// by default).
    pub fn sft_read_crops(&self) -> crate::warmup::Jitter {
        crate::warmup::Jitter {
            out: self.sft_read_jitter,
            cut: self.sft_read_cut.unwrap_or(self.crop_cut),
        }
    }

    /// `--legible-glyph` as `(min, max)`, checked against the canvas.
    pub fn legible_glyph(&self) -> anyhow::Result<(u32, u32)> {
        let glyph = self
            .legible_glyph
            .split_once('-')
            .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)))
            .context("--legible-glyph takes MIN-MAX, e.g. 140-170")?;
        data::check_legible_glyph(glyph)
            .with_context(|| format!("--legible-glyph {}", self.legible_glyph))?;
        Ok(glyph)
    }

    /// Refuses combinations of options that do not compose.
    pub fn check(&self) -> anyhow::Result<()> {
        // Each margin in its range (NaN is in none).
        const CUT: &str = "of the tag's size (more could turn a crop's box inside out)";
        const OUT: &str = "of the canvas per side";
        for (flag, value, most, of) in [
            ("--crop-cut", Some(self.crop_cut), 0.45, CUT),
            ("--sft-read-cut", self.sft_read_cut, 0.45, CUT),
            ("--crop-jitter", Some(self.crop_jitter), 0.5, OUT),
            ("--sft-read-jitter", Some(self.sft_read_jitter), 0.5, OUT),
            (
                "--sft-trace-read-jitter",
                Some(self.sft_trace_read_jitter),
                0.5,
                OUT,
            ),
        ] {
            let Some(value) = value else { continue };
            anyhow::ensure!(
                (0.0..=most).contains(&value),
                "{flag} {value}: 0 to {most} {of}"
            );
        }
        for (flag, value) in [
            ("--legible-zoom", self.legible_zoom),
            ("--grpo-legible", self.grpo_legible),
        ] {
            anyhow::ensure!(
                (0.0..=1.0).contains(&value),
                "{flag} {value}: a share, 0 to 1"
            );
        }
        self.legible_glyph()?;
        anyhow::ensure!(
            self.read_digit_weight.is_finite() && self.read_digit_weight >= 0.0,
            "--read-digit-weight {}: a weight of 0 or more",
            self.read_digit_weight
        );
        anyhow::ensure!(
            self.curiosity_alpha.is_finite() && self.curiosity_alpha >= 0.0,
            "--curiosity-alpha {}: a weight of 0 or more",
            self.curiosity_alpha
        );
        anyhow::ensure!(
            self.grpo_kl.is_finite() && self.grpo_kl >= 0.0,
            "--grpo-kl {}: a weight of 0 or more",
            self.grpo_kl
        );
        anyhow::ensure!(
            (1..=2).contains(&self.threads),
            "--threads {}: 1 or 2",
            self.threads
        );
        if self.coarse_grid > 0 {
            anyhow::ensure!(
                self.box_grid == 0 && !self.box_values && !self.read_in_context,
                "--box-grid, --box-values and --read-in-context need --coarse-grid 0 (one call)"
            );
            anyhow::ensure!(
                matches!(self.fine_grid, 0 | 4),
                "--fine-grid {}: 0 or 4 (the box probe's cells of the first crop)",
                self.fine_grid
            );
            // The warm-up's locate probe has a class per merged token of the global view (4 x 4): the
            // first box must name one of them.
            anyhow::ensure!(
                self.coarse_grid == 4,
                "--coarse-grid {}: only 4 (the global view's merged tokens) or 0",
                self.coarse_grid
            );
        } else {
            anyhow::ensure!(
                self.fine_grid == 0,
                "--fine-grid {} needs a zoom in two steps (--coarse-grid 4)",
                self.fine_grid
            );
        }
        Ok(())
    }

    /// Classes of the text model's locate probe: the cells a call's box can name.
    pub fn box_cells(&self) -> usize {
        match self.box_grid {
            0 => 16,
            n => (n * n) as usize,
        }
    }
}

/// Sizes of each stage.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    pub warmup_steps: usize,
    pub grounding_steps: usize,
    pub grounding_rows: usize,
    pub reading_steps: usize,
    pub check_steps: usize,
    /// Samples per step of the data check (its classifier reads the global views).
    pub check_batch: usize,
    pub warmup_batch: usize,
    pub warmup_globals: usize,
    pub sft_traces: usize,
    pub sft_epochs: usize,
    pub grpo_iterations: usize,
    pub grpo_queries: usize,
    pub eval_samples: usize,
    pub eval_legible: usize,
}

impl Plan {
    pub fn new(quick: bool) -> Self {
        if quick {
            Self {
                warmup_steps: 3,
                grounding_steps: 2,
                grounding_rows: 4,
                reading_steps: 2,
                check_steps: 3,
                check_batch: 4,
                warmup_batch: 4,
                warmup_globals: 4,
                sft_traces: 8,
                sft_epochs: 1,
                grpo_iterations: 1,
                grpo_queries: 2,
                eval_samples: 3,
                eval_legible: 2,
            }
        } else {
            Self {
                // 2,000 tower steps read 78 % of held-out crops, 800 read 61 % (one run each, exact crops);
                // a tower step costs ~0.1 s, a grounding step ~0.46 s. 600 grounding steps: the text
                // model's locate probe 34 % and SFT first crops on the tag 34 %, against 22 % and 6 % with
                // 400 (one run each, docs/demo.md).
                warmup_steps: 2000,
                // With the zoom in two steps (2026-11-27 13:00) a grounding row holds the first crop and a
                // second call. 500 steps of 12 rows instead of 600 of 16 saved only 100 s of the warm-up
                // and the warmed model's calls held the tag 22 % of the time (63 %; one run each).
                grounding_steps: 600,
                grounding_rows: 16,
                // The second half: the crops have their full jitter from half-way (see `warmup`); a
                // reading step adds ~0.11 s with 8 rows through the whole model, ~0.21 s with 16.
                reading_steps: 1000,
                // 300 since 2026-11-27 21:20 (400 before): the classifier's loss stayed at chance (2.30)
                // through all 400 steps in every run since the glyphs became 36-42 px; saves ~12 s.
                check_steps: 300,
                check_batch: 16,
                // 32 crops a step, 16 of them with their global view for the locate head (16 and 16 until
                // 2026-11-28 23:30): the whole model then read 89.8 % of held-out crops against 76.6 %, the
                // demo's needle accuracy 87.0 % against 72.5 % (seed 1, one run each), the warm-up ~120 s
                // longer (docs/demo.md, "32 samples per warm-up step").
                warmup_batch: 32,
                warmup_globals: 16,
                sft_traces: 320,
                // 4 since 2026-11-28 03:30 (3 from `--sft-reads 320`, 2026-11-27 17:30, for the time
                // target): from the warmed models of seeds 0 and 1, SFT 67.5 / 62.5 % → 71.5 / 73.0 %, crop
                // hit 96.0 / 83.0 % → 95.5 / 89.5 %, ~25 s more (docs/demo.md).
                sft_epochs: 4,
                // 8, not 12, since the calls pay (2026-11-27): rollouts with crops made a GRPO run 50-120 s
                // and the whole demo 15.5 min with 12, 14.1-15.1 min with 10.
                grpo_iterations: 8,
                grpo_queries: 8,
                // 200 since 2026-11-27 18:30 (50 before): one run's accuracy then has a standard error of
                // ~3.5 points instead of ~7; evaluation costs ~30 s instead of ~9.
                eval_samples: 200,
                // Legible questions: a direct answer reads them; 100 tell the models' call rates apart.
                eval_legible: 100,
            }
        }
    }
}
