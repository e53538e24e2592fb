//! The raw model on loopback: answer shape, usage and log-probs, streaming (chunks parse, end with
//! `[DONE]`, add up to the non-streamed answer), stop strings, `n`, and batching of concurrent requests.

mod common;

use std::time::Duration;

use common::{EventReader, TestServer, config, post, raw_body};
use pixel_serve::{DEFAULT_RAW_MODEL, ServeConfig};
use serde_json::Value;

fn content(answer: &Value, choice: usize) -> String {
    answer["choices"][choice]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no content: {answer}"))
        .to_owned()
}

#[test]
fn raw_answer_has_openai_shape_usage_and_logprobs() {
    let server = TestServer::start(config());
    let mut body = raw_body(DEFAULT_RAW_MODEL, "Describe the picture.", 24);
    body["logprobs"] = true.into();
    let (status, answer) = post(&server, &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["model"], DEFAULT_RAW_MODEL);
    assert!(answer["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let choice = &answer["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    let finish = choice["finish_reason"].as_str().unwrap();
    assert!(finish == "stop" || finish == "length", "{finish}");
    let usage = &answer["usage"];
    let completion = usage["completion_tokens"].as_u64().unwrap();
    assert!((1..=24).contains(&completion), "{usage}");
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 12, "{usage}");
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + completion
    );
    let logprobs = choice["logprobs"]["content"].as_array().unwrap();
    assert!(!logprobs.is_empty() && logprobs.len() as u64 <= completion);
    assert!(
        logprobs
            .iter()
            .all(|l| l["logprob"].as_f64().unwrap() <= 0.0)
    );
    // Greedy is deterministic: the same request gives the same text.
    let (_, again) = post(&server, &body);
    assert_eq!(content(&again, 0), content(&answer, 0));
}

#[test]
fn streamed_chunks_parse_add_up_to_the_answer_and_end_with_done() {
    let server = TestServer::start(config());
    let mut body = raw_body(DEFAULT_RAW_MODEL, "Describe the picture.", 40);
    let (_, whole) = post(&server, &body);
    body["stream"] = true.into();
    body["stream_options"] = serde_json::json!({"include_usage": true});
    let mut events = EventReader::open(&server, &body);
    assert_eq!(events.status, 200);
    let payloads = events.rest();
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = payloads[..payloads.len() - 1]
        .iter()
        .map(|p| serde_json::from_str(p).unwrap_or_else(|e| panic!("{p}: {e}")))
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0)?["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, content(&whole, 0));
    let finishes: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0))
        .filter(|c| !c["finish_reason"].is_null())
        .collect();
    assert_eq!(finishes.len(), 1);
    assert_eq!(
        finishes[0]["finish_reason"],
        whole["choices"][0]["finish_reason"]
    );
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage, &whole["usage"], "the usage chunk comes last");
    assert!(chunks.len() > 3, "text arrives in pieces: {}", chunks.len());
}

#[test]
fn stop_string_cuts_the_text_before_it() {
    let server = TestServer::start(config());
    let body = raw_body(DEFAULT_RAW_MODEL, "Describe the picture.", 60);
    let (_, whole) = post(&server, &body);
    let text = content(&whole, 0);
    // Stop at a piece of the greedy text (from its middle), streamed and not.
    let chars: Vec<char> = text.chars().collect();
    assert!(
        chars.len() >= 8,
        "the tiny model wrote enough text: {text:?}"
    );
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let expected = &text[..text.find(&stop).unwrap()];
    let mut body = body.clone();
    body["stop"] = serde_json::json!([stop]);
    let (_, cut) = post(&server, &body);
    assert_eq!(content(&cut, 0), expected);
    assert_eq!(cut["choices"][0]["finish_reason"], "stop");
    body["stream"] = true.into();
    let streamed: String = EventReader::open(&server, &body)
        .rest()
        .iter()
        .filter(|p| *p != "[DONE]")
        .filter_map(|p| {
            let v: Value = serde_json::from_str(p).ok()?;
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(
        streamed, expected,
        "no text past the stop string is streamed"
    );
}

#[test]
fn concurrent_requests_are_batched_and_answer_as_alone() {
    let server = TestServer::start(ServeConfig {
        batch_window: Duration::from_millis(200),
        ..config()
    });
    // Different prompts (so rows are left-padded), greedy: each answer equals the request run alone.
    let bodies: Vec<Value> = ["A cat.", "Two dogs on a red sofa.", "What?"]
        .iter()
        .map(|q| raw_body(DEFAULT_RAW_MODEL, q, 16))
        .collect();
    let alone: Vec<String> = bodies
        .iter()
        .map(|b| content(&post(&server, b).1, 0))
        .collect();
    let before = server.stats();
    let together: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = bodies
            .iter()
            .map(|b| s.spawn(|| content(&post(&server, b).1, 0)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let after = server.stats();
    assert!(after.largest_batch >= 2, "requests were batched: {after:?}");
    assert!(
        after.batches - before.batches < 3,
        "{before:?} -> {after:?}"
    );
    assert_eq!(together, alone);
}

#[test]
fn n_choices_sample_independently_with_a_seed() {
    let server = TestServer::start(config());
    let mut body = raw_body(DEFAULT_RAW_MODEL, "Describe the picture.", 12);
    body["n"] = 3.into();
    body["temperature"] = 1.0.into();
    body["seed"] = 7.into();
    let (status, answer) = post(&server, &body);
    assert_eq!(status, 200, "{answer}");
    let texts: Vec<String> = (0..3).map(|i| content(&answer, i)).collect();
    assert!(
        texts[0] != texts[1] || texts[1] != texts[2],
        "three samples at temperature 1 differ: {texts:?}"
    );
    let (_, again) = post(&server, &body);
    let repeat: Vec<String> = (0..3).map(|i| content(&again, i)).collect();
    assert_eq!(repeat, texts, "the same seed gives the same samples");
}
