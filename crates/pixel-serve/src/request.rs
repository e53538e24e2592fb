//! Parsing and checking a `/v1/chat/completions` body: every field the server reads is checked here and a
//! bad one is a 400 naming it (`param`); fields the server does not use are ignored, as OpenAI-compatible
//! servers do, except those whose meaning it cannot honour (`tools`, `top_logprobs`, JSON output), which
//! are refused rather than silently dropped.

use pixel_vlm::sampling::SamplingParams;
use serde_json::{Map, Value};

use crate::config::ServeConfig;
use crate::error::ApiError;

/// Which of the two served models a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// The server runs the tool loop and returns the whole trace.
    Agent,
    /// One plain assistant turn (the client runs the loop).
    Raw,
}

/// A message's author.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `system` (or `developer`).
    System,
    /// `user`.
    User,
    /// `assistant`.
    Assistant,
}

impl Role {
    /// The role as the chat template writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

/// Where an image comes from, before it is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// A `data:image/...;base64,` URL: the base64 text after the comma.
    Data(String),
    /// A file, named by a `file://` URL or a relative path (needs [`ServeConfig::image_root`]).
    Path(String),
}

/// One part of a message's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartSource {
    /// Text.
    Text(String),
    /// An image; `param` names it in errors.
    Image {
        /// The source.
        source: ImageSource,
        /// The field path (`messages[1].content[0].image_url.url`).
        param: String,
    },
}

/// A checked message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its author.
    pub role: Role,
    /// Its content, in order (a string content is one text part).
    pub parts: Vec<PartSource>,
}

/// A checked chat completion request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The `model` field as given.
    pub model: String,
    /// Which served model it names.
    pub kind: ModelKind,
    /// The conversation.
    pub messages: Vec<Message>,
    /// `stream`.
    pub stream: bool,
    /// `stream_options.include_usage`: a last chunk with the usage.
    pub include_usage: bool,
    /// `max_completion_tokens` or `max_tokens` (per turn for the agent model), else the server's limit.
    pub max_tokens: usize,
    /// `n`: choices (agent: rollouts of the group).
    pub n: usize,
    /// Sampling from `temperature`, `top_p`, `top_k`; `None` when none of them was given (the raw model
    /// then samples at temperature 1, the agent model uses its rollout settings).
    pub sampling: Option<SamplingParams>,
    /// `seed`.
    pub seed: Option<u64>,
    /// `logprobs`: report the sampled tokens' log-probabilities (raw model).
    pub logprobs: bool,
    /// `stop` strings (raw model).
    pub stop: Vec<String>,
}

impl ChatRequest {
    /// Images in the request, in order.
    pub fn image_count(&self) -> usize {
        self.messages
            .iter()
            .flat_map(|m| &m.parts)
            .filter(|p| matches!(p, PartSource::Image { .. }))
            .count()
    }
}

/// Most `stop` strings and their longest length in bytes.
const MAX_STOP: usize = 4;
const MAX_STOP_BYTES: usize = 64;

/// Most JSON values (objects, arrays, array elements and object entries) a body may hold. A parsed JSON
/// value takes several times the bytes of its text (a 32 MiB array of zeros would take ~0.5 GB), so the
/// count is checked on the bytes, without allocating, before parsing. Real requests hold a few hundred.
pub const MAX_JSON_VALUES: usize = 100_000;

/// An upper bound of the values in a JSON text: the `{`, `[` and `,` outside strings.
fn json_value_bound(body: &[u8]) -> usize {
    let (mut count, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'{' | b'[' | b',' => count += 1,
                _ => {}
            }
        }
    }
    count
}

