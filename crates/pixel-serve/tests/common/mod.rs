//! A server on loopback over the committed tiny checkpoint, and small HTTP clients: `ureq` for whole
//! answers, raw sockets where a test must read a stream piece by piece or hang up mid-answer.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use image::{Rgb, RgbImage};
use pixel_serve::{ServeConfig, ServeError, Server, Stats, StatsSnapshot};
use pixel_vlm::backend::CpuBackend;
use serde_json::{Value, json};

/// The committed tiny checkpoint as one folder (`pixel-testkit`).
pub fn checkpoint() -> tempfile::TempDir {
    pixel_testkit::tiny_checkpoint()
}

/// Settings for tests: the tiny model's 4,096 positions.
pub fn config() -> ServeConfig {
    ServeConfig {
        context_tokens: 4000,
        max_tokens: 1024,
        ..ServeConfig::default()
    }
}

/// A running server and the means to stop it.
pub struct TestServer {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    pub context: usize,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), ServeError>>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub fn start(config: ServeConfig) -> Self {
        let dir = checkpoint();
        let server = Server::start::<CpuBackend>(dir.path(), Default::default(), config)
            .expect("server starts");
        let stats = server.stats();
        let context = server.context_tokens();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                addr_tx.send(listener.local_addr()?).ok();
                server
                    .serve(listener, async move {
                        let _ = rx.await;
                    })
                    .await
            })
        });
        let addr = addr_rx.recv().expect("server listens");
        Self {
            addr,
            stats,
            context,
            shutdown: Some(tx),
            thread: Some(thread),
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Waits until `check` holds for the counters (panics after `within`).
    pub fn wait_for(&self, within: Duration, what: &str, check: impl Fn(&StatsSnapshot) -> bool) {
        let until = Instant::now() + within;
        loop {
            let s = self.stats();
            if check(&s) {
                return;
            }
            assert!(
                Instant::now() < until,
                "timed out waiting for {what}: {s:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The sender that starts shutdown (for a test that signals from elsewhere).
    pub fn take_trigger(&mut self) -> tokio::sync::oneshot::Sender<()> {
        self.shutdown.take().expect("not signalled yet")
    }

    /// Signals shutdown without waiting.
    pub fn signal_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Signals shutdown and waits for `serve` to return.
    pub fn shutdown(mut self) -> Result<(), ServeError> {
        self.signal_shutdown();
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("no panic")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.signal_shutdown();
    }
}

/// A test picture the processor takes without resizing (112x84 = its 9,408-pixel maximum).
pub fn picture() -> RgbImage {
    RgbImage::from_fn(112, 84, |x, y| {
        Rgb([(x * 2) as u8, (y * 3) as u8, ((x + y) % 256) as u8])
    })
}

pub fn png(image: &RgbImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    image
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .expect("png");
    bytes
}

pub fn data_url(image: &RgbImage) -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png(image))
    )
}

/// A raw request: one user turn with the picture and `text`.
pub fn raw_body(model: &str, text: &str, max_tokens: usize) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url(&picture())}},
            {"type": "text", "text": text},
        ]}],
        "max_tokens": max_tokens,
        "temperature": 0,
    })
}

fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .proxy(None)
            .build(),
    )
}

/// POSTs raw bytes; the status and the body as JSON (`Value::Null` if it is not JSON).
pub fn post_bytes(server: &TestServer, path: &str, body: Vec<u8>) -> (u16, Value) {
    let mut response = agent()
        .post(&format!("{}{path}", server.url()))
        .header("content-type", "application/json")
        .send(&body[..])
        .expect("request sent");
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub fn post(server: &TestServer, body: &Value) -> (u16, Value) {
    post_bytes(
        server,
        "/v1/chat/completions",
        serde_json::to_vec(body).expect("json"),
    )
}

pub fn get(server: &TestServer, path: &str) -> (u16, Value) {
    let mut response = agent()
        .get(&format!("{}{path}", server.url()))
        .call()
        .expect("request sent");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A streaming request on a raw socket: the status line is read; events are read with `next_event`.
pub struct EventReader {
    pub status: u16,
    reader: BufReader<TcpStream>,
}

impl EventReader {
    pub fn open(server: &TestServer, body: &Value) -> Self {
        let body = serde_json::to_vec(body).expect("json");
        let mut stream = TcpStream::connect(server.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            server.addr,
            body.len()
        );
        stream.write_all(head.as_bytes()).expect("write head");
        stream.write_all(&body).expect("write body");
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).expect("status line");
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status");
        loop {
            line.clear();
            reader.read_line(&mut line).expect("header");
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        Self { status, reader }
    }

    /// The next `data:` payload (chunked transfer framing and keep-alive comments skipped); `None` at
    /// the end of the stream.
    pub fn next_event(&mut self) -> Option<String> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            if let Some(data) = line.trim_end().strip_prefix("data: ") {
                return Some(data.to_owned());
            }
        }
    }

    /// Every remaining `data:` payload.
    pub fn rest(&mut self) -> Vec<String> {
        std::iter::from_fn(|| self.next_event()).collect()
    }

    /// Hangs up.
    pub fn close(self) {
        let stream = self.reader.into_inner();
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }

    /// The rest of the raw bytes.
    pub fn read_all(mut self) -> String {
        let mut s = String::new();
        let _ = self.reader.read_to_string(&mut s);
        s
    }
}

/// POSTs `body` over a raw socket, ignoring a server that answers before reading it all (as it does for
/// a body over the limit); the status and the JSON body of the answer.
pub fn post_socket(server: &TestServer, body: &[u8]) -> (u16, Value) {
    let mut stream = TcpStream::connect(server.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        server.addr,
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, json)
}
