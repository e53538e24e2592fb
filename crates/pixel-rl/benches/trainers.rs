//! The SFT and GRPO trainers of `pixel-rl` timed on CPU (`Autodiff<CpuBackend>`, `Flex` by default):
//! SFT trained tokens per second and GRPO seconds per step (rollout and update apart).
//! `scripts/bench_trainers_reference.py` runs TRL's `SFTTrainer` / `GRPOTrainer` on the same checkpoint
//! folder, token ids and settings, and `scripts/bench_trainers.sh` runs both in one go and prints the
//! ratios (docs/performance.md, "Trainers vs TRL (CPU)"). A benchmark, not a test.
//!
//! ```text
//! # write the checkpoint folder and the shared data (once per config), then time
//! cargo bench -p pixel-rl --bench trainers -- --config a --prepare
//! cargo bench -p pixel-rl --bench trainers -- --config a --what sft
//! cargo bench -p pixel-rl --bench trainers -- --config a --what grpo
//! ```
//!
//! `--dir DIR` (default: the workspace's `target/bench-trainers`; `cargo bench` runs the binary from the
//! crate's folder, so give an absolute path) holds one folder per config.
//!
//! Threads: `RAYON_NUM_THREADS=2` to match the reference. One JSON line per measurement on stdout;
//! per-step progress on stderr.
//!
//! Configs (random weights, f32; the shapes of `pixel-vlm`'s `train_step` bench):
//! - `a`: the CPU demo's model: 4 text layers, hidden 192, 4 query / 2 KV heads, MLP 512, vocabulary 1,024
//!   (tied); vision 2 blocks of width 128. SFT batch 8 (`SftConfig::demo`), one example per micro-batch.
//! - `b`: Qwen2.5-VL-3B widths with 2 text layers and 4 vision blocks (~0.58 B parameters, tied 151,936-token
//!   vocabulary). SFT batch 1 by default (one 661-token trace: a step of 8 would take ~4-5 minutes on 2
//!   cores), one timed step by default.
//!
//! `--prepare` writes, under `DIR/<config>/`:
//! - `model/`: a complete checkpoint from `pixel_vlm::builder::write_tiny_checkpoint` (byte-level BPE
//!   tokenizer whose merges are learned so that the vocabulary has exactly the config's size: for `b`,
//!   pseudo-words are added to the merge corpus to reach 151,914 merges + 22 added tokens);
//! - `sft_data.json`: SFT examples as token ids and loss masks: synthesized `needle` traces (clean, one
//!   wrong crop first, coarse-to-fine, two wrong crops) **with their images left out** (text-only SFT:
//!   TRL's `SFTTrainer` would need the Qwen2.5-VL processor pipeline for images), tokenized with the
//!   checkpoint's chat template and masked by the paper's rule (`MaskRule::Paper`);
//! - `grpo_prompt.json`: the token ids of the GRPO prompt (a short system prompt and a text-only question,
//!   rendered by the agent loop), which the reference feeds to TRL as text and checks.
//!
//! SFT: `SftConfig::demo()` with batch = number of examples (every step trains on all of them, so each step
//! of both implementations does the same work), `--sft-micro` examples per forward/backward (default 1:
//! no padding), vision tower frozen. Reported: tokens and trained (loss) tokens per step, median step time,
//! tokens/s.
//!
//! GRPO: `GrpoConfig::demo()` with one text-only task per buffer, a group of `--group` rollouts (8), at most
//! `--new-tokens` (32) new tokens at temperature 1 (no top-k/top-p), one optimizer step per buffer over one
//! micro-batch of all rows, old log-probs from the rollout (on-policy), no KL, uniform groups kept, constant
//! learning rate 1e-4. Reward: `(characters of the answer mod 7) / 7` (anything non-constant; the
//! reference uses the same formula). Reported: median seconds per step, split into rollout (the
//! environment: prefill once, fork, sample) and update (log-probs, surrogate, backward, clipping, AdamW).

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use burn::backend::Autodiff;
use burn::module::Module;
use burn::tensor::backend::Backend;
use pixel_agent::{Media, Query, RolloutConfig, Trajectory};
use pixel_rl::config::{GrpoConfig, SftConfig};
use pixel_rl::data::Task;
use pixel_rl::reward::PerRollout;
use pixel_rl::sft::{MaskRule, SftExample};
use pixel_rl::trainer::sft::build_examples;
use pixel_rl::trainer::{AgentEnvironment, Environment, GrpoTrainer, SftTrainer};
use pixel_traces::{
    SynthConfig, Synthesizer, SyntheticDataset, TemplateNarrator, TracePart, Variant,
};
use pixel_vlm::backend::CpuBackend;
use pixel_vlm::builder::{TinySpec, write_tiny_checkpoint};
use pixel_vlm::processor::Processor;
use pixel_vlm::sampling::SamplingParams;
use pixel_vlm::{Qwen25Vl, VisualInput};
use serde_json::{Value, json};

