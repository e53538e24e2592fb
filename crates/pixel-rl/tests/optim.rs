//! `pixel_rl::optim`: AdamW settings, global gradient-norm clipping and the warmup-cosine schedule, against
//! hand-computed numbers and values recorded from torch/transformers in `tests/fixtures/optim.json`
//! (regenerate with `scripts/gen_rl_fixtures.py`).

use burn::backend::Autodiff;
use burn::module::{Module, Param};
use burn::optim::lr_scheduler::LrScheduler;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use pixel_rl::RlError;
use pixel_rl::optim::{
    AdamWSettings, WarmupCosineSchedule, clip_grad_norm, grad_norm, warmup_steps_from_ratio,
};
use pixel_vlm::backend::CpuBackend;
use serde_json::Value;

type Inner = CpuBackend;
type Ad = Autodiff<CpuBackend>;

/// A module with a vector and a matrix parameter.
#[derive(Module, Debug)]
struct Tiny<B: Backend> {
    a: Param<Tensor<B, 1>>,
    b: Param<Tensor<B, 2>>,
}

fn tiny(a: &[f32], b: [[f32; 2]; 2]) -> Tiny<Ad> {
    let device = Default::default();
    let flat: Vec<f32> = b.iter().flatten().copied().collect();
    Tiny {
        a: Param::from_tensor(Tensor::from_data(
            TensorData::new(a.to_vec(), [a.len()]),
            &device,
        )),
        b: Param::from_tensor(Tensor::from_data(TensorData::new(flat, [2, 2]), &device)),
    }
}

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/optim.json")).expect("fixture parses")
}

fn floats(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(items) => items.iter().flat_map(floats).collect(),
        Value::Number(n) => vec![n.as_f64().expect("number") as f32],
        other => panic!("not a number: {other}"),
    }
}

fn values<const D: usize>(t: Tensor<Inner, D>) -> Vec<f32> {
    t.into_data().iter::<f32>().collect()
}

/// Gradients of `Σ a⊙ga + Σ b⊙gb`, i.e. exactly `ga` and `gb`, through a real backward pass.
fn grads_of(module: &Tiny<Ad>, ga: &[f32], gb: [[f32; 2]; 2]) -> GradientsParams {
    let device = Default::default();
    let ca = Tensor::<Ad, 1>::from_data(TensorData::new(ga.to_vec(), [ga.len()]), &device);
    let flat: Vec<f32> = gb.iter().flatten().copied().collect();
    let cb = Tensor::<Ad, 2>::from_data(TensorData::new(flat, [2, 2]), &device);
    let loss = (module.a.val() * ca).sum() + (module.b.val() * cb).sum();
    GradientsParams::from_grads(loss.backward(), module)
}

#[test]
fn adamw_recipe_values_reach_burn_config() {
    let json = serde_json::to_value(AdamWSettings::RECIPE.config().unwrap()).unwrap();
    assert!((json["beta_1"].as_f64().unwrap() - 0.9).abs() < 1e-7);
    assert!((json["beta_2"].as_f64().unwrap() - 0.95).abs() < 1e-7);
    assert!((json["epsilon"].as_f64().unwrap() - 1e-8).abs() < 1e-15);
    assert_eq!(json["weight_decay"].as_f64(), Some(0.0));
    assert!(json["grad_clipping"].is_null());
    assert_eq!(AdamWSettings::default(), AdamWSettings::RECIPE);
}

#[test]
fn adamw_settings_out_of_range_are_errors() {
    for bad in [
        AdamWSettings {
            beta_2: 1.0,
            ..AdamWSettings::RECIPE
        },
        AdamWSettings {
            beta_1: -0.1,
            ..AdamWSettings::RECIPE
        },
        AdamWSettings {
            epsilon: 0.0,
            ..AdamWSettings::RECIPE
        },
        AdamWSettings {
            weight_decay: f32::NAN,
            ..AdamWSettings::RECIPE
        },
    ] {
        assert!(matches!(bad.config(), Err(RlError::Setting(_))), "{bad:?}");
    }
}

