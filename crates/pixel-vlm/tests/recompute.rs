//! Activation recompute: `Qwen25Vl::backward_recomputed` (one decoder layer's graph at a time) gives the
//! gradients of the plain backward, on tiny_flat with an image (vision tower trained), on a tied head, and
//! on LoRA adapters; burn's own `BalancedCheckpointing` backend gives them too.

mod common;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use common::{B, Fixture, model_dir};
use pixel_vlm::train::Targets;
use pixel_vlm::{ForwardInput, Qwen25Vl, Qwen25VlConfig, VisualInput};

type AB = Autodiff<B>;

struct Batch {
    ids: Vec<u32>,
    positions: Vec<i64>,
    valid: Vec<bool>,
    targets: Vec<u32>,
    visual: VisualInput,
}

impl Batch {
    fn load() -> Self {
        let f = Fixture::load("tiny_flat", "grad");
        let to_u32 = |v: Vec<i64>| v.into_iter().map(|i| i as u32).collect::<Vec<u32>>();
        Self {
            ids: to_u32(f.i64s("input_ids").0),
            positions: f.i64s("position_ids").0,
            valid: f.i64s("attention_mask").0.iter().map(|&m| m == 1).collect(),
            targets: to_u32(f.i64s("targets").0),
            visual: f.visual("image_grid_thw").expect("an image"),
        }
    }

    fn input(&self) -> ForwardInput<'_> {
        ForwardInput {
            input_ids: &self.ids,
            batch: 2,
            positions: &self.positions,
            valid: Some(&self.valid),
            generated: None,
            images: Some(&self.visual),
            videos: None,
        }
    }
}

/// Negative mean log-likelihood of the targets at the valid positions.
fn loss<Bk: AutodiffBackend>(
    model: &Qwen25Vl<Bk>,
    b: &Batch,
    hidden: Tensor<Bk, 3>,
) -> pixel_vlm::error::Result<Tensor<Bk, 1>> {
    let logprobs = model
        .target_logprobs(hidden, &Targets::new(&b.targets))?
        .logprobs;
    let mask: Vec<f32> = b.valid.iter().map(|&v| f32::from(u8::from(v))).collect();
    let mask = Tensor::<Bk, 2>::from_data(
        burn::tensor::TensorData::new(mask, [2, b.ids.len() / 2]),
        &logprobs.device(),
    );
    Ok((logprobs * mask).sum().neg() / 40.0)
}

/// Every parameter's gradient (or `None`), in visiting order.
struct Collect<'a> {
    grads: &'a GradientsParams,
    out: Vec<Option<Vec<f32>>>,
}

impl<Bk: AutodiffBackend> ModuleVisitor<Bk> for Collect<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Bk, D>>) {
        let g = self.grads.get::<Bk::InnerBackend, D>(param.id);
        self.out
            .push(g.map(|g| g.into_data().convert::<f32>().to_vec::<f32>().unwrap()));
    }
}

fn collect<Bk: AutodiffBackend>(
    model: &Qwen25Vl<Bk>,
    grads: &GradientsParams,
) -> Vec<Option<Vec<f32>>> {
    let mut c = Collect {
        grads,
        out: Vec::new(),
    };
    model.visit(&mut c);
    c.out
}

fn plain<Bk: AutodiffBackend>(model: &Qwen25Vl<Bk>, b: &Batch) -> (f32, Vec<Option<Vec<f32>>>) {
    let hidden = model.forward_train(&b.input()).expect("forward");
    let l = loss(model, b, hidden).expect("loss");
    let value = l
        .clone()
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .unwrap()[0];
    let grads = GradientsParams::from_grads(l.backward(), model);
    (value, collect(model, &grads))
}

fn recomputed(model: &Qwen25Vl<AB>, b: &Batch) -> (f32, Vec<Option<Vec<f32>>>) {
    let out = model
        .backward_recomputed(&b.input(), |hidden| loss(model, b, hidden))
        .expect("recomputed backward");
    let value = out.loss.into_data().to_vec::<f32>().unwrap()[0];
    (value, collect(model, &out.grads))
}

