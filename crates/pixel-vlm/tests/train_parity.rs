//! The training surface against transformers' autograd (`scripts/gen_vlm_grad_fixtures.py` wrote
//! `tiny_flat/expected_grad.safetensors`): target log-probs of a right-padded batch with an image, and the
//! gradients of their masked sum with respect to a vision block, the merger, a text attention projection,
//! an MLP projection, the LM head and the token embedding.

mod common;

use burn::backend::Autodiff;
use burn::module::Param;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use common::{B, Fixture, max_abs_diff, model_dir};
use pixel_vlm::train::Targets;
use pixel_vlm::{ForwardInput, Qwen25Vl};

type AB = Autodiff<B>;

/// Inputs of the fixture as owned buffers.
struct Batch {
    ids: Vec<u32>,
    positions: Vec<i64>,
    valid: Vec<bool>,
    targets: Vec<u32>,
    temperature: Vec<f32>,
    score: Vec<f32>,
    visual: pixel_vlm::VisualInput,
    batch: usize,
    seq: usize,
}

fn batch(f: &Fixture) -> Batch {
    let (ids, shape) = f.i64s("input_ids");
    let to_u32 = |v: Vec<i64>| v.into_iter().map(|i| i as u32).collect::<Vec<u32>>();
    Batch {
        ids: to_u32(ids),
        positions: f.i64s("position_ids").0,
        valid: f.i64s("attention_mask").0.iter().map(|&m| m == 1).collect(),
        targets: to_u32(f.i64s("targets").0),
        temperature: f.f32s("temperature").0,
        score: f.i64s("score_mask").0.iter().map(|&m| m as f32).collect(),
        visual: f.visual("image_grid_thw").expect("the case has an image"),
        batch: shape[0],
        seq: shape[1],
    }
}

fn input(b: &Batch) -> ForwardInput<'_> {
    ForwardInput {
        input_ids: &b.ids,
        batch: b.batch,
        positions: &b.positions,
        valid: Some(&b.valid),
        generated: None,
        images: Some(&b.visual),
        videos: None,
    }
}

fn values<Bk: burn::tensor::backend::Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().expect("f32 data")
}

/// The gradient of a parameter in the checkpoint's `[out, in]` layout (burn stores linear weights
/// `[in, out]`).
fn grad_linear(
    weight: &Param<Tensor<AB, 2>>,
    grads: &<AB as AutodiffBackend>::Gradients,
) -> Vec<f32> {
    values(weight.grad(grads).expect("a gradient").transpose())
}

fn assert_close(name: &str, ours: &[f32], theirs: &[f32]) {
    assert_eq!(ours.len(), theirs.len(), "{name}: sizes");
    let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = max_abs_diff(ours, theirs);
    assert!(
        diff <= 1e-4 * scale.max(1.0),
        "{name}: max |ours - torch| = {diff} (largest |torch| {scale})"
    );
}

#[test]
fn target_logprobs_match_transformers_on_a_padded_batch_with_an_image() {
    let f = Fixture::load("tiny_flat", "grad");
    let b = batch(&f);
    let model = Qwen25Vl::<B>::from_pretrained(model_dir("tiny_flat"), &Default::default())
        .expect("tiny model");
    let hidden = model.forward_train(&input(&b)).expect("forward");
    let targets = Targets {
        temperature: Some(&b.temperature),
        chunk: 7, // several chunks, the last one short
        ..Targets::new(&b.targets)
    };
    let ours = values(
        model
            .target_logprobs(hidden, &targets)
            .expect("scores")
            .logprobs,
    );
    let (theirs, _) = f.f32s("logprobs");
    // Every real position (padding queries differ by construction and are never trained).
    let real: Vec<usize> = (0..ours.len()).filter(|&i| b.valid[i]).collect();
    let diff = real
        .iter()
        .map(|&i| (ours[i] - theirs[i]).abs())
        .fold(0f32, f32::max);
    eprintln!("PARITY train logprobs: max abs diff {diff:e}");
    for &i in &real {
        assert!(
            (ours[i] - theirs[i]).abs() < 1e-4,
            "position {i}: ours {} torch {}",
            ours[i],
            theirs[i]
        );
    }
    assert!(real.len() > b.seq);
}

