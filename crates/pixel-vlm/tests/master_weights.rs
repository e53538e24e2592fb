//! f32 master weights (`pixel_vlm::train::MasterWeights`): at the recipe's learning rate of 1e-6, AdamW on
//! bf16 parameters leaves nearly every weight where it was, while the master-weight path moves every trained
//! weight as an f32 run does and its bf16 model is that run's weights rounded to bf16.

mod common;

use burn::backend::Autodiff;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::{DType, FloatDType, Tensor};
use common::{B, model_dir};
use pixel_vlm::train::{MasterWeights, Targets};
use pixel_vlm::{ForwardInput, Qwen25Vl};

type AB = Autodiff<B>;

const STEPS: usize = 12;
const LR: f64 = 1e-6;

/// Every float parameter's values as f32, in visiting order.
struct Values(Vec<Vec<f32>>);

impl ModuleVisitor<AB> for Values {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        let data = param.val().into_data().convert::<f32>();
        self.0.push(data.to_vec::<f32>().expect("f32"));
    }
}

fn flat(model: &Qwen25Vl<AB>) -> Vec<f32> {
    let mut v = Values(Vec::new());
    model.visit(&mut v);
    v.0.concat()
}

fn bf16_model() -> Qwen25Vl<AB> {
    Qwen25Vl::from_pretrained_with_dtype(
        model_dir("tiny_flat"),
        &Default::default(),
        FloatDType::BF16,
    )
    .expect("bf16 model")
    .with_frozen_vision()
}

/// The recipe's AdamW (betas 0.9 / 0.95, eps 1e-8, no weight decay).
fn optimizer() -> impl Optimizer<Qwen25Vl<AB>, AB> {
    AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.95)
        .with_epsilon(1e-8)
        .with_weight_decay(0.0)
        .init()
}

/// Mean negative log-likelihood of a fixed text sequence.
fn grads(model: &Qwen25Vl<AB>) -> GradientsParams {
    let ids: Vec<u32> = (0..24).map(|i| (i * 37 + 5) % 600).collect();
    let targets: Vec<u32> = ids[1..].iter().copied().chain([0]).collect();
    let positions: Vec<i64> = (0..3).flat_map(|_| 0..24).collect();
    let input = ForwardInput {
        input_ids: &ids,
        batch: 1,
        positions: &positions,
        valid: None,
        generated: None,
        images: None,
        videos: None,
    };
    let hidden = model.forward_train(&input).expect("forward");
    let loss = model
        .target_logprobs(hidden, &Targets::new(&targets))
        .expect("scores")
        .logprobs
        .mean()
        .neg();
    GradientsParams::from_grads(loss.backward(), model)
}

fn plain_run(mut model: Qwen25Vl<AB>) -> Qwen25Vl<AB> {
    let mut optim = optimizer();
    for _ in 0..STEPS {
        let g = grads(&model);
        model = optim.step(LR, model, g);
    }
    model
}

fn bf16(x: f32) -> f32 {
    half::bf16::from_f32(x).to_f32()
}

#[test]
fn at_lr_1e6_bf16_parameters_stay_put_and_master_weights_follow_an_f32_run() {
    let start = bf16_model();
    let init = flat(&start);

    // Plain AdamW on bf16 parameters.
    let plain = flat(&plain_run(start.clone()));
    let moved: Vec<usize> = (0..init.len()).filter(|&i| plain[i] != init[i]).collect();
    let largest_moved = moved.iter().map(|&i| init[i].abs()).fold(0f32, f32::max);
    let plain_share = moved.len() as f64 / init.len() as f64;

    // The same start in f32 (the bf16 values, widened), trained in f32.
    let f32_start = MasterWeights::new(&start).into_master();
    assert!(
        f32_start.model.text.layers[0]
            .self_attn
            .q_proj
            .weight
            .val()
            .dtype()
            == DType::F32
    );
    let f32_run = flat(&plain_run(f32_start));

    // Master weights.
    let mut model = start.clone();
    let mut master = MasterWeights::new(&model);
    let mut optim = optimizer();
    for _ in 0..STEPS {
        let g = grads(&model);
        model = master.step(&mut optim, LR, model, g);
    }
    assert_eq!(model.dtype(), DType::BF16);
    let copies = flat(master.master());
    let narrowed = flat(&model);

    // Trained elements: those the f32 run moved.
    let trained: Vec<usize> = (0..init.len()).filter(|&i| f32_run[i] != init[i]).collect();
    let master_moved = trained.iter().filter(|&&i| copies[i] != init[i]).count();
    let steps_lr = STEPS as f32 * LR as f32;
    let worst = trained
        .iter()
        .map(|&i| ((copies[i] - init[i]) - (f32_run[i] - init[i])).abs())
        .fold(0f32, f32::max);
    let mean_move = trained
        .iter()
        .map(|&i| (f32_run[i] - init[i]).abs())
        .sum::<f32>()
        / trained.len() as f32;
    let mean_gap = trained
        .iter()
        .map(|&i| ((copies[i] - init[i]) - (f32_run[i] - init[i])).abs())
        .sum::<f32>()
        / trained.len() as f32;
    let rounded_equal = (0..init.len())
        .filter(|&i| narrowed[i] == bf16(f32_run[i]))
        .count();
    let narrowed_moved = (0..init.len()).filter(|&i| narrowed[i] != init[i]).count();
    eprintln!(
        "MASTER {STEPS} steps at lr {LR}: {} elements, {} trained by the f32 run (mean |move| {mean_move:e}); \
         plain bf16 moved {} ({:.3} %, all with |w| <= {largest_moved:e}); master copies moved {master_moved}, \
         mean |copy move - f32 move| {mean_gap:e}, worst {worst:e}; bf16 model moved {narrowed_moved}, \
         equal to the f32 run rounded to bf16: {} ({:.4} %)",
        init.len(),
        trained.len(),
        moved.len(),
        100.0 * plain_share,
        rounded_equal,
        100.0 * rounded_equal as f64 / init.len() as f64,
    );
    // bf16 drops the updates: under 2 % of the elements move, all of them tiny weights.
    assert!(plain_share < 0.02, "{plain_share}");
    assert!(largest_moved < 2e-3, "{largest_moved}");
    // The master copies move wherever the f32 run moves, by the same amount up to gradient rounding.
    // (The vision tower is frozen and unused embedding rows get no gradient.)
    assert!(trained.len() as f64 > 0.3 * init.len() as f64);
    assert_eq!(master_moved, trained.len());
    assert!(mean_gap < 0.1 * mean_move, "{mean_gap} vs {mean_move}");
    // A weight whose gradient is near zero may move the other way in bf16: at most both runs' movements.
    assert!(worst <= 3.0 * steps_lr, "{worst}");
    // The bf16 model is the f32 run rounded to bf16, but where the two sit on either side of a rounding edge.
    assert!(rounded_equal as f64 > 0.995 * init.len() as f64);
    assert!(narrowed_moved > moved.len());
}
