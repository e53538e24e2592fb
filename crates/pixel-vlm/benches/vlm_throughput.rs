//! Prefill (image + text) and decode throughput of Qwen2.5-VL. Prints one JSON line per measurement.
//!
//! By default: a ~0.58 B-parameter random config with Qwen2.5-VL-3B widths (2 text layers, 4 vision blocks,
//! tied 151936 x 2048 embedding), f32, on the default CPU backend; `scripts/bench_vlm_reference.py` runs it
//! for both CPU backends beside transformers and prints the ratios.
//!
//! Run: `cargo bench -p pixel-vlm --bench vlm_throughput` (default backend), with
//! `--no-default-features --features flex|ndarray`, or `--no-default-features --features cuda` (burn's
//! `Cuda`; the binary is built without a GPU, see `scripts/device/build_cuda_speed.sh`).
//!
//! Environment:
//! - `VLM_BENCH_MODEL`: a checkpoint folder to load (timed, with its safetensors bytes: a `load` line)
//!   instead of the random config; `VLM_BENCH_DTYPE` (`f32` default, `bf16`, `f16`) is its dtype.
//! - `VLM_BENCH_TEXT_LAYERS`, `VLM_BENCH_VISION_DEPTH`: the random config's depths.
//! - `VLM_BENCH_IMAGES`: image grids in patches, `HxW` comma-separated (default `32x32`): one prefill each
//!   of `H·W/4` image tokens inside 64 text tokens (`16x16`: 128 tokens; `74x74`: 1,433).
//! - `VLM_BENCH_PASSES` (default 2 for prefill, 1 for decode; a value ≥ 2 applies to both): each prefill
//!   and each decode batch is run this many times in a row, one line per pass (`"pass": k`): pass 1 in a
//!   fresh process is *cold* (on CUDA, kernels are compiled and tuned for every new shape, and every new KV
//!   length is one), later passes over the same lengths are *warm*.
//! - `VLM_BENCH_DECODE` (tokens per row), `VLM_BENCH_BATCHES` (decode batch sizes, default `1`).
//!
//! Threads on CPU: set `RAYON_NUM_THREADS=2` to match the reference. On CUDA every prefill is timed to
//! the device's completion (`Backend::sync`); decode reads each step's tokens back anyway.

use std::path::Path;
use std::time::Instant;

use burn::tensor::backend::Backend;
use pixel_vlm::FloatDType;
use pixel_vlm::generation::{GenerationConfig, SegmentInput, Session};
use pixel_vlm::sampling::{Sampler, SamplingParams};
use pixel_vlm::{Qwen25Vl, Qwen25VlConfig, VisualInput};

#[cfg(feature = "cuda")]
type Bk = pixel_vlm::backend::CudaBackend;
#[cfg(not(feature = "cuda"))]
type Bk = pixel_vlm::backend::CpuBackend;

/// The backend's name in the output.
const BACKEND: &str = if cfg!(feature = "cuda") {
    "cuda"
} else if cfg!(feature = "flex") {
    "flex"
} else {
    "ndarray"
};

/// Text tokens before the image (the vision-start token follows) and after it (after the vision-end token).
const TEXT_BEFORE: usize = 32;
const TEXT_AFTER: usize = 30;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("vlm_throughput: {what}: {e}");
    std::process::exit(1)
}

fn config(text_layers: usize, vision_depth: usize) -> Qwen25VlConfig {
    let json = serde_json::json!({
        "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": text_layers,
        "num_attention_heads": 16, "num_key_value_heads": 2, "vocab_size": 151936,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": true,
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
        "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
        "vision_config": {"depth": vision_depth, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
            "out_hidden_size": 2048, "fullatt_block_indexes": [vision_depth - 1], "window_size": 112}
    });
    Qwen25VlConfig::from_json_str(&json.to_string()).unwrap_or_else(|e| fail("config", e))
}

/// `HxW` grids in patches (each side even: the merger joins 2x2 patches).
fn grids(spec: &str) -> Vec<[usize; 3]> {
    spec.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            let (h, w) = s
                .trim()
                .split_once('x')
                .unwrap_or_else(|| fail("VLM_BENCH_IMAGES", format!("{s:?} is not HxW")));
            let side = |v: &str| match v.parse::<usize>() {
                Ok(n) if n >= 2 && n % 2 == 0 => n,
                _ => fail(
                    "VLM_BENCH_IMAGES",
                    format!("{v:?} is not an even number ≥ 2"),
                ),
            };
            [1, side(h), side(w)]
        })
        .collect()
}