type AB = Autodiff<CpuBackend>;
type Error = Box<dyn std::error::Error>;

/// The system prompt of the GRPO rollouts (short, as in the trainer tests).
const SYSTEM: &str = "You are a helpful assistant.";
/// The GRPO task's question (text only).
const QUESTION: &str =
    "A shelf holds 17 red books and 25 blue books. How many books are on the shelf?";
/// Examples written to `sft_data.json` (the largest SFT batch used).
const SFT_EXAMPLES: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    A,
    B,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::A => "a",
            Which::B => "b",
        }
    }
}

#[derive(Debug)]
struct Args {
    config: Which,
    dir: PathBuf,
    prepare: bool,
    force: bool,
    sft: bool,
    grpo: bool,
    sft_batch: usize,
    sft_micro: usize,
    warmup: usize,
    steps: usize,
    group: usize,
    new_tokens: usize,
}

const USAGE: &str = "trainers [--config a|b] [--dir DIR] [--prepare [--force]] [--what sft|grpo|all] \
[--sft-batch N] [--sft-micro N] [--warmup N] [--steps N] [--group N] [--new-tokens N]";

fn parse_args() -> Result<Args, Error> {
    let mut config = Which::A;
    let mut dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/bench-trainers"
    ));
    let (mut prepare, mut force) = (false, false);
    let mut what = "all".to_string();
    let mut numbers: [Option<usize>; 6] = [None; 6];
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))
        };
        let mut number = |slot: usize| -> Result<(), Error> {
            numbers[slot] = Some(value()?.parse()?);
            Ok(())
        };
        match arg.as_str() {
            "--config" => {
                config = match value()?.as_str() {
                    "a" => Which::A,
                    "b" => Which::B,
                    other => return Err(format!("unknown config {other}\n{USAGE}").into()),
                }
            }
            "--dir" => dir = PathBuf::from(value()?),
            "--prepare" => prepare = true,
            "--force" => force = true,
            "--what" => what = value()?,
            "--sft-batch" => number(0)?,
            "--sft-micro" => number(1)?,
            "--warmup" => number(2)?,
            "--steps" => number(3)?,
            "--group" => number(4)?,
            "--new-tokens" => number(5)?,
            // Passed by `cargo bench`.
            "--bench" => {}
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}").into()),
        }
    }
    let (sft, grpo) = match what.as_str() {
        "sft" => (true, false),
        "grpo" => (false, true),
        "all" => (true, true),
        other => return Err(format!("--what {other}: sft, grpo or all").into()),
    };
    let sft_batch = numbers[0].unwrap_or(match config {
        Which::A => 8,
        Which::B => 1,
    });
    if sft_batch == 0 || sft_batch > SFT_EXAMPLES {
        return Err(format!("--sft-batch must be 1..={SFT_EXAMPLES}").into());
    }
    Ok(Args {
        config,
        dir: dir.join(config.name()),
        prepare,
        force,
        sft,
        grpo,
        sft_batch,
        sft_micro: numbers[1].unwrap_or(1).max(1),
        warmup: numbers[2].unwrap_or(1),
        steps: numbers[3]
            .unwrap_or(match config {
                Which::A => 5,
                Which::B => 1,
            })
            .max(1),
        group: numbers[4].unwrap_or(8),
        new_tokens: numbers[5].unwrap_or(32),
    })
}

