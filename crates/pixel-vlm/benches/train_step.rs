//! One training step of Qwen2.5-VL on `Autodiff<CpuBackend>` (`Flex` by default): forward to the loss,
//! backward, and optionally an AdamW step; optionally the rollout (sampling) throughput of the same model.
//! `scripts/bench_train_reference.py` runs this and transformers on the same configs and data and prints
//! the ratios (docs/performance.md, "pixel-vlm: training step (CPU)").
//!
//! Run: `cargo bench -p pixel-vlm --bench train_step -- --config a` (or the built binary
//! `target/release/deps/train_step-*`). Threads: `RAYON_NUM_THREADS=2` to match the reference.
//! Prints one JSON line per measurement on stdout.
//!
//! Configs (random weights, f32):
//! - `a`: the CPU demo's model: 4 text layers, hidden 192, 4 query / 2 KV heads (head_dim 48, M-RoPE
//!   sections [6, 9, 9]), MLP 512, vocabulary 1,024 (tied); vision 2 blocks, hidden 128, 2 heads, MLP 256
//!   (the second block full attention, window 112 px). Rows of 80 tokens with two 112x112 images each
//!   (8x8 patches -> 16 merged tokens per image). Default batch 32.
//! - `b`: Qwen2.5-VL-3B widths with 2 text layers and 4 vision blocks (~0.58 B parameters, the config of
//!   `vlm_throughput`). Rows of 320 tokens with one 448x448 image (32x32 patches -> 256 tokens). Default
//!   batch 1.
//!
//! Loss: the sum of the target log-probs (`Qwen25Vl::target_logprobs`) over the positions that predict a
//! text token (the next token is neither an image pad nor a vision start/end marker), negated, as an SFT
//! or GRPO loss with unit advantages.

use std::time::Instant;

use burn::backend::Autodiff;
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::{Tensor, TensorData};
use clap::{Parser, ValueEnum};
use pixel_vlm::backend::CpuBackend;
use pixel_vlm::generation::{GenerationConfig, SegmentInput, Session};
use pixel_vlm::rope_index::{RopeIndexConfig, get_rope_index};
use pixel_vlm::sampling::{Sampler, SamplingParams};
use pixel_vlm::train::Targets;
use pixel_vlm::{ForwardInput, Qwen25Vl, Qwen25VlConfig, VisualInput};

type AB = Autodiff<CpuBackend>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Which {
    /// The CPU demo's model (4 text layers, hidden 192, vocabulary 1,024), two 112 px images per row.
    A,
    /// Qwen2.5-VL-3B widths, 2 text layers, 4 vision blocks (~0.58 B), one 448 px image per row.
    B,
}

