//! Prefill (image + text) and decode throughput of Qwen2.5-VL on a ~0.58 B-parameter random config with
//! Qwen2.5-VL-3B widths (2 text layers, 4 vision blocks, tied 151936 x 2048 embedding), f32.
//!
//! Run: `cargo bench -p pixel-vlm --bench vlm_throughput` (default backend) or with
//! `--no-default-features --features flex`. `scripts/bench_vlm_reference.py` runs both backends and
//! transformers on the same config and prints the ratios. Prints one JSON line per measurement.
//!
//! Environment: `VLM_BENCH_TEXT_LAYERS`, `VLM_BENCH_VISION_DEPTH`, `VLM_BENCH_DECODE` (tokens),
//! `VLM_BENCH_BATCHES` (decode batch sizes, comma-separated, default `1`). Threads: set
//! `RAYON_NUM_THREADS=2` to match the reference.

use std::time::Instant;

use pixel_vlm::backend::CpuBackend;
use pixel_vlm::generation::{GenerationConfig, SegmentInput, Session};
use pixel_vlm::sampling::{Sampler, SamplingParams};
use pixel_vlm::{Qwen25Vl, Qwen25VlConfig, VisualInput};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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
    match Qwen25VlConfig::from_json_str(&json.to_string()) {
        Ok(c) => c,
        Err(e) => panic!("benchmark config: {e}"),
    }
}

fn main() {
    let text_layers = env("VLM_BENCH_TEXT_LAYERS", 2);
    let vision_depth = env("VLM_BENCH_VISION_DEPTH", 4);
    let decode = env("VLM_BENCH_DECODE", 16);
    let batches: Vec<usize> = std::env::var("VLM_BENCH_BATCHES")
        .unwrap_or_else(|_| "1".into())
        .split(',')
        .filter_map(|b| b.trim().parse().ok())
        .filter(|&b| b > 0)
        .collect();
    let backend = if cfg!(feature = "flex") {
        "flex"
    } else {
        "ndarray"
    };
    let device = Default::default();
    let t0 = Instant::now();
    let model = match Qwen25Vl::<CpuBackend>::random(config(text_layers, vision_depth), 0, &device)
    {
        Ok(model) => model,
        Err(e) => panic!("benchmark model: {e}"),
    };
    eprintln!("init {:.1} s", t0.elapsed().as_secs_f64());

    // 448x448 image: 32x32 patches -> 256 merged tokens, plus 64 text tokens = 320 tokens.
    let grid = [1usize, 32, 32];
    let patches = grid.iter().product::<usize>();
    let pixel_values: Vec<f32> = (0..patches * 1176)
        .map(|i| ((i * 7919 % 509) as f32 - 254.0) / 256.0)
        .collect();
    let mut ids: Vec<u32> = (0..32).map(|i| 1000 + i).collect();
    ids.push(151652);
    ids.extend(std::iter::repeat_n(151655u32, patches / 4));
    ids.push(151653);
    ids.extend((0..30).map(|i| 2000 + i));
    let seq = ids.len();
    // M-RoPE positions: text 0..32, image grid 16x16 at 33, text after.
    let mut pos: [Vec<i64>; 3] = Default::default();
    for i in 0..seq {
        let p = if i <= 32 {
            [i as i64; 3]
        } else if i < 33 + 256 {
            let k = (i - 33) as i64;
            [33, 33 + k / 16, 33 + k % 16]
        } else {
            [(33 + 16 + i - 33 - 256) as i64; 3]
        };
        for (axis, v) in pos.iter_mut().zip(p) {
            axis.push(v);
        }
    }
    let prompt = SegmentInput {
        input_ids: ids,
        positions: Some(pos.concat()),
        images: Some(VisualInput {
            pixel_values,
            grid_thw: vec![grid],
        }),
        videos: None,
    };

    // Vision alone, then a full prefill (warm-up run first).
    let image = prompt.images.clone().unwrap_or_default();
    let _ = model.encode_visual(&image).map(|t| t.into_data());
    let t = Instant::now();
    let _ = model.encode_visual(&image).map(|t| t.into_data());
    let vision_s = t.elapsed().as_secs_f64();
    let mut prefill_s = f64::MAX;
    for _ in 0..2 {
        let mut session = match Session::new(&model, 1, seq + 4) {
            Ok(session) => session,
            Err(e) => panic!("session: {e}"),
        };
        let t = Instant::now();
        if let Err(e) = session.append(std::slice::from_ref(&prompt)) {
            panic!("prefill: {e}");
        }
        prefill_s = prefill_s.min(t.elapsed().as_secs_f64());
    }
    println!(
        "{{\"impl\": \"burn-{backend}\", \"what\": \"prefill\", \"tokens\": {seq}, \"patches\": {patches}, \"seconds\": {prefill_s:.3}, \"vision_seconds\": {vision_s:.3}}}"
    );

    for batch in batches {
        bench_decode(&model, backend, batch, decode);
    }
}

/// Read bandwidth in GB/s: threads (as many as `RAYON_NUM_THREADS`, else the machine's) each summing its part of
/// a 1 GiB f32 buffer, best of 5. Measured right before each decode run because this VM's bandwidth drifts.
fn read_bandwidth_gbs() -> f64 {
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
    best
}

/// Decode: a short text prompt per row, then `decode` greedy tokens; the first sampled token needs no
/// forward, so `decode - 1` decode steps of `batch` rows are timed.
fn bench_decode(model: &Qwen25Vl<CpuBackend>, backend: &str, batch: usize, decode: usize) {
    let read_gbs = read_bandwidth_gbs();
    let rows: Vec<SegmentInput> = (0..batch)
        .map(|r| SegmentInput::text((0..16).map(|i| 3000 + i + r as u32).collect()))
        .collect();
    let mut session = match Session::new(model, batch, 16 + decode + 1) {
        Ok(session) => session,
        Err(e) => panic!("session: {e}"),
    };
    if let Err(e) = session.append(&rows) {
        panic!("decode prompt: {e}");
    }
    let mut samplers: Vec<Sampler> = (0..batch)
        .filter_map(|_| Sampler::new(SamplingParams::greedy(), 0).ok())
        .collect();
    let config = GenerationConfig {
        max_new_tokens: decode,
        ..Default::default()
    };
    let t = Instant::now();
    let out = match session.generate(&config, &mut samplers, None, |_, _, _| {}) {
        Ok(o) => o,
        Err(e) => panic!("decode: {e}"),
    };
    let secs = t.elapsed().as_secs_f64();
    let steps = out[0].tokens.len().saturating_sub(1) * batch;
    println!(
        "{{\"impl\": \"burn-{backend}\", \"what\": \"decode\", \"batch\": {batch}, \"tokens\": {steps}, \"seconds\": {secs:.3}, \"tok_per_s\": {:.3}, \"read_gbs\": {read_gbs:.1}}}",
        steps as f64 / secs
    );
}
