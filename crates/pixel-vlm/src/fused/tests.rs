//! The fused operations against burn's composite versions on the same backend: outputs and the gradients
//! of every input, through `Autodiff<Flex>`, and the forward on `Flex` itself.

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Distribution, Tensor, TensorData, Tolerance};

use super::*;

type AB = Autodiff<Flex>;

fn random<const D: usize>(shape: [usize; D], scale: f64, seed: u64) -> Tensor<AB, D> {
    <AB as Backend>::seed(&Default::default(), seed);
    Tensor::<AB, D>::random(
        shape,
        Distribution::Uniform(-scale, scale),
        &Default::default(),
    )
}

fn assert_close<const D: usize>(got: Tensor<Flex, D>, want: Tensor<Flex, D>, tol: f32, what: &str) {
    let (got, want) = (got.into_data(), want.into_data());
    assert_eq!(got.shape, want.shape, "{what}: shape");
    let g = got.to_vec::<f32>().unwrap();
    let w = want.to_vec::<f32>().unwrap();
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!(
            (a - b).abs() <= tol * (1.0 + b.abs()),
            "{what}: element {i}: fused {a} vs composite {b}"
        );
    }
}

/// `sum(out * weights)` for fixed random weights: every output element gets its own gradient.
fn weighted_sum<const D: usize>(out: Tensor<AB, D>, seed: u64) -> Tensor<AB, 1> {
    let w = random(out.dims(), 1.0, seed).detach();
    (out * w).sum()
}

#[test]
fn silu_mul_matches_the_composite_forward_and_backward() {
    for shape in [[3, 5, 7], [4, 80, 512]] {
        let gate = random(shape, 8.0, 1).require_grad();
        let up = random(shape, 2.0, 2).require_grad();
        let fused_out = silu_mul(gate.clone(), up.clone());
        let grads = weighted_sum(fused_out.clone(), 3).backward();
        let (fg, fu) = (gate.grad(&grads).unwrap(), up.grad(&grads).unwrap());
        let comp_out = composite_silu_mul(gate.clone(), up.clone());
        let grads = weighted_sum(comp_out.clone(), 3).backward();
        let (cg, cu) = (gate.grad(&grads).unwrap(), up.grad(&grads).unwrap());
        assert_close(fused_out.inner(), comp_out.inner(), 1e-5, "output");
        assert_close(fg, cg, 1e-5, "d gate");
        assert_close(fu, cu, 1e-5, "d up");
    }
}

#[test]
fn silu_mul_of_a_permuted_view_and_a_frozen_input() {
    let gate = random([6, 9], 4.0, 4).require_grad();
    let up = random([9, 6], 2.0, 5); // no gradient wanted
    let view = up.clone().swap_dims(0, 1); // not contiguous
    let out = silu_mul(gate.clone(), view.clone());
    let grads = weighted_sum(out.clone(), 6).backward();
    let fg = gate.grad(&grads).unwrap();
    assert!(up.grad(&grads).is_none());
    let comp = composite_silu_mul(gate.clone(), view);
    let grads = weighted_sum(comp.clone(), 6).backward();
    assert_close(out.inner(), comp.inner(), 1e-5, "output");
    assert_close(fg, gate.grad(&grads).unwrap(), 1e-5, "d gate");
}

#[test]
fn rms_norm_matches_the_composite_forward_and_backward() {
    for (shape, frozen) in [
        ([2, 3, 8], false),
        ([8, 80, 192], false),
        ([5, 4, 16], true),
    ] {
        let x = random(shape, 3.0, 7).require_grad();
        let gamma = random([shape[2]], 1.5, 8);
        let gamma = if frozen { gamma } else { gamma.require_grad() };
        let out = rms_norm(x.clone(), gamma.clone(), 1e-6);
        let grads = weighted_sum(out.clone(), 9).backward();
        let (fx, fw) = (x.grad(&grads).unwrap(), gamma.grad(&grads));
        let comp = composite_rms_norm(x.clone(), gamma.clone(), 1e-6);
        let grads = weighted_sum(comp.clone(), 9).backward();
        let (cx, cw) = (x.grad(&grads).unwrap(), gamma.grad(&grads));
        assert_close(out.inner(), comp.inner(), 1e-5, "output");
        assert_close(fx, cx, 1e-4, "d x");
        match (fw, cw) {
            (Some(f), Some(c)) => assert_close(f, c, 1e-4, "d gamma"),
            (None, None) => assert!(frozen),
            _ => panic!("d gamma present in one version only"),
        }
    }
}