#[derive(Parser, Debug)]
#[command(about = "Qwen2.5-VL training-step benchmark (burn, Autodiff<CpuBackend>)")]
struct Args {
    /// Model config and data layout.
    #[arg(long, value_enum, default_value = "a")]
    config: Which,
    /// Rows per step (default: 32 for `a`, 1 for `b`).
    #[arg(long)]
    batch: Option<usize>,
    /// Untimed steps first.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Exclude the vision tower from gradients (`with_frozen_vision`).
    #[arg(long)]
    freeze_vision: bool,
    /// Also time an AdamW step after each backward.
    #[arg(long)]
    optimizer: bool,
    /// Skip the training step (e.g. to time only the rollout).
    #[arg(long)]
    no_train: bool,
    /// Also time a rollout: prefill the batch's prompts (everything up to the second image's end marker)
    /// and sample this many tokens per row at temperature 1 (0: no rollout).
    #[arg(long, default_value_t = 0)]
    rollout_tokens: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Special token ids of a config.
struct Special {
    vision_start: u32,
    vision_end: u32,
    image: u32,
    video: u32,
}

/// The model config of `which` as `config.json` text.
fn config_json(which: Which) -> serde_json::Value {
    match which {
        Which::A => serde_json::json!({
            "model_type": "qwen2_5_vl", "hidden_size": 192, "intermediate_size": 512, "num_hidden_layers": 4,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1024,
            "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
            "tie_word_embeddings": true, "rope_scaling": {"type": "mrope", "mrope_section": [6, 9, 9]},
            "image_token_id": 1002, "video_token_id": 1003, "vision_start_token_id": 1000,
            "vision_end_token_id": 1001,
            "vision_config": {"depth": 2, "hidden_size": 128, "intermediate_size": 256, "num_heads": 2,
                "out_hidden_size": 192, "fullatt_block_indexes": [1], "window_size": 112}
        }),
        Which::B => serde_json::json!({
            "model_type": "qwen2_5_vl", "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 2,
            "num_attention_heads": 16, "num_key_value_heads": 2, "vocab_size": 151936,
            "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
            "tie_word_embeddings": true, "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
            "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
            "vision_end_token_id": 151653,
            "vision_config": {"depth": 4, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                "out_hidden_size": 2048, "fullatt_block_indexes": [3], "window_size": 112}
        }),
    }
}

fn special(which: Which) -> Special {
    match which {
        Which::A => Special {
            vision_start: 1000,
            vision_end: 1001,
            image: 1002,
            video: 1003,
        },
        Which::B => Special {
            vision_start: 151652,
            vision_end: 151653,
            image: 151655,
            video: 151656,
        },
    }
}

/// One training batch: ids, positions, targets, score mask and the images, as the reference builds them.
struct Batch {
    ids: Vec<u32>,
    positions: Vec<i64>,
    targets: Vec<u32>,
    score: Vec<f32>,
    images: VisualInput,
    batch: usize,
    seq: usize,
    /// Tokens of each row up to the end marker of its last image (the rollout prompt).
    prompt_len: usize,
}

/// Segments of a row: `(text tokens, image side in patches)`, the last one text only.
fn layout(which: Which) -> (Vec<(usize, usize)>, usize) {
    match which {
        // 8 text, image, 8 text, image, 28 text: 8 + 18 + 8 + 18 + 28 = 80.
        Which::A => (vec![(8, 8), (8, 8)], 28),
        // 32 text, image (256 tokens + markers), 30 text: 320.
        Which::B => (vec![(32, 32)], 30),
    }
}

/// Deterministic text token `i` of row `r` (the reference uses the same formula).
fn text_token(which: Which, r: usize, i: usize) -> u32 {
    let v = (r * 131 + i * 17 + 3) as u32;
    match which {
        Which::A => v % 1000,
        Which::B => 1000 + v % 50000,
    }
}

/// Deterministic normalised patch values of image `k` (the reference uses the same formula).
fn pixels(k: usize, patches: usize, patch_dim: usize) -> Vec<f32> {
    (0..patches * patch_dim)
        .map(|i| ((i * 7919 + k * 104_729) % 509) as f32 / 256.0 - 254.0 / 256.0)
        .collect()
}

fn build_batch(which: Which, config: &Qwen25VlConfig, batch: usize) -> Batch {
    let sp = special(which);
    let (segments, tail) = layout(which);
    let patch_dim = config.vision.patch_dim();
    let rope = RopeIndexConfig::qwen2_5_vl(sp.image, sp.video);
    let mut rows: Vec<Vec<u32>> = Vec::with_capacity(batch);
    let mut grids = Vec::new();
    let mut pixel_values = Vec::new();
    let mut prompt_len = 0;
    for r in 0..batch {
        let mut ids = Vec::new();
        let mut t = 0;
        for &(text, side) in &segments {
            ids.extend((0..text).map(|_| {
                t += 1;
                text_token(which, r, t)
            }));
            ids.push(sp.vision_start);
            ids.extend(std::iter::repeat_n(sp.image, side * side / 4));
            ids.push(sp.vision_end);
            let k = grids.len();
            grids.push([1, side, side]);
            pixel_values.extend(pixels(k, side * side, patch_dim));
        }
        prompt_len = ids.len();
        ids.extend((0..tail).map(|_| {
            t += 1;
            text_token(which, r, t)
        }));
        rows.push(ids);
    }
    let seq = rows[0].len();
    let per_row = segments.len();
    let mut positions = vec![0i64; 3 * batch * seq];
    for (r, ids) in rows.iter().enumerate() {
        let index =
            match get_rope_index(&rope, ids, &grids[r * per_row..(r + 1) * per_row], &[], &[]) {
                Ok(index) => index,
                Err(e) => panic!("rope index: {e}"),
            };
        for axis in 0..3 {
            positions[(axis * batch + r) * seq..(axis * batch + r + 1) * seq]
                .copy_from_slice(index.axis(axis));
        }
    }
    let is_text = |id: u32| id != sp.image && id != sp.vision_start && id != sp.vision_end;
    let mut targets = Vec::with_capacity(batch * seq);
    let mut score = Vec::with_capacity(batch * seq);
    for ids in &rows {
        for i in 0..seq {
            let next = ids.get(i + 1).copied();
            targets.push(next.unwrap_or(0));
            score.push(if next.is_some_and(is_text) { 1.0 } else { 0.0 });
        }
    }
    Batch {
        ids: rows.concat(),
        positions,
        targets,
        score,
        images: VisualInput {
            pixel_values,
            grid_thw: grids,
        },
        batch,
        seq,
        prompt_len,
    }
}

/// (user seconds, system seconds, minor page faults) of this process so far, from `/proc/self/stat` (zeros
/// where it cannot be read).
fn cpu_and_faults() -> (f64, f64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name: state is field 3, minflt 10, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let tick = 100.0; // USER_HZ on Linux
    (field(14) as f64 / tick, field(15) as f64 / tick, field(10))
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => 0.5 * (s[n / 2 - 1] + s[n / 2]),
    }
}

