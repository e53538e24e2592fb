//! The same trajectories in process and through the server: the agent model's trace equals
//! `run_group` over a `LocalEngine` (greedy), streamed or not; and pixel-agent's `HttpEngine` runs the
//! loop against the raw model, as against vLLM, with the in-process engine's turns.

mod common;

use std::time::Duration;

use common::{EventReader, TestServer, config, data_url, picture, post};
use pixel_agent::{
    Engine, HttpConfig, HttpEngine, LocalEngine, Query, RolloutConfig, Trajectory, TurnEnd,
    run_group,
};
use pixel_ops::PixelLimits;
use pixel_serve::{DEFAULT_AGENT_MODEL, DEFAULT_RAW_MODEL, ServeConfig};
use pixel_vlm::Qwen25Vl;
use pixel_vlm::backend::CpuBackend;
use pixel_vlm::processor::Processor;
use serde_json::{Value, json};

const QUESTION: &str = "What letter is written in the corner?";
const TURN_TOKENS: usize = 48;

/// The loop's settings on both sides: greedy, small crops, short turns.
fn rollout() -> RolloutConfig {
    let mut config = RolloutConfig::greedy();
    config.episode.crop_resize = PixelLimits::new(784, 9408);
    config.max_new_tokens = TURN_TOKENS;
    config
}

/// `rows` greedy rollouts in process, with the budget the server derives for its context.
fn in_process(rows: usize, context: usize) -> Vec<Trajectory> {
    let dir = common::checkpoint();
    let model = Qwen25Vl::<CpuBackend>::from_pretrained(dir.path(), &Default::default()).unwrap();
    let processor = Processor::from_pretrained(dir.path()).unwrap();
    let mut config = rollout();
    let room = context - TURN_TOKENS;
    config.episode.max_total_tokens = config.episode.max_total_tokens.map(|b| b.min(room));
    let mut engine = LocalEngine::new(&model, &processor, context);
    let query = Query::image(picture(), QUESTION);
    run_group(&mut engine, &query, rows, &config).unwrap()
}

fn agent_body(n: usize) -> Value {
    json!({
        "model": DEFAULT_AGENT_MODEL,
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url(&picture())}},
            {"type": "text", "text": QUESTION},
        ]}],
        "max_tokens": TURN_TOKENS,
        "temperature": 0,
        "n": n,
    })
}

fn server() -> TestServer {
    TestServer::start(ServeConfig {
        rollout: rollout(),
        batch_window: Duration::from_millis(100),
        ..config()
    })
}

/// Checks a choice's `pixel_trace` and content against an in-process trajectory.
fn assert_same(choice: &Value, expected: &Trajectory) {
    let trace = &choice["pixel_trace"];
    let turns: Vec<&str> = trace["turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["text"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = expected.turns.iter().map(|g| g.text.as_str()).collect();
    assert_eq!(turns, want);
    assert_eq!(trace["final_text"], expected.final_text.as_str());
    assert_eq!(trace["end"], serde_json::to_value(expected.end).unwrap());
    assert_eq!(
        trace["operations"],
        serde_json::to_value(&expected.operations).unwrap()
    );
    assert_eq!(
        trace["stats"],
        serde_json::to_value(&expected.stats).unwrap()
    );
    assert_eq!(
        trace["context_tokens"].as_u64(),
        expected.tokens.as_ref().map(|r| r.len() as u64)
    );
    let content = choice["message"]["content"].as_str().unwrap();
    assert!(content.starts_with(&*expected.turns[0].text));
    assert!(content.ends_with(&*expected.final_text));
}

#[test]
fn agent_model_trace_equals_run_group_in_process() {
    let server = server();
    let expected = in_process(2, server.context);
    let (status, answer) = post(&server, &agent_body(2));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model"], DEFAULT_AGENT_MODEL);
    for (row, trajectory) in expected.iter().enumerate() {
        assert_same(&answer["choices"][row], trajectory);
    }
    let sampled: usize = expected
        .iter()
        .map(|t| t.tokens.as_ref().unwrap().sampled_len())
        .sum();
    assert_eq!(
        answer["usage"]["completion_tokens"].as_u64(),
        Some(sampled as u64)
    );
}

#[test]
fn agent_model_streams_the_same_trace() {
    let server = server();
    let expected = in_process(1, server.context);
    let mut body = agent_body(1);
    body["stream"] = true.into();
    let payloads = EventReader::open(&server, &body).rest();
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = payloads[..payloads.len() - 1]
        .iter()
        .map(|p| serde_json::from_str(p).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    let last = chunks.last().unwrap()["choices"][0].clone();
    assert!(!last["finish_reason"].is_null());
    let mut choice = last;
    choice["message"] = json!({"content": text});
    assert_same(&choice, &expected[0]);
}

#[test]
fn http_engine_runs_the_loop_against_the_raw_model() {
    let server = server();
    let expected = in_process(2, server.context);
    let mut http = HttpConfig::new(server.url(), DEFAULT_RAW_MODEL);
    http.env_proxy = false;
    http.max_retries = 0;
    http.timeout = Duration::from_secs(60);
    let mut engine = HttpEngine::new(http).unwrap();
    let mut config = rollout();
    config.episode.max_total_tokens = Some(server.context - TURN_TOKENS);
    let query = Query::image(picture(), QUESTION);
    let before = server.stats();
    let got = run_group(&mut engine, &query, 2, &config).unwrap();
    let after = server.stats();
    assert!(after.completed > before.completed);
    for (row, (got, want)) in got.iter().zip(&expected).enumerate() {
        let texts = |t: &Trajectory| t.turns.iter().map(|g| g.text.clone()).collect::<Vec<_>>();
        assert_eq!(texts(got)[0], texts(want)[0], "row {row}'s first turn");
        // OpenAI's `finish_reason` says `stop` for every stop token: over HTTP `<|endoftext|>` is a `Stop`.
        let over_http = match want.turns[0].end {
            TurnEnd::EndOfText => TurnEnd::Stop,
            end => end,
        };
        assert_eq!(got.turns[0].end, over_http);
        assert!(
            !got.turns[0].logprobs.is_empty(),
            "the server reported log-probs"
        );
        if want.turns.len() == 1 {
            // The server's usage is the exact context: prompt + sampled tokens, as in process.
            assert_eq!(
                engine.context_tokens(row),
                want.tokens.as_ref().unwrap().len(),
                "row {row}'s context"
            );
        }
    }
}

#[test]
fn agent_request_failing_in_the_worker_is_a_400_and_the_next_one_runs() {
    // The official prompt (842 tokens on the test tokenizer) does not fit in 800 tokens of context.
    let server = TestServer::start(ServeConfig {
        rollout: rollout(),
        context_tokens: 800,
        max_tokens: 64,
        ..ServeConfig::default()
    });
    let (status, answer) = post(&server, &agent_body(1));
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "context_length_exceeded");
    let (status, answer) = post(&server, &common::raw_body(DEFAULT_RAW_MODEL, "hi", 8));
    assert_eq!(status, 200, "the worker still serves: {answer}");
    let stats = server.stats();
    assert_eq!((stats.failed, stats.completed), (1, 1), "{stats:?}");
}
