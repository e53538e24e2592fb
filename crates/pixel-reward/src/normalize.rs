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
    let mut s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    // Surrounding quotes / emphasis, then a sentence-final period (but not a decimal like "5.").
    loop {
        let before = s.len();
        for (open, close) in [("\"", "\""), ("'", "'"), ("*", "*"), ("`", "`"), ("“", "”")] {
            if s.len() >= open.len() + close.len() && s.starts_with(open) && s.ends_with(close) {
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

/// Replaces `\cmd{X}` by `X` for the commands in [`UNWRAP`], with balanced braces; repeats for nesting.
fn unwrap_commands(s: &str) -> String {
    let mut out = s.to_string();
    // Each pass removes at least one command; a bound keeps adversarial inputs linear-ish.
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

/// The position of `cmd` in `s` when it is a whole command (not a prefix of a longer one) followed by `{`.
fn find_command(s: &str, cmd: &str) -> Option<usize> {
    s.match_indices(cmd).map(|(p, _)| p).find(|&p| {
        let rest = &s[p + cmd.len()..];
        !rest.starts_with(|c: char| c.is_ascii_alphabetic()) && rest.trim_start().starts_with('{')
    })
}

/// Given text starting with `{`, the byte index of its matching `}` (an escaped `\{`, `\}` or `\\` never
/// changes the depth); `None` when it is not closed.
pub(crate) fn matching_brace(body: &str) -> Option<usize> {
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
