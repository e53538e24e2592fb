//! A bounded loopback load test: starts a server on a free loopback port (or uses `--url`), sends
//! `--requests` chat completions from `--concurrency` client threads, and reports requests/s, latency
//! percentiles, statuses and the server's batching.
//!
//! ```text
//! cargo run --release -p pixel-serve --example load -- --requests 200 --concurrency 8 --max-tokens 16
//! ```
//!
//! Without `--model` the committed tiny checkpoint (the test fixtures) is served, which measures the
//! server's overhead (HTTP, JSON, base64 and PNG decoding, queueing, batching) more than the model.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::Parser;
use image::{Rgb, RgbImage};
use pixel_serve::{DEFAULT_AGENT_MODEL, DEFAULT_RAW_MODEL, ServeConfig, Server};
use pixel_vlm::backend::CpuBackend;
use serde_json::{Value, json};

#[derive(Debug, Parser)]
struct Args {
    /// A checkpoint folder to serve (default: the committed tiny test checkpoint).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Load an already running server instead of starting one.
    #[arg(long)]
    url: Option<String>,
    /// Requests in all.
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Client threads sending at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// `max_tokens` of each request.
    #[arg(long, default_value_t = 16)]
    max_tokens: usize,
    /// Send agent-model requests (the server runs the tool loop) instead of raw ones.
    #[arg(long)]
    agent: bool,
    /// Rows the server batches together.
    #[arg(long, default_value_t = 8)]
    max_batch: usize,
}

/// The committed tiny checkpoint as one folder (`pixel-testkit`).
fn fixture_checkpoint() -> tempfile::TempDir {
    pixel_testkit::tiny_checkpoint()
}

fn body(args: &Args, i: usize) -> Vec<u8> {
    let picture = RgbImage::from_fn(112, 84, |x, y| {
        Rgb([
            (x * 2) as u8,
            (y * 3) as u8,
            ((x + y + i as u32) % 256) as u8,
        ])
    });
    let mut png = Vec::new();
    picture
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("png");
    let url = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    );
    let model = if args.agent {
        DEFAULT_AGENT_MODEL
    } else {
        DEFAULT_RAW_MODEL
    };
    serde_json::to_vec(&json!({
        "model": model,
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}},
            {"type": "text", "text": format!("Question {i}: what is in the picture?")},
        ]}],
        "max_tokens": args.max_tokens,
        "temperature": 0,
    }))
    .expect("json")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut keep = None;
    let mut shutdown = None;
    let mut serving = None;
    let url = match &args.url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let dir = match &args.model {
                Some(d) => d.clone(),
                None => {
                    let d = fixture_checkpoint();
                    let path = d.path().to_path_buf();
                    keep = Some(d);
                    path
                }
            };
            let config = ServeConfig {
                context_tokens: 4000,
                max_batch: args.max_batch,
                max_n: 1,
                max_pending: args.requests.max(1),
                ..ServeConfig::default()
            };
            let server = Server::start::<CpuBackend>(&dir, Default::default(), config)?;
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let (addr_tx, addr_rx) = mpsc::channel();
            serving = Some(std::thread::spawn(move || {
                let runtime = tokio::runtime::Runtime::new().expect("runtime");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("bind");
                    addr_tx.send(listener.local_addr().expect("addr")).ok();
                    server
                        .serve(listener, async move {
                            let _ = rx.await;
                        })
                        .await
                })
            }));
            shutdown = Some(tx);
            format!("http://{}", addr_rx.recv()?)
        }
    };
    let bodies: Vec<Vec<u8>> = (0..args.requests).map(|i| body(&args, i)).collect();
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(600)))
            .build(),
    );
    let endpoint = format!("{url}/v1/chat/completions");
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let results: Vec<(u16, Duration, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.concurrency.max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(body) = bodies.get(i) else { break };
                        let t = Instant::now();
                        let (status, prompt) = match agent
                            .post(&endpoint)
                            .header("content-type", "application/json")
                            .send(&body[..])
                        {
                            Ok(mut r) => {
                                let answer: Value = r
                                    .body_mut()
                                    .read_to_vec()
                                    .ok()
                                    .and_then(|b| serde_json::from_slice(&b).ok())
                                    .unwrap_or(Value::Null);
                                let prompt = answer["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
                                (r.status().as_u16(), prompt)
                            }
                            Err(_) => (0, 0),
                        };
                        out.push((status, t.elapsed(), prompt));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let wall = started.elapsed();
    let mut latencies: Vec<Duration> = results
        .iter()
        .filter(|(s, _, _)| *s == 200)
        .map(|(_, d, _)| *d)
        .collect();
    latencies.sort();
    let ok = latencies.len();
    let mut statuses = std::collections::BTreeMap::new();
    let prompt_tokens: u64 = results.iter().map(|(_, _, p)| p).sum();
    for (s, _, _) in &results {
        *statuses.entry(*s).or_insert(0usize) += 1;
    }
    let health: Value = agent
        .get(&format!("{url}/health"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    println!(
        "{} requests ({} model, max_tokens {}), concurrency {}, max_batch {}",
        args.requests,
        if args.agent { "agent" } else { "raw" },
        args.max_tokens,
        args.concurrency,
        args.max_batch
    );
    println!("statuses: {statuses:?}");
    println!(
        "mean prompt tokens: {:.0}",
        prompt_tokens as f64 / ok.max(1) as f64
    );
    println!(
        "wall {:.2} s, {:.1} requests/s",
        wall.as_secs_f64(),
        ok as f64 / wall.as_secs_f64()
    );
    if ok > 0 {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "latency ms: p50 {:.1}, p90 {:.1}, p99 {:.1}, max {:.1}",
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.9)),
            ms(percentile(&latencies, 0.99)),
            ms(latencies[ok - 1])
        );
    }
    let stats = &health["stats"];
    if let (Some(batches), Some(rows)) = (stats["batches"].as_u64(), stats["batched_rows"].as_u64())
    {
        println!(
            "server: {batches} batches, {:.2} rows per batch, largest {}, {} tokens generated",
            rows as f64 / batches.max(1) as f64,
            stats["largest_batch"],
            stats["generated_tokens"]
        );
    }
    if let Some(tx) = shutdown {
        let _ = tx.send(());
    }
    if let Some(handle) = serving {
        let _ = handle.join();
    }
    drop(keep);
    Ok(())
}