/// Three AdamW steps with burn's optimizer built from our settings equal torch's `AdamW` (the tiny gradients
/// would move by about half as much with burn's default ε of 1e-5).
#[test]
fn adamw_steps_match_torch() {
    let fx = fixture();
    for case in fx["adamw"].as_array().unwrap() {
        let wd = case["weight_decay"].as_f64().unwrap() as f32;
        let lr = case["lr"].as_f64().unwrap();
        let settings = AdamWSettings {
            weight_decay: wd,
            ..AdamWSettings::RECIPE
        };
        let mut optim = settings.config().unwrap().init::<Ad, Tiny<Ad>>();
        let start = floats(&case["start"]);
        let mut module = tiny(&start, [[0.0; 2]; 2]);
        let device = Default::default();
        for (grad, expected) in case["grads"]
            .as_array()
            .unwrap()
            .iter()
            .zip(case["params"].as_array().unwrap())
        {
            let mut grads = GradientsParams::new();
            let g = Tensor::<Inner, 1>::from_data(TensorData::new(floats(grad), [4]), &device);
            grads.register::<Inner, 1>(module.a.id, g);
            module = optim.step(lr, module, grads);
            let got = values(module.a.val().inner());
            for (g, e) in got.iter().zip(floats(expected)) {
                assert!((g - e).abs() < 2e-7, "wd {wd}: {got:?} vs {expected}");
            }
        }
    }
}

/// ‖(3, 4, 0, 0, 0, 12)‖ = 13; max 1 → every gradient × 1 / (13 + 1e-6); the norm returned is 13.
#[test]
fn clip_scales_every_gradient_by_the_global_coefficient() {
    let module = tiny(&[1.0, 1.0], [[1.0; 2]; 2]);
    let mut grads = grads_of(&module, &[3.0, 4.0], [[0.0, 0.0], [0.0, 12.0]]);
    assert!((grad_norm::<Ad, _>(&module, &grads) - 13.0).abs() < 1e-6);
    let norm = clip_grad_norm::<Ad, _>(&module, &mut grads, 1.0).unwrap();
    assert!((norm - 13.0).abs() < 1e-6, "{norm}");
    let coef = 1.0 / (13.0 + 1e-6);
    let a = values(grads.get::<Inner, 1>(module.a.id).unwrap());
    let b = values(grads.get::<Inner, 2>(module.b.id).unwrap());
    for (g, e) in a.iter().chain(&b).zip([3.0, 4.0, 0.0, 0.0, 0.0, 12.0]) {
        assert!((g - e * coef).abs() < 1e-7, "{a:?} {b:?}");
    }
    // Per-tensor clipping (burn's `GradientClipping::Norm`) would have left `a` at norm 1 and `b` at norm 1.
    let after = grad_norm::<Ad, _>(&module, &grads);
    assert!((after - 1.0).abs() < 1e-5, "{after}");
}

#[test]
fn clip_leaves_gradients_below_the_maximum_unchanged() {
    let module = tiny(&[1.0, 1.0], [[1.0; 2]; 2]);
    let mut grads = grads_of(&module, &[3.0, 4.0], [[0.0, 0.0], [0.0, 12.0]]);
    let norm = clip_grad_norm::<Ad, _>(&module, &mut grads, 13.5).unwrap();
    assert!((norm - 13.0).abs() < 1e-6);
    assert_eq!(
        values(grads.get::<Inner, 1>(module.a.id).unwrap()),
        [3.0, 4.0]
    );
    assert_eq!(
        values(grads.get::<Inner, 2>(module.b.id).unwrap()),
        [0.0, 0.0, 0.0, 12.0]
    );
}

