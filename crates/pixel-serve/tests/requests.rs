//! Bad requests on loopback: each is refused with the right 4xx status and an OpenAI error body naming
//! the fault, and none of them reaches the model; the model list; images by path only inside the
//! operator's folder.

mod common;

use common::{
    TestServer, config, data_url, get, picture, png, post, post_bytes, post_socket, raw_body,
};
use pixel_serve::{DEFAULT_AGENT_MODEL, DEFAULT_RAW_MODEL, ServeConfig};
use serde_json::{Value, json};

fn user(content: Value) -> Value {
    json!([{"role": "user", "content": content}])
}

fn image_part(url: &str) -> Value {
    json!({"type": "image_url", "image_url": {"url": url}})
}

/// `(name, body, status, param)`: what each bad request must get.
fn cases() -> Vec<(&'static str, Vec<u8>, u16, Option<&'static str>)> {
    let raw = DEFAULT_RAW_MODEL;
    let ok_image = data_url(&picture());
    let body = |v: Value| serde_json::to_vec(&v).unwrap();
    let with = |field: &str, value: Value| {
        let mut b = raw_body(raw, "hi", 4);
        b[field] = value;
        body(b)
    };
    let bomb = {
        // A PNG header claiming 30000x30000 pixels: refused from the header.
        let mut bytes = png(&picture());
        bytes[16..20].copy_from_slice(&30000u32.to_be_bytes());
        bytes[20..24].copy_from_slice(&30000u32.to_be_bytes());
        use base64::Engine as _;
        format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    };
    vec![
        ("not json", b"{\"model\": ".to_vec(), 400, None),
        ("not an object", body(json!([1, 2])), 400, None),
        (
            "too many JSON values",
            format!(
                "{{\"model\": \"{raw}\", \"x\": [{}0]}}",
                "0,".repeat(200_000)
            )
            .into_bytes(),
            400,
            None,
        ),
        (
            "no model",
            body(json!({"messages": user(json!("hi"))})),
            400,
            Some("model"),
        ),
        (
            "model not a string",
            with("model", json!(7)),
            400,
            Some("model"),
        ),
        (
            "unknown model",
            with("model", json!("gpt-4o")),
            404,
            Some("model"),
        ),
        (
            "no messages",
            body(json!({"model": raw})),
            400,
            Some("messages"),
        ),
        (
            "messages not an array",
            with("messages", json!("hi")),
            400,
            Some("messages"),
        ),
        (
            "empty messages",
            with("messages", json!([])),
            400,
            Some("messages"),
        ),
        (
            "message not an object",
            with("messages", json!([1])),
            400,
            Some("messages[0]"),
        ),
        (
            "unknown role",
            with("messages", json!([{"role": "tool", "content": "x"}])),
            400,
            Some("messages[0].role"),
        ),
        (
            "content missing",
            with("messages", json!([{"role": "user"}])),
            400,
            Some("messages[0].content"),
        ),
        (
            "unknown part type",
            with("messages", user(json!([{"type": "audio", "audio": "x"}]))),
            400,
            Some("messages[0].content[0].type"),
        ),
        (
            "text part without text",
            with("messages", user(json!([{"type": "text"}]))),
            400,
            Some("messages[0].content[0].text"),
        ),
        (
            "image_url without url",
            with(
                "messages",
                user(json!([{"type": "image_url", "image_url": {}}])),
            ),
            400,
            Some("messages[0].content[0].image_url.url"),
        ),
        (
            "remote image url",
            with(
                "messages",
                user(json!([image_part("https://example.com/a.png")])),
            ),
            400,
            Some("messages[0].content[0].image_url.url"),
        ),
        (
            "bad base64",
            with(
                "messages",
                user(json!([image_part("data:image/png;base64,@@@@")])),
            ),
            400,
            Some("messages[0].content[0].image_url.url"),
        ),
        (
            "data url not an image",
            with(
                "messages",
                user(json!([image_part("data:text/plain;base64,aGk=")])),
            ),
            400,
            Some("messages[0].content[0].image_url.url"),
        ),
        (
            "bytes not an image",
            with(
                "messages",
                user(json!([image_part("data:image/png;base64,aGVsbG8=")])),
            ),
            400,
            Some("messages[0].content[0].image_url.url"),
        ),
        (
            "image over the pixel limit",
            with("messages", user(json!([image_part(&bomb)]))),
            400,
            Some("messages[0].content[0].image_url.url"),
        ),
        (
            "image path without an image folder",
            with(
                "messages",
                user(json!([image_part("file:///images/a.png")])),
            ),
            400,
            Some("messages[0].content[0].image_url.url"),
        ),
        (
            "too many images",
            with(
                "messages",
                user(Value::Array(vec![image_part(&ok_image); 3])),
            ),
            400,
            Some("messages"),
        ),
        (
            "image in an assistant turn",
            with(
                "messages",
                json!([{"role": "assistant", "content": [image_part(&ok_image)]},
                       {"role": "user", "content": "hi"}]),
            ),
            400,
            Some("messages[0].content"),
        ),
        (
            "raw conversation ending with the assistant",
            with(
                "messages",
                json!([{"role": "user", "content": "hi"},
                                    {"role": "assistant", "content": "yes"}]),
            ),
            400,
            Some("messages"),
        ),
        (
            "system message not first",
            with(
                "messages",
                json!([{"role": "user", "content": "hi"},
                                    {"role": "system", "content": "x"},
                                    {"role": "user", "content": "hi"}]),
            ),
            400,
            Some("messages[1].role"),
        ),
        (
            "max_tokens zero",
            with("max_tokens", json!(0)),
            400,
            Some("max_tokens"),
        ),
        (
            "max_tokens over the limit",
            with("max_tokens", json!(100_000)),
            400,
            Some("max_tokens"),
        ),
        (
            "max_tokens negative",
            with("max_tokens", json!(-3)),
            400,
            Some("max_tokens"),
        ),
        ("n zero", with("n", json!(0)), 400, Some("n")),
        ("n over the limit", with("n", json!(99)), 400, Some("n")),
        (
            "temperature too high",
            with("temperature", json!(7)),
            400,
            Some("temperature"),
        ),
        (
            "temperature not a number",
            with("temperature", json!("hot")),
            400,
            Some("temperature"),
        ),
        ("top_p zero", with("top_p", json!(0)), 400, Some("top_p")),
        (
            "top_k below -1",
            with("top_k", json!(-2)),
            400,
            Some("top_k"),
        ),
        ("negative seed", with("seed", json!(-1)), 400, Some("seed")),
        (
            "stream not a boolean",
            with("stream", json!("yes")),
            400,
            Some("stream"),
        ),
        (
            "too many stop strings",
            with("stop", json!(["a", "b", "c", "d", "e"])),
            400,
            Some("stop"),
        ),
        (
            "empty stop string",
            with("stop", json!([""])),
            400,
            Some("stop"),
        ),
        (
            "tools",
            with("tools", json!([{"type": "function"}])),
            400,
            Some("tools"),
        ),
        (
            "top_logprobs",
            with("top_logprobs", json!(5)),
            400,
            Some("top_logprobs"),
        ),
        (
            "json output",
            with("response_format", json!({"type": "json_object"})),
            400,
            Some("response_format"),
        ),
        (
            "prompt over the context",
            with("messages", user(json!("word ".repeat(5000)))),
            400,
            Some("messages"),
        ),
        (
            "agent without an image",
            body(json!({"model": DEFAULT_AGENT_MODEL, "messages": user(json!("hi"))})),
            400,
            Some("messages"),
        ),
        (
            "agent with a conversation",
            body(json!({"model": DEFAULT_AGENT_MODEL, "messages": [
                {"role": "user", "content": [image_part(&ok_image), {"type": "text", "text": "q"}]},
                {"role": "assistant", "content": "a"},
                {"role": "user", "content": "more"}]})),
            400,
            Some("messages"),
        ),
        (
            "agent with stop strings",
            body(
                json!({"model": DEFAULT_AGENT_MODEL, "stop": "x", "messages":
                user(json!([image_part(&ok_image), {"type": "text", "text": "q"}]))}),
            ),
            400,
            Some("stop"),
        ),
    ]
}

