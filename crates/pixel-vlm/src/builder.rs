//! A complete tiny Qwen2.5-VL checkpoint folder written from scratch, for demos and tests that train a model
//! from random weights: `tokenizer.json`, `tokenizer_config.json` (with a chat template), a
//! `preprocessor_config.json`, `config.json` and random weights (`model.safetensors`).
//!
//! The tokenizer is a byte-level BPE in Qwen2's style (NFC, Qwen's pre-tokenizer regex, byte-level
//! pre-tokenizer and decoder): the 256 byte symbols, so any text round-trips, plus merges learned with
//! the `tokenizers` trainer from [`TinySpec::merge_corpus`] (by default the Pixel Reasoner system prompt and
//! user guidelines, so prompts of the demo are short), then the 22 added tokens of Qwen2.5-VL in their real
//! order, with consecutive ids right after the vocabulary ([`ADDED_TOKENS`]). `config.json`'s token ids
//! (`image_token_id`, `video_token_id`, `vision_start_token_id`, `vision_end_token_id`, `eos_token_id` =
//! `<|im_end|>`) and `vocab_size` (exactly the tokenizer's size) are taken from that tokenizer.
//!
//! ```
//! use pixel_vlm::builder::{TinySpec, write_tiny_checkpoint};
//! use pixel_vlm::{Qwen25Vl, backend::CpuBackend, processor::Processor};
//!
//! let dir = std::env::temp_dir().join(format!("pixel-vlm-doc-tiny-{}", std::process::id()));
//! let config = write_tiny_checkpoint(&dir, &TinySpec::default())?;
//! let processor = Processor::from_pretrained(&dir)?;
//! let model = Qwen25Vl::<CpuBackend>::from_pretrained(&dir, &Default::default())?;
//! assert_eq!(model.config.image_token_id, processor.tokenizer.special().image_pad);
//! assert_eq!(config.text.vocab_size, processor.tokenizer.vocab_size());
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), pixel_vlm::VlmError>(())
//! ```

use std::io::Write;
use std::path::Path;

use burn::tensor::FloatDType;
use burn::tensor::backend::Backend;
use serde_json::{Value, json};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainer};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use crate::config::Qwen25VlConfig;
use crate::error::{Result, VlmError};
use crate::model::Qwen25Vl;
use crate::processor::PreprocessorConfig;
use crate::saving::{SaveOptions, write_atomic, write_err};

/// The added tokens of Qwen2.5-VL's tokenizer in their real order (ids 151,643.. there, right after the
/// vocabulary here), with their `special` flag (`<tool_call>` and the FIM tokens are ordinary added tokens).
pub const ADDED_TOKENS: [(&str, bool); 22] = [
    ("<|endoftext|>", true),
    ("<|im_start|>", true),
    ("<|im_end|>", true),
    ("<|object_ref_start|>", true),
    ("<|object_ref_end|>", true),
    ("<|box_start|>", true),
    ("<|box_end|>", true),
    ("<|quad_start|>", true),
    ("<|quad_end|>", true),
    ("<|vision_start|>", true),
    ("<|vision_end|>", true),
    ("<|vision_pad|>", true),
    ("<|image_pad|>", true),
    ("<|video_pad|>", true),
    ("<tool_call>", false),
    ("</tool_call>", false),
    ("<|fim_prefix|>", false),
    ("<|fim_middle|>", false),
    ("<|fim_suffix|>", false),
    ("<|fim_pad|>", false),
    ("<|repo_name|>", false),
    ("<|file_sep|>", false),
];

