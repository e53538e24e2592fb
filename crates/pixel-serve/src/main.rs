//! `pixel-serve`: serve a Qwen2.5-VL checkpoint folder over the OpenAI chat completions API.
//!
//! ```text
//! pixel-serve --model PixelReasoner-RL-v1 --host 127.0.0.1 --port 8000
//! ```

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use pixel_serve::{ServeConfig, Server};

/// Serve a Pixel Reasoner checkpoint over an OpenAI-compatible API.
#[derive(Debug, Parser)]
#[command(name = "pixel-serve", version)]
struct Args {
    /// The checkpoint folder (config.json, safetensors, tokenizer, chat template, preprocessor config).
    #[arg(long)]
    model: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Model id of the server-side tool loop.
    #[arg(long, default_value = pixel_serve::DEFAULT_AGENT_MODEL)]
    agent_model: String,
    /// Model id of plain continuations.
    #[arg(long, default_value = pixel_serve::DEFAULT_RAW_MODEL)]
    raw_model: String,
    /// A folder whose image files requests may name by path (off by default: data URLs only).
    #[arg(long)]
    image_root: Option<PathBuf>,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 32 << 20)]
    max_body_bytes: usize,
    /// Most images per request.
    #[arg(long, default_value_t = 16)]
    max_images: usize,
    /// Most pixels per image.
    #[arg(long, default_value_t = 36_000_000)]
    max_image_pixels: u64,
    /// Largest max_tokens per request (per turn for the agent model).
    #[arg(long, default_value_t = 2048)]
    max_tokens: usize,
    /// Tokens one conversation may hold.
    #[arg(long, default_value_t = 14_336)]
    context_tokens: usize,
    /// Most rows generated together.
    #[arg(long, default_value_t = 8)]
    max_batch: usize,
    /// Milliseconds to wait for more requests to batch with the first.
    #[arg(long, default_value_t = 2)]
    batch_window_ms: u64,
    /// Requests admitted at once (queued or running); one more gets 503.
    #[arg(long, default_value_t = 32)]
    max_pending: usize,
    /// Seconds one request may take.
    #[arg(long, default_value_t = 600)]
    request_timeout_s: u64,
}

#[cfg(not(any(feature = "flex", feature = "cuda")))]
compile_error!("pixel-serve's binary needs a backend: the `flex` (default) or the `cuda` feature");

#[cfg(feature = "cuda")]
type Backend = pixel_vlm::backend::CudaBackend;
#[cfg(all(feature = "flex", not(feature = "cuda")))]
type Backend = pixel_vlm::backend::CpuBackend;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let args = Args::parse();
    let config = ServeConfig {
        agent_model: args.agent_model,
        raw_model: args.raw_model,
        max_body_bytes: args.max_body_bytes,
        max_images: args.max_images,
        max_image_pixels: args.max_image_pixels,
        max_tokens: args.max_tokens,
        context_tokens: args.context_tokens,
        max_batch: args.max_batch,
        max_n: ServeConfig::default().max_n.min(args.max_batch),
        batch_window: Duration::from_millis(args.batch_window_ms),
        max_pending: args.max_pending,
        request_timeout: Duration::from_secs(args.request_timeout_s),
        image_root: args.image_root,
        ..ServeConfig::default()
    };
    tracing::info!(model = %args.model.display(), "loading");
    let server = Server::start::<Backend>(&args.model, Default::default(), config)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await?;
        tracing::info!(address = %listener.local_addr()?, "serving");
        server.serve(listener, shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return ctrl_c.await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await;
}
