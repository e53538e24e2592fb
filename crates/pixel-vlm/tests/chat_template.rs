//! The text side against `transformers` 5.24: tokenizer ids and decoding, and the chat template rendered
//! byte-identical to `apply_chat_template`. Fixtures: `scripts/gen_vlm_processor_fixtures.py`.

use std::path::{Path, PathBuf};

use pixel_vlm::chat_template::{ChatTemplate, RenderOptions, json_value};
use pixel_vlm::error::VlmError;
use pixel_vlm::tokenizer::QwenTokenizer;
use serde_json::Value as Json;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer")
}

fn read_json(name: &str) -> Json {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join(name)).unwrap()).unwrap()
}

#[test]
fn special_tokens_resolve_by_name() {
    let tok = QwenTokenizer::from_dir(fixtures()).unwrap();
    let cases = read_json("encode_cases.json");
    let ids = &cases["special_ids"];
    let id = |name: &str| ids[name].as_u64().unwrap() as u32;
    let s = tok.special();
    assert_eq!(s.endoftext, id("<|endoftext|>"));
    assert_eq!(s.im_start, id("<|im_start|>"));
    assert_eq!(s.im_end, id("<|im_end|>"));
    assert_eq!(s.vision_start, id("<|vision_start|>"));
    assert_eq!(s.vision_end, id("<|vision_end|>"));
    assert_eq!(s.image_pad, id("<|image_pad|>"));
    assert_eq!(s.video_pad, id("<|video_pad|>"));
    assert_eq!(s.tool_call_start, Some(id("<tool_call>")));
    assert_eq!(s.tool_call_end, Some(id("</tool_call>")));
    assert_eq!(
        tok.vocab_size() as u64,
        cases["vocab_size_with_added"].as_u64().unwrap()
    );
}

fn check_encode_cases(tok: &QwenTokenizer) {
    let cases = read_json("encode_cases.json");
    for case in cases["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(tok.encode(text).unwrap(), want, "encode {text:?}");
        assert_eq!(
            tok.decode(&want, false).unwrap(),
            case["decoded"].as_str().unwrap(),
            "decode {text:?}"
        );
        assert_eq!(
            tok.decode(&want, true).unwrap(),
            case["decoded_skip_special"].as_str().unwrap(),
            "decode skipping specials {text:?}"
        );
    }
}

#[test]
fn encode_and_decode_match_transformers() {
    check_encode_cases(&QwenTokenizer::from_dir(fixtures()).unwrap());
}

#[test]
fn merges_as_pairs_give_the_same_ids() {
    // The fixture writes merges as "a b" strings (the released Qwen files); newer files write pairs.
    let mut json = read_json("tokenizer.json");
    let merges = json["model"]["merges"].as_array().unwrap();
    assert!(
        merges.iter().all(|m| m.is_string()),
        "fixture should use the string form"
    );
    let pairs: Vec<Json> = merges
        .iter()
        .map(|m| {
            let (a, b) = m.as_str().unwrap().split_once(' ').unwrap();
            Json::Array(vec![Json::from(a), Json::from(b)])
        })
        .collect();
    json["model"]["merges"] = Json::Array(pairs);
    let tok = QwenTokenizer::from_bytes(serde_json::to_vec(&json).unwrap()).unwrap();
    check_encode_cases(&tok);
}

#[test]
fn tokenizer_errors_are_clear() {
    let missing = QwenTokenizer::from_file("/nonexistent/tokenizer.json").unwrap_err();
    assert!(matches!(missing, VlmError::Io { .. }), "{missing}");
    let corrupt = QwenTokenizer::from_bytes(b"{\"model\": 3").unwrap_err();
    assert!(matches!(corrupt, VlmError::Tokenizer { .. }), "{corrupt}");

    // A tokenizer without the vision tokens is not a Qwen2.5-VL tokenizer.
    let mut json = read_json("tokenizer.json");
    let added = json["added_tokens"].as_array_mut().unwrap();
    added.retain(|t| t["content"] != "<|image_pad|>");
    let err = QwenTokenizer::from_bytes(serde_json::to_vec(&json).unwrap()).unwrap_err();
    assert!(
        matches!(&err, VlmError::MissingSpecialToken { token } if token == "<|image_pad|>"),
        "{err}"
    );

    let tok = QwenTokenizer::from_dir(fixtures()).unwrap();
    let out_of_range = tok.decode(&[u32::MAX], false).unwrap_err();
    assert!(
        out_of_range.to_string().contains("outside the vocabulary"),
        "{out_of_range}"
    );
}

