//! The checkpoint's own Jinja chat template, rendered with `minijinja` the way `transformers` renders it.
//!
//! `transformers` compiles `chat_template` in a Jinja2 sandbox with `trim_blocks` and `lstrip_blocks`, the
//! `loopcontrols` extension, a `tojson` filter that is Python's `json.dumps` (insertion order,
//! `ensure_ascii=False`, `", "`/`": "` separators) and a `raise_exception` function. [`ChatTemplate`] sets up
//! the same environment: Python string methods (`.strip()`, `.startswith()`, ...) come from
//! `minijinja-contrib`'s `pycompat`, and [`python_tojson`] replaces minijinja's own `tojson` (which sorts
//! keys and escapes `<`, `>`, `&`, `'`, so tool blocks would not match).
//!
//! Messages and tools are any `Serialize` value; maps keep their insertion order (minijinja's
//! `preserve_order`), so a tool schema renders with its keys in the order written. To pass JSON text
//! without losing that order, parse it with [`json_value`] (a `serde_json::Value` sorts its keys).

use std::path::Path;

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, ErrorKind, syntax::SyntaxConfig};
use serde::Serialize;

use crate::error::{Result, VlmError, read_text};

/// Name of the compiled template inside the environment.
const TEMPLATE_NAME: &str = "chat";

/// Deepest nesting `tojson` writes (Python's `json.dumps` stops at the interpreter's recursion limit).
const MAX_TOJSON_DEPTH: usize = 256;

/// Limits of one rendering, so that a template (it comes with a downloaded checkpoint) that loops,
/// recurses or allocates without end stops with [`VlmError::ChatTemplateLimit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateLimits {
    /// minijinja fuel per rendering: a unit per instruction, and about one per 64 bytes of data created
    /// or written (`None`: unlimited). Default 4,000,000: over 300 times what Qwen2.5-VL's template
    /// spends on a 200-message conversation with an image in every user turn and a tool (measured: 11,949
    /// for 30 kB of prompt), and about 256 MB of template data at most.
    pub fuel: Option<u64>,
    /// Deepest recursion (nested loops, blocks, macro calls, includes; minijinja caps it at 500). Default
    /// 100.
    pub recursion: usize,
}

impl Default for TemplateLimits {
    fn default() -> Self {
        Self {
            fuel: Some(4_000_000),
            recursion: 100,
        }
    }
}

/// Options of one rendering, the keyword arguments of `apply_chat_template`.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// Append the header of a new assistant turn (`<|im_start|>assistant\n` for Qwen).
    pub add_generation_prompt: bool,
    /// Prefix each image/video with `Picture k: ` / `Video k: ` (Qwen2-VL's `add_vision_id`).
    pub add_vision_id: bool,
    /// Tool schemas (`{"type": "function", "function": {...}}`), rendered by templates with a tools block.
    pub tools: Option<Value>,
    /// Further variables for the template (`bos_token`, custom flags, ...).
    pub extra: Vec<(String, Value)>,
}

impl RenderOptions {
    /// Options with `add_generation_prompt` set.
    pub fn generation() -> Self {
        RenderOptions {
            add_generation_prompt: true,
            ..Default::default()
        }
    }
}

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    limits: TemplateLimits,
    source: String,
    /// Variables every rendering gets (the tokenizer's special tokens, as `transformers` passes them).
    globals: Vec<(String, Value)>,
}

impl ChatTemplate {
    /// Compiles a template source.
    ///
    /// # Errors
    /// [`VlmError::ChatTemplate`] with minijinja's message if the source is not a valid template.
    pub fn new(source: impl Into<String>) -> Result<Self> {
        let source = source.into();
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(false)
            .build()
            .map_err(template_error)?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", python_tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned(TEMPLATE_NAME, source.clone())
            .map_err(template_error)?;
        let mut template = ChatTemplate {
            env,
            limits: TemplateLimits::default(),
            source,
            globals: Vec::new(),
        };
        template.set_limits(TemplateLimits::default());
        Ok(template)
    }

