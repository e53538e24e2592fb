//! Answer a question about an image or a video with any Qwen2.5-VL checkpoint folder, streaming the
//! answer.
//!
//! ```text
//! cargo run --release --features vlm --example vlm_chat -- --model Qwen2.5-VL-3B-Instruct \
//!     --image photo.jpg --question "What is written on the sign?"
//! ```
//! `--video` takes a folder of frames, or a video file when built with `--features vlm,ffmpeg`. Built with
//! `--features cuda` the same program runs on the GPU (`--dtype bf16` keeps a bf16 checkpoint in bf16).
//! Without `--image`/`--video` the question is asked as text only. Greedy by default; `--temperature`, `--top-p`
//! and `--seed` sample instead.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use pixel_ops::Video;
#[cfg(not(feature = "cuda"))]
use pixel_vlm::backend::CpuBackend as Backend;
#[cfg(feature = "cuda")]
use pixel_vlm::backend::CudaBackend as Backend;
use pixel_vlm::cache::DEFAULT_KV_CACHE_BUDGET;
use pixel_vlm::chat_template::RenderOptions;
use pixel_vlm::generation::{GenerationConfig, SegmentInput, Session};
use pixel_vlm::processor::Processor;
use pixel_vlm::sampling::{Sampler, SamplingParams};
use pixel_vlm::{FloatDType, Qwen25Vl, VisualInput};

