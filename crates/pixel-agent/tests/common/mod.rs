//! A scripted loopback HTTP server (std only) that plays one reply per connection and records every
//! request: answers, stalls, dropped connections, garbage, error statuses.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

/// What the server does with one connection.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Answer with this status and body.
    Respond(u16, Vec<u8>),
    /// Answer 200 with a `Content-Length` of `len` and that many bytes.
    Huge(usize),
    /// Read the request, then hold the connection open this long without answering.
    Stall(Duration),
    /// Read the request, then close the connection without answering.
    Drop,
    /// Answer a completion whose text is `seed <the request's seed>`.
    EchoSeed,
    /// Like `EchoSeed`, after this long.
    SlowEcho(Duration),
    /// Like `EchoSeed`, once this many requests have arrived (gives up after 10 s): only requests that are
    /// in flight together get through.
    Barrier(usize),
}

/// One request the server read.
#[derive(Debug, Clone)]
pub struct Seen {
    pub head: String,
    pub body: Value,
}

/// A loopback server answering connection `i` with `script[i]` (the last entry for the rest).
pub struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    /// Starts the server on a free loopback port.
    pub fn start(script: Vec<Reply>) -> Self {
        assert!(!script.is_empty());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        thread::spawn(move || {
            for (i, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { continue };
                let reply = script[i.min(script.len() - 1)].clone();
                let log = Arc::clone(&log);
                thread::spawn(move || handle(stream, reply, &log));
            }
        });
        Self { addr, seen }
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request read so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Reads one request (head and `Content-Length` body), logs it, then plays `reply`.
pub fn handle(mut stream: TcpStream, reply: Reply, log: &Mutex<Vec<Seen>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .expect("the client sends a Content-Length");
    while buf.len() < head_end + length {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body: Value = serde_json::from_slice(&buf[head_end..head_end + length]).unwrap();
    log.lock().unwrap().push(Seen {
        head,
        body: body.clone(),
    });
    match reply {
        Reply::Respond(status, bytes) => respond(&mut stream, status, &bytes),
        Reply::Huge(len) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.write_all(head.as_bytes());
            let block = vec![b' '; 64 * 1024];
            let mut left = len;
            while left > 0 {
                let n = left.min(block.len());
                if stream.write_all(&block[..n]).is_err() {
                    return;
                }
                left -= n;
            }
        }
        Reply::Stall(d) => thread::sleep(d),
        Reply::Drop => {}
        Reply::EchoSeed | Reply::SlowEcho(_) | Reply::Barrier(_) => {
            if let Reply::SlowEcho(d) = reply {
                thread::sleep(d);
            }
            if let Reply::Barrier(n) = reply {
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while log.lock().unwrap().len() < n && std::time::Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(5));
                }
                if log.lock().unwrap().len() < n {
                    return; // dropped: the requests did not overlap
                }
            }
            let seed = body["seed"].as_u64().unwrap();
            let bytes = completion(&format!("seed {seed}"), "stop", &[], None);
            respond(&mut stream, 200, &bytes);
        }
    }
}

pub fn respond(stream: &mut TcpStream, status: u16, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status} Whatever\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    let _ = stream.flush();
}

/// A chat completion body as vLLM writes it.
pub fn completion(
    text: &str,
    finish: &str,
    logprobs: &[f64],
    usage: Option<(u64, u64)>,
) -> Vec<u8> {
    let content: Vec<Value> = logprobs
        .iter()
        .enumerate()
        .map(|(i, l)| json!({"token": format!("t{i}"), "logprob": l, "bytes": [116], "top_logprobs": []}))
        .collect();
    let mut body = json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "test-model",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "tool_calls": []},
            "logprobs": if logprobs.is_empty() { Value::Null } else { json!({"content": content}) },
            "finish_reason": finish,
            "stop_reason": null
        }]
    });
    if let Some((p, c)) = usage {
        body["usage"] = json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c});
    }
    serde_json::to_vec(&body).unwrap()
}
