//! The Qwen2.5-VL tokenizer: `tokenizer.json` loaded with the `tokenizers` crate, and the special tokens the
//! processor and generation need, looked up by name (their ids differ between checkpoints and tiny tests).
//!
//! `tokenizers` reads both forms of BPE merges found in the wild: `"a b"` strings (the released Qwen
//! files) and `["a", "b"]` pairs (files written by `tokenizers` >= 0.20). Qwen adds no BOS/EOS when
//! encoding, so [`QwenTokenizer::encode`] never adds special tokens: the chat template writes them.

use std::path::Path;

use crate::error::{Result, VlmError, io_err};

/// Ids of the special tokens of Qwen2.5-VL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialTokens {
    /// `<|endoftext|>`: end of a document; also a stop token and Qwen's pad token.
    pub endoftext: u32,
    /// `<|im_start|>`: opens a chat turn.
    pub im_start: u32,
    /// `<|im_end|>`: closes a chat turn; the stop token of a chat reply.
    pub im_end: u32,
    /// `<|vision_start|>`: precedes the pads of an image or video.
    pub vision_start: u32,
    /// `<|vision_end|>`: follows them.
    pub vision_end: u32,
    /// `<|image_pad|>`: one per merged image token.
    pub image_pad: u32,
    /// `<|video_pad|>`: one per merged video token.
    pub video_pad: u32,
    /// `<tool_call>`, where the tokenizer has it (an ordinary, non-special added token in Qwen2.5).
    pub tool_call_start: Option<u32>,
    /// `</tool_call>`, where the tokenizer has it.
    pub tool_call_end: Option<u32>,
}

impl SpecialTokens {
    /// Tokens that end a generated turn: `<|im_end|>` and `<|endoftext|>`.
    pub fn stop_tokens(&self) -> [u32; 2] {
        [self.im_end, self.endoftext]
    }
}

/// A `tokenizer.json` tokenizer with Qwen2.5-VL's special tokens resolved.
#[derive(Debug, Clone)]
pub struct QwenTokenizer {
    inner: tokenizers::Tokenizer,
    special: SpecialTokens,
}

impl QwenTokenizer {
    /// Loads `tokenizer.json`.
    ///
    /// # Errors
    /// [`VlmError::Io`] if the file cannot be read, [`VlmError::Tokenizer`] if it is not a valid
    /// `tokenizer.json`, [`VlmError::MissingSpecialToken`] if a Qwen2.5-VL special token is missing.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| VlmError::Tokenizer {
            path: Some(path.to_path_buf()),
            reason: e.to_string(),
        })?;
        Self::from_tokenizer(inner)
    }

    /// Loads the `tokenizer.json` of a checkpoint folder.
    ///
    /// # Errors
    /// As [`QwenTokenizer::from_file`].
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Self::from_file(dir.as_ref().join("tokenizer.json"))
    }

    /// Parses `tokenizer.json` content.
    ///
    /// # Errors
    /// As [`QwenTokenizer::from_file`], without the I/O case.
    pub fn from_bytes(bytes: impl AsRef<[u8]>) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| VlmError::Tokenizer {
            path: None,
            reason: e.to_string(),
        })?;
        Self::from_tokenizer(inner)
    }

    /// Wraps a tokenizer built elsewhere.
    ///
    /// # Errors
    /// [`VlmError::MissingSpecialToken`] if a Qwen2.5-VL special token is missing.
    pub fn from_tokenizer(inner: tokenizers::Tokenizer) -> Result<Self> {
        let need = |token: &str| {
            inner
                .token_to_id(token)
                .ok_or_else(|| VlmError::MissingSpecialToken {
                    token: token.to_string(),
                })
        };
        let special = SpecialTokens {
            endoftext: need("<|endoftext|>")?,
            im_start: need("<|im_start|>")?,
            im_end: need("<|im_end|>")?,
            vision_start: need("<|vision_start|>")?,
            vision_end: need("<|vision_end|>")?,
            image_pad: need("<|image_pad|>")?,
            video_pad: need("<|video_pad|>")?,
            tool_call_start: inner.token_to_id("<tool_call>"),
            tool_call_end: inner.token_to_id("</tool_call>"),
        };
        Ok(QwenTokenizer { inner, special })
    }

    /// The special token ids.
    pub fn special(&self) -> &SpecialTokens {
        &self.special
    }

    /// Encodes text to ids (no special tokens added; special tokens written in the text are recognised).
    ///
    /// # Errors
    /// [`VlmError::Tokenizer`] if the tokenizer fails (it does not on valid UTF-8 with a sane
    /// `tokenizer.json`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| VlmError::Tokenizer {
                path: None,
                reason: e.to_string(),
            })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Decodes ids to text; `skip_special` drops tokens flagged special (`<|im_end|>`, pads, ...) but keeps
    /// ordinary added tokens such as `<tool_call>`, as `transformers`' `skip_special_tokens=True` does.
    ///
    /// # Errors
    /// [`VlmError::Tokenizer`] for an id outside the vocabulary.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        // Looked up, not compared with `vocab_size()`: a vocabulary may have holes (the reduced real-vocabulary
        // fixture has), and `tokenizers` silently drops an id it lacks.
        if let Some(&bad) = ids.iter().find(|&&id| self.inner.id_to_token(id).is_none()) {
            return Err(VlmError::Tokenizer {
                path: None,
                reason: format!(
                    "id {bad} is outside the vocabulary of {}",
                    self.vocab_size()
                ),
            });
        }
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| VlmError::Tokenizer {
                path: None,
                reason: e.to_string(),
            })
    }

    /// The id of a token (regular or added), if it exists.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The token text of an id, if it exists.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Vocabulary size including added tokens (`len(tokenizer)` in `transformers`).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}