/// Deterministic pseudo-words (8 lowercase letters) for the merge corpus of config `b`.
fn pseudo_words(n: usize) -> Vec<String> {
    let mut x: u64 = 1;
    (0..n)
        .map(|_| {
            (0..8)
                .map(|_| {
                    x = x
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    char::from(b'a' + ((x >> 33) % 26) as u8)
                })
                .collect()
        })
        .collect()
}

/// The checkpoint spec of a config, with the vocabulary size it must reach. The merge corpus: the default
/// (the system prompt and guidelines) and `texts` (the SFT traces) twice each, so their pairs are learned,
/// then pseudo-words twice to reach the vocabulary size (each distinct word adds merges).
fn spec(which: Which, texts: &[String]) -> (TinySpec, usize) {
    let base = TinySpec::default();
    let (words, vocab) = match which {
        Which::A => (2_000, 1024),
        Which::B => (60_000, 151_936),
    };
    let mut corpus: Vec<String> = Vec::new();
    for _ in 0..2 {
        corpus.extend(base.merge_corpus.iter().cloned());
        corpus.extend(texts.iter().cloned());
    }
    let words = pseudo_words(words);
    for _ in 0..2 {
        corpus.extend(words.chunks(50).map(|c| c.join(" ")));
    }
    let spec = match which {
        Which::A => TinySpec {
            hidden_size: 192,
            intermediate_size: 512,
            num_hidden_layers: 4,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            vision_depth: 2,
            vision_hidden_size: 128,
            vision_intermediate_size: 256,
            vision_num_heads: 2,
            ..base
        },
        Which::B => TinySpec {
            hidden_size: 2048,
            intermediate_size: 11008,
            num_hidden_layers: 2,
            num_attention_heads: 16,
            num_key_value_heads: 2,
            vision_depth: 4,
            vision_hidden_size: 1280,
            vision_intermediate_size: 3420,
            vision_num_heads: 16,
            ..base
        },
    };
    (
        TinySpec {
            merge_corpus: corpus,
            bpe_vocab_size: vocab - pixel_vlm::builder::ADDED_TOKENS.len(),
            ..spec
        },
        vocab,
    )
}

/// The GRPO rollout settings shared with the reference: temperature 1, no top-k / top-p.
fn rollout_config(new_tokens: usize) -> RolloutConfig {
    let plain = SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
    };
    RolloutConfig {
        system: Some(SYSTEM.into()),
        first_turn: plain,
        later_turns: plain,
        max_new_tokens: new_tokens,
        ..RolloutConfig::default()
    }
}

fn task() -> Task {
    Task {
        id: "q0".into(),
        query: Query {
            media: Media::Images(Vec::new()),
            question: QUESTION.into(),
        },
        answers: vec!["42".into()],
        options: Vec::new(),
    }
}

