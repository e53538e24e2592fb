//! M-RoPE position ids (`get_rope_index` of Qwen2.5-VL): three position streams (time, height, width) for
//! a sequence of text, image and video tokens, and the `rope_delta` that continues them while decoding.
//!
//! Text tokens advance all three streams together. The merged tokens of an image or video of grid
//! `[t, h, w]` (patches; `h' = h / merge`, `w' = w / merge`) at start position `s` get
//! `(s + time(i), s + y, s + x)`, where `time(i) = trunc(i * second_per_grid_t * tokens_per_second)` for
//! videos and `i` for images (an image has `t = 1`). Where text resumes after a visual block two rules
//! exist, and they differ for videos ([`VideoPositionRule`]):
//! - [`VideoPositionRule::Original`] (`transformers` 4.x `get_rope_index`, vLLM; what the released
//!   checkpoints were trained with): the highest position of the block + 1. The default.
//! - [`VideoPositionRule::Transformers5`] (`transformers` 5.x): `s + max(h', w')`, ignoring time.
//!
//! For images both give `s + max(h', w')`. Time indices are computed in `f32`, as torch does (the
//! processor hands `second_per_grid_ts` over as a float32 tensor), in each rule's order of operations.
//! Decoding continues at `position = cache_index + rope_delta` on all three streams.

use crate::error::{Result, VlmError};

/// Where text positions resume after a video (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum VideoPositionRule {
    /// `transformers` 4.x / vLLM: after the highest position of the video (time included).
    #[default]
    Original,
    /// `transformers` 5.x: after `start + max(h, w) / merge`, whatever the time positions reached.
    Transformers5,
}

/// What `get_rope_index` needs from the model config and tokenizer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeIndexConfig {
    /// `<|image_pad|>` id (`config.image_token_id`).
    pub image_token_id: u32,
    /// `<|video_pad|>` id (`config.video_token_id`).
    pub video_token_id: u32,
    /// Patches merged per side (`vision_config.spatial_merge_size`, 2).
    pub spatial_merge_size: usize,
    /// Temporal positions per second of video (`vision_config.tokens_per_second`, 2 for Qwen2.5-VL).
    pub tokens_per_second: f32,
    /// The rule for text after a video.
    pub rule: VideoPositionRule,
}

impl RopeIndexConfig {
    /// Qwen2.5-VL's values (merge 2, 2 tokens per second) with the given pad ids and the default rule.
    pub fn qwen2_5_vl(image_token_id: u32, video_token_id: u32) -> Self {
        RopeIndexConfig {
            image_token_id,
            video_token_id,
            spatial_merge_size: 2,
            tokens_per_second: 2.0,
            rule: VideoPositionRule::Original,
        }
    }
}

/// Position ids of one sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RopeIndex {
    /// `[3, seq]` row-major: time stream, then height, then width.
    pub positions: Vec<i64>,
    /// `max(positions) + 1 - seq`: add to a cache index to get the next position while decoding.
    pub rope_delta: i64,
}

impl RopeIndex {
    /// Sequence length.
    pub fn len(&self) -> usize {
        self.positions.len() / 3
    }

    /// Whether the sequence is empty.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// One of the three streams (0 time, 1 height, 2 width).
    ///
    /// # Panics
    /// If `axis > 2`.
    pub fn axis(&self, axis: usize) -> &[i64] {
        assert!(axis < 3, "M-RoPE has three axes, asked for {axis}");
        let n = self.len();
        &self.positions[axis * n..(axis + 1) * n]
    }

    /// The position (the same on all three streams) of the token at `cache_index` during decoding.
    pub fn decode_position(&self, cache_index: usize) -> i64 {
        cache_index as i64 + self.rope_delta
    }
}

/// A vision grid (`[t, h, w]` in patches) with the time scale of its positions.
struct Block {
    kind: &'static str,
    pad: u32,
    grid: [usize; 3],
    second_per_grid_t: Option<f32>,
}