/// Qwen2's pre-tokenizer regex (contractions, letters, single digits, punctuation, newlines, spaces).
const PRETOKENIZE_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The chat template written to `tokenizer_config.json`: Qwen2.5-VL's (default system prompt, images and
/// videos as `<|vision_start|><|image_pad|><|vision_end|>`, `add_vision_id`) with a Nous-style tools block,
/// assistant tool calls and tool responses; the template of the crate's tokenizer test fixture.
pub const CHAT_TEMPLATE: &str = r#"{%- set image_count = namespace(value=0) -%}
{%- set video_count = namespace(value=0) -%}
{%- if messages and messages[0].role == 'system' -%}
  {%- set system_message = messages[0].content -%}
  {%- set rest = messages[1:] -%}
{%- else -%}
  {%- set system_message = 'You are a helpful assistant.' -%}
  {%- set rest = messages -%}
{%- endif -%}
{{- '<|im_start|>system\n' -}}
{%- if system_message is string -%}
  {{- system_message -}}
{%- else -%}
  {%- for item in system_message -%}
    {%- if 'text' in item -%}{{- item.text -}}{%- endif -%}
  {%- endfor -%}
{%- endif -%}
{%- if tools -%}
  {{- '\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>' -}}
  {%- for tool in tools -%}
    {{- '\n' -}}{{- tool | tojson -}}
  {%- endfor -%}
  {{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>' -}}
{%- endif -%}
{{- '<|im_end|>\n' -}}
{%- for message in rest -%}
  {%- if message.role == 'tool' -%}
    {%- if loop.first or rest[loop.index0 - 1].role != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}
    {{- '\n<tool_response>\n' -}}{{- message.content.strip() -}}{{- '\n</tool_response>' -}}
    {%- if loop.last or rest[loop.index0 + 1].role != 'tool' -%}{{- '<|im_end|>\n' -}}{%- endif -%}
  {%- else -%}
    {{- '<|im_start|>' + message.role + '\n' -}}
    {%- if message.content is string -%}
      {{- message.content -}}
    {%- elif message.content is not none -%}
      {%- for item in message.content -%}
        {%- if item.type == 'image' or 'image' in item or 'image_url' in item -%}
          {%- set image_count.value = image_count.value + 1 -%}
          {%- if add_vision_id -%}{{- 'Picture ' + image_count.value | string + ': ' -}}{%- endif -%}
          {{- '<|vision_start|><|image_pad|><|vision_end|>' -}}
        {%- elif item.type == 'video' or 'video' in item -%}
          {%- set video_count.value = video_count.value + 1 -%}
          {%- if add_vision_id -%}{{- 'Video ' + video_count.value | string + ': ' -}}{%- endif -%}
          {{- '<|vision_start|><|video_pad|><|vision_end|>' -}}
        {%- elif 'text' in item -%}
          {{- item.text -}}
        {%- endif -%}
      {%- endfor -%}
    {%- endif -%}
    {%- if message.tool_calls -%}
      {%- for tool_call in message.tool_calls -%}
        {%- set call = tool_call.function if tool_call.function is defined else tool_call -%}
        {{- '\n<tool_call>\n{"name": "' + call.name + '", "arguments": ' -}}{{- call.arguments | tojson -}}{{- '}\n</tool_call>' -}}
      {%- endfor -%}
    {%- endif -%}
    {{- '<|im_end|>\n' -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<|im_start|>assistant\n' -}}
{%- endif -%}
"#;

/// Sizes and options of a tiny checkpoint ([`write_tiny_checkpoint`]). The defaults make a model of about
/// 0.2 M parameters that runs a forward with an image in milliseconds on a CPU.
#[derive(Debug, Clone, PartialEq)]
pub struct TinySpec {
    /// Text model width (64).
    pub hidden_size: usize,
    /// Text MLP width (128).
    pub intermediate_size: usize,
    /// Decoder layers (2).
    pub num_hidden_layers: usize,
    /// Query heads (4); `hidden_size / num_attention_heads` must be even.
    pub num_attention_heads: usize,
    /// Key/value heads (2).
    pub num_key_value_heads: usize,
    /// Longest context (8,192).
    pub max_position_embeddings: usize,
    /// RoPE base of the decoder (1,000,000, as Qwen2.5-VL).
    pub rope_theta: f64,
    /// Whether the LM head shares the token embedding (true).
    pub tie_word_embeddings: bool,
    /// Vision blocks (2); the last one attends over the whole image, the others over windows.
    pub vision_depth: usize,
    /// Vision width (32); `vision_hidden_size / vision_num_heads` must be a multiple of 4.
    pub vision_hidden_size: usize,
    /// Vision MLP width (64).
    pub vision_intermediate_size: usize,
    /// Vision heads (2).
    pub vision_num_heads: usize,
    /// Window of window attention, in pixels (112, a multiple of 28).
    pub window_size: usize,
    /// Texts the BPE merges are learned from (default: the Pixel Reasoner system prompt and user
    /// guidelines). Empty: no merges, one token per byte.
    pub merge_corpus: Vec<String>,
    /// Size of the BPE vocabulary (before the added tokens) the merges may grow it to (512); at least 256,
    /// the byte symbols. Fewer merges are learned when the corpus has no more pairs seen twice.
    pub bpe_vocab_size: usize,
    /// Smallest pixel count of a resized image (3,136: 56 x 56).
    pub min_pixels: u64,
    /// Largest pixel count of a resized image (50,176: at most 64 visual tokens).
    pub max_pixels: u64,
    /// [`PreprocessorConfig::standardize_per_image`] (true: synthetic images are mostly white).
    pub standardize_per_image: bool,
    /// Seed of the random weights.
    pub seed: u64,
    /// Element type of the saved weights (F32).
    pub dtype: FloatDType,
}

impl Default for TinySpec {
    fn default() -> Self {
        Self {
            hidden_size: 64,
            intermediate_size: 128,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            max_position_embeddings: 8192,
            rope_theta: 1_000_000.0,
            tie_word_embeddings: true,
            vision_depth: 2,
            vision_hidden_size: 32,
            vision_intermediate_size: 64,
            vision_num_heads: 2,
            window_size: 112,
            merge_corpus: vec![
                pixel_ops::protocol::ToolSet::PixelReasoner.system_prompt(),
                pixel_ops::protocol::GUIDELINES.to_string(),
            ],
            bpe_vocab_size: 512,
            min_pixels: 56 * 56,
            max_pixels: 28 * 28 * 64,
            standardize_per_image: true,
            seed: 0,
            dtype: FloatDType::F32,
        }
    }
}

fn tokenizer_err(reason: impl std::fmt::Display) -> VlmError {
    VlmError::Tokenizer {
        path: None,
        reason: reason.to_string(),
    }
}

/// The byte-level BPE tokenizer of `spec` with Qwen2.5-VL's added tokens after its vocabulary.
///
/// # Errors
/// [`VlmError::Config`] naming `bpe_vocab_size` if it is below 256; [`VlmError::Tokenizer`] if training
/// fails or an added token did not get the next id.
pub fn tiny_tokenizer(spec: &TinySpec) -> Result<Tokenizer> {
    if spec.bpe_vocab_size < 256 {
        return Err(VlmError::Config {
            field: "bpe_vocab_size".into(),
            reason: format!(
                "{} is below the 256 byte symbols of a byte-level BPE",
                spec.bpe_vocab_size
            ),
        });
    }
    let split = Split::new(
        SplitPattern::Regex(PRETOKENIZE_REGEX.into()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(tokenizer_err)?;
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer
        .with_normalizer(Some(NFC))
        .map_err(tokenizer_err)?;
    tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
        PreTokenizerWrapper::Split(split),
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, false)),
    ])));
    tokenizer.with_post_processor(Some(ByteLevel::new(true, false, true)));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    let mut trainer: TrainerWrapper = BpeTrainer::builder()
        .vocab_size(spec.bpe_vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    tokenizer
        .train(&mut trainer, spec.merge_corpus.iter())
        .map_err(tokenizer_err)?;
    let base = tokenizer.get_vocab_size(false);
    for (i, (content, special)) in ADDED_TOKENS.iter().enumerate() {
        let token = AddedToken::from(*content, *special)
            .normalized(false)
            .single_word(false)
            .lstrip(false)
            .rstrip(false);
        if *special {
            tokenizer
                .add_special_tokens([token])
                .map_err(tokenizer_err)?;
        } else {
            tokenizer.add_tokens([token]).map_err(tokenizer_err)?;
        }
        let want = (base + i) as u32;
        if tokenizer.token_to_id(content) != Some(want) {
            return Err(tokenizer_err(format!(
                "added token {content} did not get id {want} (it is in the learned vocabulary?)"
            )));
        }
    }
    Ok(tokenizer)
}

/// `tokenizer_config.json` for a tokenizer whose added tokens start at `first_id`.
fn tokenizer_config(first_id: usize) -> Value {
    let decoder: serde_json::Map<String, Value> = ADDED_TOKENS
        .iter()
        .enumerate()
        .map(|(i, (content, special))| {
            (
                (first_id + i).to_string(),
                json!({"content": content, "lstrip": false, "normalized": false, "rstrip": false,
                       "single_word": false, "special": special}),
            )
        })
        .collect();
    let specials: Vec<&str> = ADDED_TOKENS[1..14].iter().map(|(c, _)| *c).collect();
    json!({
        "add_bos_token": false,
        "add_prefix_space": false,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": specials,
        "bos_token": null,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": false,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": false,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": null,
    })
}

/// `preprocessor_config.json` of `spec` (the `transformers` defaults otherwise).
fn preprocessor_config(spec: &TinySpec) -> Result<Value> {
    let config = PreprocessorConfig {
        min_pixels: Some(spec.min_pixels),
        max_pixels: Some(spec.max_pixels),
        standardize_per_image: spec.standardize_per_image,
        ..Default::default()
    };
    config.validate()?;
    let mut value = serde_json::to_value(&config).map_err(|e| VlmError::Save(e.to_string()))?;
    if let Value::Object(map) = &mut value {
        map.retain(|_, v| !v.is_null());
        // The f32 statistics as their shortest decimal (0.48145466, not 0.48145467042922974).
        for (key, values) in [
            ("image_mean", &config.image_mean),
            ("image_std", &config.image_std),
        ] {
            let short: Vec<Value> = values
                .iter()
                .map(|x| {
                    x.to_string()
                        .parse::<f64>()
                        .map_or(Value::Null, Value::from)
                })
                .collect();
            map.insert(key.into(), Value::Array(short));
        }
        map.insert(
            "image_processor_type".into(),
            "Qwen2VLImageProcessor".into(),
        );
        map.insert("processor_class".into(), "Qwen2_5_VLProcessor".into());
    }
    Ok(value)
}

/// The model config of `spec` for a tokenizer of `vocab_size` tokens whose added tokens start at
/// `first_id`.
fn model_config(spec: &TinySpec, vocab_size: usize, first_id: usize) -> Result<Qwen25VlConfig> {
    let id = |token: &str| {
        ADDED_TOKENS
            .iter()
            .position(|(c, _)| *c == token)
            .map_or(0, |i| first_id + i)
    };
    // M-RoPE sections in Qwen2.5-VL's proportions (16, 24, 24 of 64): a quarter to time, the rest halved.
    let half = spec.hidden_size / spec.num_attention_heads.max(1) / 2;
    let t = half / 4;
    let h = (half - t) / 2;
    let json = json!({
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "model_type": "qwen2_5_vl",
        "hidden_act": "silu",
        "vocab_size": vocab_size,
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "max_position_embeddings": spec.max_position_embeddings,
        "rms_norm_eps": 1e-6,
        "rope_theta": spec.rope_theta,
        "rope_scaling": {"type": "mrope", "mrope_section": [t, h, half - t - h]},
        "tie_word_embeddings": spec.tie_word_embeddings,
        "image_token_id": id("<|image_pad|>"),
        "video_token_id": id("<|video_pad|>"),
        "vision_start_token_id": id("<|vision_start|>"),
        "vision_end_token_id": id("<|vision_end|>"),
        "eos_token_id": id("<|im_end|>"),
        "vision_config": {
            "depth": spec.vision_depth,
            "hidden_size": spec.vision_hidden_size,
            "intermediate_size": spec.vision_intermediate_size,
            "num_heads": spec.vision_num_heads,
            "out_hidden_size": spec.hidden_size,
            "fullatt_block_indexes": [spec.vision_depth.saturating_sub(1)],
            "window_size": spec.window_size,
            "patch_size": 14,
            "temporal_patch_size": 2,
            "spatial_merge_size": 2,
            "tokens_per_second": 2,
        },
    });
    Qwen25VlConfig::from_json_str(&json.to_string())
}

/// Writes a complete tiny checkpoint folder for `spec` (see the [module docs](crate::builder)), with random
/// weights built on the default CPU backend. Returns the model config written.
///
/// # Errors
/// As [`write_tiny_checkpoint_on`].
#[cfg(any(feature = "flex", feature = "ndarray"))]
pub fn write_tiny_checkpoint(dir: impl AsRef<Path>, spec: &TinySpec) -> Result<Qwen25VlConfig> {
    write_tiny_checkpoint_on::<crate::backend::CpuBackend>(dir, spec, &Default::default())
}

/// As [`write_tiny_checkpoint`], with the random weights built on `device` of backend `B`.
///
/// # Errors
/// [`VlmError::Config`] naming the field of `spec` that makes an invalid model or processor config;
/// [`VlmError::Tokenizer`] if the tokenizer cannot be built; [`VlmError::Write`] / [`VlmError::Save`]
/// if a file cannot be written.
pub fn write_tiny_checkpoint_on<B: Backend>(
    dir: impl AsRef<Path>,
    spec: &TinySpec,
    device: &B::Device,
) -> Result<Qwen25VlConfig> {
    let dir = dir.as_ref();
    let tokenizer = tiny_tokenizer(spec)?;
    let first_id = tokenizer.get_vocab_size(false);
    let vocab_size = tokenizer.get_vocab_size(true);
    let config = model_config(spec, vocab_size, first_id)?;
    let preprocessor = preprocessor_config(spec)?;
    let model = Qwen25Vl::<B>::random(config.clone(), spec.seed, device)?;
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    let tokenizer_json = tokenizer.to_string(true).map_err(tokenizer_err)?;
    for (name, text) in [
        ("tokenizer.json", tokenizer_json),
        (
            "tokenizer_config.json",
            pretty(&tokenizer_config(first_id))?,
        ),
        ("preprocessor_config.json", pretty(&preprocessor)?),
    ] {
        let path = dir.join(name);
        write_atomic(&path, |out| {
            out.write_all(text.as_bytes())
                .and_then(|()| out.write_all(b"\n"))
                .map_err(write_err(&path))
        })?;
    }
    model.save_pretrained_with(dir, &SaveOptions::new(spec.dtype))?;
    Ok(config)
}

fn pretty(value: &Value) -> Result<String> {
    serde_json::to_string_pretty(value).map_err(|e| VlmError::Save(e.to_string()))
}
