//! The engine trait: batched continuation of a group of conversations with images.
//!
//! An engine holds `rows` conversations that start from the same prompt (a group of rollouts of one
//! query). The loop in [`crate::rollout`] asks it to sample one assistant turn for the rows still running,
//! then to append each row's observation as a user turn, and so on.
//!
//! Two implementations:
//! - [`crate::LocalEngine`] runs a `pixel-vlm` model in process on any burn backend. It is **token-exact**:
//!   it appends token ids and never re-tokenizes an earlier turn, so it can report the exact ids, loss
//!   mask, sampling log-probs and M-RoPE positions of every row ([`Engine::record`]).
//! - [`crate::HttpEngine`] talks to an OpenAI-compatible server (vLLM, SGLang, ...). The server
//!   **re-tokenizes** the whole conversation every turn from the messages it receives, so the ids it saw are
//!   not known here: it reports text and the log-probs the server returns, and no token record.

use image::RgbImage;
use pixel_vlm::sampling::SamplingParams;
use serde::{Deserialize, Serialize};

use crate::conversation::UserTurn;
use crate::error::Result;
use crate::trajectory::TokenRecord;

/// Sampling settings of one turn.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TurnSampling {
    /// Temperature, top-k, top-p.
    pub params: SamplingParams,
    /// Most tokens sampled in the turn (official: 2,048).
    pub max_new_tokens: usize,
    /// Seed of the turn's draws; each row draws from its own stream.
    pub seed: u64,
}

/// Why a sampled turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnEnd {
    /// The model wrote its end-of-turn token (`<|im_end|>`; over HTTP, any stop the server reports).
    Stop,
    /// The model wrote another stop token (`<|endoftext|>`): the turn is over, and since the template's
    /// `<|im_end|>` is not in the token record, no user turn can follow it.
    EndOfText,
    /// The turn hit `max_new_tokens` (or the engine's capacity) first.
    Length,
}

/// One sampled assistant turn of one row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generated {
    /// The text, without the end-of-turn token.
    pub text: String,
    /// Sampled token ids, the end-of-turn token included; empty when the engine does not see ids.
    pub tokens: Vec<u32>,
    /// The sampling log-probability of each sampled token (full-vocabulary `log_softmax(logits / T)`),
    /// as many as the engine reports.
    pub logprobs: Vec<f32>,
    /// Why the turn ended.
    pub end: TurnEnd,
}

/// Batched continuation of a group of conversations (see the module docs).
pub trait Engine {
    /// A user turn made ready to append: tokenized and its images preprocessed (in-process), or the
    /// message and an estimate of its length (HTTP).
    type Prepared;

    /// Whether [`Engine::record`] gives the exact tokens the model saw (in-process) or nothing (HTTP).
    fn is_token_exact(&self) -> bool;

    /// Starts a group: `rows` conversations of `system` + `question`, ready for their first turn. Any
    /// previous group is dropped.
    ///
    /// # Errors
    /// The engine's errors (a prompt over capacity, images that cannot be processed, a server down).
    fn open(&mut self, system: &str, question: &UserTurn, rows: usize) -> Result<()>;

    /// `image` as the model will see it (resized to the engine's pixel limits): what crops are cut from
    /// under the official rule. The default returns it unchanged (a server resizes on its side).
    ///
    /// # Errors
    /// An image the engine cannot resize (extreme aspect ratio).
    fn model_view(&self, image: &RgbImage) -> Result<RgbImage> {
        Ok(image.clone())
    }

    /// Rows of the open group (0 before [`Engine::open`]).
    fn rows(&self) -> usize;

    /// Tokens in `row`'s context so far (prompt, turns, observations). HTTP engines report the server's
    /// last count plus estimates for what was appended since.
    fn context_tokens(&self, row: usize) -> usize;

    /// Prepares `turn` as the next user turn of `row` without appending it.
    ///
    /// # Errors
    /// Images that cannot be processed, a template that cannot render the turn.
    fn prepare(&self, row: usize, turn: &UserTurn) -> Result<Self::Prepared>;

    /// Tokens a prepared turn adds to its row's context (exact in process, an estimate over HTTP).
    fn prepared_tokens(&self, prepared: &Self::Prepared) -> usize;

    /// Appends one prepared turn per row; `None` leaves a row as it is (finished, or not continuing).
    ///
    /// # Errors
    /// [`crate::AgentError::Request`] for a wrong number of rows; the model's errors.
    fn append(&mut self, turns: Vec<Option<Self::Prepared>>) -> Result<()>;

    /// Samples one assistant turn for every row where `active` is true (finished rows are neither
    /// sampled nor fed); `None` for the others.
    ///
    /// # Errors
    /// [`crate::AgentError::Request`] for a wrong number of rows; the model's or the server's errors.
    fn generate(
        &mut self,
        active: &[bool],
        sampling: &TurnSampling,
    ) -> Result<Vec<Option<Generated>>>;

    /// The exact token record of `row` so far (token-exact engines only).
    fn record(&self, row: usize) -> Option<TokenRecord>;
}
