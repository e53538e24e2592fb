//! `HttpEngine` against a scripted loopback HTTP server (std only): request contents, answers, retries,
//! timeouts, garbage and error statuses.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use base64::Engine as _;
use image::{Rgb, RgbImage};
use pixel_agent::{
    AgentError, Engine, HttpConfig, HttpEngine, Part, TurnEnd, TurnSampling, UserTurn,
};
use pixel_ops::{ToolSet, Video};
use pixel_vlm::sampling::SamplingParams;
use serde_json::{Value, json};

use common::{Reply, Server, completion};

/// Settings for tests: short timeouts and backoff, no proxy.
fn config(url: &str) -> HttpConfig {
    let mut c = HttpConfig::new(url, "test-model");
    c.timeout = Duration::from_secs(5);
    c.connect_timeout = Duration::from_secs(2);
    c.max_retries = 2;
    c.backoff_initial = Duration::from_millis(10);
    c.backoff_max = Duration::from_millis(40);
    c.env_proxy = false;
    c
}

fn image(w: u32, h: u32, colour: [u8; 3]) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        if (x + y) % 7 == 0 {
            Rgb([x as u8, y as u8, 9])
        } else {
            Rgb(colour)
        }
    })
}

fn question(img: &RgbImage) -> UserTurn {
    UserTurn::question(
        ToolSet::PixelReasoner,
        vec![Part::Image(img.clone())],
        "What is written on the sign?",
    )
}

fn sampling() -> TurnSampling {
    TurnSampling {
        params: SamplingParams {
            temperature: 0.7,
            top_k: 20,
            top_p: 0.9,
        },
        max_new_tokens: 64,
        seed: 5,
    }
}

/// An engine over `server` with one open row.
fn open_engine(config: HttpConfig) -> HttpEngine {
    let mut engine = HttpEngine::new(config).unwrap();
    let img = image(56, 84, [200, 10, 10]);
    engine
        .open(&ToolSet::PixelReasoner.system_prompt(), &question(&img), 1)
        .unwrap();
    engine
}

/// The image a `{"type": "image_url"}` part carries.
fn decode_part(part: &Value) -> RgbImage {
    assert_eq!(part["type"], "image_url");
    let url = part["image_url"]["url"].as_str().unwrap();
    let b64 = url.strip_prefix("data:image/png;base64,").unwrap();
    let png = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    image::load_from_memory_with_format(&png, image::ImageFormat::Png)
        .unwrap()
        .to_rgb8()
}

fn approx(v: &Value, x: f64) -> bool {
    (v.as_f64().unwrap() - x).abs() < 1e-6
}

#[test]
fn valid_completion_gives_text_logprobs_and_sends_the_conversation() {
    let text = "Let me zoom in.\n<tool_call>\n{\"name\": \"crop_image_normalized\"}\n</tool_call>";
    let server = Server::start(vec![Reply::Respond(
        200,
        completion(text, "stop", &[-0.25, -1.5, 0.0], Some((120, 3))),
    )]);
    let mut cfg = config(&server.url());
    cfg.api_key = Some("sk-test".into());
    let img = image(56, 84, [200, 10, 10]);
    let system = ToolSet::PixelReasoner.system_prompt();
    let q = question(&img);
    let mut engine = HttpEngine::new(cfg).unwrap();
    assert!(!engine.is_token_exact());
    assert_eq!(engine.rows(), 0);
    engine.open(&system, &q, 1).unwrap();
    assert_eq!(engine.rows(), 1);
    let before = HttpEngine::estimate_text_tokens(&system) + HttpEngine::estimate_tokens(&q);
    assert_eq!(engine.context_tokens(0), before);

    let out = engine.generate(&[true], &sampling()).unwrap();
    let g = out[0].as_ref().unwrap();
    assert_eq!(g.text, text);
    assert_eq!(g.logprobs, vec![-0.25, -1.5, 0.0]);
    assert_eq!(g.end, TurnEnd::Stop);
    assert!(g.tokens.is_empty());
    assert!(engine.record(0).is_none());
    assert_eq!(engine.context_tokens(0), 123, "usage prompt + completion");

    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    let head = seen[0].head.to_ascii_lowercase();
    assert!(head.starts_with("post /v1/chat/completions "), "{head}");
    assert!(head.contains("authorization: bearer sk-test"), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    let body = &seen[0].body;
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["max_tokens"], 64);
    assert!(approx(&body["temperature"], 0.7));
    assert!(approx(&body["top_p"], 0.9));
    assert_eq!(body["top_k"], 20);
    assert_eq!(body["seed"], 5);
    assert_eq!(body["logprobs"], true);
    assert_eq!(body["stop"], json!(["<|im_end|>"]));
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0], json!({"role": "system", "content": system}));
    assert_eq!(messages[1]["role"], "user");
    let content = messages[1]["content"].as_array().unwrap();
    assert_eq!(content.len(), 2);
    assert_eq!(
        decode_part(&content[0]),
        img,
        "the image survives the data URL"
    );
    assert_eq!(
        content[1],
        json!({"type": "text", "text": ToolSet::PixelReasoner.user_text("What is written on the sign?")})
    );
    // The assistant turn was appended as sampled.
    let kept = engine.messages(0).unwrap();
    assert_eq!(kept.len(), 3);
    assert_eq!(kept[2], json!({"role": "assistant", "content": text}));
}

