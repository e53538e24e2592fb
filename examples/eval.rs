//! Evaluates a Pixel Reasoner model on a benchmark with the official settings, then scores and reports.
//!
//! ```text
//! # inference: in process (CPU, or with --features cuda on a GPU) or against an OpenAI-compatible server
//! cargo run --release --features vlm --example eval -- run --layout vstar --data data/vstar_bench \
//!     --model PixelReasoner-RL-v1 --out out/eval/vstar.jsonl
//! cargo run --release --features vlm --example eval -- run --layout official --data data/vstar.parquet \
//!     --url http://localhost:8000 --served-model PixelReasoner-RL-v1 --out out/eval/vstar.jsonl
//! # scoring, apart from inference (any number of results files: shards, benchmarks)
//! cargo run --release --features vlm --example eval -- score out/eval/vstar.jsonl --scorer official
//! cargo run --release --features vlm --example eval -- report out/eval/*.jsonl --out out/eval/report.md
//! ```
//! `run` is resumable: run the same command again after a crash or a kill and it continues. With `--url`,
//! `--concurrency N` keeps N questions in flight against the server (it batches them); `--shard i/n` runs
//! every n-th question into its own file (several processes or machines); `--limit N` runs the first N.
//! In process, every image the model receives goes through the serving engine's torchvision resize first
//! (`--engine-kernel pillow` keeps the processor's Pillow kernel). See `docs/benchmarks.md` for the layouts,
//! the settings and the reproduction recipe.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use pixel_agent::{Engine, HttpConfig, HttpEngine, LocalEngine};
use pixel_eval::{
    EvalSettings, Layout, LoadOptions, OfficialPipeline, Scorer, ServingResize,
    ServingResizeEngine, Shard, loaders, read_many, report, run_concurrent, run_with, score,
};
use pixel_ops::BicubicKernel;
use pixel_traces::OnError;
#[cfg(not(feature = "cuda"))]
use pixel_vlm::backend::CpuBackend as Backend;
#[cfg(feature = "cuda")]
use pixel_vlm::backend::CudaBackend as Backend;
use pixel_vlm::processor::{ImageProcessor, Processor};
use pixel_vlm::{FloatDType, Qwen25Vl};