#[test]
fn gradients_of_target_logprobs_match_transformers_autograd() {
    let f = Fixture::load("tiny_flat", "grad");
    let b = batch(&f);
    let device = Default::default();
    let model =
        Qwen25Vl::<AB>::from_pretrained(model_dir("tiny_flat"), &device).expect("tiny model");
    let hidden = model.forward_train(&input(&b)).expect("forward");
    let targets = Targets {
        temperature: Some(&b.temperature),
        ..Targets::new(&b.targets)
    };
    let scores = model
        .target_logprobs(hidden, &targets)
        .expect("scores")
        .logprobs;
    let mask = Tensor::<AB, 2>::from_data(
        burn::tensor::TensorData::new(b.score.clone(), [b.batch, b.seq]),
        &device,
    );
    let loss = (scores * mask).sum();
    let (want_loss, _) = f.f32s("loss");
    let got_loss = values(loss.clone())[0];
    eprintln!(
        "PARITY train loss: ours {got_loss}, torch {}, diff {:e}",
        want_loss[0],
        (got_loss - want_loss[0]).abs()
    );
    assert!(
        (got_loss - want_loss[0]).abs() < 1e-3,
        "loss {got_loss} vs {}",
        want_loss[0]
    );
    let grads = loss.backward();

    let m = &model.model;
    let cases: Vec<(&str, Vec<f32>)> = vec![
        (
            "visual.blocks.0.attn.qkv.weight",
            grad_linear(&m.visual.blocks[0].attn.qkv.weight, &grads),
        ),
        (
            "visual.merger.mlp.0.weight",
            grad_linear(&m.visual.merger.fc1.weight, &grads),
        ),
        (
            "model.layers.1.self_attn.q_proj.weight",
            grad_linear(&m.text.layers[1].self_attn.q_proj.weight, &grads),
        ),
        (
            "model.layers.0.mlp.down_proj.weight",
            grad_linear(&m.text.layers[0].mlp.down_proj.weight, &grads),
        ),
        (
            "lm_head.weight",
            grad_linear(&m.lm_head.as_ref().expect("untied head").weight, &grads),
        ),
        (
            "model.embed_tokens.weight",
            values(
                m.text
                    .embed_tokens
                    .weight
                    .grad(&grads)
                    .expect("embedding gradient"),
            ),
        ),
    ];
    for (name, ours) in &cases {
        let (theirs, _) = f.f32s(&format!("grad.{name}"));
        let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
        eprintln!(
            "PARITY train grad {name}: max abs diff {:e} (largest |torch| {scale:e})",
            max_abs_diff(ours, &theirs)
        );
    }
    for (name, ours) in cases {
        let (theirs, _) = f.f32s(&format!("grad.{name}"));
        assert_close(name, &ours, &theirs);
    }
}

#[test]
fn a_frozen_vision_tower_gets_no_gradient_and_the_text_still_does() {
    let f = Fixture::load("tiny_flat", "grad");
    let b = batch(&f);
    let model = Qwen25Vl::<AB>::from_pretrained(model_dir("tiny_flat"), &Default::default())
        .expect("tiny model")
        .with_frozen_vision();
    let hidden = model.forward_train(&input(&b)).expect("forward");
    let grads = model
        .target_logprobs(hidden, &Targets::new(&b.targets))
        .expect("scores")
        .logprobs
        .sum()
        .backward();
    let m = &model.model;
    assert!(m.visual.blocks[0].attn.qkv.weight.grad(&grads).is_none());
    assert!(m.visual.merger.fc1.weight.grad(&grads).is_none());
    assert!(
        m.text.layers[0]
            .self_attn
            .q_proj
            .weight
            .grad(&grads)
            .is_some()
    );
}

#[test]
fn the_training_forward_equals_the_cached_forward_of_each_row() {
    let f = Fixture::load("tiny_flat", "grad");
    let b = batch(&f);
    let model = Qwen25Vl::<B>::from_pretrained(model_dir("tiny_flat"), &Default::default())
        .expect("tiny model");
    let full = values(model.logits(model.forward_train(&input(&b)).expect("forward")));
    let vocab = model.config.text.vocab_size;
    for row in 0..b.batch {
        let n = b.valid[row * b.seq..(row + 1) * b.seq]
            .iter()
            .filter(|&&v| v)
            .count();
        let ids = &b.ids[row * b.seq..row * b.seq + n];
        let positions: Vec<i64> = (0..3)
            .flat_map(|axis| {
                let start = (axis * b.batch + row) * b.seq;
                b.positions[start..start + n].to_vec()
            })
            .collect();
        let has_image = ids.contains(&model.config.image_token_id);
        let one = ForwardInput {
            input_ids: ids,
            batch: 1,
            positions: &positions,
            valid: None,
            generated: None,
            images: has_image.then_some(&b.visual),
            videos: None,
        };
        let mut cache = model.new_cache(1, n).expect("cache");
        let cached = values(model.forward(&one, &mut cache).expect("cached forward"));
        let ours = &full[row * b.seq * vocab..(row * b.seq + n) * vocab];
        let diff = max_abs_diff(ours, &cached);
        eprintln!("PARITY train forward vs cached forward, row {row}: max abs diff {diff:e}");
        assert!(diff < 1e-4, "row {row}: {diff}");
    }
}