/// The largest difference between two gradient sets relative to the largest gradient, and how many
/// parameters have one.
fn compare(a: &[Option<Vec<f32>>], b: &[Option<Vec<f32>>]) -> (f32, usize) {
    assert_eq!(a.len(), b.len());
    let (mut worst, mut with_grad) = (0f32, 0);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        match (x, y) {
            (Some(x), Some(y)) => {
                with_grad += 1;
                let scale = x.iter().fold(1e-12f32, |m, v| m.max(v.abs()));
                let diff = common::max_abs_diff(x, y);
                worst = worst.max(diff / scale);
            }
            (None, None) => {}
            _ => panic!("parameter {i}: a gradient on one side only"),
        }
    }
    (worst, with_grad)
}

#[test]
fn recomputed_gradients_equal_the_plain_backward_with_the_vision_tower_trained() {
    let b = Batch::load();
    let model =
        Qwen25Vl::<AB>::from_pretrained(model_dir("tiny_flat"), &Default::default()).unwrap();
    let (l0, g0) = plain(&model, &b);
    let (l1, g1) = recomputed(&model, &b);
    let (worst, n) = compare(&g0, &g1);
    eprintln!(
        "RECOMPUTE tiny_flat: loss {l0} vs {l1}; {n} parameters, worst relative diff {worst:e}"
    );
    assert_eq!(l0, l1);
    assert!(
        n >= 40,
        "the vision tower, the decoder and the head all have gradients ({n})"
    );
    assert!(worst < 1e-5, "{worst}");
}

#[test]
fn recomputed_gradients_of_a_tied_head_and_of_lora_adapters_equal_the_plain_ones() {
    let b = Batch::load();
    let mut config = Qwen25VlConfig::from_file(model_dir("tiny_flat").join("config.json")).unwrap();
    config.tie_word_embeddings = true;
    let device = Default::default();
    let tied = Qwen25Vl::<AB>::random(config, 5, &device).unwrap();
    let (l0, g0) = plain(&tied, &b);
    let (l1, g1) = recomputed(&tied, &b);
    let (worst, _) = compare(&g0, &g1);
    eprintln!("RECOMPUTE tied head: loss {l0} vs {l1}, worst relative diff {worst:e}");
    assert!((l0 - l1).abs() <= 1e-6 * l0.abs());
    assert!(worst < 1e-5, "{worst}");

    // LoRA on both towers: only the adapters have gradients, the same ones.
    let lora = Qwen25Vl::<AB>::from_pretrained(model_dir("tiny_flat"), &device)
        .unwrap()
        .load_lora(common::crate_dir().join("tests/fixtures/lora/tiny_flat_peft"))
        .unwrap();
    let (_, g0) = plain(&lora, &b);
    let (_, g1) = recomputed(&lora, &b);
    let (worst, n) = compare(&g0, &g1);
    eprintln!("RECOMPUTE lora: {n} adapter tensors, worst relative diff {worst:e}");
    assert_eq!(n, 2 * 29);
    assert!(worst < 1e-5, "{worst}");
}

#[test]
fn burns_balanced_checkpointing_gives_the_same_gradients() {
    type Balanced = Autodiff<B, BalancedCheckpointing>;
    let b = Batch::load();
    let device = Default::default();
    let model = Qwen25Vl::<AB>::from_pretrained(model_dir("tiny_flat"), &device).unwrap();
    let balanced = Qwen25Vl::<Balanced>::from_pretrained(model_dir("tiny_flat"), &device).unwrap();
    let (l0, g0) = plain(&model, &b);
    let (l1, g1) = plain(&balanced, &b);
    let (worst, n) = compare(&g0, &g1);
    eprintln!(
        "RECOMPUTE BalancedCheckpointing: loss {l0} vs {l1}; {n} parameters, worst relative diff {worst:e}"
    );
    assert!(worst < 1e-5, "{worst}");
}

#[test]
fn lora_dropout_is_refused_because_it_cannot_be_recomputed() {
    let b = Batch::load();
    let config = pixel_vlm::lora::LoraConfig::new().with_dropout(0.1);
    let model = Qwen25Vl::<AB>::from_pretrained(model_dir("tiny_flat"), &Default::default())
        .unwrap()
        .with_lora(&config)
        .unwrap();
    match model.backward_recomputed(&b.input(), |hidden| loss(&model, &b, hidden)) {
        Err(pixel_vlm::VlmError::Input { reason, .. }) => {
            assert!(reason.contains("dropout"), "{reason}")
        }
        other => panic!("expected an input error, got {:?}", other.map(|o| o.loss)),
    }
}
