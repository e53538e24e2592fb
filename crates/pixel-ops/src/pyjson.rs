//! JSON written exactly as Python's `json.dumps` writes it.
//!
//! The official prompts embed tool schemas rendered by `json.dumps(obj, ensure_ascii=False)` (qwen-agent's
//! Nous function-call prompt): separators `", "` and `": "`, keys in insertion order, `/` not escaped,
//! floats in Python's `repr`. `serde_json` sorts keys and writes compact separators, so the prompt needs
//! this small writer of its own. [`PyValue`] keeps object keys in the order they were written.

use std::fmt::Write as _;

/// A JSON value whose objects keep their keys in insertion order, written like Python's `json.dumps`.
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    /// `null` (Python `None`).
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer, written in decimal.
    Int(i64),
    /// A float, written as Python's `repr` writes it (`1.0`, `1e-05`, `NaN`, `Infinity`).
    Float(f64),
    /// A string.
    Str(String),
    /// An array.
    Array(Vec<PyValue>),
    /// An object; keys keep the order given here.
    Object(Vec<(String, PyValue)>),
}

impl PyValue {
    /// A string value.
    pub fn str(s: impl Into<String>) -> Self {
        PyValue::Str(s.into())
    }

    /// An object from `(key, value)` pairs, in order.
    pub fn object<K: Into<String>>(pairs: impl IntoIterator<Item = (K, PyValue)>) -> Self {
        PyValue::Object(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// Looks up `key` in an object (`None` for other values or a missing key).
    pub fn get(&self, key: &str) -> Option<&PyValue> {
        match self {
            PyValue::Object(pairs) => pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Writes the value as `json.dumps(value, ensure_ascii=ensure_ascii)` would.
    pub fn dumps(&self, ensure_ascii: bool) -> String {
        let mut out = String::new();
        self.write(&mut out, ensure_ascii);
        out
    }

    fn write(&self, out: &mut String, ensure_ascii: bool) {
        match self {
            PyValue::Null => out.push_str("null"),
            PyValue::Bool(true) => out.push_str("true"),
            PyValue::Bool(false) => out.push_str("false"),
            PyValue::Int(i) => {
                let _ = write!(out, "{i}");
            }
            PyValue::Float(f) => out.push_str(&py_float_repr(*f)),
            PyValue::Str(s) => write_py_str(out, s, ensure_ascii),
            PyValue::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write(out, ensure_ascii);
                }
                out.push(']');
            }
            PyValue::Object(pairs) => {
                out.push('{');
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_py_str(out, k, ensure_ascii);
                    out.push_str(": ");
                    v.write(out, ensure_ascii);
                }
                out.push('}');
            }
        }
    }
}

/// Writes `s` as a JSON string literal the way Python's `json` encoder does (also used by `pixel-vlm`'s
/// chat-template `tojson`).
pub fn write_py_str(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if ensure_ascii && (c as u32) > 0x7e => {
                // Python's ASCII encoder escapes everything outside ' '..='~', DEL included.
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)`: the shortest round-tripping digits, fixed notation for decimal exponents in
/// `[-4, 16)`, otherwise scientific with a signed exponent of at least two digits.
pub fn py_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "NaN".to_owned();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.to_owned();
    }
    // Rust's `{:e}` gives the shortest round-tripping digits: "d.ddddde<exp>".
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if x < 0.0 { "-" } else { "" };
    let n = digits.len() as i32;
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        let body = if point <= 0 {
            format!("0.{}{}", "0".repeat((-point) as usize), digits)
        } else if point >= n {
            format!("{}{}.0", digits, "0".repeat((point - n) as usize))
        } else {
            format!(
                "{}.{}",
                &digits[..point as usize],
                &digits[point as usize..]
            )
        };
        format!("{sign}{body}")
    } else {
        let frac = if n > 1 {
            format!(".{}", &digits[1..])
        } else {
            String::new()
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{}{frac}e{esign}{:02}", &digits[..1], exp.abs())
    }
}

/// Formats a list of integers as Python's `str(list)` does: `[1, 2, 3]`.
pub fn py_int_list(values: &[i64]) -> String {
    let parts: Vec<String> = values.iter().map(i64::to_string).collect();
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_repr_matches_python() {
        // Expected strings are Python 3.11 `repr` outputs.
        let cases = [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1e16, "1e+16"),
            (123456789012345.6, "123456789012345.6"),
            (1234567890123456.0, "1234567890123456.0"),
            (-2.5e-7, "-2.5e-07"),
            (1.5e300, "1.5e+300"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
            (-0.0, "-0.0"),
        ];
        for (x, want) in cases {
            assert_eq!(py_float_repr(x), want, "repr({x})");
        }
    }

    #[test]
    fn strings_escape_like_python() {
        let v = PyValue::str("a\"b\\c\nd\u{1}é😀/\u{7f}");
        assert_eq!(v.dumps(false), "\"a\\\"b\\\\c\\nd\\u0001é😀/\u{7f}\"");
        assert_eq!(
            v.dumps(true),
            "\"a\\\"b\\\\c\\nd\\u0001\\u00e9\\ud83d\\ude00/\\u007f\""
        );
    }

    #[test]
    fn objects_keep_order_and_python_separators() {
        let v = PyValue::object([
            ("z", PyValue::Int(1)),
            (
                "a",
                PyValue::Array(vec![
                    PyValue::Bool(true),
                    PyValue::Null,
                    PyValue::Float(2.0),
                ]),
            ),
        ]);
        assert_eq!(v.dumps(false), r#"{"z": 1, "a": [true, null, 2.0]}"#);
        assert_eq!(py_int_list(&[1, 2, 20]), "[1, 2, 20]");
    }
}