fn dtype() -> FloatDType {
    match std::env::var("VLM_BENCH_DTYPE").as_deref() {
        Err(_) | Ok("f32") => FloatDType::F32,
        Ok("bf16") => FloatDType::BF16,
        Ok("f16") => FloatDType::F16,
        Ok(other) => fail("VLM_BENCH_DTYPE", format!("{other:?} (f32, bf16 or f16)")),
    }
}

/// Bytes of the `*.safetensors` files of `dir`.
fn checkpoint_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn sync<B: Backend>(device: &B::Device) {
    if let Err(e) = B::sync(device) {
        fail("sync", format!("{e:?}"));
    }
}

fn main() {
    let decode = env("VLM_BENCH_DECODE", 16);
    let passes = env("VLM_BENCH_PASSES", 1).max(1);
    let batches: Vec<usize> = std::env::var("VLM_BENCH_BATCHES")
        .unwrap_or_else(|_| "1".into())
        .split(',')
        .filter_map(|b| b.trim().parse().ok())
        .filter(|&b| b > 0)
        .collect();
    let images = grids(&std::env::var("VLM_BENCH_IMAGES").unwrap_or_else(|_| "32x32".into()));
    let device = Default::default();
    let t0 = Instant::now();
    let model = match std::env::var("VLM_BENCH_MODEL") {
        Ok(dir) => {
            let dir = Path::new(&dir);
            let model = Qwen25Vl::<Bk>::from_pretrained_with_dtype(dir, &device, dtype())
                .unwrap_or_else(|e| fail("load", e));
            sync::<Bk>(&device);
            let seconds = t0.elapsed().as_secs_f64();
            let bytes = checkpoint_bytes(dir);
            println!(
                "{{\"impl\": \"burn-{BACKEND}\", \"what\": \"load\", \"bytes\": {bytes}, \"seconds\": {seconds:.3}, \"gb_per_s\": {:.3}}}",
                bytes as f64 / seconds / 1e9
            );
            model
        }
        Err(_) => {
            let layers = env("VLM_BENCH_TEXT_LAYERS", 2);
            let depth = env("VLM_BENCH_VISION_DEPTH", 4);
            Qwen25Vl::<Bk>::random(config(layers, depth), 0, &device)
                .unwrap_or_else(|e| fail("model", e))
        }
    };
    eprintln!("init {:.1} s", t0.elapsed().as_secs_f64());

    for grid in images {
        bench_prefill(&model, grid, passes.max(2), &device);
    }
    for &batch in &batches {
        for pass in 1..=passes {
            bench_decode(&model, batch, decode, pass);
        }
    }
}

/// One image of `grid` patches inside 64 text tokens, with its M-RoPE positions.
fn prompt(config: &Qwen25VlConfig, grid: [usize; 3]) -> SegmentInput {
    let patches = grid.iter().product::<usize>();
    let (gh, gw) = (grid[1] / 2, grid[2] / 2);
    let pixel_values: Vec<f32> = (0..patches * 1176)
        .map(|i| ((i * 7919 % 509) as f32 - 254.0) / 256.0)
        .collect();
    let mut ids: Vec<u32> = (0..TEXT_BEFORE as u32).map(|i| 1000 + i).collect();
    ids.push(config.vision_start_token_id);
    ids.extend(std::iter::repeat_n(config.image_token_id, gh * gw));
    ids.push(config.vision_end_token_id.unwrap_or(151653));
    ids.extend((0..TEXT_AFTER as u32).map(|i| 2000 + i));
    // Text 0..=32 (the vision-start token last), the image's grid at 33, text after its largest position.
    let image_at = TEXT_BEFORE + 1;
    let after = (image_at + gh.max(gw)) as i64;
    let mut pos: [Vec<i64>; 3] = Default::default();
    for i in 0..ids.len() {
        let p = if i < image_at {
            [i as i64; 3]
        } else if i < image_at + gh * gw {
            let k = i - image_at;
            let t = image_at as i64;
            [t, t + (k / gw) as i64, t + (k % gw) as i64]
        } else {
            [after + (i - image_at - gh * gw) as i64; 3]
        };
        for (axis, v) in pos.iter_mut().zip(p) {
            axis.push(v);
        }
    }
    SegmentInput {
        input_ids: ids,
        positions: Some(pos.concat()),
        images: Some(VisualInput {
            pixel_values,
            grid_thw: vec![grid],
        }),
        videos: None,
    }
}