#[test]
fn greedy_length_and_end_of_turn_stripping() {
    let server = Server::start(vec![
        Reply::Respond(200, completion("cut sh", "length", &[], None)),
        Reply::Respond(200, completion("done<|im_end|>", "stop", &[], None)),
    ]);
    let mut cfg = config(&server.url());
    cfg.stop.clear();
    cfg.logprobs = false;
    cfg.extra_body
        .insert("repetition_penalty".into(), json!(1.05));
    cfg.extra_body.insert("top_p".into(), json!(0.5));
    let mut engine = open_engine(cfg);
    let before = engine.context_tokens(0);
    let greedy = TurnSampling {
        params: SamplingParams::greedy(),
        max_new_tokens: 7,
        seed: u64::MAX,
    };
    let g = engine.generate(&[true], &greedy).unwrap()[0]
        .clone()
        .unwrap();
    assert_eq!(g.text, "cut sh");
    assert_eq!(g.end, TurnEnd::Length);
    assert!(g.logprobs.is_empty());
    assert_eq!(
        engine.context_tokens(0),
        before + HttpEngine::estimate_text_tokens("cut sh"),
        "no usage: the estimate grows"
    );
    let g = engine.generate(&[true], &greedy).unwrap()[0]
        .clone()
        .unwrap();
    assert_eq!(g.text, "done", "a trailing <|im_end|> is removed");

    let body = &server.requests()[0].body;
    assert_eq!(body["temperature"], 0.0);
    assert!(body.get("top_k").is_none(), "top_k 0 is not sent");
    assert!(body.get("stop").is_none());
    assert!(body.get("logprobs").is_none());
    assert_eq!(body["max_tokens"], 7);
    assert_eq!(
        body["seed"],
        i64::MAX,
        "u64::MAX wraps into vLLM's i64 range"
    );
    assert!(approx(&body["repetition_penalty"], 1.05));
    assert!(approx(&body["top_p"], 0.5), "extra_body overrides");
}