/// Parses and checks a request body against `config`.
///
/// # Errors
/// 400 for malformed JSON, more than [`MAX_JSON_VALUES`] values, a missing or mistyped field, a value out
/// of range, an unsupported feature or a conversation the model cannot take; 404 for an unknown `model`.
pub fn parse_request(body: &[u8], config: &ServeConfig) -> Result<ChatRequest, ApiError> {
    if json_value_bound(body) > MAX_JSON_VALUES {
        return Err(ApiError::bad_request(format!(
            "the body holds more than {MAX_JSON_VALUES} JSON values"
        )));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    };
    let model = match obj.get("model") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(ApiError::invalid("model", "`model` must be a string")),
        None => return Err(ApiError::invalid("model", "`model` is required")),
    };
    let kind = if model == config.agent_model {
        ModelKind::Agent
    } else if model == config.raw_model {
        ModelKind::Raw
    } else {
        return Err(ApiError::unknown_model(
            &model,
            &[&config.agent_model, &config.raw_model],
        ));
    };
    for field in ["tools", "functions", "tool_choice", "function_call"] {
        if obj.get(field).is_some_and(|v| !v.is_null()) {
            return Err(ApiError::invalid(
                field,
                format!(
                    "`{field}` is not supported: the model writes its <tool_call> blocks in the text"
                ),
            ));
        }
    }
    if let Some(format) = obj.get("response_format").filter(|v| !v.is_null())
        && format.get("type").and_then(Value::as_str) != Some("text")
    {
        return Err(ApiError::invalid(
            "response_format",
            "only {\"type\": \"text\"} is supported",
        ));
    }
    if let Some(top) = obj.get("top_logprobs").filter(|v| !v.is_null())
        && top.as_u64() != Some(0)
    {
        return Err(ApiError::invalid(
            "top_logprobs",
            "`top_logprobs` is not supported",
        ));
    }

    let stream = opt_bool(&obj, "stream")?.unwrap_or(false);
    let include_usage = match obj.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => opt_bool(o, "include_usage")
            .map_err(|e| ApiError {
                param: Some("stream_options.include_usage".into()),
                ..e
            })?
            .unwrap_or(false),
        Some(_) => {
            return Err(ApiError::invalid(
                "stream_options",
                "`stream_options` must be an object",
            ));
        }
    };
    let max_tokens = match opt_uint(&obj, "max_completion_tokens")? {
        Some(v) => Some(("max_completion_tokens", v)),
        None => opt_uint(&obj, "max_tokens")?.map(|v| ("max_tokens", v)),
    };
    let max_tokens = match max_tokens {
        None => config.max_tokens,
        Some((field, v)) if v == 0 || v > config.max_tokens as u64 => {
            return Err(ApiError::invalid(
                field,
                format!("`{field}` must be between 1 and {}", config.max_tokens),
            ));
        }
        Some((_, v)) => v as usize,
    };
    let n = match opt_uint(&obj, "n")? {
        None => 1,
        Some(v) if v == 0 || v > config.max_n as u64 => {
            return Err(ApiError::invalid(
                "n",
                format!("`n` must be between 1 and {}", config.max_n),
            ));
        }
        Some(v) => v as usize,
    };
    let sampling = parse_sampling(&obj)?;
    let seed =
        match obj.get("seed") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                ApiError::invalid("seed", "`seed` must be a non-negative integer")
            })?),
        };
    let logprobs = opt_bool(&obj, "logprobs")?.unwrap_or(false);
    let stop = parse_stop(&obj)?;
    let messages = parse_messages(&obj, config)?;
    let request = ChatRequest {
        model,
        kind,
        messages,
        stream,
        include_usage,
        max_tokens,
        n,
        sampling,
        seed,
        logprobs,
        stop,
    };
    check_conversation(&request, config)?;
    Ok(request)
}

fn opt_bool(obj: &Map<String, Value>, field: &str) -> Result<Option<bool>, ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::invalid(
            field,
            format!("`{field}` must be a boolean"),
        )),
    }
}

fn opt_uint(obj: &Map<String, Value>, field: &str) -> Result<Option<u64>, ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            ApiError::invalid(field, format!("`{field}` must be a non-negative integer"))
        }),
    }
}

fn opt_number(obj: &Map<String, Value>, field: &str) -> Result<Option<f64>, ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| ApiError::invalid(field, format!("`{field}` must be a number"))),
    }
}

