//! Hostile model output: extraction, normalisation and matching give the same results as the
//! straightforward (quadratic) reading of their rules, and 1 MB adversarial responses are handled (the
//! timing is in `benches/reward.rs`, not here).
//!
//! `reference` below is the code as it was before extraction was made linear: the box, the tag and the
//! unwrapping are each re-scanned from every candidate. It is the oracle on small and medium inputs; on
//! 1 MB inputs, where it would take minutes, the expected answers are written out.

use pixel_reward::{AnswerSource, Matcher, extract_answer, last_boxed, normalize_answer};
use proptest::prelude::*;

/// The pre-linear implementation, kept as the oracle.
mod reference {
    use pixel_reward::AnswerSource;

    const SPECIAL_TOKENS: [&str; 3] = ["<|im_end|>", "<|endoftext|>", "<|im_start|>"];

    pub fn extract_answer(response: &str) -> super::Answer {
        let found = last_boxed(response)
            .map(|t| (t, AnswerSource::Boxed))
            .or_else(|| last_answer_tag(response).map(|t| (t, AnswerSource::AnswerTag)))
            .or_else(|| after_answer_prefix(response).map(|t| (t, AnswerSource::AnswerPrefix)))?;
        let mut out = found.0.to_string();
        for tok in SPECIAL_TOKENS {
            if out.contains(tok) {
                out = out.replace(tok, "");
            }
        }
        Some((out.trim().to_string(), found.1))
    }

    pub fn last_boxed(text: &str) -> Option<&str> {
        let mut best: Option<(usize, &str)> = None;
        for keyword in [r"\boxed", r"\fbox"] {
            for (start, _) in text.match_indices(keyword) {
                let after = start + keyword.len();
                if text[after..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic())
                {
                    continue;
                }
                if let Some(content) = box_content(&text[after..])
                    && best.is_none_or(|(s, _)| start > s)
                {
                    best = Some((start, content));
                }
            }
        }
        best.map(|(_, c)| c)
    }

    fn box_content(rest: &str) -> Option<&str> {
        let trimmed = rest.trim_start();
        let skipped = rest.len() - trimmed.len();
        if trimmed.starts_with('{') {
            matching_brace(trimmed).map(|end| &trimmed[1..end])
        } else if skipped > 0 {
            let end = trimmed
                .find(|c: char| c.is_whitespace() || c == '$')
                .unwrap_or(trimmed.len());
            (end > 0).then(|| &trimmed[..end])
        } else {
            None
        }
    }

    fn last_answer_tag(text: &str) -> Option<&str> {
        const OPEN: &str = "<answer>";
        const CLOSE: &str = "</answer>";
        let mut search_end = text.len();
        while let Some(open) = text[..search_end].rfind(OPEN) {
            let body = &text[open + OPEN.len()..];
            if let Some(close) = body.find(CLOSE) {
                return Some(&body[..close]);
            }
            search_end = open;
        }
        None
    }

    fn after_answer_prefix(text: &str) -> Option<&str> {
        const PREFIX: &str = "answer:";
        let lower = text.to_ascii_lowercase();
        let pos = lower.rfind(PREFIX)?;
        let rest = &text[pos + PREFIX.len()..];
        rest.lines().map(str::trim).find(|l| !l.is_empty())
    }

    const UNWRAP: [&str; 9] = [
        r"\text",
        r"\textbf",
        r"\textit",
        r"\textrm",
        r"\mathrm",
        r"\mathbf",
        r"\mathit",
        r"\mbox",
        r"\operatorname",
    ];

    pub fn normalize_answer(answer: &str) -> String {
        let mut s = answer.to_lowercase();
        s = s.replace(r"\dfrac", r"\frac").replace(r"\tfrac", r"\frac");
        s = unwrap_commands(&s);
        for (from, to) in [
            (r"^{\circ}", ""),
            (r"^\circ", ""),
            ("°", ""),
            (r"\%", "%"),
            (r"\$", ""),
            (r"\left", ""),
            (r"\right", ""),
            (r"\,", " "),
            (r"\;", " "),
            (r"\:", " "),
            (r"\!", ""),
            (r"\ ", " "),
            ("~", " "),
            ("$", ""),
            ("**", ""),
        ] {
            if s.contains(from) {
                s = s.replace(from, to);
            }
        }
        let mut s = s.split_whitespace().collect::<Vec<_>>().join(" ");
        loop {
            let before = s.len();
            for (open, close) in [("\"", "\""), ("'", "'"), ("*", "*"), ("`", "`"), ("“", "”")]
            {
                if s.len() >= open.len() + close.len() && s.starts_with(open) && s.ends_with(close)
                {
                    s = s[open.len()..s.len() - close.len()].trim().to_string();
                }
            }
            if s.len() == before {
                break;
            }
        }
        if let Some(stripped) = s.strip_suffix('.')
            && !stripped.ends_with(|c: char| c.is_ascii_digit())
        {
            s = stripped.trim_end().to_string();
        }
        s
    }