/// Computes M-RoPE position ids for one unpadded sequence.
///
/// `image_grid_thw` / `video_grid_thw` list the grids in the order the images/videos appear;
/// `second_per_grid_ts` has one entry per video (`temporal_patch_size / fps`; empty means 1.0 each).
///
/// # Errors
/// [`VlmError::PlaceholderMismatch`] if the pad tokens do not match the grids (count, or a block shorter than
/// its grid), [`VlmError::Input`] for a grid not divisible by the merge size or a wrong number of
/// `second_per_grid_ts`.
pub fn get_rope_index(
    config: &RopeIndexConfig,
    input_ids: &[u32],
    image_grid_thw: &[[usize; 3]],
    video_grid_thw: &[[usize; 3]],
    second_per_grid_ts: &[f32],
) -> Result<RopeIndex> {
    let m = config.spatial_merge_size;
    if m == 0 {
        return Err(VlmError::Input {
            input: "spatial_merge_size",
            reason: "must be at least 1".into(),
        });
    }
    if !second_per_grid_ts.is_empty() && second_per_grid_ts.len() != video_grid_thw.len() {
        return Err(VlmError::Input {
            input: "second_per_grid_ts",
            reason: format!(
                "{} values for {} videos",
                second_per_grid_ts.len(),
                video_grid_thw.len()
            ),
        });
    }
    for (kind, grids) in [
        ("image_grid_thw", image_grid_thw),
        ("video_grid_thw", video_grid_thw),
    ] {
        if let Some(g) = grids.iter().find(|g| {
            g[0] == 0
                || g[1] == 0
                || g[2] == 0
                || !g[1].is_multiple_of(m)
                || !g[2].is_multiple_of(m)
        }) {
            return Err(VlmError::Input {
                input: if kind == "image_grid_thw" {
                    "image_grid_thw"
                } else {
                    "video_grid_thw"
                },
                reason: format!(
                    "grid {g:?}: sides must be positive multiples of the merge size {m}"
                ),
            });
        }
    }
    check_pad_counts(config, input_ids, image_grid_thw, video_grid_thw)?;

    let seq = input_ids.len();
    let mut streams = [
        Vec::with_capacity(seq),
        Vec::with_capacity(seq),
        Vec::with_capacity(seq),
    ];
    let (mut images, mut videos) = (image_grid_thw.iter(), video_grid_thw.iter().enumerate());
    // `next_text`: where the next text token goes.
    let mut next_text: i64 = 0;
    let mut i = 0;
    while i < seq {
        let id = input_ids[i];
        let block = if id == config.image_token_id {
            images.next().map(|g| Block {
                kind: "image",
                pad: id,
                grid: *g,
                second_per_grid_t: None,
            })
        } else if id == config.video_token_id {
            videos.next().map(|(v, g)| Block {
                kind: "video",
                pad: id,
                grid: *g,
                second_per_grid_t: Some(second_per_grid_ts.get(v).copied().unwrap_or(1.0)),
            })
        } else {
            for s in &mut streams {
                s.push(next_text);
            }
            next_text += 1;
            i += 1;
            continue;
        };
        // Counts were checked, so a block always exists; keep the check anyway rather than panic.
        let Some(block) = block else {
            return Err(VlmError::Input {
                input: "input_ids",
                reason: format!("unexpected pad token at {i}"),
            });
        };
        let [t, h, w] = block.grid;
        let (gh, gw) = (h / m, w / m);
        let n = t * gh * gw;
        if i + n > seq || input_ids[i..i + n].iter().any(|&x| x != block.pad) {
            let run = input_ids[i..]
                .iter()
                .take_while(|&&x| x == block.pad)
                .count();
            return Err(VlmError::PlaceholderMismatch {
                kind: block.kind,
                tokens: run,
                expected: n,
                merge: m * m,
            });
        }
        let start = next_text;
        let mut max_pos = start;
        for ti in 0..t {
            let time = time_index(config, &block, ti);
            for y in 0..gh {
                for x in 0..gw {
                    let p = [start + time, start + y as i64, start + x as i64];
                    max_pos = max_pos.max(p[0]).max(p[1]).max(p[2]);
                    for (s, v) in streams.iter_mut().zip(p) {
                        s.push(v);
                    }
                }
            }
        }
        next_text = match (config.rule, block.second_per_grid_t) {
            (VideoPositionRule::Original, _) => max_pos + 1,
            (VideoPositionRule::Transformers5, _) => start + gh.max(gw) as i64,
        };
        i += n;
    }
    let max = streams
        .iter()
        .flat_map(|s| s.iter().copied())
        .max()
        .unwrap_or(-1);
    let rope_delta = max + 1 - seq as i64;
    let [a, b, c] = streams;
    let mut positions = a;
    positions.extend(b);
    positions.extend(c);
    Ok(RopeIndex {
        positions,
        rope_delta,
    })
}