/// `temperature` in [0, 2], `top_p` in (0, 1], `top_k` an integer >= -1 (-1 and 0 turn it off, as vLLM).
fn parse_sampling(obj: &Map<String, Value>) -> Result<Option<SamplingParams>, ApiError> {
    let temperature = opt_number(obj, "temperature")?;
    let top_p = opt_number(obj, "top_p")?;
    let top_k = match obj.get("top_k") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64() {
            Some(k) if k >= -1 => Some(k.max(0) as u64),
            _ => {
                return Err(ApiError::invalid(
                    "top_k",
                    "`top_k` must be an integer >= -1 (-1 or 0: off)",
                ));
            }
        },
    };
    if temperature.is_none() && top_p.is_none() && top_k.is_none() {
        return Ok(None);
    }
    let temperature = temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid(
            "temperature",
            "`temperature` must be between 0 and 2",
        ));
    }
    let top_p = top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid("top_p", "`top_p` must be in (0, 1]"));
    }
    let params = SamplingParams {
        temperature: temperature as f32,
        top_k: usize::try_from(top_k.unwrap_or(0)).unwrap_or(usize::MAX),
        top_p: top_p as f32,
    };
    params
        .validate()
        .map_err(|e| ApiError::bad_request(format!("sampling settings: {e}")))?;
    Ok(Some(params))
}

fn parse_stop(obj: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let stop = match obj.get("stop") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if items.len() <= MAX_STOP => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::invalid("stop", "`stop` must hold strings"))?,
        Some(_) => {
            return Err(ApiError::invalid(
                "stop",
                format!("`stop` must be a string or up to {MAX_STOP} strings"),
            ));
        }
    };
    if stop
        .iter()
        .any(|s| s.is_empty() || s.len() > MAX_STOP_BYTES)
    {
        return Err(ApiError::invalid(
            "stop",
            format!("each stop string must have 1 to {MAX_STOP_BYTES} bytes"),
        ));
    }
    Ok(stop)
}

fn parse_messages(
    obj: &Map<String, Value>,
    config: &ServeConfig,
) -> Result<Vec<Message>, ApiError> {
    let items = match obj.get("messages") {
        Some(Value::Array(items)) => items,
        Some(_) => return Err(ApiError::invalid("messages", "`messages` must be an array")),
        None => return Err(ApiError::invalid("messages", "`messages` is required")),
    };
    if items.is_empty() || items.len() > config.max_messages {
        return Err(ApiError::invalid(
            "messages",
            format!("`messages` must hold 1 to {} messages", config.max_messages),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, m)| parse_message(i, m))
        .collect()
}

fn parse_message(i: usize, value: &Value) -> Result<Message, ApiError> {
    let at = |field: &str| format!("messages[{i}]{field}");
    let Value::Object(m) = value else {
        return Err(ApiError::invalid(at(""), "a message must be an object"));
    };
    let role = match m.get("role").and_then(Value::as_str) {
        Some("system" | "developer") => Role::System,
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some(other) => {
            return Err(ApiError::invalid(
                at(".role"),
                format!(
                    "role {other:?} is not supported (system, developer, user, assistant); \
                     tool results go back as user turns"
                ),
            ));
        }
        None => return Err(ApiError::invalid(at(".role"), "`role` must be a string")),
    };
    let parts = match m.get("content") {
        Some(Value::String(s)) => vec![PartSource::Text(s.clone())],
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| parse_part(&at(&format!(".content[{j}]")), p))
            .collect::<Result<Vec<_>, _>>()?,
        _ => {
            return Err(ApiError::invalid(
                at(".content"),
                "`content` must be a string or an array of content parts",
            ));
        }
    };
    if role != Role::User && parts.iter().any(|p| matches!(p, PartSource::Image { .. })) {
        return Err(ApiError::invalid(
            at(".content"),
            "only user messages may hold images",
        ));
    }
    Ok(Message { role, parts })
}

fn parse_part(at: &str, value: &Value) -> Result<PartSource, ApiError> {
    let kind = value.get("type").and_then(Value::as_str);
    match kind {
        Some("text") => match value.get("text") {
            Some(Value::String(t)) => Ok(PartSource::Text(t.clone())),
            _ => Err(ApiError::invalid(
                format!("{at}.text"),
                "a text part needs a string `text`",
            )),
        },
        Some("image_url") => {
            let url = match value.get("image_url") {
                Some(Value::String(u)) => u,
                Some(Value::Object(o)) => match o.get("url") {
                    Some(Value::String(u)) => u,
                    _ => {
                        return Err(ApiError::invalid(
                            format!("{at}.image_url.url"),
                            "an image_url part needs a string `url`",
                        ));
                    }
                },
                _ => {
                    return Err(ApiError::invalid(
                        format!("{at}.image_url"),
                        "an image_url part needs an `image_url` object",
                    ));
                }
            };
            let param = format!("{at}.image_url.url");
            let source = image_source(url).map_err(|m| ApiError::invalid(&param, m))?;
            Ok(PartSource::Image { source, param })
        }
        Some(other) => Err(ApiError::invalid(
            format!("{at}.type"),
            format!("content part type {other:?} is not supported (text, image_url)"),
        )),
        None => Err(ApiError::invalid(
            format!("{at}.type"),
            "a content part needs a string `type`",
        )),
    }
}