    /// Replaces the rendering limits ([`TemplateLimits::default`] until then).
    pub fn set_limits(&mut self, limits: TemplateLimits) {
        self.env.set_fuel(limits.fuel);
        self.env.set_recursion_limit(limits.recursion);
        self.limits = TemplateLimits {
            fuel: limits.fuel,
            // minijinja silently caps the recursion limit; report the one in force.
            recursion: self.env.recursion_limit(),
        };
    }

    /// The rendering limits in force.
    pub fn limits(&self) -> TemplateLimits {
        self.limits
    }

    /// Loads the template of a checkpoint or tokenizer folder, in `transformers`' order of preference:
    /// `chat_template.jinja`, then `chat_template.json` (`{"chat_template": ...}`), then the `chat_template`
    /// field of `tokenizer_config.json`. The string fields `bos_token`, `eos_token`, `pad_token` and
    /// `unk_token` of `tokenizer_config.json` become template variables, as in `transformers`.
    ///
    /// # Errors
    /// [`VlmError::NoChatTemplate`] if none of the files holds a template; [`VlmError::Io`] /
    /// [`VlmError::Json`] for unreadable files; [`VlmError::ChatTemplate`] if the template does not compile.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let tokenizer_config = read_json_if_exists(&dir.join("tokenizer_config.json"))?;
        let jinja = dir.join("chat_template.jinja");
        let source = if jinja.is_file() {
            read_text(&jinja)?
        } else if let Some(json) = read_json_if_exists(&dir.join("chat_template.json"))?
            && let Some(s) = template_field(&json)
        {
            s
        } else if let Some(s) = tokenizer_config.as_ref().and_then(template_field) {
            s
        } else {
            return Err(VlmError::NoChatTemplate {
                path: dir.to_path_buf(),
            });
        };
        let mut template = ChatTemplate::new(source)?;
        if let Some(config) = tokenizer_config {
            for key in ["bos_token", "eos_token", "pad_token", "unk_token"] {
                if let Some(token) = special_token_text(config.get(key)) {
                    template.globals.push((key.to_string(), Value::from(token)));
                }
            }
        }
        Ok(template)
    }

    /// The template source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages` (a list of `{"role", "content", ...}` maps; `content` a string or a list of
    /// `{"type": "text"|"image"|"video", ...}` items).
    ///
    /// # Errors
    /// [`VlmError::ChatTemplate`] if rendering fails (a `raise_exception` call, a type error in the template);
    /// [`VlmError::ChatTemplateLimit`] if it runs out of fuel or recurses too deeply ([`TemplateLimits`]).
    pub fn render<M: Serialize + ?Sized>(
        &self,
        messages: &M,
        options: &RenderOptions,
    ) -> Result<String> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(template_error)?;
        let mut ctx: Vec<(String, Value)> = self.globals.clone();
        ctx.push((
            "messages".into(),
            Value::from(minijinja::value::Serde(messages)),
        ));
        ctx.push((
            "add_generation_prompt".into(),
            Value::from(options.add_generation_prompt),
        ));
        ctx.push(("add_vision_id".into(), Value::from(options.add_vision_id)));
        if let Some(tools) = &options.tools {
            ctx.push(("tools".into(), tools.clone()));
        }
        ctx.extend(options.extra.iter().cloned());
        let ctx = Value::from(
            ctx.into_iter()
                .collect::<std::collections::BTreeMap<String, Value>>(),
        );
        template.render(ctx).map_err(|e| self.render_error(e))
    }

    /// A rendering error, as [`VlmError::ChatTemplateLimit`] when a limit stopped it.
    fn render_error(&self, e: minijinja::Error) -> VlmError {
        let limit = match e.kind() {
            ErrorKind::OutOfFuel => Some(("fuel", self.limits.fuel.unwrap_or(u64::MAX))),
            ErrorKind::InvalidOperation if e.to_string().contains("recursion limit exceeded") => {
                Some(("recursion", self.limits.recursion as u64))
            }
            _ => None,
        };
        match limit {
            Some((limit, value)) => VlmError::ChatTemplateLimit {
                limit,
                value,
                reason: e.to_string(),
            },
            None => template_error(e),
        }
    }

    /// Renders messages given as JSON text (keys keep their order; see [`json_value`]).
    ///
    /// # Errors
    /// [`VlmError::Json`] for invalid JSON, else as [`ChatTemplate::render`].
    pub fn render_json(&self, messages_json: &str, options: &RenderOptions) -> Result<String> {
        self.render(&json_value(messages_json)?, options)
    }
}