/// The time offset of temporal slice `ti`, in `f32` and truncated toward zero like torch's `.long()`.
fn time_index(config: &RopeIndexConfig, block: &Block, ti: usize) -> i64 {
    let tps = config.tokens_per_second;
    let x = match (config.rule, block.second_per_grid_t) {
        // 4.x images: `second_per_grid_t = 0`, so every slice sits at time 0.
        (VideoPositionRule::Original, None) => 0.0,
        // 4.x videos: `(arange(t) * second_per_grid_t) * tokens_per_second`.
        (VideoPositionRule::Original, Some(s)) => (ti as f32 * s) * tps,
        // 5.x images: an interval of 1.
        (VideoPositionRule::Transformers5, None) => ti as f32,
        // 5.x videos: `arange(t) * (tokens_per_second * second_per_grid_t)`.
        (VideoPositionRule::Transformers5, Some(s)) => ti as f32 * (tps * s),
    };
    x as i64
}

fn check_pad_counts(
    config: &RopeIndexConfig,
    input_ids: &[u32],
    image_grid_thw: &[[usize; 3]],
    video_grid_thw: &[[usize; 3]],
) -> Result<()> {
    let unit = config.spatial_merge_size * config.spatial_merge_size;
    for (kind, pad, grids) in [
        ("image", config.image_token_id, image_grid_thw),
        ("video", config.video_token_id, video_grid_thw),
    ] {
        let tokens = input_ids.iter().filter(|&&x| x == pad).count();
        let expected: usize = grids.iter().map(|g| g[0] * g[1] * g[2] / unit).sum();
        if tokens != expected {
            return Err(VlmError::PlaceholderMismatch {
                kind,
                tokens,
                expected,
                merge: unit,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMG: u32 = 9;
    const VID: u32 = 8;

    fn cfg(rule: VideoPositionRule) -> RopeIndexConfig {
        RopeIndexConfig {
            rule,
            ..RopeIndexConfig::qwen2_5_vl(IMG, VID)
        }
    }

    #[test]
    fn text_only_is_arange_with_zero_delta() {
        let r = get_rope_index(
            &cfg(VideoPositionRule::Original),
            &[1, 2, 3, 4],
            &[],
            &[],
            &[],
        )
        .unwrap();
        for axis in 0..3 {
            assert_eq!(r.axis(axis), &[0, 1, 2, 3]);
        }
        assert_eq!(r.rope_delta, 0);
        assert_eq!(r.decode_position(4), 4);
    }

    #[test]
    fn one_image_layout() {
        // 2 text, image grid [1, 4, 6] -> 2x3 merged tokens, 1 text.
        let mut ids = vec![1, 2];
        ids.extend([IMG; 6]);
        ids.push(3);
        let r = get_rope_index(
            &cfg(VideoPositionRule::Original),
            &ids,
            &[[1, 4, 6]],
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(r.axis(0), &[0, 1, 2, 2, 2, 2, 2, 2, 5]);
        assert_eq!(r.axis(1), &[0, 1, 2, 2, 2, 3, 3, 3, 5]);
        assert_eq!(r.axis(2), &[0, 1, 2, 3, 4, 2, 3, 4, 5]);
        assert_eq!(r.rope_delta, 6 - 9);
    }

    #[test]
    fn pad_count_mismatch_is_an_error() {
        let ids = [1, IMG, IMG, 2];
        let err = get_rope_index(
            &cfg(VideoPositionRule::Original),
            &ids,
            &[[1, 4, 6]],
            &[],
            &[],
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                VlmError::PlaceholderMismatch {
                    tokens: 2,
                    expected: 6,
                    ..
                }
            ),
            "{err}"
        );
        let err = get_rope_index(
            &cfg(VideoPositionRule::Original),
            &ids,
            &[[1, 3, 6]],
            &[],
            &[],
        )
        .unwrap_err();
        assert!(matches!(err, VlmError::Input { .. }), "{err}");
    }
}
