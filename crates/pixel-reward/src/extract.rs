//! Finding the final answer in a model response.
//!
//! Order of preference (as in the official reward, `handle_boxed` in `experience_maker.py`): the last
//! complete `\boxed{...}` (or `\fbox{...}`), else the last `<answer>...</answer>`, else the text after the last
//! `Answer:`. See `docs/reward.md` for where this deliberately differs from the released code.

use serde::{Deserialize, Serialize};

use crate::normalize::matching_brace;

/// Where an extracted answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerSource {
    /// The content of the last complete `\boxed{...}` / `\fbox{...}`.
    Boxed,
    /// The content of the last `<answer>...</answer>` pair.
    AnswerTag,
    /// The first non-empty line after the last `Answer:` (case-insensitive).
    AnswerPrefix,
}

/// An answer found in a response: its raw text (not yet normalised) and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extracted {
    /// The answer text, trimmed, with chat special tokens removed.
    pub text: String,
    /// Which marker it was found by.
    pub source: AnswerSource,
}

/// Special tokens that may trail a decoded response; they are never part of an answer.
const SPECIAL_TOKENS: [&str; 3] = ["<|im_end|>", "<|endoftext|>", "<|im_start|>"];

/// Extracts the final answer of `response`, or `None` when it holds no answer marker.
///
/// ```
/// use pixel_reward::{extract_answer, AnswerSource};
/// let a = extract_answer(r"so \boxed{\frac{1}{2}} and finally \boxed {B}").unwrap();
/// assert_eq!((a.text.as_str(), a.source), ("B", AnswerSource::Boxed));
/// let a = extract_answer("<answer> 42 </answer>").unwrap();
/// assert_eq!(a.text, "42");
/// assert_eq!(extract_answer("Answer: (C)\nbecause ...").unwrap().text, "(C)");
/// assert!(extract_answer("no marker here").is_none());
/// ```
pub fn extract_answer(response: &str) -> Option<Extracted> {
    let found = last_boxed(response)
        .map(|t| (t, AnswerSource::Boxed))
        .or_else(|| last_answer_tag(response).map(|t| (t, AnswerSource::AnswerTag)))
        .or_else(|| after_answer_prefix(response).map(|t| (t, AnswerSource::AnswerPrefix)))?;
    Some(Extracted {
        text: strip_special_tokens(found.0).trim().to_string(),
        source: found.1,
    })
}

fn strip_special_tokens(s: &str) -> String {
    let mut out = s.to_string();
    for tok in SPECIAL_TOKENS {
        if out.contains(tok) {
            out = out.replace(tok, "");
        }
    }
    out
}

/// The content of the last complete `\boxed{...}` or `\fbox{...}` (braces balanced, `\{`/`\}` escaped), or of
/// a brace-less `\boxed 5`. A box truncated by the end of the response is skipped in favour of an earlier one.
pub fn last_boxed(text: &str) -> Option<&str> {
    let mut best: Option<(usize, &str)> = None;
    for keyword in [r"\boxed", r"\fbox"] {
        for (start, _) in text.match_indices(keyword) {
            let after = start + keyword.len();
            // `\boxedx` is another command, not a box.
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

/// Parses what follows `\boxed`: optional whitespace then a balanced `{...}`, or a space then one token.
fn box_content(rest: &str) -> Option<&str> {
    let trimmed = rest.trim_start();
    let skipped = rest.len() - trimmed.len();
    if trimmed.starts_with('{') {
        matching_brace(trimmed).map(|end| &trimmed[1..end])
    } else if skipped > 0 {
        // `\boxed 5`: TeX takes the next token; we take the next run of non-space, non-`$` characters.
        let end = trimmed
            .find(|c: char| c.is_whitespace() || c == '$')
            .unwrap_or(trimmed.len());
        (end > 0).then(|| &trimmed[..end])
    } else {
        None
    }
}

/// The content of the last complete `<answer>...</answer>` pair (may span lines).
fn last_answer_tag(text: &str) -> Option<&str> {
    const OPEN: &str = "<answer>";
    const CLOSE: &str = "</answer>";
    let mut search_end = text.len();
    // The last opening tag that is closed later; its content ends at the first closing tag after it.
    while let Some(open) = text[..search_end].rfind(OPEN) {
        let body = &text[open + OPEN.len()..];
        if let Some(close) = body.find(CLOSE) {
            return Some(&body[..close]);
        }
        search_end = open;
    }
    None
}

/// The first non-empty line after the last `answer:` (ASCII case-insensitive).
fn after_answer_prefix(text: &str) -> Option<&str> {
    const PREFIX: &str = "answer:";
    let lower = text.to_ascii_lowercase(); // ASCII lowering keeps byte offsets.
    let pos = lower.rfind(PREFIX)?;
    let rest = &text[pos + PREFIX.len()..];
    let line = rest.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_braces_and_last_box_wins() {
        let t = r"first \boxed{1} then \boxed{\frac{a}{b^{2}}} done";
        assert_eq!(last_boxed(t), Some(r"\frac{a}{b^{2}}"));
    }

    #[test]
    fn fbox_and_space_before_brace() {
        assert_eq!(last_boxed(r"\boxed{1} \fbox {x y}"), Some("x y"));
        assert_eq!(last_boxed(r"$\boxed 7$"), Some("7"));
    }

    #[test]
    fn truncated_box_falls_back_to_earlier_one() {
        assert_eq!(last_boxed(r"\boxed{A} ... \boxed{B"), Some("A"));
        assert_eq!(last_boxed(r"\boxed{"), None);
    }

    #[test]
    fn escaped_braces_do_not_count() {
        assert_eq!(last_boxed(r"\boxed{\{1,2\}}"), Some(r"\{1,2\}"));
    }

    #[test]
    fn boxed_beats_tags_and_tags_beat_prefix() {
        let t = "Answer: 3\n<answer>4</answer> \\boxed{5}";
        assert_eq!(extract_answer(t).unwrap().source, AnswerSource::Boxed);
        let t = "Answer: 3\n<answer>4</answer>";
        assert_eq!(extract_answer(t).unwrap().text, "4");
        let t = "<answer>4</answer> final answer: 6<|im_end|>";
        assert_eq!(extract_answer(t).unwrap().text, "4");
        let t = "Final ANSWER:\n\n 6<|im_end|>";
        let e = extract_answer(t).unwrap();
        assert_eq!(
            (e.text.as_str(), e.source),
            ("6", AnswerSource::AnswerPrefix)
        );
    }

    #[test]
    fn special_tokens_are_removed() {
        assert_eq!(extract_answer(r"\boxed{B<|im_end|>}").unwrap().text, "B");
    }

    #[test]
    fn unclosed_tag_is_ignored() {
        assert!(extract_answer("<answer>4").is_none());
        assert_eq!(
            extract_answer("<answer>4</answer></answer>").unwrap().text,
            "4"
        );
    }

    #[test]
    fn boxed_followed_by_letters_is_another_command() {
        assert_eq!(last_boxed(r"\boxedtext{1}"), None);
    }
}