#[test]
fn bad_requests_get_4xx_with_an_openai_error_naming_the_field() {
    let server = TestServer::start(ServeConfig {
        max_images: 2,
        max_image_pixels: 1_000_000,
        max_body_bytes: 1 << 20,
        ..config()
    });
    let mut failures = Vec::new();
    for (name, body, status, param) in cases() {
        let (got, answer) = post_bytes(&server, "/v1/chat/completions", body);
        let error = &answer["error"];
        let ok = got == status
            && error["message"].as_str().is_some_and(|m| !m.is_empty())
            && error["type"].is_string()
            && param.is_none_or(|p| error["param"] == p);
        if !ok {
            failures.push(format!(
                "{name}: expected {status} {param:?}, got {got} {answer}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let stats = server.stats();
    assert_eq!(
        stats.batches, 0,
        "no bad request reached the model: {stats:?}"
    );
    assert_eq!(stats.failed as usize, cases().len(), "{stats:?}");

    // A body over the limit is 413; an unknown route and a wrong method have JSON errors too.
    let (status, answer) = post_socket(&server, &vec![b' '; 2 << 20]);
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"]["code"], "request_too_large");
    let (status, answer) = get(&server, "/v1/nothing");
    assert_eq!(status, 404);
    assert!(answer["error"]["message"].is_string());
    let (status, answer) = get(&server, "/v1/chat/completions");
    assert_eq!(status, 405);
    assert!(answer["error"]["message"].is_string());
}

#[test]
fn models_lists_both_ids() {
    let server = TestServer::start(config());
    let (status, list) = get(&server, "/v1/models");
    assert_eq!(status, 200);
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [DEFAULT_AGENT_MODEL, DEFAULT_RAW_MODEL]);
    let (status, one) = get(&server, &format!("/v1/models/{DEFAULT_RAW_MODEL}"));
    assert_eq!(status, 200);
    assert_eq!(one["max_model_len"].as_u64(), Some(server.context as u64));
    let (status, _) = get(&server, "/v1/models/other");
    assert_eq!(status, 404);
}

#[test]
fn image_paths_resolve_only_inside_the_image_folder() {
    let outside = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("sub")).unwrap();
    picture().save(root.path().join("sub/pic.png")).unwrap();
    picture().save(outside.path().join("secret.png")).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(
        outside.path().join("secret.png"),
        root.path().join("link.png"),
    )
    .unwrap();
    let server = TestServer::start(ServeConfig {
        image_root: Some(root.path().to_path_buf()),
        ..config()
    });
    let request = |url: &str| {
        let mut body = raw_body(DEFAULT_RAW_MODEL, "hi", 2);
        body["messages"][0]["content"][0] = image_part(url);
        post(&server, &body)
    };
    let (status, answer) = request("sub/pic.png");
    assert_eq!(status, 200, "a relative path inside the folder: {answer}");
    let inside = root.path().join("sub/pic.png");
    let (status, answer) = request(&format!("file://{}", inside.display()));
    assert_eq!(status, 200, "a file URL inside the folder: {answer}");
    let escapes = [
        "../secret.png".to_owned(),
        format!(
            "sub/../../{}/secret.png",
            outside.path().file_name().unwrap().to_string_lossy()
        ),
        format!("file://{}", outside.path().join("secret.png").display()),
        "link.png".to_owned(),
        "sub".to_owned(),
        "missing.png".to_owned(),
    ];
    for url in escapes {
        let (status, answer) = request(&url);
        assert_eq!(status, 400, "{url}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            !message.contains(&*root.path().to_string_lossy()),
            "no server path leaks: {message}"
        );
    }
}