/// Writes the checkpoint folder, `sft_data.json` and `grpo_prompt.json` under `args.dir`.
fn prepare(args: &Args) -> Result<(), Error> {
    let model_dir = args.dir.join("model");
    let done = args.dir.join("grpo_prompt.json");
    if done.is_file() && !args.force {
        eprintln!("{} exists (--force rewrites it)", args.dir.display());
        return Ok(());
    }
    std::fs::create_dir_all(&args.dir)?;
    // SFT traces: `needle` traces, images left out.
    let synth = Synthesizer::new(SynthConfig::default(), TemplateNarrator);
    let data = SyntheticDataset::by_name("needle").ok_or("no needle dataset")?;
    let variants = [
        Variant::Clean,
        Variant::OneWrong,
        Variant::CoarseToFine,
        Variant::TwoWrong,
    ];
    let mut traces = Vec::new();
    for k in 0..SFT_EXAMPLES {
        let sample = data.sample(k as u64, 0)?;
        let mut made = synth.synthesize_as(&sample, k as u64, variants[k % variants.len()])?;
        for message in &mut made.trace.messages {
            message
                .content
                .retain(|p| matches!(p, TracePart::Text { .. }));
        }
        traces.push(made.trace);
    }
    let texts: Vec<String> = traces
        .iter()
        .flat_map(|t| t.messages.iter().map(|m| m.text()))
        .collect();

    let (spec, vocab) = spec(args.config, &texts);
    let t = Instant::now();
    let config = write_tiny_checkpoint(&model_dir, &spec)?;
    if config.text.vocab_size != vocab {
        return Err(format!(
            "the tokenizer reached a vocabulary of {} instead of {vocab}",
            config.text.vocab_size
        )
        .into());
    }
    eprintln!(
        "checkpoint written to {} in {:.1} s (vocabulary {vocab})",
        model_dir.display(),
        t.elapsed().as_secs_f64()
    );
    let processor = Processor::from_pretrained(&model_dir)?;

    let no_images = |name: &str| Err(format!("no image expected: {name}"));
    let (examples, failed) = build_examples(&processor, &traces, MaskRule::Paper, &no_images);
    if !failed.is_empty() {
        return Err(format!("SFT examples failed: {failed:?}").into());
    }
    let rows: Vec<Value> = examples
        .iter()
        .map(|e| {
            json!({
                "id": e.id,
                "input_ids": e.token_ids,
                "loss_mask": e.loss_mask.iter().map(|&m| u8::from(m)).collect::<Vec<_>>(),
            })
        })
        .collect();
    std::fs::write(
        args.dir.join("sft_data.json"),
        serde_json::to_vec(&json!({"examples": rows}))?,
    )?;
    let lengths: Vec<usize> = examples.iter().map(SftExample::len).collect();
    let trained: Vec<usize> = examples.iter().map(SftExample::trained_tokens).collect();
    eprintln!("SFT examples: lengths {lengths:?}, trained tokens {trained:?}");

    // GRPO: the prompt as the agent renders it (one 1-token rollout).
    let model = Qwen25Vl::<CpuBackend>::from_pretrained(&model_dir, &Default::default())?;
    let mut engine = pixel_agent::LocalEngine::new(&model, &processor, 512);
    let out = pixel_agent::run_group(&mut engine, &task().query, 1, &rollout_config(1))?;
    let record = out[0].tokens.clone().ok_or("no token record")?;
    let first = record
        .loss_mask
        .iter()
        .position(|&m| m)
        .ok_or("nothing sampled")?;
    let prompt = &record.token_ids[..first];
    eprintln!("GRPO prompt: {} tokens", prompt.len());
    std::fs::write(
        &done,
        serde_json::to_vec(&json!({"system": SYSTEM, "question": QUESTION, "prompt_ids": prompt}))?,
    )?;
    Ok(())
}

/// (user seconds, system seconds, minor page faults) of this process so far (zeros where unreadable).
fn cpu_and_faults() -> (f64, f64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (
        field(14) as f64 / 100.0,
        field(15) as f64 / 100.0,
        field(10),
    )
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

fn round4(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| (x * 1e4).round() / 1e4).collect()
}

fn backend() -> &'static str {
    if cfg!(feature = "flex") {
        "burn-flex"
    } else {
        "burn"
    }
}