    fn unwrap_commands(s: &str) -> String {
        let mut out = s.to_string();
        for _ in 0..64 {
            let Some((start, cmd_len)) = UNWRAP
                .iter()
                .filter_map(|cmd| find_command(&out, cmd).map(|p| (p, cmd.len())))
                .min_by_key(|&(p, _)| p)
            else {
                break;
            };
            let after = &out[start + cmd_len..];
            let lead = after.len() - after.trim_start().len();
            let body = &after[lead..];
            let Some(inner_end) = matching_brace(body) else {
                out.replace_range(start..start + cmd_len, "");
                continue;
            };
            let inner = body[1..inner_end].to_string();
            let end = start + cmd_len + lead + inner_end + 1;
            out.replace_range(start..end, &inner);
        }
        out
    }

    fn find_command(s: &str, cmd: &str) -> Option<usize> {
        s.match_indices(cmd).map(|(p, _)| p).find(|&p| {
            let rest = &s[p + cmd.len()..];
            !rest.starts_with(|c: char| c.is_ascii_alphabetic())
                && rest.trim_start().starts_with('{')
        })
    }

    fn matching_brace(body: &str) -> Option<usize> {
        let mut depth = 0usize;
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '{' => depth += 1,
                '}' => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        return Some(i);
                    }
                }
                _ => {}
            }
        }
        None
    }
}

/// An extracted answer and where it came from, or no answer.
type Answer = Option<(String, AnswerSource)>;

fn ours(response: &str) -> Answer {
    extract_answer(response).map(|e| (e.text, e.source))
}

/// Asserts that extraction, `last_boxed` and normalisation agree with the reference on `text`.
fn assert_agrees(what: &str, text: &str) {
    assert_eq!(
        ours(text),
        reference::extract_answer(text),
        "{what}: extract_answer"
    );
    assert_eq!(
        last_boxed(text),
        reference::last_boxed(text),
        "{what}: last_boxed"
    );
    assert_eq!(
        normalize_answer(text),
        reference::normalize_answer(text),
        "{what}: normalize_answer"
    );
}

/// One megabyte (at least) of `unit` repeated.
const MB: usize = 1 << 20;

fn repeat_to(unit: &str, bytes: usize) -> String {
    unit.repeat(bytes.div_ceil(unit.len()))
}

