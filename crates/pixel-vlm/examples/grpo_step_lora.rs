//! One GRPO update of a LoRA policy: time and peak memory.
//!
//! A group of `--group` rollouts of `--tokens` tokens each (the first `--prompt` are the prompt, the rest
//! the trained response), random token ids and rewards, goes through what a GRPO optimizer step costs:
//! old log-probs of the unchanged policy (no graph), then per micro-batch of `--micro` rollouts the policy
//! forward, the clipped surrogate (eps 0.2 / 0.35, advantages `r - mean`, token mean over the group) and
//! its backward, then AdamW (betas 0.9 / 0.95, lr 1e-6) on the adapters. Rollout generation is not
//! included. The backward runs plain, with burn's `BalancedCheckpointing`, or with per-layer recompute
//! (`Qwen25Vl::backward_recomputed`).
//!
//! Presets: `7b` is Qwen2.5-VL-7B's shape (28 layers, hidden 3584, vocabulary 152,064, the 32-block
//! vision tower), random weights; `small` a CPU-sized model. With `--features cuda` the model runs on
//! `Cuda<bf16>` (bf16 weights and activations, f32 adapters); otherwise on the default CPU backend in f32.
//! The weights of one decoder layer, the embeddings and the vision tower are drawn on the host; the other
//! layers are copies with fresh values drawn on the device (drawing the 7B shape's 7.6 B values on the host
//! would take minutes). Peak host heap is counted by this binary's allocator; the GPU's is read by the calling script.
//!
//! ```text
//! cargo run --release -p pixel-vlm --example grpo_step_lora -- --preset small --recompute layer
//! scripts/device/grpo_step_7b_lora.sh      # the 7B measurement on a GPU
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::module::{AutodiffModule, Module, ModuleMapper, Param, ParamId};
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Tensor, TensorData};
use clap::{Parser, ValueEnum};
use pixel_vlm::lora::LoraConfig;
use pixel_vlm::train::Targets;
use pixel_vlm::{ForwardInput, Qwen25Vl, Qwen25VlConfig};

#[cfg(feature = "cuda")]
type Inner = burn::backend::Cuda<half::bf16>;
#[cfg(not(feature = "cuda"))]
type Inner = pixel_vlm::backend::CpuBackend;

/// Counts live heap bytes and their peak.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            let now = if new_size >= layout.size() {
                LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size
                    - layout.size()
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed)
                    - (layout.size() - new_size)
            };
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Preset {
    /// Qwen2.5-VL-7B's shape.
    #[value(name = "7b")]
    Q7b,
    /// 8 layers, hidden 512, vocabulary 4,096, a 2-block vision tower.
    Small,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Recompute {
    /// Plain autodiff: every layer's activations are kept for the backward pass.
    None,
    /// burn's `Autodiff<_, BalancedCheckpointing>`: memory-bound ops recomputed, backend-wide.
    Balanced,
    /// `Qwen25Vl::backward_recomputed`: one decoder layer's graph at a time.
    Layer,
}

#[derive(Parser, Debug)]
#[command(about = "One GRPO update of a LoRA policy: time and peak memory")]
struct Args {
    #[arg(long, value_enum, default_value = "small")]
    preset: Preset,
    /// Rollouts per group.
    #[arg(long, default_value_t = 8)]
    group: usize,
    /// Tokens per rollout (prompt + response).
    #[arg(long, default_value_t = 2048)]
    tokens: usize,
    /// Prompt tokens per rollout (not trained).
    #[arg(long, default_value_t = 256)]
    prompt: usize,
    /// Rollouts per forward/backward (gradients accumulate over the group).
    #[arg(long, default_value_t = 1)]
    micro: usize,
    /// LoRA rank (alpha = 2 x rank) on every decoder projection.
    #[arg(long, default_value_t = 64)]
    rank: usize,
    #[arg(long, value_enum, default_value = "layer")]
    recompute: Recompute,
    /// Optimizer steps (the first one also compiles kernels on a GPU).
    #[arg(long, default_value_t = 2)]
    steps: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn config(preset: Preset) -> Qwen25VlConfig {
    let json = match preset {
        Preset::Q7b => serde_json::json!({
            "model_type": "qwen2_5_vl", "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
            "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
            "max_position_embeddings": 128000, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
            "tie_word_embeddings": false, "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
            "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
            "vision_end_token_id": 151653,
            "vision_config": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                "out_hidden_size": 3584, "fullatt_block_indexes": [7, 15, 23, 31], "window_size": 112,
                "hidden_act": "silu", "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
                "tokens_per_second": 2}
        }),
        Preset::Small => serde_json::json!({
            "model_type": "qwen2_5_vl", "hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 8,
            "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 4096,
            "max_position_embeddings": 8192, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
            "tie_word_embeddings": false, "rope_scaling": {"type": "mrope", "mrope_section": [8, 12, 12]},
            "image_token_id": 4093, "video_token_id": 4094, "vision_start_token_id": 4091,
            "vision_end_token_id": 4092,
            "vision_config": {"depth": 2, "hidden_size": 128, "intermediate_size": 256, "num_heads": 2,
                "out_hidden_size": 512, "fullatt_block_indexes": [1], "window_size": 112}
        }),
    };
    Qwen25VlConfig::from_json_str(&json.to_string()).expect("a valid preset")
}

/// Fresh ids and fresh device-drawn values (normal, std 0.02; norms keep their ones) for a copied layer.
struct Redraw;

impl<B: Backend> ModuleMapper<B> for Redraw {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (_, t, _) = param.consume();
        let t = if D >= 2 {
            Tensor::random(
                t.shape(),
                Distribution::Normal(0.0, 0.02),
                (&t.device(), t.dtype()),
            )
        } else {
            t.clone() * 1.0 // a copy of its own (biases 0, norms 1)
        };
        Param::initialized(ParamId::new(), t)
    }
}

