//! The protocol against fixtures rendered by the official code (`scripts/gen_protocol_fixtures.py`), and
//! the parsing rules on hand-written model turns.

use pixel_ops::ToolCallError;
use pixel_ops::observation::{crop_text, error_text, frames_text};
use pixel_ops::parse::{
    MAX_JSON_DEPTH, ModelTurn, ToolCall, parse_call_json, parse_turn, parse_turn_bytes,
    requests_tool,
};
use pixel_ops::protocol::{
    ToolSchema, ToolSet, crop_image_normalized_schema, render_tools_block, render_tools_block_ascii,
};
use pixel_ops::pyjson::PyValue;
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/protocol");

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn call_text(json: &str) -> String {
    format!("<tool_call>\n{json}\n</tool_call>")
}

fn crop_call(json_args: &str) -> ModelTurn {
    parse_turn(
        &call_text(&format!(
            r#"{{"name": "crop_image_normalized", "arguments": {json_args}}}"#
        )),
        ToolSet::PixelReasoner,
    )
}

#[test]
fn system_prompt_is_byte_identical_to_the_official_rendering() {
    assert_eq!(
        ToolSet::PixelReasoner.system_prompt(),
        fixture("system_prompt_pixel_reasoner.txt")
    );
}

#[test]
fn deepeyes_system_prompt_is_byte_identical_to_verls_schema_in_the_nous_block() {
    assert_eq!(
        ToolSet::DeepEyes.system_prompt(),
        fixture("system_prompt_deepeyes.txt")
    );
}

#[test]
fn non_ascii_tools_render_like_json_dumps_both_ways() {
    let tool = ToolSchema {
        name: "measure_größe".into(),
        description: "Mißt «Größe» — 尺寸 😀 \"quoted\" back\\slash\ttab".into(),
        parameters: PyValue::object([
            ("type", PyValue::str("object")),
            (
                "properties",
                PyValue::object([(
                    "x",
                    PyValue::object([
                        ("type", PyValue::str("number")),
                        ("description", PyValue::str("é")),
                    ]),
                )]),
            ),
            ("required", PyValue::Array(vec![PyValue::str("x")])),
        ]),
    };
    let want = fixture_json("tools_block_unicode.json");
    assert_eq!(
        render_tools_block(std::slice::from_ref(&tool)),
        want["ensure_ascii_false"].as_str().unwrap()
    );
    assert_eq!(
        render_tools_block_ascii(&[tool]),
        want["ensure_ascii_true"].as_str().unwrap()
    );
}

#[test]
fn user_text_matches_the_official_data_loader() {
    for case in fixture_json("user_text.json").as_array().unwrap() {
        let q = case["question"].as_str().unwrap();
        assert_eq!(
            ToolSet::PixelReasoner.user_text(q),
            case["text"].as_str().unwrap(),
            "question {q:?}"
        );
    }
}

#[test]
fn observation_texts_match_the_official_format_strings() {
    let t = fixture_json("observation_texts.json");
    for c in t["crop"].as_array().unwrap() {
        let (w, h) = (
            c["w"].as_u64().unwrap() as u32,
            c["h"].as_u64().unwrap() as u32,
        );
        assert_eq!(crop_text(w, h), c["text"].as_str().unwrap());
    }
    for c in t["frames"].as_array().unwrap() {
        let n = |k: &str| c[k].as_u64().unwrap();
        assert_eq!(
            frames_text(
                n("w") as u32,
                n("h") as u32,
                n("a") as usize,
                n("b") as usize
            ),
            c["text"].as_str().unwrap()
        );
    }
    for c in t["error"].as_array().unwrap() {
        assert_eq!(
            error_text(c["message"].as_str().unwrap()),
            c["text"].as_str().unwrap()
        );
    }
}