/// A frozen parameter has no gradient: it neither counts nor breaks anything.
#[test]
fn clip_skips_parameters_without_gradients() {
    let mut module = tiny(&[1.0, 1.0], [[1.0; 2]; 2]);
    module.b = module.b.set_require_grad(false);
    let mut grads = grads_of(&module, &[3.0, 4.0], [[7.0, 7.0], [7.0, 7.0]]);
    assert!(grads.get::<Inner, 2>(module.b.id).is_none());
    let norm = clip_grad_norm::<Ad, _>(&module, &mut grads, 1.0).unwrap();
    assert!((norm - 5.0).abs() < 1e-6, "{norm}");
    let a = values(grads.get::<Inner, 1>(module.a.id).unwrap());
    assert!((a[0] - 3.0 / (5.0 + 1e-6)).abs() < 1e-7 && (a[1] - 4.0 / (5.0 + 1e-6)).abs() < 1e-7);
}

#[test]
fn clip_refuses_bad_maximum_and_non_finite_norms() {
    let module = tiny(&[1.0, 1.0], [[1.0; 2]; 2]);
    let mut grads = grads_of(&module, &[3.0, 4.0], [[0.0; 2]; 2]);
    for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        assert!(matches!(
            clip_grad_norm::<Ad, _>(&module, &mut grads, bad),
            Err(RlError::Setting(_))
        ));
    }
    let mut grads = grads_of(&module, &[f32::NAN, 4.0], [[0.0; 2]; 2]);
    assert!(matches!(
        clip_grad_norm::<Ad, _>(&module, &mut grads, 1.0),
        Err(RlError::NonFiniteGradNorm(_))
    ));
    // Left as they were.
    assert_eq!(values(grads.get::<Inner, 1>(module.a.id).unwrap())[1], 4.0);
}

/// torch's `clip_grad_norm_` on random gradients (one case clipped, one not).
#[test]
fn clip_matches_torch_clip_grad_norm() {
    let fx = fixture();
    let device = Default::default();
    for case in fx["clip"].as_array().unwrap() {
        let module = Tiny::<Ad> {
            a: Param::from_tensor(Tensor::zeros([3], &device)),
            b: Param::from_tensor(Tensor::zeros([2, 5], &device)),
        };
        let mut grads = GradientsParams::new();
        let ga = floats(&case["grads"]["a"]);
        let gb = floats(&case["grads"]["b"]);
        grads.register::<Inner, 1>(
            module.a.id,
            Tensor::from_data(TensorData::new(ga, [3]), &device),
        );
        grads.register::<Inner, 2>(
            module.b.id,
            Tensor::from_data(TensorData::new(gb, [2, 5]), &device),
        );
        let max = case["max_norm"].as_f64().unwrap() as f32;
        let norm = clip_grad_norm::<Ad, _>(&module, &mut grads, max).unwrap();
        let expected = case["norm"].as_f64().unwrap() as f32;
        assert!((norm - expected).abs() < 1e-6, "{norm} vs {expected}");
        let got: Vec<f32> = values(grads.get::<Inner, 1>(module.a.id).unwrap())
            .into_iter()
            .chain(values(grads.get::<Inner, 2>(module.b.id).unwrap()))
            .collect();
        let want: Vec<f32> = floats(&case["clipped"]["a"])
            .into_iter()
            .chain(floats(&case["clipped"]["b"]))
            .collect();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }
}

/// Every step (and three past the end) of transformers' `get_cosine_with_min_lr_schedule_with_warmup`.
#[test]
fn schedule_matches_transformers_every_step() {
    let fx = fixture();
    for case in fx["schedules"].as_array().unwrap() {
        let warmup = case["warmup"].as_u64().unwrap() as usize;
        let total = case["total"].as_u64().unwrap() as usize;
        let rate = case["min_lr_rate"].as_f64().unwrap();
        let peak = case["peak"].as_f64().unwrap();
        let mut schedule = WarmupCosineSchedule::new(peak, warmup, total, rate).unwrap();
        for (step, lr) in case["lrs"].as_array().unwrap().iter().enumerate() {
            let lr = lr.as_f64().unwrap();
            let got = schedule.lr_at(step);
            assert!(
                (got - lr).abs() <= 1e-12 * peak,
                "({warmup}, {total}, {rate}) step {step}: {got} vs {lr}"
            );
            assert_eq!(LrScheduler::step(&mut schedule), got);
        }
    }
}