#[derive(Parser, Debug)]
#[command(about = "Pixel Reasoner evaluation: run a benchmark, score results, report")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs a benchmark (resumable) and writes one JSON line per question plus a `.meta.json` header.
    Run(Box<RunArgs>),
    /// Scores results files with one scorer: a summary on stdout, per-question scores with `--out`.
    Score {
        /// Results files (JSONL).
        results: Vec<PathBuf>,
        /// `official` (the paper's rule) or `standard` (letter / integer / ANLS).
        #[arg(long, default_value = "official")]
        scorer: String,
        /// Write every question's score as JSONL here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Both scorers side by side with the paper's Table 1, 95 % intervals, RaPR, per-category tables.
    Report {
        /// Results files (JSONL).
        results: Vec<PathBuf>,
        /// Write the markdown here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// official, vstar, tallyqa (complex), tallyqa-simple, tallyqa-all, infovqa, mvbench, hrbench.
    #[arg(long)]
    layout: String,
    /// The benchmark's file or folder.
    #[arg(long)]
    data: PathBuf,
    /// Image folder, where the layout keeps images apart (InfographicsVQA, TallyQA).
    #[arg(long)]
    images: Option<PathBuf>,
    /// Results file (JSONL); its header goes beside it as `.meta.json`.
    #[arg(long)]
    out: PathBuf,
    /// Checkpoint folder (runs the model in process, token-exact).
    #[arg(long, conflicts_with = "url")]
    model: Option<PathBuf>,
    /// Base URL of an OpenAI-compatible server (vLLM, SGLang) instead of `--model`.
    #[arg(long)]
    url: Option<String>,
    /// The model name the server serves.
    #[arg(long, default_value = "default")]
    served_model: String,
    /// Precision of the in-process model: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Keep the checkpoint's own processor pixel limits instead of the official [401,408, 4,014,080].
    #[arg(long)]
    keep_processor_limits: bool,
    /// New tokens per turn (official: 2,048).
    #[arg(long, default_value_t = 2048)]
    max_new_tokens: usize,
    /// At most this many questions (after sharding).
    #[arg(long)]
    limit: Option<usize>,
    /// Only this shard, `i/n`.
    #[arg(long)]
    shard: Option<String>,
    /// Questions in flight at once, each on its own connection (`--url` only; the in-process engine
    /// runs one at a time).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Kernel of the serving engine's resize in process: torchvision (the official engine's) or pillow.
    #[arg(long, default_value = "torchvision")]
    engine_kernel: String,
    /// The git commit of this code, recorded in the header.
    #[arg(long)]
    commit: Option<String>,
    /// Skip malformed records (listed) instead of stopping at the first.
    #[arg(long)]
    skip_bad_records: bool,
}

/// The official pixel limits of the serving engine (`MIN_PIXELS` / `MAX_PIXELS` of the official README).
const OFFICIAL_ENGINE_PIXELS: (u64, u64) = (401_408, 4_014_080);

fn main() {
    if let Err(err) = dispatch(Cli::parse()) {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => run_command(&args),
        Command::Score {
            results,
            scorer,
            out,
        } => {
            let scorer = match scorer.as_str() {
                "official" => Scorer::Official,
                "standard" => Scorer::Standard,
                other => {
                    return Err(format!("unknown scorer {other:?} (official, standard)").into());
                }
            };
            let scores = score(&read_many(&results)?, scorer);
            for b in &scores.benchmarks {
                println!(
                    "{} ({}): {:.1} % of {} questions, 95 % CI {:.1}-{:.1}, RaPR {:.1} %, {} failed",
                    b.benchmark,
                    scorer.name(),
                    100.0 * b.accuracy.mean,
                    b.accuracy.questions,
                    100.0 * b.accuracy.interval.low,
                    100.0 * b.accuracy.interval.high,
                    100.0 * b.rapr,
                    b.errors
                );
            }
            if let Some(out) = out {
                let mut text = String::new();
                for item in &scores.items {
                    text.push_str(&serde_json::to_string(item)?);
                    text.push('\n');
                }
                std::fs::write(&out, text)?;
                eprintln!("per-question scores in {}", out.display());
            }
            Ok(())
        }
        Command::Report { results, out } => {
            let results = read_many(&results)?;
            let text = report::markdown(
                &score(&results, Scorer::Official),
                &score(&results, Scorer::Standard),
            );
            match out {
                Some(path) => {
                    std::fs::write(&path, text)?;
                    eprintln!("report in {}", path.display());
                }
                None => print!("{text}"),
            }
            Ok(())
        }
    }
}

fn run_command(args: &RunArgs) -> Result<()> {
    let options = LoadOptions {
        on_error: if args.skip_bad_records {
            OnError::Skip
        } else {
            OnError::Fail
        },
        ..LoadOptions::default()
    };
    let layout = Layout::from_name(&args.layout)?;
    let bench = match (&layout, &args.images) {
        (Layout::InfoVqa, Some(images)) => {
            loaders::infovqa::load(&args.data, Some(images), &options)?
        }
        (Layout::TallyQa(subset), Some(images)) => {
            loaders::tallyqa::load_with_images(&args.data, images, *subset, &options)?
        }
        _ => loaders::load(&layout, &args.data, &options)?,
    };
    for skipped in &bench.skipped {
        eprintln!("skipped: {skipped}");
    }
    eprintln!(
        "{}: {} questions from {}",
        bench.name,
        bench.len(),
        bench.source.display()
    );

    let mut settings = EvalSettings::official(match (&args.model, &args.url) {
        (Some(dir), _) => dir.display().to_string(),
        _ => args.served_model.clone(),
    });
    settings.rollout.max_new_tokens = args.max_new_tokens;
    settings.limit = args.limit;
    settings.shard = args.shard.as_deref().map(Shard::parse).transpose()?;
    settings.commit = args.commit.clone();
    settings.concurrency = args.concurrency;
    let pipeline = OfficialPipeline::default();

    let summary = match (&args.model, &args.url) {
        (Some(dir), _) => {
            if args.concurrency != 1 {
                return Err(
                    "the in-process engine runs one question at a time: --concurrency 1".into(),
                );
            }
            let kernel = match args.engine_kernel.as_str() {
                "torchvision" => BicubicKernel::Torchvision,
                "pillow" => BicubicKernel::Pillow,
                other => {
                    return Err(format!("unknown kernel {other:?} (torchvision, pillow)").into());
                }
            };
            let dtype = match args.dtype.as_str() {
                "f32" => FloatDType::F32,
                "bf16" => FloatDType::BF16,
                "f16" => FloatDType::F16,
                other => return Err(format!("unknown dtype {other:?} (f32, bf16, f16)").into()),
            };
            let device = Default::default();
            let mut processor = Processor::from_pretrained(dir)?;
            if !args.keep_processor_limits {
                let mut config = processor.image_processor.config().clone();
                (config.min_pixels, config.max_pixels) = (
                    Some(OFFICIAL_ENGINE_PIXELS.0),
                    Some(OFFICIAL_ENGINE_PIXELS.1),
                );
                processor.image_processor = ImageProcessor::new(config)?;
            }
            let limits = processor.image_processor.config().limits();
            let model = Qwen25Vl::<Backend>::from_pretrained_with_dtype(dir, &device, dtype)?;
            let budget = settings.rollout.episode.max_total_tokens.unwrap_or(12_088);
            let most = model.max_cache_capacity(1, pixel_vlm::cache::DEFAULT_KV_CACHE_BUDGET);
            let capacity = (budget + args.max_new_tokens).min(most);
            settings.engine = format!(
                "in-process {} {}",
                if cfg!(feature = "cuda") {
                    "cuda"
                } else {
                    "cpu"
                },
                args.dtype
            );
            settings
                .notes
                .insert("engine_pixels".into(), serde_json::to_value(limits)?);
            settings.notes.insert("kv_capacity".into(), capacity.into());
            // The serving engine's resize, with the processor's own bounds so its Pillow resize is a no-op.
            let stage = ServingResize { limits, kernel };
            settings
                .notes
                .insert("engine_resize".into(), serde_json::to_value(stage)?);
            let engine = LocalEngine::new(&model, &processor, capacity);
            let mut engine = ServingResizeEngine::new(engine, stage);
            go(&mut engine, &bench, &settings, &pipeline, &args.out)?
        }
        (None, Some(url)) => {
            let mut config = HttpConfig::new(url.clone(), args.served_model.clone());
            // A 2,048-token turn can take minutes on a loaded server.
            config.timeout = std::time::Duration::from_secs(600);
            settings.engine = format!("http {url}");
            settings.notes.insert(
                "engine_pixels".into(),
                "the server's own processor settings (official: --mm-processor-kwargs min_pixels=401408 max_pixels=4014080)".into(),
            );
            let mut engines = (0..args.concurrency.max(1))
                .map(|_| HttpEngine::new(config.clone()))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            run_concurrent(&mut engines, &bench, &settings, &pipeline, &args.out)?
        }
        (None, None) => return Err("give --model DIR or --url URL".into()),
    };
    eprintln!(
        "{} questions selected: {} were done, {} ran now ({} failed) in {:.0} s; results in {}",
        summary.selected,
        summary.done_before,
        summary.ran,
        summary.errors,
        summary.seconds,
        args.out.display()
    );
    Ok(())
}

fn go<E: Engine>(
    engine: &mut E,
    bench: &pixel_eval::Benchmark,
    settings: &EvalSettings,
    pipeline: &OfficialPipeline,
    out: &Path,
) -> Result<pixel_eval::RunSummary> {
    Ok(run_with(engine, bench, settings, pipeline, out)?)
}