/// Parses JSON text into a template value, keeping the order of object keys.
///
/// # Errors
/// [`VlmError::Json`] if the text is not JSON.
pub fn json_value(json: &str) -> Result<Value> {
    serde_json::from_str::<Value>(json).map_err(|e| VlmError::Json {
        path: "<json text>".into(),
        message: e.to_string(),
    })
}

fn read_json_if_exists(path: &Path) -> Result<Option<serde_json::Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = read_text(path)?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| VlmError::Json {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

/// The `chat_template` field: a string, or (older tokenizer configs) a list of `{name, template}` of which
/// `transformers` uses the one named `default`.
fn template_field(json: &serde_json::Value) -> Option<String> {
    match json.get("chat_template")? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(items) => items
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .and_then(|t| t.get("template"))
            .and_then(|t| t.as_str())
            .map(str::to_string),
        _ => None,
    }
}

/// A special-token field of `tokenizer_config.json`: a string, or an `AddedToken` map with `content`.
fn special_token_text(value: Option<&serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(map) => map
            .get("content")
            .and_then(|c| c.as_str())
            .map(str::to_string),
        _ => None,
    }
}

fn template_error(e: minijinja::Error) -> VlmError {
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(inner) = source {
        reason.push_str(": ");
        reason.push_str(&inner.to_string());
        source = inner.source();
    }
    VlmError::ChatTemplate { reason }
}

fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

/// `transformers`' `tojson` filter: Python's `json.dumps(value, ensure_ascii=False, indent=None,
/// separators=None, sort_keys=False)`, with the keyword arguments `indent`, `separators`, `sort_keys`
/// and `ensure_ascii` honoured.
///
/// Floats print as Python's `repr` (`1.0`, `1e-05`, `1e+16`), non-finite floats as `NaN` / `Infinity`,
/// non-ASCII characters stay as they are unless `ensure_ascii`, and `<`, `>`, `&`, `'` are not escaped.
///
/// # Errors
/// A minijinja error for an unknown keyword argument or a value JSON cannot hold (undefined, bytes,
/// a non-string map key other than a number/bool/none, which Python would also reject).
pub fn python_tojson(
    value: &Value,
    kwargs: Kwargs,
) -> std::result::Result<Value, minijinja::Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let separators: Option<Value> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match v.as_str() {
            Some(s) => Some(s.to_string()),
            None => Some(" ".repeat(usize::try_from(v).map_err(|_| {
                minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: indent must be an integer or a string",
                )
            })?)),
        },
    };
    let (item_sep, key_sep) = match separators {
        Some(v) if !v.is_none() => {
            let parts: Vec<Value> = v.try_iter()?.collect();
            match parts.as_slice() {
                [a, b] if a.as_str().is_some() && b.as_str().is_some() => (
                    a.as_str().unwrap_or_default().to_string(),
                    b.as_str().unwrap_or_default().to_string(),
                ),
                _ => {
                    return Err(minijinja::Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be a pair of strings",
                    ));
                }
            }
        }
        // Python's defaults: ", " without indent, "," with it.
        _ if indent.is_some() => (",".to_string(), ": ".to_string()),
        _ => (", ".to_string(), ": ".to_string()),
    };
    let style = JsonStyle {
        indent,
        item_sep,
        key_sep,
        sort_keys: sort_keys.unwrap_or(false),
        ensure_ascii: ensure_ascii.unwrap_or(false),
    };
    let mut out = String::new();
    style.write(value, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

struct JsonStyle {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

impl JsonStyle {
    fn newline(&self, level: usize, out: &mut String) {
        if let Some(indent) = &self.indent {
            out.push('\n');
            for _ in 0..level {
                out.push_str(indent);
            }
        }
    }

    fn write(
        &self,
        value: &Value,
        level: usize,
        out: &mut String,
    ) -> std::result::Result<(), minijinja::Error> {
        if level > MAX_TOJSON_DEPTH {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: value nested deeper than {MAX_TOJSON_DEPTH} levels"),
            ));
        }
        match value.kind() {
            ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
            ValueKind::Number => write_number(value, out),
            ValueKind::String => {
                write_py_str(out, value.as_str().unwrap_or_default(), self.ensure_ascii)
            }
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = value.try_iter()?.collect();
                self.write_container('[', ']', items.len(), level, out, |i, out| {
                    self.write(&items[i], level + 1, out)
                })?;
            }
            ValueKind::Map | ValueKind::Plain => {
                let mut keys: Vec<Value> = value.try_iter()?.collect();
                if self.sort_keys {
                    keys.sort_by_key(json_key);
                }
                self.write_container('{', '}', keys.len(), level, out, |i, out| {
                    write_py_str(out, &json_key(&keys[i]), self.ensure_ascii);
                    out.push_str(&self.key_sep);
                    self.write(&value.get_item(&keys[i])?, level + 1, out)
                })?;
            }
            kind => {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("tojson: a value of type {kind} is not JSON serializable"),
                ));
            }
        }
        Ok(())
    }

    fn write_container(
        &self,
        open: char,
        close: char,
        len: usize,
        level: usize,
        out: &mut String,
        mut item: impl FnMut(usize, &mut String) -> std::result::Result<(), minijinja::Error>,
    ) -> std::result::Result<(), minijinja::Error> {
        out.push(open);
        if len == 0 {
            out.push(close);
            return Ok(());
        }
        for i in 0..len {
            if i > 0 {
                out.push_str(&self.item_sep);
            }
            self.newline(level + 1, out);
            item(i, out)?;
        }
        self.newline(level, out);
        out.push(close);
        Ok(())
    }
}