/// Model turns run through the official `require_tool` check and `parse_last_tool`.
#[test]
fn parsing_agrees_with_the_official_code() {
    let cases = fixture_json("parse_cases.json");
    let cases = cases.as_array().unwrap();
    assert_eq!(cases.len(), 18, "the README quotes 18 model turns");
    for case in cases {
        let turn = case["turn"].as_str().unwrap();
        let official_call = case["require_tool"].as_bool().unwrap();
        assert_eq!(requests_tool(turn), official_call, "{turn:?}");
        let parsed = parse_turn(turn, ToolSet::PixelReasoner);
        assert_eq!(parsed.is_tool_call(), official_call, "{turn:?}");
        let ModelTurn::ToolCall(result) = parsed else {
            continue;
        };
        if !case["python_ok"].as_bool().unwrap() {
            assert!(
                result.is_err(),
                "official parse failed, ours must too: {turn:?}"
            );
            continue;
        }
        let Some(p) = case.get("parsed") else {
            // A non-finite number (1e400): Python accepts it, we reject it as invalid JSON.
            assert!(
                matches!(result, Err(ToolCallError::Json { .. })),
                "{turn:?}: {result:?}"
            );
            continue;
        };
        let (Some(name), Some(args)) = (p.get("name").and_then(Value::as_str), p.get("arguments"))
        else {
            assert!(
                result.is_err(),
                "not a call object, must be an error: {turn:?}"
            );
            continue;
        };
        let call = result.unwrap_or_else(|e| panic!("{turn:?}: {e}"));
        assert_eq!(call.tool_name(), name);
        match call {
            ToolCall::Crop { bbox, target_image } => {
                let want: Vec<f64> = args["bbox_2d"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
                    .collect();
                assert_eq!(bbox.to_vec(), want);
                assert_eq!(target_image as f64, args["target_image"].as_f64().unwrap());
            }
            ToolCall::SelectFrames { frames } => {
                let want: Vec<i64> = args["target_frames"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_i64().unwrap())
                    .collect();
                assert_eq!(frames, want);
            }
            ToolCall::ZoomIn { .. } => panic!("not a Pixel Reasoner tool"),
        }
    }
}

#[test]
fn a_call_needs_the_closing_tag_at_the_very_end() {
    let call = call_text(r#"{"name": "select_frames", "arguments": {"target_frames": [1]}}"#);
    assert!(requests_tool(&call));
    assert!(requests_tool(&format!("{call}<|im_end|>")));
    assert!(
        !requests_tool(&format!("{call}\n")),
        "the official check does not trim whitespace"
    );
    assert!(!requests_tool(&format!("{call} Then I answer.")));
    assert_eq!(
        parse_turn(&format!("{call} trailing"), ToolSet::PixelReasoner),
        ModelTurn::Answer
    );
}

#[test]
fn the_last_of_several_calls_is_parsed() {
    let turn = format!(
        "{}\nhmm, better:\n{}",
        call_text(r#"{"name": "select_frames", "arguments": {"target_frames": [1]}}"#),
        call_text(r#"{"name": "select_frames", "arguments": {"target_frames": [7, 8]}}"#)
    );
    assert_eq!(
        parse_turn(&turn, ToolSet::PixelReasoner),
        ModelTurn::ToolCall(Ok(ToolCall::SelectFrames { frames: vec![7, 8] }))
    );
}

#[test]
fn normalized_and_absolute_boxes_parse_alike() {
    assert_eq!(
        crop_call(r#"{"bbox_2d": [0.1, 0.2, 0.3, 0.4], "target_image": 1}"#),
        ModelTurn::ToolCall(Ok(ToolCall::Crop {
            bbox: [0.1, 0.2, 0.3, 0.4],
            target_image: 1
        }))
    );
    assert_eq!(
        crop_call(r#"{"bbox_2d": [100, 50, 300, 200], "target_image": 2.0}"#),
        ModelTurn::ToolCall(Ok(ToolCall::Crop {
            bbox: [100.0, 50.0, 300.0, 200.0],
            target_image: 2
        }))
    );
}

#[test]
fn wrong_argument_types_are_typed_errors() {
    for args in [
        r#"{"bbox_2d": [0.1, 0.2, 0.3], "target_image": 1}"#,
        r#"{"bbox_2d": [0.1, 0.2, 0.3, 0.4, 0.5], "target_image": 1}"#,
        r#"{"bbox_2d": "0.1, 0.2, 0.3, 0.4", "target_image": 1}"#,
        r#"{"bbox_2d": [0.1, "a", 0.3, 0.4], "target_image": 1}"#,
        r#"{"bbox_2d": [0.1, 0.2, 0.3, 0.4], "target_image": 1.5}"#,
        r#"{"bbox_2d": [0.1, 0.2, 0.3, 0.4], "target_image": "1"}"#,
        r#"{"bbox_2d": [0.1, 0.2, 0.3, 0.4]}"#,
        r#"{"bbox_2d": [0.1, 0.2, 0.3, 0.4], "target_image": 1e300}"#,
    ] {
        let ModelTurn::ToolCall(Err(ToolCallError::BadArgument { tool, .. })) = crop_call(args)
        else {
            panic!("{args} must be a BadArgument");
        };
        assert_eq!(tool, "crop_image_normalized");
    }
}

#[test]
fn shape_errors_and_unknown_tools() {
    let e = |json: &str| parse_call_json(json, ToolSet::PixelReasoner).unwrap_err();
    assert!(matches!(e("[1, 2]"), ToolCallError::Shape { .. }));
    assert!(matches!(
        e(r#"{"arguments": {}}"#),
        ToolCallError::Shape { .. }
    ));
    assert!(matches!(
        e(r#"{"name": 3, "arguments": {}}"#),
        ToolCallError::Shape { .. }
    ));
    assert!(matches!(
        e(r#"{"name": "select_frames", "arguments": "{\"target_frames\": [1]}"}"#),
        ToolCallError::Shape { .. }
    ));
    let unknown = e(r#"{"name": "rotate", "arguments": {}}"#);
    assert_eq!(
        unknown.to_string(),
        "Unknown tool `rotate`. Available tools: crop_image_normalized, select_frames."
    );
    // Each tool set knows only its own tools.
    let zoom = r#"{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [1, 2, 30, 40], "label": "cat"}}"#;
    assert!(matches!(e(zoom), ToolCallError::UnknownTool { .. }));
    assert_eq!(
        parse_call_json(zoom, ToolSet::DeepEyes),
        Ok(ToolCall::ZoomIn {
            bbox: [1.0, 2.0, 30.0, 40.0],
            label: Some("cat".into())
        })
    );
    assert!(matches!(
        parse_call_json(
            r#"{"name": "crop_image_normalized", "arguments": {}}"#,
            ToolSet::DeepEyes
        ),
        Err(ToolCallError::UnknownTool { .. })
    ));
}

#[test]
fn bad_json_and_missing_tags_are_errors() {
    let turn = |t: &str| parse_turn(t, ToolSet::PixelReasoner);
    assert_eq!(
        turn("I am done </tool_call>"),
        ModelTurn::ToolCall(Err(ToolCallError::MissingStartTag))
    );
    assert!(matches!(
        turn(&call_text("{\"name\": ")),
        ModelTurn::ToolCall(Err(ToolCallError::Json { .. }))
    ));
    assert!(matches!(
        turn(&call_text("")),
        ModelTurn::ToolCall(Err(ToolCallError::Json { .. }))
    ));
    assert!(matches!(
        turn(&call_text("{'name': 'x'}")),
        ModelTurn::ToolCall(Err(ToolCallError::Json { .. }))
    ));
    assert!(matches!(
        turn(&call_text("NaN")),
        ModelTurn::ToolCall(Err(ToolCallError::Json { .. }))
    ));
}

#[test]
fn nesting_ten_thousand_deep_is_rejected_without_recursion() {
    for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
        let deep = format!("{}1{}", open.repeat(10_000), close.repeat(10_000));
        assert_eq!(
            parse_turn(&call_text(&deep), ToolSet::PixelReasoner),
            ModelTurn::ToolCall(Err(ToolCallError::TooDeep {
                limit: MAX_JSON_DEPTH
            }))
        );
    }
    // Unbalanced: only openers.
    let deep = "[".repeat(10_000);
    assert!(matches!(
        parse_turn(&call_text(&deep), ToolSet::PixelReasoner),
        ModelTurn::ToolCall(Err(ToolCallError::TooDeep { .. }))
    ));
}

#[test]
fn huge_numbers_are_errors_not_panics() {
    let big = "9".repeat(400);
    for args in [
        format!(r#"{{"bbox_2d": [{big}, 0, 1, 1], "target_image": 1}}"#),
        format!(r#"{{"bbox_2d": [0.1, 0.1, 0.5, 0.5], "target_image": {big}}}"#),
        r#"{"bbox_2d": [1e400, 0, 1, 1], "target_image": 1}"#.to_owned(),
    ] {
        assert!(
            matches!(crop_call(&args), ModelTurn::ToolCall(Err(_))),
            "{args}"
        );
    }
}

#[test]
fn non_utf8_input_is_decoded_lossily() {
    let mut bytes = b"\xff\xfe zoom <tool_call>\n{\"name\": \"select_frames\", \"arguments\": {\"target_frames\": [2]}}\n</tool_call>".to_vec();
    assert_eq!(
        parse_turn_bytes(&bytes, ToolSet::PixelReasoner),
        ModelTurn::ToolCall(Ok(ToolCall::SelectFrames { frames: vec![2] }))
    );
    bytes.insert(bytes.len() - 20, 0xc3); // invalid byte inside the JSON
    assert!(matches!(
        parse_turn_bytes(&bytes, ToolSet::PixelReasoner),
        ModelTurn::ToolCall(Err(_))
    ));
}

#[test]
fn rendered_calls_parse_back() {
    let calls = [
        ToolCall::Crop {
            bbox: [0.1, 0.25, 0.5, 0.75],
            target_image: 1,
        },
        ToolCall::SelectFrames {
            frames: vec![1, 5, 16],
        },
    ];
    for call in calls {
        let text = format!("Let me look closer.\n{}", call.render());
        assert_eq!(
            parse_turn(&text, ToolSet::PixelReasoner),
            ModelTurn::ToolCall(Ok(call))
        );
    }
    let zoom = ToolCall::ZoomIn {
        bbox: [10.0, 20.0, 50.5, 60.0],
        label: Some("sign".into()),
    };
    assert_eq!(
        zoom.render(),
        "<tool_call>\n{\"name\": \"image_zoom_in_tool\", \"arguments\": {\"bbox_2d\": [10.0, 20.0, 50.5, 60.0], \"label\": \"sign\"}}\n</tool_call>"
    );
    assert_eq!(
        parse_turn(&zoom.render(), ToolSet::DeepEyes),
        ModelTurn::ToolCall(Ok(zoom))
    );
}

#[test]
fn crop_schema_lists_the_official_required_arguments() {
    let params = crop_image_normalized_schema().parameters;
    assert_eq!(
        params.get("required"),
        Some(&PyValue::Array(vec![
            PyValue::str("bbox_2d"),
            PyValue::str("target_image")
        ]))
    );
}
