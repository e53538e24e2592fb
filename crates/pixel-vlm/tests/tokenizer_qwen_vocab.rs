//! The tokenizer on the real Qwen2 vocabulary (the 151,643 BPE ranks and their merges) against Python: the
//! ids HF `tokenizers` gives (and `tiktoken` with the same ranks, checked equal by the generator) for a few
//! hundred strings: the Pixel Reasoner system prompt and tool blocks, rendered chats with added tokens next
//! to text and runs of pads, multilingual text, emoji sequences, code, digit runs, whitespace, contractions,
//! NFD input.
//!
//! The fixture is the real vocabulary reduced to the merge trees of the tokens these strings produce, at their
//! real ids (why, and why the ids are exact: `tests/fixtures/tokenizer_qwen/README.md`). Regenerate with
//!
//! ```text
//! python3 -m venv /tmp/qvenv
//! /tmp/qvenv/bin/pip install dashscope==2.0.2 tiktoken==0.14.0 tokenizers==0.23.3
//! /tmp/qvenv/bin/python scripts/gen_vlm_tokenizer_fixtures.py
//! ```
//!
//! To run the same cases against a full Qwen2.5-VL `tokenizer.json` (the released one, or the one the
//! generator writes with `--full-out`), set `PIXEL_QWEN_TOKENIZER_JSON` to its path.

use std::path::{Path, PathBuf};

use pixel_vlm::tokenizer::QwenTokenizer;
use serde_json::Value as Json;

/// The regular tokens of Qwen2; the added tokens follow from this id.
const N_RANKS: u32 = 151_643;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer_qwen")
}

fn cases() -> Json {
    let text = std::fs::read_to_string(fixtures().join("cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

struct Case {
    group: String,
    text: String,
    ids: Vec<u32>,
    decoded: String,
    decoded_skip_special: String,
}

fn case_list(json: &Json) -> Vec<Case> {
    let field = |case: &Json, name: &str| case[name].as_str().unwrap().to_string();
    json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| Case {
            group: field(case, "group"),
            text: field(case, "text"),
            ids: serde_json::from_value(case["ids"].clone()).unwrap(),
            decoded: field(case, "decoded"),
            decoded_skip_special: field(case, "decoded_skip_special"),
        })
        .collect()
}

/// The token strings of `ids`, for failure messages.
fn tokens(tok: &QwenTokenizer, ids: &[u32]) -> Vec<String> {
    ids.iter()
        .map(|&id| {
            tok.id_to_token(id)
                .unwrap_or_else(|| format!("<missing {id}>"))
        })
        .collect()
}

/// Encodes and decodes every case; returns one line per disagreement.
fn disagreements(tok: &QwenTokenizer, cases: &[Case]) -> Vec<String> {
    let mut bad = Vec::new();
    for case in cases {
        let what = format!("[{}] {:?}", case.group, case.text);
        let got = tok.encode(&case.text).unwrap();
        if got != case.ids {
            let at = got
                .iter()
                .zip(&case.ids)
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(case.ids.len()));
            // Up to 12 ids from the first difference on, with their tokens.
            let ours = &got[at..got.len().min(at + 12)];
            let python = &case.ids[at..case.ids.len().min(at + 12)];
            bad.push(format!(
                "encode {what}: first difference at {at}\n  ours   {ours:?} {:?}\n  python {python:?} {:?}",
                tokens(tok, ours),
                tokens(tok, python),
            ));
            continue;
        }
        match tok.decode(&case.ids, false) {
            Ok(text) if text == case.decoded => {}
            other => bad.push(format!(
                "decode {what}: {other:?}, python {:?}",
                case.decoded
            )),
        }
        match tok.decode(&case.ids, true) {
            Ok(text) if text == case.decoded_skip_special => {}
            other => bad.push(format!(
                "decode skipping specials {what}: {other:?}, python {:?}",
                case.decoded_skip_special
            )),
        }
        // Python's decode gives the NFC form of the text back (checked by the generator), so encoding it
        // again gives the same ids.
        let again = tok.encode(&case.decoded).unwrap();
        if again != case.ids {
            bad.push(format!("encode(decode(ids)) != ids for {what}"));
        }
    }
    bad
}

fn assert_agrees(tok: &QwenTokenizer, cases: &[Case]) {
    let bad = disagreements(tok, cases);
    assert!(
        bad.is_empty(),
        "{} of {} cases disagree with Python:\n{}",
        bad.len(),
        cases.len(),
        bad.join("\n")
    );
}

#[test]
fn real_vocabulary_ids_match_python() {
    let json = cases();
    let cases = case_list(&json);
    assert!(cases.len() >= 300, "{} cases", cases.len());
    for group in [
        "protocol",
        "chat",
        "multilingual",
        "emoji",
        "code",
        "numbers",
        "whitespace",
        "contractions",
        "normalization",
        "long",
        "english",
        "random",
    ] {
        assert!(cases.iter().any(|c| c.group == group), "no {group} case");
    }
    let tok = QwenTokenizer::from_dir(fixtures()).unwrap();
    assert_agrees(&tok, &cases);
}

/// The added tokens of Qwen2.5-VL, ids 151643.. in this order.
const ADDED: [&str; 22] = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
];