#[test]
fn softmax_matches_the_composite_forward_and_backward_with_masked_scores() {
    let device = Default::default();
    let scores = random([2, 3, 10, 10], 6.0, 10);
    // Causal mask as the model adds it: the dtype's minimum above the diagonal.
    let mask: Vec<f32> = (0..10)
        .flat_map(|i| (0..10).map(move |j| if j > i { f32::MIN } else { 0.0 }))
        .collect();
    let mask = Tensor::<AB, 4>::from_data(TensorData::new(mask, [1, 1, 10, 10]), &device);
    let leaf = scores.require_grad();
    let out = softmax_dim(leaf.clone() + mask.clone(), 3);
    let grads = weighted_sum(out.clone(), 11).backward();
    let fx = leaf.grad(&grads).unwrap();
    // A backward frees the graph it walked: the composite gets its own.
    let comp = softmax(leaf.clone() + mask, 3);
    let grads = weighted_sum(comp.clone(), 11).backward();
    assert_close(out.inner(), comp.inner(), 1e-6, "output");
    assert_close(fx, leaf.grad(&grads).unwrap(), 1e-5, "d scores");
}

#[test]
fn softmax_over_another_dimension_is_the_composite() {
    let x = random([4, 5], 3.0, 12);
    let got = softmax_dim(x.clone(), 0).inner();
    let want = softmax(x, 0).inner();
    got.into_data()
        .assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(0.0));
}

#[test]
fn target_logprobs_match_the_composite_with_and_without_temperature() {
    for temperature in [None, Some(vec![0.7f32, 1.0, 1.3, 2.0, 0.9, 1.1])] {
        let logits = random([6, 300], 10.0, 13).require_grad();
        let targets = [0u32, 299, 17, 150, 3, 42];
        let t = temperature.as_deref();
        let out = target_logprobs(logits.clone(), &targets, t);
        let grads = weighted_sum(out.clone(), 14).backward();
        let fz = logits.grad(&grads).unwrap();
        let comp = composite_target_logprobs(logits.clone(), &targets, t);
        let grads = weighted_sum(comp.clone(), 14).backward();
        assert_close(out.inner(), comp.inner(), 1e-5, "log-probs");
        assert_close(fz, logits.grad(&grads).unwrap(), 1e-5, "d logits");
    }
}

#[test]
fn the_inner_backend_runs_the_fused_forward() {
    let x = random([3, 40, 64], 3.0, 15).inner();
    let gamma = random([64], 1.0, 16).inner();
    assert_close(
        rms_norm(x.clone(), gamma.clone(), 1e-6),
        composite_rms_norm(x.clone(), gamma, 1e-6),
        1e-5,
        "rms_norm",
    );
    assert_close(
        silu_mul(x.clone(), x.clone()),
        composite_silu_mul(x.clone(), x.clone()),
        1e-5,
        "silu_mul",
    );
    assert_close(softmax_dim(x.clone(), 2), softmax(x, 2), 1e-6, "softmax");
}

#[test]
fn permute_matches_burn_forward_and_backward() {
    let x = random([2, 5, 3, 4], 1.0, 17).require_grad();
    let out = permute(x.clone(), [0, 2, 3, 1]);
    assert_eq!(out.dims(), [2, 3, 4, 5]);
    // A reshape right after (what the attention does) needs no further copy.
    let grads = weighted_sum(out.clone().reshape([6, 20]), 18).backward();
    let fx = x.grad(&grads).unwrap();
    let comp = x.clone().permute([0, 2, 3, 1]);
    let grads = weighted_sum(comp.clone().reshape([6, 20]), 18).backward();
    assert_close(out.inner(), comp.inner(), 0.0, "output");
    assert_close(fx, x.grad(&grads).unwrap(), 0.0, "d x");
}

#[test]
#[should_panic(expected = "not a permutation")]
fn permute_rejects_a_repeated_axis() {
    let _ = permute(random([2, 3], 1.0, 19), [0, 0]);
}

#[test]
fn scaled_masked_softmax_matches_the_composite_with_a_mask_broadcast_over_heads() {
    let device = Default::default();
    // [batch 2, kv heads 2, groups 3, queries 5, keys 7]; mask [2, 1, 1, 5, 7]: causal + padding per row.
    let leaf = random([2, 2, 3, 5, 7], 4.0, 20).require_grad();
    let mask: Vec<f32> = (0..2)
        .flat_map(|b| {
            (0..5).flat_map(move |i| {
                (0..7).map(move |j| {
                    if j > i + 2 || (b == 1 && j == 0) {
                        f32::MIN
                    } else {
                        0.0
                    }
                })
            })
        })
        .collect();
    let mask = Tensor::<AB, 5>::from_data(TensorData::new(mask, [2, 1, 1, 5, 7]), &device);
    let out = softmax_scaled_masked(leaf.clone(), 0.3, Some(mask.clone()));
    let grads = weighted_sum(out.clone(), 21).backward();
    let fx = leaf.grad(&grads).unwrap();
    let comp = softmax(leaf.clone() * 0.3 + mask, 4);
    let grads = weighted_sum(comp.clone(), 21).backward();
    assert_close(out.inner(), comp.inner(), 1e-6, "output");
    assert_close(fx, leaf.grad(&grads).unwrap(), 1e-5, "d scores");
    // Without a mask: the scale alone.
    let out = softmax_scaled_masked(leaf.clone(), 0.3, None).inner();
    assert_close(out, softmax(leaf.inner() * 0.3, 4), 1e-6, "unmasked");
}

