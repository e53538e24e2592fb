//! The crate's error type: every fallible operation of `pixel-vlm` returns [`VlmError`].
//!
//! Variants carry the facts a user needs to fix the input (the file, the field, the counts). Both the
//! model side (config, loading, forward, generation) and the processor side add variants here.

use std::path::{Path, PathBuf};

/// Errors of `pixel-vlm`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VlmError {
    /// A file or folder could not be read.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A file or folder could not be written (saving a checkpoint).
    #[error("cannot write `{path}`: {source}")]
    Write {
        /// The path that failed.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A model cannot be saved: a dtype a checkpoint cannot hold, parameters that no longer match the config,
    /// or a tensor the device failed to read back.
    #[error("cannot save the model: {0}")]
    Save(String),
    /// A LoRA adapter folder (`adapter_config.json`, `adapter_model.safetensors`) is malformed, uses a PEFT
    /// feature this crate does not implement, or does not fit the model; `reason` lists every problem.
    #[error("LoRA adapter `{path}`: {reason}")]
    Adapter {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A JSON file (config, shard index) is not valid JSON or has the wrong structure.
    #[error("cannot parse `{path}`: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What the parser reported.
        message: String,
    },
    /// A field of `config.json` is missing or has a value the model cannot use.
    #[error("config field `{field}`: {reason}")]
    Config {
        /// The field, dotted from the root (`vision_config.window_size`).
        field: String,
        /// Why it is rejected.
        reason: String,
    },
    /// The folder is not a Qwen2.5-VL checkpoint folder (no `config.json` or no safetensors).
    #[error("`{path}` is not a checkpoint folder: {reason}")]
    NotACheckpoint {
        /// The folder.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// A safetensors file is malformed (bad header, truncated data, unsupported dtype).
    #[error("safetensors file `{path}`: {reason}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The backend cannot compute in the requested float dtype.
    #[error(
        "backend `{backend}` does not support {dtype} tensors (use F32, or a backend with half precision such as Flex or Cuda)"
    )]
    UnsupportedDtype {
        /// The dtype asked for.
        dtype: String,
        /// The backend's name.
        backend: String,
    },
    /// The checkpoint's tensors do not match the model the config describes. Checked from the safetensors
    /// headers alone, before any tensor is read or allocated.
    #[error(
        "checkpoint does not match the config: {} missing, {} unexpected, {} with a wrong shape, {} with an unsupported dtype\n{}",
        missing.len(), unexpected.len(), mismatched.len(), unsupported_dtype.len(),
        format_weight_problems(&[missing, unexpected, mismatched, unsupported_dtype])
    )]
    Weights {
        /// Tensors the model needs that no file provides (canonical names; whole missing layers are one
        /// `prefix.{a..=b}.* (n tensors)` entry).
        missing: Vec<String>,
        /// Tensors the files provide that the model does not use.
        unexpected: Vec<String>,
        /// `name: expected [..], found [..]` for tensors with a wrong shape.
        mismatched: Vec<String>,
        /// `name: DTYPE` for tensors stored in an element type other than F32, F16 or BF16.
        unsupported_dtype: Vec<String>,
    },
    /// `model.safetensors.index.json` names a shard file outside the checkpoint folder (an absolute path,
    /// a `..` component, a drive prefix or a backslash).
    #[error(
        "`{index}`: weight_map[{key:?}] names shard `{file}`, which is not a file name inside the checkpoint folder"
    )]
    ShardPath {
        /// The index file.
        index: PathBuf,
        /// The tensor whose entry names the shard.
        key: String,
        /// The shard name as written.
        file: String,
    },
    /// A KV cache longer than the model's context (`max_position_embeddings` of `config.json`).
    #[error(
        "KV cache capacity {capacity} exceeds the model's context: config field `max_position_embeddings` is {max_position_embeddings}"
    )]
    CacheBeyondContext {
        /// Tokens per row asked for.
        capacity: usize,
        /// The config's `max_position_embeddings`.
        max_position_embeddings: usize,
    },
    /// A KV cache whose keys and values would need more memory than its budget.
    #[error(
        "KV cache of {batch} rows x {capacity} tokens needs {} bytes, over its budget of {budget} bytes (the budget is configurable: `Session::with_budget`, `Qwen25Vl::new_cache_with_budget`)",
        bytes.map_or_else(|| "more than 2^64".to_string(), |b| b.to_string())
    )]
    CacheOverBudget {
        /// Rows.
        batch: usize,
        /// Tokens per row.
        capacity: usize,
        /// Bytes the cache needs (`None`: more than `u64` can count).
        bytes: Option<u64>,
        /// The budget in bytes.
        budget: u64,
    },
    /// The number of `<|image_pad|>` / `<|video_pad|>` tokens differs from what `grid_thw` implies.
    #[error(
        "{kind} placeholders: the input has {tokens} pad tokens but grid_thw gives {expected} (sum of t*h*w/{merge})"
    )]
    PlaceholderMismatch {
        /// `"image"` or `"video"`.
        kind: &'static str,
        /// Pad tokens found in the input ids.
        tokens: usize,
        /// Merged visual tokens the grids produce.
        expected: usize,
        /// Patches merged into one token (`spatial_merge_size^2`).
        merge: usize,
    },
    /// A model input has an inconsistent shape or value (the message names the input).
    #[error("invalid input `{input}`: {reason}")]
    Input {
        /// The argument that is wrong.
        input: &'static str,
        /// Why.
        reason: String,
    },
    /// A generation request cannot be served (cache full, empty prompt, ...).
    #[error("generation: {0}")]
    Generation(String),
    /// `tokenizer.json` could not be loaded, or encoding/decoding failed.
    #[error("tokenizer: {reason}")]
    Tokenizer {
        /// The file, when the failure is about loading one.
        path: Option<PathBuf>,
        /// What the `tokenizers` crate reported.
        reason: String,
    },
    /// The tokenizer lacks a token the Qwen2.5-VL processor needs.
    #[error("the tokenizer has no `{token}` token (is this a Qwen2.5-VL tokenizer?)")]
    MissingSpecialToken {
        /// The token text, e.g. `<|image_pad|>`.
        token: String,
    },
    /// No chat template in the folder (`chat_template.jinja`, `chat_template.json`, `tokenizer_config.json`).
    #[error(
        "no chat template in `{path}` (looked for chat_template.jinja, chat_template.json, tokenizer_config.json)"
    )]
    NoChatTemplate {
        /// The folder searched.
        path: PathBuf,
    },
    /// The Jinja chat template failed to compile or to render.
    #[error("chat template: {reason}")]
    ChatTemplate {
        /// minijinja's message, with the template line where it has one.
        reason: String,
    },
    /// Rendering the chat template hit one of its limits (fuel: instructions and bytes allocated; recursion
    /// depth), so a template that loops, recurses or allocates without end stops with this error.
    #[error("chat template exceeded its {limit} limit of {value}: {reason}")]
    ChatTemplateLimit {
        /// `"fuel"` or `"recursion"`.
        limit: &'static str,
        /// The limit in force.
        value: u64,
        /// minijinja's message.
        reason: String,
    },
    /// The prompt text holds a different number of image/video placeholders than images/videos given.
    #[error("the prompt has {placeholders} `{token}` placeholders but {items} {kind}s were given")]
    PlaceholderCount {
        /// `"image"` or `"video"`.
        kind: &'static str,
        /// The placeholder token.
        token: String,
        /// Placeholders found in the text.
        placeholders: usize,
        /// Images or videos passed.
        items: usize,
    },
    /// An image operation of `pixel-ops` (resize, size limits) failed.
    #[error("image preprocessing: {0}")]
    Image(#[from] pixel_ops::Error),
}

fn format_weight_problems(lists: &[&Vec<String>; 4]) -> String {
    let mut out = String::new();
    for (title, list) in ["missing", "unexpected", "wrong shape", "unsupported dtype"]
        .into_iter()
        .zip(lists)
    {
        if !list.is_empty() {
            out.push_str(&format!("  {title}: {}\n", list.join(", ")));
        }
    }
    out
}

/// Maps an I/O error on `path` to [`VlmError::Io`] (for `map_err`).
pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> VlmError + '_ {
    move |source| VlmError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a UTF-8 file, naming it on failure.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(io_err(path))
}

/// Result alias of this crate.
pub type Result<T, E = VlmError> = std::result::Result<T, E>;