#[test]
fn warmup_steps_from_ratio_match_transformers() {
    let fx = fixture();
    for case in fx["warmup_from_ratio"].as_array().unwrap() {
        let ratio = case["ratio"].as_f64().unwrap();
        let total = case["total"].as_u64().unwrap() as usize;
        let want = case["warmup"].as_u64().unwrap() as usize;
        assert_eq!(
            warmup_steps_from_ratio(total, ratio).unwrap(),
            want,
            "{ratio} × {total}"
        );
    }
    assert!(warmup_steps_from_ratio(10, 1.5).is_err());
    assert!(warmup_steps_from_ratio(10, f64::NAN).is_err());
}

#[test]
fn recipes_and_hand_values() {
    let rl = WarmupCosineSchedule::rl_recipe(100).unwrap();
    assert_eq!((rl.warmup_steps(), rl.total_steps()), (3, 100));
    assert_eq!(rl.lr_at(0), 0.0);
    assert!((rl.lr_at(1) - 1e-6 / 3.0).abs() < 1e-20);
    assert!((rl.lr_at(3) - 1e-6).abs() < 1e-20);
    // Half-way through the decay the cosine factor is ½: lr = peak·(½·0.5 + 0.5) = 0.75 × peak.
    let half = 3 + 97 / 2;
    let expected = 1e-6 * (0.5 * (1.0 + (std::f64::consts::PI * 48.0 / 97.0).cos()) * 0.5 + 0.5);
    assert!((rl.lr_at(half) - expected).abs() < 1e-20);
    assert!((rl.lr_at(100) - 5e-7).abs() < 1e-20);
    let sft = WarmupCosineSchedule::sft_recipe(100).unwrap();
    assert_eq!(sft.warmup_steps(), 10);
    assert!(sft.lr_at(100).abs() < 1e-20);
    assert_eq!(sft.min_lr_rate(), 0.0);
}

#[test]
fn schedule_settings_out_of_range_are_errors() {
    for (peak, warmup, total, rate) in [
        (0.0, 0, 10, 0.5),
        (f64::NAN, 0, 10, 0.5),
        (1e-6, 11, 10, 0.5),
        (1e-6, 0, 0, 0.5),
        (1e-6, 0, 10, 1.5),
        (1e-6, 0, 10, -0.1),
    ] {
        assert!(matches!(
            WarmupCosineSchedule::new(peak, warmup, total, rate),
            Err(RlError::Setting(_))
        ));
    }
    let s = WarmupCosineSchedule::new(1e-6, 1, 10, 0.0).unwrap();
    assert!(s.with_num_cycles(-1.0).is_err());
    assert!(WarmupCosineSchedule::rl_recipe(0).is_err());
}

/// burn's scheduler record and serde both resume where the schedule was.
#[test]
fn schedule_resumes_from_record_and_serde() {
    let mut a = WarmupCosineSchedule::rl_recipe(40).unwrap();
    for _ in 0..7 {
        LrScheduler::step(&mut a);
    }
    assert_eq!(a.current_step(), 7);
    let record = LrScheduler::to_record::<Inner>(&a);
    let b = WarmupCosineSchedule::rl_recipe(40)
        .unwrap()
        .load_record::<Inner>(record);
    let json = serde_json::to_string(&a).unwrap();
    let c: WarmupCosineSchedule = serde_json::from_str(&json).unwrap();
    for mut s in [b, c] {
        let mut reference = a;
        for _ in 0..40 {
            assert_eq!(LrScheduler::step(&mut s), LrScheduler::step(&mut reference));
        }
    }
}
