//! SiLU-gated products: `silu(gate) * up` and its gradients.

use super::{for_row_blocks, for_row_blocks2, sigmoid};

/// `silu(gate) * up`, element-wise.
pub(crate) fn silu_mul(gate: &[f32], up: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0f32; gate.len()];
    // Element-wise: any block length works; 4,096 keeps blocks cache-sized.
    for_row_blocks(&mut out, 4096, |start, o| {
        let start = start * 4096;
        let g = &gate[start..start + o.len()];
        let u = &up[start..start + o.len()];
        for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
            *o = g * sigmoid(g) * u;
        }
    });
    out
}

/// Gradients of `silu(gate) * up` given the output's gradient: `(d gate, d up)`, either skipped when not
/// wanted.
pub(crate) fn silu_mul_backward(
    gate: &[f32],
    up: &[f32],
    grad: &[f32],
    want: (bool, bool),
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let len = gate.len();
    let mut dg = vec![0.0f32; if want.0 { len } else { 0 }];
    let mut du = vec![0.0f32; if want.1 { len } else { 0 }];
    match want {
        (true, true) => for_row_blocks2(&mut dg, &mut du, 4096, |start, dg, du| {
            let start = start * 4096;
            let range = start..start + dg.len();
            let (g, u, gr) = (&gate[range.clone()], &up[range.clone()], &grad[range]);
            for i in 0..dg.len() {
                let s = sigmoid(g[i]);
                let silu = g[i] * s;
                dg[i] = gr[i] * u[i] * (s + silu * (1.0 - s));
                du[i] = gr[i] * silu;
            }
        }),
        (true, false) => for_row_blocks(&mut dg, 4096, |start, dg| {
            let start = start * 4096;
            let range = start..start + dg.len();
            let (g, u, gr) = (&gate[range.clone()], &up[range.clone()], &grad[range]);
            for i in 0..dg.len() {
                let s = sigmoid(g[i]);
                dg[i] = gr[i] * u[i] * (s + g[i] * s * (1.0 - s));
            }
        }),
        (false, true) => for_row_blocks(&mut du, 4096, |start, du| {
            let start = start * 4096;
            let range = start..start + du.len();
            let (g, gr) = (&gate[range.clone()], &grad[range]);
            for i in 0..du.len() {
                du[i] = gr[i] * (g[i] * sigmoid(g[i]));
            }
        }),
        (false, false) => {}
    }
    (want.0.then_some(dg), want.1.then_some(du))
}
