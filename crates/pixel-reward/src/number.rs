//! Reading a normalised answer as a number: integers, decimals, thousands separators, fractions, percents,
//! trailing units, and number words for small counts (zero to twenty).

use std::sync::LazyLock;

use regex::Regex;

/// A number read from an answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Number {
    /// Its value (a percent is kept as written: `50%` has value 50).
    pub value: f64,
    /// Whether it was written with `%` (or `percent`).
    pub percent: bool,
}

/// Number words for small counts, as in counting benchmarks (TallyQA-style "how many").
const WORDS: [&str; 21] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
];

/// `[prefix] number [%] [unit]` on an already normalised (lower-case) answer.
static NUMERIC: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"^(?:(?:approximately|approx\.?|about|around|roughly|~|≈)\s*)?",
        r"(?:[a-z]\s*=\s*)?",
        r"(?P<num>",
        r"[-+−]?\\frac\{\s*-?\d+(?:\.\d+)?\s*\}\{\s*-?\d+(?:\.\d+)?\s*\}", // \frac{a}{b}
        r"|[-+−]?\d+(?:\.\d+)?\s*/\s*\d+(?:\.\d+)?",                       // a/b
        r"|[-+−]?\d{1,3}(?:,\d{3})+(?:\.\d+)?",                            // 1,234.5
        r"|[-+−]?\d+(?:\.\d*)?",                                           // 12 / 12.5 / 12.
        r"|[-+−]?\.\d+",                                                   // .5
        r")",
        r"\s*(?P<pct>%|percent\b)?",
        r"\s*(?P<unit>[a-zµ\s²³/.]{0,24})$",
    ))
    .unwrap_or_else(|e| unreachable!("static regex: {e}"))
});

/// `word [unit]` for the number words.
static WORD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?P<word>[a-z]+)\s*(?P<unit>[a-z\s]{0,24})$")
        .unwrap_or_else(|e| unreachable!("static regex: {e}"))
});

/// Reads `s` (normalised) as a number, or `None` when it is not one number with an optional unit.
///
/// ```
/// use pixel_reward::parse_number;
/// assert_eq!(parse_number("1,234.50").unwrap().value, 1234.5);
/// assert_eq!(parse_number("12 cm").unwrap().value, 12.0);
/// assert_eq!(parse_number("three apples").unwrap().value, 3.0);
/// assert_eq!(parse_number(r"\frac{3}{4}").unwrap().value, 0.75);
/// assert!(parse_number("50%").unwrap().percent);
/// assert!(parse_number("1,2").is_none());
/// ```
pub fn parse_number(s: &str) -> Option<Number> {
    let s = s.trim();
    if let Some(c) = NUMERIC.captures(s) {
        let num = c.name("num")?.as_str();
        let unit = c.name("unit").map_or("", |m| m.as_str().trim());
        let percent = c.name("pct").is_some() || unit == "percent";
        let value = numeric_value(num)?;
        return value.is_finite().then_some(Number { value, percent });
    }
    let c = WORD.captures(s)?;
    let word = c.name("word")?.as_str();
    let value = WORDS.iter().position(|w| *w == word)?;
    Some(Number {
        value: value as f64,
        percent: c
            .name("unit")
            .is_some_and(|m| m.as_str().trim() == "percent"),
    })
}

fn numeric_value(num: &str) -> Option<f64> {
    let num = num.replace('−', "-").replace([',', ' '], "");
    let (sign, body) = match num.strip_prefix('-') {
        Some(rest) => (-1.0, rest.to_string()),
        None => (1.0, num.trim_start_matches('+').to_string()),
    };
    let value = if let Some(frac) = body.strip_prefix(r"\frac{") {
        let (a, b) = frac.trim_end_matches('}').split_once("}{")?;
        ratio(a, b)?
    } else if let Some((a, b)) = body.split_once('/') {
        ratio(a, b)?
    } else {
        body.trim_end_matches('.').parse::<f64>().ok()?
    };
    Some(sign * value)
}

fn ratio(a: &str, b: &str) -> Option<f64> {
    let a: f64 = a.trim().parse().ok()?;
    let b: f64 = b.trim().parse().ok()?;
    (b != 0.0).then(|| a / b)
}

/// Whether two numbers are equal within 1e-6 (relative 1e-9 above a magnitude of 1000).
///
/// A percent on either side also matches its fraction form: `50%` equals `0.5` and `50`.
pub fn numbers_match(pred: Number, reference: Number) -> bool {
    let candidates = |n: Number| {
        if n.percent {
            vec![n.value, n.value / 100.0]
        } else {
            vec![n.value]
        }
    };
    candidates(pred)
        .into_iter()
        .any(|p| candidates(reference).into_iter().any(|r| close(p, r)))
}

/// Absolute 1e-6 (math_verify rounds floats to 6 places), widened to relative 1e-9 for large magnitudes so
/// that 2,691,556 and 2,691,555 stay different.
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= (1e-9 * a.abs().max(b.abs())).max(1e-6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Option<f64> {
        parse_number(s).map(|n| n.value)
    }

    #[test]
    fn plain_and_signed() {
        assert_eq!(v("42"), Some(42.0));
        assert_eq!(v("-3.5"), Some(-3.5));
        assert_eq!(v("−2"), Some(-2.0));
        assert_eq!(v(".5"), Some(0.5));
        assert_eq!(v("x = 7"), Some(7.0));
        assert_eq!(v("about 12 minutes"), Some(12.0));
    }

    #[test]
    fn thousands_groups_must_be_three_digits() {
        assert_eq!(v("12,345,678"), Some(12_345_678.0));
        assert_eq!(v("1,23"), None);
    }

    #[test]
    fn words_only_up_to_twenty() {
        assert_eq!(v("twenty"), Some(20.0));
        assert_eq!(v("zero"), Some(0.0));
        assert_eq!(v("twentyone"), None);
        assert_eq!(v("sheep"), None);
    }

    #[test]
    fn fractions() {
        assert_eq!(v("3/4"), Some(0.75));
        assert_eq!(v(r"-\frac{1}{4}"), Some(-0.25));
        assert_eq!(v("1/0"), None);
    }

    #[test]
    fn two_numbers_are_not_one() {
        assert_eq!(v("3 and 4"), None);
        assert_eq!(v("3 4"), None);
    }

    #[test]
    fn percent_matching() {
        let p = |s| parse_number(s).unwrap();
        assert!(numbers_match(p("50%"), p("0.5")));
        assert!(numbers_match(p("50"), p("50%")));
        assert!(numbers_match(p("50 percent"), p("50")));
        assert!(!numbers_match(p("0.5"), p("50")));
        assert!(numbers_match(p("2.50"), p("2.5")));
        assert!(!numbers_match(p("2.51"), p("2.5")));
        assert!(!numbers_match(p("2,691,556"), p("2691555")));
        assert!(numbers_match(p("0.3333333"), p(r"\frac{1}{3}")));
    }
}
