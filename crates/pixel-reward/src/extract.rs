//! Finding the final answer in a model response.
//!
//! Order of preference (as in the official reward, `handle_boxed` in `experience_maker.py`): the last
//! complete `\boxed{...}` (or `\fbox{...}`), else the last `<answer>...</answer>`, else the text after the last
//! `Answer:`. See `docs/reward.md` for where this deliberately differs from the released code.

use serde::{Deserialize, Serialize};

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
///
/// Linear in the length of `text`: every `\{`/`\}`-aware brace is matched in one pass (however many
/// unclosed boxes the text holds), and the boxes are then tried from the last one back.
pub fn last_boxed(text: &str) -> Option<&str> {
    let boxes = box_openings(text);
    let braces: Vec<usize> = boxes
        .iter()
        .filter_map(|b| match *b {
            BoxBody::Brace(open) => Some(open),
            BoxBody::Token(_) | BoxBody::Nothing => None,
        })
        .collect();
    let closes = closing_braces(text, &braces);
    // `closes[k]` belongs to the k-th braced box; walk both from the end.
    let mut k = braces.len();
    for b in boxes.iter().rev() {
        match *b {
            BoxBody::Brace(open) => {
                k -= 1;
                if let Some(close) = closes[k] {
                    return Some(&text[open + 1..close]);
                }
            }
            BoxBody::Token(start) => {
                // `\boxed 5`: TeX takes the next token; we take the next run of non-space, non-`$` characters.
                let rest = &text[start..];
                let end = rest
                    .find(|c: char| c.is_whitespace() || c == '$')
                    .unwrap_or(rest.len());
                if end > 0 {
                    return Some(&rest[..end]);
                }
            }
            BoxBody::Nothing => {}
        }
    }
    None
}

/// What follows a `\boxed` / `\fbox` keyword.
#[derive(Debug, Clone, Copy)]
enum BoxBody {
    /// Optional whitespace then `{` at this byte offset.
    Brace(usize),
    /// Whitespace then something else, starting at this byte offset: a brace-less box (`\boxed 5`).
    Token(usize),
    /// Neither (`\boxed` at the end, or directly followed by a non-letter other than `{`).
    Nothing,
}

/// What follows each `\boxed` / `\fbox` keyword of `text` (not the prefix of a longer command), in order
/// of position.
///
/// Each keyword looks only at the whitespace right after it, and those runs do not overlap, so this is linear.
fn box_openings(text: &str) -> Vec<BoxBody> {
    let mut starts: Vec<(usize, usize)> = [r"\boxed", r"\fbox"]
        .iter()
        .flat_map(|keyword| {
            text.match_indices(keyword)
                .map(|(start, _)| (start, start + keyword.len()))
        })
        .collect();
    // The two keywords never overlap (each holds one `\`, at its start), so positions are distinct.
    starts.sort_unstable();
    starts
        .into_iter()
        .filter_map(|(_, after)| {
            let rest = &text[after..];
            // `\boxedx` is another command, not a box.
            if rest.starts_with(|c: char| c.is_ascii_alphabetic()) {
                return None;
            }
            let trimmed = rest.trim_start();
            let skipped = rest.len() - trimmed.len();
            Some(if trimmed.starts_with('{') {
                BoxBody::Brace(after + skipped)
            } else if skipped > 0 {
                BoxBody::Token(after + skipped)
            } else {
                BoxBody::Nothing
            })
        })
        .collect()
}

/// For each `{` at the byte offsets `opens` (ascending), the offset of its matching `}`: what
/// [`matching_brace`](crate::normalize::matching_brace) finds from there, for all of them in one pass.
///
/// A `\` escapes the next character (`\{`, `\}`, `\\` never change the depth). Scanning the whole text once
/// tokenises every position the way a scan starting at one of `opens` does, because no opening is preceded
/// by a `\` (it follows a keyword's last letter or whitespace), so each one starts a token in both scans.
/// The matching `}` of an opening at depth `d` is then the first `}` after it that brings the depth back
/// to `d`; a `}` at depth 0 closes nothing and leaves the depth at 0, which no pending opening can be at
/// (they all sit at depth >= 0 with a `{` above them). Memory: one entry per opening still open.
fn closing_braces(text: &str, opens: &[usize]) -> Vec<Option<usize>> {
    let bytes = text.as_bytes();
    let mut closes = vec![None; opens.len()];
    // (index into `opens`, depth before its `{`) of the openings not yet closed, innermost last.
    let mut pending: Vec<(usize, usize)> = Vec::new();
    let mut next = 0;
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            // The escaped byte is skipped; for a multi-byte character the rest are continuation bytes,
            // which are never `\`, `{` or `}`.
            b'\\' => i += 1,
            b'{' => {
                if opens.get(next) == Some(&i) {
                    pending.push((next, depth));
                    next += 1;
                }
                depth += 1;
            }
            b'}' if depth > 0 => {
                depth -= 1;
                if let Some(&(k, d)) = pending.last()
                    && d == depth
                {
                    closes[k] = Some(i);
                    pending.pop();
                }
            }
            _ => {}
        }
        i += 1;
    }
    closes
}

/// The content of the last complete `<answer>...</answer>` pair (may span lines): the last opening tag
/// that is closed later, up to the first closing tag after it. Linear: the last closing tag bounds the
/// search for that opening tag.
fn last_answer_tag(text: &str) -> Option<&str> {
    const OPEN: &str = "<answer>";
    const CLOSE: &str = "</answer>";
    // An opening tag is closed iff some closing tag starts after it ends; the last closing tag is the one
    // to test against. (The tags cannot overlap: neither holds a `<` after its first byte.)
    let last_close = text.rfind(CLOSE)?;
    let open = text[..last_close].rfind(OPEN)?;
    let body = &text[open + OPEN.len()..];
    body.find(CLOSE).map(|close| &body[..close])
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