fn options(case: &Json) -> RenderOptions {
    RenderOptions {
        add_generation_prompt: case["add_generation_prompt"].as_bool().unwrap(),
        add_vision_id: case
            .get("add_vision_id")
            .and_then(Json::as_bool)
            .unwrap_or(false),
        tools: case
            .get("tools")
            .map(|t| json_value(&t.to_string()).unwrap()),
        extra: Vec::new(),
    }
}

/// The raw JSON text of each case, so object keys keep the order Python wrote them in.
fn raw_cases() -> Vec<minijinja::Value> {
    let text = std::fs::read_to_string(fixtures().join("chat_cases.json")).unwrap();
    json_value(&text).unwrap().try_iter().unwrap().collect()
}

#[test]
fn chat_template_renders_byte_identical_to_transformers() {
    let template = ChatTemplate::from_dir(fixtures()).unwrap();
    let tok = QwenTokenizer::from_dir(fixtures()).unwrap();
    let cases = read_json("chat_cases.json");
    let raw = raw_cases();
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 6);
    for (case, raw) in cases.iter().zip(raw) {
        let name = case["name"].as_str().unwrap();
        let mut opts = options(case);
        // Tools straight from the raw JSON too, keeping key order.
        opts.tools = raw.get_attr("tools").ok().filter(|t| !t.is_undefined());
        let messages = raw.get_attr("messages").unwrap();
        let rendered = template.render(&messages, &opts).unwrap();
        assert_eq!(rendered, case["rendered"].as_str().unwrap(), "case {name}");
        let ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(tok.encode(&rendered).unwrap(), ids, "ids of case {name}");
    }
}

#[test]
fn every_template_source_is_found_and_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let cases = read_json("chat_cases.json");
    let case = &cases[2];
    let messages = case["messages"].to_string();
    let want = case["rendered"].as_str().unwrap();
    let source = read_json("chat_template.json")["chat_template"]
        .as_str()
        .unwrap()
        .to_string();

    // Only tokenizer_config.json.
    std::fs::copy(
        fixtures().join("tokenizer_config.json"),
        dir.path().join("tokenizer_config.json"),
    )
    .unwrap();
    let t = ChatTemplate::from_dir(dir.path()).unwrap();
    assert_eq!(t.render_json(&messages, &options(case)).unwrap(), want);
    // chat_template.json wins over tokenizer_config.json.
    std::fs::write(
        dir.path().join("chat_template.json"),
        r#"{"chat_template": "json:{{ messages | length }}"}"#,
    )
    .unwrap();
    assert_eq!(
        ChatTemplate::from_dir(dir.path())
            .unwrap()
            .render_json(&messages, &options(case))
            .unwrap(),
        "json:1"
    );
    // chat_template.jinja wins over both.
    std::fs::write(dir.path().join("chat_template.jinja"), &source).unwrap();
    let t = ChatTemplate::from_dir(dir.path()).unwrap();
    assert_eq!(t.source(), source);
    assert_eq!(t.render_json(&messages, &options(case)).unwrap(), want);

    let empty = tempfile::tempdir().unwrap();
    let err = ChatTemplate::from_dir(empty.path()).unwrap_err();
    assert!(matches!(err, VlmError::NoChatTemplate { .. }), "{err}");
}

#[test]
fn typed_messages_render_like_json_ones() {
    #[derive(serde::Serialize)]
    struct Item<'a> {
        r#type: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        text: Option<&'a str>,
    }
    #[derive(serde::Serialize)]
    struct Message<'a> {
        role: &'a str,
        content: Vec<Item<'a>>,
    }
    let template = ChatTemplate::from_dir(fixtures()).unwrap();
    let typed = [Message {
        role: "user",
        content: vec![
            Item {
                r#type: "image",
                text: None,
            },
            Item {
                r#type: "text",
                text: Some("Hi"),
            },
        ],
    }];
    let json =
        r#"[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}]"#;
    let opts = RenderOptions::generation();
    let a = template.render(&typed, &opts).unwrap();
    assert_eq!(a, template.render_json(json, &opts).unwrap());
    assert!(
        a.ends_with(
            "<|vision_start|><|image_pad|><|vision_end|>Hi<|im_end|>\n<|im_start|>assistant\n"
        ),
        "{a}"
    );
}