/// A map key as Python's `json.dumps` writes it: strings as they are, numbers/bools/None converted.
fn json_key(key: &Value) -> String {
    match key.kind() {
        ValueKind::String => key.as_str().unwrap_or_default().to_string(),
        ValueKind::None => "null".into(),
        ValueKind::Bool => (if key.is_true() { "true" } else { "false" }).into(),
        ValueKind::Number => {
            let mut s = String::new();
            write_number(key, &mut s);
            s
        }
        _ => key.to_string(),
    }
}

fn write_number(value: &Value, out: &mut String) {
    if value.is_integer() {
        out.push_str(&value.to_string());
    } else {
        let x = f64::try_from(value.clone()).unwrap_or(f64::NAN);
        out.push_str(&py_float_repr(x));
    }
}

/// Python's `repr(float)` as `json.dumps` writes it; one implementation, shared with the tool prompt.
pub use pixel_ops::pyjson::py_float_repr;
use pixel_ops::pyjson::write_py_str;

#[cfg(test)]
mod tests {
    use super::*;

    fn tojson(json: &str, kwargs: &[(&str, Value)]) -> String {
        let value = json_value(json).unwrap();
        let kwargs = Kwargs::from_iter(kwargs.iter().map(|(k, v)| (k.to_string(), v.clone())));
        python_tojson(&value, kwargs).unwrap().to_string()
    }

    #[test]
    fn float_repr_matches_python() {
        // Expected values from CPython's repr().
        let cases = [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (1234567890123456.0, "1234567890123456.0"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.5e300, "1.5e+300"),
            (2.0 / 3.0, "0.6666666666666666"),
            (123.456, "123.456"),
        ];
        for (x, want) in cases {
            assert_eq!(py_float_repr(x), want, "{x}");
        }
    }

    #[test]
    fn tojson_keeps_order_and_python_spacing() {
        let got = tojson(
            r#"{"b": [1, 2.0, true, null], "a": {"z": "x", "y": []}, "c": {}}"#,
            &[],
        );
        assert_eq!(
            got,
            r#"{"b": [1, 2.0, true, null], "a": {"z": "x", "y": []}, "c": {}}"#
        );
    }

