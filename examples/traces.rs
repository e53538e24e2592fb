//! Writes a few synthesized Pixel Reasoner traces (JSONL) and their images to a folder to look at.
//!
//! ```text
//! cargo run --release --example traces -- --out traces --n 8 --seed 0
//! cargo run --release --example traces -- --out traces --dataset frames --n 4
//! # analysis text from a teacher model behind an OpenAI-compatible server:
//! cargo run --release --example traces -- --out traces --teacher-url http://127.0.0.1:8000 --teacher-model m
//! ```
//!
//! The folder gets `traces.jsonl` (one trace per line) and one sub-folder of PNG images per trace.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use pixel_reasoner::pixel_traces::{
    Narrator, SynthConfig, Synthesizer, SyntheticDataset, TeacherConfig, TeacherNarrator,
    TemplateNarrator,
};

#[derive(Parser, Debug)]
#[command(about = "Write synthesized Pixel Reasoner traces and their images to a folder")]
struct Args {
    /// Output folder (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Number of traces.
    #[arg(long, default_value_t = 8)]
    n: u64,
    /// Seed of the datasets and of the synthesis.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// `needle`, `count`, `frames`, `text-only`, or `mix` (cycles through all four).
    #[arg(long, default_value = "mix")]
    dataset: String,
    /// Base URL of an OpenAI-compatible server for the analysis text (templates when absent).
    #[arg(long)]
    teacher_url: Option<String>,
    /// Model name for the teacher.
    #[arg(long, default_value = "gpt-4o")]
    teacher_model: String,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    match &args.teacher_url {
        Some(url) => {
            let mut config = TeacherConfig::new(url.clone(), args.teacher_model.clone());
            config.api_key = std::env::var("OPENAI_API_KEY").ok();
            run(&args, TeacherNarrator::new(config))
        }
        None => run(&args, TemplateNarrator),
    }
}

fn run<N: Narrator>(args: &Args, narrator: N) -> anyhow::Result<()> {
    let datasets: Vec<SyntheticDataset> = if args.dataset == "mix" {
        SyntheticDataset::NAMES
            .iter()
            .filter_map(|n| SyntheticDataset::by_name(n))
            .collect()
    } else {
        vec![SyntheticDataset::by_name(&args.dataset).with_context(|| {
            format!(
                "unknown dataset {:?}; use one of {:?} or mix",
                args.dataset,
                SyntheticDataset::NAMES
            )
        })?]
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let jsonl = args.out.join("traces.jsonl");
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(&jsonl)
            .with_context(|| format!("cannot create {}", jsonl.display()))?,
    );
    let synth = Synthesizer::new(
        SynthConfig {
            seed: args.seed,
            ..SynthConfig::default()
        },
        narrator,
    );
    let bar = ProgressBar::new(args.n);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")?);
    let mut variants = std::collections::BTreeMap::<&str, usize>::new();
    for index in 0..args.n {
        let dataset = &datasets[(index % datasets.len() as u64) as usize];
        let sample = dataset.sample(args.seed, index)?;
        let made = synth
            .synthesize(&sample, index)
            .with_context(|| format!("synthesizing {}", sample.id))?;
        made.write_images(&args.out)?;
        serde_json::to_writer(&mut file, &made.trace)?;
        file.write_all(b"\n")?;
        *variants.entry(made.variant.name()).or_default() += 1;
        tracing::debug!(id = %made.trace.id, variant = made.variant.name(), images = made.images.len(), "trace written");
        bar.set_message(made.trace.id.clone());
        bar.inc(1);
    }
    file.flush()?;
    bar.finish_and_clear();
    tracing::info!(traces = args.n, file = %jsonl.display(), ?variants, "done");
    Ok(())
}
