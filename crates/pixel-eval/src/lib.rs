//! Evaluation of Pixel Reasoner models on the paper's benchmarks (V* Bench, TallyQA-Complex,
//! InfographicsVQA, MVBench) and HR-Bench, with the official evaluation's settings and scoring.
//!
//! - [`loaders`]: one module per layout (the official parquet / JSON files and each benchmark's own
//!   files), each giving a [`Benchmark`] of [`EvalItem`]s. A missing or malformed file names itself and the
//!   record.
//! - [`media`]: the image pipeline, a pluggable step ([`MediaPipeline`]); [`OfficialPipeline`] is the
//!   official pre-resize (stage 1). [`serving`]: the serving engine's resize of every image it receives
//!   (stage 2, torchvision's antialiased bicubic, byte-exact), in front of any engine
//!   ([`ServingResizeEngine`]).
//! - [`runner`]: [`run`] drives any `pixel_agent::Engine` (in process or over HTTP) through a benchmark
//!   with [`EvalSettings::official`] by default, writing one JSON line per question, resumable, with
//!   sharding, a limit, a progress bar and, with [`run_concurrent`], several questions in flight.
//! - [`mod@score`]: scoring apart from inference, the official rule and the standard metrics, RaPR and the
//!   operation error rate; [`stats`]: 95 % intervals; [`report`]: the markdown table beside the paper's.
//!
//! ```no_run
//! use pixel_agent::{HttpConfig, HttpEngine};
//! use pixel_eval::{EvalSettings, LoadOptions, Scorer, loaders, read_many, run, score};
//!
//! let bench = loaders::vstar::load("data/vstar_bench".as_ref(), &LoadOptions::default())?;
//! let mut engine = HttpEngine::new(HttpConfig::new("http://localhost:8000", "PixelReasoner-RL-v1"))?;
//! let mut settings = EvalSettings::official("PixelReasoner-RL-v1");
//! settings.engine = "vLLM over HTTP".into();
//! run(&mut engine, &bench, &settings, "out/vstar.jsonl".as_ref())?; // resumable
//! let results = read_many(&["out/vstar.jsonl".into()])?;
//! let official = score(&results, Scorer::Official);
//! let standard = score(&results, Scorer::Standard);
//! println!("{}", pixel_eval::report::markdown(&official, &standard));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod error;
pub mod item;
pub mod loaders;
pub mod media;
#[cfg(feature = "parquet")]
mod parquet_rows;
pub mod report;
pub mod results;
pub mod runner;
pub mod score;
pub mod serving;
pub mod stats;

pub use error::{EvalError, Result};
pub use item::{Benchmark, EvalItem, ImageRef, Media, Metric};
pub use loaders::{Layout, LoadOptions, load};
pub use media::{MediaPipeline, OfficialPipeline};
pub use results::{
    EvalSettings, ItemResult, RunHeader, Shard, header_path, read_many, read_results,
};
pub use runner::{RunSummary, run, run_concurrent, run_with};
pub use score::{BenchmarkScore, ItemScore, Scorer, Scores, score, score_item};
pub use serving::{ServingResize, ServingResizeEngine};

/// The README's example, compiled as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
