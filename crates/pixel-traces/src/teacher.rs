//! A teacher model behind an OpenAI-compatible `/v1/chat/completions` endpoint as a [`Narrator`].
//!
//! The paper had GPT-4o write the analysis text of its template-based traces (appendix E.2). The prompts
//! below follow that recipe: the teacher sees the whole input (and, after an operation, its result), is told
//! the visual cue and the reference answer, and writes only the analysis for one step; the synthesizer adds
//! the operation call and the final `\boxed{}`.

use std::io::Cursor;
use std::time::Duration;

use base64::Engine;
use image::RgbImage;
use rand::RngCore;
use serde_json::json;

use crate::narrator::{Modality, NarrationRequest, NarrationStep, Narrator};
use crate::{Error, Result};

/// Connection and sampling settings of the teacher.
#[derive(Debug, Clone)]
pub struct TeacherConfig {
    /// Base URL of the server, e.g. `http://127.0.0.1:8000` (the path `/v1/chat/completions` is appended;
    /// a trailing `/v1` is accepted too).
    pub base_url: String,
    /// Model name sent in the request.
    pub model: String,
    /// Bearer token, if the server wants one.
    pub api_key: Option<String>,
    /// Whole-request timeout. Default 60 s.
    pub timeout: Duration,
    /// Sampling temperature. Default 0.7.
    pub temperature: f32,
    /// Maximum tokens of the answer. Default 512.
    pub max_tokens: u32,
    /// Whether to attach the images (as PNG data URLs). Default true; text-only teachers need false.
    pub send_images: bool,
}

impl TeacherConfig {
    /// Settings for `model` at `base_url` with the defaults above.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            timeout: Duration::from_secs(60),
            temperature: 0.7,
            max_tokens: 512,
            send_images: true,
        }
    }
}

/// The system prompt given to the teacher.
pub const TEACHER_SYSTEM_PROMPT: &str = "You write reasoning steps for training a vision-language model that can zoom into images and select video frames. Write in the first person, as the model thinking aloud, in plain prose of two to four sentences. Never mention that you were told the answer or the location. Never write a tool call, and never write \\boxed{}.";

/// The step-specific instruction sent to the teacher (the appendix E.2 recipe, one prompt per step).
pub fn teacher_prompt(request: &NarrationRequest<'_>) -> String {
    let input = match request.modality {
        Modality::Image => "image",
        Modality::Video => "video",
        Modality::Text => "question",
    };
    let task = match request.step {
        NarrationStep::WholeInput => format!(
            "Analyse the whole {input} as a first look. Describe what it shows overall, locate {cue}, and explain why its details are too small or too brief to answer from this view, so a closer look is needed. Do not answer the question.",
            cue = request.cue
        ),
        NarrationStep::Missed => format!(
            "The last image(s) are the result of a closer look that missed: they do not contain {cue}. Notice this from what they do show, and decide to look elsewhere. Do not answer the question.",
            cue = request.cue
        ),
        NarrationStep::TooCoarse => format!(
            "The last image is a zoomed view that contains {cue} but is still too wide to read it. Say so and decide to zoom in further on it. Do not answer the question.",
            cue = request.cue
        ),
        NarrationStep::Final => format!(
            "The last image(s) show {cue} clearly. Describe what they reveal and reason from it to the answer, which is {answer}. End with the answer stated in words.",
            cue = request.cue,
            answer = request.answer
        ),
        NarrationStep::TextOnly => format!(
            "Solve the question step by step without looking at any image. The correct answer is {answer}; reach it through the reasoning.",
            answer = request.answer
        ),
    };
    format!(
        "Question: {}\n\nReference answer: {}\n\nTask: {task}",
        request.question, request.answer
    )
}

/// A [`Narrator`] that asks a teacher model through an OpenAI-compatible chat-completions endpoint.
#[derive(Debug, Clone)]
pub struct TeacherNarrator {
    config: TeacherConfig,
    url: String,
    agent: ureq::Agent,
}

impl TeacherNarrator {
    /// A narrator for `config` (no request is made until [`Narrator::narrate`]).
    pub fn new(config: TeacherConfig) -> Self {
        let base = config.base_url.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        let url = format!("{base}/v1/chat/completions");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Self { config, url, agent }
    }

