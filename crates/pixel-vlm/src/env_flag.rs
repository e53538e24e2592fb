//! The switches read from the environment ([`crate::fused::FUSED_ENV`],
//! [`crate::train::SHARED_PREFIX_ENV`]) share one reading of "off".

/// Whether the environment variable `name` turns its feature off: `off`, `0` or `false` (any case,
/// surrounding spaces ignored). Unset, empty or anything else leaves it on.
pub(crate) fn says_off(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| is_off(&v))
}

fn is_off(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "off" | "0" | "false"
    )
}

#[cfg(test)]
mod tests {
    use super::is_off;

    #[test]
    fn off_words_turn_off_and_anything_else_leaves_on() {
        for v in ["off", "OFF", " 0 ", "false", "False\n"] {
            assert!(is_off(v), "{v:?} should read as off");
        }
        for v in ["", "on", "1", "true", "of", "no"] {
            assert!(!is_off(v), "{v:?} should leave the feature on");
        }
    }
}