/// Classifies an image URL: `data:image/...;base64,...`, `file://...` or a relative path.
fn image_source(url: &str) -> Result<ImageSource, String> {
    if let Some(rest) = strip_prefix_ignore_case(url, "data:") {
        let (header, data) = rest
            .split_once(',')
            .ok_or("a data URL needs a comma before its data")?;
        if !header.to_ascii_lowercase().starts_with("image/") {
            return Err("a data URL must hold an image (data:image/...)".into());
        }
        if !header.to_ascii_lowercase().ends_with(";base64") {
            return Err("a data URL must be base64-encoded (;base64,)".into());
        }
        return Ok(ImageSource::Data(data.to_owned()));
    }
    if let Some(path) = strip_prefix_ignore_case(url, "file://") {
        return Ok(ImageSource::Path(path.to_owned()));
    }
    if url.contains("://") {
        return Err("remote image URLs are not fetched: send a data: URL".into());
    }
    if url.is_empty() {
        return Err("the image URL is empty".into());
    }
    Ok(ImageSource::Path(url.to_owned()))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Conversation rules of each model, and the image count.
fn check_conversation(request: &ChatRequest, config: &ServeConfig) -> Result<(), ApiError> {
    let images = request.image_count();
    if images > config.max_images {
        return Err(ApiError::invalid(
            "messages",
            format!(
                "the request holds {images} images, over the limit of {}",
                config.max_images
            ),
        ));
    }
    let messages = &request.messages;
    if let Some(i) = messages.iter().skip(1).position(|m| m.role == Role::System) {
        return Err(ApiError::invalid(
            format!("messages[{}].role", i + 1),
            "a system message may only come first",
        ));
    }
    match request.kind {
        ModelKind::Raw => {
            if messages.last().map(|m| m.role) != Some(Role::User) {
                return Err(ApiError::invalid(
                    "messages",
                    "the last message must be a user turn (the model answers it)",
                ));
            }
        }
        ModelKind::Agent => {
            let users: Vec<&Message> = messages.iter().filter(|m| m.role != Role::System).collect();
            if users.len() != 1 || users[0].role != Role::User {
                return Err(ApiError::invalid(
                    "messages",
                    format!(
                        "the {} model runs the whole conversation itself: send an optional system \
                         message and one user message (images and the question)",
                        config.agent_model
                    ),
                ));
            }
            if images == 0 {
                return Err(ApiError::invalid(
                    "messages",
                    "the user message needs at least one image to reason about",
                ));
            }
            if request.logprobs {
                return Err(ApiError::invalid(
                    "logprobs",
                    "`logprobs` is only supported by the raw model",
                ));
            }
            if !request.stop.is_empty() {
                return Err(ApiError::invalid(
                    "stop",
                    "`stop` is only supported by the raw model (the loop decides when a turn ends)",
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_bound_counts_structure_outside_strings_only() {
        assert_eq!(json_value_bound(br#"{"a": "x,{[\",", "b": [1, 2]}"#), 4);
        assert_eq!(json_value_bound(br#""only, a string""#), 0);
    }

    #[test]
    fn image_sources_are_classified() {
        assert_eq!(
            image_source("DATA:image/png;base64,QUJD"),
            Ok(ImageSource::Data("QUJD".into()))
        );
        assert_eq!(
            image_source("file://pics/a.png"),
            Ok(ImageSource::Path("pics/a.png".into()))
        );
        assert_eq!(image_source("a.png"), Ok(ImageSource::Path("a.png".into())));
        assert!(image_source("http://host/a.png").is_err());
        assert!(image_source("data:image/png,raw").is_err());
        assert!(image_source("").is_err());
    }
}
