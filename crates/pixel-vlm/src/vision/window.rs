//! Host-side index arithmetic of the vision tower: window order, attention chunks, 2-D rotary angles.
//!
//! Follows transformers' `get_vision_window_index`, `get_vision_position_ids` and the cumulative sequence
//! lengths of `Qwen2_5_VisionTransformerPretrainedModel.forward`. Everything here is exact integer work done
//! once per forward on the CPU, so the model code stays backend-generic.

/// Window order of the merged tokens and the window boundaries in patches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowLayout {
    /// For each merged token in window order, its index in natural (raster, image after image) order.
    pub window_index: Vec<usize>,
    /// Cumulative window lengths in patches, starting at 0, without repeats (empty windows removed).
    pub cu_window_seqlens: Vec<usize>,
}

/// Computes the window order for `grid_thw` (patches per image/video: `[t, h, w]`).
///
/// `window_merged` is the window side in merged tokens: `window_size / spatial_merge_size / patch_size`.
pub fn window_layout(grid_thw: &[[usize; 3]], merge: usize, window_merged: usize) -> WindowLayout {
    let unit = merge * merge;
    let mut window_index = Vec::new();
    let mut cu = vec![0usize];
    let mut offset = 0usize;
    for &[t, h, w] in grid_thw {
        let (lh, lw) = (h / merge, w / merge);
        let pad_h = window_merged - lh % window_merged;
        let pad_w = window_merged - lw % window_merged;
        let (nwh, nww) = ((lh + pad_h) / window_merged, (lw + pad_w) / window_merged);
        for ti in 0..t {
            for wy in 0..nwh {
                for wx in 0..nww {
                    let mut count = 0;
                    for y in wy * window_merged..(wy + 1) * window_merged {
                        for x in wx * window_merged..(wx + 1) * window_merged {
                            if y < lh && x < lw {
                                window_index.push(offset + ti * lh * lw + y * lw + x);
                                count += 1;
                            }
                        }
                    }
                    let last = *cu.last().unwrap_or(&0);
                    // `unique_consecutive` in the reference drops the boundaries of empty windows.
                    if count > 0 {
                        cu.push(last + count * unit);
                    }
                }
            }
        }
        offset += t * lh * lw;
    }
    WindowLayout {
        window_index,
        cu_window_seqlens: cu,
    }
}

/// Cumulative lengths for full attention: one chunk per frame (`h * w` patches), `t` per grid.
pub fn full_attention_seqlens(grid_thw: &[[usize; 3]]) -> Vec<usize> {
    let mut cu = vec![0usize];
    for &[t, h, w] in grid_thw {
        for _ in 0..t {
            let last = *cu.last().unwrap_or(&0);
            cu.push(last + h * w);
        }
    }
    cu
}

/// `(h, w)` rotary position of each patch in natural order (block-major over `merge x merge` blocks,
/// repeated for every frame).
pub fn patch_positions(grid_thw: &[[usize; 3]], merge: usize) -> Vec<[usize; 2]> {
    let mut out = Vec::new();
    for &[t, h, w] in grid_thw {
        let mut frame = Vec::with_capacity(h * w);
        for by in 0..h / merge {
            for bx in 0..w / merge {
                for dy in 0..merge {
                    for dx in 0..merge {
                        frame.push([by * merge + dy, bx * merge + dx]);
                    }
                }
            }
        }
        for _ in 0..t {
            out.extend_from_slice(&frame);
        }
    }
    out
}

/// Cosine and sine tables `[n, head_dim]` (row-major) of the vision 2-D RoPE for patches at `positions`.
///
/// Layout as transformers: `head_dim / 4` frequencies `theta^(-2i / (head_dim/2))` applied to the row
/// index, then the same to the column index, and that half repeated (`rotate_half` convention).
pub fn vision_rope_tables(
    positions: &[[usize; 2]],
    head_dim: usize,
    theta: f64,
) -> (Vec<f32>, Vec<f32>) {
    let spatial = head_dim / 2;
    let inv_freq: Vec<f32> = (0..spatial / 2)
        .map(|i| 1.0f32 / (theta as f32).powf((2 * i) as f32 / spatial as f32))
        .collect();
    let mut cos = Vec::with_capacity(positions.len() * head_dim);
    let mut sin = Vec::with_capacity(positions.len() * head_dim);
    for &[y, x] in positions {
        let mut angles = Vec::with_capacity(head_dim);
        for &f in &inv_freq {
            angles.push(y as f32 * f);
        }
        for &f in &inv_freq {
            angles.push(x as f32 * f);
        }
        for _ in 0..2 {
            for &a in &angles[..spatial] {
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
    }
    (cos, sin)
}

/// Runs of consecutive chunks of equal length: `(start, chunk_len, n_chunks)`, covering `cu` in order.
pub fn equal_length_runs(cu: &[usize]) -> Vec<(usize, usize, usize)> {
    let mut runs: Vec<(usize, usize, usize)> = Vec::new();
    for pair in cu.windows(2) {
        let (start, len) = (pair[0], pair[1] - pair[0]);
        if len == 0 {
            continue;
        }
        match runs.last_mut() {
            Some((_, l, n)) if *l == len => *n += 1,
            _ => runs.push((start, len, 1)),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_layout_of_a_small_grid() {
        // 6x10 patches -> 3x5 merged tokens; windows of 2x2 merged tokens: 2x3 windows, edges partial.
        let layout = window_layout(&[[1, 6, 10]], 2, 2);
        assert_eq!(&layout.window_index[..4], &[0, 1, 5, 6]);
        assert_eq!(&layout.window_index[4..8], &[2, 3, 7, 8]);
        assert_eq!(&layout.window_index[8..10], &[4, 9]);
        assert_eq!(layout.cu_window_seqlens, vec![0, 16, 32, 40, 48, 56, 60]);
        let mut sorted = layout.window_index.clone();
        sorted.sort();
        assert_eq!(sorted, (0..15).collect::<Vec<_>>());
    }

    #[test]
    fn exact_multiple_has_no_empty_windows() {
        // 8x8 patches -> 4x4 merged; windows 2x2 -> pad of a whole empty window row/column in the reference.
        let layout = window_layout(&[[2, 8, 8]], 2, 2);
        assert_eq!(layout.cu_window_seqlens.len(), 1 + 2 * 4);
        assert!(
            layout
                .cu_window_seqlens
                .windows(2)
                .all(|w| w[1] - w[0] == 16)
        );
    }

    #[test]
    fn full_attention_is_per_frame() {
        assert_eq!(
            full_attention_seqlens(&[[1, 4, 6], [2, 2, 2]]),
            vec![0, 24, 28, 32]
        );
    }

    #[test]
    fn positions_are_block_major() {
        let p = patch_positions(&[[1, 2, 4]], 2);
        assert_eq!(
            p,
            vec![
                [0, 0],
                [0, 1],
                [1, 0],
                [1, 1],
                [0, 2],
                [0, 3],
                [1, 2],
                [1, 3]
            ]
        );
    }

    #[test]
    fn runs_group_equal_chunks() {
        assert_eq!(
            equal_length_runs(&[0, 16, 32, 40, 48, 48, 56]),
            vec![(0, 16, 2), (32, 8, 3)]
        );
    }
}