    #[test]
    fn tojson_escapes_like_python() {
        let got = tojson(r#"{"s": "ünï <&'> \"q\" \\ \n\t\u0001 🙂"}"#, &[]);
        assert_eq!(got, "{\"s\": \"ünï <&'> \\\"q\\\" \\\\ \\n\\t\\u0001 🙂\"}");
        let ascii = tojson(r#"["é🙂"]"#, &[("ensure_ascii", Value::from(true))]);
        assert_eq!(ascii, r#"["\u00e9\ud83d\ude42"]"#);
        // Python's ASCII encoder escapes DEL too; the default one keeps it.
        let del = tojson("[\"\u{7f}\"]", &[("ensure_ascii", Value::from(true))]);
        assert_eq!(del, r#"["\u007f"]"#);
        assert_eq!(tojson("[\"\u{7f}\"]", &[]), "[\"\u{7f}\"]");
    }

    #[test]
    fn tojson_indent_and_sort_keys() {
        // json.dumps({"b": 1, "a": [1, {}]}, indent=2, sort_keys=True)
        let got = tojson(
            r#"{"b": 1, "a": [1, {}]}"#,
            &[("indent", Value::from(2)), ("sort_keys", Value::from(true))],
        );
        assert_eq!(got, "{\n  \"a\": [\n    1,\n    {}\n  ],\n  \"b\": 1\n}");
    }

    #[test]
    fn pycompat_methods_and_raise_exception() {
        let t = ChatTemplate::new("{{ messages[0].content.strip() }}|{{ 'ab'.startswith('a') }}")
            .unwrap();
        let out = t.render(
            &json_value(r#"[{"role":"user","content":"  hi \n"}]"#).unwrap(),
            &RenderOptions::default(),
        );
        // Jinja2 prints Python booleans as `True`.
        assert_eq!(out.unwrap(), "hi|True");
        let t = ChatTemplate::new("{{ raise_exception('bad role') }}").unwrap();
        let err = t
            .render(&Vec::<u8>::new(), &RenderOptions::default())
            .unwrap_err();
        assert!(err.to_string().contains("bad role"), "{err}");
    }

    fn limit_of(source: &str) -> &'static str {
        let t = ChatTemplate::new(source).unwrap();
        match t.render(&Vec::<u8>::new(), &RenderOptions::default()) {
            Err(VlmError::ChatTemplateLimit { limit, .. }) => limit,
            other => panic!("expected a limit error for {source:?}, got {other:?}"),
        }
    }

    #[test]
    fn endless_templates_run_out_of_fuel() {
        // 10^10 iterations: without fuel this renders for hours.
        assert_eq!(
            limit_of(
                "{% for i in range(100000) %}{% for j in range(100000) %}{{ j }}{% endfor %}{% endfor %}"
            ),
            "fuel"
        );
        // Doubling a string 64 times: without fuel 2^64 bytes.
        assert_eq!(
            limit_of(
                "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}"
            ),
            "fuel"
        );
    }

    #[test]
    fn deep_recursion_hits_the_recursion_limit() {
        assert_eq!(
            limit_of("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"),
            "recursion"
        );
        assert_eq!(
            limit_of("{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}"),
            "recursion"
        );
    }

    #[test]
    fn limits_are_configurable() {
        let mut t = ChatTemplate::new("{% for i in range(1000) %}{{ i }}{% endfor %}").unwrap();
        assert_eq!(t.limits(), TemplateLimits::default());
        let empty = Vec::<u8>::new();
        assert!(t.render(&empty, &RenderOptions::default()).is_ok());
        t.set_limits(TemplateLimits {
            fuel: Some(100),
            recursion: 10_000,
        });
        // minijinja caps the recursion limit; the one in force is reported.
        assert_eq!(t.limits().recursion, 500);
        let err = t.render(&empty, &RenderOptions::default()).unwrap_err();
        assert!(
            matches!(
                err,
                VlmError::ChatTemplateLimit {
                    limit: "fuel",
                    value: 100,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn tojson_refuses_absurd_nesting() {
        let mut deep = Value::from(1);
        for _ in 0..(MAX_TOJSON_DEPTH + 10) {
            deep = Value::from(vec![deep]);
        }
        let err = python_tojson(
            &deep,
            Kwargs::from_iter(std::iter::empty::<(String, Value)>()),
        )
        .unwrap_err();
        assert!(err.to_string().contains("nested deeper"), "{err}");
    }

    #[test]
    fn invalid_template_is_a_typed_error() {
        let err = ChatTemplate::new("{% for x in %}").unwrap_err();
        assert!(matches!(err, VlmError::ChatTemplate { .. }), "{err}");
    }
}