/// The SFT examples of `sft_data.json` (text only: M-RoPE positions are `0..n` on all three axes).
fn load_examples(dir: &Path, n: usize) -> Result<Vec<SftExample>, Error> {
    let data: Value = serde_json::from_slice(&std::fs::read(dir.join("sft_data.json"))?)?;
    let rows = data["examples"]
        .as_array()
        .ok_or("sft_data.json: no examples")?;
    rows.iter()
        .take(n)
        .map(|row| {
            let ids: Vec<u32> = serde_json::from_value(row["input_ids"].clone())?;
            let mask: Vec<u8> = serde_json::from_value(row["loss_mask"].clone())?;
            let positions: Vec<i64> = (0..ids.len() as i64).collect();
            Ok(SftExample {
                id: row["id"].as_str().unwrap_or("").to_string(),
                loss_mask: mask.iter().map(|&m| m != 0).collect(),
                positions: [positions.clone(), positions.clone(), positions],
                token_ids: ids,
                images: VisualInput::default(),
                videos: VisualInput::default(),
            })
        })
        .collect()
}

fn bench_sft(args: &Args) -> Result<(), Error> {
    let device = Default::default();
    let examples = load_examples(&args.dir, args.sft_batch)?;
    let tokens: usize = examples.iter().map(SftExample::len).sum();
    let trained: usize = examples.iter().map(SftExample::trained_tokens).sum();
    let t = Instant::now();
    let model = Qwen25Vl::<AB>::from_pretrained(args.dir.join("model"), &device)?;
    let params = model.model.num_params();
    eprintln!(
        "SFT: loaded {params} parameters in {:.1} s; {} examples, {tokens} tokens ({trained} trained) per step",
        t.elapsed().as_secs_f64(),
        examples.len()
    );
    let config = SftConfig::demo()
        .with_batch_size(examples.len())
        .with_micro_batch_size(args.sft_micro)
        .with_epochs(args.warmup + args.steps);
    let mut trainer = SftTrainer::new(model, examples, config)?;
    let (mut times, mut losses, mut cpu) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..args.warmup + args.steps {
        let (u0, s0, f0) = cpu_and_faults();
        let t = Instant::now();
        let m = trainer.train_step()?;
        let dt = t.elapsed().as_secs_f64();
        let (u1, s1, f1) = cpu_and_faults();
        let loss = m.get("loss").unwrap_or(f64::NAN);
        eprintln!(
            "SFT step {i}: {dt:.3} s, loss {loss:.4} (cpu: user {:.2} s, system {:.2} s, {} minor faults)",
            u1 - u0,
            s1 - s0,
            f1 - f0
        );
        if i >= args.warmup {
            times.push(dt);
            losses.push(loss);
            cpu.push((u1 - u0) + (s1 - s0));
        }
    }
    let step = median(&times);
    println!(
        "{}",
        json!({
            "impl": backend(), "what": "sft", "config": args.config.name(), "params": params,
            "batch": args.sft_batch, "micro_batch": args.sft_micro,
            "tokens_per_step": tokens, "trained_tokens_per_step": trained,
            "step_s": (step * 1e4).round() / 1e4, "steps_s": round4(&times), "cpu_s": round4(&cpu),
            "tokens_per_s": (tokens as f64 / step * 10.0).round() / 10.0,
            "trained_tokens_per_s": (trained as f64 / step * 10.0).round() / 10.0,
            "loss": round4(&losses),
        })
    );
    Ok(())
}

/// [`AgentEnvironment`] with the time it spends (and the tokens it samples) counted.
struct Timed {
    seconds: Rc<Cell<f64>>,
}

impl<B: Backend> Environment<B> for Timed {
    fn rollouts(
        &mut self,
        policy: &Qwen25Vl<B>,
        processor: &Processor,
        task: &Task,
        n: usize,
        config: &RolloutConfig,
    ) -> pixel_rl::Result<Vec<Trajectory>> {
        let t = Instant::now();
        let out = AgentEnvironment.rollouts(policy, processor, task, n, config);
        self.seconds
            .set(self.seconds.get() + t.elapsed().as_secs_f64());
        out
    }
}