#[derive(Parser, Debug)]
#[command(about = "Ask a Qwen2.5-VL checkpoint about an image or a video")]
struct Args {
    /// Checkpoint folder (config.json, safetensors, tokenizer.json, preprocessor_config.json).
    #[arg(long)]
    model: PathBuf,
    /// Image file (PNG, JPEG, WebP, ...).
    #[arg(long)]
    image: Option<PathBuf>,
    /// Video: a folder of frame images (the official data's form, sorted by name) or, with the
    /// `ffmpeg` feature, a video file sampled to the official 16 frames.
    #[arg(long)]
    video: Option<PathBuf>,
    /// The question.
    #[arg(long)]
    question: String,
    /// Most new tokens. Clamped (with a note) to what the model's context (`max_position_embeddings`)
    /// and the KV-cache budget leave after the prompt.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// KV-cache budget in MiB (keys and values of every layer).
    #[arg(long, default_value_t = DEFAULT_KV_CACHE_BUDGET >> 20)]
    kv_cache_mib: u64,
    /// Most frame files read from a `--video` folder (default: pixel-ops' cap, qwen-vl-utils' 768).
    #[arg(long, default_value_t = pixel_ops::video::DEFAULT_MAX_FRAME_FILES)]
    max_frames: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Nucleus sampling mass.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Precision of weights, activations and KV cache: `f32` (default on CPU), `bf16` or `f16` (half the
    /// memory; a bf16 checkpoint is then kept as stored).
    #[arg(long, default_value = "f32", value_parser = parse_dtype)]
    dtype: FloatDType,
}

fn parse_dtype(name: &str) -> Result<FloatDType, String> {
    match name {
        "f32" => Ok(FloatDType::F32),
        "bf16" => Ok(FloatDType::BF16),
        "f16" => Ok(FloatDType::F16),
        other => Err(format!("unknown dtype {other:?} (f32, bf16 or f16)")),
    }
}

fn main() {
    if let Err(err) = run(Args::parse()) {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let device = Default::default();
    let t = Instant::now();
    let processor = Processor::from_pretrained(&args.model)?;
    let model = Qwen25Vl::<Backend>::from_pretrained_with_dtype(&args.model, &device, args.dtype)?;
    eprintln!(
        "loaded {} in {:.1} s",
        args.model.display(),
        t.elapsed().as_secs_f64()
    );

    let mut content = Vec::new();
    let mut images = Vec::new();
    let mut videos = Vec::new();
    if let Some(path) = &args.image {
        // pixel-ops applies decode limits and composites alpha on white, as qwen-vl-utils does.
        images.push(pixel_ops::load_image(path)?);
        content.push(serde_json::json!({"type": "image"}));
    }
    if let Some(path) = &args.video {
        videos.push(load_video(path, args.max_frames)?);
        content.push(serde_json::json!({"type": "video"}));
    }
    content.push(serde_json::json!({"type": "text", "text": args.question}));
    let messages = serde_json::json!([{"role": "user", "content": content}]);
    let prompt = processor.apply_chat_template(&messages, &RenderOptions::generation())?;
    let out = processor.process(&prompt, &images, &videos)?;
    let rope = out.rope_index(&processor.rope_config())?;
    let positions: Vec<i64> = (0..3).flat_map(|a| rope.axis(a).to_vec()).collect();
    let segment = SegmentInput {
        input_ids: out.input_ids.clone(),
        positions: Some(positions),
        images: (!out.images.grid_thw.is_empty()).then(|| VisualInput {
            pixel_values: out.images.pixel_values.clone(),
            grid_thw: out.images.grid_thw.clone(),
        }),
        videos: (!out.videos.grid_thw.is_empty()).then(|| VisualInput {
            pixel_values: out.videos.pixel_values.clone(),
            grid_thw: out.videos.grid_thw.clone(),
        }),
    };
    // The cache holds the prompt, the new tokens and one spare slot; it must fit the model's context and
    // the budget (the same check `Session::with_budget` makes), so the token limit is clamped to them.
    let budget = args.kv_cache_mib.saturating_mul(1 << 20);
    let room = model
        .max_cache_capacity(1, budget)
        .checked_sub(out.input_ids.len() + 1)
        .filter(|&room| room > 0)
        .ok_or_else(|| {
            format!(
                "the prompt of {} tokens leaves no room for an answer: the model's context is {} tokens \
                 and a {} MiB KV cache holds {} (raise --kv-cache-mib)",
                out.input_ids.len(),
                model.config.text.max_position_embeddings,
                args.kv_cache_mib,
                model.max_cache_capacity(1, budget),
            )
        })?;
    let max_new_tokens = if args.max_new_tokens > room {
        eprintln!(
            "note: --max-new-tokens {} clamped to {room}, what the context and the KV-cache budget leave \
             after the {}-token prompt",
            args.max_new_tokens,
            out.input_ids.len()
        );
        room
    } else {
        args.max_new_tokens
    };
    let mut session =
        Session::with_budget(&model, 1, out.input_ids.len() + max_new_tokens + 1, budget)?;
    let t = Instant::now();
    session.append(std::slice::from_ref(&segment))?;
    eprintln!(
        "prefill of {} tokens: {:.1} s",
        out.input_ids.len(),
        t.elapsed().as_secs_f64()
    );

    let params = if args.temperature > 0.0 {
        SamplingParams::with_temperature(args.temperature).top_p(args.top_p)
    } else {
        SamplingParams::greedy()
    };
    let mut samplers = vec![Sampler::new(params, args.seed)?];
    let config = GenerationConfig {
        max_new_tokens,
        stop_token_ids: processor.tokenizer.special().stop_tokens().to_vec(),
        stop_strings: Vec::new(),
    };
    let tokenizer = &processor.tokenizer;
    let mut shown = String::new();
    let mut generated = Vec::new();
    let t = Instant::now();
    let result = session.generate(&config, &mut samplers, None, |_, token, _| {
        generated.push(token);
        // Decode the whole answer so multi-byte characters split across tokens print correctly.
        if let Ok(text) = tokenizer.decode(&generated, true)
            && text.len() > shown.len()
            && text.starts_with(&shown)
        {
            print!("{}", &text[shown.len()..]);
            let _ = std::io::stdout().flush();
            shown = text;
        }
    })?;
    println!();
    let n = result[0].tokens.len();
    eprintln!(
        "{n} tokens in {:.1} s ({:.2} tok/s), finish: {:?}",
        t.elapsed().as_secs_f64(),
        n as f64 / t.elapsed().as_secs_f64(),
        result[0].finish
    );
    Ok(())
}

/// A video from a folder of frames (sorted by file name; at most `max_frames` files, each decoded under
/// the image limits) or, with the `ffmpeg` feature, a video file.
fn load_video(path: &Path, max_frames: usize) -> Result<Video, Box<dyn std::error::Error>> {
    if path.is_dir() {
        // Listing stops one past the cap: a folder of millions of files is refused without reading them
        // all.
        let mut frames = Vec::new();
        for entry in
            std::fs::read_dir(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?
        {
            let Ok(entry) = entry else { continue };
            let file = entry.path();
            if !file.is_file() {
                continue;
            }
            if frames.len() == max_frames {
                return Err(format!(
                    "{} holds more than {max_frames} frame files (raise --max-frames)",
                    path.display()
                )
                .into());
            }
            frames.push(file);
        }
        frames.sort();
        // Each file is decoded under `DecodeLimits::default()`, the limits `load_image` applies, and
        // pixel-ops refuses a longer list too.
        let options = pixel_ops::video::FrameFilesOptions {
            max_files: max_frames,
            ..Default::default()
        };
        return Ok(Video::from_frame_files(&frames, &options)?);
    }
    #[cfg(feature = "ffmpeg")]
    {
        Ok(Video::from_file(
            path,
            &pixel_ops::video::DecodeOptions::default(),
        )?)
    }
    #[cfg(not(feature = "ffmpeg"))]
    {
        Err(format!(
            "{} is a file: decoding video files needs the `ffmpeg` feature \
             (cargo run --features vlm,ffmpeg ...), or pass a folder of frames",
            path.display()
        )
        .into())
    }
}