/// The adversarial families of the benchmark, `bytes` long (about), with what a response of that family
/// must extract; the same builders feed the medium-size comparison with the reference.
fn families(bytes: usize) -> Vec<(&'static str, String, Answer)> {
    let half = bytes / 2;
    vec![
        (
            "an early box then unclosed boxes",
            format!(r"\boxed{{A}} {}", repeat_to(r"\boxed{", bytes)),
            Some(("A".into(), AnswerSource::Boxed)),
        ),
        ("unclosed boxes only", repeat_to(r"\boxed{", bytes), None),
        (
            "unclosed fboxes with spaces",
            format!(r"\fbox{{C}}{}", repeat_to(r"\fbox {", bytes)),
            Some(("C".into(), AnswerSource::Boxed)),
        ),
        (
            "an early tag then unclosed tags",
            format!("<answer>B</answer>{}", repeat_to("<answer>", bytes)),
            Some(("B".into(), AnswerSource::AnswerTag)),
        ),
        (
            "unclosed tags then one close",
            format!("{}</answer>", repeat_to("<answer>x", bytes)),
            Some(("x".into(), AnswerSource::AnswerTag)),
        ),
        (
            "deeply nested closed braces",
            format!(r"\boxed{{{}7{}}}", "{".repeat(half), "}".repeat(half)),
            Some((
                format!("{}7{}", "{".repeat(half), "}".repeat(half)),
                AnswerSource::Boxed,
            )),
        ),
        (
            "a box then deeply nested unclosed braces",
            format!(r"\boxed{{7}} \boxed{{{}", "{".repeat(bytes)),
            Some(("7".into(), AnswerSource::Boxed)),
        ),
        (
            "mixed unclosed markers then a prefix answer",
            format!(
                "{}\nAnswer: 42",
                repeat_to(r"\boxed{<answer>\text{{\fbox{\{", bytes)
            ),
            Some(("42".into(), AnswerSource::AnswerPrefix)),
        ),
        (
            "mixed unclosed markers, nothing to extract",
            repeat_to(r"\boxed{<answer>\mbox {{ \\", bytes),
            None,
        ),
        (
            "a box of quotes",
            format!(r#"\boxed{{{}B{}}}"#, "\"".repeat(half), "\"".repeat(half)),
            Some((
                format!("{}B{}", "\"".repeat(half), "\"".repeat(half)),
                AnswerSource::Boxed,
            )),
        ),
    ]
}

#[test]
fn medium_adversarial_responses_agree_with_the_reference() {
    // 8 KB: large enough for every family's repetition, small enough for the quadratic oracle.
    for (what, text, expected) in families(8 << 10) {
        assert_agrees(what, &text);
        assert_eq!(ours(&text), expected, "{what}");
    }
}

#[test]
fn one_megabyte_adversarial_responses_extract_the_reference_answer() {
    for (what, text, expected) in families(MB) {
        assert!(text.len() >= MB, "{what}: {} bytes", text.len());
        assert_eq!(ours(&text), expected, "{what}");
    }
}

#[test]
fn one_megabyte_adversarial_responses_are_judged() {
    let m = Matcher::default();
    for (what, text, expected) in families(MB) {
        let j = m.judge(&text, &["B"]);
        assert_eq!(j.parse_failed(), expected.is_none(), "{what}");
        // The early tag answers B, and so does the box of quotes once they are peeled off; the rest
        // answer something else or nothing.
        let names_b = what == "a box of quotes" || what == "an early tag then unclosed tags";
        assert_eq!(j.score, if names_b { 1.0 } else { 0.0 }, "{what}");
    }
}

#[test]
fn one_megabyte_of_quotes_and_wrappers_normalises_like_a_short_answer() {
    let quotes = format!("{}Sheep{}", "\"".repeat(MB / 2), "\"".repeat(MB / 2));
    assert_eq!(normalize_answer(&quotes), "sheep");
    // Nested wrappers: the first 64 are unwrapped (the reference's bound), the rest kept as written.
    let depth = MB / r"\text{}".len();
    let wrapped = format!("{}x{}", r"\text{".repeat(depth), "}".repeat(depth));
    let expected = format!(
        "{}x{}",
        r"\text{".repeat(depth - 64),
        "}".repeat(depth - 64)
    );
    assert_eq!(normalize_answer(&wrapped), expected);
    // Unclosed wrappers lose their names (64 of them) and keep their braces.
    let unclosed = r"\text{".repeat(depth);
    let expected = format!("{}{}", "{".repeat(64), r"\text{".repeat(depth - 64));
    assert_eq!(normalize_answer(&unclosed), expected);
}

/// Text drawn from the syntax the scanners look at, with escapes, whitespace and multi-byte characters.
fn hostile() -> impl Strategy<Value = String> {
    let atoms = prop::sample::select(vec![
        r"\boxed",
        r"\fbox",
        r"\boxedx",
        r"\text",
        r"\textbf",
        r"\mbox",
        r"\operatorname",
        "{",
        "}",
        "{",
        "}",
        "\\",
        "\\",
        " ",
        "\t",
        "\n",
        "$",
        "<answer>",
        "</answer>",
        "Answer:",
        "ANSWER:",
        "\"",
        "'",
        "*",
        "“",
        "”",
        "é",
        "7",
        "B",
        "x",
        "<|im_end|>",
    ]);
    prop::collection::vec(atoms, 0..48).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn extraction_and_normalisation_agree_with_the_reference(text in hostile()) {
        prop_assert_eq!(ours(&text), reference::extract_answer(&text));
        prop_assert_eq!(last_boxed(&text), reference::last_boxed(&text));
        prop_assert_eq!(normalize_answer(&text), reference::normalize_answer(&text));
    }
}
