//! Matching an extracted answer against reference answers.

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::anls::{ANLS_THRESHOLD, anls};
use crate::extract::{Extracted, extract_answer, last_boxed};
use crate::normalize::normalize_answer;
use crate::number::{numbers_match, parse_number};

/// How a reference answer is compared with a prediction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerKind {
    /// Decide per reference: [`MultipleChoice`](Self::MultipleChoice) when options are given or the reference
    /// is a letter `A`–`K`; [`Number`](Self::Number) when it reads as one number; [`MultiSpan`](Self::MultiSpan)
    /// when it holds a comma; otherwise [`Exact`](Self::Exact).
    #[default]
    Auto,
    /// A choice letter. Accepted spellings: `B`, `(B)`, `[B]`, `B.`, `B)`, `B:`, `option B`, `choice B`, any of
    /// them followed by the option text (`B. Sheep`), or the option text alone when options are given. An
    /// answer naming two delimited letters (`(B) or (C)`) is a hedge and scores 0.
    MultipleChoice,
    /// A number: integers, decimals, thousands separators, trailing zeros, fractions, `%`, units after the
    /// number, and the words zero..twenty. Equal within 1e-6 (relative 1e-9 for large values).
    Number,
    /// Comma-separated parts, every one of which must appear in the prediction (as whole words).
    MultiSpan,
    /// ANLS (DocVQA / InfographicsVQA): graded score in `[0, 1]`, best over the references.
    Anls,
    /// Equality after [`normalize_answer`].
    Exact,
}

/// A prediction's verdict against its references.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    /// Score in `[0, 1]`: 0 or 1 for every kind except [`AnswerKind::Anls`].
    pub score: f64,
    /// `score >= 0.5`; for ANLS this means the prediction passed the threshold.
    pub correct: bool,
    /// The extracted answer, `None` when the response had no answer marker (the whole response was then
    /// compared, as the official code does).
    pub answer: Option<Extracted>,
    /// The kind used for the best-scoring reference (never `Auto`).
    pub kind: AnswerKind,
}

impl Judgement {
    /// Whether no answer marker (`\boxed`, `<answer>`, `Answer:`) was found: the released code's reward scores
    /// such a rollout −1 (see [`RewardVariant::ReleasedCode`](crate::RewardVariant::ReleasedCode)).
    pub fn parse_failed(&self) -> bool {
        self.answer.is_none()
    }
}

/// Compares predictions with references of one [`AnswerKind`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Matcher {
    /// The comparison; `Auto` by default.
    #[serde(default)]
    pub kind: AnswerKind,
    /// Multiple-choice option texts, in order: the first is `A`. Empty when the question has no options.
    #[serde(default)]
    pub options: Vec<String>,
    /// The ANLS threshold (0.5, the standard).
    #[serde(default = "default_threshold")]
    pub anls_threshold: f64,
}

fn default_threshold() -> f64 {
    ANLS_THRESHOLD
}

impl Default for Matcher {
    fn default() -> Self {
        Self::new(AnswerKind::Auto)
    }
}

/// A bare choice letter, possibly bracketed or followed by `.`, `)` or `:`.
static LETTER_ONLY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:(?:option|choice|answer)\s*)?[(\[]?([a-k])[)\]]?[.:)]?$")
        .unwrap_or_else(|e| unreachable!("static regex: {e}"))
});

/// A choice letter with an unambiguous delimiter, followed by option text: `(b) sheep`, `b. sheep`,
/// `option b sheep`. A bare `a cat` is *not* read as choice A (it is an article).
static LETTER_THEN_TEXT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:(?:option|choice)\s+([a-k])\b|[(\[]([a-k])[)\]]|([a-k])[.:)])\s*.*$")
        .unwrap_or_else(|e| unreachable!("static regex: {e}"))
});

/// A token that is a delimited choice letter: `(b)`, `[b]`, `b.`, `b)`, `b:`.
static LETTER_TOKEN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:[(\[]([a-k])[)\]]|([a-k])[.:)])$")
        .unwrap_or_else(|e| unreachable!("static regex: {e}"))
});

/// Whether an answer that names `letter` also names another delimited choice letter (`(B) or (C)`,
/// `B) x, C) y`, `option B or (C)`): a hedge, which names no choice.
fn is_hedge(answer: &str, letter: char) -> bool {
    answer
        .split(|c: char| c.is_whitespace() || ",;/".contains(c))
        .filter_map(|t| LETTER_TOKEN.captures(t))
        .filter_map(|c| c.get(1).or_else(|| c.get(2)))
        .any(|m| !m.as_str().starts_with(letter))
}

const LETTERS: &str = "abcdefghijk";

impl Matcher {
    /// A matcher of `kind` with no options and the standard ANLS threshold.
    pub fn new(kind: AnswerKind) -> Self {
        Self {
            kind,
            options: Vec::new(),
            anls_threshold: ANLS_THRESHOLD,
        }
    }

