//! Multimodal RoPE (M-RoPE) tables of the text decoder.
//!
//! Each token has three position ids (temporal, height, width). The `head_dim / 2` rotary frequencies are
//! split by `mrope_section` (e.g. `[16, 24, 24]`): the first section rotates by the temporal id, the
//! second by the height id, the third by the width id; the half is then repeated (`rotate_half`
//! convention), as transformers' `Qwen2_5_VLRotaryEmbedding` + `apply_multimodal_rotary_pos_emb`.

/// Cosine and sine tables `[batch, seq, head_dim]` (row-major) for M-RoPE positions laid out
/// `[3, batch, seq]` (row-major) in `positions`.
pub fn mrope_tables(
    positions: &[i64],
    batch: usize,
    seq: usize,
    head_dim: usize,
    theta: f64,
    section: [usize; 3],
) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| 1.0f32 / (theta as f32).powf((2 * i) as f32 / head_dim as f32))
        .collect();
    let axis_of: Vec<usize> = (0..half)
        .map(|j| {
            if j < section[0] {
                0
            } else if j < section[0] + section[1] {
                1
            } else {
                2
            }
        })
        .collect();
    let plane = batch * seq;
    let mut cos = vec![0.0f32; plane * head_dim];
    let mut sin = vec![0.0f32; plane * head_dim];
    for token in 0..plane {
        let row = token * head_dim;
        for j in 0..half {
            let pos = positions[axis_of[j] * plane + token] as f32;
            let angle = pos * inv_freq[j];
            let (s, c) = angle.sin_cos();
            cos[row + j] = c;
            cos[row + half + j] = c;
            sin[row + j] = s;
            sin[row + half + j] = s;
        }
    }
    (cos, sin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_pick_their_axis() {
        // head_dim 8 -> 4 frequencies split [1, 1, 2]; one token with positions t=1, h=2, w=3.
        let (cos, _) = mrope_tables(&[1, 2, 3], 1, 1, 8, 10_000.0, [1, 1, 2]);
        let inv = |i: usize| 1.0f32 / 10_000f32.powf((2 * i) as f32 / 8.0);
        let expected = [1.0 * inv(0), 2.0 * inv(1), 3.0 * inv(2), 3.0 * inv(3)].map(f32::cos);
        assert_eq!(&cos[..4], &expected);
        assert_eq!(&cos[4..], &expected);
    }
}
