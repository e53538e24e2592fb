//! Trajectories: what a rollout did, token for token.
//!
//! A [`TokenRecord`] is built token-in/token-out while the rollout runs: the ids the model saw, in order,
//! a loss mask over exactly the tokens the model sampled (its `<|im_end|>` included), their sampling
//! log-probs, the M-RoPE positions used, and where each image's tokens are. A trainer feeds these ids,
//! positions and images back unchanged; nothing is re-rendered or re-tokenized.

use std::path::Path;

use image::RgbImage;
use pixel_ops::{EndReason, EpisodeStats};
use serde::{Deserialize, Serialize};

use crate::engine::Generated;
use crate::error::{AgentError, Result};

/// Images or a video: which pad token their span holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VisualKind {
    /// `<|image_pad|>` tokens.
    Image,
    /// `<|video_pad|>` tokens.
    Video,
}

/// The tokens of one image or video in a [`TokenRecord`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisualSpan {
    /// Image or video.
    pub kind: VisualKind,
    /// Index of its first pad token.
    pub start: usize,
    /// Number of pad tokens (`t·h·w / merge²`).
    pub len: usize,
    /// Its patch grid `[t, h, w]`.
    pub grid_thw: [usize; 3],
    /// Seconds per temporal patch (videos; 0 for images).
    pub second_per_grid_t: f32,
}

/// The exact token stream of one row.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Every token id the model saw, in order.
    pub token_ids: Vec<u32>,
    /// True exactly for the tokens the model sampled.
    pub loss_mask: Vec<bool>,
    /// The sampling log-prob of each sampled token; 0 where `loss_mask` is false.
    pub logprobs: Vec<f32>,
    /// M-RoPE positions `[3][len]` (temporal, height, width).
    pub positions: [Vec<i64>; 3],
    /// Images and videos in order of appearance.
    pub visuals: Vec<VisualSpan>,
}

impl TokenRecord {
    /// Tokens.
    pub fn len(&self) -> usize {
        self.token_ids.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.token_ids.is_empty()
    }

    /// Tokens the model sampled (the response length a trainer normalises by).
    pub fn sampled_len(&self) -> usize {
        self.loss_mask.iter().filter(|&&m| m).count()
    }
}

/// How a rollout ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutEnd {
    /// The episode ended ([`EndReason`]: an answer, too many calls or images, the token budget).
    Episode(EndReason),
    /// A turn ran out of new tokens before its end-of-turn token.
    TurnLength,
    /// The next observation would not fit in the token budget; it was not appended.
    ObservationTooLong,
    /// A turn with a call ended with `<|endoftext|>` instead of `<|im_end|>`: the call's observation cannot
    /// follow it, so the rollout ends there (a model's output never ends a rollout with an error).
    EndOfText,
}

/// One executed tool call and what came of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationRecord {
    /// The turn (0-based) that called it.
    pub turn: usize,
    /// The observation text the model received (success or the official error text).
    pub observation: String,
    /// Whether the call failed.
    pub failed: bool,
    /// Images the call added.
    pub images_added: usize,
}

/// One rollout of a group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trajectory {
    /// Its row in the group.
    pub row: usize,
    /// The assistant turns as sampled.
    pub turns: Vec<Generated>,
    /// The tool calls executed, in order.
    pub operations: Vec<OperationRecord>,
    /// The text of the last assistant turn (where the answer is).
    pub final_text: String,
    /// Why it ended.
    pub end: RolloutEnd,
    /// The episode's counters (calls, failures, whether pixel reasoning was used).
    pub stats: EpisodeStats,
    /// The exact token stream (token-exact engines).
    pub tokens: Option<TokenRecord>,
    /// Every image in the context, in order (the question's, then each observation's); not serialized.
    #[serde(skip)]
    pub images: Vec<RgbImage>,
}

impl Trajectory {
    /// Writes the trajectory as `trajectory.json` and its images as `image_{k}.png` (k from 1, the
    /// order of `target_image`) under `dir`.
    ///
    /// # Errors
    /// [`AgentError::Io`] when a file cannot be written.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let io = |path: &Path, source| AgentError::Io {
            path: path.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let json =
            serde_json::to_string_pretty(self).map_err(|e| io(dir, std::io::Error::other(e)))?;
        let path = dir.join("trajectory.json");
        std::fs::write(&path, json).map_err(|e| io(&path, e))?;
        for (k, image) in self.images.iter().enumerate() {
            let path = dir.join(format!("image_{}.png", k + 1));
            image
                .save(&path)
                .map_err(|e| io(&path, std::io::Error::other(e)))?;
        }
        Ok(())
    }
}