#[test]
fn added_tokens_have_the_real_ids() {
    let json = cases();
    let tok = QwenTokenizer::from_dir(fixtures()).unwrap();
    let recorded = json["special_ids"].as_object().unwrap();
    assert_eq!(recorded.len(), ADDED.len());
    for (id, name) in (N_RANKS..).zip(ADDED) {
        assert_eq!(recorded[name].as_u64(), Some(u64::from(id)), "{name}");
        assert_eq!(tok.token_to_id(name), Some(id), "{name}");
        assert_eq!(tok.id_to_token(id).as_deref(), Some(name));
    }
    let s = tok.special();
    assert_eq!(
        (s.endoftext, s.im_start, s.im_end),
        (151_643, 151_644, 151_645)
    );
    assert_eq!((s.vision_start, s.vision_end), (151_652, 151_653));
    assert_eq!((s.image_pad, s.video_pad), (151_655, 151_656));
    assert_eq!(
        (s.tool_call_start, s.tool_call_end),
        (Some(151_657), Some(151_658))
    );
    // A few regular tokens of the real vocabulary, by their byte-level spelling.
    assert_eq!(tok.token_to_id("!"), Some(0));
    assert_eq!(tok.token_to_id("ĠĠ"), Some(256));
    assert_eq!(tok.token_to_id("Ġthe"), Some(279));
    assert_eq!(tok.token_to_id("ĊĊ"), Some(271));
}

#[test]
fn decode_refuses_ids_the_vocabulary_lacks() {
    // The reduced vocabulary has holes: an id below the largest one that it lacks is refused, not dropped.
    let tok = QwenTokenizer::from_dir(fixtures()).unwrap();
    let hole = (256..N_RANKS)
        .rev()
        .find(|&id| tok.id_to_token(id).is_none())
        .unwrap();
    for bad in [hole, N_RANKS + 22, u32::MAX] {
        let err = tok.decode(&[bad], false).unwrap_err();
        assert!(err.to_string().contains("outside the vocabulary"), "{err}");
    }
    assert_eq!(
        tok.decode(&[N_RANKS + 1, 9707, N_RANKS + 2], false)
            .unwrap(),
        "<|im_start|>Hello<|im_end|>"
    );
}

#[test]
fn full_tokenizer_from_env_matches_python_too() {
    // Optional: a full Qwen2.5-VL tokenizer.json (not committed; see the module docs).
    let Some(path) = std::env::var_os("PIXEL_QWEN_TOKENIZER_JSON") else {
        eprintln!("PIXEL_QWEN_TOKENIZER_JSON not set: only the reduced fixture was checked");
        return;
    };
    let json = cases();
    let tok = QwenTokenizer::from_file(&path).unwrap();
    assert_eq!(
        tok.vocab_size() as u64,
        json["full_vocab_size_with_added"].as_u64().unwrap()
    );
    assert_agrees(&tok, &case_list(&json));
}