#[test]
fn stalled_server_is_unreachable_after_the_retries() {
    let server = Server::start(vec![Reply::Stall(Duration::from_secs(5))]);
    let mut cfg = config(&server.url());
    cfg.timeout = Duration::from_millis(300);
    let mut engine = open_engine(cfg);
    let err = engine.generate(&[true], &sampling()).unwrap_err();
    match &err {
        AgentError::Unreachable {
            url,
            attempts,
            reason,
        } => {
            assert_eq!(*attempts, 3);
            assert!(url.ends_with("/v1/chat/completions"));
            assert!(reason.to_lowercase().contains("timeout"), "{reason}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert_eq!(server.requests().len(), 3);
    assert_eq!(engine.messages(0).unwrap().len(), 2, "nothing appended");
}

#[test]
fn dropped_connection_is_retried() {
    let server = Server::start(vec![
        Reply::Drop,
        Reply::Respond(200, completion("ok", "stop", &[-0.1], None)),
    ]);
    let mut engine = open_engine(config(&server.url()));
    let g = engine.generate(&[true], &sampling()).unwrap()[0]
        .clone()
        .unwrap();
    assert_eq!(g.text, "ok");
    assert_eq!(g.logprobs, vec![-0.1f32]);
    let seen = server.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].body, seen[1].body, "the same request again");
}

#[test]
fn garbage_is_a_bad_response() {
    let cases: Vec<(Reply, &str)> = vec![
        (
            Reply::Respond(200, b"<html>hello</html>".to_vec()),
            "not JSON",
        ),
        (
            Reply::Respond(200, br#"{"id": "x", "object": "chat.completion"}"#.to_vec()),
            "choices",
        ),
        (
            Reply::Respond(
                200,
                br#"{"error": {"message": "model overloaded"}}"#.to_vec(),
            ),
            "model overloaded",
        ),
        (Reply::Respond(200, br#"{"choices": []}"#.to_vec()), "empty"),
        (Reply::Respond(200, br#"[1, 2, 3]"#.to_vec()), "object"),
        (
            Reply::Respond(
                200,
                br#"{"choices": [{"message": {"content": 42}, "finish_reason": "stop"}]}"#.to_vec(),
            ),
            "not a string",
        ),
        (
            Reply::Respond(
                200,
                br#"{"choices": [{"message": {"content": null}, "finish_reason": "stop"}]}"#
                    .to_vec(),
            ),
            "null",
        ),
        (
            Reply::Respond(
                200,
                br#"{"choices": [{"message": {"content": "x"}}]}"#.to_vec(),
            ),
            "finish_reason",
        ),
        (
            Reply::Respond(200, completion("x", "abort", &[], None)),
            "abort",
        ),
        (Reply::Huge(1 << 20), "cap"),
    ];
    for (reply, needle) in cases {
        let server = Server::start(vec![reply.clone()]);
        let mut cfg = config(&server.url());
        cfg.max_response_bytes = 64 * 1024;
        let mut engine = open_engine(cfg);
        match engine.generate(&[true], &sampling()) {
            Err(AgentError::BadResponse { reason, .. }) => {
                assert!(reason.contains(needle), "{reply:?}: {reason}");
            }
            other => panic!("{reply:?}: expected BadResponse, got {other:?}"),
        }
        assert_eq!(server.requests().len(), 1, "{reply:?}: not retried");
        assert_eq!(engine.messages(0).unwrap().len(), 2);
    }
}

#[test]
fn client_error_status_is_not_retried() {
    let server = Server::start(vec![Reply::Respond(
        400,
        br#"{"object": "error", "message": "max_tokens is too large"}"#.to_vec(),
    )]);
    let mut engine = open_engine(config(&server.url()));
    match engine.generate(&[true], &sampling()) {
        Err(AgentError::Status { status, body, url }) => {
            assert_eq!(status, 400);
            assert!(body.contains("max_tokens is too large"), "{body}");
            assert_eq!(url, format!("{}/v1/chat/completions", server.url()));
        }
        other => panic!("expected Status, got {other:?}"),
    }
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn server_errors_and_429_are_retried() {
    let server = Server::start(vec![
        Reply::Respond(503, b"warming up".to_vec()),
        Reply::Respond(429, b"slow down".to_vec()),
        Reply::Respond(200, completion("fine", "stop", &[], Some((10, 1)))),
    ]);
    let mut engine = open_engine(config(&server.url()));
    let g = engine.generate(&[true], &sampling()).unwrap()[0]
        .clone()
        .unwrap();
    assert_eq!(g.text, "fine");
    assert_eq!(server.requests().len(), 3);

    // Always 500: the last status is the reason.
    let server = Server::start(vec![Reply::Respond(500, b"boom".to_vec())]);
    let mut engine = open_engine(config(&server.url()));
    match engine.generate(&[true], &sampling()) {
        Err(AgentError::Unreachable {
            attempts, reason, ..
        }) => {
            assert_eq!(attempts, 3);
            assert!(
                reason.contains("500") && reason.contains("boom"),
                "{reason}"
            );
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert_eq!(server.requests().len(), 3);
}

#[test]
fn nobody_listening_is_unreachable() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cfg = config(&format!("http://127.0.0.1:{port}/v1/"));
    cfg.max_retries = 1;
    let mut engine = open_engine(cfg);
    match engine.generate(&[true], &sampling()) {
        Err(AgentError::Unreachable { attempts, url, .. }) => {
            assert_eq!(attempts, 2);
            assert_eq!(url, format!("http://127.0.0.1:{port}/v1/chat/completions"));
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[test]
fn multi_turn_sends_the_whole_conversation() {
    let first = "<tool_call>\n{\"name\": \"crop_image_normalized\", \"arguments\": {\"bbox_2d\": [0, 0, 0.5, 0.5], \"target_image\": 1}}\n</tool_call>";
    let server = Server::start(vec![
        Reply::Respond(200, completion(first, "stop", &[-0.5], Some((200, 30)))),
        Reply::Respond(
            200,
            completion("\\boxed{STOP}", "stop", &[-0.2], Some((300, 8))),
        ),
    ]);
    let mut engine = HttpEngine::new(config(&server.url())).unwrap();
    let img = image(56, 84, [200, 10, 10]);
    let system = ToolSet::PixelReasoner.system_prompt();
    engine.open(&system, &question(&img), 1).unwrap();
    engine.generate(&[true], &sampling()).unwrap();
    assert_eq!(engine.context_tokens(0), 230);

    let crop = image(30, 29, [0, 0, 250]);
    let observation = UserTurn {
        parts: vec![
            Part::Text("Here is the cropped image (Image Size: 30x29):".into()),
            Part::Image(crop.clone()),
        ],
    };
    let prepared = engine.prepare(0, &observation).unwrap();
    let estimate = "Here is the cropped image (Image Size: 30x29):"
        .len()
        .div_ceil(3)
        + 2 * 2
        + 2;
    assert_eq!(engine.prepared_tokens(&prepared), estimate);
    engine.append(vec![Some(prepared)]).unwrap();
    assert_eq!(engine.context_tokens(0), 230 + estimate);

    let g = engine.generate(&[true], &sampling()).unwrap()[0]
        .clone()
        .unwrap();
    assert_eq!(g.text, "\\boxed{STOP}");
    assert_eq!(engine.context_tokens(0), 308);

    let seen = server.requests();
    assert_eq!(seen.len(), 2);
    let messages = seen[1].body["messages"].as_array().unwrap().clone();
    assert_eq!(messages.len(), 4);
    assert_eq!(messages[0], json!({"role": "system", "content": system}));
    assert_eq!(
        messages[1], seen[0].body["messages"][1],
        "the question as before"
    );
    assert_eq!(messages[2], json!({"role": "assistant", "content": first}));
    assert_eq!(messages[3]["role"], "user");
    let content = messages[3]["content"].as_array().unwrap();
    assert_eq!(content.len(), 2);
    assert_eq!(
        content[0],
        json!({"type": "text", "text": "Here is the cropped image (Image Size: 30x29):"})
    );
    assert_eq!(decode_part(&content[1]), crop);
}

#[test]
fn rows_run_concurrently_with_their_own_seeds() {
    let server = Server::start(vec![Reply::EchoSeed]);
    let mut cfg = config(&server.url());
    cfg.max_concurrency = 3;
    let mut engine = HttpEngine::new(cfg).unwrap();
    let img = image(28, 28, [1, 2, 3]);
    engine.open("sys", &question(&img), 4).unwrap();
    let out = engine
        .generate(&[true, false, true, true], &sampling())
        .unwrap();
    assert_eq!(out.len(), 4);
    assert!(out[1].is_none());
    for (row, g) in [(0, &out[0]), (2, &out[2]), (3, &out[3])] {
        assert_eq!(g.as_ref().unwrap().text, format!("seed {}", 5 + row));
    }
    assert_eq!(server.requests().len(), 3);
    assert_eq!(
        engine.messages(1).unwrap().len(),
        2,
        "inactive row untouched"
    );
    assert_eq!(engine.messages(2).unwrap().len(), 3);

    // Observations for some rows only.
    let obs = UserTurn {
        parts: vec![Part::Text("more".into())],
    };
    let p = engine.prepare(2, &obs).unwrap();
    engine.append(vec![None, None, Some(p), None]).unwrap();
    assert_eq!(engine.messages(2).unwrap().len(), 4);
    assert_eq!(engine.messages(0).unwrap().len(), 3);
}

#[test]
fn concurrent_requests_overlap() {
    // The server answers only once all 4 requests are in flight together.
    let server = Server::start(vec![Reply::Barrier(4)]);
    let mut cfg = config(&server.url());
    cfg.max_concurrency = 4;
    cfg.max_retries = 0;
    cfg.timeout = Duration::from_secs(20);
    let mut engine = HttpEngine::new(cfg).unwrap();
    engine
        .open("sys", &question(&image(28, 28, [1, 2, 3])), 4)
        .unwrap();
    let out = engine.generate(&[true; 4], &sampling()).unwrap();
    assert!(out.iter().all(Option::is_some));
    assert_eq!(server.requests().len(), 4);

    // With max_concurrency 1 they go one after the other, in row order.
    let server = Server::start(vec![Reply::SlowEcho(Duration::from_millis(20))]);
    let mut cfg = config(&server.url());
    cfg.max_concurrency = 1;
    let mut engine = HttpEngine::new(cfg).unwrap();
    engine
        .open("sys", &question(&image(28, 28, [1, 2, 3])), 3)
        .unwrap();
    engine.generate(&[true; 3], &sampling()).unwrap();
    let seeds: Vec<u64> = server
        .requests()
        .iter()
        .map(|s| s.body["seed"].as_u64().unwrap())
        .collect();
    assert_eq!(seeds, vec![5, 6, 7], "rows in order");
}

#[test]
fn video_frames_are_sent_as_images() {
    let server = Server::start(vec![Reply::Respond(
        200,
        completion("a", "stop", &[], None),
    )]);
    let frames = vec![image(28, 56, [10, 0, 0]), image(28, 56, [0, 10, 0])];
    let video = Video::from_frames(frames.clone(), 2.0).unwrap();
    let turn = UserTurn::question(ToolSet::PixelReasoner, vec![Part::Video(video)], "Q?");
    let mut engine = HttpEngine::new(config(&server.url())).unwrap();
    engine.open("sys", &turn, 1).unwrap();
    assert_eq!(
        HttpEngine::estimate_tokens(&turn),
        2 * (2 + 2) + ToolSet::PixelReasoner.user_text("Q?").len().div_ceil(3)
    );
    engine.generate(&[true], &sampling()).unwrap();
    let body = &server.requests()[0].body;
    let content = body["messages"][1]["content"].as_array().unwrap();
    let sent: Vec<RgbImage> = content
        .iter()
        .filter(|p| p["type"] == "image_url")
        .map(decode_part)
        .collect();
    assert_eq!(sent.len(), frames.len());
    for (sent, frame) in sent.iter().zip(&frames) {
        assert_eq!(sent.width(), frame.width());
        assert_eq!(sent.height(), frame.height());
    }
}

#[test]
fn wrong_rows_and_config_errors() {
    let server = Server::start(vec![Reply::Respond(500, Vec::new())]);
    let mut engine = open_engine(config(&server.url()));
    assert!(matches!(
        engine.generate(&[true, true], &sampling()),
        Err(AgentError::Request(_))
    ));
    assert!(matches!(
        engine.append(vec![None, None]),
        Err(AgentError::Request(_))
    ));
    assert!(matches!(
        engine.prepare(1, &UserTurn::default()),
        Err(AgentError::Request(_))
    ));
    assert_eq!(engine.context_tokens(7), 0);
    assert!(engine.messages(7).is_none());
    assert!(server.requests().is_empty());
    // No active row: nothing is sent.
    assert_eq!(engine.generate(&[false], &sampling()).unwrap(), vec![None]);
    assert!(server.requests().is_empty());
    // open() drops the previous group.
    engine.open("s", &UserTurn::default(), 3).unwrap();
    assert_eq!(engine.rows(), 3);
    assert_eq!(engine.messages(0).unwrap().len(), 2);

    assert!(matches!(
        HttpEngine::new(HttpConfig::new("localhost:8000", "m")),
        Err(AgentError::Request(_))
    ));
}

#[test]
fn config_defaults_endpoint_and_backoff() {
    let c = HttpConfig::new("http://h:8000", "m");
    assert_eq!(c.timeout, Duration::from_secs(120));
    assert_eq!(c.connect_timeout, Duration::from_secs(10));
    assert_eq!(c.max_retries, 3);
    assert_eq!(c.attempts(), 4);
    assert_eq!(c.backoff_initial, Duration::from_millis(500));
    assert_eq!(c.max_response_bytes, 16 << 20);
    assert_eq!(c.stop, vec!["<|im_end|>".to_owned()]);
    assert!(c.logprobs);
    assert!(c.api_key.is_none());
    assert_eq!(c.endpoint(), "http://h:8000/v1/chat/completions");
    assert_eq!(
        HttpConfig::new("http://h:8000/v1/", "m").endpoint(),
        "http://h:8000/v1/chat/completions"
    );
    assert_eq!(
        HttpConfig::new("https://h/api/v1/chat/completions", "m").endpoint(),
        "https://h/api/v1/chat/completions"
    );
    assert_eq!(c.backoff(1), Duration::from_millis(500));
    assert_eq!(c.backoff(2), Duration::from_secs(1));
    assert_eq!(c.backoff(3), Duration::from_secs(2));
    assert_eq!(c.backoff(50), Duration::from_secs(8));

    let mut secret = c.clone();
    secret.api_key = Some("sk-very-secret".into());
    assert!(!format!("{secret:?}").contains("sk-very-secret"));
}
