//! ANLS, the Average Normalized Levenshtein Similarity of DocVQA / InfographicsVQA (Biten et al., ICCV 2019),
//! exactly as the Robust Reading Competition scorer computes it per question.
//!
//! Both strings are lower-cased, trimmed and have their whitespace runs collapsed to one space (the scorer is
//! case-insensitive but space-sensitive); `NL = lev(a, b) / max(|a|, |b|)` over Unicode characters; a
//! reference scores `1 - NL` when `NL < threshold`, else 0; the question scores the best reference.

/// The standard ANLS threshold.
pub const ANLS_THRESHOLD: f64 = 0.5;

/// Levenshtein distance over Unicode scalar values (insertions, deletions, substitutions all cost 1).
///
/// ```
/// assert_eq!(pixel_reward::levenshtein("kitten", "sitting"), 3);
/// ```
pub fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.is_empty() || b.is_empty() {
        return a.len().max(b.len());
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0usize; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The scorer's normalisation: lower-case, trim, collapse whitespace.
fn anls_normalize(s: &str) -> String {
    s.to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Normalized Levenshtein distance in `[0, 1]` after the scorer's normalisation (0 for two empty strings).
pub fn normalized_levenshtein(prediction: &str, reference: &str) -> f64 {
    let (p, r) = (anls_normalize(prediction), anls_normalize(reference));
    normalized_distance(&p, &r, None)
}

/// `lev(p, r) / max(|p|, |r|)` of already normalised strings (0 when both are empty). With `cutoff`, a
/// pair whose length difference alone gives a distance of at least `cutoff` returns that lower bound
/// without running the quadratic distance (`lev >= ||p| - |r||`, and f64 division is monotone).
fn normalized_distance(p: &str, r: &str, cutoff: Option<f64>) -> f64 {
    let (lp, lr) = (p.chars().count(), r.chars().count());
    let len = lp.max(lr);
    if len == 0 {
        return 0.0;
    }
    let bound = lp.abs_diff(lr) as f64 / len as f64;
    if cutoff.is_some_and(|c| bound >= c) {
        return bound;
    }
    levenshtein(p, r) as f64 / len as f64
}

/// The ANLS score of one prediction against its references: the best `1 - NL` with `NL < threshold`, else 0.
/// No references score 0.
///
/// A prediction much longer than every reference (a runaway response) scores 0 after counting its
/// characters, without the `O(|prediction| x |reference|)` distance.
///
/// ```
/// use pixel_reward::{anls, ANLS_THRESHOLD};
/// assert_eq!(anls("Denver Broncos", &["denver broncos"], ANLS_THRESHOLD), 1.0);
/// assert!((anls("12/15/89", &["12/15/88"], ANLS_THRESHOLD) - 0.875).abs() < 1e-12);
/// assert_eq!(anls("yes", &["no"], ANLS_THRESHOLD), 0.0);
/// ```
pub fn anls<S: AsRef<str>>(prediction: &str, references: &[S], threshold: f64) -> f64 {
    let prediction = anls_normalize(prediction);
    references
        .iter()
        .map(|r| {
            let nl = normalized_distance(&prediction, &anls_normalize(r.as_ref()), Some(threshold));
            if nl < threshold { 1.0 - nl } else { 0.0 }
        })
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_basics() {
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("abc", "abc"), 0);
        assert_eq!(levenshtein("flaw", "lawn"), 2);
        assert_eq!(levenshtein("é", "e"), 1);
    }

    #[test]
    fn threshold_is_strict() {
        // NL exactly 0.5 scores 0, as `nl < threshold` in the scorer.
        assert_eq!(anls("ab", &["ac"], 0.5), 0.0);
        assert!((anls("abcd", &["abce"], 0.5) - 0.75).abs() < 1e-12);
    }

    #[test]
    fn best_reference_and_spacing() {
        let refs = ["Dear Dr. Lobo", "Dr. Lobo"];
        assert_eq!(anls("  dr.   LOBO ", &refs, 0.5), 1.0);
        assert_eq!(anls::<&str>("x", &[], 0.5), 0.0);
        assert_eq!(anls("", &[""], 0.5), 1.0);
    }
}