    /// Sets the multiple-choice option texts (first = `A`).
    pub fn with_options<S: Into<String>>(mut self, options: impl IntoIterator<Item = S>) -> Self {
        self.options = options.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the ANLS threshold.
    pub fn with_anls_threshold(mut self, threshold: f64) -> Self {
        self.anls_threshold = threshold;
        self
    }

    /// Extracts the answer of a full model `response` (see [`extract_answer`]; without a marker the whole
    /// response is compared) and scores it against the best of `references`. No references score 0.
    pub fn judge<S: AsRef<str>>(&self, response: &str, references: &[S]) -> Judgement {
        let answer = extract_answer(response);
        let text = answer.as_ref().map_or(response.trim(), |a| a.text.as_str());
        let (score, kind) = self.score_answer_with_kind(text, references);
        Judgement {
            score,
            correct: score >= 0.5,
            answer,
            kind,
        }
    }

    /// Scores a full model response against one reference (see [`judge`](Self::judge)).
    pub fn score(&self, response: &str, reference: &str) -> f64 {
        self.judge(response, &[reference]).score
    }

    /// Scores an already extracted answer against the best of `references` (a reference written as
    /// `\boxed{..}` is compared by its content).
    pub fn score_answer<S: AsRef<str>>(&self, answer: &str, references: &[S]) -> f64 {
        self.score_answer_with_kind(answer, references).0
    }

    /// The kind used for `reference`: `self.kind`, or the `Auto` decision.
    pub fn resolve_kind(&self, reference: &str) -> AnswerKind {
        if self.kind != AnswerKind::Auto {
            return self.kind;
        }
        self.resolve_normalized(&normalize_answer(reference))
    }

    /// [`resolve_kind`](Self::resolve_kind) of an already normalised reference.
    fn resolve_normalized(&self, r: &str) -> AnswerKind {
        if self.kind != AnswerKind::Auto {
            return self.kind;
        }
        if !self.options.is_empty() || LETTER_ONLY.is_match(r) {
            AnswerKind::MultipleChoice
        } else if parse_number(r).is_some() {
            AnswerKind::Number
        } else if r.contains(',') {
            AnswerKind::MultiSpan
        } else {
            AnswerKind::Exact
        }
    }

    fn score_answer_with_kind<S: AsRef<str>>(
        &self,
        answer: &str,
        references: &[S],
    ) -> (f64, AnswerKind) {
        // References stored boxed (`\boxed{B}`, as in some official records) compare by their content.
        let references: Vec<&str> = references
            .iter()
            .map(|r| last_boxed(r.as_ref()).unwrap_or(r.as_ref()))
            .collect();
        if self.kind == AnswerKind::Anls {
            return (
                anls(answer, &references, self.anls_threshold),
                AnswerKind::Anls,
            );
        }
        let pred = normalize_answer(answer);
        let mut best: Option<(f64, AnswerKind)> = None;
        for reference in references {
            let reference = normalize_answer(reference);
            let kind = self.resolve_normalized(&reference);
            let score = self.score_one(&pred, &reference, kind);
            if best.is_none_or(|(b, _)| score > b) {
                best = Some((score, kind));
            }
            if score >= 1.0 {
                break;
            }
        }
        best.unwrap_or((0.0, AnswerKind::Exact))
    }

    /// Scores a normalised prediction against a normalised reference.
    fn score_one(&self, pred: &str, reference: &str, kind: AnswerKind) -> f64 {
        if pred == reference {
            return 1.0;
        }
        let hit = match kind {
            AnswerKind::MultipleChoice => match (self.choice_of(reference), self.choice_of(pred)) {
                (Some(r), Some(p)) => r == p,
                _ => false,
            },
            AnswerKind::Number => match (parse_number(pred), parse_number(reference)) {
                (Some(p), Some(r)) => numbers_match(p, r),
                _ => false,
            },
            AnswerKind::MultiSpan => {
                let mut parts = reference
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .peekable();
                parts.peek().is_some() && parts.all(|part| contains_words(pred, part))
            }
            AnswerKind::Anls => anls(pred, &[reference], self.anls_threshold) >= 1.0,
            AnswerKind::Exact | AnswerKind::Auto => false,
        };
        if hit { 1.0 } else { 0.0 }
    }

    /// The choice letter a normalised answer names: by letter spelling (unless it hedges between letters),
    /// else by option text.
    fn choice_of(&self, answer: &str) -> Option<char> {
        let letter = LETTER_ONLY
            .captures(answer)
            .or_else(|| LETTER_THEN_TEXT.captures(answer))
            .and_then(|c| (1..=3).find_map(|i| c.get(i)))
            .and_then(|m| m.as_str().chars().next());
        if let Some(first) = letter {
            return (!is_hedge(answer, first)).then_some(first);
        }
        self.options
            .iter()
            .position(|o| normalize_answer(o) == answer)
            .and_then(|i| LETTERS.chars().nth(i))
    }
}

/// Whether `part` occurs in `text` with no alphanumeric character touching it on either side.
fn contains_words(text: &str, part: &str) -> bool {
    text.match_indices(part).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + part.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

/// Scores a full model response against one reference with the default ([`AnswerKind::Auto`]) matcher.
///
/// ```
/// use pixel_reward::score;
/// assert_eq!(score(r"... so the sign shows \boxed{(B)}", "B"), 1.0);
/// assert_eq!(score(r"\boxed{1,234.0 cm}", "1234"), 1.0);
/// assert_eq!(score(r"\boxed{three}", "3"), 1.0);
/// assert_eq!(score(r"\boxed{Troubles and The Siege of Krishnapur}", "troubles, the siege of krishnapur"), 1.0);
/// assert_eq!(score(r"\boxed{C}", "B"), 0.0);
/// ```
pub fn score(prediction: &str, reference: &str) -> f64 {
    Matcher::default().score(prediction, reference)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_spellings() {
        let m = Matcher::new(AnswerKind::MultipleChoice);
        for p in [
            "B",
            "(B)",
            "B.",
            "B)",
            "B:",
            "[b]",
            "option B",
            "Choice b",
            "(B) Sheep",
            "B. Sheep",
        ] {
            assert_eq!(m.score_answer(p, &["B"]), 1.0, "{p}");
            assert_eq!(m.score_answer(p, &["(C)"]), 0.0, "{p}");
        }
    }

    #[test]
    fn hedged_choices_name_no_letter() {
        let m = Matcher::new(AnswerKind::MultipleChoice);
        for p in [
            "(B) or (C)",
            "B. or C)",
            "B) Sheep, C) Tiger",
            "(B)/(C)",
            "option B or (C)",
        ] {
            assert_eq!(m.score_answer(p, &["B"]), 0.0, "{p}");
        }
        for p in [
            "(B) e.g. sheep",
            "B. Mr. Sheep",
            "(B) (b)",
            "B. a sheep or a goat",
        ] {
            assert_eq!(m.score_answer(p, &["B"]), 1.0, "{p}");
        }
    }

    #[test]
    fn article_is_not_a_choice() {
        let m = Matcher::default();
        assert_eq!(m.score_answer("a cat", &["A"]), 0.0);
        let m = m.with_options(["a cat", "a dog"]);
        assert_eq!(m.score_answer("a cat", &["A"]), 1.0);
        assert_eq!(m.score_answer("A dog", &["A"]), 0.0);
        assert_eq!(m.score_answer("B", &["a dog"]), 1.0);
    }

    #[test]
    fn auto_kinds() {
        let m = Matcher::default();
        assert_eq!(m.resolve_kind("(b)"), AnswerKind::MultipleChoice);
        assert_eq!(m.resolve_kind("1,234"), AnswerKind::Number);
        assert_eq!(m.resolve_kind("1,2"), AnswerKind::MultiSpan);
        assert_eq!(m.resolve_kind("red, blue"), AnswerKind::MultiSpan);
        assert_eq!(m.resolve_kind("red"), AnswerKind::Exact);
    }

    #[test]
    fn multispan_needs_every_part_as_words() {
        let m = Matcher::default();
        assert_eq!(m.score_answer("red and blue", &["red, blue"]), 1.0);
        assert_eq!(m.score_answer("red", &["red, blue"]), 0.0);
        assert_eq!(m.score_answer("reddish, blue", &["red, blue"]), 0.0);
    }

    #[test]
    fn best_over_references_and_empty_references() {
        let m = Matcher::default();
        assert_eq!(m.score_answer("7", &["six", "seven"]), 1.0);
        assert_eq!(m.score_answer::<&str>("7", &[]), 0.0);
        let j = m.judge("no marker 7", &["7"]);
        assert!(j.parse_failed());
        assert_eq!(j.score, 0.0);
        let j = m.judge("7", &["7"]);
        assert!(j.parse_failed() && j.correct);
    }

    #[test]
    fn boxed_references_compare_by_content() {
        let m = Matcher::default();
        assert_eq!(m.score(r"\boxed{(B)}", r"\boxed{B}"), 1.0);
        assert_eq!(m.score(r"\boxed{12}", r"\boxed{\text{12 cm}}"), 1.0);
        assert_eq!(Matcher::new(AnswerKind::Anls).score("x", r"\boxed{x}"), 1.0);
    }

    #[test]
    fn anls_kind_is_graded() {
        let m = Matcher::new(AnswerKind::Anls);
        let j = m.judge(r"\boxed{Dear Dr. Lobo}", &["Dear Dr. Lobo", "Dr. Lobo"]);
        assert_eq!((j.score, j.correct, j.kind), (1.0, true, AnswerKind::Anls));
        let s = m.score_answer("12/15/89", &["12/15/88"]);
        assert!((s - 0.875).abs() < 1e-12);
    }
}
