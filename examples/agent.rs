//! Pixel reasoning on one image or video: the model reasons, zooms in or selects frames, sees the result,
//! and answers. Every turn and observation is printed as it happens; the crops and selected frames and
//! the trajectory (as JSON, with the exact token record when the model runs in process) are saved.
//!
//! ```text
//! cargo run --release --features vlm --example agent -- --model PixelReasoner-RL-v1 \
//!     --image photo.jpg --question "What is written on the small sign?" --out out/agent
//! cargo run --release --features vlm --example agent -- --server http://localhost:8000 \
//!     --served-model PixelReasoner-RL-v1 --image photo.jpg --question "..."
//! ```
//! `--video` takes a folder of frame images (sorted by name) or, with `--features vlm,ffmpeg`, a video
//! file sampled to the official 16 frames. Greedy by default (the official evaluation); `--temperature`
//! samples the first turn at that temperature and later turns at 0.9 of it, as the official rollouts do.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use pixel_agent::{
    Engine, Event, HttpConfig, HttpEngine, LocalEngine, Query, RolloutConfig, Trajectory,
    run_group_with,
};
use pixel_ops::Video;
#[cfg(not(feature = "cuda"))]
use pixel_vlm::backend::CpuBackend as Backend;
#[cfg(feature = "cuda")]
use pixel_vlm::backend::CudaBackend as Backend;
use pixel_vlm::processor::Processor;
use pixel_vlm::{FloatDType, Qwen25Vl};

#[derive(Parser, Debug)]
#[command(
    about = "Pixel reasoning on an image or a video with a Qwen2.5-VL checkpoint or a server"
)]
struct Args {
    /// Checkpoint folder (runs the model in process, token-exact).
    #[arg(long, conflicts_with = "server")]
    model: Option<PathBuf>,
    /// Base URL of an OpenAI-compatible server (vLLM, SGLang) instead of `--model`.
    #[arg(long)]
    server: Option<String>,
    /// The model name the server serves.
    #[arg(long, default_value = "default")]
    served_model: String,
    /// Image file.
    #[arg(long)]
    image: Option<PathBuf>,
    /// Video: a folder of frames, or a video file with the `ffmpeg` feature.
    #[arg(long, conflicts_with = "image")]
    video: Option<PathBuf>,
    /// The question.
    #[arg(long)]
    question: String,
    /// New tokens per turn (official: 2,048).
    #[arg(long, default_value_t = 2048)]
    max_new_tokens: usize,
    /// Temperature of the first turn (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Precision of the in-process model: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Where the trajectory, crops and frames go.
    #[arg(long, default_value = "out/agent")]
    out: PathBuf,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    if let Err(err) = run(Args::parse()) {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let query = match (&args.image, &args.video) {
        (Some(path), _) => Query::image(pixel_ops::load_image(path)?, args.question.clone()),
        (None, Some(path)) => Query::video(load_video(path)?, args.question.clone()),
        (None, None) => return Err("give --image or --video".into()),
    };
    let mut config = if args.temperature > 0.0 {
        let mut c = RolloutConfig {
            seed: args.seed,
            ..RolloutConfig::default()
        };
        c.first_turn.temperature = args.temperature;
        c.later_turns.temperature = args.temperature * 0.9;
        c
    } else {
        RolloutConfig::greedy()
    };
    config.max_new_tokens = args.max_new_tokens;

    let trajectory = match (&args.model, &args.server) {
        (Some(dir), _) => {
            let dtype = match args.dtype.as_str() {
                "f32" => FloatDType::F32,
                "bf16" => FloatDType::BF16,
                "f16" => FloatDType::F16,
                other => return Err(format!("unknown dtype {other:?} (f32, bf16, f16)").into()),
            };
            let t = Instant::now();
            let device = Default::default();
            let processor = Processor::from_pretrained(dir)?;
            let model = Qwen25Vl::<Backend>::from_pretrained_with_dtype(dir, &device, dtype)?;
            eprintln!(
                "loaded {} in {:.1} s",
                dir.display(),
                t.elapsed().as_secs_f64()
            );
            // The official budget plus one turn, within the model's context and the KV-cache memory budget.
            let budget = config.episode.max_total_tokens.unwrap_or(12_088);
            let most = model.max_cache_capacity(1, pixel_vlm::cache::DEFAULT_KV_CACHE_BUDGET);
            let capacity = (budget + args.max_new_tokens).min(most);
            let mut engine = LocalEngine::new(&model, &processor, capacity);
            roll(&mut engine, &query, &config)?
        }
        (None, Some(url)) => {
            let mut engine =
                HttpEngine::new(HttpConfig::new(url.clone(), args.served_model.clone()))?;
            roll(&mut engine, &query, &config)?
        }
        (None, None) => return Err("give --model DIR or --server URL".into()),
    };
    trajectory.save(&args.out)?;
    eprintln!(
        "\n{:?} after {} turns, {} operations; trajectory, crops and frames in {}",
        trajectory.end,
        trajectory.turns.len(),
        trajectory.operations.len(),
        args.out.display()
    );
    Ok(())
}

/// One rollout, printed as it goes.
fn roll<E: Engine>(
    engine: &mut E,
    query: &Query,
    config: &RolloutConfig,
) -> Result<Trajectory, Box<dyn std::error::Error>> {
    let t = Instant::now();
    let mut rollouts = run_group_with(engine, query, 1, config, |event| match event {
        Event::Turn { turn, text, .. } => {
            println!("\n--- assistant (turn {}) ---\n{text}", turn + 1);
        }
        Event::Observation { text, images, .. } => {
            let sizes: Vec<String> = images
                .iter()
                .map(|i| format!("{}x{}", i.width(), i.height()))
                .collect();
            println!(
                "\n--- observation ---{text} [{} image(s): {}]",
                images.len(),
                sizes.join(", ")
            );
        }
        Event::End { end, .. } => println!("\n--- end: {end:?} ---"),
    })?;
    eprintln!("{:.1} s", t.elapsed().as_secs_f64());
    let trajectory = rollouts.pop().ok_or("no rollout")?;
    Ok(trajectory)
}

/// A video from a folder of frames (sorted by name) or, with `ffmpeg`, a video file.
fn load_video(path: &Path) -> Result<Video, Box<dyn std::error::Error>> {
    if path.is_dir() {
        let mut frames: Vec<PathBuf> = std::fs::read_dir(path)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        frames.sort();
        return Ok(Video::from_frame_files(
            &frames,
            &pixel_ops::video::FrameFilesOptions::default(),
        )?);
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
            "{} is a file: video files need the `ffmpeg` feature",
            path.display()
        )
        .into())
    }
}