fn json_list(v: &[f64]) -> String {
    let items: Vec<String> = v.iter().map(|x| format!("{x:.4}")).collect();
    format!("[{}]", items.join(", "))
}

/// Parameters of `model` that get gradients.
fn trainable<M: Module<AB>>(model: &M) -> usize {
    struct Count(usize);
    impl burn::module::ModuleVisitor<AB> for Count {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<AB, D>>) {
            if param.is_require_grad() {
                self.0 += param.shape().num_elements();
            }
        }
    }
    let mut count = Count(0);
    model.visit(&mut count);
    count.0
}

fn train(args: &Args, config: Qwen25VlConfig, data: &Batch, backend: &str) {
    let device = Default::default();
    let t0 = Instant::now();
    let mut model = match Qwen25Vl::<AB>::random(config, 0, &device) {
        Ok(m) => m,
        Err(e) => panic!("benchmark model: {e}"),
    };
    if args.freeze_vision {
        model = model.with_frozen_vision();
    }
    let params = model.model.num_params();
    let trainable = trainable(&model.model);
    eprintln!(
        "init {:.1} s, {params} parameters ({trainable} trainable)",
        t0.elapsed().as_secs_f64()
    );
    let mut optim = AdamWConfig::new()
        .with_weight_decay(0.0)
        .init::<AB, pixel_vlm::model::Qwen25VlModel<AB>>();
    let mask = Tensor::<AB, 2>::from_data(
        TensorData::new(data.score.clone(), [data.batch, data.seq]),
        &device,
    );
    let (mut forward, mut backward, mut step, mut optimizer) = (vec![], vec![], vec![], vec![]);
    let mut loss_value = 0.0f32;
    for i in 0..args.warmup + args.steps {
        let input = ForwardInput {
            input_ids: &data.ids,
            batch: data.batch,
            positions: &data.positions,
            valid: None,
            generated: None,
            images: Some(&data.images),
            videos: None,
        };
        let (user0, sys0, faults0) = cpu_and_faults();
        let t = Instant::now();
        let hidden = match model.forward_train(&input) {
            Ok(h) => h,
            Err(e) => panic!("forward: {e}"),
        };
        let scores = match model.target_logprobs(hidden, &Targets::new(&data.targets)) {
            Ok(s) => s,
            Err(e) => panic!("scores: {e}"),
        };
        let loss = (scores.logprobs * mask.clone()).sum().neg();
        loss_value = loss.clone().into_scalar();
        let t_fwd = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let grads = loss.backward();
        let t_bwd = t.elapsed().as_secs_f64();
        let mut t_opt = 0.0;
        if args.optimizer {
            let t = Instant::now();
            let grads = GradientsParams::from_grads(grads, &model.model);
            model.model = optim.step(1e-5, model.model, grads);
            t_opt = t.elapsed().as_secs_f64();
        } else {
            drop(grads);
        }
        let (user1, sys1, faults1) = cpu_and_faults();
        eprintln!(
            "step {i}: forward {t_fwd:.3} s, backward {t_bwd:.3} s, optimizer {t_opt:.3} s, loss {loss_value:.3} \
             (cpu: user {:.2} s, system {:.2} s, {} minor page faults)",
            user1 - user0,
            sys1 - sys0,
            faults1 - faults0
        );
        if i >= args.warmup {
            forward.push(t_fwd);
            backward.push(t_bwd);
            step.push(t_fwd + t_bwd);
            optimizer.push(t_opt);
        }
    }
    let which = match args.config {
        Which::A => "a",
        Which::B => "b",
    };
    println!(
        "{{\"impl\": \"burn-{backend}\", \"what\": \"train_step\", \"config\": \"{which}\", \"batch\": {}, \"seq\": {}, \"images\": {}, \"params\": {params}, \"trainable\": {trainable}, \"freeze_vision\": {}, \"loss\": {loss_value:.4}, \"forward_s\": {:.4}, \"backward_s\": {:.4}, \"step_s\": {:.4}, \"optimizer_s\": {}, \"steps_s\": {}}}",
        data.batch,
        data.seq,
        data.images.grid_thw.len(),
        args.freeze_vision,
        median(&forward),
        median(&backward),
        median(&step),
        if args.optimizer {
            format!("{:.4}", median(&optimizer))
        } else {
            "null".into()
        },
        json_list(&step),
    );
}