fn bench_grpo(args: &Args) -> Result<(), Error> {
    let device = Default::default();
    let model_dir = args.dir.join("model");
    let prompt: Value = serde_json::from_slice(&std::fs::read(args.dir.join("grpo_prompt.json"))?)?;
    let prompt_len = prompt["prompt_ids"].as_array().map_or(0, Vec::len);
    let t = Instant::now();
    let model = Qwen25Vl::<AB>::from_pretrained(&model_dir, &device)?;
    let processor = Processor::from_pretrained(&model_dir)?;
    let params = model.model.num_params();
    eprintln!(
        "GRPO: loaded {params} parameters in {:.1} s; prompt {prompt_len} tokens",
        t.elapsed().as_secs_f64()
    );
    let iterations = args.warmup + args.steps;
    let config = GrpoConfig::demo(iterations)
        .with_group_size(args.group)
        .with_queries_per_buffer(1)
        .with_updates_per_buffer(1)
        .with_micro_batch_rows(args.group)
        .with_drop_uniform_groups(false)
        .with_min_lr_rate(1.0)
        .with_checkpoint_every(0)
        .with_rollout(rollout_config(args.new_tokens));
    let reward =
        PerRollout(|_: &Task, t: &Trajectory| (t.final_text.chars().count() % 7) as f64 / 7.0);
    let seconds = Rc::new(Cell::new(0.0));
    let mut trainer = GrpoTrainer::new(model, processor, vec![task()], reward, config)?
        .with_environment(Timed {
            seconds: seconds.clone(),
        });
    let (mut total, mut rollout, mut update, mut lengths, mut cpu) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..iterations {
        let before = seconds.get();
        let (u0, s0, f0) = cpu_and_faults();
        let t = Instant::now();
        let records = trainer.iterate()?;
        let dt = t.elapsed().as_secs_f64();
        let (u1, s1, f1) = cpu_and_faults();
        let r = seconds.get() - before;
        let first = records.first().ok_or("no metrics")?;
        let length = first.get("response_length").unwrap_or(f64::NAN);
        eprintln!(
            "GRPO step {i}: {dt:.3} s (rollout {r:.3} s, update {:.3} s), mean response {length:.1} tokens, \
             reward {:.3}, loss {:.4} (cpu: user {:.2} s, system {:.2} s, {} minor faults)",
            dt - r,
            first.get("reward").unwrap_or(f64::NAN),
            first.get("loss").unwrap_or(f64::NAN),
            u1 - u0,
            s1 - s0,
            f1 - f0
        );
        if i >= args.warmup {
            total.push(dt);
            rollout.push(r);
            update.push(dt - r);
            lengths.push(length);
            cpu.push((u1 - u0) + (s1 - s0));
        }
    }
    println!(
        "{}",
        json!({
            "impl": backend(), "what": "grpo", "config": args.config.name(), "params": params,
            "group": args.group, "max_new_tokens": args.new_tokens, "prompt_tokens": prompt_len,
            "step_s": (median(&total) * 1e4).round() / 1e4,
            "rollout_s": (median(&rollout) * 1e4).round() / 1e4,
            "update_s": (median(&update) * 1e4).round() / 1e4,
            "steps_s": round4(&total), "cpu_s": round4(&cpu), "rollouts_s": round4(&rollout), "updates_s": round4(&update),
            "mean_completion_tokens": round4(&lengths),
        })
    );
    Ok(())
}

fn main() -> Result<(), Error> {
    let args = parse_args()?;
    if args.prepare {
        return prepare(&args);
    }
    if !args.dir.join("grpo_prompt.json").is_file() {
        return Err(format!(
            "{} is not prepared: run with --prepare first",
            args.dir.display()
        )
        .into());
    }
    if args.sft {
        bench_sft(&args)?;
    }
    if args.grpo {
        bench_grpo(&args)?;
    }
    Ok(())
}