/// `passes` prefills of one image prompt (a line each), then the vision tower alone (warm).
fn bench_prefill<B: Backend>(
    model: &Qwen25Vl<B>,
    grid: [usize; 3],
    passes: usize,
    device: &B::Device,
) {
    let prompt = prompt(&model.config, grid);
    let seq = prompt.input_ids.len();
    let patches = grid.iter().product::<usize>();
    for pass in 1..=passes {
        let mut session = Session::new(model, 1, seq + 4).unwrap_or_else(|e| fail("session", e));
        let t = Instant::now();
        if let Err(e) = session.append(std::slice::from_ref(&prompt)) {
            fail("prefill", e);
        }
        sync::<B>(device);
        let seconds = t.elapsed().as_secs_f64();
        println!(
            "{{\"impl\": \"burn-{BACKEND}\", \"what\": \"prefill\", \"pass\": {pass}, \"tokens\": {seq}, \"image_tokens\": {}, \"patches\": {patches}, \"seconds\": {seconds:.4}}}",
            patches / 4
        );
    }
    let image = prompt.images.unwrap_or_default();
    let _ = model.encode_visual(&image).map(|t| t.into_data());
    let t = Instant::now();
    let _ = model.encode_visual(&image).map(|t| t.into_data());
    println!(
        "{{\"impl\": \"burn-{BACKEND}\", \"what\": \"vision\", \"patches\": {patches}, \"seconds\": {:.4}}}",
        t.elapsed().as_secs_f64()
    );
}

/// Read bandwidth of the host in GB/s: threads (as many as `RAYON_NUM_THREADS`, else the machine's) each
/// summing its part of a 1 GiB f32 buffer, best of 5. Measured right before each CPU decode run because this
/// VM's bandwidth drifts; not on CUDA (the caller measures the GPU's).
fn read_bandwidth_gbs() -> Option<f64> {
    if cfg!(feature = "cuda") {
        return None;
    }
    let threads = env(
        "RAYON_NUM_THREADS",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    )
    .max(1);
    let data = vec![1.0f32; 1 << 28];
    let part = data.len().div_ceil(threads);
    let mut best = 0.0f64;
    for _ in 0..5 {
        let t = Instant::now();
        let total: f32 = std::thread::scope(|scope| {
            let handles: Vec<_> = data
                .chunks(part)
                .map(|chunk| {
                    scope.spawn(move || {
                        // Eight independent lanes so the compiler vectorises the reduction.
                        let mut lanes = [0.0f32; 8];
                        for block in chunk.chunks_exact(8) {
                            for (lane, x) in lanes.iter_mut().zip(block) {
                                *lane += x;
                            }
                        }
                        lanes.iter().sum::<f32>()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
        });
        let secs = t.elapsed().as_secs_f64();
        std::hint::black_box(total);
        best = best.max((data.len() * 4) as f64 / secs / 1e9);
    }
    Some(best)
}

/// Decode: a short text prompt per row, then `decode` greedy tokens; the first sampled token needs no
/// forward, so `decode - 1` decode steps of `batch` rows are timed.
fn bench_decode(model: &Qwen25Vl<Bk>, batch: usize, decode: usize, pass: usize) {
    let read_gbs = read_bandwidth_gbs().map_or("null".to_string(), |g| format!("{g:.1}"));
    let rows: Vec<SegmentInput> = (0..batch)
        .map(|r| SegmentInput::text((0..16).map(|i| 3000 + i + r as u32).collect()))
        .collect();
    let mut session =
        Session::new(model, batch, 16 + decode + 1).unwrap_or_else(|e| fail("session", e));
    if let Err(e) = session.append(&rows) {
        fail("decode prompt", e);
    }
    let mut samplers: Vec<Sampler> = (0..batch)
        .filter_map(|_| Sampler::new(SamplingParams::greedy(), 0).ok())
        .collect();
    let config = GenerationConfig {
        max_new_tokens: decode,
        ..Default::default()
    };
    let t = Instant::now();
    let out = session
        .generate(&config, &mut samplers, None, |_, _, _| {})
        .unwrap_or_else(|e| fail("decode", e));
    let secs = t.elapsed().as_secs_f64();
    let steps = out[0].tokens.len().saturating_sub(1) * batch;
    println!(
        "{{\"impl\": \"burn-{BACKEND}\", \"what\": \"decode\", \"pass\": {pass}, \"batch\": {batch}, \"tokens\": {steps}, \"seconds\": {secs:.3}, \"tok_per_s\": {:.3}, \"read_gbs\": {read_gbs}}}",
        steps as f64 / secs
    );
}