/// Rollout: prefill each row's prompt (with its images), then sample `tokens` tokens per row at
/// temperature 1 (no stop token, so every row runs to the end), on the plain (non-autodiff) backend.
fn rollout(args: &Args, config: Qwen25VlConfig, data: &Batch, backend: &str) {
    let device = Default::default();
    let model = match Qwen25Vl::<CpuBackend>::random(config, 0, &device) {
        Ok(m) => m,
        Err(e) => panic!("rollout model: {e}"),
    };
    let per_row = data.images.grid_thw.len() / data.batch;
    let patch_dim = model.config.vision.patch_dim();
    let patches_per_row: usize = data.images.grid_thw[..per_row]
        .iter()
        .map(|g| g.iter().product::<usize>())
        .sum();
    let n = data.prompt_len;
    let prompts: Vec<SegmentInput> = (0..data.batch)
        .map(|r| {
            let ids = data.ids[r * data.seq..r * data.seq + n].to_vec();
            let positions: Vec<i64> = (0..3)
                .flat_map(|axis| {
                    let start = (axis * data.batch + r) * data.seq;
                    data.positions[start..start + n].to_vec()
                })
                .collect();
            let values = patches_per_row * patch_dim;
            SegmentInput {
                input_ids: ids,
                positions: Some(positions),
                images: Some(VisualInput {
                    pixel_values: data.images.pixel_values[r * values..(r + 1) * values].to_vec(),
                    grid_thw: data.images.grid_thw[r * per_row..(r + 1) * per_row].to_vec(),
                }),
                videos: None,
            }
        })
        .collect();
    let params = SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
    };
    let mut times = vec![];
    let (mut prefill_times, mut decode_times) = (vec![], vec![]);
    for i in 0..args.warmup.min(1) + args.steps.min(3) {
        let t = Instant::now();
        let mut session = match Session::new(&model, data.batch, n + args.rollout_tokens + 1) {
            Ok(s) => s,
            Err(e) => panic!("session: {e}"),
        };
        if let Err(e) = session.append(&prompts) {
            panic!("prefill: {e}");
        }
        let t_prefill = t.elapsed().as_secs_f64();
        let mut samplers: Vec<Sampler> = (0..data.batch)
            .map(|r| match Sampler::for_sequence(params, 0, r as u64) {
                Ok(s) => s,
                Err(e) => panic!("sampler: {e}"),
            })
            .collect();
        let gen_config = GenerationConfig {
            max_new_tokens: args.rollout_tokens,
            ..Default::default()
        };
        let out = match session.generate(&gen_config, &mut samplers, None, |_, _, _| {}) {
            Ok(o) => o,
            Err(e) => panic!("generate: {e}"),
        };
        let total = t.elapsed().as_secs_f64();
        let sampled: usize = out.iter().map(|o| o.tokens.len()).sum();
        eprintln!(
            "rollout {i}: prefill {t_prefill:.3} s, total {total:.3} s, {sampled} tokens sampled"
        );
        if i >= args.warmup.min(1) {
            times.push(total);
            prefill_times.push(t_prefill);
            decode_times.push(total - t_prefill);
        }
    }
    let which = match args.config {
        Which::A => "a",
        Which::B => "b",
    };
    let secs = median(&times);
    println!(
        "{{\"impl\": \"burn-{backend}\", \"what\": \"rollout\", \"config\": \"{which}\", \"batch\": {}, \"prompt\": {n}, \"new_tokens\": {}, \"seconds\": {secs:.4}, \"prefill_s\": {:.4}, \"decode_s\": {:.4}, \"trajectories_per_s\": {:.4}, \"tokens_per_s\": {:.3}}}",
        data.batch,
        args.rollout_tokens,
        median(&prefill_times),
        median(&decode_times),
        data.batch as f64 / secs,
        (data.batch * args.rollout_tokens) as f64 / secs,
    );
}

fn main() {
    let args = Args::parse();
    let backend = if cfg!(feature = "flex") {
        "flex"
    } else {
        "ndarray"
    };
    let batch = args.batch.unwrap_or(match args.config {
        Which::A => 32,
        Which::B => 1,
    });
    let config = match Qwen25VlConfig::from_json_str(&config_json(args.config).to_string()) {
        Ok(c) => c,
        Err(e) => panic!("benchmark config: {e}"),
    };
    let data = build_batch(args.config, &config, batch);
    if !args.no_train {
        train(&args, config.clone(), &data, backend);
    }
    if args.rollout_tokens > 0 {
        rollout(&args, config, &data, backend);
    }
}
