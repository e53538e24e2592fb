//! Answer normalisation: the official `normalize_answer` rules plus the LaTeX clean-up math_verify does.
//!
//! The official code lower-cases the response and the references, rewrites `dfrac` to `frac`, drops `\text`,
//! `minutes` and `cm` (anywhere in the string, even inside words), and, for a reference containing `%`,
//! also accepts it without the `%`. Here units are handled by the number parser instead (only after a number,
//! never inside a word), and the LaTeX wrappers are unwrapped with their braces.

/// LaTeX commands whose single braced argument is kept and the command dropped.
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

/// Normalises an answer for comparison.
///
/// Lower-cases; `\dfrac`/`\tfrac` become `\frac`; `\text{..}`-like wrappers are unwrapped; `\%` becomes `%`;
/// `$`, `\left`, `\right`, `^\circ`/`°` and LaTeX spacing commands are dropped; Markdown emphasis and
/// surrounding quotes are removed; whitespace is collapsed; one trailing `.` is removed.
///
/// ```
/// use pixel_reward::normalize_answer;
/// assert_eq!(normalize_answer(r"$\text{ Sheep }$."), "sheep");
/// assert_eq!(normalize_answer(r"\dfrac{1}{2}"), r"\frac{1}{2}");
/// assert_eq!(normalize_answer(r"**50\%**"), "50%");
/// ```
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
    let collapsed = s.split_whitespace().collect::<Vec<_>>().join(" ");
    // Surrounding quotes / emphasis, then a sentence-final period (but not a decimal like "5.").
    // Peeled as sub-slices and copied once, so a long run of quotes stays linear.
    let mut t = collapsed.as_str();
    loop {
        let before = t.len();
        for (open, close) in [("\"", "\""), ("'", "'"), ("*", "*"), ("`", "`"), ("“", "”")] {
            if t.len() >= open.len() + close.len() && t.starts_with(open) && t.ends_with(close) {
                t = t[open.len()..t.len() - close.len()].trim();
            }
        }
        if t.len() == before {
            break;
        }
    }
    let mut s = t.to_string();
    if let Some(stripped) = s.strip_suffix('.')
        && !stripped.ends_with(|c: char| c.is_ascii_digit())
    {
        s = stripped.trim_end().to_string();
    }
    s
}

/// Most commands [`unwrap_commands`] removes from one answer; the rest are left as written.
const MAX_UNWRAPS: usize = 64;

/// Replaces `\cmd{X}` by `X` for the commands in [`UNWRAP`], with balanced braces, leftmost first and again
/// after each replacement (for nesting), at most [`MAX_UNWRAPS`] times. A command whose brace is not
/// closed loses its name only.
///
/// At most `MAX_UNWRAPS` passes, each one scan for the leftmost command, one brace match and one splice:
/// linear in the length of `s`.
fn unwrap_commands(s: &str) -> String {
    let mut out = s.to_string();
    for _ in 0..MAX_UNWRAPS {
        let Some((start, cmd_len)) = find_first_command(&out) else {
            break;
        };
        let after = &out[start + cmd_len..];
        let lead = after.len() - after.trim_start().len();
        let body = &after[lead..];
        let Some(inner_end) = matching_brace(body) else {
            // Unbalanced: just drop the command name.
            out.replace_range(start..start + cmd_len, "");
            continue;
        };
        let inner = body[1..inner_end].to_string();
        let end = start + cmd_len + lead + inner_end + 1;
        out.replace_range(start..end, &inner);
    }
    out
}

/// The leftmost position of a command of [`UNWRAP`] in `s` that is a whole command (not a prefix of a
/// longer one) followed by optional whitespace and `{`, with the command's length.
///
/// At most one command can match at a position (`\text` is only a prefix of the others when a letter
/// follows it), so the leftmost match is the leftmost position of any of them.
fn find_first_command(s: &str) -> Option<(usize, usize)> {
    s.match_indices('\\').find_map(|(p, _)| {
        UNWRAP.iter().find_map(|cmd| {
            let rest = s[p..].strip_prefix(cmd)?;
            (!rest.starts_with(|c: char| c.is_ascii_alphabetic())
                && rest.trim_start().starts_with('{'))
            .then_some((p, cmd.len()))
        })
    })
}

/// Given text starting with `{`, the byte index of its matching `}` (an escaped `\{`, `\}` or `\\` never
/// changes the depth); `None` when it is not closed. One pass over the bytes.
pub(crate) fn matching_brace(body: &str) -> Option<usize> {
    let bytes = body.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            // Skips the escaped byte; for a multi-byte character the rest are continuation bytes, which are
            // never `\`, `{` or `}`.
            b'\\' => i += 1,
            b'{' => depth += 1,
            b'}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwraps_nested_text_commands() {
        assert_eq!(normalize_answer(r"\textbf{\text{New} York}"), "new york");
        assert_eq!(normalize_answer(r"\text {yes}"), "yes");
    }

    #[test]
    fn unbalanced_wrapper_does_not_panic() {
        assert_eq!(normalize_answer(r"\text{abc"), "{abc");
    }

    #[test]
    fn keeps_decimal_point_and_drops_sentence_period() {
        assert_eq!(normalize_answer("5."), "5.");
        assert_eq!(normalize_answer("Paris."), "paris");
    }

    #[test]
    fn drops_degrees_and_spacing() {
        assert_eq!(normalize_answer(r"90^\circ"), "90");
        assert_eq!(normalize_answer(r"1\,000"), "1 000");
        assert_eq!(normalize_answer("  \"Blue\"  "), "blue");
    }
}