/// The fixture's batch with the same `n` text tokens put before both rows (positions shifted by `n` on
/// all three axes: what `get_rope_index` gives for a longer text prefix), and its targets (each row's next
/// token; 0 at the end and on padding).
fn with_prefix(b: &Batch, n: usize) -> Batch {
    let prefix: Vec<u32> = (0..n as u32).map(|i| 100 + i % 50).collect();
    let seq = b.seq + n;
    let mut out = Batch {
        ids: Vec::new(),
        positions: Vec::new(),
        valid: Vec::new(),
        targets: Vec::new(),
        temperature: vec![1.0; b.batch * seq],
        score: Vec::new(),
        visual: b.visual.clone(),
        batch: b.batch,
        seq,
    };
    for row in 0..b.batch {
        let ids = &b.ids[row * b.seq..(row + 1) * b.seq];
        let valid = &b.valid[row * b.seq..(row + 1) * b.seq];
        out.ids.extend(prefix.iter().chain(ids));
        out.valid
            .extend(std::iter::repeat_n(true, n).chain(valid.iter().copied()));
    }
    for axis in 0..3 {
        for row in 0..b.batch {
            let start = (axis * b.batch + row) * b.seq;
            out.positions.extend(0..n as i64);
            out.positions.extend(
                b.positions[start..start + b.seq]
                    .iter()
                    .map(|p| p + n as i64),
            );
        }
    }
    for row in 0..b.batch {
        for i in 0..seq {
            let next = i + 1 < seq && out.valid[row * seq + i + 1];
            out.targets
                .push(if next { out.ids[row * seq + i + 1] } else { 0 });
            out.score.push(if next { 1.0 } else { 0.0 });
        }
    }
    out
}

#[test]
fn a_shared_prefix_computed_once_gives_the_same_hidden_states_and_gradients() {
    let f = Fixture::load("tiny_flat", "grad");
    let b = with_prefix(&batch(&f), 20);
    let model = Qwen25Vl::<AB>::from_pretrained(model_dir("tiny_flat"), &Default::default())
        .expect("tiny model");
    // Both fixture rows start with `<|im_start|>`: 21 shared tokens.
    assert_eq!(model.shared_prefix(&input(&b), &b.valid), 21);
    let weights = Tensor::<AB, 2>::from_data(
        burn::tensor::TensorData::new(b.score.clone(), [b.batch, b.seq]),
        &Default::default(),
    );
    let run = |shared: bool| {
        let hidden = if shared {
            model.forward_train(&input(&b)).expect("forward")
        } else {
            let embeds = model.embed(&input(&b)).expect("embed");
            model
                .model
                .text
                .forward_full(embeds, &b.positions, &b.valid)
        };
        let scores = model
            .target_logprobs(hidden.clone(), &Targets::new(&b.targets))
            .expect("scores");
        let grads = (scores.logprobs * weights.clone()).sum().backward();
        let m = &model.model;
        let last = m.text.layers.len() - 1;
        let grads = [
            (
                "q_proj",
                grad_linear(&m.text.layers[0].self_attn.q_proj.weight, &grads),
            ),
            (
                "k_proj",
                grad_linear(&m.text.layers[last].self_attn.k_proj.weight, &grads),
            ),
            (
                "down_proj",
                grad_linear(&m.text.layers[last].mlp.down_proj.weight, &grads),
            ),
            (
                "embedding",
                values(m.text.embed_tokens.weight.grad(&grads).expect("grad")),
            ),
            ("merger", grad_linear(&m.visual.merger.fc1.weight, &grads)),
        ];
        (values(hidden), grads)
    };
    let (shared, shared_grads) = run(true);
    let (whole, whole_grads) = run(false);
    let h = shared.len() / (b.batch * b.seq);
    for (i, &valid) in b.valid.iter().enumerate() {
        if valid {
            let at = i * h..(i + 1) * h;
            assert_close(&format!("hidden at {i}"), &shared[at.clone()], &whole[at]);
        }
    }
    for ((name, ours), (_, theirs)) in shared_grads.iter().zip(&whole_grads) {
        assert_close(name, ours, theirs);
    }
}

#[test]
fn the_shared_prefix_stops_at_an_image_a_difference_or_padding() {
    let f = Fixture::load("tiny_flat", "grad");
    let model = Qwen25Vl::<B>::from_pretrained(model_dir("tiny_flat"), &Default::default())
        .expect("tiny model");
    // The fixture's rows share one token: under the 16 worth sharing.
    let b = batch(&f);
    assert_eq!(model.shared_prefix(&input(&b), &b.valid), 0);
    // 30 shared tokens, then row 0's image placeholder where row 1 has text: the image is not shared
    // even where row 1 would have the same id.
    let mut b = with_prefix(&batch(&f), 30);
    let image = model.config.image_token_id;
    b.ids[30] = image;
    b.ids[b.seq + 30] = image;
    assert_eq!(model.shared_prefix(&input(&b), &b.valid), 30);
    // A token that differs, and a padded token, end it where they are.
    let mut d = with_prefix(&batch(&f), 30);
    d.ids[b.seq + 25] += 1;
    assert_eq!(model.shared_prefix(&input(&d), &d.valid), 25);
    let mut p = with_prefix(&batch(&f), 30);
    p.valid[b.seq + 18] = false;
    assert_eq!(model.shared_prefix(&input(&p), &p.valid), 18);
    // One row shares nothing with anyone.
    let one = ForwardInput {
        input_ids: &b.ids[..b.seq],
        batch: 1,
        positions: &b.positions[..b.seq],
        valid: None,
        generated: None,
        images: None,
        videos: None,
    };
    assert_eq!(model.shared_prefix(&one, &b.valid[..b.seq]), 0);
}