#[test]
fn fused_matmul_matches_burn_forward_and_backward_on_contiguous_and_transposed_operands() {
    // Small batches (one thread), many matrices (spread over the threads), one large matrix (split by gemm);
    // the right operand is a transposed view in each, as the attention's keys are.
    for (lead, m, k, n) in [
        (vec![2, 3], 5, 7, 4),
        (vec![8, 2], 96, 64, 96),
        (vec![1], 256, 200, 300),
    ] {
        let dims = |a: usize, b: usize| -> [usize; 4] {
            let mut d = [1; 4];
            d[4 - lead.len() - 2..4 - 2].copy_from_slice(&lead);
            d[2] = a;
            d[3] = b;
            d
        };
        let a = random(dims(m, k), 1.0, 30).require_grad();
        let b_t = random(dims(n, k), 1.0, 31).require_grad();
        let Ok(fused) = try_matmul(a.clone(), b_t.clone().swap_dims(2, 3)) else {
            panic!("the fused product applies to f32 views with the same leading dimensions");
        };
        let grads = weighted_sum(fused.clone(), 32).backward();
        let (fa, fb) = (a.grad(&grads).unwrap(), b_t.grad(&grads).unwrap());
        // A fresh view: the first backward consumed the first one's node.
        let burn = a.clone().matmul(b_t.clone().swap_dims(2, 3));
        let grads = weighted_sum(burn.clone(), 32).backward();
        let what = format!("{m}x{k}x{n}");
        assert_close(fused.inner(), burn.inner(), 1e-5, &format!("{what} output"));
        assert_close(fa, a.grad(&grads).unwrap(), 1e-5, &format!("{what} d a"));
        assert_close(fb, b_t.grad(&grads).unwrap(), 1e-5, &format!("{what} d b"));
    }
}

#[test]
fn fused_linear_matches_burn_linear_with_and_without_bias() {
    use burn::module::Param;
    use burn::nn::LinearConfig;
    for bias in [true, false] {
        let mut layer = LinearConfig::new(24, 40)
            .with_bias(bias)
            .init::<AB>(&Default::default());
        // Nonzero bias values, so that a bias left out shows.
        if layer.bias.is_some() {
            layer.bias = Some(Param::from_tensor(random([40], 1.0, 33)));
        }
        let x = random([3, 10, 24], 2.0, 34).require_grad();
        let Ok(fused) = try_linear(&layer, x.clone()) else {
            panic!("the fused linear applies to f32 on Autodiff<Flex>");
        };
        let grads = weighted_sum(fused.clone(), 35).backward();
        let fx = x.grad(&grads).unwrap();
        let fw = layer.weight.grad(&grads).unwrap();
        let fb = layer.bias.as_ref().map(|b| b.grad(&grads).unwrap());
        let burn = layer.forward(x.clone());
        let grads = weighted_sum(burn.clone(), 35).backward();
        assert_close(fused.inner(), burn.inner(), 1e-5, "output");
        assert_close(fx, x.grad(&grads).unwrap(), 1e-5, "d x");
        assert_close(fw, layer.weight.grad(&grads).unwrap(), 1e-5, "d weight");
        if let (Some(fb), Some(b)) = (fb, &layer.bias) {
            assert_close(fb, b.grad(&grads).unwrap(), 1e-5, "d bias");
        }
    }
}

#[test]
fn fused_products_run_on_the_inner_backend_and_decline_broadcast_batches() {
    let a = random([2, 6, 5], 1.0, 36).inner();
    let b = random([2, 5, 3], 1.0, 37).inner();
    let Ok(out) = try_matmul(a.clone(), b.clone()) else {
        panic!("the fused product applies on Flex");
    };
    assert_close(out, a.clone().matmul(b), 1e-6, "Flex output");
    // A batch broadcast over the right operand is burn's to compute.
    let one = random([1, 5, 3], 1.0, 38).inner();
    assert!(try_matmul(a.clone(), one.clone()).is_err());
    assert_close(
        crate::backend::matmul(a.clone(), one.clone()),
        a.matmul(one),
        0.0,
        "broadcast product through the fallback",
    );
}