/// The preset's model with random weights: one decoder layer drawn on the host, the others copies of it
/// redrawn on the device (the same path for every preset, so a CPU run checks what the GPU runs).
fn build<B: Backend>(preset: Preset, seed: u64, device: &B::Device) -> Qwen25Vl<B> {
    let full = config(preset);
    let mut one = full.clone();
    one.text.num_hidden_layers = 1;
    let mut model = Qwen25Vl::random(one, seed, device).expect("model");
    let layer = model.model.text.layers[0].clone();
    for _ in 1..full.text.num_hidden_layers {
        model.model.text.layers.push(layer.clone().map(&mut Redraw));
    }
    model.config = full;
    model
}

/// Host data of a rollout group.
struct Group {
    ids: Vec<u32>,
    targets: Vec<u32>,
    positions: Vec<i64>,
    /// 1 on response positions that predict a response token.
    mask: Vec<f32>,
    advantages: Vec<f32>,
}

fn group(args: &Args, config: &Qwen25VlConfig) -> Group {
    let (g, t) = (args.group, args.tokens);
    let limit = config
        .text
        .vocab_size
        .min(config.vision_start_token_id as usize) as u64;
    let mut state = args
        .seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 33
    };
    let ids: Vec<u32> = (0..g * t).map(|_| (next() % limit) as u32).collect();
    let targets = (0..g * t)
        .map(|i| if i % t + 1 < t { ids[i + 1] } else { 0 })
        .collect();
    let positions = (0..3)
        .flat_map(|_| (0..g).flat_map(|_| 0..t as i64))
        .collect();
    let mask = (0..g * t)
        .map(|i| f32::from(u8::from(i % t + 1 >= args.prompt && i % t + 1 < t)))
        .collect();
    let rewards: Vec<f32> = (0..g).map(|_| (next() % 2) as f32).collect();
    let mean = rewards.iter().sum::<f32>() / g as f32;
    Group {
        ids,
        targets,
        positions,
        mask,
        advantages: rewards.iter().map(|r| r - mean).collect(),
    }
}

/// Rows `[start, start + n)` of a `[group, tokens]` buffer (positions: of each of the three axes).
fn rows<T: Copy>(v: &[T], t: usize, start: usize, n: usize) -> Vec<T> {
    v[start * t..(start + n) * t].to_vec()
}

fn input<'a>(ids: &'a [u32], positions: &'a [i64], n: usize) -> ForwardInput<'a> {
    ForwardInput {
        input_ids: ids,
        batch: n,
        positions,
        valid: None,
        generated: None,
        images: None,
        videos: None,
    }
}

fn micro_positions(g: &Group, groups: usize, t: usize, start: usize, n: usize) -> Vec<i64> {
    (0..3)
        .flat_map(|axis| {
            rows(
                &g.positions[axis * groups * t..(axis + 1) * groups * t],
                t,
                start,
                n,
            )
        })
        .collect()
}