    /// The request body for `request` (public so the exact payload can be inspected).
    ///
    /// # Errors
    /// [`Error::Image`] if an image cannot be PNG-encoded.
    pub fn request_body(&self, request: &NarrationRequest<'_>) -> Result<serde_json::Value> {
        let mut content = vec![json!({"type": "text", "text": teacher_prompt(request)})];
        if self.config.send_images {
            for image in &request.images {
                content
                    .push(json!({"type": "image_url", "image_url": {"url": png_data_url(image)?}}));
            }
        }
        Ok(json!({
            "model": self.config.model,
            "messages": [
                {"role": "system", "content": TEACHER_SYSTEM_PROMPT},
                {"role": "user", "content": content},
            ],
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
        }))
    }
}

impl Narrator for TeacherNarrator {
    fn narrate(&self, request: &NarrationRequest<'_>, _rng: &mut dyn RngCore) -> Result<String> {
        let body = self.request_body(request)?;
        let url = self.url.clone();
        let mut call = self
            .agent
            .post(&url)
            .header("Content-Type", "application/json");
        if let Some(key) = &self.config.api_key {
            call = call.header("Authorization", format!("Bearer {key}"));
        }
        let transport = |e: ureq::Error| match e {
            ureq::Error::Timeout(_) => Error::TeacherTimeout {
                url: url.clone(),
                seconds: self.config.timeout.as_secs_f64(),
            },
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                Error::TeacherTimeout {
                    url: url.clone(),
                    seconds: self.config.timeout.as_secs_f64(),
                }
            }
            other => Error::TeacherTransport {
                url: url.clone(),
                message: other.to_string(),
            },
        };
        let mut response = call.send_json(&body).map_err(transport)?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().map_err(transport)?;
        if !(200..300).contains(&status) {
            let body: String = text.chars().take(500).collect();
            return Err(Error::TeacherStatus { url, status, body });
        }
        let unusable = |message: String| Error::TeacherResponse {
            url: url.clone(),
            message,
        };
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| unusable(format!("body is not JSON: {e}")))?;
        let content = value
            .pointer("/choices/0/message/content")
            .and_then(|c| c.as_str())
            .ok_or_else(|| unusable("no choices[0].message.content string".into()))?;
        let content = content.trim();
        if content.is_empty() {
            return Err(unusable("the completion is empty".into()));
        }
        Ok(content.to_string())
    }
}

/// The base64 flavour of data URLs: the standard alphabet with `=` padding (RFC 4648, section 4).
const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// `data:image/png;base64,...` for `image`.
fn png_data_url(image: &RgbImage) -> Result<String> {
    let mut png = Vec::new();
    image.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)?;
    Ok(format!("data:image/png;base64,{}", BASE64.encode(&png)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, expected) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
            // The last two alphabet characters are `+` and `/` (not the URL-safe `-` and `_`).
            (b"\xfb\xff\xbf", "+/+/"),
            (b"\xfb\xff", "+/8="),
        ] {
            assert_eq!(BASE64.encode(input), expected);
        }
    }

    /// The data URL carries the PNG's bytes in standard base64: what Python's `base64.b64encode` gives.
    #[test]
    fn png_data_url_is_standard_base64_of_the_png() {
        let image = RgbImage::from_fn(3, 2, |x, y| image::Rgb([x as u8 * 80, y as u8 * 200, 7]));
        let url = png_data_url(&image).unwrap();
        let body = url.strip_prefix("data:image/png;base64,").unwrap();
        let mut png = Vec::new();
        image
            .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        assert_eq!(body, BASE64.encode(&png));
        // Every PNG opens with its signature and the IHDR chunk header, b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR":
        // `python3 -c 'import base64; print(base64.b64encode(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"))'`
        // prints `iVBORw0KGgoAAAANSUhEUg==`, whose first 20 characters encode the first 15 bytes.
        assert!(body.starts_with("iVBORw0KGgoAAAANSUhE"), "{body}");
        assert_eq!(body.len(), png.len().div_ceil(3) * 4);
        let decoded = BASE64.decode(body).unwrap();
        assert_eq!(decoded, png);
        assert_eq!(image::load_from_memory(&decoded).unwrap().to_rgb8(), image);
    }
}