fn run<AB: AutodiffBackend>(args: &Args, label: &str) {
    let device = Default::default();
    let start = Instant::now();
    let base = build::<AB>(args.preset, args.seed, &device);
    let lora = LoraConfig::new()
        .with_rank(args.rank)
        .with_alpha(2.0 * args.rank as f64);
    let mut model = base.with_lora(&lora).expect("lora");
    AB::sync(&device).ok();
    let (params, adapters) = (model.num_params(), model.lora_num_params());
    println!(
        "{label}: model built in {:.1} s: {params} parameters ({adapters} in adapters, rank {}), dtype {:?}",
        start.elapsed().as_secs_f64(),
        args.rank,
        model.dtype()
    );
    let config = model.config.clone();
    let data = group(args, &config);
    let (g, t) = (args.group, args.tokens);
    let total_tokens: f32 = data.mask.iter().sum();
    let mut optim = AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.95)
        .with_epsilon(1e-8)
        .with_weight_decay(0.0)
        .init::<AB, Qwen25Vl<AB>>();
    for step in 0..args.steps {
        PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
        let t0 = Instant::now();
        // Old log-probs of the unchanged policy, no graph.
        let inner = model.valid();
        let mut old = Vec::with_capacity(g * t);
        for s in (0..g).step_by(args.micro) {
            let n = args.micro.min(g - s);
            let (ids, pos) = (rows(&data.ids, t, s, n), micro_positions(&data, g, t, s, n));
            let hidden = inner.forward_train(&input(&ids, &pos, n)).expect("forward");
            let targets = rows(&data.targets, t, s, n);
            let lp = inner
                .target_logprobs(hidden, &Targets::new(&targets))
                .expect("logprobs");
            old.extend(
                lp.logprobs
                    .into_data()
                    .convert::<f32>()
                    .to_vec::<f32>()
                    .expect("f32"),
            );
        }
        drop(inner);
        let t1 = Instant::now();
        let mut acc = GradientsAccumulator::<Qwen25Vl<AB>>::new();
        let mut loss_sum = 0f64;
        for s in (0..g).step_by(args.micro) {
            let n = args.micro.min(g - s);
            let (ids, pos) = (rows(&data.ids, t, s, n), micro_positions(&data, g, t, s, n));
            let targets = rows(&data.targets, t, s, n);
            let tensor = |v: Vec<f32>, shape: [usize; 2]| {
                Tensor::<AB, 2>::from_data(
                    TensorData::new(v, shape),
                    (&device, burn::tensor::DType::F32),
                )
            };
            let old_lp = tensor(rows(&old, t, s, n), [n, t]);
            let mask = tensor(rows(&data.mask, t, s, n), [n, t]);
            let adv = tensor(data.advantages[s..s + n].to_vec(), [n, 1]);
            let loss_of = |hidden: Tensor<AB, 3>| {
                let lp = model
                    .target_logprobs(hidden, &Targets::new(&targets))?
                    .logprobs;
                let ratio = (lp - old_lp.clone()).exp();
                let clipped = ratio.clone().clamp(1.0 - 0.2, 1.0 + 0.35) * adv.clone();
                let surrogate = (ratio * adv.clone()).min_pair(clipped);
                Ok((surrogate * mask.clone()).sum().neg() / total_tokens)
            };
            let grads = if args.recompute == Recompute::Layer {
                let out = model
                    .backward_recomputed(&input(&ids, &pos, n), loss_of)
                    .expect("backward");
                loss_sum += f64::from(
                    out.loss
                        .into_data()
                        .convert::<f32>()
                        .to_vec::<f32>()
                        .unwrap()[0],
                );
                out.grads
            } else {
                let hidden = model.forward_train(&input(&ids, &pos, n)).expect("forward");
                let loss = loss_of(hidden).expect("loss");
                loss_sum += f64::from(
                    loss.clone()
                        .into_data()
                        .convert::<f32>()
                        .to_vec::<f32>()
                        .unwrap()[0],
                );
                GradientsParams::from_grads(loss.backward(), &model)
            };
            acc.accumulate(&model, grads);
        }
        AB::sync(&device).ok();
        let t2 = Instant::now();
        model = optim.step(1e-6, model, acc.grads());
        AB::sync(&device).ok();
        let t3 = Instant::now();
        println!(
            "{label}: step {step}: {:.2} s = old log-probs {:.2} s + policy forward/backward {:.2} s + AdamW {:.3} s; \
             loss {loss_sum:.6}; peak host heap {:.0} MiB (live {:.0} MiB)",
            (t3 - t0).as_secs_f64(),
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            (t3 - t2).as_secs_f64(),
            mib(PEAK.load(Ordering::Relaxed)),
            mib(LIVE.load(Ordering::Relaxed)),
        );
    }
}

fn main() {
    let args = Args::parse();
    assert!(
        args.group > 0 && args.micro > 0 && args.prompt < args.tokens,
        "--group and --micro must be positive and --prompt below --tokens"
    );
    let label = format!(
        "{:?} group {} x {} tokens, micro {}, recompute {:?}",
        args.preset, args.group, args.tokens, args.micro, args.recompute
    );
    match args.recompute {
        Recompute::Balanced => run::<Autodiff<Inner, BalancedCheckpointing>>(&args, &label),
        Recompute::None | Recompute::Layer => run::<Autodiff<Inner>>(&args, &label),
    }
}
